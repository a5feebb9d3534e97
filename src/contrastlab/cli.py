"""The command line: a thin front that parses, validates and calls the library.

Every mistake in the user's input ends as one line on stderr and exit status 2, without a traceback.
Each package that offers commands has a ``commands`` module with ``register(subparsers)``; each
registered sub-parser sets ``func`` to a callable taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from contrastlab import __version__
from contrastlab.errors import UserError, one_line

#: Modules that add sub-commands (a fixed list: nothing is imported by name from user input).
_COMMAND_MODULES: tuple[str, ...] = (
    "contrastlab.objectives.commands",
    "contrastlab.training.commands",
    "contrastlab.evaluation.commands",
    "contrastlab.recipes.commands",
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


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        print(f"contrastlab: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("contrastlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
