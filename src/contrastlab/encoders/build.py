"""Assemble a :class:`MultiViewModel` from the views' shapes and a few choices."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from contrastlab.encoders._checks import check_int
from contrastlab.encoders.decoders import build_decoder
from contrastlab.encoders.fusion import Fusion, ModalityDropout
from contrastlab.encoders.heads import build_head
from contrastlab.encoders.model import MultiViewModel, Tower
from contrastlab.encoders.registry import ENCODERS, build_encoder

#: An encoder choice: ``(registry name, keyword options)``.
EncoderChoice = tuple[str, Mapping[str, Any]]


def accepts(factory: Callable[..., Any], option: str) -> bool:
    """Whether ``factory`` names a keyword argument ``option`` explicitly (``**kwargs`` does not count:
    it may forward options somewhere that rejects them).

    Example:
        >>> accepts(lambda *, vocab_size: None, "vocab_size"), accepts(lambda **kw: None, "vocab_size")
        (True, False)
    """
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return option in params and params[option].kind in (
        inspect.Parameter.KEYWORD_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    )


def with_defaults(factory: Callable[..., Any], options: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` plus every ``defaults`` entry the factory accepts and the user did not set.

    This is how values only the data knows (a vocabulary size, a number of classes) reach
    factories without the user repeating them.

    Example:
        >>> with_defaults(lambda *, a=1, b=2: None, {"a": 5}, {"a": 0, "b": 3, "c": 4})
        {'a': 5, 'b': 3}
    """
    out = dict(options)
    for key, value in defaults.items():
        if key not in out and value is not None and accepts(factory, key):
            out[key] = value
    return out


def tower_keys(view_modalities: Mapping[str, str], *, shared: bool) -> dict[str, str]:
    """Which tower reads each view: its modality when ``shared``, else the view itself.

    Example:
        >>> tower_keys({"view1": "image", "view2": "image"}, shared=True)
        {'view1': 'image', 'view2': 'image'}
    """
    return {v: (m if shared else v) for v, m in view_modalities.items()}


def build_model(
    view_shapes: Mapping[str, tuple[int, ...]],
    view_modalities: Mapping[str, str],
    *,
    encoder: EncoderChoice,
    overrides: Mapping[str, EncoderChoice] | None = None,
    head: str = "mlp",
    head_options: Mapping[str, Any] | None = None,
    dim: int = 128,
    normalize: bool | str = True,
    shared: bool = True,
    decoder: EncoderChoice | None = None,
    encoder_defaults: Mapping[str, Any] | None = None,
    fusion_views: Sequence[str] | None = None,
    fusion_mode: str = "mean",
    modality_dropout: float = 0.0,
    temperature: nn.Module | None = None,
    queue: nn.Module | None = None,
    given: Mapping[str, nn.Module] | None = None,
    predictor: EncoderChoice | None = None,
    momentum: tuple[float, str] | None = None,
    logit_bias: float | None = None,
    crops: bool = False,
    decoder_views: Sequence[str] | None = None,
    coordination: nn.Module | None = None,
) -> MultiViewModel:
    r"""Build one tower per modality (``shared``) or per view, each backbone + head, and wrap them.

    Args:
        view_shapes: view name -> per-item shape of that view, e.g. ``{"view1": (3, 32, 32)}``.
        view_modalities: view name -> modality name (decides tower sharing).
        encoder: the default backbone, ``(name, options)``.
        overrides: a view or modality name -> ``(name, options)`` for towers that differ from the
            default (a view name wins over its modality).
        head: projection head name (``"mlp"``, ``"linear"``, ``"none"``).
        head_options: the head's options (``hidden``, ``batch_norm``).
        dim: embedding width ``D`` (ignored by ``"none"``).
        normalize: the embeddings' output space: ``True`` / ``"sphere"`` (L2-normalised), ``"ball"``
            (projected into the unit ball) or ``False`` / ``"none"`` (unconstrained).
        shared: views of one modality share a tower; ``False`` gives every view its own (CMC).
        decoder: ``(name, options)`` to add a decoder per tower (reconstruction objectives).
        encoder_defaults: options given to every backbone that accepts them unless set (e.g. a
            data set's ``vocab_size``).
        fusion_views: for multimodal autoencoders, the views whose embeddings are fused into one
            ``dim``-wide joint code that every decoder reads.
        fusion_mode: ``"mean"`` or ``"concat"`` (see :class:`~contrastlab.encoders.fusion.Fusion`).
        modality_dropout: probability of dropping a fused view per item while training.
        temperature: optional learnable temperature module.
        queue: optional negative queue module.
        given: a view or modality name -> a ready backbone (e.g. a
            :class:`~contrastlab.encoders.given.GivenBackbone`) used instead of building one.
        predictor: ``(head name, options)`` of a predictor per tower, ``dim -> dim`` (BYOL, SimSiam).
        momentum: ``(base momentum, schedule)`` for momentum-updated target towers (MoCo, BYOL).
        logit_bias: initial value of a learnable logit bias (SigLIP).
        crops: views of one modality may differ in size (multi-crop); each size is tried once
            through the shared tower.
        decoder_views: the views whose towers get a decoder (default: every view's).
        coordination: a learned coordination function of the towers' embeddings (gated coordination).

    Returns:
        The :class:`MultiViewModel`.

    Raises:
        ValueError: an unknown encoder or option, an override naming no view or modality, views of
            different shapes sharing a tower, or a bad ``normalize``.

    Example:
        >>> m = build_model({"view1": (3, 32, 32), "view2": (3, 32, 32)}, {"view1": "image", "view2": "image"},
        ...                 encoder=("convnet", {}), dim=64)
        >>> sorted(m.towers), m.view_towers
        (['image'], {'view1': 'image', 'view2': 'image'})
    """
    dim = check_int("dim", dim)
    overrides = dict(overrides or {})
    given = dict(given or {})
    names = set(view_modalities) | set(view_modalities.values())
    stray = sorted((set(overrides) | set(given)) - names)
    if stray:
        raise ValueError(f"encoders given for {stray}, which are neither views nor modalities; views: "
                         f"{list(view_modalities)}, modalities: {sorted(set(view_modalities.values()))}")
    missing = sorted(set(view_modalities) - set(view_shapes))
    if missing:
        raise ValueError(f"no shape for views {missing}")
    view_towers = tower_keys(view_modalities, shared=shared)
    towers: dict[str, Tower] = {}
    decoders: dict[str, nn.Module] = {}
    for view, key in view_towers.items():
        shape = tuple(view_shapes[view])
        if key in towers:
            first = next(v for v, k in view_towers.items() if k == key)
            if crops and tuple(view_shapes[first]) != shape:
                _try_size(towers[key], view, shape)
            elif tuple(view_shapes[first]) != shape:
                raise ValueError(
                    f"views {first!r} {tuple(view_shapes[first])} and {view!r} {shape} share the tower {key!r} but "
                    "have different shapes; give each view its own tower (model.shared: false)"
                )
            continue
        backbone = given.get(view) or given.get(view_modalities[view])
        if backbone is not None:
            towers[key] = Tower(backbone, build_head(head, backbone.out_dim, dim, **dict(head_options or {})))
            continue
        name, options = overrides.get(view) or overrides.get(view_modalities[view]) or encoder
        if name in ENCODERS:
            options = with_defaults(ENCODERS[name], options, encoder_defaults or {})
        try:
            backbone = build_encoder(name, shape, **options)
        except ValueError as err:
            raise ValueError(f"encoder {name!r} for view {view!r} (items of shape {shape}): {err}") from None
        towers[key] = Tower(backbone, build_head(head, backbone.out_dim, dim, **dict(head_options or {})))
    fusion = dropout = None
    if fusion_views:
        fusion = Fusion({v: towers[view_towers[v]].out_dim for v in fusion_views}, dim, mode=fusion_mode)
        dropout = ModalityDropout(modality_dropout)
    if decoder is not None:
        for view, key in view_towers.items():
            if key not in decoders and (decoder_views is None or view in decoder_views):
                latent = dim if fusion is not None else towers[key].out_dim
                decoders[key] = build_decoder(decoder[0], latent, tuple(view_shapes[view]), **dict(decoder[1]))
    predictors = None
    if predictor is not None:
        predictors = {key: build_head(predictor[0], tower.out_dim, tower.out_dim, **dict(predictor[1])) for key, tower in towers.items()}
    return MultiViewModel(
        towers,
        view_towers,
        normalize=normalize,
        decoders=decoders or None,
        fusion=fusion,
        modality_dropout=dropout,
        temperature=temperature,
        queue=queue,
        predictor=predictors,
        momentum=momentum,
        logit_bias=logit_bias,
        coordination=coordination,
    )


def _try_size(tower: Tower, view: str, shape: tuple[int, ...]) -> None:
    """Refuse a crop size the shared tower cannot read (or reads into other features), in one line."""
    import torch

    from contrastlab.encoders.given import check_features

    try:
        check_features(tower.backbone, torch.zeros(2, *shape), who="its backbone", out_dim=tower.feature_dim)
    except ValueError as err:
        raise ValueError(f"view {view!r} {shape} is a crop of another size, and its tower cannot read it "
                         f"({err}); use an encoder that pools over space (convnet with pool: avg, resnet18)") from None
