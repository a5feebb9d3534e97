r"""Model-side pieces of a multimodal autoencoder: modality dropout and fusion of per-modality codes.

A multimodal autoencoder (CMU MMML lecture 4.1, "representation fusion") encodes each modality, *fuses* the
codes into one joint code, and decodes every modality from it. Trained only on complete pairs it may learn to
use one modality and ignore the other; dropping whole modalities at random during training (Ngiam et al.
2011 zero one modality's input) forces the joint code to be predictable from either, so at test time one
modality can stand in for a missing one ("hearing to see").

:class:`ModalityDropout` draws which modalities each item keeps; :class:`Fusion` fuses the kept codes and
ignores the rest *exactly*: a dropped code changes neither the fused value nor receives any gradient, even when
it holds NaN.

Example:
    >>> enc = nn.ModuleDict({"image": nn.Linear(12, 8), "audio": nn.Linear(5, 4)})
    >>> dec = nn.ModuleDict({"image": nn.Linear(6, 12), "audio": nn.Linear(6, 5)})
    >>> drop, fuse = ModalityDropout(p=0.5), Fusion({"image": 8, "audio": 4}, 6)
    >>> x = {"image": torch.randn(16, 12), "audio": torch.randn(16, 5)}
    >>> codes = {m: enc[m](x[m]) for m in x}
    >>> z = fuse(codes, present=drop(codes))
    >>> recons = {m: dec[m](z) for m in x}  # then multimodal_reconstruction(recons, x)
    >>> z.shape
    torch.Size([16, 6])
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["Fusion", "ModalityDropout"]

_MODES = ("mean", "concat")


def _check_codes(codes: Mapping[str, Tensor]) -> int:
    """Every value a tensor ``(N, ...)`` with one ``N``; returns ``N``."""
    if not isinstance(codes, Mapping) or not codes:
        raise ValueError(f"codes must be a non-empty mapping modality -> tensor (N, D), got {type(codes).__name__}")
    n = None
    for m, c in codes.items():
        if not isinstance(c, Tensor) or c.dim() < 1:
            raise ValueError(f"code of modality {m!r} must be a tensor with a batch dimension (N, ...), got {c!r}")
        if n is not None and c.shape[0] != n[1]:
            raise ValueError(
                f"every modality must have the same batch size, got {n[1]} for {n[0]!r} and {c.shape[0]} for {m!r}"
            )
        n = n or (m, c.shape[0])
    return n[1]


def _keep(mask: Tensor, h: Tensor) -> Tensor:
    """Rows of ``h`` where ``mask`` holds, exact zeros elsewhere (no value and no gradient from dropped rows)."""
    return torch.where(mask[:, None], h, torch.zeros((), dtype=h.dtype, device=h.device))


class ModalityDropout(nn.Module):
    r"""Drop whole modalities per item during training, never all of an item's modalities.

    In training mode each (item, modality) is dropped independently with probability :math:`p`; an item that
    would lose every modality keeps one, chosen uniformly at random. With :math:`M` modalities the chance that
    a given modality is dropped is therefore :math:`p - p^M / M` (``p=1`` keeps exactly one modality per item).
    In eval mode, and with a single modality, nothing is dropped. The module returns masks; apply them with
    :class:`Fusion` (``present=``).

    Args:
        p: drop probability, :math:`0 \le p \le 1`.

    Raises:
        ValueError: if ``p`` is not a number in ``[0, 1]``.

    References:
        Ngiam et al., "Multimodal Deep Learning", ICML 2011 (training with one modality zeroed).

    Example:
        >>> drop = ModalityDropout(p=0.5)
        >>> g = torch.Generator().manual_seed(0)
        >>> masks = drop({"image": torch.randn(4, 8), "audio": torch.randn(4, 3)}, generator=g)
        >>> bool((masks["image"] | masks["audio"]).all())
        True
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p <= 1.0):
            raise ValueError(f"p must be a number in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(
        self, codes: Mapping[str, Tensor], *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Which modalities each item keeps.

        Args:
            codes: modality name -> ``(N, ...)`` tensor (inputs or codes; only ``N`` and the device are read).
            generator: the random source (on the codes' device); ``None`` uses the global one.

        Returns:
            modality name -> ``(N,)`` boolean mask, ``True`` where the modality is kept.

        Raises:
            ValueError: if ``codes`` is empty or the batch sizes differ.
        """
        n = _check_codes(codes)
        names = list(codes)
        device = next(iter(codes.values())).device
        keep = torch.ones(n, len(names), dtype=torch.bool, device=device)
        if self.training and len(names) > 1 and self.p > 0.0:
            keep = torch.rand(n, len(names), generator=generator, device=device) >= self.p
            rescue = torch.randint(len(names), (n,), generator=generator, device=device)
            none_kept = ~keep.any(dim=1)
            keep[none_kept, rescue[none_kept]] = True
        return {m: keep[:, j] for j, m in enumerate(names)}

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Fusion(nn.Module):
    r"""Fuse per-modality codes into one joint code, ignoring dropped modalities.

    With :math:`P_i` the modalities present for item :math:`i`:

    * ``mode="mean"``: :math:`z_i = \frac{1}{|P_i|} \sum_{m \in P_i} (W_m h_{m,i} + b_m)`, each modality with its
      own linear map to ``out_dim``; a mean over what is present keeps the scale independent of how many
      modalities are missing.
    * ``mode="concat"``: :math:`z_i = W [\tilde h_{1,i}; \dots; \tilde h_{M,i}] + b` with
      :math:`\tilde h_{m,i} = h_{m,i}` if :math:`m \in P_i` and :math:`0` otherwise (zero imputation).

    Dropped codes are replaced with ``torch.where``, not multiplied by zero, so they have no effect on the value
    (even if NaN) and receive exactly zero gradient.

    Args:
        dims: modality name -> code size :math:`D_m \geq 1` (the order fixes the concatenation order).
        out_dim: the joint code's size.
        mode: ``"mean"`` or ``"concat"``.

    Raises:
        ValueError: on empty ``dims``, a size < 1, or an unknown ``mode``.

    References:
        Ngiam et al., "Multimodal Deep Learning", ICML 2011. Liang, Zadeh, Morency, CMU 11-777 Multimodal Machine
        Learning, lecture 4.1 (representation fusion).

    Example:
        >>> fuse = Fusion({"image": 8, "audio": 4}, 6, mode="concat")
        >>> codes = {"image": torch.randn(3, 8), "audio": torch.randn(3, 4)}
        >>> fuse(codes, present={"image": torch.tensor([True, True, False]),
        ...                      "audio": torch.tensor([True, False, True])}).shape
        torch.Size([3, 6])
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, mode: str = "mean") -> None:
        super().__init__()
        if not isinstance(dims, Mapping) or not dims:
            raise ValueError(f"dims must be a non-empty mapping modality -> code size, got {dims!r}")
        for m, d in dims.items():
            if not isinstance(m, str) or not m or "." in m:
                raise ValueError(f"modality names must be non-empty strings without '.', got {m!r}")
            if isinstance(d, bool) or not isinstance(d, int) or d < 1:
                raise ValueError(f"dims[{m!r}] must be an integer >= 1, got {d!r}")
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be an integer >= 1, got {out_dim!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}, got {mode!r}")
        self.dims = dict(dims)
        self.out_dim = out_dim
        self.mode = mode
        if mode == "mean":
            self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        else:
            self.proj = nn.Linear(sum(self.dims.values()), out_dim)

    def _check(self, codes: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> int:
        n = _check_codes(codes)
        if set(codes) != set(self.dims):
            raise ValueError(f"codes must have the modalities {sorted(self.dims)}, got {sorted(codes)}")
        for m, d in self.dims.items():
            if codes[m].shape != (n, d):
                raise ValueError(
                    f"code of modality {m!r} must have shape (N, {d}) = ({n}, {d}), got {tuple(codes[m].shape)}"
                )
        if present is None:
            return n
        if not isinstance(present, Mapping) or set(present) != set(self.dims):
            got = sorted(present) if isinstance(present, Mapping) else type(present).__name__
            raise ValueError(f"present must map the modalities {sorted(self.dims)} to (N,) masks, got {got}")
        for m, mask in present.items():
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (n,):
                got = (tuple(mask.shape), mask.dtype) if isinstance(mask, Tensor) else type(mask).__name__
                raise ValueError(f"present[{m!r}] must be a boolean tensor of shape ({n},), got {got}")
        if not bool(torch.stack([present[m] for m in self.dims]).any(dim=0).all()):
            raise ValueError("every item needs at least one present modality, got an item with none")
        return n

    def forward(self, codes: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Fuse the codes.

        Args:
            codes: modality name -> ``(N, D_m)`` code.
            present: modality name -> ``(N,)`` boolean mask (from :class:`ModalityDropout`); ``None``: all
                present.

        Returns:
            ``(N, out_dim)`` joint code.

        Raises:
            ValueError: on missing or extra modalities, wrong shapes, non-boolean masks, or an item with no
                present modality.
        """
        self._check(codes, present)
        parts = [codes[m] for m in self.dims]
        if present is not None:  # mask the inputs themselves, so a dropped NaN reaches no weight gradient either
            parts = [_keep(present[m], h) for m, h in zip(self.dims, parts)]
        if self.mode == "concat":
            return self.proj(torch.cat(parts, dim=1))
        projected = [self.proj[m](h) for m, h in zip(self.dims, parts)]
        if present is None:
            return torch.stack(projected).mean(dim=0)
        total = sum(_keep(present[m], h) for m, h in zip(self.dims, projected))
        count = torch.stack([present[m] for m in self.dims]).sum(dim=0).to(total.dtype)
        return total / count[:, None]

    def extra_repr(self) -> str:
        return f"dims={self.dims}, out_dim={self.out_dim}, mode={self.mode!r}"
