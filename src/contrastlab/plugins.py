r"""User code enters through an explicit plugin file, never through a config.

A plugin is a Python file that registers encoders, objectives, data sets or view generators under
new names. The command line runs it when asked with ``--plugin FILE.py`` (before the config is
checked, so the config can name what it registers); a run records the plugins it was trained with
(their absolute paths, sha256 and the names they registered), and ``eval``, ``resume`` and the
recipes refuse, in one line, a run whose plugin is not loaded, instead of failing on an unknown name.
A config never loads code: its ``plugins:`` entries are only checked.

Example:
    A file ``my_net.py``::

        from torch import nn

        from contrastlab.plugins import register_encoder


        class TinyMLP(nn.Module):
            def __init__(self, input_shape, *, hidden: int = 64):
                super().__init__()
                size = 1
                for n in input_shape:
                    size *= n
                self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU())
                self.out_dim = hidden  # the width of its (N, out_dim) features

            def forward(self, x):
                return self.net(x.float())


        register_encoder("tiny_mlp", TinyMLP)

    then ``contrastlab train my.yaml --plugin my_net.py`` with ``model: {encoder: {name: tiny_mlp}}``,
    and ``contrastlab eval runs/my --plugin my_net.py``.

Factories follow the registries' contracts:

* encoder: ``factory(input_shape, **options) -> nn.Module`` mapping ``(N, *input_shape)`` to
  ``(N, out_dim)`` (see :mod:`contrastlab.encoders.registry`);
* objective: an :class:`~contrastlab.objectives._spec.ObjectiveSpec`;
* data set: ``factory(*, split, seed, **options) -> Dataset`` (see :mod:`contrastlab.data.registry`);
* views: ``factory(dataset, **options) -> ViewGenerator`` (see :mod:`contrastlab.views.registry`).
"""

from __future__ import annotations

import hashlib
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from typing import Any

from contrastlab.errors import UserError, one_line

#: The kinds of thing a plugin registers, as ``loaded()`` records name them, with their words in messages.
KINDS: dict[str, str] = {"encoders": "encoder", "objectives": "objective", "data": "data set", "views": "views"}


@dataclass
class PluginRecord:
    """One loaded plugin file (what :func:`load_plugin` returns).

    Attributes:
        path: the file's resolved absolute path.
        sha256: the hex sha256 of the bytes that were run.
        registers: kind (``"encoders"``, ``"objectives"``, ``"data"``, ``"views"``) -> the names it registered.
    """

    path: str
    sha256: str
    registers: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def as_dict(self) -> dict[str, Any]:
        """The record as YAML-safe data (what a run's ``config.yaml`` keeps under ``plugins``)."""
        return {"path": self.path, "sha256": self.sha256,
                "registers": {kind: list(self.registers[kind]) for kind in KINDS}}


_loaded: list[PluginRecord] = []  # in the order they were loaded
_loading: PluginRecord | None = None  # the plugin whose file is running now
_owners: dict[tuple[str, str], str | None] = {}  # (kind, name) -> the plugin file that registered it (None: no file)


def _owner(kind: str, name: str) -> str:
    """Who registered ``name``, for messages."""
    if (kind, name) not in _owners:
        return "contrastlab"
    owner = _owners[(kind, name)]
    return f"plugin {owner}" if owner else "a register call outside any plugin file"


def _registry(kind: str) -> dict:
    if kind == "encoders":
        from contrastlab.encoders.registry import ENCODERS

        return ENCODERS
    if kind == "objectives":
        from contrastlab.objectives.registry import OBJECTIVES

        return OBJECTIVES
    if kind == "data":
        from contrastlab.data.registry import DATASETS

        return DATASETS
    from contrastlab.views.registry import VIEWS

    return VIEWS


def _check_name(kind: str, name: object) -> str:
    word = KINDS[kind]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
        raise ValueError(f"{word} name must be letters, digits, '_', '-' or '.', starting with a letter or '_'; "
                         f"got {name!r}")
    registry = _registry(kind)
    if name in registry:
        raise ValueError(f"{word} {name!r} is already registered by {_owner(kind, name)}; choose another name")
    return name


def _check_factory(kind: str, name: str, factory: object, *args: Any, **kwargs: Any) -> None:
    """Refuse a factory that is not callable, or whose signature cannot take the registry's call."""
    word = KINDS[kind]
    if not callable(factory):
        raise ValueError(f"{word} {name!r}: the factory must be callable, got {type(factory).__name__}")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    try:
        signature.bind_partial(*args, **kwargs)
    except TypeError as err:
        call = ", ".join([*("..." for _ in args), *(f"{k}=..." for k in kwargs)])
        raise ValueError(f"{word} {name!r}: the factory must accept ({call}, **options), but {err}") from None


def _add(kind: str, name: str, value: object) -> None:
    _registry(kind)[name] = value
    _owners[(kind, name)] = None if _loading is None else _loading.path
    if _loading is not None:
        _loading.registers[kind].append(name)


def register_encoder(name: str, factory: Callable[..., Any]) -> None:
    """Register a backbone under ``name``, so a config can say ``model: {encoder: {name: NAME}}``.

    Args:
        name: the new encoder name.
        factory: ``factory(input_shape, **options) -> nn.Module``; the module maps ``(N, *input_shape)``
            to ``(N, out_dim)`` features and should have ``out_dim`` (and ``uses_lengths`` if its
            ``forward`` takes ``lengths``).

    Raises:
        ValueError: a name contrastlab or another plugin registered already, or a factory that is
            not callable or cannot take ``input_shape``.

    Example:
        >>> from torch import nn
        >>> def _lin(input_shape, *, width: int = 8):
        ...     m = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], width))
        ...     m.out_dim = width
        ...     return m
        >>> register_encoder("doctest_lin", _lin)
        >>> register_encoder("mlp", _lin)
        Traceback (most recent call last):
        ValueError: encoder 'mlp' is already registered by contrastlab; choose another name
        >>> _unregister("encoders", "doctest_lin")
    """
    _check_name("encoders", name)
    _check_factory("encoders", name, factory, (1,))
    _add("encoders", name, factory)


def register_objective(spec: Any) -> None:
    """Register an objective, so a config can say ``objective: {name: SPEC.NAME}``.

    Args:
        spec: an :class:`~contrastlab.objectives._spec.ObjectiveSpec` (its ``name``, ``factory``
            building the loss module from keyword options, ``kind`` = calling convention, ``formula``,
            ``reference``).

    Raises:
        ValueError: not an ``ObjectiveSpec``, a name already registered, or a factory that is not
            callable (an unknown ``kind`` is refused when the spec is made).
    """
    from contrastlab.objectives._spec import ObjectiveSpec

    if not isinstance(spec, ObjectiveSpec):  # a spec checks its own kind and outputs when it is made
        raise ValueError(f"register_objective takes an ObjectiveSpec, got {type(spec).__name__}")
    _check_name("objectives", spec.name)
    _check_factory("objectives", spec.name, spec.factory)
    _add("objectives", spec.name, spec)


def register_dataset(name: str, factory: Callable[..., Any]) -> None:
    """Register a data set under ``name``, so a config can say ``data: {name: NAME, options: {...}}``.

    Args:
        name: the new data set name.
        factory: ``factory(*, split, seed, **options) -> Dataset`` (``split`` is ``"train"`` or
            ``"test"``; the keyword options are what the config's ``data.options`` may set).

    Raises:
        ValueError: a name already registered, or a factory that is not callable or cannot take
            ``split=`` and ``seed=``.
    """
    _check_name("data", name)
    _check_factory("data", name, factory, split="train", seed=0)
    _add("data", name, factory)


def register_views(name: str, factory: Callable[..., Any]) -> None:
    """Register a view generator under ``name``, so a config can say ``views: {name: NAME}``.

    Args:
        name: the new view generator name.
        factory: ``factory(dataset, **options) -> ViewGenerator``.

    Raises:
        ValueError: a name already registered, or a factory that is not callable or cannot take a data set.
    """
    _check_name("views", name)
    _check_factory("views", name, factory, None)
    _add("views", name, factory)


def _unregister(kind: str, name: str) -> None:
    """Remove a name a plugin (or a test) registered; contrastlab's own names stay."""
    _registry(kind).pop(name, None)
    _owners.pop((kind, name), None)


@contextmanager
def _recording(record: PluginRecord) -> Iterator[None]:
    global _loading
    previous, _loading = _loading, record
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ next to user files
    try:
        yield
    finally:
        _loading, sys.dont_write_bytecode = previous, writes_bytecode


def _line_in(path: Path, err: BaseException) -> str:
    """`` (line N)`` for the deepest frame of ``err`` inside the plugin file, else nothing."""
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if frame.filename == str(path)]
    return f" (line {lines[-1]})" if lines else ""


def _module_name(path: Path, sha256: str) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    return f"contrastlab_plugin_{stem}_{sha256[:12]}"


def load_plugin(path: str | Path) -> PluginRecord:
    """Run a plugin file as a fresh module and record what it registered.

    Loading the same file (same resolved path and sha256) again is a no-op that returns the first
    record. Nothing is written next to the file (no ``__pycache__``). When the file fails, whatever
    it registered before failing is removed again.

    Args:
        path: a ``.py`` file that calls :func:`register_encoder`, :func:`register_objective`,
            :func:`register_dataset` or :func:`register_views`.

    Returns:
        Its :class:`PluginRecord`.

    Raises:
        UserError: one line naming the file: it is missing, a folder, not ``.py``, unreadable, has a
            syntax error (with its line), raised while running (the exception's type and message, and
            the line), changed since it was loaded in this process, or registered nothing.
    """
    given = Path(path)
    if not given.exists():
        raise UserError(f"plugin file not found: {given}")
    if given.is_dir():
        raise UserError(f"plugin {given} is a folder; give the .py file that registers your code")
    if given.suffix != ".py":
        raise UserError(f"plugin {given} is not a Python file; give a file ending in .py")
    resolved = given.resolve()
    try:
        source = resolved.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read plugin {given}: {err.strerror or one_line(err)}") from None
    sha256 = hashlib.sha256(source).hexdigest()
    for record in _loaded:
        if record.path == str(resolved):
            if record.sha256 == sha256:
                return record
            raise UserError(f"plugin {resolved} changed since it was loaded in this process; start a new process "
                            "to load the new version")
    try:
        code = compile(source, str(resolved), "exec", dont_inherit=True)
    except SyntaxError as err:
        raise UserError(f"plugin {resolved}: syntax error at line {err.lineno}: {one_line(err.msg)}") from None
    except ValueError as err:  # e.g. null bytes in the source
        raise UserError(f"plugin {resolved}: not Python source ({one_line(err)})") from None

    name = _module_name(resolved, sha256)
    spec = spec_from_file_location(name, resolved)
    module = module_from_spec(spec)
    record = PluginRecord(str(resolved), sha256)
    sys.modules[name] = module  # dataclasses and pickling in the plugin look their module up here
    try:
        with _recording(record):
            exec(code, module.__dict__)  # the bytes hashed above, not a second read of the file
    except (Exception, SystemExit) as err:
        _forget(record, name)
        if isinstance(err, SyntaxError) and err.filename == str(resolved):  # e.g. compile() inside the plugin
            raise UserError(f"plugin {resolved}: syntax error at line {err.lineno}: {one_line(err.msg)}") from None
        raise UserError(f"plugin {resolved} failed while loading{_line_in(resolved, err)}: "
                        f"{type(err).__name__}: {one_line(err) if str(err) else '(no message)'}") from None
    if not any(record.registers.values()):
        _forget(record, name)
        raise UserError(f"plugin {resolved} registers nothing; call contrastlab.plugins.register_encoder, "
                        "register_objective, register_dataset or register_views in it")
    _loaded.append(record)
    return record


def _forget(record: PluginRecord, module_name: str) -> None:
    for kind, names in record.registers.items():
        for name in names:
            _unregister(kind, name)
    sys.modules.pop(module_name, None)


def loaded() -> list[dict[str, Any]]:
    """The plugins loaded in this process, as YAML-safe records.

    Returns:
        ``[{"path": absolute path, "sha256": hex, "registers": {"encoders": [...], "objectives": [...],
        "data": [...], "views": [...]}}, ...]`` in loading order (what a run saves under ``plugins``).
    """
    return [record.as_dict() for record in _loaded]


def _describe(registers: dict[str, list[str]]) -> str:
    parts = [f"{KINDS[kind]} {name!r}" for kind in KINDS for name in registers.get(kind, [])]
    return ", ".join(parts)


def _check_records(records: object, what: str) -> list[dict[str, Any]]:
    """The records a run or config saved, refused in one line when they are not what :func:`loaded` writes."""
    if records is None:
        return []
    problem = f"{what}: 'plugins' must be a list of {{path, sha256, registers}} records as contrastlab writes them"
    if not isinstance(records, list):
        raise UserError(f"{problem}, got {type(records).__name__}")
    for record in records:
        if isinstance(record, str):  # someone hoping the config would load their file
            raise UserError(f"{what}: a config never loads code; pass --plugin {record} on the command line instead "
                            "(the 'plugins' key only records the plugins a run was trained with)")
        ok = isinstance(record, dict) and isinstance(record.get("path"), str)
        ok = ok and isinstance(record.get("registers"), dict) and all(
            kind in KINDS and isinstance(names, list) and all(isinstance(n, str) for n in names)
            for kind, names in record["registers"].items()
        )
        if not ok:
            raise UserError(f"{problem}, got {one_line(repr(record))[:200]}")
    return records


def require(records: object, *, what: str) -> None:
    """Check that the plugins a run (or a config) was made with are loaded now.

    Nothing is loaded here: a config or a run directory never runs code by itself.

    Args:
        records: the ``plugins`` list a run saved (what :func:`loaded` returned when it trained);
            ``None`` or ``[]`` for none.
        what: the run or config, for the message (``"run runs/x"``).

    Raises:
        UserError: for the first plugin whose names are not all registered now, naming the file and
            the ``--plugin`` that loads it; or records that are not a list of such records.

    A plugin whose names are all registered, but not all by a loaded file with the recorded sha256
    (an edited file, or the same names from another file), is a warning on stderr, not an error.

    Example:
        >>> require([], what="run runs/x")
        >>> require([{"path": "/abs/my_net.py", "sha256": "0" * 64, "registers": {"encoders": ["my_net"]}}],
        ...         what="run runs/x")
        Traceback (most recent call last):
        contrastlab.errors.UserError: run runs/x uses plugin /abs/my_net.py (it registers encoder 'my_net'), which is not loaded; pass --plugin /abs/my_net.py
    """
    for record in _check_records(records, what):
        path, registers = record["path"], record["registers"]
        names = [(kind, name) for kind, kind_names in registers.items() for name in kind_names]
        if not all(name in _registry(kind) for kind, name in names):
            raise UserError(f"{what} uses plugin {path} (it registers {_describe(registers)}), which is not loaded; "
                            f"pass --plugin {path}")
        sha256 = {r.path: r.sha256 for r in _loaded}
        if any(sha256.get(_owners.get(key)) != record.get("sha256") for key in names):
            now = ", ".join(sorted({_owner(*key) for key in names}))
            print(f"contrastlab: warning: {what} uses plugin {path} with sha256 {str(record.get('sha256'))[:12]}..., "
                  f"but {_describe(registers)} now come from {now}, which differs (an edited file?)", file=sys.stderr)


def add_plugin_option(parser) -> None:
    """Give a sub-command the repeatable ``--plugin FILE.py`` (the command line loads them before anything else)."""
    parser.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="FILE.py",
                        help="a Python file that registers your own encoders, objectives, data sets or views "
                             "(contrastlab.plugins); loaded before the config is checked; repeatable")


def load_plugins(paths: list[str]) -> list[PluginRecord]:
    """Load each file of ``paths`` in order (what ``--plugin`` does)."""
    return [load_plugin(path) for path in paths]
