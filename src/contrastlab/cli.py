"""The command line: a thin front that parses, validates and calls the library.

Every mistake in the user's input ends as one line on stderr and exit status 2, without a traceback (the
warnings a command raises are shown only when it succeeds):
a :class:`~contrastlab.errors.UserError`, a ``ValueError`` from a library check, or an ``OSError``
(a file or folder that cannot be read or written, named in the message).
Each package that offers commands has a ``commands`` module with ``register(subparsers)``; each
registered sub-parser sets ``func`` to a callable taking the parsed namespace and returning an exit code.
A sub-command given :func:`~contrastlab.plugins.add_plugin_option` gets ``--plugin FILE.py``; those files
are loaded here, before the command runs (and so before any config is checked).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib import import_module

from contrastlab import __version__
from contrastlab.errors import UserError, one_line, os_error_message

#: Modules that add sub-commands (a fixed list: nothing is imported by name from user input).
_COMMAND_MODULES: tuple[str, ...] = (
    "contrastlab.objectives.commands",
    "contrastlab.training.commands",
    "contrastlab.evaluation.commands",
    "contrastlab.recipes.commands",
    "contrastlab.data.commands",
    "contrastlab.catalog",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="contrastlab", description="Contrastive, multi-view and multimodal representation learning, and what the representation learned.")
    parser.add_argument("--version", action="version", version=f"contrastlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        import_module(name).register(sub)
    return parser


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: list[str] | None = None) -> int:
    # Threads waiting at OpenMP barriers sleep instead of spinning: beside other busy processes (loader workers,
    # other jobs) spinning made a two-thread step up to 64x slower; read when torch loads, so set before it does.
    # Measured in docs/PERFORMANCE.md ("Oversubscription"); an OMP_WAIT_POLICY the user set wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            raise UserError(f"name a command: {', '.join(_commands(parser))}")
        return _run(args)
    except (UserError, ValueError) as err:
        print(f"contrastlab: error: {one_line(err)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (e.g. `| head`): stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so the interpreter's final flush does not fail
        return 1
    except OSError as err:
        print(f"contrastlab: error: {os_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("contrastlab: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        print(f"contrastlab: error: not enough memory ({one_line(err) or type(err).__name__}); choose a smaller "
              "model (model.dim, hidden widths), batch_size, image size or number of items", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    """Load the command's plugins and run it, holding back the warnings it raises (a solver that did not
    converge, a font matplotlib lacks): shown after a command that succeeds, dropped when it fails, whose one
    line on stderr is the error."""
    with warnings.catch_warnings(record=True) as caught:
        if getattr(args, "plugins", None):
            from contrastlab.plugins import load_plugins

            load_plugins(args.plugins)
        code = int(args.func(args) or 0)
    seen = set()
    for w in caught:
        key = (str(w.message), w.category, w.filename, w.lineno)
        if key not in seen:
            seen.add(key)
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)
    return code


def _out_of_memory(err: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's CPU allocator or CUDA out of memory."""
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()


if __name__ == "__main__":
    raise SystemExit(main())
