"""From a checked config to the pieces a run needs: data set, views, model, objective.

Every mismatch between the pieces (an objective that takes two views given three, a supervised
objective on unlabelled data, a learned temperature for an objective that takes none) is a
``ValueError`` naming the config key, raised before any training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from contrastlab.data.base import Dataset
from contrastlab.encoders.build import accepts, build_model, with_defaults
from contrastlab.encoders.model import MultiViewModel
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
    kind: str  #: the objective's calling convention
    recon_views: dict[str, str]  #: view -> modality, for reconstruction objectives
    pass_temperature: bool
    pass_negatives: bool

    def loss_module(self) -> LossModule:
        return LossModule(
            self.model,
            self.objective,
            kind=self.kind,
            view_names=self.views.view_names,
            recon_views=self.recon_views or None,
            pass_temperature=self.pass_temperature,
            pass_negatives=self.pass_negatives,
        )


def make_dataset(cfg: TrainConfig, split: str) -> Dataset:
    """Build ``cfg.data`` for ``split`` (the seed is the run's).

    Raises:
        ValueError: an unknown data set, split or option, prefixed with ``data``.
    """
    from contrastlab.data.registry import build_dataset

    try:
        return build_dataset(cfg.data.name, split=split, seed=cfg.seed, **cfg.data.options)
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
    sample = views.eval_views(dataset.get(torch.arange(min(4, len(dataset)))))
    missing = [v for v in views.view_names if v not in sample]
    if missing:
        raise ValueError(f"view generator made no {missing} views (it names {list(views.view_names)})")
    return sample


def _names_of_kind(kind: str) -> str:
    return ", ".join(sorted(n for n, s in OBJECTIVES.items() if s.kind == kind)) or "none registered"


def check_compatible(cfg: TrainConfig, kind: str, views: ViewGenerator, dataset: Dataset) -> None:
    """Refuse an objective that cannot work with these views or this data.

    Raises:
        ValueError: naming the objective, the views and the objectives that would fit.
    """
    name, n = cfg.objective.name, len(views.view_names)
    made = f"views {cfg.views.name!r} make {n} ({', '.join(views.view_names)})"
    if kind in ("pairwise", "cca") and n != 2:
        fits = _names_of_kind("multiview") if n > 2 else "none (it needs two views)"
        raise ValueError(f"objective {name!r} is {kind} and takes exactly 2 views, but {made}; objectives for {n} views: {fits}")
    if kind == "multiview" and n < 2:
        raise ValueError(f"objective {name!r} takes 2 or more views, but {made}")
    modalities = sorted(set(views.view_modalities.values()))
    need = get_objective(name).min_modalities
    if len(modalities) < need:
        alone = "autoencoder" if kind == "reconstruction" else "a single-modality objective"
        raise ValueError(
            f"objective {name!r} needs views of at least {need} modalities, but {made} of modality "
            f"{', '.join(map(repr, modalities))}; use views that pair modalities, or {alone!r}"
        )
    if kind == "supervised" and dataset.num_classes is None:
        raise ValueError(f"objective {name!r} is supervised, but data set {cfg.data.name!r} has no labels")
    if cfg.model.queue_size is not None and kind != "pairwise":
        raise ValueError(f"model.queue_size: a queue of negatives needs a pairwise objective, {name!r} is {kind}")


def build_components(cfg: TrainConfig, *, dataset: Dataset | None = None, views: ViewGenerator | None = None) -> Components:
    """Build data, views, model and objective from ``cfg``; call after seeding torch.

    Args:
        cfg: the checked config.
        dataset: a data set to use instead of building ``cfg.data`` (tests, notebooks).
        views: a view generator to use instead of building ``cfg.views``.

    Returns:
        The :class:`Components`.

    Raises:
        ValueError: any mismatch, naming the config key.
    """
    dataset = make_dataset(cfg, cfg.data.split) if dataset is None else dataset
    views = make_views(cfg, dataset) if views is None else views
    spec = get_objective(cfg.objective.name)
    check_compatible(cfg, spec.kind, views, dataset)
    sample = sample_views(views, dataset)
    shapes = {v: tuple(sample[v].shape[1:]) for v in views.view_names}
    recon = reconstruction_views(views.view_names, views.view_modalities) if spec.kind == "reconstruction" else {}
    discrete = [v for v in recon if not sample[v].is_floating_point()]
    if discrete:
        raise ValueError(
            f"objective {cfg.objective.name!r} reconstructs real-valued inputs, but views {discrete} hold "
            f"{sample[discrete[0]].dtype} values (e.g. token ids); choose views without them"
        )
    m = cfg.model
    head_options = {"hidden": m.head.hidden, "batch_norm": m.head.batch_norm} if m.head.name == "mlp" else {}
    vocabulary = getattr(dataset, "vocabulary", None)
    temperature = queue = None
    if m.learnable_temperature is not None:
        from contrastlab.objectives.temperature import LearnableTemperature

        try:
            temperature = LearnableTemperature(init=m.learnable_temperature)
        except ValueError as err:
            raise ValueError(f"model.learnable_temperature: {err}") from None
    try:
        model = build_model(
            shapes,
            views.view_modalities,
            encoder=(m.encoder.name, m.encoder.options),
            overrides={k: (e.name, e.options) for k, e in m.encoders.items()},
            head=m.head.name,
            head_options=head_options,
            dim=m.dim,
            normalize=m.normalize,
            shared=m.shared,
            decoder=(m.decoder.name, m.decoder.options) if recon else None,
            encoder_defaults={"vocab_size": None if vocabulary is None else len(vocabulary)},
            fusion_views=list(recon) if len(recon) > 1 else None,
            fusion_mode=m.fusion.mode,
            modality_dropout=m.fusion.modality_dropout,
            temperature=temperature,
        )
    except ValueError as err:
        raise ValueError(f"model: {err}") from None
    dim = model.towers[model.view_towers[views.view_names[0]]].out_dim
    if m.queue_size is not None:
        from contrastlab.objectives.queue import NegativeQueue

        model.queue = NegativeQueue(m.queue_size, dim)
    options = with_defaults(spec.factory, cfg.objective.options, {"num_classes": dataset.num_classes, "dim": dim})
    try:
        objective = build_objective(cfg.objective.name, **options)
    except ValueError as err:
        raise ValueError(f"objective.options: {err}") from None
    pass_negatives = m.queue_size is not None
    if pass_negatives and not accepts(objective.forward, "negatives"):
        raise ValueError(f"model.queue_size: objective {cfg.objective.name!r} takes no extra negatives")
    if temperature is not None and not accepts(objective.forward, "temperature"):
        raise ValueError(f"model.learnable_temperature: objective {cfg.objective.name!r} takes no temperature")
    return Components(
        dataset=dataset,
        views=views,
        model=model,
        objective=objective,
        kind=spec.kind,
        recon_views=recon,
        pass_temperature=temperature is not None,
        pass_negatives=pass_negatives,
    )
