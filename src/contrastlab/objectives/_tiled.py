r"""Tiled InfoNCE and NT-Xent: the exact losses without ever holding the full logit matrix.

The naive losses build the logits :math:`S = XY^\top/\tau` (``(N, N)``, or ``(2N, 2N)`` for NT-Xent) and keep
several copies of it for autograd, so memory grows as :math:`N^2` and most of the time goes to passes over that
matrix rather than to the matrix product. Here :math:`S` is cut into square tiles of ``block_size`` rows and
columns, and only one tile (plus a scratch copy) exists at a time:

* **forward** — every tile updates running log-sum-exps (a running maximum :math:`m` and a sum rescaled when
  :math:`m` grows), for the rows and, when needed, for the columns: after one sweep each row :math:`i` has
  :math:`\ell_i = \log\sum_j e^{S_{ij}}` and each column :math:`c_j = \log\sum_i e^{S_{ij}}`;
* **backward** — every tile is recomputed and turned into softmax probabilities from the saved
  log-sum-exps, :math:`P_{ij} = e^{S_{ij}-\ell_i}` and :math:`Q_{ij} = e^{S_{ij}-c_j}`; with
  :math:`G = P` (one-way) or :math:`G = P + Q` (two-way) the gradients are
  :math:`\partial_X \propto (G - wI)\,Y/\tau` and :math:`\partial_Y \propto (G - wI)^\top X/\tau` (:math:`w` the
  number of directions), accumulated tile by tile.

NT-Xent's logits :math:`S = ZZ^\top/\tau` are symmetric, so only the tiles on and above the diagonal are
computed: tile :math:`(r, c)` serves rows :math:`r` directly and rows :math:`c` through its transpose, and in
the backward pass :math:`G = P + P^\top` is symmetric too. Forward plus backward then cost two full-size
matrix products (:math:`2 \cdot (2N)^2 D` multiply-adds) instead of the naive three.

The temperature gradient needs no extra pass: the loss depends on the inputs only through :math:`S`, which is
homogeneous in :math:`X` and :math:`1/\tau`, so :math:`\tau\,\partial_\tau\mathcal{L} =
-\langle \partial_X\mathcal{L}, X\rangle = -\langle \partial_Y\mathcal{L}, Y\rangle` (and
:math:`-\tfrac12\langle\partial_Z\mathcal{L}, Z\rangle` for NT-Xent, where :math:`Z` enters twice).

One-way InfoNCE needs no column statistics, so when a backward pass will follow it forms its gradients in the
forward sweep from a strip of :math:`B` complete rows (no recomputation: the naive flop count).

The kernels work in base 2 (inputs scaled by :math:`\log_2 e/\tau`, so :math:`e^{S} = 2^{S_2}`: ``exp2``
is several times cheaper than ``exp`` on CPUs). When a Cauchy-Schwarz bound shows every logit small
(:data:`_NO_SHIFT_LIMIT`), a tile is exponentiated as it is and needs no running maximum: one exponential per
tile serves rows and columns, forward and backward. Otherwise the running maxima above are kept.

Memory beyond the inputs and their gradients is :math:`O(N + B^2)` for block size :math:`B` (one-way InfoNCE
with gradients: :math:`O(NB)`); the results equal the naive losses up to floating-point rounding.
Half-precision inputs are computed in float32 (products, log-sum-exps and gradient sums); only the results
are rounded back. Everything is created on the inputs' device, and the one host synchronisation of a call
is reading that bound, before the loops: the kernels run unchanged on CUDA (:func:`block_rows`).

Only bilinear similarities are tiled: cosine, dot and linear (:math:`S = XY^\top/\tau` of the normalised or
given embeddings). The backward pass above — and the temperature gradient, which relies on :math:`S` being
homogeneous in :math:`X` — is written for :math:`\partial S/\partial X = Y/\tau`; a kernel such as RBF has
another Jacobian, so the losses fall back to the naive path for it (``impl="auto"``) or refuse it
(``impl="tiled"``, :func:`check_tiled_similarity`).

References:
    Milakov, Gimelshein, "Online normalizer calculation for softmax", arXiv:1805.02867 (2018) — the running
    log-sum-exp; Dao et al., "FlashAttention", NeurIPS 2022 — tiling with recomputation in the backward pass;
    Gao, Zhang, Han, Callan, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"
    (GradCache), RepL4NLP 2021 — why contrastive batches are memory-bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

import torch.nn.functional as F

from contrastlab.objectives._checks import check_pair
from contrastlab.objectives.similarity import Similarity, SimilaritySpec, resolve_similarity
from contrastlab.objectives.temperature import check_temperature

__all__ = [
    "CUDA_BLOCK_SIZE",
    "DEFAULT_BLOCK_SIZE",
    "block_rows",
    "check_tiled_similarity",
    "tiled_info_nce",
    "tiled_nt_xent",
]

#: Rows (and columns) of one tile on the CPU when ``block_size=None``: a 1024 x 1024 float32 tile is 4 MiB (two
#: stay in a shared L3 cache); measured within a few per cent of the fastest of 256-2048 for every loss, with
#: a quarter of the operators of 512 rows, which matters when threads outnumber free cores (docs/PERFORMANCE.md).
DEFAULT_BLOCK_SIZE = 1024

#: Tile rows on a CUDA device when ``block_size=None``: a 4096 x 4096 tile is ~4 GFLOP per product at D = 128
#: (tens of microseconds on a large GPU), enough to hide the ~10 operator launches a tile costs from Python,
#: and two float32 tiles (128 MiB) are small next to such a device's memory.
CUDA_BLOCK_SIZE = 4096

_ONE_WAY, _SYMMETRIC, _NT_XENT = "one_way", "symmetric", "nt_xent"
_LOG2E, _LN2 = 1.0 / math.log(2.0), math.log(2.0)

#: Largest Cauchy-Schwarz bound on |logit| (base 2) for which tiles are exponentiated without a shift: the
#: terms stay within 2**(+-64) (float32; 2**(+-960) for float64), so row sums neither overflow nor fall into
#: subnormals. Above it the kernels keep running maxima (online softmax), at two more passes per tile.
_NO_SHIFT_LIMIT = {torch.float32: 64.0, torch.float64: 960.0}


def check_tiled_similarity(similarity: SimilaritySpec | None) -> Similarity:
    """The similarity, if the tiled kernels can compute it (cosine, dot, linear); ``ValueError`` otherwise.

    Args:
        similarity: as ``similarity=`` of the losses (``None``: dot products).

    Returns:
        The parsed :class:`~contrastlab.objectives.similarity.Similarity`.

    Raises:
        ValueError: for a similarity that is not bilinear, saying why.

    Example:
        >>> check_tiled_similarity("cosine")
        Similarity('cosine')
    """
    sim = resolve_similarity(similarity)
    if not sim.bilinear:
        raise ValueError(
            f"impl='tiled' takes the bilinear similarities cosine, dot and linear only, got {sim!r}: its backward "
            "pass is written for logits X Y^T / tau; use impl='naive' (or 'auto', which falls back to it)"
        )
    return sim


def block_rows(device: torch.device | str, n: int, d: int, dtype: torch.dtype) -> int:
    """Rows (and columns) per tile for ``n`` rows of ``d`` features: what ``block_size=None`` uses.

    On the CPU the tile should stay in cache while its elementwise passes run: :data:`DEFAULT_BLOCK_SIZE`
    float32 rows, the same bytes for other dtypes (half the rows for float64). On a CUDA device it should be
    large enough that the GPU, not Python's operator launches, sets the pace: :data:`CUDA_BLOCK_SIZE`. Never
    more than ``n``. The feature count does not change the choice: wider features only make the products,
    which block for the cache on their own, a larger share of the work.

    Args:
        device: where the tiles live.
        n: rows of the logit matrix (``N``, or ``2N`` for NT-Xent).
        d: features per row (taken so that callers pass the whole shape; see above).
        dtype: the dtype the tiles are computed in.

    Returns:
        The block size, between 1 and ``n``.

    Example:
        >>> block_rows("cpu", 10_000, 128, torch.float32), block_rows("cuda", 10_000, 128, torch.float32)
        (1024, 4096)
    """
    if torch.device(device).type == "cuda":
        block = CUDA_BLOCK_SIZE
    else:
        block = DEFAULT_BLOCK_SIZE * 4 // max(4, dtype.itemsize)
    return max(1, min(block, n))


def _check_block_size(block_size: int | None, rows: int, like: Tensor) -> int:
    if block_size is None:
        return block_rows(like.device, rows, like.shape[1], _compute_dtype(like.dtype))
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1 or None, got {block_size!r}")
    return block_size


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _no_shift(xs: Tensor, y: Tensor) -> bool:
    """Whether every base-2 logit ``xs_i . y_j`` is bounded by :data:`_NO_SHIFT_LIMIT` (Cauchy-Schwarz).

    The one host synchronisation of a forward pass (the loops that follow launch work only).
    """
    bound = torch.linalg.vector_norm(xs, dim=1).amax() * torch.linalg.vector_norm(y, dim=1).amax()
    return bool(bound <= _NO_SHIFT_LIMIT[xs.dtype])


def _tiles(n: int, block: int, upper: bool):
    """``(r0, r1, c0, c1)`` for every tile of an ``(n, n)`` matrix; only ``c0 >= r0`` when ``upper``."""
    starts = range(0, n, block)
    for r0 in starts:
        for c0 in starts:
            if not upper or c0 >= r0:
                yield r0, min(r0 + block, n), c0, min(c0 + block, n)


class _Scratch:
    """Two reusable ``block x block`` buffers, handed out as contiguous ``(rows, cols)`` views."""

    def __init__(self, block: int, n: int, like: Tensor) -> None:
        size = min(block, n) ** 2
        self._a = torch.empty(size, dtype=like.dtype, device=like.device)
        self._b = torch.empty(size, dtype=like.dtype, device=like.device)

    def views(self, rows: int, cols: int) -> tuple[Tensor, Tensor]:
        k = rows * cols
        return self._a[:k].view(rows, cols), self._b[:k].view(rows, cols)


def _tile(xs: Tensor, y: Tensor, tile: tuple[int, int, int, int], out: Tensor, no_shift: bool, mask: bool) -> Tensor:
    """Tile ``S2 = xs @ y.T`` into ``out``: as ``2 ** S2`` when ``no_shift`` (masked entries 0), else raw (-inf)."""
    r0, r1, c0, c1 = tile
    torch.mm(xs[r0:r1], y[c0:c1].T, out=out)
    if no_shift:
        out.exp2_()
    if mask:  # NT-Xent's diagonal: an anchor is not its own candidate
        out.fill_diagonal_(0.0 if no_shift else float("-inf"))
    return out


class _LogSumExp2:
    """Running base-2 log-sum-exps of ``n`` slices of a matrix seen one tile at a time.

    With ``no_shift`` the tiles arrive exponentiated and only their sums are kept; otherwise a running maximum
    and a sum rescaled whenever it grows (online softmax) keep every term at most 1.
    """

    def __init__(self, n: int, like: Tensor, no_shift: bool) -> None:
        self.sum = torch.zeros(n, dtype=like.dtype, device=like.device)
        self.max = None if no_shift else torch.full((n,), float("-inf"), dtype=like.dtype, device=like.device)

    def fold(self, lo: int, hi: int, tile: Tensor, dim: int, work: Tensor) -> None:
        """Fold slices ``lo:hi`` of ``tile`` (its rows for ``dim=1``, columns for ``dim=0``), in place."""
        if self.max is None:
            self.sum[lo:hi].add_(tile.sum(dim))
            return
        run_max, run_sum = self.max[lo:hi], self.sum[lo:hi]
        new_max = torch.maximum(run_max, tile.amax(dim))
        # A slice whose entries are all masked so far has max -inf: shift by 0 there to avoid inf - inf.
        shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
        torch.sub(tile, shift.unsqueeze(dim), out=work).exp2_()
        run_sum.mul_(torch.exp2(run_max - shift)).add_(work.sum(dim))
        run_max.copy_(new_max)

    def result(self) -> Tensor:
        lse = self.sum.log2()
        return lse if self.max is None else lse.add_(self.max)


def _forward_lse(xs: Tensor, y: Tensor, mode: str, block: int, no_shift: bool) -> tuple[Tensor, Tensor | None]:
    """Base-2 row log-sum-exps of ``S2 = xs @ y.T`` (and column ones when two-way), one tile at a time."""
    n = xs.shape[0]
    scratch = _Scratch(block, n, xs)
    rows = _LogSumExp2(n, xs, no_shift)
    cols = _LogSumExp2(n, xs, no_shift) if mode == _SYMMETRIC else None
    for tile in _tiles(n, block, upper=mode == _NT_XENT):
        r0, r1, c0, c1 = tile
        on_diagonal = mode == _NT_XENT and r0 == c0
        s, work = scratch.views(r1 - r0, c1 - c0)
        _tile(xs, y, tile, s, no_shift, on_diagonal)
        rows.fold(r0, r1, s, 1, work)
        if cols is not None:
            cols.fold(c0, c1, s, 0, work)
        elif mode == _NT_XENT and not on_diagonal:  # the transposed tile holds rows c0:c1
            rows.fold(c0, c1, s, 0, work)
    return rows.result(), None if cols is None else cols.result()


def _recomputed_sums(
    x: Tensor, xs: Tensor, y: Tensor, row_lse: Tensor, col_lse: Tensor, nt_xent: bool, block: int, no_shift: bool
) -> tuple[Tensor, Tensor]:
    """``G @ y`` and ``G.T @ x`` for ``G = P`` (from ``row_lse``) ``+ Q`` (from ``col_lse``), tile by tile.

    For NT-Xent (``y is x``, upper tiles only) pass the same log-sum-exps twice: ``G = P + P^T``. Without a
    shift one exponential serves both: ``G_ij = 2**S2_ij * (2**-row_lse_i + 2**-col_lse_j)``.
    """
    n = xs.shape[0]
    scratch = _Scratch(block, n, xs)
    gx = torch.zeros_like(x)
    gy = gx if nt_xent else torch.zeros_like(y)
    if no_shift:
        row_w, col_w = torch.exp2(-row_lse), torch.exp2(-col_lse)
    for tile in _tiles(n, block, upper=nt_xent):
        r0, r1, c0, c1 = tile
        on_diagonal = nt_xent and r0 == c0
        s, g = scratch.views(r1 - r0, c1 - c0)
        _tile(xs, y, tile, s, no_shift, on_diagonal)
        if no_shift:
            torch.add(row_w[r0:r1, None], col_w[None, c0:c1], out=g).mul_(s)
        else:
            torch.sub(s, row_lse[r0:r1, None], out=g).exp2_()
            g.add_(s.sub_(col_lse[None, c0:c1]).exp2_())
        gx[r0:r1].addmm_(g, y[c0:c1])
        if not on_diagonal:  # on NT-Xent's diagonal tiles g is already P + P^T
            gy[c0:c1].addmm_(g.T, x[r0:r1])
    return gx, gy


def _fused_one_way(x: Tensor, xs: Tensor, y: Tensor, block: int, no_shift: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One-way InfoNCE's base-2 row log-sum-exps with ``P @ y`` and ``P.T @ x`` in one sweep (no recomputation).

    A strip of ``block`` full rows of ``2 ** (S2 - shift)`` is kept (memory ``block * N``): once the strip's
    log-sum-exps are known, each tile becomes probabilities by rescaling the small operands. Without a shift
    ``P = 2 ** S2 / rowsum`` and ``P @ y`` is summed while the tile is still in cache.
    """
    n = x.shape[0]
    b_max = min(block, n)
    strip = torch.empty(b_max * n, dtype=x.dtype, device=x.device)
    row_lse = torch.empty(n, dtype=x.dtype, device=x.device)
    gx, gy = torch.zeros_like(x), torch.zeros_like(y)
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        b = r1 - r0
        rows = _LogSumExp2(b, x, no_shift)
        tiles = []
        for c0 in range(0, n, block):
            c1 = min(c0 + block, n)
            e = _tile(xs, y, (r0, r1, c0, c1), strip[b * c0 : b * c1].view(b, c1 - c0), no_shift, False)
            if no_shift:
                rows.sum.add_(e.sum(1))
                gx[r0:r1].addmm_(e, y[c0:c1])
            else:
                shift = torch.maximum(rows.max, e.amax(1))
                e.sub_(shift[:, None]).exp2_()
                rows.sum.mul_(torch.exp2(rows.max - shift)).add_(e.sum(1))
                rows.max = shift
            tiles.append((c0, c1, e, rows.max))
        lse = row_lse[r0:r1]
        lse.copy_(rows.result())
        if no_shift:
            weight = rows.sum.reciprocal().unsqueeze(1)  # P = e * weight, row by row
            gx[r0:r1].mul_(weight)
            xw = x[r0:r1] * weight
            for c0, c1, e, _ in tiles:
                gy[c0:c1].addmm_(e.T, xw)
        else:
            for c0, c1, e, shift in tiles:
                weight = torch.exp2(shift - lse).unsqueeze(1)
                gx[r0:r1].addcmul_(e @ y[c0:c1], weight)
                gy[c0:c1].addmm_(e.T, x[r0:r1] * weight)
    return row_lse, gx, gy


def _finish_gradients(gx: Tensor, gy: Tensor | None, x: Tensor, y: Tensor | None, tau: Tensor, mode: str):
    """From the probability sums to the gradients of the mean loss w.r.t. ``x``, ``y`` and ``tau``, in place."""
    n = x.shape[0]
    if mode == _NT_XENT:  # dL/dS = (P - Pos) / 2N, entering as S and S^T: dZ = ((P + P^T) Z - 2 Z_pos) / (2N tau)
        gx.sub_(x.roll(n // 2, dims=0), alpha=2).div_(n * tau)
        return gx, None, -(gx * x).sum() / (2 * tau)
    ways = 2 if mode == _SYMMETRIC else 1
    gx.sub_(y, alpha=ways).div_(ways * n * tau)
    gy.sub_(x, alpha=ways).div_(ways * n * tau)
    return gx, gy, -((gx * x).sum() + (gy * y).sum()) / (2 * tau)


class _TiledLoss(torch.autograd.Function):
    """Mean InfoNCE / NT-Xent from tiles; inputs ``x, y`` in the compute dtype, ``y is None`` for NT-Xent.

    When a backward pass will follow (``fused``), one-way InfoNCE forms its gradients in the forward sweep
    and saves them (the gradient of a scalar loss is the saved one times the upstream scalar): one matrix
    product per tile fewer than recomputing. The symmetric loss and NT-Xent save log-sum-exps and recompute
    their tiles in backward (their softmax over columns needs every row first).
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor | None, temperature: Tensor, mode: str, block: int, fused: bool) -> Tensor:
        tau = temperature.to(x.dtype)
        xs = x * (_LOG2E / tau)  # base-2 logits: 2 ** (xs @ y.T) = exp(x @ y.T / tau), and exp2 is the cheaper
        other = x if mode == _NT_XENT else y
        no_shift = _no_shift(xs, other)
        ctx.mode, ctx.block, ctx.no_shift, ctx.temperature_dtype = mode, block, no_shift, temperature.dtype
        ctx.fused = fused and mode == _ONE_WAY
        col_lse = None
        if ctx.fused:
            row_lse, gx, gy = _fused_one_way(x, xs, y, block, no_shift)
        else:
            row_lse, col_lse = _forward_lse(xs, other, mode, block, no_shift)
        positive = (xs * (x.roll(x.shape[0] // 2, dims=0) if mode == _NT_XENT else y)).sum(1)
        loss = (row_lse - positive).mean()
        if mode == _SYMMETRIC:
            loss = (loss + (col_lse - positive).mean()) / 2
        if ctx.fused:
            ctx.save_for_backward(*_finish_gradients(gx, gy, x, y, tau, mode))
        else:
            ctx.save_for_backward(x, y, temperature, row_lse, col_lse)
        return loss * _LN2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor):
        if ctx.fused:
            gx, gy, grad_tau = ctx.saved_tensors
        else:
            x, y, temperature, row_lse, col_lse = ctx.saved_tensors
            tau = temperature.to(x.dtype)
            nt_xent = ctx.mode == _NT_XENT
            # NT-Xent's column log-sum-exps are its row log-sum-exps (S is symmetric): G = P + P^T.
            sums = _recomputed_sums(x, x * (_LOG2E / tau), x if nt_xent else y, row_lse,
                                    row_lse if nt_xent else col_lse, nt_xent, ctx.block, ctx.no_shift)
            gx, gy, grad_tau = _finish_gradients(*sums, x, y, tau, ctx.mode)
        gx = gx * grad_loss
        gy = None if gy is None else gy * grad_loss
        grad_tau = (grad_tau * grad_loss).to(ctx.temperature_dtype) if ctx.needs_input_grad[2] else None
        return gx, gy, grad_tau, None, None, None


def _dtype_name(dtype: torch.dtype) -> str:
    """How torch's matrix product names a dtype in its error (``double``, ``float``, ``c10::BFloat16``)."""
    return {torch.float64: "double", torch.float32: "float", torch.float16: "c10::Half",
            torch.bfloat16: "c10::BFloat16"}.get(dtype, str(dtype).removeprefix("torch."))


def _prepare(z1: Tensor, z2: Tensor, temperature: float | Tensor, block_size: int | None, similarity, rows: int,
             same_dtype_promotes: bool = False):
    check_pair(z1, z2, min_batch=2)
    if z1.dtype != z2.dtype and not same_dtype_promotes:  # the naive InfoNCE's matrix product refuses this: the same error
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {_dtype_name(z1.dtype)} != {_dtype_name(z2.dtype)}")
    temperature = check_temperature(temperature)
    block = _check_block_size(block_size, rows, z1)
    if check_tiled_similarity(similarity).name == "cosine":  # the dot products of the normalised inputs
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    dtype = _compute_dtype(torch.promote_types(z1.dtype, z2.dtype))
    if not isinstance(temperature, Tensor):
        temperature = torch.full((), temperature, dtype=dtype, device=z1.device)  # a fill: no host copy
    return z1.to(dtype), z2.to(dtype), temperature, block


def tiled_info_nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor,
    symmetric: bool = False,
    block_size: int | None = None,
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""InfoNCE with in-batch negatives, computed in tiles (memory :math:`O(NB)` at most, not :math:`O(N^2)`).

    With :math:`S_{ij} = z^{(1)}_i \cdot z^{(2)}_j / \tau`,

    .. math::
        \mathcal{L}_{1\to2} = \frac{1}{N}\sum_{i=1}^{N}\Big(\log\sum_{j=1}^{N} e^{S_{ij}} - S_{ii}\Big),
        \qquad
        \mathcal{L}_{\text{sym}} = \tfrac12\Big(\mathcal{L}_{1\to2}
            + \frac{1}{N}\sum_{j=1}^{N}\Big(\log\sum_{i=1}^{N} e^{S_{ij}} - S_{jj}\Big)\Big).

    Equal to the naive loss (``cross_entropy`` over the full logits) in value and gradient; the inputs are used
    as given (callers normalise them first for cosine similarity, or pass ``similarity="cosine"``).

    References:
        van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding",
        arXiv:1807.03748 (2018); Radford et al. (CLIP), ICML 2021, for the symmetric form.

    Args:
        z1: anchors, shape ``(N, D)``, any floating dtype.
        z2: positives, shape ``(N, D)``; row ``i`` is the positive of anchor ``i``, the other rows its negatives.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor (its gradient is computed).
        symmetric: also the :math:`2\to1` direction (CLIP), averaged with :math:`1\to2`.
        block_size: rows and columns per tile, ``None`` for :func:`block_rows` of the device.
        similarity: ``None``, ``"dot"`` or ``"linear"`` (the inputs' dot products) or ``"cosine"``
            (normalised first). Other kernels are refused: the backward pass is written for bilinear logits.

    Returns:
        The mean loss, a 0-dim tensor of ``z1``'s dtype.

    Raises:
        ValueError: if the shapes differ or are not ``(N, D)`` with ``N >= 2``, the temperature is not
            positive, ``block_size`` is not an integer >= 1, or the similarity is not bilinear.

    Example:
        >>> z = torch.eye(4)
        >>> round(float(tiled_info_nce(z, z, temperature=1.0, block_size=3)), 4)   # log(1 + 3/e)
        0.7437
    """
    x, y, temperature, block = _prepare(z1, z2, temperature, block_size, similarity, z1.shape[0])
    # One-way with a backward pass to come: form the gradients in the forward sweep (no recomputation).
    fused = not symmetric and torch.is_grad_enabled() and any(t.requires_grad for t in (x, y, temperature))
    loss = _TiledLoss.apply(x, y, temperature, _SYMMETRIC if symmetric else _ONE_WAY, block, fused)
    return loss.to(z1.dtype)


def tiled_nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor,
    block_size: int | None = None,
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""SimCLR's NT-Xent computed in tiles of the symmetric :math:`2N \times 2N` logits (upper triangle only).

    With :math:`u = [z^{(1)}; z^{(2)}]`, :math:`S_{kl} = u_k \cdot u_l / \tau` and :math:`p(k) = k \pm N`,

    .. math::
        \mathcal{L} = \frac{1}{2N}\sum_{k=1}^{2N}\Big(\log\sum_{l \ne k} e^{S_{kl}} - S_{k\,p(k)}\Big).

    Equal to the naive loss in value and gradient; the inputs are used as given.

    References:
        Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
        Representations" (SimCLR), ICML 2020, arXiv:2002.05709, equation (1).

    Args:
        z1: first view's embeddings, shape ``(N, D)``, any floating dtype.
        z2: second view's embeddings, shape ``(N, D)``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor (its gradient is computed).
        block_size: rows and columns per tile of the ``(2N, 2N)`` logits, ``None`` for :func:`block_rows`
            of the device.
        similarity: ``None``, ``"dot"``, ``"linear"`` or ``"cosine"``, as :func:`tiled_info_nce`.

    Returns:
        The mean over the :math:`2N` anchors, a 0-dim tensor of ``z1``'s dtype.

    Raises:
        ValueError: if the shapes differ or are not ``(N, D)`` with ``N >= 2``, the temperature is not
            positive, ``block_size`` is not an integer >= 1, or the similarity is not bilinear.

    Example:
        >>> z = torch.ones(3, 8)
        >>> round(float(tiled_nt_xent(z, z, temperature=0.5, block_size=4)), 4)   # all equal: log(2N - 1)
        1.6094
    """
    x, y, temperature, block = _prepare(z1, z2, temperature, block_size, similarity, 2 * z1.shape[0],
                                        same_dtype_promotes=True)  # as the naive loss's concatenation does
    loss = _TiledLoss.apply(torch.cat([x, y]), None, temperature, _NT_XENT, block, False)
    return loss.to(torch.promote_types(z1.dtype, z2.dtype))
