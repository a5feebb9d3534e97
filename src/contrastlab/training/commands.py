"""``contrastlab train CONFIG`` and ``contrastlab resume RUN_DIR``.

Both run on one process, or on several under ``torchrun --nproc-per-node N -m contrastlab train
CONFIG`` (DDP, detected from the environment).

Everything that can be checked is checked before the run directory is touched: the config, the
output location, the batch against the number of processes and the objective, the data, views,
model and objective built from the config, and (for ``resume``) that the last checkpoint fits
them. A mistake therefore never leaves a half-made run behind, never deletes the run that
``--overwrite`` would have replaced, and never hangs other processes waiting in the process group.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from contrastlab.errors import UserError, check_can_create


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


def _load_config(path: str, overrides: list[str]):
    """``load_config`` with the file problems it leaves to the caller named on one line."""
    from contrastlab.training.config import load_config

    if Path(path).is_dir():
        raise UserError(f"config {path} is a folder, not a YAML file")
    try:
        return load_config(path, overrides)
    except UnicodeDecodeError as err:
        raise UserError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def preflight(cfg, world_size: int):
    """Build and check everything a run needs, before anything is written.

    Args:
        cfg: the checked :class:`~contrastlab.training.config.TrainConfig`.
        world_size: the number of processes that will train (``WORLD_SIZE`` under torchrun).

    Returns:
        The :class:`~contrastlab.training.build.Components` (the run reuses their data and views).

    Raises:
        UserError: a batch that does not split over the processes, or a batch of one item for an
            objective that contrasts the items of a batch.
        ValueError: any mismatch between data, views, model and objective, naming the config key.
    """
    from contrastlab.objectives.registry import get_objective
    from contrastlab.training.build import build_components
    from contrastlab.training.distributed import local_batch_size
    from contrastlab.training.sampler import ShardedBatches

    try:
        local_batch_size(cfg.batch_size, world_size)
    except ValueError as err:
        raise UserError(f"batch_size: {err} (the number of processes is torchrun's --nproc-per-node times its nodes)") from None
    spec = get_objective(cfg.objective.name)
    if spec.uses_negatives and cfg.batch_size < 2:
        raise UserError(
            f"batch_size: objective {spec.name!r} contrasts each item with the other items of its batch "
            f"(in-batch negatives), so it needs batch_size >= 2, got {cfg.batch_size}"
        )
    comps = build_components(cfg)
    try:
        ShardedBatches(len(comps.dataset), cfg.batch_size, seed=cfg.seed, world_size=world_size)
    except ValueError as err:
        raise UserError(f"batch_size: {err}") from None
    return comps


def _train(args: argparse.Namespace) -> int:
    from contrastlab.training.distributed import detect
    from contrastlab.training.loop import check_new_run_dir, train

    cfg = _load_config(args.config, args.overrides)
    out = Path(args.out or cfg.out or Path("runs") / Path(args.config).stem)
    cfg.out = str(out)
    check_new_run_dir(out, overwrite=args.overwrite)
    check_can_create(out, "output directory")
    comps = preflight(cfg, detect().world_size)
    _report(train(cfg, out, overwrite=args.overwrite, dataset=comps.dataset, views=comps.views))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from contrastlab.training.checkpoint import read_checkpoint
    from contrastlab.training.distributed import detect
    from contrastlab.training.loop import train
    from contrastlab.training.run import check_resumable, last_checkpoint, read_run_config

    run_dir = Path(args.run_dir)
    _, cfg = read_run_config(run_dir)
    ckpt = read_checkpoint(last_checkpoint(run_dir))
    world_size = detect().world_size
    comps = preflight(cfg, world_size)
    check_resumable(ckpt, comps.model, comps.objective, world_size=world_size)
    _report(train(cfg, run_dir, resume=True, dataset=comps.dataset, views=comps.views))
    return 0
