"""``contrastlab train CONFIG`` and ``contrastlab resume RUN_DIR``.

Both run on one process, or on several under ``torchrun --nproc-per-node N -m contrastlab train
CONFIG`` (DDP, detected from the environment).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train encoders on views with an objective, from a YAML recipe")
    p.add_argument("config", help="the YAML recipe")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key by its dotted path, e.g. --set optim.lr=0.01 (the value is YAML); repeatable",
    )  # fmt: skip
    p.add_argument("--out", help="the run directory (default: the recipe's `out`, else runs/<recipe name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=_train)
    r = sub.add_parser("resume", help="continue an interrupted run exactly where its last checkpoint left it")
    r.add_argument("run_dir", help="the run directory")
    r.set_defaults(func=_resume)


def _report(result) -> None:
    from contrastlab.training.distributed import detect

    if detect().is_main:
        loss = "nan" if not math.isfinite(result.loss) else f"{result.loss:.4f}"
        print(f"trained {result.step} steps, final loss {loss}; run in {result.run_dir}")


def _train(args: argparse.Namespace) -> int:
    from contrastlab.training.config import load_config
    from contrastlab.training.loop import train

    cfg = load_config(args.config, args.overrides)
    out = args.out or cfg.out or str(Path("runs") / Path(args.config).stem)
    cfg.out = out
    _report(train(cfg, out, overwrite=args.overwrite))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from contrastlab.training.loop import train
    from contrastlab.training.run import read_run_config

    _, cfg = read_run_config(args.run_dir)
    _report(train(cfg, args.run_dir, resume=True))
    return 0
