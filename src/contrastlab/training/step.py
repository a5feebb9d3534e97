"""One training step's loss for any objective: how embeddings reach the objective depends on its kind.

=================  ============================================================
kind               call
=================  ============================================================
``pairwise``       ``loss(z[v1], z[v2])`` (+ ``negatives=``, ``temperature=``)
``cca``            ``loss(z[v1], z[v2])``
``multiview``      ``loss([z[v] for v in views])``
``supervised``     ``loss(stack([z[v] for v in views], dim=1), labels)``
``reconstruction`` ``loss({modality: recon}, {modality: clean input})``
=================  ============================================================

Under data parallelism the embeddings (and labels) of every process are gathered with gradients
first, so negatives and batch statistics span the global batch; reconstruction is per item and needs
no gather.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from contrastlab.encoders.heads import l2_normalize
from contrastlab.encoders.model import MultiViewModel
from contrastlab.training.distributed import all_gather_no_grad, all_gather_with_grad

KINDS = ("pairwise", "multiview", "supervised", "reconstruction", "cca")


def reconstruction_views(view_names: Sequence[str], view_modalities: Mapping[str, str]) -> dict[str, str]:
    """The first view of each modality -> its modality: what an autoencoder encodes and decodes.

    Example:
        >>> reconstruction_views(["view1", "view2"], {"view1": "image", "view2": "image"})
        {'view1': 'image'}
    """
    chosen: dict[str, str] = {}
    for v in view_names:
        if view_modalities[v] not in chosen.values():
            chosen[v] = view_modalities[v]
    return chosen


class LossModule(nn.Module):
    r"""The model and the objective together: views in, the loss out (what DDP wraps).

    Args:
        model: the :class:`~contrastlab.encoders.model.MultiViewModel`.
        objective: the objective module (its parameters, if any, are trained too).
        kind: the objective's calling convention (see the table above).
        view_names: the views in order (the first is CMC's core view).
        recon_views: for ``"reconstruction"``, view -> modality of the views to reconstruct.
        pass_temperature: give ``temperature=model.temperature()`` to the objective.
        pass_negatives: give ``negatives=`` from ``model.queue`` (once it holds keys) and enqueue
            the second view's embeddings after the loss.

    Raises:
        ValueError: an unknown kind, or a view list that does not suit it.

    Example:
        >>> from contrastlab.encoders.build import build_model
        >>> m = build_model({"a": (4,), "b": (4,)}, {"a": "x", "b": "x"}, encoder=("mlp", {"hidden": [8]}), dim=4)
        >>> mse = lambda z1, z2: (z1 - z2).pow(2).sum(1).mean()
        >>> loss, z = LossModule(m, mse, kind="pairwise", view_names=["a", "b"])({"a": torch.randn(3, 4), "b": torch.randn(3, 4)})
        >>> loss.shape, sorted(z)
        (torch.Size([]), ['a', 'b'])
    """

    def __init__(
        self,
        model: MultiViewModel,
        objective: nn.Module,
        *,
        kind: str,
        view_names: Sequence[str],
        recon_views: Mapping[str, str] | None = None,
        pass_temperature: bool = False,
        pass_negatives: bool = False,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
        if kind in ("pairwise", "cca") and len(view_names) != 2:
            raise ValueError(f"a {kind} objective takes exactly 2 views, got {len(view_names)}: {list(view_names)}")
        if kind == "reconstruction" and not recon_views:
            raise ValueError("a reconstruction objective needs recon_views")
        self.model, self.objective, self.kind = model, objective, kind
        self.view_names = tuple(view_names)
        self.recon_views = dict(recon_views or {})
        self.pass_temperature, self.pass_negatives = pass_temperature, pass_negatives

    def forward(
        self,
        views: Mapping[str, Tensor],
        *,
        lengths: Mapping[str, Tensor] | None = None,
        labels: Tensor | None = None,
        targets: Mapping[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        r"""The loss of one (local) batch and this process's embeddings.

        Args:
            views: view name -> ``(B, ...)`` inputs of this process's items.
            lengths: view name -> ``(B,)`` valid lengths (padded sequences).
            labels: ``(B,)`` class labels (supervised objectives).
            targets: view name -> ``(B, ...)`` clean inputs to reconstruct (reconstruction).
            index: ``(B,)`` item indices (kept with queued keys so an item is never its own negative).

        Returns:
            ``(loss, z)``: the 0-dim loss (float32; identical on every process for gathered kinds)
            and view name -> ``(B, D)`` local embeddings.
        """
        if self.kind == "reconstruction":
            inputs = {v: views[v] for v in self.recon_views}
            z, recons = self.model.reconstruct(inputs, {v: lengths[v] for v in inputs if lengths and v in lengths})
            with torch.autocast(recons[next(iter(recons))].device.type, enabled=False):
                outs = {m: _full(recons[v]) for v, m in self.recon_views.items()}
                loss = self.objective(outs, {m: targets[v].to(outs[m].dtype) for v, m in self.recon_views.items()})
            return loss, z
        z = self.model(views, lengths)
        with torch.autocast(next(iter(z.values())).device.type, enabled=False):
            gathered = [all_gather_with_grad(_full(z[v])) for v in self.view_names]
            extra = {}
            if self.pass_temperature:
                extra["temperature"] = _full(self.model.temperature())
            ids = None if index is None else all_gather_no_grad(index)
            if self.pass_negatives and len(self.model.queue):  # the first batch has no earlier keys
                extra["negatives"] = self.model.queue.negatives(exclude_ids=ids).to(gathered[0].dtype)
            if self.kind in ("pairwise", "cca"):
                loss = self.objective(gathered[0], gathered[1], **extra)
            elif self.kind == "multiview":
                loss = self.objective(gathered, **extra)
            else:
                if labels is None:
                    raise ValueError("a supervised objective needs labels, and this batch has none")
                loss = self.objective(torch.stack(gathered, dim=1), all_gather_no_grad(labels), **extra)
            if self.pass_negatives:
                self.model.queue.enqueue(gathered[1].detach(), ids)
        return loss, z


def _full(x: Tensor) -> Tensor:
    """Half-precision outputs of autocast back to float32 for the loss; other dtypes unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def align_uniform_stats(z1: Tensor, z2: Tensor, *, t: float = 2.0) -> tuple[float, float]:
    r"""Alignment and uniformity of two views' embeddings (normalised here), for monitoring.

    .. math::
        \text{align} = \frac1N \sum_i \lVert \hat z^1_i - \hat z^2_i \rVert_2^2, \qquad
        \text{uniform} = \log \frac{2}{N(N-1)} \sum_{i<j} e^{-t \lVert \hat z^1_i - \hat z^1_j \rVert_2^2}

    Args:
        z1: first view's embeddings ``(N, D)``.
        z2: second view's embeddings ``(N, D)``.
        t: the uniformity kernel's scale.

    Returns:
        ``(align, uniform)`` as floats (uniformity is ``nan`` for ``N < 2``).

    References:
        Wang & Isola, "Understanding contrastive representation learning through alignment and
        uniformity on the hypersphere", ICML 2020.

    Example:
        >>> z = torch.eye(3)
        >>> a, u = align_uniform_stats(z, z)
        >>> a, round(u, 4)
        (0.0, -4.0)
    """
    with torch.no_grad():
        a, b = l2_normalize(z1.detach().float()), l2_normalize(z2.detach().float())
        align = float((a - b).pow(2).sum(dim=1).mean())
        if a.shape[0] < 2:
            return align, float("nan")
        sq = torch.pdist(a).pow(2)
        uniform = float(torch.logsumexp(-t * sq, dim=0) - torch.log(torch.tensor(float(sq.numel()))))
    return align, uniform


def mean_norm(z: Mapping[str, Tensor]) -> float:
    r"""The mean L2 norm of the embeddings of every view, for monitoring.

    .. math:: \bar r = \frac{1}{V N} \sum_{v=1}^{V} \sum_{i=1}^{N} \lVert z^{v}_i \rVert_2

    On the unit sphere it is 1, in the unit ball at most 1; unconstrained, it shows whether a loss
    is being lowered by scaling the embeddings up (the contrastive homework's question 2(a)).

    Args:
        z: view name -> embeddings ``(N, D)``.

    Returns:
        The mean norm as a float (``nan`` when there are no embeddings).

    References:
        Wang & Isola, "Understanding contrastive representation learning through alignment and
        uniformity on the hypersphere", ICML 2020 (why the outputs are normalised).

    Example:
        >>> round(mean_norm({"a": torch.tensor([[3.0, 4.0]]), "b": torch.tensor([[1.0, 0.0]])}), 4)
        3.0
    """
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(v.detach().float(), dim=-1).reshape(-1) for v in z.values()]
        if not norms or sum(n.numel() for n in norms) == 0:
            return float("nan")
        return float(torch.cat(norms).mean())
