r"""A first-in-first-out queue of negative keys (MoCo's queue, CMC's memory of past embeddings)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings

__all__ = ["NegativeQueue"]


class NegativeQueue(nn.Module):
    r"""A ring buffer of the most recent ``size`` keys, used as shared negatives ``(K, D)``.

    The queue lives in the model (its buffers are saved with it, it moves with ``.to()``), never in the loss.
    One training step uses it in this order, so a batch never meets its own keys among the negatives:

    1. ``negatives = queue.negatives()`` — keys of *earlier* batches only;
    2. ``loss = info_nce(q, k, negatives=negatives)``, backward, optimiser step;
    3. ``queue.enqueue(k)`` — the current keys become negatives for *later* batches.

    ``negatives()`` returns a copy, so enqueueing before ``backward()`` (as MoCo does) cannot corrupt the
    saved tensors of the graph. A queue longer than an epoch would eventually hold an older key of the same
    item; pass ``ids`` to :meth:`enqueue` and ``exclude_ids`` to :meth:`negatives` to drop those rows.

    The loss with the queue is InfoNCE with shared negatives (:math:`K` stored keys :math:`n_k`):

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_i \log
            \frac{e^{q_i^\top k_i/\tau}}{e^{q_i^\top k_i/\tau} + \sum_{k=1}^{K} e^{q_i^\top n_k/\tau}}.

    References:
        He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning"
        (MoCo), CVPR 2020, arXiv:1911.05722, Algorithm 1; Tian, Krishnan, Isola, "Contrastive Multiview
        Coding", ECCV 2020, arXiv:1906.05849, section 3.4 (memory bank); Wu et al., "Unsupervised Feature
        Learning via Non-Parametric Instance Discrimination", CVPR 2018.

    Args:
        size: capacity :math:`K \ge 1` (number of stored keys).
        dim: key dimension :math:`D \ge 1`.
        dtype: dtype of the stored keys (default: torch's default float dtype).

    Raises:
        ValueError: if ``size`` or ``dim`` is not a positive integer.

    Example:
        >>> queue = NegativeQueue(size=4, dim=2)
        >>> queue.negatives().shape                  # empty at first
        torch.Size([0, 2])
        >>> queue.enqueue(torch.eye(2)); queue.enqueue(torch.ones(3, 2))
        >>> queue.negatives().shape                  # the 4 most recent keys
        torch.Size([4, 2])
    """

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        for name, value in (("size", size), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.size = size
        self.dim = dim
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled)

    def negatives(self, exclude_ids: Tensor | None = None) -> Tensor:
        r"""The stored keys, a detached copy.

        Args:
            exclude_ids: item ids ``(B,)`` whose stored keys must be left out (the current batch's items).

        Returns:
            Shape ``(K', D)`` with :math:`K' \le` ``size``: only filled slots (and not excluded ones).
        """
        n = int(self.filled)
        keys = self.keys[:n]
        if exclude_ids is not None:
            keep = ~torch.isin(self.ids[:n], exclude_ids.to(self.ids.device))
            keys = keys[keep]
        return keys.detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor | None = None) -> None:
        r"""Append a batch of keys, overwriting the oldest once full.

        Call it after the loss of the batch has been computed. A batch larger than ``size`` keeps its last
        ``size`` rows.

        Args:
            keys: shape ``(B, D)``; stored detached, in the queue's dtype.
            ids: optional item ids ``(B,)`` for :meth:`negatives`' ``exclude_ids``.

        Raises:
            ValueError: if ``keys`` is not ``(B, D)`` with the queue's ``D``, or ``ids`` is not ``(B,)``.
        """
        check_embeddings("keys", keys)
        if keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        if ids is not None and tuple(ids.shape) != (keys.shape[0],):
            raise ValueError(f"ids must have shape ({keys.shape[0]},), got {tuple(ids.shape)}")
        keys = keys.detach()[-self.size :]
        new_ids = (
            torch.full((keys.shape[0],), -1, dtype=torch.long, device=self.ids.device)
            if ids is None
            else ids[-self.size :].to(device=self.ids.device, dtype=torch.long)
        )
        b = keys.shape[0]
        slots = (int(self.pointer) + torch.arange(b, device=self.keys.device)) % self.size
        self.keys[slots] = keys.to(self.keys.dtype)
        self.ids[slots] = new_ids
        self.pointer.fill_((int(self.pointer) + b) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + b))

    def reset(self) -> None:
        """Empty the queue."""
        self.keys.zero_()
        self.ids.fill_(-1)
        self.pointer.zero_()
        self.filled.zero_()

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, filled={int(self.filled)}"
