"""The one training loop: any views, any encoders, any objective; resumable, logged, data-parallel."""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from contrastlab.data.base import Dataset, to_device
from contrastlab.data.loading import Batches, LoaderOptions, sample_batch, trainer_threads
from contrastlab import rundir
from contrastlab.errors import UserError, one_line
from contrastlab.files import atomic_write_text
from contrastlab.plugins import loaded as loaded_plugins
from contrastlab.training import distributed
from contrastlab.training.build import Components, build_components, check_given, compile_towers, make_dataset
from contrastlab.training.checkpoint import (
    CheckpointManager,
    check_optimizer_fits,
    check_resumable,
    checkpoint_step,
    discard,
    flatten_optimizer,
    read_checkpoint,
    unflatten_optimizer,
)
from contrastlab.training.config import TrainConfig, config_to_dict
from contrastlab.training.logging import MetricsLog, Progress, TensorBoard, Window, read_metrics
from contrastlab.training.monitors import Monitors, batch_geometry, check_monitor, monitor_due, monitor_every
from contrastlab.training.optim import build_optimizer, lr_factor, set_lr
from contrastlab.training.sampler import ShardedBatches, derive_seed
from contrastlab.training.step import mean_norm, run_temperature
from contrastlab.views.base import ViewGenerator

CONFIG_FILE, METRICS_FILE = "config.yaml", "metrics.csv"


def _recorded_given(run_dir: Path) -> dict[str, str]:
    """The towers a run was trained with from Python, as its ``config.yaml`` records them."""
    from contrastlab.training._schema import parse_yaml

    path = run_dir / CONFIG_FILE
    raw = parse_yaml(path.read_text(encoding="utf-8"), source=str(path)) if path.is_file() else None
    given = ((raw or {}).get("model") or {}).get("given") if isinstance(raw, dict) else None
    return {str(k): str(v) for k, v in given.items()} if isinstance(given, dict) else {}


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int  #: steps completed
    loss: float  #: mean loss over the last logging interval
    checkpoint: Path | None  #: the last checkpoint written


def choose_device(name: str, info: distributed.DistInfo) -> torch.device:
    """``"auto"`` is CUDA when available; under torchrun each process takes its ``LOCAL_RANK`` GPU."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: 'cuda' was asked for, but torch sees no CUDA device (use device: auto or cpu)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", info.local_rank % torch.cuda.device_count())


#: The autocast dtype of each ``precision`` (fp32: no autocast).
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_options(precision: str, device: torch.device) -> dict:
    """The keyword arguments of ``torch.autocast`` for a run's ``precision`` on ``device``.

    Example:
        >>> autocast_options("fp16", torch.device("cpu"))
        {'device_type': 'cpu', 'dtype': torch.float16, 'enabled': True}
        >>> autocast_options("fp32", torch.device("cpu"))["enabled"]
        False
    """
    dtype = AUTOCAST_DTYPES[precision]
    return {"device_type": device.type, "dtype": dtype or torch.bfloat16, "enabled": dtype is not None}


def image_layout(views: dict, memory_format: torch.memory_format | None) -> dict:
    """``views`` with every 4-D batch ``(N, C, H, W)`` in ``memory_format`` (``None``: unchanged); other views as
    they are (what ``model.channels_last`` does to the inputs)."""
    if memory_format is None:
        return views
    return {k: v.contiguous(memory_format=memory_format) if v.dim() == 4 else v for k, v in views.items()}


def step_inputs(comps: Components, batch, views: dict, device: torch.device,
                memory_format: torch.memory_format | None = None) -> dict:
    """The keyword arguments of one call of the loss module, on ``device``: a batch and its views (4-D views in
    ``memory_format`` when given, see :func:`image_layout`)."""

    def move(d):
        return None if d is None else {k: v.to(device, non_blocking=True) for k, v in d.items()}

    gen = comps.views
    return {
        "views": image_layout(move(views), memory_format),
        "lengths": move({v: batch.lengths[m] for v, m in gen.view_modalities.items() if m in batch.lengths}),
        "labels": None if batch.labels is None else batch.labels.to(device),
        "clean": move(gen.eval_views(batch)) if comps.recon_views else None,
        "index": None if batch.index is None else batch.index.to(device),
    }


def trial_step(comps: Components, batch_size: int, *, device: torch.device, precision: str = "fp32") -> None:
    """One forward and backward pass on the first ``batch_size`` items, before anything is written.

    Catches what only a step shows (an objective option that does not fit the embeddings, a batch
    too small for BatchNorm, a loss that overflows at once) while the user's files are untouched.
    The model's weights and buffers, its gradients and the global random state are left as they were.
    Call it before a process group is formed: the step's gathers would wait for the other processes.

    Raises:
        UserError: the step failed, or its loss is not finite; naming the error and the items used.
    """
    module = comps.loss_module()
    saved = copy.deepcopy(module.state_dict())
    where = f"a trial step on the first {batch_size} items (before anything is written)"
    autocast = autocast_options(precision, device)
    try:
        with torch.random.fork_rng(devices=[]):
            module.to(device)
            batch = to_device(sample_batch(comps.dataset, batch_size), device)
            inputs = step_inputs(comps, batch, comps.views(batch, torch.Generator().manual_seed(0)), device)
            with torch.autocast(**autocast):
                loss, _ = module(**inputs)
            value = float(loss.detach())
            if math.isfinite(value):
                loss.backward()
    except (RuntimeError, ValueError, IndexError, TypeError) as err:
        raise UserError(f"{where} failed: {one_line(err)}") from None
    finally:
        module.zero_grad(set_to_none=True)
        module.to("cpu")
        module.load_state_dict(saved)
    if not math.isfinite(value):
        raise UserError(f"{where} gave a loss of {value}: an option overflows (look at the objective's options, "
                        f"e.g. a tiny temperature, and at the data's range)")


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    dataset: Dataset | None = None,
    views: ViewGenerator | None = None,
    encoders: Mapping[str, torch.nn.Module] | None = None,
) -> TrainResult:
    """Train (or resume) the run described by ``cfg`` in ``run_dir``.

    Under torchrun every process calls this; the process group is joined from the environment.

    Args:
        cfg: the checked config.
        run_dir: the run directory (created; refused if it exists, unless ``resume`` or ``overwrite``).
        resume: continue from the last checkpoint in ``run_dir``.
        overwrite: replace an existing run directory, only one contrastlab made (:mod:`contrastlab.rundir`).
            The new run is written beside it and takes its place when it writes its first checkpoint; a
            new run that fails before then leaves the old one as it was.
        dataset: use this data set instead of building ``cfg.data`` (tests, notebooks).
        views: use this view generator instead of building ``cfg.views``.
        encoders: your own backbones: a view or modality name -> an ``nn.Module`` mapping a batch of
            that view to ``(N, F)`` features (``F`` is found by one forward pass). Their class names
            are recorded in the run's ``config.yaml`` (``model.given``); resuming or loading the run
            needs them given again.

    Returns:
        A :class:`TrainResult`.

    Raises:
        UserError: an unusable output directory, a resume without checkpoint, a non-finite loss.
        ValueError: a config that does not fit the data or views.
    """
    run_dir = Path(run_dir)
    info = distributed.detect()
    replacement = None
    if not resume and info.is_main:  # only rank 0 owns the run directory; other ranks would race its creation
        if rundir.check_new_run_dir(run_dir, overwrite=overwrite):
            replacement = rundir.Replacement(run_dir)  # the old run stays until the new one has a checkpoint
    device = choose_device(cfg.device, info)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":  # NCCL, pinned memory and new tensors use this process's own GPU
        torch.cuda.set_device(device)
    joined = info.enabled and not dist.is_initialized()
    distributed.init(info, device)
    clean = False
    tf32 = set_tf32(cfg.tf32) if device.type == "cuda" else None
    try:
        with rundir.hold(run_dir) if info.is_main else contextlib.nullcontext(), _terminate_as_exit(replacement is not None):
            result = _Run(cfg, run_dir, info, device, replacement).run(resume=resume, dataset=dataset, views=views,
                                                                       encoders=encoders)
        clean = True
        return result
    finally:
        if replacement is not None:  # a new run that never reached its first checkpoint leaves nothing behind
            replacement.abort()
        if tf32 is not None:
            set_tf32(*tf32)
        if joined:
            distributed.shutdown(together=clean)


def _sigterm_raises(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _terminate_as_exit(active: bool):
    """While a replacing run has no checkpoint yet (``active``), SIGTERM (``kill``, Slurm's ``scancel``) raises
    ``SystemExit``, so that its ``finally`` blocks run and the hidden sibling is removed, as on Ctrl-C. Removed
    by :func:`_sigterm_default` once the new run is in place (nothing is left to clean up then). Only from the
    main thread, only when nobody else set a handler, and only our own handler is ever removed. A process stuck
    in a C call (a collective) runs the handler only when the call returns; SIGKILL leaves the sibling to the
    next ``train``'s sweep."""
    if not active or threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _sigterm_raises)
    try:
        yield
    finally:
        _sigterm_default()


def _sigterm_default() -> None:
    """Put SIGTERM's default action back if the handler is still :func:`_sigterm_raises`."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is _sigterm_raises:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def set_tf32(matmul: bool, conv: bool | None = None) -> tuple[bool, bool]:
    """Allow (or forbid) TF32 tensor cores in CUDA float32 matrix products and cuDNN convolutions (``conv``: as
    ``matmul`` when not given). Process-wide settings of torch, through ``torch.set_float32_matmul_precision``
    ("high" or "highest") and ``torch.backends.cudnn.allow_tf32`` (torch refuses to read its settings once they
    were set through both these and the newer ``fp32_precision`` attributes, so only these are used).

    Returns:
        The previous ``(matmul, conv)`` settings, to restore them with ``set_tf32(*previous)``.

    Example:
        >>> previous = set_tf32(True); set_tf32(*previous) == (True, True)
        True
    """
    conv = matmul if conv is None else conv
    previous = (torch.get_float32_matmul_precision() != "highest", bool(torch.backends.cudnn.allow_tf32))
    torch.set_float32_matmul_precision("high" if matmul else "highest")
    torch.backends.cudnn.allow_tf32 = conv
    return previous


class _Run:
    def __init__(self, cfg: TrainConfig, run_dir: Path, info: distributed.DistInfo, device: torch.device,
                 replacement: rundir.Replacement | None = None) -> None:
        self.cfg, self.run_dir, self.info, self.device = cfg, run_dir, info, device
        self.target = run_dir  # where the run ends up; run_dir is a sibling until a replacement is committed
        self.replacement = replacement
        self.first_checkpoint = True  # a new run's weights are checked before its first checkpoint
        #: what each checkpoint records of the config, for resume to compare config.yaml with (``out`` may differ)
        self.recorded_config = {k: v for k, v in config_to_dict(cfg).items() if k != "out"}
        self.skipped0 = 0  # unreadable items replaced before this process started (from the checkpoint)
        self.lanes: int | None = None  # a stream's lanes per rank: recorded in checkpoints, kept on resume
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)  # fp16's gradient scaler, made by run()

    def _barrier(self) -> None:
        if self.info.enabled:
            distributed.barrier()

    def _setup_dir(self, resume: bool, encoders: Mapping[str, torch.nn.Module] | None) -> None:
        if resume:
            return
        if self.info.is_main:
            if self.replacement is not None:
                self.run_dir = self.replacement.begin()
            else:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            rundir.mark(self.run_dir)  # first: from now on the folder is known to be a run contrastlab made
            raw = config_to_dict(self.cfg)
            raw["out"] = str(self.target)
            raw["model"]["given"] = {k: f"{type(e).__module__}.{type(e).__qualname__}" for k, e in (encoders or {}).items()}
            raw["plugins"] = loaded_plugins()  # recorded so that eval and resume ask for them
            atomic_write_text(self.run_dir / CONFIG_FILE, yaml.safe_dump(raw, sort_keys=False))
        self._barrier()

    def _build(self, dataset: Dataset | None, views: ViewGenerator | None, encoders) -> Components:
        torch.manual_seed(self.cfg.seed)  # the same initial weights in every process
        comps = build_components(self.cfg, dataset=dataset, views=views, encoders=encoders)
        torch.manual_seed(derive_seed(self.cfg.seed, self.info.rank, 2))  # dropout differs per process
        return comps

    def run(self, *, resume: bool, dataset: Dataset | None, views: ViewGenerator | None, encoders=None) -> TrainResult:
        cfg, info, device = self.cfg, self.info, self.device
        if resume:
            check_given(_recorded_given(self.run_dir), encoders, self.run_dir)
        comps = self._build(dataset, views, encoders)  # a config that does not build never touches the run directory
        check_monitor(cfg.monitor, comps.dataset)
        # About to replace a run: try a step first. Not under a process group, where ranks could disagree
        # on whether the run directory holds a run and the step's gathers would wait for each other
        # (the command line tries the step on every rank before the group is formed).
        if not resume and not info.enabled and self.replacement is not None:
            trial_step(comps, cfg.batch_size, device=device, precision=cfg.precision)
        self._setup_dir(resume, encoders)
        module = comps.loss_module().to(device)
        if info.enabled and device.type == "cuda" and cfg.model.sync_batchnorm:
            module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        if cfg.model.channels_last:
            module.model.to(memory_format=torch.channels_last)  # 4-D weights (convolutions); others unchanged
        if cfg.model.compile:
            compile_towers(module.model)
        #: fp16 scales the loss so that small gradients survive in half precision; a no-op otherwise
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        wrapped = module
        if info.enabled:
            wrapped = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        o = cfg.optim
        optimizer = build_optimizer(
            o.name, [module], lr=o.lr, weight_decay=o.weight_decay, momentum=o.momentum, nesterov=o.nesterov,
            betas=o.betas, trust_coefficient=o.trust_coefficient, exclude_bias_and_norm=o.exclude_bias_and_norm,
        )  # fmt: skip
        try:
            sampler = ShardedBatches(len(comps.dataset), cfg.batch_size, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
        except ValueError as err:
            raise ValueError(f"batch_size: {err}") from None
        total = cfg.steps if cfg.steps is not None else cfg.epochs * sampler.steps_per_epoch
        view_rng = torch.Generator().manual_seed(derive_seed(cfg.seed, info.rank, 1))
        manager = CheckpointManager(self.run_dir / "checkpoints", keep_last=cfg.checkpoint.keep_last, keep_best=cfg.checkpoint.keep_best)
        if not resume and not info.is_main:  # only the main process writes; the folder may still hold the run being replaced
            manager.index = {"last": None, "best": None, "best_loss": None}
        self.monitor_every = monitor_every(cfg.monitor, total=total, batch_size=cfg.batch_size,
                                           views=len(comps.views.view_names), log_every=cfg.log.every,
                                           probe_head=bool(comps.recon_views))
        monitors = self._monitors(comps, module, total, given_data=dataset is not None)
        start, elapsed0 = 0, 0.0
        if resume:
            start, elapsed0 = self._restore(manager, module, optimizer, view_rng, total, monitors)
        logs = _Logs(
            self.run_dir, enabled=info.is_main, resume_step=start if resume else None, total=total,
            progress=cfg.log.progress, tensorboard=cfg.log.tensorboard,
        )  # fmt: skip
        threads = torch.get_num_threads()
        try:
            return self._loop(comps, module, wrapped, optimizer, sampler, view_rng, manager, logs, start, total, elapsed0,
                              monitors)
        finally:
            logs.close()
            torch.set_num_threads(threads)

    def _monitors(self, comps: Components, module, total: int, *, given_data: bool) -> Monitors | None:
        """The run's monitors, on the main process when ``monitor.every`` is not 0 (see :mod:`.monitors`)."""
        cfg = self.cfg
        if not (self.monitor_every and self.info.is_main):
            return None
        other = "test" if cfg.data.split == "train" else "train"
        return Monitors.for_run(
            cfg.monitor, every=self.monitor_every, total=total, model=module.model, views=comps.views,
            train=comps.dataset, held_out=None if given_data else (lambda: make_dataset(cfg, other)),
            device=self.device, seed=derive_seed(cfg.seed, 0, 4),
            batch_size=max(1, cfg.batch_size // self.info.world_size),
            stage="head" if comps.recon_views else "backbone",  # an autoencoder's step keeps no backbone features
        )  # fmt: skip

    def _restore(self, manager, module, optimizer, view_rng, total: int, monitors: Monitors | None) -> tuple[int, float]:
        path = manager.path("last")
        if path is None or not path.is_dir():
            raise UserError(f"no checkpoint to resume from in {manager.directory}")
        ckpt = read_checkpoint(path)
        check_resumable(ckpt, module.model, module.objective, world_size=self.info.world_size)
        check_optimizer_fits(ckpt, optimizer)
        step = checkpoint_step(ckpt)
        if step > total:
            raise UserError(f"checkpoint {path} is at step {step}, past the {total} steps the run's "
                            f"{CONFIG_FILE} asks for; was steps or epochs edited?")
        module.model.load_state_dict(ckpt.model)
        if ckpt.objective:
            module.objective.load_state_dict(ckpt.objective)
        try:
            optimizer.load_state_dict(unflatten_optimizer(ckpt.tensors, ckpt.meta["optimizer"]))
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(f"checkpoint {path} holds an optimiser state that does not fit this run ({one_line(err)})") from None
        r = self.info.rank
        if monitors is not None:
            monitors.load_state(ckpt.tensors, ckpt.meta.get("monitor"), source=str(path))
        view_rng.set_state(ckpt.tensors[f"rng.views.{r}"])
        torch.set_rng_state(ckpt.tensors[f"rng.torch.{r}"])
        if self.device.type == "cuda" and f"rng.cuda.{r}" in ckpt.tensors:
            torch.cuda.set_rng_state(ckpt.tensors[f"rng.cuda.{r}"], self.device)
        self._restore_scaler(ckpt.meta.get("grad_scaler"), path)
        if self.info.is_main:  # checkpoints a killed run wrote after the one we resume from
            for name in manager.names():
                if name > path.name:
                    discard(manager.directory / name)
        elapsed = ckpt.meta.get("elapsed_s", 0.0)
        skipped = ckpt.meta.get("skipped", 0)
        self.skipped0 = int(skipped) if isinstance(skipped, int) and skipped >= 0 else 0
        self.first_checkpoint = False
        lanes = ckpt.meta.get("lanes")
        self.lanes = lanes if isinstance(lanes, int) and 0 < lanes <= 4096 else None
        return step, float(elapsed) if isinstance(elapsed, (int, float)) else 0.0

    def _restore_scaler(self, state, path: Path) -> None:
        """The fp16 gradient scaler's scale and growth tracker as the checkpoint holds them (a checkpoint written
        without one, e.g. by an older contrastlab, leaves the scaler at its start)."""
        if not self.scaler.is_enabled() or state is None:
            return
        numbers = isinstance(state, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in state.values())
        if not numbers or not {"scale", "_growth_tracker"} <= set(state):
            raise UserError(f"checkpoint {path} holds a gradient scaler state that is not a mapping of numbers "
                            f"with 'scale' and '_growth_tracker': {state!r}")
        self.scaler.load_state_dict(state)

    def _rng_tensors(self, view_rng: torch.Generator) -> dict[str, torch.Tensor]:
        states = {"views": view_rng.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        out = {}
        for name, state in states.items():
            every = distributed.all_gather_no_grad(state.to(self.device if self.device.type == "cuda" else "cpu")[None])
            for rank in range(every.shape[0]):
                out[f"rng.{name}.{rank}"] = every[rank].cpu()
        return out

    def _save(self, manager, module, optimizer, view_rng, step, epoch, loss, elapsed, skipped, monitors) -> Path | None:
        rng = self._rng_tensors(view_rng)  # every process takes part in the gather
        if not self.info.is_main:
            return None
        opt_tensors, opt_plain = flatten_optimizer(optimizer.state_dict())
        meta = {"step": step, "epoch": epoch, "world_size": self.info.world_size, "loss": loss, "elapsed_s": elapsed,
                "skipped": skipped, "lanes": self.lanes, "optimizer": opt_plain, "temperature": run_temperature(module.model, module.objective),
                "config": self.recorded_config}
        if self.scaler.is_enabled():  # plain numbers: the scale and how many finite steps since it last changed
            meta["grad_scaler"] = self.scaler.state_dict()
        mon_tensors: dict[str, torch.Tensor] = {}
        if monitors is not None:
            mon_tensors, meta["monitor"] = monitors.state()
        return manager.save(
            step, model=module.model.state_dict(), objective=module.objective.state_dict(),
            tensors={**opt_tensors, **rng, **mon_tensors}, meta=meta, loss=loss,
        )

    def _loop(self, comps, module, wrapped, optimizer, sampler, view_rng, manager, logs, start, total, elapsed0,
              monitors: Monitors | None) -> TrainResult:
        cfg, device = self.cfg, self.device
        views_gen, dataset = comps.views, comps.dataset
        autocast = autocast_options(cfg.precision, device)
        layout = torch.channels_last if cfg.model.channels_last else None
        scaler = self.scaler
        module.train()
        t_start = time.perf_counter()
        window, since_ckpt = Window(device), Window(device)
        skipped_here = 0  # unreadable items this process replaced (data.on_error: skip)
        skipped = self.skipped0  # ... and by every process over the whole run, as of the last log or checkpoint
        last_loss, last_ckpt = float("nan"), manager.path("last")
        if start >= total and (self.run_dir / METRICS_FILE).is_file():  # resuming a finished run: its last loss
            last_loss = next((row["loss"] for row in reversed(read_metrics(self.run_dir / METRICS_FILE))), last_loss)
        d = cfg.data
        batches = Batches(dataset, sampler, start, total, device=device, rank=self.info.rank,
                          world_size=self.info.world_size, seed=derive_seed(cfg.seed, self.info.rank, 3),
                          options=LoaderOptions(num_workers=d.num_workers, prefetch=d.prefetch, pin_memory=d.pin_memory),
                          lanes=self.lanes)
        self.lanes = batches.lanes
        workers = batches.options.workers(dataset)
        if cfg.threads is None and device.type == "cpu":  # leave the loader workers their cores (restored by run)
            torch.set_num_threads(trainer_threads(workers, torch.get_num_threads()))
        if monitors is not None:
            for note in monitors.take_notes():
                logs.note(note)
        t0 = time.perf_counter()
        for step, batch in batches:
            t_data = batches.wait
            batch = to_device(batch, device)  # the views run on the training device
            views = views_gen(batch, view_rng)
            t_views = time.perf_counter() - t0
            inputs = step_inputs(comps, batch, views, device, layout)
            lr = cfg.optim.lr * lr_factor(
                step, total_steps=total, warmup_steps=cfg.schedule.warmup_steps, schedule=cfg.schedule.name, min_ratio=cfg.schedule.min_lr_ratio
            )
            set_lr(optimizer, lr)
            with torch.autocast(**autocast):
                loss, out = wrapped(**inputs)
            optimizer.zero_grad(set_to_none=True)
            # fp16: the scaled loss's gradients are unscaled before clipping; a step whose gradients overflowed is
            # skipped by the scaler (and the scale lowered). The loss itself is float32 and finite then, so the
            # non-finite check below still reads the loss, not the gradients. Without fp16 these are plain calls.
            scaler.scale(loss).backward()
            if cfg.optim.grad_clip is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.optim.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            done = step + 1
            module.after_step(done, total)
            if monitors is not None:
                monitors.after_step(out, batch.labels)
            epoch = step // sampler.steps_per_epoch
            t_step = time.perf_counter() - t0
            t0 = time.perf_counter()
            window.add(loss.detach(), done, t_views, t_step, t_data)  # no host sync: summed on the device
            since_ckpt.add(loss.detach(), done, 0.0, 0.0)
            skipped_here += batch.skipped
            every = cfg.checkpoint.every
            log_now = done % cfg.log.every == 0 or done == total or monitor_due(done, self.monitor_every, total)
            ckpt_now = (every and done % every == 0) or done == total
            if not (log_now or ckpt_now):
                logs.tick()
                continue
            # The host learns the loss only here: a non-finite loss is named with the step it first appeared.
            self._check_finite(window if log_now else since_ckpt, total, last_ckpt)
            skipped = self.skipped0 + self._sum(skipped_here)
            if log_now:
                last_loss = window.loss(self.info.enabled)
                row = {
                    "step": done, "epoch": epoch, "loss": last_loss, "lr": lr, **batch_geometry(out.embeddings),
                    "norm": mean_norm(out.embeddings),
                    "items_per_s": window.items_per_s(cfg.batch_size), "view_fraction": window.view_fraction(),
                    "data_wait": window.data_wait(), "skipped": skipped,
                }  # fmt: skip
                if monitors is not None:  # main process only; nothing inside waits for the others
                    t_monitor = time.perf_counter()
                    row.update(monitors.row(done, out))
                    for note in monitors.take_notes():
                        logs.note(note)
                    t0 += time.perf_counter() - t_monitor  # the next step's time is training time
                row["elapsed_s"] = elapsed0 + time.perf_counter() - t_start
                logs.write(done, row)
                window = Window(device)
            else:
                logs.tick()
            if ckpt_now:
                if self.first_checkpoint:
                    self._check_weights(module, done, total)
                mean = since_ckpt.loss(self.info.enabled)
                saved = self._save(manager, module, optimizer, view_rng, done, epoch, mean, elapsed0 + time.perf_counter() - t_start,
                                   skipped, monitors)
                if self.first_checkpoint:
                    self.first_checkpoint = False
                    saved = self._commit(manager, logs) or saved
                last_ckpt = saved or last_ckpt
                since_ckpt = Window(device)
        self._barrier()
        if skipped and self.info.is_main:
            print(f"contrastlab: {skipped} unreadable items were replaced by readable ones (data.on_error: skip); "
                  f"metrics.csv counts them in its 'skipped' column", file=sys.stderr)
        return TrainResult(run_dir=self.run_dir, step=total, loss=last_loss, checkpoint=manager.path("last"))

    def _check_weights(self, module, done: int, total: int) -> None:
        """Refuse to write a new run's first checkpoint (and so to replace an old run) with non-finite weights: a
        step can turn the weights to inf or NaN while its loss, computed before the update, is still finite.
        Every process decides alike (data-parallel weights are equal)."""
        bad = next((name for name, p in module.named_parameters() if not bool(torch.isfinite(p).all())), None)
        if bad is None:
            return
        kept = f"; {self.target} is kept as it was" if self.replacement is not None else "; no checkpoint was written"
        raise NonFiniteLoss(f"the weights became non-finite at step {done} of {total} ({bad!r}), before the first "
                            f"checkpoint{kept} (try a lower optim.lr or optim.grad_clip)")

    def _commit(self, manager: CheckpointManager, logs: _Logs) -> Path | None:
        """Put a replacing run in the old one's place, now that it has a checkpoint; returns its new path."""
        if self.replacement is None:
            return None
        logs.pause()  # TensorBoard writes its event file by path: closed before the move, reopened after
        self.replacement.commit()
        _sigterm_default()  # the new run is in place: nothing left for SIGTERM to clean up
        self.run_dir = self.target  # metrics.csv's open handle follows the folder; new files go here
        manager.directory = self.target / "checkpoints"
        logs.resume(self.target)
        return manager.path("last")

    def _sum(self, count: int) -> int:
        """A count summed over the processes (every process calls it at the same step)."""
        if not self.info.enabled:
            return count
        return round(distributed.all_reduce_mean(float(count)) * self.info.world_size)

    def _check_finite(self, window: Window, total: int, last_ckpt) -> None:
        bad = window.first_bad(self.info.enabled)
        if bad is None:
            return
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLoss(
            f"the loss became non-finite at step {bad} of {total}; the run stopped and {where} "
            "(try a lower optim.lr, optim.grad_clip, or a higher temperature)"
        )


class _Logs:
    """metrics.csv, TensorBoard and the progress bar, on the main process only."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_step: int | None, total: int, progress: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.pending = 0
        if not enabled:
            return
        self.metrics = MetricsLog(run_dir / METRICS_FILE, resume_step=resume_step)
        self.tb = TensorBoard(run_dir / "tensorboard", resume_step=resume_step) if tensorboard else None
        self.bar = Progress(total=total, initial=resume_step or 0, enabled=progress)

    def tick(self) -> None:
        self.pending += 1

    def write(self, step: int, row: dict) -> None:
        self.pending += 1
        if not self.enabled:
            return
        self.metrics.write(row)
        if self.tb is not None:
            self.tb.write(step, {k: v for k, v in row.items() if k not in ("step", "epoch")})
        self.bar.update(self.pending, row)
        self.pending = 0

    def note(self, text: str) -> None:
        """One line to stderr (above the progress bar), from the main process."""
        if self.enabled:
            self.bar.note(text)

    def pause(self) -> None:
        """Flush and close the TensorBoard writer before the run's folder moves (:meth:`resume` reopens it)."""
        if self.enabled and self.tb is not None:
            self.tb.close()

    def resume(self, run_dir: Path) -> None:
        """Reopen the TensorBoard writer in the run's folder at its new place (a new event file beside the first)."""
        if self.enabled and self.tb is not None:
            self.tb = TensorBoard(run_dir / "tensorboard")

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            if self.tb is not None:
                self.tb.close()
            self.metrics.close()
