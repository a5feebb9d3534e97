"""The training configuration: typed dataclasses, loaded from YAML and checked before anything runs.

A recipe is one YAML file::

    data: {name: shapes, options: {size: 20000}}
    views: {name: factor_resample, options: {factors: [colour]}}
    model: {encoder: {name: convnet}, head: {name: mlp, hidden: 512}, dim: 128}
    objective: {name: nt_xent, options: {temperature: 0.2}}
    optim: {name: adamw, lr: 1.0e-3}
    batch_size: 256
    steps: 2000

``--set key=value`` overrides any key by its dotted path before checking (values are YAML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from contrastlab.training._schema import apply_overrides, from_dict, parse_yaml, to_dict


@dataclass
class DataConfig:
    name: str  #: a data set registry name (e.g. "shapes", "digits")
    options: dict[str, Any] = field(default_factory=dict)
    split: str = "train"  #: the split trained on
    #: an unreadable item (corrupt, truncated, unsupported file) stops the run ("fail") or is replaced by the
    #: next readable one and counted ("skip"); passed to data sets that read files
    on_error: Literal["fail", "skip"] = "fail"
    #: loader worker processes (null: none for in-memory data, min(4, cores - 1) for data read from files)
    num_workers: int | None = None
    prefetch: int = 2  #: batches each worker prepares ahead
    #: page-locked batches, copied to a GPU without blocking (null: on when training on CUDA; true on the CPU does nothing)
    pin_memory: bool | None = None


@dataclass
class ViewsConfig:
    name: str  #: a view generator registry name (e.g. "simclr", "factor_resample")
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class EncoderConfig:
    name: str = "convnet"  #: an encoder registry name
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    name: Literal["mlp", "linear", "none"] = "mlp"
    hidden: int | None = None  #: the MLP head's hidden width (default: the backbone's width)
    batch_norm: bool = True


@dataclass
class DecoderConfig:
    name: Literal["auto", "conv", "mlp"] = "auto"  #: used only by reconstruction objectives
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FusionConfig:
    mode: Literal["mean", "concat"] = "mean"  #: multimodal autoencoders: how codes are fused
    modality_dropout: float = 0.0  #: chance of dropping a modality per item while training


@dataclass
class PredictorConfig:
    #: "auto": built when the objective reads predictions (BYOL, SimSiam, MoCo v3); "none": never
    name: Literal["auto", "mlp", "linear", "none"] = "auto"
    hidden: int | None = None  #: the MLP predictor's hidden width (default: the objective's, e.g. BYOL 4 x model.dim)
    batch_norm: bool = True


@dataclass
class ModelConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  #: the default backbone
    encoders: dict[str, EncoderConfig] = field(default_factory=dict)  #: per modality or view
    head: HeadConfig = field(default_factory=HeadConfig)
    dim: int = 128
    #: the embeddings' output space: true / "sphere" (unit norm), "ball" (norm <= 1), false / "none";
    #: "auto": the objective's own (unconstrained for Barlow Twins and VICReg, the sphere otherwise)
    normalize: bool | Literal["auto", "sphere", "ball", "none"] = "auto"
    shared: bool = True  #: views of one modality share a tower; false: one tower per view (CMC)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    learnable_temperature: float | None = None  #: initial temperature of a learned one (CLIP)
    queue_size: int | None = None  #: a queue of past embeddings as extra negatives (MoCo)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    #: base momentum of target towers in [0, 1) (default: the objective's, e.g. BYOL 0.99); needs an objective that reads targets
    momentum: float | None = None
    #: cosine: raised to 1 over training (BYOL, MoCo v3); constant (MoCo v2); default: the objective's
    momentum_schedule: Literal["cosine", "constant"] | None = None
    logit_bias: float | None = None  #: initial value of a learned logit bias (SigLIP: -10)
    #: towers given from Python (train(..., encoders=...)): view or modality -> class, recorded; give them again
    given: dict[str, str] = field(default_factory=dict)
    sync_batchnorm: bool = True  #: global batch statistics under DDP (CUDA only)
    #: the coordination function of two modalities' embeddings: "none" (the objective's own similarity option,
    #: cosine by default) or "gated" (learned gates on both embeddings, computed for every pair; lecture 4.1)
    coordination: Literal["none", "gated"] = "none"
    #: image towers and image views in torch.channels_last memory layout (faster convolutions on tensor-core GPUs);
    #: views that are not 4-D batches are left as they are; an error when no view is a batch of images
    channels_last: bool = False
    #: torch.compile each tower (the encoders and heads, not the objective), after building and before DDP;
    #: checkpoints keep the uncompiled parameter names
    compile: bool = False


@dataclass
class ObjectiveConfig:
    name: str  #: an objective registry name (see `contrastlab objectives`)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimConfig:
    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = 1e-3  #: the peak learning rate (after warm-up)
    weight_decay: float = 0.0
    momentum: float = 0.9  #: sgd and lars
    nesterov: bool = False  #: sgd
    betas: tuple[float, float] = (0.9, 0.999)  #: adamw
    trust_coefficient: float = 0.001  #: lars
    exclude_bias_and_norm: bool = True  #: no weight decay or lars scaling for biases and norms
    grad_clip: float | None = None  #: clip the global gradient norm


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0  #: linear warm-up from 0
    min_lr_ratio: float = 0.0  #: the cosine ends at lr * min_lr_ratio


@dataclass
class CheckpointConfig:
    every: int = 500  #: steps between checkpoints (0: only at the end)
    keep_last: int = 2
    keep_best: bool = True  #: also keep the one with the lowest mean training loss


@dataclass
class LogConfig:
    every: int = 10  #: steps between metrics rows
    tensorboard: bool = True
    progress: bool = True


@dataclass
class MonitorConfig:
    """What is measured while training besides the loss (see :mod:`contrastlab.training.monitors`)."""

    #: steps between held-out measurements (kNN accuracy, the probe's held-out accuracy, RankMe, collapse), and the
    #: last step; null: about 20 over the run, spaced so that they cost at most about 5 % of the training time (a
    #: multiple of log.every), none for a run too short to afford them (fewer than 2 x items / 5 % items trained);
    #: 0: no monitors at all (the online probe included)
    every: int | None = None
    items: int = 512  #: held-out items classified at each measurement, and as many training items in the kNN bank
    knn_k: int = 20  #: neighbours of the kNN monitor
    knn_temperature: float | None = 0.07  #: the weighted vote of Wu et al. (2018); null: a majority vote
    #: an online linear probe trained on the detached features of every training batch; null: on when the data has labels
    probe: bool | None = None
    probe_lr: float = 1.0e-2  #: the probe's Adam learning rate


@dataclass
class TrainConfig:
    data: DataConfig
    views: ViewsConfig
    objective: ObjectiveConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    batch_size: int = 256  #: the global batch (split over processes)
    epochs: int | None = None
    steps: int | None = None  #: give exactly one of epochs and steps
    seed: int = 0  #: in [0, 2**63), so that torch and numpy both take it
    #: autocast of the towers' forward pass: fp32 (none), bf16, or fp16 with a gradient scaler (its state is checkpointed);
    #: losses are always computed in float32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    #: TF32 tensor cores for float32 matrix products and convolutions on CUDA (false: full float32 precision there,
    #: cuDNN's TF32 convolutions included; no effect on the CPU)
    tf32: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: torch.set_num_threads in each process (null: torch's default, less one per loader worker when training on the CPU)
    threads: int | None = None
    out: str | None = None  #: the run directory
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    #: plugin files the run was trained with (recorded by training; only checked, never loaded, from a config)
    plugins: list[dict[str, Any]] = field(default_factory=list)


#: More threads than any machine we know of has cores; torch dies allocating the stacks of 100,000.
MAX_THREADS = 1024
#: The most held-out items a monitor holds in memory (and encodes at each measurement, twice: bank and queries).
MAX_MONITOR_ITEMS = 10_000


#: Upper bounds of size-like model keys, checked before anything is built: the embedding width, and the
#: MoCo queue's length (its memory, ``queue_size × dim × 4`` bytes, is also checked against the memory
#: available when the queue is built).
MAX_DIM, MAX_QUEUE = 65536, 2**24


def _require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {rule}, got {value!r}")


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Check values and names that types alone cannot (ranges, registry names).

    Raises:
        ValueError: naming the dotted key, the bad value and what is allowed.
    """
    from contrastlab.encoders.registry import check_encoder_name
    from contrastlab.objectives.registry import get_objective

    _require(cfg.batch_size > 0, "batch_size", "> 0", cfg.batch_size)
    from contrastlab.data.loading import MAX_WORKERS

    d = cfg.data
    _require(d.num_workers is None or 0 <= d.num_workers <= MAX_WORKERS, "data.num_workers", f"in [0, {MAX_WORKERS}]",
             d.num_workers)
    _require(1 <= d.prefetch <= 64, "data.prefetch", "in [1, 64]", d.prefetch)
    if (cfg.epochs is None) == (cfg.steps is None):
        raise ValueError(f"give exactly one of epochs and steps, got epochs={cfg.epochs!r} and steps={cfg.steps!r}")
    for key in ("epochs", "steps"):
        value = getattr(cfg, key)
        _require(value is None or value > 0, key, "> 0", value)
    _require(0 <= cfg.seed < 2**63, "seed", "in [0, 2**63)", cfg.seed)
    _require(cfg.threads is None or 0 < cfg.threads <= MAX_THREADS, "threads", f"in [1, {MAX_THREADS}]", cfg.threads)
    o = cfg.optim
    _require(o.lr > 0, "optim.lr", "> 0", o.lr)
    _require(o.weight_decay >= 0, "optim.weight_decay", ">= 0", o.weight_decay)
    _require(0 <= o.momentum < 1, "optim.momentum", "in [0, 1)", o.momentum)
    _require(all(0 <= b < 1 for b in o.betas), "optim.betas", "two numbers in [0, 1)", list(o.betas))
    _require(o.trust_coefficient > 0, "optim.trust_coefficient", "> 0", o.trust_coefficient)
    _require(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", "> 0", o.grad_clip)
    _require(cfg.schedule.warmup_steps >= 0, "schedule.warmup_steps", ">= 0", cfg.schedule.warmup_steps)
    _require(0 <= cfg.schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio", "in [0, 1]", cfg.schedule.min_lr_ratio)
    _require(cfg.checkpoint.every >= 0, "checkpoint.every", ">= 0", cfg.checkpoint.every)
    _require(cfg.checkpoint.keep_last >= 1, "checkpoint.keep_last", ">= 1", cfg.checkpoint.keep_last)
    _require(cfg.log.every >= 1, "log.every", ">= 1", cfg.log.every)
    mon = cfg.monitor
    _require(mon.every is None or mon.every >= 0, "monitor.every", ">= 0 (0: no monitors) or null (automatic)", mon.every)
    _require(2 <= mon.items <= MAX_MONITOR_ITEMS, "monitor.items", f"in [2, {MAX_MONITOR_ITEMS}]", mon.items)
    _require(mon.knn_k >= 1, "monitor.knn_k", ">= 1", mon.knn_k)
    _require(mon.knn_temperature is None or mon.knn_temperature > 0, "monitor.knn_temperature", "> 0 or null",
             mon.knn_temperature)
    _require(mon.probe_lr > 0, "monitor.probe_lr", "> 0", mon.probe_lr)
    m = cfg.model
    _require(0 < m.dim <= MAX_DIM, "model.dim", f"in [1, {MAX_DIM}]", m.dim)
    _require(isinstance(m.normalize, bool) or m.normalize in ("auto", "sphere", "ball", "none"), "model.normalize",
             "true, false, 'auto', 'sphere', 'ball' or 'none'", m.normalize)
    _require(m.momentum is None or 0 <= m.momentum < 1, "model.momentum", "in [0, 1)", m.momentum)
    _require(m.predictor.hidden is None or m.predictor.hidden > 0, "model.predictor.hidden", "> 0", m.predictor.hidden)
    _require(m.head.hidden is None or m.head.hidden > 0, "model.head.hidden", "> 0", m.head.hidden)
    _require(
        m.learnable_temperature is None or m.learnable_temperature > 0,
        "model.learnable_temperature",
        "> 0",
        m.learnable_temperature,
    )
    _require(0 <= m.fusion.modality_dropout <= 1, "model.fusion.modality_dropout", "in [0, 1]", m.fusion.modality_dropout)
    _require(m.queue_size is None or 0 < m.queue_size <= MAX_QUEUE, "model.queue_size", f"in [1, {MAX_QUEUE}]", m.queue_size)
    temperature = cfg.objective.options.get("temperature")
    if temperature is not None:
        _require(
            isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature > 0,
            "objective.options.temperature",
            "a number > 0",
            temperature,
        )
    for key, enc in [("model.encoder", m.encoder), *((f"model.encoders.{k}", e) for k, e in m.encoders.items())]:
        try:
            check_encoder_name(enc.name)
        except ValueError as err:
            raise ValueError(f"{key}.name: {err}") from None
    try:
        get_objective(cfg.objective.name)
    except ValueError as err:
        raise ValueError(f"objective.name: {err}") from None
    return cfg


def config_from_dict(raw: Any) -> TrainConfig:
    """Build and check a :class:`TrainConfig` from plain data.

    Raises:
        ValueError: an unknown key, a wrong type or a bad value, naming the dotted key.

    Example:
        >>> cfg = config_from_dict({"data": {"name": "digits"}, "views": {"name": "simclr"},
        ...                         "objective": {"name": "nt_xent"}, "steps": 10})  # doctest: +SKIP
    """
    return check_config(from_dict(TrainConfig, raw))


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML recipe, apply ``key=value`` overrides, and check the result.

    Args:
        path: the YAML file.
        overrides: ``--set`` assignments such as ``"optim.lr=0.01"``, applied in order.

    Returns:
        The checked :class:`TrainConfig`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a folder, text that is not UTF-8, malformed YAML or an invalid config, naming the
            file or the key.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config {path} is a folder, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # some (e.g. an I/O error on a special file) come without the file's name
        if err.filename is None:
            raise OSError(err.errno, err.strerror or str(err), str(path)) from None
        raise
    raw = parse_yaml(text, source=str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the config must be a mapping of keys to values, got {type(raw).__name__}")
    return config_from_dict(apply_overrides(raw, overrides))


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain YAML-safe data (what ``config.yaml`` in a run directory holds)."""
    return to_dict(cfg)
