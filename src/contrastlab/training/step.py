"""One training step's loss for any objective, through the step contract.

The model turns the views into :class:`~contrastlab.outputs.Outputs`; under data parallelism the
embeddings, predictions, targets, labels and item indices of every process are gathered (with
gradients where they carry any) so negatives and batch statistics span the global batch; the
objective's reader (chosen by its spec, see :mod:`contrastlab.objectives._spec`) turns the outputs into
the loss. Work that belongs after the optimiser step — the EMA update of target towers, enqueueing
keys, clamping a learned temperature — is done by after-step hooks (:meth:`LossModule.after_step`).

Precision: under ``torch.autocast`` (the loop's ``precision: bf16`` or ``fp16``) the model's towers, heads and
predictors run in half precision; the gather, the queue and the objective run with autocast switched off on
float32 copies of the outputs, so every loss is computed in float32 whatever the precision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from contrastlab.encoders.model import MultiViewModel
from contrastlab.objectives._spec import READERS, Reader
from contrastlab.outputs import Outputs
from contrastlab.training.distributed import active, all_gather_no_grad, all_gather_with_grad

#: An after-step hook: ``hook(step, total)`` with ``step`` the optimiser steps completed.
AfterStep = Callable[[int, int], None]


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
        reader: how the objective reads the outputs: a :class:`~contrastlab.objectives._spec.Reader`
            or the name of a kind (``"pairwise"``, ``"multiview"``, ``"supervised"``,
            ``"reconstruction"``, ``"cca"``, ``"method"``).
        view_names: the views in order (the first is CMC's core view).
        modalities: view name -> modality (default: every view its own).
        global_views: the views that anchor pairs (multi-crop); default every view.
        recon_views: view -> modality of the views to reconstruct (autoencoders); their clean inputs
            come as ``clean=`` in :meth:`forward`.

    After-step hooks are registered for the model's parts: the EMA update of momentum targets, the
    queue's enqueue of this step's keys and the in-place clamp of a learned temperature;
    :meth:`register_after_step` adds more.

    Raises:
        ValueError: an unknown reader name, or a view list that does not suit it.

    Example:
        >>> from contrastlab.encoders.build import build_model
        >>> m = build_model({"a": (4,), "b": (4,)}, {"a": "x", "b": "x"}, encoder=("mlp", {"hidden": [8]}), dim=4)
        >>> mse = lambda z1, z2: (z1 - z2).pow(2).sum(1).mean()
        >>> loss, out = LossModule(m, mse, reader="pairwise", view_names=["a", "b"])({"a": torch.randn(3, 4), "b": torch.randn(3, 4)})
        >>> loss.shape, sorted(out.embeddings)
        (torch.Size([]), ['a', 'b'])
    """

    def __init__(
        self,
        model: MultiViewModel,
        objective: nn.Module,
        *,
        reader: Reader | str,
        view_names: Sequence[str],
        modalities: Mapping[str, str] | None = None,
        global_views: Sequence[str] = (),
        recon_views: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(reader, str):
            if reader not in READERS:
                raise ValueError(f"reader must be a Reader or one of {', '.join(map(repr, READERS))}, got {reader!r}")
            reader = READERS[reader]
        n = len(view_names)
        if n < reader.min_views or (reader.max_views is not None and n > reader.max_views and not global_views):
            most = "" if reader.max_views is None else f" and at most {reader.max_views} (more only as multi-crop)"
            raise ValueError(f"this objective takes at least {reader.min_views} views{most}, got {n}: {list(view_names)}")
        if "reconstructions" in reader.reads and not recon_views:
            raise ValueError("a reconstruction objective needs recon_views")
        self.model, self.objective, self.reader = model, objective, reader
        self.view_names = tuple(view_names)
        self.modalities = dict(modalities or {v: v for v in view_names})
        self.global_views = tuple(global_views) or self.view_names
        self.recon_views = dict(recon_views or {})
        self._hooks: list[AfterStep] = []
        self._pending: tuple[Tensor, Tensor | None] | None = None
        if model.targets is not None:
            self.register_after_step(lambda step, total: model.targets.update(model.towers, step=step, total=total))
        if model.queue is not None:
            self.register_after_step(self._enqueue)
        if model.temperature is not None and hasattr(model.temperature, "clamp_"):
            self.register_after_step(lambda step, total: model.temperature.clamp_())

    def register_after_step(self, hook: AfterStep) -> None:
        """Run ``hook(step, total)`` after every optimiser step, after the hooks registered before it."""
        self._hooks.append(hook)

    def after_step(self, step: int, total: int) -> None:
        """Call after ``optimizer.step()``: ``step`` optimiser steps of ``total`` are done."""
        for hook in self._hooks:
            hook(step, total)

    def _enqueue(self, step: int, total: int) -> None:
        if self._pending is not None:
            keys, ids = self._pending
            self.model.queue.enqueue(keys, ids)
            self._pending = None

    def forward(
        self,
        views: Mapping[str, Tensor],
        *,
        lengths: Mapping[str, Tensor] | None = None,
        labels: Tensor | None = None,
        clean: Mapping[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> tuple[Tensor, Outputs]:
        r"""The loss of one (local) batch and this process's outputs.

        Args:
            views: view name -> ``(B, ...)`` inputs of this process's items.
            lengths: view name -> ``(B,)`` valid lengths (padded sequences).
            labels: ``(B,)`` class labels (supervised objectives).
            clean: view name -> ``(B, ...)`` clean inputs to reconstruct (autoencoders).
            index: ``(B,)`` item indices (kept with queued keys so an item is never its own negative).

        Returns:
            ``(loss, outputs)``: the 0-dim loss (float32, also under autocast: the objective runs with autocast
            off on float32 outputs; identical on every process when it reads gathered outputs) and this
            process's :class:`~contrastlab.outputs.Outputs` (in the autocast dtype, as the towers made them).
        """
        if self.recon_views and clean is None:
            raise ValueError("a reconstruction objective needs the clean inputs (clean=)")
        reconstruct = {v: clean[v] for v in self.recon_views} if self.recon_views else None
        views = {v: views[v] for v in self.view_names}  # in the objective's order (the first is CMC's core view)
        local = self.model.outputs(views, lengths, modalities=self.modalities, global_views=self.global_views,
                                   reconstruct=reconstruct, encode_all="reconstructions" not in self.reader.reads)
        local.labels, local.index = labels, index
        device = next(iter(local.embeddings.values())).device
        with torch.autocast(device.type, enabled=False):
            out = _gathered(local) if "reconstructions" not in self.reader.reads else _to_full(local)
            if self.model.queue is not None:
                negatives = self.model.queue.negatives(exclude_ids=out.index)
                if len(negatives):  # the first batch has no earlier keys
                    out.negatives = negatives.to(out.embeddings[self.view_names[0]].dtype)
                key_view = self.global_views[-1]
                self._pending = ((out.targets or out.embeddings)[key_view].detach(), out.index)
            loss = self.reader.call(self.objective, out)
        return loss, local


def _to_full(out: Outputs) -> Outputs:
    """Half-precision tensors of autocast back to float32 for the loss."""
    def conv(d):
        return {k: _full(v) for k, v in d.items()}

    return out.replace(
        embeddings=conv(out.embeddings), predictions=conv(out.predictions), targets=conv(out.targets),
        reconstructions=conv(out.reconstructions), temperature=None if out.temperature is None else _full(out.temperature),
    )  # fmt: skip


def _gathered(out: Outputs) -> Outputs:
    """The outputs of every process's rows (float32): embeddings and predictions keep their gradients.
    Reconstructions and their clean inputs stay this process's own (a reconstruction error is per item)."""
    out = _to_full(out)
    if not active():
        return out
    return out.replace(
        embeddings={v: all_gather_with_grad(z) for v, z in out.embeddings.items()},
        predictions={v: all_gather_with_grad(p) for v, p in out.predictions.items()},
        targets={v: all_gather_no_grad(t) for v, t in out.targets.items()},
        labels=None if out.labels is None else all_gather_no_grad(out.labels),
        index=None if out.index is None else all_gather_no_grad(out.index),
    )


def run_temperature(model: MultiViewModel, objective: nn.Module) -> float | None:
    r"""The temperature :math:`\tau` a run trains with: the learned one when the model has one, else the
    objective's fixed ``temperature`` (``None`` when it has neither, e.g. a triplet loss).

    Recorded in every checkpoint; evaluation reads it from there.

    Example:
        >>> from contrastlab.objectives.info_nce import InfoNCE
        >>> from contrastlab.encoders.build import build_model
        >>> m = build_model({"a": (4,), "b": (4,)}, {"a": "x", "b": "x"}, encoder=("mlp", {"hidden": [8]}), dim=4)
        >>> run_temperature(m, InfoNCE(temperature=0.2))
        0.2
    """
    if model.temperature is not None:
        return float(model.temperature().detach())
    value = getattr(objective, "temperature", getattr(getattr(objective, "pairwise", None), "temperature", None))
    if isinstance(value, Tensor) and value.dim() == 0:
        return float(value.detach())
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _full(x: Tensor) -> Tensor:
    """Half-precision outputs of autocast back to float32 for the loss; other dtypes unchanged."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


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
