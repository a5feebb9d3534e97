"""``contrastlab train CONFIG`` and ``contrastlab resume RUN_DIR``.

Both run on one process, or on several under ``torchrun --nproc-per-node N -m contrastlab train
CONFIG`` (DDP, detected from the environment).

Everything that can be checked is checked before the run directory is touched: the config, the
output location, the batch against the number of processes and the objective, the data, views,
model and objective built from the config, one trial training step on the first batch (which
the model, its gradients and the random state do not remember), and (for ``resume``) that the
last checkpoint fits them. A mistake therefore never leaves a half-made run behind, never
deletes the run that ``--overwrite`` would have replaced, and never hangs other processes
waiting in the process group.

While it trains, the main process holds an exclusive lock on the run directory, so a second
``train --overwrite`` or ``resume`` of the same directory is refused instead of deleting or
interleaving with a live run.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from contrastlab.errors import UserError, check_can_create
from contrastlab.plugins import add_plugin_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train encoders on views with an objective, from a YAML recipe")
    p.add_argument("config", help="the YAML recipe")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key by its dotted path, e.g. --set optim.lr=0.01 (the value is YAML); repeatable",
    )  # fmt: skip
    p.add_argument("--out", help="the run directory (default: the recipe's `out`, else runs/<recipe name>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    add_plugin_option(p)
    p.set_defaults(func=_train)
    r = sub.add_parser("resume", help="continue an interrupted run exactly where its last checkpoint left it")
    r.add_argument("run_dir", help="the run directory")
    add_plugin_option(r)
    r.set_defaults(func=_resume)


def _report(result) -> None:
    from contrastlab.training.distributed import detect

    if detect().is_main:
        loss = "nan" if not math.isfinite(result.loss) else f"{result.loss:.4f}"
        print(f"trained {result.step} steps, final loss {loss}; run in {result.run_dir}")


def preflight(cfg, world_size: int):
    """Build and check everything a run needs, and try one training step, before anything is written.

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
    from contrastlab.training.distributed import detect, local_batch_size
    from contrastlab.training.loop import choose_device, trial_step
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
    trial_step(comps, local_batch_size(cfg.batch_size, world_size), device=choose_device(cfg.device, detect()),
               precision=cfg.precision)
    return comps


@contextmanager
def hold_run_dir(run_dir: Path, *, main: bool) -> Iterator[None]:
    """Create ``run_dir`` if needed and hold an exclusive lock on it (the main process only).

    The lock is an ``flock`` on the directory itself: it is released when the process ends, however
    it ends, and nothing is written for it.

    Raises:
        UserError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unguarded
        fcntl = None
    if not main or fcntl is None:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"run directory {run_dir} is in use by another contrastlab process; "
                            "wait for it to finish or choose another --out") from None
        yield
    finally:
        os.close(fd)


def _clear(run_dir: Path) -> None:
    """Empty a previous run's directory, keeping the directory (and so the lock held on it).

    ``config.yaml`` goes last, so that at every moment the directory either still holds a run or is
    empty: other processes of a torchrun job checking it meanwhile never see a folder that is neither.
    """
    config = run_dir / "config.yaml"
    for child in sorted(run_dir.iterdir(), key=lambda p: p == config):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _require_config_plugins(path: Path) -> None:
    """Refuse a config whose ``plugins`` (copied from a run's ``config.yaml``) are not loaded by ``--plugin``.

    The config's entries are only checked, never loaded. A file that cannot be read or parsed is left
    to ``load_config``, which says what is wrong with it.
    """
    from contrastlab.plugins import require
    from contrastlab.training._schema import parse_yaml

    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, ValueError, UserError):
        return
    if isinstance(raw, dict):
        require(raw.get("plugins"), what=f"config {path}")


def _train(args: argparse.Namespace) -> int:
    from contrastlab.training.distributed import detect
    from contrastlab.training.config import load_config
    from contrastlab.training.loop import check_new_run_dir, train

    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty; name the run directory")
    _require_config_plugins(Path(args.config))
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or cfg.out or Path("runs") / Path(args.config).stem)
    cfg.out = str(out)
    check_new_run_dir(out, overwrite=args.overwrite)
    check_can_create(out, "output directory")
    info = detect()
    comps = preflight(cfg, info.world_size)
    with hold_run_dir(out, main=info.is_main):
        if info.is_main:
            check_new_run_dir(out, overwrite=args.overwrite)  # again: another run may have finished there meanwhile
            if args.overwrite:
                _clear(out)
        _report(train(cfg, out, overwrite=args.overwrite, dataset=comps.dataset, views=comps.views))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from contrastlab.training.checkpoint import check_resumable, read_checkpoint
    from contrastlab.training.distributed import detect
    from contrastlab.training.loop import train
    from contrastlab.training.run import last_checkpoint, read_run_config

    run_dir = Path(args.run_dir)
    _, cfg = read_run_config(run_dir)
    info = detect()
    with hold_run_dir(run_dir, main=info.is_main):
        ckpt = read_checkpoint(last_checkpoint(run_dir))
        comps = preflight(cfg, info.world_size)
        check_resumable(ckpt, comps.model, comps.objective, world_size=info.world_size)
        _report(train(cfg, run_dir, resume=True, dataset=comps.dataset, views=comps.views))
    return 0
