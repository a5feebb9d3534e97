r"""Gated coordination (CMU MMML lecture 4.1): each modality's code is gated by both modalities before they are compared.

Coordination learns one representation per modality tied by a coordination function :math:`g(z_A, z_B)`.
*Gated* coordination lets each side re-weight its own features in the light of the other:

.. math:: \tilde z_A = \gamma_A(z_A, z_B) \odot z_A, \qquad \tilde z_B = \gamma_B(z_A, z_B) \odot z_B, \qquad
          s(z_A, z_B) = \frac{\tilde z_A \cdot \tilde z_B}{\lVert \tilde z_A \rVert \, \lVert \tilde z_B \rVert}

with gates :math:`\gamma_m(z_A, z_B) = \sigma(W_m z_A + U_m z_B + c_m) \in (0, 1)^D`. The gates depend on the
*pair*, so in a contrastive loss they are computed for every (anchor, candidate) pair, never only for the true
partner: gates computed from item :math:`i`'s own partner would carry that partner into :math:`\tilde z_A`, and
every negative could be told apart by it (a shortcut). The cost is :math:`O(N M D)` memory for N anchors and M
candidates, which is why rows are processed in blocks. With :math:`W = U = 0` every gate is the same constant,
which cancels in the cosine: the model starts as plain cosine coordination and learns where gating helps.

The module is a *similarity*: ``matrix(a, b)`` ``(N, M)`` and ``paired(a, b)`` ``(N,)``, the form every
pairwise objective's ``similarity=`` option takes; a model with ``coordination="gated"`` hands it to its objective
through the step's outputs, and evaluation ranks cross-modal retrieval with it.

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 ("gated coordination",
    related to attention); Dauphin, Fan, Auli & Grangier, "Language Modeling with Gated Convolutional
    Networks", ICML 2017 (sigmoid gates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GatedCoordination"]


class GatedCoordination(nn.Module):
    r"""The gated coordination function :math:`s(z_A, z_B)` of two modalities' embeddings (see the module docstring).

    Args:
        dim: the embedding width ``D`` of both modalities.
        block: anchor rows per block in :meth:`matrix` (bounds the ``(block, M, D)`` gate tensors).

    Shapes:
        ``matrix(a, b)``: ``a`` ``(N, D)`` of modality A, ``b`` ``(M, D)`` of modality B -> ``(N, M)``;
        ``paired(a, b)``: ``(N, D)``, ``(N, D)`` -> ``(N,)`` (each row with its own partner).

    Example:
        >>> g = GatedCoordination(4)
        >>> a, b = torch.randn(3, 4), torch.randn(5, 4)
        >>> torch.allclose(g.matrix(a, b), F.normalize(a, dim=1) @ F.normalize(b, dim=1).T, atol=1e-6)  # starts as cosine
        True
        >>> torch.allclose(g.paired(a, b[:3]), g.matrix(a, b[:3]).diagonal(), atol=1e-6)
        True
    """

    name = "gated"
    bilinear = False

    def __init__(self, dim: int, *, block: int = 64) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if isinstance(block, bool) or not isinstance(block, int) or block < 1:
            raise ValueError(f"block must be a positive integer, got {block!r}")
        self.dim, self.block = dim, block
        # gate pre-activations of A and of B: W_m z_A (from a) and U_m z_B (from b), for m in (A, B)
        self.from_a = nn.Linear(dim, 2 * dim, bias=True)
        self.from_b = nn.Linear(dim, 2 * dim, bias=False)
        nn.init.zeros_(self.from_a.weight)
        nn.init.zeros_(self.from_b.weight)
        nn.init.constant_(self.from_a.bias, 2.0)

    def _check(self, a: Tensor, b: Tensor) -> None:
        for name, x in (("a", a), ("b", b)):
            if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.dim:
                raise ValueError(f"{name} must have shape (N, {self.dim}), got "
                                 f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")

    @staticmethod
    def _cosine(za: Tensor, zb: Tensor) -> Tensor:
        return F.cosine_similarity(za, zb, dim=-1, eps=1e-8)

    def matrix(self, a: Tensor, b: Tensor) -> Tensor:
        r""":math:`s(a_i, b_j)` for every anchor row ``i`` and candidate row ``j``: ``(N, M)``."""
        self._check(a, b)
        pa = self.from_a(a).to(a.dtype)  # (N, 2D): [W_A a ; W_B a] + c
        pb = self.from_b(b).to(a.dtype)  # (M, 2D): [U_A b ; U_B b]
        d = self.dim
        rows = []
        for s in range(0, a.shape[0], self.block):
            pre = pa[s:s + self.block, None, :] + pb[None, :, :]  # (n, M, 2D)
            gate = torch.sigmoid(pre)
            za = gate[..., :d] * a[s:s + self.block, None, :]
            zb = gate[..., d:] * b[None, :, :]
            rows.append(self._cosine(za, zb))
        return torch.cat(rows, dim=0)

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        r""":math:`s(a_i, b_i)`, each row with its own partner: ``(N,)``."""
        self._check(a, b)
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"paired similarities need as many rows in a as in b, got {a.shape[0]} and {b.shape[0]}")
        gate = torch.sigmoid(self.from_a(a) + self.from_b(b)).to(a.dtype)
        return self._cosine(gate[:, :self.dim] * a, gate[:, self.dim:] * b)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.matrix(a, b)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, block={self.block}"
