"""``contrastlab list data|views|encoders|objectives [NAME]``: what each registry holds, with every option.

Everything is read at run time from the registries, the factories' signatures and their Google-style
docstrings (the summary is the docstring's first paragraph, an option's description its ``Args:``
entry), so the catalogue cannot drift from the code. Arguments the framework passes itself are hidden:
``split`` and ``seed`` of a data set, the data set given to a view generator, the input shape given to
an encoder. Entries registered by a plugin (``--plugin FILE.py``) carry the plugin's path.

Example:
    >>> image_folder = entry("data", "image_folder")
    >>> image_folder.option("root").required, "split" in [o.name for o in image_folder.options]
    (True, False)
    >>> entry("objectives", "nt_xent").option("temperature").default
    0.5
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import reprlib
import shutil
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from contrastlab._docstrings import parse_args_section, plain
from contrastlab.errors import UserError, did_you_mean
from contrastlab.plugins import KINDS, _registry, add_plugin_option, loaded

#: Where an entry's options go in a run's config, by kind.
_CONFIG_KEY: dict[str, str] = {"data": "data.options", "views": "views.options",
                               "encoders": "model.encoder.options", "objectives": "objective.options"}

#: Options that training fills in when a config leaves them unset (see ``contrastlab.training.build``):
#: kind -> option -> where the value comes from. They stay listed: a config may still set them.
_SUPPLIED: dict[str, dict[str, str]] = {
    "data": {"on_error": "data.on_error when unset"},
    "encoders": {"vocab_size": "the data set's vocabulary size when unset"},
    "objectives": {"num_classes": "the data set's number of classes when unset",
                   "dim": "the embedding width when unset",
                   "normalize": "follows model.normalize (true on the sphere)"},
}

_WIDTH = 100  # the most columns the text output uses


@dataclass(frozen=True)
class Option:
    """One keyword option of a registered factory.

    Attributes:
        name: the keyword (``**name`` for a factory that takes further keywords, see ``variadic``).
        type: the annotation as written (``"int | None"``), or ``None`` when there is none.
        default: the default value (meaningless when ``required`` or ``variadic``).
        required: the factory has no default for it.
        description: its ``Args:`` entry in the docstring, on one line (``""`` when there is none).
        supplied: where training takes the value from when the config leaves it out (``""``: nowhere).
        variadic: ``**name``, any further options (e.g. those of a pairwise objective).
    """

    name: str
    type: str | None = None
    default: Any = None
    required: bool = False
    description: str = ""
    supplied: str = ""
    variadic: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: a default that JSON cannot hold is its ``repr``; no ``default`` key when there is none."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if not (self.required or self.variadic):
            out["default"] = _json_safe(self.default)
        out.update(description=self.description, supplied=self.supplied or None, variadic=self.variadic)
        return out


@dataclass(frozen=True)
class Entry:
    """One registered data set, view generator, encoder or objective.

    Attributes:
        kind: ``"data"``, ``"views"``, ``"encoders"`` or ``"objectives"``.
        name: the registry name a config uses.
        summary: the first paragraph of the factory's docstring, on one line (``""`` without one).
        options: what a config may set, in signature order.
        plugin: the plugin file that registered it (``None``: contrastlab's own).
        details: more facts of the registry (objectives: ``kind``, ``formula``, ``reference``,
            ``reads``, ``min_modalities``, ``model`` defaults).
    """

    kind: str
    name: str
    summary: str
    options: tuple[Option, ...]
    plugin: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Option:
        """The option called ``name``; ``KeyError`` when there is none."""
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "summary": self.summary, "plugin": self.plugin,
                "options": [o.as_dict() for o in self.options],
                **{key: _json_safe(value) for key, value in self.details.items()}}


def catalog(kind: str) -> list[Entry]:
    """Every entry of the registry ``kind``, sorted by name.

    Raises:
        ValueError: an unknown kind, with a did-you-mean.
    """
    registry = _registry(_check_kind(kind))
    owners = _plugin_files(kind)
    return [_entry(kind, name, registry[name], owners.get(name)) for name in sorted(registry)]


def entry(kind: str, name: str) -> Entry:
    """The entry ``name`` of the registry ``kind``.

    Raises:
        ValueError: an unknown kind or name, with a did-you-mean.
    """
    registry = _registry(_check_kind(kind))
    if name not in registry:
        raise ValueError(f"unknown {KINDS[kind]} {name!r}{did_you_mean(name, registry)}")
    return _entry(kind, name, registry[name], _plugin_files(kind).get(name))


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} to list{did_you_mean(kind, KINDS)}")
    return kind


def _plugin_files(kind: str) -> dict[str, str]:
    return {name: record["path"] for record in loaded() for name in record["registers"].get(kind, [])}


# -- reading factories ---------------------------------------------------------------------------------


def _entry(kind: str, name: str, value: Any, plugin: str | None) -> Entry:
    details: dict[str, Any] = {}
    factory = value
    if kind == "objectives":
        factory, spec = value.factory, value
        details = {"objective_kind": spec.kind, "formula": spec.formula, "reference": spec.reference,
                   "reads": sorted(spec.needs), "min_modalities": spec.min_modalities, "model": dict(spec.model)}
    signature = _signature(factory)
    summary, args = _docstring(factory)
    made = _made_class(factory, signature)
    if made is not None:  # a small function returning a documented class: the class documents the options
        made_summary, made_args = _docstring(made)
        summary, args = summary or made_summary, {**made_args, **args}
    params = _options_of(kind, signature)
    if kind == "views":
        params, args = _with_augment_options(name, params, args)
    supplied = _SUPPLIED.get(kind, {})
    options = tuple(_option(p, args.get(p.name, ""), supplied.get(p.name, "")) for p in params)
    if plugin is None and not _is_contrastlab(factory):
        plugin = f"module {getattr(factory, '__module__', None) or '?'}"
    return Entry(kind, name, summary, options, plugin, details)


def _signature(factory: Callable) -> inspect.Signature:
    """The factory's signature; an empty one when it has none or only inherits ``nn.Module``'s ``(*args, **kwargs)``."""
    if isinstance(factory, type):
        owner = next((c for c in factory.__mro__ if "__init__" in vars(c)), object)
        if owner is object or owner.__module__.split(".")[0] == "torch":
            return inspect.Signature()
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature
        return inspect.Signature()


def _options_of(kind: str, signature: inspect.Signature) -> list[inspect.Parameter]:
    """The parameters a config sets: without those the registry passes itself and ``*args``."""
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    if kind in ("views", "encoders") and params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the data set / the input shape, passed positionally by the registry
    hidden = {"self", "split", "seed"} if kind == "data" else {"self"}
    return [p for p in params if p.name not in hidden]


def _with_augment_options(name: str, params: list[inspect.Parameter], args: dict[str, str]):
    """A view generator whose ``**options`` go to :class:`SimCLRAugment` lists those options instead
    (the names :func:`~contrastlab.views.registry.view_options` accepts)."""
    from contrastlab.views.registry import view_options
    from contrastlab.views.simclr import SimCLRAugment

    own, augment = {p.name for p in params}, inspect.signature(SimCLRAugment).parameters
    extra = [n for n in view_options(name) if n not in own and n in augment]
    if not extra:
        return params, args
    _, augment_args = _docstring(SimCLRAugment)
    params = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD] + [augment[n] for n in extra]
    return params, {**augment_args, **args}


def _option(p: inspect.Parameter, description: str, supplied: str) -> Option:
    variadic = p.kind is inspect.Parameter.VAR_KEYWORD
    annotation = None
    if p.annotation is not inspect.Parameter.empty:
        annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
    required = p.default is inspect.Parameter.empty and not variadic
    return Option(name=f"**{p.name}" if variadic else p.name, type=annotation,
                  default=None if p.default is inspect.Parameter.empty else p.default,
                  required=required, description=description, supplied=supplied, variadic=variadic)


def _made_class(factory: Callable, signature: inspect.Signature) -> type | None:
    """The class a factory function says it returns (``-> InfoNCE``), when it names one of its module."""
    if isinstance(factory, type):
        return None
    returned = signature.return_annotation
    if isinstance(returned, str):
        returned = getattr(factory, "__globals__", {}).get(returned)
    return returned if isinstance(returned, type) else None


def _is_contrastlab(factory: Callable) -> bool:
    module = getattr(factory, "__module__", None) or ""
    return module == "contrastlab" or module.startswith("contrastlab.")


def _docstring(factory: Callable) -> tuple[str, dict[str, str]]:
    """``(summary, {option: description})`` of a factory: a class's own docstring and its ``__init__``'s
    (never a base class's: a plugin's undocumented module would be summarised as ``nn.Module``)."""
    if isinstance(factory, type):
        init = vars(factory).get("__init__")
        docs = [vars(factory).get("__doc__"), getattr(init, "__doc__", None)]
    else:
        docs = [getattr(factory, "__doc__", None)]
    summary, args = "", {}
    for doc in docs:
        if isinstance(doc, str) and doc.strip():
            text = inspect.cleandoc(doc)
            summary = summary or plain(text.split("\n\n")[0])
            args = {**parse_args_section(text), **args}
    return summary, args


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return repr(value)


# -- text --------------------------------------------------------------------------------------------


def _wrap(text: str, width: int, first: str, rest: str | None = None) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=first, subsequent_indent=first if rest is None else rest,
                         break_long_words=False, break_on_hyphens=False) or [first.rstrip()]


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxtuple, _SHORT.maxlist = 30, 30, 3, 3


def _brief_option(o: Option) -> str:
    if o.variadic:
        return o.name
    if o.required:
        return f"{o.name} ({'set by contrastlab' if o.supplied else 'required'})"
    return f"{o.name}={_SHORT.repr(o.default)}"


def _objective_line(details: Mapping[str, Any]) -> str:
    needs = f", {details['min_modalities']}+ modalities" if details["min_modalities"] > 1 else ""
    reads = [r for r in details["reads"] if r != "embeddings"]
    if reads:
        needs += ": reads " + ", ".join(reads)
    return f"[{details['objective_kind']}{needs}]  {details['formula']}"


def format_brief(entries: list[Entry], width: int = _WIDTH) -> str:
    """All entries, a few lines each: name, plugin, summary, (objectives: formula and reference), options."""
    column = min(max((len(e.name) for e in entries), default=0), 22) + 2
    pad = " " * column
    lines: list[str] = []
    for e in entries:
        wrapped = _wrap(e.summary, width, pad) if e.summary else []
        if e.plugin:
            wrapped.append(f"{pad}plugin: {e.plugin}")  # never split a path
        if e.details:
            wrapped += [line for text in (_objective_line(e.details), e.details["reference"])
                        for line in _wrap(text, width, pad)]
        options = ", ".join(map(_brief_option, e.options)) or "none"
        wrapped += _wrap(f"options: {options}", width, pad, pad + " " * len("options: "))
        if len(e.name) + 2 <= column:
            wrapped[0] = f"{e.name:<{column}}{wrapped[0][column:]}"
        else:
            wrapped.insert(0, e.name)
        lines += [*wrapped, ""]
    return "\n".join(lines).rstrip()


def format_entry(e: Entry, width: int = _WIDTH) -> str:
    """One entry in full: every option with its type, default and description."""
    lines = [f"{e.name} ({KINDS[e.kind]})"]
    if e.summary:
        lines += _wrap(e.summary, width, "  ")
    facts = []
    if e.plugin:
        facts.append(("plugin", e.plugin))
    if e.details:
        facts += [("objective", _objective_line(e.details)), ("reference", e.details["reference"])]
        if e.details["model"]:
            facts.append(("model", ", ".join(f"{k}={v!r}" for k, v in e.details["model"].items())))
    if facts:
        lines.append("")
        for key, value in facts:
            lines += _wrap(value, width, f"  {key + ':':<11}", " " * 13)
    lines += ["", f"  options ({_CONFIG_KEY[e.kind]} in a config):" if e.options else "  options: none"]
    for o in e.options:
        head = o.name + (f": {o.type}" if o.type else "")
        if o.required:
            head += "  (required)" if not o.supplied else ""
        elif not o.variadic:
            head += f" = {o.default!r}"
        lines += _wrap(head, width, "    ", "        ")
        if o.description:
            lines += _wrap(o.description, width, "        ")
        if o.supplied:
            lines += _wrap(f"(in training: {o.supplied})", width, "        ")
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``list`` sub-command to the command line's sub-parsers."""
    p = sub.add_parser("list", help="list the data sets, views, encoders or objectives with their options",
                       description="List what a config can name under data, views, model.encoder or objective, "
                                   "with each option's default and description; NAME shows one entry in full.")
    p.add_argument("kind", metavar="KIND", help="data, views, encoders or objectives")
    add_listing_arguments(p)
    p.set_defaults(func=run_listing)


def add_listing_arguments(parser: argparse.ArgumentParser) -> None:
    """``[NAME] [--json] [--plugin FILE.py]``, shared by ``list`` and ``objectives``."""
    parser.add_argument("name", nargs="?", metavar="NAME", help="show this entry in full")
    parser.add_argument("--json", action="store_true", help="print JSON (a list of entries) instead of text")
    add_plugin_option(parser)


def run_listing(args: argparse.Namespace) -> int:
    """Print ``args.kind`` (all entries briefly, or ``args.name`` in full) as text or JSON."""
    try:
        entries = catalog(args.kind) if args.name is None else [entry(args.kind, args.name)]
    except ValueError as err:
        raise UserError(str(err)) from None
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2))
        return 0
    width = max(60, min(_WIDTH, shutil.get_terminal_size((_WIDTH, 24)).columns))
    if args.name is not None:
        print(format_entry(entries[0], width))
    else:
        print(f"{len(entries)} {KINDS[args.kind]}{'s' if KINDS[args.kind][-1] != 's' else ''}; "
              f"`contrastlab list {args.kind} NAME` shows one in full\n")
        print(format_brief(entries, width))
    return 0
