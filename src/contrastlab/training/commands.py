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

While it trains, the main process holds an exclusive lock on the run directory
(:func:`contrastlab.rundir.hold`), so a second ``train --overwrite``, ``resume``, ``eval`` or ``report``
of the same directory is refused instead of deleting or interleaving with a live run. ``--overwrite``
replaces only a folder contrastlab made, and only once the new run has its first checkpoint
(:class:`contrastlab.rundir.Replacement`).
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import nullcontext
from pathlib import Path

from contrastlab import rundir
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
    r.add_argument("--force", action="store_true",
                   help="resume although config.yaml's steps, optimiser settings or schedule were edited since the checkpoint")
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
    _check_step_memory(cfg.batch_size, local_batch_size(cfg.batch_size, world_size), comps, cfg.device)
    trial_step(comps, local_batch_size(cfg.batch_size, world_size), device=choose_device(cfg.device, detect()),
               precision=cfg.precision)
    return comps


#: A step holds each view several times over (the batch, the augmented copy, the encoder's first
#: activations and their gradients): the views alone times this must fit, or the step would be killed.
STEP_COPIES = 4
#: Besides the weights (already allocated when the model is built), training holds their gradients and up to
#: two optimiser moments (Adam, LARS): three more copies.
STATE_COPIES = 3


def _check_step_memory(batch_size: int, local: int, comps, device: str) -> None:
    """Refuse, before the trial step allocates it, a step that cannot fit in memory: the views of the batch
    beside the gradients and optimiser moments of the model's weights."""
    from contrastlab.limits import GIB, training_memory

    free = training_memory(device)
    if free is None:
        return
    weights = 4 * sum(p.numel() for p in comps.loss_module().parameters())  # the model alone: checked when built
    shapes = getattr(comps.views, "view_shapes", None) or {}
    per_item = 4 * sum(math.prod(shape) for shape in shapes.values())
    need = STEP_COPIES * local * per_item + STATE_COPIES * weights
    if need > free:
        largest = max(shapes.items(), key=lambda kv: math.prod(kv[1]))
        raise UserError(f"batch_size: {batch_size} items of views like {largest[0]!r} {tuple(largest[1])} would need about "
                        f"{need / GIB:.1f} GiB for one step; at most {free / GIB:.1f} GiB is available "
                        "(lower batch_size or views.options.size)")


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
    from contrastlab.training.config import load_config
    from contrastlab.training.distributed import detect
    from contrastlab.training.loop import train

    if args.out is not None and not args.out.strip():
        raise UserError("--out is empty; name the run directory")
    _require_config_plugins(Path(args.config))
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or cfg.out or Path("runs") / Path(args.config).stem)
    cfg.out = str(out)
    rundir.check_new_run_dir(out, overwrite=args.overwrite)
    check_can_create(out, "output directory")
    info = detect()
    comps = preflight(cfg, info.world_size)
    lock = rundir.hold(out, create=True, advice="wait for it to finish or choose another --out") if info.is_main else nullcontext()
    with lock:  # train() checks the folder again under it: another run may have finished there meanwhile
        _report(train(cfg, out, overwrite=args.overwrite, dataset=comps.dataset, views=comps.views))
    return 0


def _no_checkpoint(run_dir: Path) -> UserError:
    """What to say about a run that was stopped before it wrote its first checkpoint."""
    from contrastlab.training.loop import CONFIG_FILE, METRICS_FILE

    logged = ""
    try:
        rows = (run_dir / METRICS_FILE).read_text(encoding="utf-8", errors="replace").count("\n") - 1
        logged = f" (metrics.csv logged {rows} step(s))" if rows > 0 else ""
    except OSError:
        pass
    return UserError(f"run {run_dir} stopped before its first checkpoint{logged}, so there is nothing to resume; "
                     f"start it again with: contrastlab train {run_dir / CONFIG_FILE} --out {run_dir} --overwrite")


def _resume(args: argparse.Namespace) -> int:
    from contrastlab.training.checkpoint import check_config_unchanged, check_resumable, read_checkpoint
    from contrastlab.training.config import config_to_dict
    from contrastlab.training.distributed import detect
    from contrastlab.training.loop import CONFIG_FILE, train
    from contrastlab.training.run import last_checkpoint, read_run_config

    run_dir = Path(args.run_dir)
    _, cfg = read_run_config(run_dir)
    info = detect()
    with rundir.hold(run_dir, advice="wait for it to finish") if info.is_main else nullcontext():
        if not rundir.has_checkpoint(run_dir):
            raise _no_checkpoint(run_dir)
        ckpt = read_checkpoint(last_checkpoint(run_dir))
        forced = check_config_unchanged(ckpt, config_to_dict(cfg), config_path=run_dir / CONFIG_FILE, force=args.force)
        comps = preflight(cfg, info.world_size)
        check_resumable(ckpt, comps.model, comps.objective, world_size=info.world_size)
        if info.is_main:
            if forced:
                print(f"contrastlab: resuming with the edited {', '.join(forced)} (--force)", file=sys.stderr)
            if not rundir.is_marked(run_dir):  # a run made before the marker existed: it is ours
                rundir.mark(run_dir)
        _report(train(cfg, run_dir, resume=True, dataset=comps.dataset, views=comps.views))
    return 0
