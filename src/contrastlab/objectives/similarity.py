r"""Coordination functions: the similarity :math:`s(a, b)` a pairwise contrastive loss is built on.

A coordinated representation learns two towers :math:`f_A, f_B` and scores a pair with a coordination
function :math:`g(z_A, z_B)` (CMU MMML lecture 4.1): cosine similarity, or a kernel similarity — linear,
polynomial, exponential, RBF. Every pairwise objective (InfoNCE / CLIP, NT-Xent, NCE, DCL, VSE, triplet,
SupCon, and CMC through them) takes it as ``similarity=``; its logits are always :math:`s/\tau`.

``similarity=None`` (the default everywhere) is the objectives' own behaviour: the dot product of the
embeddings as the loss sees them, i.e. cosine similarity when the loss normalises (``normalize=True``) and
raw dot products when it does not. A kernel is applied to the embeddings *after* ``normalize``, so by
default an RBF kernel measures distances on the unit sphere.

References:
    Liang, Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 "Multimodal Representations",
    the coordination-function and kernel-function slides (``reference/cmu-mmml-lecture-4.1-representations.md``);
    Schölkopf, Smola, "Learning with Kernels", MIT Press 2002, chapter 2 (the polynomial and Gaussian
    kernels).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab.errors import did_you_mean

__all__ = ["KINDS", "Similarity", "SimilaritySpec", "parse_similarity", "resolve_similarity"]

#: The named similarities, each with its options and their defaults.
KINDS: dict[str, dict[str, Any]] = {
    "cosine": {},
    "dot": {},
    "linear": {},
    "polynomial": {"degree": 2, "c": 1.0},
    "exponential": {"sigma": 1.0},
    "rbf": {"sigma": 1.0},
}
_BILINEAR = ("cosine", "dot", "linear")
_OPTIONS = ("degree", "c", "sigma")


def _safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose gradient is 0, not ``inf``/NaN, where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def _check_option(kind: str, key: str, value: Any) -> int | float:
    where = f"similarity {kind!r}: option {key!r}"
    if key == "degree":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where} must be an integer >= 1, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    if key == "sigma" and not value > 0:
        raise ValueError(f"{where} must be > 0, got {value!r}")
    if key == "c" and value < 0:
        raise ValueError(f"{where} must be >= 0 (the polynomial kernel is positive definite for c >= 0), got {value!r}")
    return float(value)


@dataclass(frozen=True, repr=False)
class Similarity:
    r"""A coordination function :math:`s(a, b)` between embeddings: a named kind or a callable.

    The kinds (:data:`KINDS`), for rows :math:`a, b \in \mathbb{R}^D`:

    .. math::
        \text{cosine}: \frac{a^\top b}{\|a\|\,\|b\|}, \qquad
        \text{dot}, \text{linear}: a^\top b, \qquad
        \text{polynomial}: (a^\top b + c)^{p},

    .. math::
        \text{exponential}: \exp\Big(-\frac{\|a - b\|}{2\sigma^2}\Big), \qquad
        \text{rbf}: \exp\Big(-\frac{\|a - b\|^2}{2\sigma^2}\Big).

    ``cosine`` always normalises, whatever the loss's ``normalize``. ``linear`` is the linear kernel
    :math:`k(a, b) = a^\top b`, the same function as ``dot``, accepted under the name the lecture's list of
    kernels uses. ``polynomial`` has degree :math:`p` (``degree``, an integer :math:`\ge 1`) and offset
    :math:`c \ge 0`; ``rbf`` is the lecture's RBF kernel, ``exponential`` the same with the distance not
    squared (``sigma`` :math:`\sigma > 0` for both). ``bilinear`` is ``True`` for cosine, dot and linear,
    the similarities that are an inner product of (possibly normalised) embeddings.

    In :meth:`matrix` the squared distances come from :math:`\|a\|^2 + \|b\|^2 - 2a^\top b` (one matrix
    product), clamped at 0; :meth:`paired` and :meth:`per_anchor` use the differences :math:`a - b`. The
    exponential kernel's :math:`\|a - b\|` is a square root with gradient 0 (not NaN) where
    :math:`a = b`. Near :math:`a = b` the matrix form carries that identity's rounding: in float32 about
    :math:`10^{-7}\|a\|^2` in the squared distance, so about :math:`3 \cdot 10^{-4}\|a\|` in the exponential
    kernel's distance.

    With ``function`` set, the similarity is that callable ``function(a (N, D), b (M, D)) -> (N, M)`` (a
    learned coordination function, e.g. a gated one, an ``nn.Module`` whose parameters get gradients
    through the loss), or its ``matrix`` method when it has one; :meth:`paired` is ``function.paired(a, b)``
    when it has such a method, otherwise the diagonal of :meth:`matrix`; ``name`` is the function's
    ``name`` attribute, ``__name__`` or class name. Build one with :func:`parse_similarity`.
    A function need not be symmetric: the cross-view losses (InfoNCE / CLIP, NCE, VSE, triplet) call it with a
    row of ``z1`` first, and their second direction reads the same matrix transposed. NT-Xent, DCL and SupCon also
    compare rows within a view (their candidates are both views stacked), so they call it on mixed rows: an
    asymmetric function such as gated coordination does not fit them (training refuses the combination).

    References:
        CMU MMML lecture 4.1, "Coordination function" and "Kernel function" slides
        (``reference/cmu-mmml-lecture-4.1-representations.md``); Schölkopf, Smola, "Learning with
        Kernels", MIT Press 2002, section 2.3 (polynomial and Gaussian kernels).

    Args:
        name: one of :data:`KINDS`; with ``function``, the function's name (default: its ``__name__`` or
            class name).
        degree: polynomial only: :math:`p`, default 2.
        c: polynomial only: :math:`c`, default 1.0.
        sigma: exponential and rbf only: :math:`\sigma`, default 1.0.
        function: a callable ``(a, b) -> (N, M)`` (or an object with such a ``matrix`` method) instead of
            a named kind.

    Attributes:
        name: the kind (or the function's name).
        params: the kind's options with their values, e.g. ``{"sigma": 0.5}``.
        bilinear: whether :math:`s(a, b)` is an inner product of (normalised) embeddings.

    Raises:
        ValueError: for an unknown kind (with a did-you-mean), an option the kind does not take, or a bad
            value (each named in the message).

    Example:
        >>> rbf = Similarity("rbf", sigma=0.5)
        >>> rbf, rbf.bilinear
        (Similarity('rbf', sigma=0.5), False)
        >>> a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
        >>> rbf.matrix(a, a)                       # exp(-1 / (2 * 0.25)) = exp(-2) off the diagonal
        tensor([[1.0000, 0.1353],
                [0.1353, 1.0000]])
        >>> Similarity("polynomial", degree=3).paired(a, a)   # (a.a + 1)^3
        tensor([1., 8.])
    """

    name: str | None = None
    degree: int | None = None
    c: float | None = None
    sigma: float | None = None
    function: Callable[[Tensor, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in _OPTIONS if getattr(self, k) is not None}
        if self.function is not None:
            fn = self.function
            if not (callable(fn) or callable(getattr(fn, "matrix", None))):
                raise ValueError(f"similarity function must be callable or have a matrix method, got {fn!r}")
            if given:
                raise ValueError(f"a similarity function takes no options, got {sorted(given)}")
            if self.name is None:
                own = getattr(fn, "name", None)
                name = own if isinstance(own, str) else getattr(fn, "__name__", None) or type(fn).__name__
                object.__setattr__(self, "name", name)
            return
        if self.name not in KINDS:
            raise ValueError(f"unknown similarity {self.name!r}{did_you_mean(self.name, KINDS)}")
        defaults = KINDS[self.name]
        for key, value in given.items():
            if key not in defaults:
                takes = f"takes {', '.join(map(repr, defaults))}" if defaults else "takes no options"
                raise ValueError(f"similarity {self.name!r} {takes}, got {key}={value!r}")
        for key, default in defaults.items():
            object.__setattr__(self, key, _check_option(self.name, key, given.get(key, default)))

    @property
    def params(self) -> dict[str, int | float]:
        """The kind's options and their values (empty for cosine, dot, linear and functions)."""
        if self.function is not None:
            return {}
        return {key: getattr(self, key) for key in KINDS[self.name]}

    @property
    def bilinear(self) -> bool:
        """Whether :math:`s(a, b)` is an inner product of the (for cosine: normalised) embeddings."""
        return self.function is None and self.name in _BILINEAR

    def __repr__(self) -> str:
        if self.function is not None:
            return f"Similarity(function={self.name})"
        return "Similarity(" + ", ".join([repr(self.name), *(f"{k}={v!r}" for k, v in self.params.items())]) + ")"

    # ------------------------------------------------------------------ the three shapes of comparison

    def matrix(self, a: Tensor, b: Tensor) -> Tensor:
        r"""Similarities between every row of ``a`` and every row of ``b``: :math:`S_{ij} = s(a_i, b_j)`.

        Args:
            a: shape ``(N, D)``.
            b: shape ``(M, D)``.

        Returns:
            Shape ``(N, M)``.

        Raises:
            ValueError: if a similarity function returns something else than an ``(N, M)`` tensor.

        Example:
            >>> Similarity("cosine").matrix(torch.eye(2), 3 * torch.eye(2))
            tensor([[1., 0.],
                    [0., 1.]])
        """
        if self.function is not None:
            own = getattr(self.function, "matrix", None)
            out = own(a, b) if callable(own) else self.function(a, b)
            expected = (a.shape[0], b.shape[0])
            if not isinstance(out, Tensor) or tuple(out.shape) != expected:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"similarity function {self.name!r} must return shape {expected}, got {got}")
            return out
        if self.name == "cosine":
            return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
        products = a @ b.T
        if self.name in ("dot", "linear"):
            return products
        if self.name == "polynomial":
            return (products + self.c) ** self.degree
        squared = (a.square().sum(-1)[:, None] + b.square().sum(-1)[None, :] - 2 * products).clamp_min(0)
        return self._of_squared_distance(squared)

    def paired(self, a: Tensor, b: Tensor) -> Tensor:
        r"""The similarity of row :math:`i` of ``a`` with row :math:`i` of ``b``: :math:`s(a_i, b_i)`.

        For the named kinds the leading dimensions broadcast (``(N, 1, D)`` with ``(N, M, D)`` gives
        ``(N, M)``).

        Args:
            a: shape ``(N, D)``.
            b: shape ``(N, D)``.

        Returns:
            Shape ``(N,)``.

        Example:
            >>> Similarity("exponential", sigma=1.0).paired(torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]))
            tensor([0.0821])
        """
        if self.function is not None:
            own = getattr(self.function, "paired", None)
            return own(a, b) if callable(own) else self.matrix(a, b).diagonal()
        if self.name == "cosine":
            return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)
        if self.name in ("dot", "linear"):
            return (a * b).sum(-1)
        if self.name == "polynomial":
            return ((a * b).sum(-1) + self.c) ** self.degree
        return self._of_squared_distance((a - b).square().sum(-1))

    def per_anchor(self, a: Tensor, b: Tensor) -> Tensor:
        r"""Each anchor against its own candidates: :math:`S_{im} = s(a_i, b_{i,m})`.

        Used for per-anchor negatives (``negatives`` of shape ``(N, M, D)``). A function without a
        ``paired`` method is called once per anchor.

        Args:
            a: anchors, shape ``(N, D)``.
            b: candidates, shape ``(N, M, D)``.

        Returns:
            Shape ``(N, M)``.

        Example:
            >>> Similarity("dot").per_anchor(torch.ones(2, 3), torch.ones(2, 4, 3)).shape
            torch.Size([2, 4])
        """
        n, m, d = b.shape
        if self.function is not None:
            if callable(getattr(self.function, "paired", None)):
                return self.paired(a.repeat_interleave(m, dim=0), b.reshape(n * m, d)).reshape(n, m)
            return torch.cat([self.matrix(a[i : i + 1], b[i]) for i in range(n)])
        if self.name in _BILINEAR or self.name == "polynomial":
            if self.name == "cosine":
                a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
            products = torch.bmm(b, a.unsqueeze(-1)).squeeze(-1)
            return (products + self.c) ** self.degree if self.name == "polynomial" else products
        return self.paired(a.unsqueeze(1), b)

    def _of_squared_distance(self, squared: Tensor) -> Tensor:
        """The rbf / exponential kernel from squared distances (>= 0)."""
        scale = 2 * self.sigma**2
        return torch.exp(-squared / scale) if self.name == "rbf" else torch.exp(-_safe_sqrt(squared) / scale)


#: What ``similarity=`` accepts: a kind's name, a mapping ``{"name": ..., option: value}`` (YAML), a
#: :class:`Similarity`, or a callable ``(a (N, D), b (M, D)) -> (N, M)``.
SimilaritySpec = Union[str, Mapping[str, Any], Similarity, Callable[[Tensor, Tensor], Tensor]]

#: The objectives' default: dot products of the embeddings as the loss sees them (cosine after normalize).
DOT = Similarity("dot")


def parse_similarity(value: SimilaritySpec | None) -> Similarity | None:
    r"""The :class:`Similarity` that ``similarity=`` names; ``None`` stays ``None`` (the loss's own).

    Args:
        value: ``None``; a kind's name (``"cosine"``, ``"dot"``, ``"linear"``, ``"polynomial"``,
            ``"exponential"``, ``"rbf"``); a mapping with ``name`` and the kind's options, the YAML form
            ``{name: rbf, sigma: 0.5}``; a :class:`Similarity`; or any callable
            ``(a (N, D), b (M, D)) -> (N, M)`` such as a learned (``nn.Module``) coordination function, or
            an object with such a ``matrix(a, b)`` method (and optionally ``paired(a, b) -> (N,)``).

    Returns:
        A :class:`Similarity`, or ``None`` for ``None``.

    Raises:
        ValueError: naming the bad value: an unknown kind (with a did-you-mean), a mapping without ``name``,
            an unknown key or a bad option value, or a value of another type.

    Example:
        >>> parse_similarity({"name": "rbf", "sigma": 0.5})
        Similarity('rbf', sigma=0.5)
        >>> parse_similarity("polynomial")
        Similarity('polynomial', degree=2, c=1.0)
        >>> parse_similarity("rbg")
        Traceback (most recent call last):
        ValueError: unknown similarity 'rbg'; did you mean 'rbf'?
    """
    if value is None or isinstance(value, Similarity):
        return value
    if isinstance(value, str):
        return Similarity(value)
    if isinstance(value, Mapping):
        if "name" not in value:
            raise ValueError(f"a similarity mapping needs a 'name' (one of {', '.join(KINDS)}), got {dict(value)!r}")
        name = value["name"]
        if not isinstance(name, str):
            raise ValueError(f"similarity name must be a string, got {name!r}")
        if name not in KINDS:
            raise ValueError(f"unknown similarity {name!r}{did_you_mean(name, KINDS)}")
        options = {k: v for k, v in value.items() if k != "name"}
        for key, option in options.items():
            if key not in KINDS[name]:
                hint = did_you_mean(key, KINDS[name]) if KINDS[name] else "; it takes no options"
                raise ValueError(f"similarity {name!r}: unknown option {key!r} (= {option!r}){hint}")
        return Similarity(name, **options)
    if callable(value) or callable(getattr(value, "matrix", None)):
        return Similarity(function=value)
    raise ValueError(
        "similarity must be a name, a mapping {name: ..., option: value}, a Similarity or a callable "
        f"(a, b) -> (N, M), got {value!r}"
    )


def _repr_suffix(similarity: Similarity | None) -> str:
    """``", similarity=..."`` for a loss module's ``extra_repr``, or nothing for the default."""
    return "" if similarity is None else f", similarity={similarity!r}"


def resolve_similarity(value: SimilaritySpec | None) -> Similarity:
    """:func:`parse_similarity`, with ``None`` as the objectives' default: dot products (cosine after ``normalize``).

    Args:
        value: as :func:`parse_similarity`.

    Returns:
        A :class:`Similarity`; ``Similarity("dot")`` for ``None``.

    Raises:
        ValueError: as :func:`parse_similarity`.

    Example:
        >>> resolve_similarity(None), resolve_similarity("rbf")
        (Similarity('dot'), Similarity('rbf', sigma=1.0))
    """
    parsed = parse_similarity(value)
    return DOT if parsed is None else parsed
