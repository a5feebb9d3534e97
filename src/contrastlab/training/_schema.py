"""Typed dataclasses from plain dicts: type checks, unknown keys with a did-you-mean, dotted overrides.

Errors are ``ValueError`` whose message starts with the dotted key (``optim.lr: ...``), so the
command line can print it on one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal, Union

import yaml

from contrastlab.errors import one_line


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; this loader reads it as the float users mean. A key given
    twice in one mapping is an error (plain YAML keeps the last silently); ``<<`` merges still override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (lines {seen[key]} and {line})", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


#: The most values a config may expand to once its aliases (``*name``) are followed: far more than any
#: recipe needs, far less than a "billion laughs" document of nested aliases unfolds to.
MAX_VALUES = 100_000


def _expanded_size(value: Any, memo: dict[int, int]) -> int:
    """How many values ``value`` holds with every shared (aliased) part counted each time it appears."""
    key = id(value)
    if key not in memo:
        if isinstance(value, dict):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in value.items())
        elif isinstance(value, list):
            memo[key] = 1 + sum(_expanded_size(v, memo) for v in value)
        else:
            return 1
    return memo[key]


def parse_yaml(text: str, *, source: str = "config") -> Any:
    """Parse YAML text safely (no Python objects), reading ``1e-3`` as a number.

    Raises:
        ValueError: malformed YAML, naming the source and line; a document nested too deeply for
            the parser, or one whose aliases unfold to more than :data:`MAX_VALUES` values.

    Example:
        >>> parse_yaml("optim: {lr: 1e-3}")
        {'optim': {'lr': 0.001}}
    """
    try:
        value = yaml.load(text, Loader=_Loader)
        size = _expanded_size(value, {})
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{source}:{line} is not valid YAML: {problem}") from None
    except RecursionError:
        raise ValueError(f"{source}: is nested too deeply to be a config") from None
    except ValueError as err:  # Python refuses to read integers of more than sys.get_int_max_str_digits() digits
        if "integer string conversion" not in str(err):
            raise
        raise ValueError(f"{source}: holds an integer too long to read ({one_line(err).split(':')[0]})") from None
    if size > MAX_VALUES:
        raise ValueError(f"{source}: its aliases unfold to {size} values (at most {MAX_VALUES} are allowed)")
    return value


def set_dotted(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override to a nested dict in place; the value is parsed as YAML.

    Raises:
        ValueError: no ``=``, an empty key, or a key that runs through a non-mapping.

    Example:
        >>> cfg = {"optim": {"lr": 0.1}}
        >>> set_dotted(cfg, "optim.lr=1e-3"); cfg
        {'optim': {'lr': 0.001}}
    """
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ValueError(f"--set expects key=value with a dotted key (e.g. optim.lr=0.01), got {assignment!r}")
    value = parse_yaml(text, source=f"--set {key}") if text.strip() else None
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping (it is {child!r})")
        node = child
    node[parts[-1]] = value


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    if origin is dict:
        return "a mapping"
    if origin in (tuple, list):
        return "a list"
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(hint, str(hint))


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, key)
            except ValueError:
                continue
        raise ValueError(f"{key}: expected {_type_name(hint)}, got {_describe(value)}")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
        hint_text = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{key}: expected {_type_name(hint)}, got {value!r}{hint_text}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=key)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {_describe(value)}")
        value_hint = args[1] if args else Any
        return {str(k): _convert(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if origin is list:
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {_describe(value)}")
        return [_convert(args[0] if args else Any, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError(f"{key}: expected a list of {len(args)} values, got {_describe(value)}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{key}: expected a finite number, got {value!r}")
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {hint!r} at {key}")
    raise ValueError(f"{key}: expected {_type_name(hint)}, got {_describe(value)}")


def from_dict(cls: type, raw: Any, *, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a plain mapping, checking every key and type.

    Args:
        cls: a dataclass whose fields are annotated with ``int``, ``float``, ``str``, ``bool``,
            ``Literal``, optional forms, ``dict[str, X]``, fixed ``tuple``s or nested dataclasses.
        raw: the mapping (``None`` means empty).
        prefix: the dotted key of ``raw`` for messages.

    Returns:
        An instance of ``cls``.

    Raises:
        ValueError: an unknown key (with a did-you-mean and the allowed keys), a missing required
            key, or a value of the wrong type, each naming the dotted key.
    """
    where = prefix or "config"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {(prefix + '.' if prefix else '') + close[0]!r}? " if close else ""
            raise ValueError(f"unknown config key {full!r}; {hint}allowed: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in raw:
            values[name] = _convert(hints[name], raw[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[name]):
                values[name] = from_dict(hints[name], {}, prefix=key)
            else:
                raise ValueError(f"{key}: required key is missing ({_type_name(hints[name])})")
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-safe data (tuples become lists).

    Example:
        >>> to_dict({"betas": (0.9, 0.999)})
        {'betas': [0.9, 0.999]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def apply_overrides(raw: dict[str, Any], assignments: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides in order (see :func:`set_dotted`) and return ``raw``."""
    for assignment in assignments:
        set_dotted(raw, assignment)
    return raw
