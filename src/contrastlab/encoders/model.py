"""The model: every view name is read by a tower (backbone + projection head)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from contrastlab.encoders.heads import l2_normalize
from contrastlab.encoders.momentum import MomentumTargets
from contrastlab.outputs import Outputs

_STAGES = ("head", "backbone", "shared", "private")

#: Where embeddings may live: the unit sphere, the unit ball, or anywhere (unconstrained).
OUTPUT_SPACES: tuple[str, ...] = ("sphere", "ball", "none")


def output_space(normalize: bool | str) -> str:
    """The output space a ``normalize`` option names: ``True`` is ``"sphere"``, ``False`` is ``"none"``.

    Args:
        normalize: ``True``, ``False``, or one of :data:`OUTPUT_SPACES`.

    Returns:
        One of :data:`OUTPUT_SPACES`.

    Raises:
        ValueError: any other value, naming it.

    Example:
        >>> output_space(True), output_space(False), output_space("ball")
        ('sphere', 'none', 'ball')
    """
    if isinstance(normalize, bool):
        return "sphere" if normalize else "none"
    if isinstance(normalize, str) and normalize in OUTPUT_SPACES:
        return normalize
    raise ValueError(f"normalize must be true, false or one of {', '.join(map(repr, OUTPUT_SPACES))}, "
                     f"got {normalize!r}")


def to_output_space(z: Tensor, space: str) -> Tensor:
    r"""Map embeddings into an output space.

    .. math::
        \text{sphere: } \frac{z}{\lVert z \rVert_2}, \qquad
        \text{ball: } \frac{z}{\max(1, \lVert z \rVert_2)}, \qquad
        \text{none: } z.

    The ball map is the Euclidean projection onto :math:`\{z : \lVert z \rVert_2 \le 1\}`: it leaves
    points inside unchanged and pulls points outside radially onto the sphere.

    References:
        Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity
        on the Hypersphere", ICML 2020 (the contrastive homework's question 2 compares the three spaces).

    Args:
        z: embeddings of shape ``(N, D)``.
        space: one of :data:`OUTPUT_SPACES`.

    Returns:
        Embeddings of shape ``(N, D)`` in ``space``.

    Raises:
        ValueError: an unknown ``space``, naming it.

    Example:
        >>> z = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> to_output_space(z, "ball").norm(dim=1).tolist()
        [1.0, 0.5]
    """
    if space == "sphere":
        return l2_normalize(z)
    if space == "ball":
        return z / torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(1.0)
    if space == "none":
        return z
    raise ValueError(f"space must be one of {', '.join(map(repr, OUTPUT_SPACES))}, got {space!r}")


class Tower(nn.Module):
    r"""A backbone :math:`f` followed by a projection head :math:`g`: :math:`h = f(x)`, :math:`z = g(h)`.

    Args:
        backbone: maps ``(N, ...)`` inputs to ``(N, F)`` features; has ``out_dim`` and ``uses_lengths``.
        head: maps ``(N, F)`` to ``(N, D)``; has ``out_dim``.

    Shapes:
        forward: ``x`` ``(N, ...)``, ``lengths`` ``(N,)`` -> ``h`` ``(N, F)``, ``z`` ``(N, D)``.

    References:
        Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of visual
        representations", ICML 2020 (features before the head transfer better than after).

    Example:
        >>> import torch
        >>> from contrastlab.encoders.mlp import MLP
        >>> from contrastlab.encoders.heads import LinearHead
        >>> h, z = Tower(MLP((4,), hidden=[8]), LinearHead(8, 2))(torch.randn(3, 4))
        >>> h.shape, z.shape
        (torch.Size([3, 8]), torch.Size([3, 2]))
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.feature_dim, self.out_dim = backbone.out_dim, head.out_dim

    def features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Backbone features ``(N, F)``; ``lengths`` reach only backbones that read them."""
        if getattr(self.backbone, "uses_lengths", False):
            return self.backbone(x, lengths)
        return self.backbone(x)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.features(x, lengths)
        return h, self.head(h)


class MultiViewModel(nn.Module):
    r"""Maps each view to an embedding with the tower assigned to it.

    For view :math:`v` read by tower :math:`t(v)`,

    .. math:: z_v = \frac{g_{t(v)}(f_{t(v)}(x_v))}{\lVert g_{t(v)}(f_{t(v)}(x_v)) \rVert_2}

    on the unit sphere (``normalize=True`` or ``"sphere"``); in the unit ball (``"ball"``) the divisor is
    :math:`\max(1, \lVert g(f(x)) \rVert_2)`; without constraint (``False`` or ``"none"``) there is none
    (see :func:`to_output_space`). Views of one modality usually share a tower
    (SimCLR's two augmentations); different modalities or CMC's channel views have their own.

    Args:
        towers: tower name -> :class:`Tower`.
        view_towers: view name -> the tower name that reads it (in view order).
        normalize: the head's output space: ``True`` / ``"sphere"`` (L2-normalised), ``"ball"``
            (projected into the unit ball) or ``False`` / ``"none"`` (unconstrained). The chosen space
            is kept as ``output_space``.
        decoders: tower name -> decoder ``(N, D) -> (N, ...)`` for reconstruction objectives.
        fusion: for multimodal autoencoders, a module ``fusion(codes, present=masks)`` mapping
            ``{view: (N, D)}`` to a joint ``(N, D')`` code from which every view is decoded.
        modality_dropout: with ``fusion``, a module ``dropout(codes) -> {view: (N,) bool}`` that
            drops whole views per item while training.
        temperature: a module returning a learnable 0-dim temperature (passed to the objective).
        queue: a negative queue (memory of past embeddings) used by the objective.
        predictor: tower name -> predictor ``(N, D) -> (N, D)`` on the head's output (BYOL, SimSiam,
            MoCo v3).
        momentum: ``(base momentum, schedule)`` to keep a momentum-updated target copy of every tower
            (MoCo, BYOL); see :class:`~contrastlab.encoders.momentum.MomentumTargets`.
        logit_bias: initial value of a learnable logit bias (SigLIP).
        coordination: a learned coordination function of two modalities' embeddings (e.g.
            :class:`~contrastlab.encoders.coordination.GatedCoordination`), handed to the objective as its
            ``similarity``.
        shared_dim: fission's code layout: the first ``shared_dim`` head outputs are the code shared across
            modalities, the rest the modality's private code (``encode`` then also gives the stages
            ``"shared"`` and ``"private"``).

    Raises:
        ValueError: a view assigned to a tower that does not exist, or a bad ``normalize``.

    References:
        Tian, Krishnan & Isola, "Contrastive multiview coding", ECCV 2020 (one encoder per view);
        Chen et al., "A simple framework for contrastive learning of visual representations", ICML 2020.

    Example:
        >>> import torch
        >>> from contrastlab.encoders.mlp import MLP
        >>> from contrastlab.encoders.heads import LinearHead
        >>> tower = Tower(MLP((4,), hidden=[8]), LinearHead(8, 2))
        >>> model = MultiViewModel({"x": tower}, {"view1": "x", "view2": "x"})
        >>> z = model({"view1": torch.randn(5, 4), "view2": torch.randn(5, 4)})
        >>> z["view1"].shape, round(float(z["view1"][0].detach().norm()), 4)
        (torch.Size([5, 2]), 1.0)
    """

    def __init__(
        self,
        towers: Mapping[str, Tower],
        view_towers: Mapping[str, str],
        *,
        normalize: bool | str = True,
        decoders: Mapping[str, nn.Module] | None = None,
        fusion: nn.Module | None = None,
        modality_dropout: nn.Module | None = None,
        temperature: nn.Module | None = None,
        queue: nn.Module | None = None,
        predictor: Mapping[str, nn.Module] | None = None,
        momentum: tuple[float, str] | None = None,
        logit_bias: float | None = None,
        coordination: nn.Module | None = None,
        shared_dim: int | None = None,
    ) -> None:
        super().__init__()
        missing = sorted({t for t in view_towers.values() if t not in towers})
        if missing:
            raise ValueError(f"views are assigned to unknown towers {missing}; towers: {sorted(towers)}")
        self.towers = nn.ModuleDict(dict(towers))
        self.view_towers = dict(view_towers)
        self.output_space = output_space(normalize)
        self.decoders = nn.ModuleDict(dict(decoders)) if decoders else None
        self.fusion = fusion
        self.modality_dropout = modality_dropout
        self.temperature = temperature
        self.queue = queue
        self.predictor = nn.ModuleDict(dict(predictor)) if predictor else None
        self.targets = None if momentum is None else MomentumTargets(self.towers, momentum=momentum[0], schedule=momentum[1])
        self.logit_bias = None if logit_bias is None else nn.Parameter(torch.tensor(float(logit_bias)))
        self.coordination = coordination
        self.shared_dim = shared_dim

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(self.view_towers)

    def _check(self, views: Mapping[str, Tensor]) -> None:
        unknown = sorted(set(views) - set(self.view_towers))
        if unknown:
            raise ValueError(f"the model has no tower for views {unknown}; known views: {list(self.view_towers)}")

    def _run(self, views: Mapping[str, Tensor], lengths: Mapping[str, Tensor] | None) -> dict[str, tuple[Tensor, Tensor]]:
        self._check(views)
        lengths = lengths or {}
        return {v: self.towers[self.view_towers[v]](x, lengths.get(v)) for v, x in views.items()}

    def _finish(self, z: Tensor) -> Tensor:
        return to_output_space(z, self.output_space)

    def forward(self, views: Mapping[str, Tensor], lengths: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        r"""Embeddings of every view.

        Args:
            views: view name -> inputs ``(N, ...)``; row ``i`` of every view is item ``i``.
            lengths: view name -> valid lengths ``(N,)`` for padded sequences (optional).

        Returns:
            View name -> embeddings ``(N, D)`` in the model's ``output_space``.

        Raises:
            ValueError: a view the model has no tower for.
        """
        return {v: self._finish(z) for v, (_, z) in self._run(views, lengths).items()}

    def encode(
        self, views: Mapping[str, Tensor], *, stage: str = "head", lengths: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        r"""Features for evaluation: after the head (as in :meth:`forward`) or straight from the backbone.

        Args:
            views: view name -> inputs ``(N, ...)``.
            stage: ``"head"`` (embeddings in the ``output_space``, as in :meth:`forward`), ``"backbone"``
                (features before the head, never normalised), or for a model whose objective splits the code
                (``shared_dim``: fission, FactorCL) its ``"shared"`` part, L2-normalised as fission's contrastive term
                compares it (FactorCL's critics read it raw; the evaluation's cosine-based measures do not see the
                difference, its probes standardise), or its ``"private"`` part as is.
            lengths: view name -> valid lengths ``(N,)`` (optional).

        Returns:
            View name -> ``(N, D)`` for ``"head"``, ``(N, F)`` for ``"backbone"``, ``(N, shared_dim)`` or
            ``(N, D - shared_dim)`` for the fission stages.

        Raises:
            ValueError: an unknown ``stage`` or view, or a fission stage of a model without ``shared_dim``.
        """
        if stage in ("shared", "private") and not self.shared_dim:
            raise ValueError(f"stage {stage!r} needs a fission model (shared_dim); this one has none")
        if stage not in self.stages:
            raise ValueError(f"stage must be one of {', '.join(map(repr, self.stages))}, got {stage!r}")
        self._check(views)
        lengths = lengths or {}
        if stage == "backbone":
            return {v: self.towers[self.view_towers[v]].features(x, lengths.get(v)) for v, x in views.items()}
        z = self.forward(views, lengths)
        if stage == "shared":
            return {v: l2_normalize(x[:, :self.shared_dim]) for v, x in z.items()}
        if stage == "private":
            return {v: x[:, self.shared_dim:] for v, x in z.items()}
        return z

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages :meth:`encode` reads: head and backbone, and a fission model's shared and private codes."""
        return _STAGES if self.shared_dim else _STAGES[:2]

    def outputs(
        self,
        views: Mapping[str, Tensor],
        lengths: Mapping[str, Tensor] | None = None,
        *,
        modalities: Mapping[str, str],
        global_views: tuple[str, ...] = (),
        reconstruct: Mapping[str, Tensor] | None = None,
        encode_all: bool = False,
    ) -> Outputs:
        r"""Everything the model makes of one batch: the step contract's :class:`~contrastlab.outputs.Outputs`.

        Embeddings of every view; predictions when the model has a predictor (the predictor reads the
        head's output before the output space is applied); momentum-target embeddings, computed without
        gradient, when it has targets; the learned temperature and logit bias; or, when
        ``reconstruct`` names views with their clean inputs, only those views' embeddings and their
        reconstructions (the augmented view is encoded, the clean one is the target). Predictions and targets
        are mapped into the model's output space like the embeddings.

        Args:
            views: view name -> inputs ``(N, ...)``; row ``i`` of every view is item ``i``.
            lengths: view name -> valid lengths ``(N,)`` (optional).
            modalities: view name -> modality.
            global_views: the views that anchor pairs (multi-crop's global crops); default every view.
            reconstruct: view name -> clean input ``(N, ...)`` of the views to encode and decode.
            encode_all: with ``reconstruct``, still encode every view (fission: a contrastive term on all views
                and reconstructions of some), each reconstructed view decoded from its own embedding.

        Returns:
            The :class:`~contrastlab.outputs.Outputs` of this process's rows (not gathered).

        Raises:
            ValueError: a view the model has no tower for, or reconstruction without decoders.
        """
        lengths = lengths or {}
        if reconstruct and not encode_all:  # autoencoders: encode the views to reconstruct (only those), decode them
            inputs = {v: views[v] for v in reconstruct}
            z, recons = self.reconstruct(inputs, {v: lengths[v] for v in inputs if v in lengths})
            return Outputs(embeddings=z, view_names=tuple(inputs), modalities={v: modalities[v] for v in inputs},
                           reconstructions=recons, clean=dict(reconstruct))
        run = self._run(views, lengths)
        raw = {v: z for v, (_, z) in run.items()}
        out = Outputs(
            embeddings={v: self._finish(z) for v, z in raw.items()},
            view_names=tuple(views),
            modalities={v: modalities[v] for v in views},
            global_views=tuple(global_views),
            features={v: h for v, (h, _) in run.items()},
        )
        if self.predictor is not None:
            out.predictions = {v: self._finish(self.predictor[self.view_towers[v]](z)) for v, z in raw.items()}
        if self.targets is not None:
            with torch.no_grad():
                out.targets = {
                    v: self._finish(self.targets.towers[self.view_towers[v]](views[v], lengths.get(v))[1]).detach()
                    for v in out.global_views
                }
        if reconstruct:
            if self.decoders is None:
                raise ValueError("this model has no decoders: build it with a decoder for reconstruction objectives")
            out.reconstructions = {v: self.decoders[self.view_towers[v]](out.embeddings[v]) for v in reconstruct}
            out.clean = dict(reconstruct)
        if self.temperature is not None:
            out.temperature = self.temperature()
        out.logit_bias = self.logit_bias
        out.similarity = self.coordination
        return out

    def reconstruct(
        self, views: Mapping[str, Tensor], lengths: Mapping[str, Tensor] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        r"""Embeddings and reconstructions of every view, for autoencoder objectives.

        Without fusion each view is decoded from its own embedding, :math:`\hat x_v = d_{t(v)}(z_v)`;
        with fusion every view is decoded from the joint code of the views kept by modality dropout
        (all of them in eval mode), :math:`\hat x_v = d_{t(v)}(\phi(\{z_u : u \text{ kept}\}))`.

        Args:
            views: view name -> inputs ``(N, ...)``.
            lengths: view name -> valid lengths ``(N,)`` (optional).

        Returns:
            ``(embeddings, reconstructions)``: view name -> ``(N, D)`` and view name -> ``(N, ...)``
            (the shape of the view).

        Raises:
            ValueError: when the model has no decoders.
        """
        if self.decoders is None:
            raise ValueError("this model has no decoders: build it with a decoder for reconstruction objectives")
        z = self.forward(views, lengths)
        if self.fusion is not None:
            present = None
            if self.modality_dropout is not None and self.training:
                present = self.modality_dropout(z)
            joint = self.fusion(z, present=present)
            recons = {v: self.decoders[self.view_towers[v]](joint) for v in z}
        else:
            recons = {v: self.decoders[self.view_towers[v]](zv) for v, zv in z.items()}
        return z, recons
