"""From a checked config to the pieces a run needs: data set, views, model, objective.

Every mismatch between the pieces (an objective that takes two views given three, a supervised
objective on unlabelled data, a learned temperature for an objective that takes none) is a
``ValueError`` naming the config key, raised before any training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from contrastlab.data.base import Dataset
from contrastlab.data.loading import sample_batch
from contrastlab.encoders.build import accepts, build_model, with_defaults
from contrastlab.encoders.model import MultiViewModel, output_space
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.registry import OBJECTIVES, build_objective, get_objective
from contrastlab.training.config import TrainConfig
from contrastlab.training.step import LossModule, reconstruction_views
from contrastlab.views.base import ViewGenerator


@dataclass
class Components:
    """Everything built from a config; :meth:`loss_module` joins model and objective."""

    dataset: Dataset
    views: ViewGenerator
    model: MultiViewModel
    objective: nn.Module
    spec: ObjectiveSpec  #: the objective's registry entry (what it reads, how)
    recon_views: dict[str, str]  #: view -> modality, for reconstruction objectives

    @property
    def kind(self) -> str:
        """The objective's calling convention (for listings and reports)."""
        return self.spec.kind

    def loss_module(self) -> LossModule:
        return LossModule(
            self.model,
            self.objective,
            reader=self.spec.reader,
            view_names=self.views.view_names,
            modalities=self.views.view_modalities,
            global_views=getattr(self.views, "global_views", ()),
            recon_views=self.recon_views or None,
        )


def make_dataset(cfg: TrainConfig, split: str) -> Dataset:
    """Build ``cfg.data`` for ``split`` (the seed is the run's).

    Raises:
        ValueError: an unknown data set, split or option, prefixed with ``data``.
    """
    from contrastlab.data.registry import build_dataset, dataset_options

    options = dict(cfg.data.options)
    try:
        if "on_error" in dataset_options(cfg.data.name):  # data read from files; in memory nothing is unreadable
            options.setdefault("on_error", cfg.data.on_error)
        return build_dataset(cfg.data.name, split=split, seed=cfg.seed, **options)
    except ValueError as err:
        raise ValueError(f"data: {err}") from None


def make_views(cfg: TrainConfig, dataset: Dataset) -> ViewGenerator:
    """Build ``cfg.views`` for ``dataset``.

    Raises:
        ValueError: an unknown view generator or option, prefixed with ``views``.
    """
    from contrastlab.views.registry import build_views

    try:
        return build_views(cfg.views.name, dataset, **cfg.views.options)
    except ValueError as err:
        raise ValueError(f"views: {err}") from None


def sample_views(views: ViewGenerator, dataset: Dataset) -> dict[str, torch.Tensor]:
    """The deterministic views of a few items: their shapes and dtypes size the model."""
    if len(dataset) < 1:
        raise ValueError(f"data set {dataset.name!r} is empty")
    sample = views.eval_views(sample_batch(dataset, 4))
    missing = [v for v in views.view_names if v not in sample]
    if missing:
        raise ValueError(f"view generator made no {missing} views (it names {list(views.view_names)})")
    return sample


def _names_taking(n: int) -> str:
    fits = [name for name, s in OBJECTIVES.items() if s.reader.min_views <= n and (s.reader.max_views or n) >= n]
    return ", ".join(sorted(fits)) or "none registered"


def check_compatible(cfg: TrainConfig, spec: ObjectiveSpec, views: ViewGenerator, dataset: Dataset) -> None:
    """Refuse an objective that cannot work with these views or this data.

    Raises:
        ValueError: naming the objective, the views and the objectives that would fit.
    """
    name, n, reader = cfg.objective.name, len(views.view_names), spec.reader
    made = f"views {cfg.views.name!r} make {n} ({', '.join(views.view_names)})"
    crops = bool(getattr(views, "global_views", ()))
    if n < reader.min_views or (reader.max_views is not None and n > reader.max_views and not crops):
        most = f"exactly {reader.min_views}" if reader.max_views == reader.min_views else f"at least {reader.min_views}"
        raise ValueError(f"objective {name!r} takes {most} views, but {made}; objectives for {n} view{'s' if n != 1 else ''}: {_names_taking(n)}")
    modalities = sorted(set(views.view_modalities.values()))
    if len(modalities) < spec.min_modalities:
        alone = "autoencoder" if "reconstructions" in spec.needs else "a single-modality objective"
        raise ValueError(
            f"objective {name!r} needs views of at least {spec.min_modalities} modalities, but {made} of modality "
            f"{', '.join(map(repr, modalities))}; use views that pair modalities, or {alone!r}"
        )
    if "labels" in spec.needs and dataset.num_classes is None:
        raise ValueError(f"objective {name!r} is supervised, but data set {cfg.data.name!r} has no labels")


def resolve_output_space(normalize: bool | str, objective: str) -> str:
    """The output space a run's ``model.normalize`` gives with its objective: ``"auto"`` is the objective's own
    (unconstrained for Barlow Twins and VICReg, the sphere otherwise).

    Example:
        >>> resolve_output_space("auto", "vicreg"), resolve_output_space("auto", "nt_xent"), resolve_output_space(False, "nt_xent")
        ('none', 'sphere', 'none')
    """
    if normalize == "auto":
        return get_objective(objective).model.get("normalize", "sphere")
    return output_space(normalize)


@dataclass
class _Parts:
    """The model parts an objective reads, resolved from the config and the objective's defaults."""

    temperature: nn.Module | None
    predictor: tuple[str, dict] | None
    momentum: tuple[float, str] | None
    queue_size: int | None
    logit_bias: float | None


#: Training holds each weight four times: the weight, its gradient and up to two optimiser moments.
WEIGHT_COPIES = 4
#: On a GPU the model is still built on the host first, and the trial step keeps a copy of its state.
HOST_COPIES = 2


def _check_model_memory(make_model, device: str) -> None:
    """Refuse, before one weight is allocated, a model whose training cannot fit in memory.

    The model is built once on PyTorch's ``meta`` device (shapes, no storage) to count its weights; a
    model whose layers cannot be built there (rare: a custom tower that computes with real data while it is
    built) is not checked.

    Raises:
        UserError: naming the weights, the memory they would need, and the keys that size them.
    """
    from contrastlab.errors import UserError
    from contrastlab.limits import GIB, host_share, training_memory

    free, host = training_memory(device), host_share()
    if free is None and host is None:
        return
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the real build draws the same weights
            count = sum(p.numel() for p in make_model().parameters())
    except Exception:  # noqa: BLE001 - only an estimate: the real build says what is wrong
        return
    need = WEIGHT_COPIES * 4 * count
    if host is not None and host != free and HOST_COPIES * 4 * count > host:  # on a GPU: built on the host first
        raise UserError(f"model: its {count:,} weights would need about {HOST_COPIES * 4 * count / GIB:.1f} GiB of host "
                        f"memory while they are built and tried; at most {host / GIB:.1f} GiB is available to this process "
                        "(lower model.dim or the hidden widths of model.encoder / model.head)")
    if free is not None and need > free:
        raise UserError(f"model: its {count:,} weights would need about {need / GIB:.1f} GiB to train (weights, gradients, "
                        f"optimiser moments); at most {free / GIB:.1f} GiB is available (lower model.dim or the hidden widths "
                        "of model.encoder / model.head)")


def _model_parts(cfg: TrainConfig, spec: ObjectiveSpec) -> _Parts:
    """What ``build_components`` adds to the towers for ``spec`` (see its docstring).

    Raises:
        ValueError: a part the objective needs switched off, or one it does not read configured; naming the key.
    """
    m, defaults, needs, name = cfg.model, spec.model, spec.needs, spec.name
    temperature = None
    init = m.learnable_temperature if m.learnable_temperature is not None else (
        defaults.get("learnable_temperature") if "temperature" in needs else None)
    if init is not None:
        from contrastlab.objectives.temperature import LearnableTemperature

        try:
            temperature = LearnableTemperature(init=init)
        except ValueError as err:
            raise ValueError(f"model.learnable_temperature: {err}") from None
    if "temperature" in needs and temperature is None:
        raise ValueError(f"objective {name!r} reads a learned temperature: set model.learnable_temperature")
    wants_predictor = "predictions" in needs
    if m.predictor.name == "none" and wants_predictor:
        raise ValueError(f"model.predictor.name: objective {name!r} reads predictions, but the predictor is 'none'")
    if m.predictor.name in ("mlp", "linear") and not wants_predictor:
        raise ValueError(f"model.predictor.name: objective {name!r} reads no predictions; use 'auto' or 'none'")
    predictor = None
    if wants_predictor:
        head = "mlp" if m.predictor.name == "auto" else m.predictor.name
        hidden = m.predictor.hidden or max(1, round(defaults.get("predictor_hidden_factor", 4) * m.dim))
        predictor = (head, {"hidden": hidden, "batch_norm": m.predictor.batch_norm} if head == "mlp" else {})
    momentum = _resolve("model.momentum", m.momentum, defaults.get("momentum", 0.99), "targets" in needs, name, "momentum targets")
    schedule = _resolve("model.momentum_schedule", m.momentum_schedule, defaults.get("momentum_schedule", "cosine"),
                        "targets" in needs, name, "momentum targets")
    queue_size = m.queue_size if m.queue_size is not None else (defaults.get("queue_size") if "negatives" in needs else None)
    if "negatives" in needs and queue_size is None:
        raise ValueError(f"objective {name!r} reads queued negatives: set model.queue_size")
    return _Parts(
        temperature=temperature,
        predictor=predictor,
        momentum=None if momentum is None else (momentum, schedule),
        queue_size=queue_size,
        logit_bias=_resolve("model.logit_bias", m.logit_bias, defaults.get("logit_bias"), "logit_bias" in needs, name, "logit bias"),
    )


def _resolve(key: str, value, default, needed: bool, name: str, what: str):
    """A model part's setting: the config's value, else the objective's default when it needs the part."""
    if value is not None and not needed:
        raise ValueError(f"{key}: objective {name!r} reads no {what}; remove {key}")
    return value if value is not None else (default if needed else None)


def build_components(
    cfg: TrainConfig,
    *,
    dataset: Dataset | None = None,
    views: ViewGenerator | None = None,
    encoders: Mapping[str, nn.Module] | None = None,
) -> Components:
    """Build data, views, model and objective from ``cfg``; call after seeding torch.

    The model gets the parts its objective reads (``ObjectiveSpec.needs``): a predictor, momentum
    target towers, a queue, a learned temperature or logit bias, decoders. A part the objective needs
    is built with the objective's default when the config leaves it unset; a part configured for an
    objective that does not read it, or switched off for one that does, is an error naming the key.

    Args:
        cfg: the checked config.
        dataset: a data set to use instead of building ``cfg.data`` (tests, notebooks).
        views: a view generator to use instead of building ``cfg.views``.
        encoders: a view or modality name -> your own ``nn.Module`` backbone mapping a batch of that
            view to ``(N, F)`` features (``F`` found by one forward pass when it has no ``out_dim``).

    Returns:
        The :class:`Components`.

    Raises:
        ValueError: any mismatch, naming the config key.
    """
    dataset = make_dataset(cfg, cfg.data.split) if dataset is None else dataset
    views = make_views(cfg, dataset) if views is None else views
    spec = get_objective(cfg.objective.name)
    needs, name = spec.needs, cfg.objective.name
    check_compatible(cfg, spec, views, dataset)
    sample = sample_views(views, dataset)
    shapes = {v: tuple(sample[v].shape[1:]) for v in views.view_names}
    if cfg.model.channels_last and not any(len(shape) == 3 for shape in shapes.values()):
        raise ValueError(f"model.channels_last: no view is a batch of images (N, C, H, W) to lay out channels last; "
                         f"view shapes: {shapes}; remove model.channels_last")
    recon = reconstruction_views(views.view_names, views.view_modalities) if "reconstructions" in needs else {}
    # an autoencoder reads only reconstructions; an objective that also reads embeddings (fission) reconstructs some
    # views beside its other terms, and fuses nothing
    autoencoder = bool(recon) and "embeddings" not in needs
    discrete = [v for v in recon if not sample[v].is_floating_point()]
    if discrete and not autoencoder and len(discrete) < len(recon):  # fission: reconstruct the real-valued ones
        recon = {v: m for v, m in recon.items() if v not in discrete}
    elif discrete:
        raise ValueError(
            f"objective {name!r} reconstructs real-valued inputs, but views {discrete} hold "
            f"{sample[discrete[0]].dtype} values (e.g. token ids); choose views without them"
        )
    m = cfg.model
    space = resolve_output_space(m.normalize, name)
    given = _given(encoders or {}, views, sample)
    head_options = {"hidden": m.head.hidden, "batch_norm": m.head.batch_norm} if m.head.name == "mlp" else {}
    vocabulary = getattr(dataset, "vocabulary", None)
    parts = _model_parts(cfg, spec)
    def make_model() -> MultiViewModel:
        return build_model(
            shapes,
            views.view_modalities,
            encoder=(m.encoder.name, m.encoder.options),
            overrides={k: (e.name, e.options) for k, e in m.encoders.items()},
            head=m.head.name,
            head_options=head_options,
            dim=m.dim,
            normalize=space,
            shared=m.shared,
            decoder=(m.decoder.name, m.decoder.options) if recon else None,
            encoder_defaults={"vocab_size": None if vocabulary is None else len(vocabulary),
                              "layout": getattr(views, "layout", None)},
            fusion_views=list(recon) if len(recon) > 1 and autoencoder else None,
            fusion_mode=m.fusion.mode,
            modality_dropout=m.fusion.modality_dropout,
            temperature=parts.temperature,
            given=given,
            predictor=parts.predictor,
            momentum=parts.momentum,
            logit_bias=parts.logit_bias,
            crops=bool(getattr(views, "global_views", ())),
            decoder_views=list(recon) if recon else None,
        )

    try:
        _check_model_memory(make_model, cfg.device)
        model = make_model()
    except ValueError as err:
        raise ValueError(f"model: {err}") from None
    _check_foreign_towers(model, sample)
    dim = model.towers[model.view_towers[views.view_names[0]]].out_dim
    if parts.queue_size is not None:
        from contrastlab.limits import check_fits_in_memory
        from contrastlab.objectives.queue import NegativeQueue

        check_fits_in_memory("model.queue_size", parts.queue_size * dim * 4, value=parts.queue_size)
        model.queue = NegativeQueue(parts.queue_size, dim)
    options = with_defaults(spec.factory, cfg.objective.options, {"num_classes": dataset.num_classes, "dim": dim})
    if options.get("reduction", "mean") not in ("mean", "sum"):
        raise ValueError(f"objective.options.reduction: training needs one loss per step ('mean' or 'sum'), "
                         f"got {options['reduction']!r}")
    if accepts(spec.factory, "normalize"):
        options["normalize"] = _objective_normalize(cfg, space)
    try:
        objective = build_objective(name, **options)
    except ValueError as err:
        raise ValueError(f"objective.options: {err}") from None
    _coordinate(cfg, model, objective, views)
    for key, part, field in (("model.queue_size", parts.queue_size, "negatives"),
                             ("model.learnable_temperature", parts.temperature, "temperature")):
        if part is not None and not (field in needs or accepts(objective.forward, field)):  # declared, or taken as field=
            raise ValueError(f"{key}: objective {name!r} takes no {'extra negatives' if field == 'negatives' else field}")
    return Components(dataset=dataset, views=views, model=model, objective=objective, spec=spec, recon_views=recon)


#: Objectives whose similarities are all between a row of one view and a row of the other (never within a view, as
#: NT-Xent's, DCL's and SupCon's negatives are): the ones a learned asymmetric coordination function can score.
_CROSS_VIEW = frozenset({"info_nce", "clip", "nce", "vse", "vse++", "triplet", "fission"})


def _coordinate(cfg: TrainConfig, model: MultiViewModel, objective: nn.Module, views: ViewGenerator) -> None:
    """Give the model what its objective's code layout and the config's coordination ask for: a fission
    objective's ``shared_dim`` (evaluation then reads the shared and private codes), a gated coordination
    function as wide as the codes the objective compares."""
    shared_dim = getattr(objective, "shared_dim", None)
    if isinstance(shared_dim, int) and not isinstance(shared_dim, bool):
        model.shared_dim = shared_dim
    if cfg.model.coordination == "none":
        return
    name = cfg.objective.name
    if name not in _CROSS_VIEW:
        raise ValueError(f"model.coordination: gated coordination scores an item of one modality against one of the "
                         f"other; objective {name!r} does not only compare across the two views (use one of "
                         f"{', '.join(sorted(_CROSS_VIEW))})")
    if getattr(objective, "metric", None) not in (None, "cosine"):
        raise ValueError(f"model.coordination: gated coordination is the similarity; objective.options.metric "
                         f"{objective.metric!r} would be ignored, remove it")
    if len(set(views.view_modalities.values())) != 2:
        raise ValueError(f"model.coordination: gated coordination compares exactly two modalities, one per side; objective "
                         f"{name!r} on views of modalities {sorted(set(views.view_modalities.values()))} has no two sides")
    from contrastlab.encoders.coordination import GatedCoordination

    dim = model.shared_dim or model.towers[model.view_towers[views.view_names[0]]].out_dim
    model.coordination = GatedCoordination(dim)


def compile_towers(model: MultiViewModel) -> None:
    """``torch.compile`` every tower (backbone and head) of ``model`` in place, momentum targets included; the
    objective, the predictor and the rest stay eager.

    Each tower's call is compiled (``nn.Module.compile``), not the tower wrapped in an ``OptimizedModule``: the
    state dict keeps its names (no ``_orig_mod.`` prefix), so checkpoints of compiled and eager runs are alike.
    Compilation happens at the first call; methods other than the call (``features``, used by evaluation and
    the monitors) stay eager.
    """
    towers = list(model.towers.values())
    if model.targets is not None:
        towers += list(model.targets.towers.values())
    for tower in towers:
        tower.compile()


def _check_foreign_towers(model: MultiViewModel, sample: dict[str, torch.Tensor]) -> None:
    """Try every backbone that is not contrastlab's own (a plugin's) once on a few real items: a wrong output
    shape is one line naming the encoder and the view here, not a shape error deep inside the first step."""
    from contrastlab.encoders.given import check_features

    for view, key in model.view_towers.items():
        backbone = model.towers[key].backbone
        if not type(backbone).__module__.startswith("contrastlab."):
            check_features(backbone, sample[view], who=f"model: the encoder of view {view!r} ({type(backbone).__qualname__})",
                           out_dim=model.towers[key].feature_dim)


def _objective_normalize(cfg: TrainConfig, space: str) -> bool:
    """The objective inherits the model's output space: it normalises exactly when the model's space is
    the sphere; ``objective.options.normalize: true`` on any other space is a contradiction."""
    asked = cfg.objective.options.get("normalize")
    if asked is True and space != "sphere":
        raise ValueError(
            f"objective.options.normalize is true (the objective would normalise onto the sphere), but "
            f"model.normalize is {cfg.model.normalize!r} (embeddings in {space!r}); set one of them, e.g. "
            f"model.normalize: sphere"
        )
    return space == "sphere"


def _given(encoders: Mapping[str, nn.Module], views: ViewGenerator, sample: dict[str, torch.Tensor]) -> dict[str, nn.Module]:
    """Wrap the user's modules (``encoders=``) as backbones, each tried once on a few real items."""
    from contrastlab.encoders.given import GivenBackbone

    out = {}
    for key, module in encoders.items():
        reads = [v for v in views.view_names if v == key or views.view_modalities[v] == key]
        if not reads:
            raise ValueError(f"encoders[{key!r}]: no view or modality is called {key!r}; views: "
                             f"{list(views.view_names)}, modalities: {sorted(set(views.view_modalities.values()))}")
        out[key] = GivenBackbone(module, sample[reads[0]], key=key)
    return out




def check_given(recorded: Mapping[str, str], encoders: Mapping[str, nn.Module] | None, run_dir) -> None:
    """A run trained with towers given from Python needs the same keys given again (resume, load).

    Raises:
        UserError: naming the missing key and the class the run was trained with.
    """
    from contrastlab.errors import UserError

    missing = [k for k in recorded if k not in (encoders or {})]
    if missing:
        k = missing[0]
        raise UserError(f"run {run_dir} was trained with your own encoder for {k!r} ({recorded[k]}); give it again: "
                        f"encoders={{{k!r}: ...}}")
    stray = [k for k in (encoders or {}) if k not in recorded]
    if stray:
        raise UserError(f"run {run_dir} was not trained with your own encoder for {stray[0]!r}; its towers are "
                        f"built from its config.yaml")
