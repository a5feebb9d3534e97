r"""Decoupled contrastive learning (DCL): NT-Xent without the positive pair in the denominator.

In NT-Xent the gradient of every negative is scaled by a factor that shrinks when the positive pair is easy
(the negative-positive coupling); with small batches this slows learning. DCL removes the positive from the
denominator, so the two parts of the loss are decoupled: pull the positive pair together, push the
negatives apart. DCLW additionally weights the positive term by how hard the pair is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_pair, check_positive
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives.similarity import (
    Similarity,
    SimilaritySpec,
    _repr_suffix,
    parse_similarity,
    resolve_similarity,
)
from contrastlab.objectives.temperature import check_temperature

__all__ = ["DCL", "DCLW", "dcl"]


def _positive_weights(z1: Tensor, z2: Tensor, sigma: float, sim: Similarity) -> Tensor:
    r"""DCLW's negative von Mises-Fisher weights :math:`w_i = 2 - N \operatorname{softmax}_i(s_{ii}/\sigma)`.

    The weights average 1; a pair that is already close gets less than 1. They are constants (detached).
    """
    similarity = sim.paired(z1, z2).detach() / sigma
    return 2 - z1.shape[0] * torch.softmax(similarity, dim=0)


def dcl(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    weight_sigma: float | None = None,
    normalize: bool = True,
    reduction: str = "mean",
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""Decoupled contrastive loss (DCL) and, with ``weight_sigma``, its weighted form (DCLW).

    Stack the two views into :math:`2N` anchors :math:`u = [z^{(1)}; z^{(2)}]`; anchor :math:`k` is item
    :math:`i` seen in one view, its positive :math:`p(k)` the same item in the other view. With
    :math:`s(a, b) = a^\top b` (cosine when ``normalize=True``; or the coordination function ``similarity``),

    .. math::
        \mathcal{L}_k = -\,w_i\, \frac{s(u_k, u_{p(k)})}{\tau}
            + \log \sum_{l \notin \{k,\, p(k)\}} \exp\big(s(u_k, u_l)/\tau\big),
        \qquad \mathcal{L} = \frac{1}{2N}\sum_{k=1}^{2N} \mathcal{L}_k ,

    so each anchor has :math:`2N - 2` negatives and, unlike NT-Xent
    (:func:`~contrastlab.objectives.info_nce.nt_xent`), no positive in the log-sum-exp. DCL has
    :math:`w_i = 1`; DCLW (``weight_sigma=`` :math:`\sigma`) weights the positive term with the negative
    von Mises-Fisher weight

    .. math::
        w_i = 2 - \frac{\exp\big(s(z^{(1)}_i, z^{(2)}_i)/\sigma\big)}
            {\frac{1}{N}\sum_{j=1}^{N} \exp\big(s(z^{(1)}_j, z^{(2)}_j)/\sigma\big)},

    which averages 1 over the batch and is larger for the pairs that are further apart. The paper does not
    say whether gradients flow through :math:`w`; here it is a constant (detached), as in lightly's
    ``DCLWLoss``.

    The paper sums over :math:`i` and both views :math:`k`; here the mean over the :math:`2N` anchors is
    taken (as :func:`~contrastlab.objectives.info_nce.nt_xent` and lightly do), i.e. the average of the two
    directions.

    References:
        Yeh, Hong, Hsu, Liu, Chen, LeCun, "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848,
        equation (6) and section 4 (DCLW).

    Args:
        z1: first view's embeddings, shape ``(N, D)``, ``N >= 2``.
        z2: second view's embeddings, shape ``(N, D)``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor (the gradient flows to it).
        weight_sigma: :math:`\sigma > 0` for DCLW (the paper: 0.5); ``None`` for DCL.
        normalize: L2-normalise inside (cosine similarity, as the paper); ``False`` uses dot products, in the
            weights too.
        reduction: ``"mean"`` or ``"sum"`` over the :math:`2N` anchors, or ``"none"`` for shape ``(2N,)``
            (the anchors from ``z1`` first, then those from ``z2``).
        similarity: the coordination function :math:`s`, in the loss and in the weights (``None``: dot
            products after ``normalize``; a name such as ``"rbf"``, a mapping or a callable), see
            :class:`~contrastlab.objectives.similarity.Similarity`; applied after ``normalize``.

    Returns:
        A 0-dim tensor, or shape ``(2N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, ``weight_sigma <= 0``, ``reduction`` is unknown, the shapes
            differ, ``N < 2``, or ``similarity`` is not a similarity.

    Example:
        >>> z = torch.eye(2)                       # positives at cosine 1, the 2 negatives orthogonal
        >>> round(float(dcl(z, z, temperature=1.0)), 4)   # -1 + log 2
        -0.3069
    """
    check_reduction(reduction)
    temperature = check_temperature(temperature)
    if weight_sigma is not None:
        weight_sigma = check_positive("weight_sigma", weight_sigma)
    sim = resolve_similarity(similarity)
    check_pair(z1, z2, min_batch=2)
    if normalize:
        z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    n = z1.shape[0]
    u = torch.cat([z1, z2], dim=0)
    logits = sim.matrix(u, u) / temperature
    anchor = torch.arange(2 * n, device=u.device)
    partner = (anchor + n) % (2 * n)
    positive = logits[anchor, partner]
    excluded = torch.eye(2 * n, dtype=torch.bool, device=u.device)
    excluded[anchor, partner] = True
    negative = torch.logsumexp(logits.masked_fill(excluded, float("-inf")), dim=1)
    if weight_sigma is not None:
        positive = _positive_weights(z1, z2, weight_sigma, sim).repeat(2) * positive
    return reduce(negative - positive, reduction)


class DCL(nn.Module):
    r"""Module form of :func:`dcl` without weights; ``forward(z1, z2, temperature=None, similarity=None)``.

    ``temperature`` and ``similarity`` in ``forward`` override the stored ones for that call (a model's
    learnable temperature, a learned coordination function).

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848.

    Args:
        temperature: :math:`\tau > 0`.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        similarity: the coordination function (``None``: dot products after ``normalize``), see :func:`dcl`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> DCL(temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    sigma: float | None = None  #: DCLW's weight scale; None: unweighted

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        normalize: bool = True,
        reduction: str = "mean",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.similarity = parse_similarity(similarity)

    def forward(
        self,
        z1: Tensor,
        z2: Tensor,
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> Tensor:
        return dcl(
            z1,
            z2,
            temperature=self.temperature if temperature is None else temperature,
            weight_sigma=self.sigma,
            normalize=self.normalize,
            reduction=self.reduction,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}"
            f"{_repr_suffix(self.similarity)}"
        )


class DCLW(DCL):
    r"""Module form of :func:`dcl` with the von Mises-Fisher weights.

    ``forward(z1, z2, temperature=None, similarity=None)``, as :class:`DCL`.

    References:
        Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848.

    Args:
        sigma: :math:`\sigma > 0` of the weights (the paper: 0.5).
        temperature: :math:`\tau > 0` (the paper: 0.1).
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        similarity: the coordination function, in the loss and the weights, see :func:`dcl`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> DCLW(sigma=0.5, temperature=0.1)(torch.randn(8, 16), torch.randn(8, 16)).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        sigma: float = 0.5,
        temperature: float = 0.1,
        normalize: bool = True,
        reduction: str = "mean",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__(temperature=temperature, normalize=normalize, reduction=reduction, similarity=similarity)
        self.sigma = check_positive("sigma", sigma)

    def extra_repr(self) -> str:
        return (
            f"sigma={self.sigma}, temperature={self.temperature}, normalize={self.normalize}, "
            f"reduction={self.reduction!r}{_repr_suffix(self.similarity)}"
        )
