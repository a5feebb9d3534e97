"""``contrastlab recipe NAME`` runs an experiment of the source material; ``contrastlab demo`` runs the main one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from contrastlab.errors import UserError
from contrastlab.plugins import add_plugin_option

DEMO_RECIPE = "homework-invariance"
DEMO_OUT = Path("runs") / "demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipe", help="run a recipe: a set of trainings, their evaluation, a comparison and a report")
    p.add_argument("name", nargs="?", help="the recipe (see --list)")
    p.add_argument("--list", action="store_true", help="list the recipes")
    p.add_argument("--scale", default="quick", choices=["quick", "demo", "full"],
                   help="quick: a minute or two (tests); full: the measured results (minutes on 2 cores)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="S",
                   help="repeat the recipe under each seed (added to every run's seed) and report mean ± sd "
                        "over them (default: 0)")
    p.add_argument("--out", help="the recipe folder (default runs/recipes/NAME-SCALE, plus -seed-S... for other seeds)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing recipe folder")
    p.add_argument("--resume", action="store_true", help="keep the runs an interrupted call finished")
    p.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs of the recipe")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_plugin_option(p)
    p.set_defaults(func=_recipe)
    d = sub.add_parser("demo", help=f"run the {DEMO_RECIPE} recipe at demo scale on the built-in Shapes world")
    d.add_argument("--out", default=str(DEMO_OUT), help=f"where to write (default {DEMO_OUT}; replaced if it holds an "
                                                         "earlier demo)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)


def _recipe(args: argparse.Namespace) -> int:
    from contrastlab.recipes.spec import load_recipe, recipe_names

    if args.list:
        for name in recipe_names():
            print(f"{name:<22} {' '.join(load_recipe(name).description.split())}")
        return 0
    if not args.name:
        raise UserError("name a recipe, or use --list to see them")
    from contrastlab.recipes.runner import print_summary, run_recipe_seeds

    _quiet_if(args.no_progress)

    result = run_recipe_seeds(args.name, args.seeds, scale=args.scale, out=args.out, overwrite=args.overwrite,
                              resume=args.resume, only=args.only, progress=not args.no_progress)
    print_summary(result)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from contrastlab.recipes.runner import MARKER, print_summary, run_recipe

    _quiet_if(args.no_progress)
    out = Path(args.out)
    # An earlier demo in the same folder is replaced; anything else there (another recipe's results
    # included) is never touched: run_recipe refuses a folder it would have to overwrite.
    overwrite = _holds_demo(out / MARKER)
    result = run_recipe(DEMO_RECIPE, scale="demo", out=out, overwrite=overwrite, progress=not args.no_progress)
    print_summary(result)
    return 0


def _holds_demo(marker: Path) -> bool:
    """Whether ``marker`` is the record of an earlier ``contrastlab demo`` (the demo recipe at demo scale)."""
    import json

    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(record, dict) and (record.get("recipe"), record.get("scale")) == (DEMO_RECIPE, "demo") \
        and record.get("seeds", [0]) == [0]


def _quiet_if(no_progress: bool) -> None:
    """``--no-progress`` also silences the bars of work deep inside (e.g. synthesising spoken captions)."""
    if no_progress:
        os.environ["CONTRASTLAB_NO_PROGRESS"] = "1"
