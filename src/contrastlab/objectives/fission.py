r"""Representation fission (CMU MMML lecture 4.1): factorised shared + private codes, and common clusters.

*Modality-level fission* splits what a representation keeps in common across modalities from what each modality
keeps alone. Each modality's head outputs one code :math:`z_m = [s_m ; p_m]`: its first ``shared_dim`` columns
are the *shared* code :math:`s_m`, the rest the *private* code :math:`p_m`. The lecture's generative-discriminative
objective is :math:`\mathcal{L} = \mathcal{L}_1 + \mathcal{L}_2 + \mathcal{L}_3`:

* :math:`\mathcal{L}_1`, discriminative: the shared codes of the two modalities of one item must find each other
  among the batch (CLIP's symmetric InfoNCE on the normalised :math:`s_m`, any coordination function);
* :math:`\mathcal{L}_2`, generative: each real-valued modality is reconstructed from its whole code
  :math:`[s_m ; p_m]` (so what the shared code cannot carry must go into the private one);
* :math:`\mathcal{L}_3`, "no overlap": the shared and private codes of a modality carry no linearly redundant
  information — the squared cross-correlation between their columns is driven to 0 (the "difference" loss of
  domain separation networks, made scale-free).

*Fine-grained fission by clustering* (Hu et al., Deep Multimodal Clustering, CVPR 2019) assigns items of
both modalities to *common* clusters. :class:`MultimodalClustering` keeps :math:`K` learnable cluster centres
shared by the modalities; each modality's soft assignment must predict the other's balanced assignment
(Sinkhorn-Knopp, as SwAV), so an image and its caption land in the same cluster and every cluster is used.

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 (representation fission).
    Tsai, Liang, Zadeh, Morency & Salakhutdinov, "Learning Factorized Multimodal Representations", ICLR 2019.
    Bousmalis, Trigeorgis, Silberman, Krishnan & Erhan, "Domain Separation Networks", NeurIPS 2016.
    Hu, Nie & Li, "Deep Multimodal Clustering for Unsupervised Audiovisual Learning", CVPR 2019.
    Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of Visual Features by Contrasting
    Cluster Assignments" (SwAV), NeurIPS 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings, check_non_negative, check_pair, check_positive
from contrastlab.objectives._spec import ObjectiveSpec, mean_of
from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.similarity import parse_similarity
from contrastlab.objectives.temperature import check_temperature
from contrastlab.outputs import Outputs

__all__ = ["SPECS", "Fission", "MultimodalClustering", "cross_correlation_overlap", "sinkhorn", "split_code"]


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def split_code(z: Tensor, shared_dim: int) -> tuple[Tensor, Tensor]:
    r"""The shared and private parts of a fission code :math:`z = [s ; p]`: ``z[:, :shared_dim]``, ``z[:, shared_dim:]``.

    Raises:
        ValueError: when ``z`` does not have room for a private part of at least one column.

    Example:
        >>> s, p = split_code(torch.zeros(4, 10), 6)
        >>> tuple(s.shape), tuple(p.shape)
        ((4, 6), (4, 4))
    """
    check_embeddings("z", z)
    if not 0 < shared_dim < z.shape[1]:
        raise ValueError(f"shared_dim must be in [1, D - 1] for codes of width D = {z.shape[1]}, got {shared_dim}")
    return z[:, :shared_dim], z[:, shared_dim:]


def cross_correlation_overlap(a: Tensor, b: Tensor, *, eps: float = 1e-6) -> Tensor:
    r"""How much two codes of the same items overlap linearly: the mean squared cross-correlation of their columns.

    With the columns of :math:`A \in \mathbb{R}^{N \times p}` and :math:`B \in \mathbb{R}^{N \times q}` centred and
    scaled to unit norm (:math:`\hat A`, :math:`\hat B`),

    .. math:: \Omega(A, B) = \frac{1}{pq} \big\lVert \hat A^\top \hat B \big\rVert_F^2
              = \frac{1}{pq} \sum_{j,k} \operatorname{corr}(a_{\cdot j}, b_{\cdot k})^2 \in [0, 1],

    0 exactly when every column of one is uncorrelated with every column of the other (the lecture's "no
    overlap", linearly), 1 when they are the same one-dimensional signal. Domain separation networks use the
    unnormalised :math:`\lVert A^\top B\rVert_F^2`, which either code can lower by shrinking; correlations cannot.

    References:
        Bousmalis et al., "Domain Separation Networks", NeurIPS 2016 (the difference loss).

    Args:
        a: ``(N, p)``.
        b: ``(N, q)``, row i the same item as ``a``'s.
        eps: added to each column's norm (a constant column has correlation 0 with everything).

    Returns:
        A 0-dim tensor.

    Raises:
        ValueError: for shapes that are not ``(N, ·)`` with the same N >= 2.

    Example:
        >>> x = torch.randn(64, 1)
        >>> round(float(cross_correlation_overlap(x, 3 * x)), 4), round(float(cross_correlation_overlap(x, -x)), 4)
        (1.0, 1.0)
    """
    check_embeddings("a", a)
    check_embeddings("b", b)
    if a.shape[0] != b.shape[0] or a.shape[0] < 2:
        raise ValueError(f"a and b must have the same number of rows N >= 2, got {a.shape[0]} and {b.shape[0]}")

    def unit_columns(x: Tensor) -> Tensor:
        x = x - x.mean(dim=0, keepdim=True)
        return x / (torch.linalg.vector_norm(x, dim=0, keepdim=True) + eps)

    c = unit_columns(a).T @ unit_columns(b)
    return c.pow(2).mean()


def _reconstruction_error(recon: Tensor, clean: Tensor) -> Tensor:
    return F.mse_loss(recon, clean.to(recon.dtype))


class Fission(nn.Module):
    r"""The factorised (fission) objective :math:`\lambda_1\mathcal{L}_1 + \lambda_2\mathcal{L}_2 + \lambda_3\mathcal{L}_3`.

    For each pair of views :math:`(a, b)` of different modalities, with codes :math:`z_m = [s_m ; p_m]` and
    :math:`\bar s_m = s_m / \lVert s_m \rVert`:

    .. math::
        \mathcal{L}_1 = \tfrac12\big[\mathrm{InfoNCE}(\bar s_a \to \bar s_b) + \mathrm{InfoNCE}(\bar s_b \to \bar s_a)\big],
        \qquad
        \mathcal{L}_2 = \operatorname{mean}_{m} \operatorname{MSE}\big(d_m([s_m ; p_m]), x_m\big),
        \qquad
        \mathcal{L}_3 = \operatorname{mean}_{m} \Omega(s_m, p_m)

    (:math:`\Omega` is :func:`cross_correlation_overlap`; :math:`\mathcal{L}_2` runs over the modalities with
    real-valued inputs — token ids are not reconstructed, their code is shaped by :math:`\mathcal{L}_1` alone).
    Reads ``embeddings`` (the raw codes: the model's output space is ``none``, the objective normalises the shared
    part itself), ``reconstructions`` and ``clean``.

    References:
        CMU MMML lecture 4.1 (:math:`\mathcal{L} = \mathcal{L}_1 + \mathcal{L}_2 + \mathcal{L}_3`); Tsai et al.,
        "Learning Factorized Multimodal Representations", ICLR 2019; Bousmalis et al., NeurIPS 2016.

    Args:
        shared_dim: the width of the shared code, the first columns of each head output (default: half of ``dim``).
        dim: the head's output width ``D`` (filled in by training from ``model.dim``).
        temperature: InfoNCE's :math:`\tau` for :math:`\mathcal{L}_1`.
        similarity: the coordination function of :math:`\mathcal{L}_1` (see ``info_nce``); ``None``: cosine.
        discriminative, generative, overlap: the weights :math:`\lambda_1, \lambda_2, \lambda_3` (>= 0).

    Raises:
        ValueError: a bad option, naming it.

    Example:
        >>> from contrastlab.outputs import Outputs
        >>> z = {"image": torch.randn(8, 6), "text": torch.randn(8, 6)}
        >>> out = Outputs(z, ("image", "text"), {"image": "image", "text": "text"},
        ...               reconstructions={"image": torch.zeros(8, 3)}, clean={"image": torch.ones(8, 3)})
        >>> fission = Fission(shared_dim=4, dim=6)
        >>> loss = fission(out)
        >>> loss.shape, sorted(fission.last)
        (torch.Size([]), ['discriminative', 'generative', 'overlap'])
    """

    def __init__(self, *, shared_dim: int | None = None, dim: int | None = None, temperature: float = 0.1,
                 similarity=None, discriminative: float = 1.0, generative: float = 1.0, overlap: float = 1.0) -> None:
        super().__init__()
        if dim is not None:
            dim = _check_int("dim", dim, 2)
        if shared_dim is None:
            if dim is None:
                raise ValueError("give shared_dim (or dim, whose half it then is)")
            shared_dim = dim // 2
        self.shared_dim = _check_int("shared_dim", shared_dim, 1)
        if dim is not None and self.shared_dim >= dim:
            raise ValueError(f"shared_dim must leave room for a private code: it is {shared_dim}, model.dim is {dim}")
        self.temperature = check_temperature(temperature)
        self.similarity = parse_similarity(similarity)
        self.weights = (check_non_negative("discriminative", discriminative), check_non_negative("generative", generative),
                        check_non_negative("overlap", overlap))
        #: the three terms of the last call, detached (for logging and tests)
        self.last: dict[str, float] = {}

    def _l1(self, out: Outputs, pairs: list[tuple[str, str]]) -> Tensor:
        terms = []
        similarity = out.similarity if out.similarity is not None else self.similarity  # the model's learned one first
        extra = {} if similarity is None else {"similarity": similarity}
        for a, b in pairs:
            sa, _ = split_code(out.embeddings[a], self.shared_dim)
            sb, _ = split_code(out.embeddings[b], self.shared_dim)
            check_pair(sa, sb, min_batch=2)
            terms.append(info_nce(sa, sb, temperature=self.temperature, symmetric=True, normalize=True, **extra))
        return mean_of(terms)

    def forward(self, out: Outputs) -> Tensor:
        pairs = [(a, b) for a, b in out.pairs() if out.modalities[a] != out.modalities[b]]
        if not pairs:
            raise ValueError("fission needs views of at least two modalities (e.g. views: modality_pair)")
        w1, w2, w3 = self.weights
        l1 = self._l1(out, pairs)
        recon = [_reconstruction_error(r, out.clean[v]) for v, r in out.reconstructions.items()]
        l2 = mean_of(recon) if recon else l1.new_zeros(())
        l3 = mean_of([cross_correlation_overlap(*split_code(out.embeddings[v], self.shared_dim))
                      for v in out.view_names])
        self.last = {"discriminative": float(l1.detach()), "generative": float(l2.detach()),
                     "overlap": float(l3.detach())}
        return w1 * l1 + w2 * l2 + w3 * l3

    def extra_repr(self) -> str:
        w1, w2, w3 = self.weights
        similarity = "" if self.similarity is None else f", similarity={self.similarity!r}"
        return (f"shared_dim={self.shared_dim}, temperature={self.temperature}{similarity}, "
                f"weights=(discriminative={w1}, generative={w2}, overlap={w3})")


@torch.no_grad()
def sinkhorn(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    r"""Balanced soft assignments of N items to K clusters (Sinkhorn-Knopp), each row summing to 1.

    Starting from :math:`Q = \exp(S / \varepsilon)^\top` (K × N), alternately scale the rows to sum to
    :math:`1/K` (every cluster gets an equal share of the batch) and the columns to :math:`1/N` (every item
    is assigned once); return :math:`N Q^\top`. The log-sum-exp shift keeps small :math:`\varepsilon` finite.

    References:
        Cuturi, "Sinkhorn Distances", NeurIPS 2013; Caron et al. (SwAV), NeurIPS 2020.

    Args:
        scores: ``(N, K)`` item-to-centre similarities.
        epsilon: the entropic regularisation :math:`\varepsilon > 0` (smaller: harder assignments).
        iterations: scaling rounds (>= 1).

    Returns:
        ``(N, K)`` assignments, rows summing to 1, columns to N / K after the last round.

    Example:
        >>> q = sinkhorn(torch.randn(6, 3), iterations=50)
        >>> [round(float(v), 3) for v in q.sum(0)]
        [2.0, 2.0, 2.0]
    """
    n, k = scores.shape
    q = (scores.float() / epsilon)
    q = torch.exp(q - q.max()).T
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).T


class MultimodalClustering(nn.Module):
    r"""Common clusters for every modality: each view's soft assignment predicts the other's balanced one.

    With :math:`K` learnable centres :math:`c_k` (normalised), scores :math:`S^{(m)}_{ik} = \bar z^{(m)}_i \cdot
    \bar c_k`, predictions :math:`P^{(m)} = \operatorname{softmax}(S^{(m)} / \tau)` and balanced targets
    :math:`Q^{(m)} = \operatorname{sinkhorn}(S^{(m)})` (no gradient), for a pair of views :math:`(a, b)`:

    .. math:: \mathcal{L} = -\frac{1}{2N} \sum_i \sum_k \big[Q^{(a)}_{ik} \log P^{(b)}_{ik} + Q^{(b)}_{ik} \log P^{(a)}_{ik}\big].

    An item's two modalities must fall into the same cluster (swapped prediction), and the balancing keeps every
    cluster in use, so the model cannot put everything into one. The centres are the objective's parameters
    (trained and checkpointed with it); ``assign(z)`` gives hard cluster ids.

    References:
        Hu, Nie & Li, "Deep Multimodal Clustering for Unsupervised Audiovisual Learning", CVPR 2019 (common
        clusters across modalities); Caron et al., SwAV, NeurIPS 2020 (swapped prediction, Sinkhorn targets).

    Args:
        dim: embedding width ``D`` (filled in by training from ``model.dim``).
        clusters: the number of common clusters ``K`` (>= 2).
        temperature: :math:`\tau` of the predictions.
        epsilon: Sinkhorn's :math:`\varepsilon`.
        sinkhorn_iterations: Sinkhorn's rounds.
        seed: draws the initial centres (so that building the objective does not consume the global generator).

    Example:
        >>> loss = MultimodalClustering(dim=8, clusters=4)(torch.randn(16, 8), torch.randn(16, 8))
        >>> loss.shape
        torch.Size([])
    """

    def __init__(self, *, dim: int, clusters: int = 16, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, seed: int = 0) -> None:
        super().__init__()
        dim = _check_int("dim", dim, 1)
        self.clusters = _check_int("clusters", clusters, 2)
        self.temperature = check_temperature(temperature)
        self.epsilon = check_positive("epsilon", epsilon)
        self.sinkhorn_iterations = _check_int("sinkhorn_iterations", sinkhorn_iterations, 1)
        generator = torch.Generator().manual_seed(_check_int("seed", seed, 0))
        self.centres = nn.Parameter(torch.randn(self.clusters, dim, generator=generator) / math.sqrt(dim))

    def scores(self, z: Tensor) -> Tensor:
        """``(N, K)`` cosine similarities of the embeddings to the centres."""
        check_embeddings("z", z)
        return F.normalize(z, dim=-1) @ F.normalize(self.centres, dim=-1).to(z.dtype).T

    @torch.no_grad()
    def assign(self, z: Tensor) -> Tensor:
        """Hard cluster ids ``(N,)``: the nearest centre."""
        return self.scores(z).argmax(dim=1)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        check_pair(z1, z2, min_batch=2)
        s1, s2 = self.scores(z1), self.scores(z2)
        q1 = sinkhorn(s1.detach(), epsilon=self.epsilon, iterations=self.sinkhorn_iterations).to(s1.dtype)
        q2 = sinkhorn(s2.detach(), epsilon=self.epsilon, iterations=self.sinkhorn_iterations).to(s2.dtype)
        log_p1 = F.log_softmax(s1 / self.temperature, dim=1)
        log_p2 = F.log_softmax(s2 / self.temperature, dim=1)
        return -0.5 * ((q1 * log_p2).sum(dim=1).mean() + (q2 * log_p1).sum(dim=1).mean())

    def extra_repr(self) -> str:
        return (f"clusters={self.clusters}, temperature={self.temperature}, epsilon={self.epsilon}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}")


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="fission",
        factory=Fission,
        kind="method",
        formula="w1 clip(s_a, s_b) + w2 mean_m mse(dec_m([s_m; p_m]), x_m) + w3 mean_m corr(s_m, p_m)^2,  z_m = [s_m; p_m]",
        reference="CMU MMML lecture 4.1 (fission); Tsai et al. 2019, ICLR; Bousmalis et al. 2016, NeurIPS",
        min_modalities=2,
        reads=frozenset({"embeddings", "reconstructions", "clean"}),
        model={"normalize": "none"},
    ),
    ObjectiveSpec(
        name="multimodal_clustering",
        factory=MultimodalClustering,
        kind="pairwise",
        formula="-(1/2N) sum_i sum_k [ Q_a log softmax(S_b/t) + Q_b log softmax(S_a/t) ],  Q = sinkhorn(S), S = cos(z, centres)",
        reference="Hu et al. 2019 (Deep Multimodal Clustering), CVPR; Caron et al. 2020 (SwAV), NeurIPS",
    ),
]
