r"""Methods that read more than embeddings: predictors, momentum targets, a queue, a learned logit scale and bias.

Each is an objective whose ``forward`` takes the step's :class:`~contrastlab.outputs.Outputs` and
declares what it reads in its spec; the model parts (predictor, target towers, queue, learnable
temperature and bias) are built for it by the training code, with the paper's defaults, and updated
by after-step hooks (EMA, enqueue, clamp). The losses themselves are the pure functions of
:mod:`~contrastlab.objectives.predictive`, :mod:`~contrastlab.objectives.info_nce` and
:mod:`~contrastlab.objectives.siglip`.

With two views the methods are exactly their papers' symmetric losses (averaged over the two
directions, as everywhere in contrastlab). With multi-crop views (two global crops and small local
ones), targets come from the global crops only and every view predicts every *other* global view's
target (Caron et al. 2020; Grill et al. 2020 use two views).
"""

from __future__ import annotations

from torch import Tensor, nn

from contrastlab.objectives._checks import check_positive
from contrastlab.objectives._spec import ObjectiveSpec, mean_of
from contrastlab.objectives.decoupled import DCL, DCLW
from contrastlab.objectives.info_nce import info_nce
from contrastlab.objectives.predictive import negative_cosine
from contrastlab.objectives.redundancy import BarlowTwinsLoss, VICRegLoss
from contrastlab.objectives.siglip import siglip
from contrastlab.objectives.temperature import check_temperature
from contrastlab.outputs import Outputs

__all__ = ["BYOL", "MoCo", "MoCoV3", "SPECS", "SigLIPMethod", "SimSiam"]


class BYOL(nn.Module):
    r"""BYOL: the online network's prediction of the momentum target's projection of another view.

    .. math::
        \mathcal{L} = \operatorname{mean}_{(v, g)} \Big( 2 - 2\,\frac{\langle q_\theta(z_v),\ \operatorname{sg}(z'_g)\rangle}
            {\lVert q_\theta(z_v)\rVert\,\lVert z'_g\rVert} \Big)

    over ordered pairs of a view :math:`v` and another global view :math:`g` (two views: the mean of the
    two directions, the paper's symmetrised loss / 2). Reads ``predictions`` and ``targets``.

    References:
        Grill et al., "Bootstrap your own latent: a new approach to self-supervised learning", NeurIPS 2020.
    """

    def forward(self, out: Outputs) -> Tensor:
        return mean_of([2.0 + 2.0 * negative_cosine(out.predictions[v], out.targets[g]) for v, g in out.ordered_pairs()])


class SimSiam(nn.Module):
    r"""SimSiam: predict the other view's projection from the same network, stop-gradient on the target.

    .. math:: \mathcal{L} = \operatorname{mean}_{(v, g)} D(p_v, \operatorname{sg}(z_g)), \qquad
              D(p, z) = -\frac{\langle p, z\rangle}{\lVert p\rVert \lVert z\rVert}

    (two views: :math:`\tfrac12 D(p_1, z_2) + \tfrac12 D(p_2, z_1)`). ``stop_gradient=False`` is the
    paper's collapse ablation. Reads ``predictions`` and ``embeddings``.

    References:
        Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.
    """

    def __init__(self, *, stop_gradient: bool = True) -> None:
        super().__init__()
        if not isinstance(stop_gradient, bool):
            raise ValueError(f"stop_gradient must be true or false, got {stop_gradient!r}")
        self.stop_gradient = stop_gradient

    def forward(self, out: Outputs) -> Tensor:
        p, z = out.predictions, out.embeddings
        return mean_of([negative_cosine(p[v], z[g], stop_gradient=self.stop_gradient) for v, g in out.ordered_pairs()])

    def extra_repr(self) -> str:
        return f"stop_gradient={self.stop_gradient}"


class MoCo(nn.Module):
    r"""MoCo v2: queries from the online tower, keys from the momentum tower, negatives from a queue.

    .. math::
        \mathcal{L} = -\frac1N \sum_i \log \frac{e^{q_i^\top k_i/\tau}}{e^{q_i^\top k_i/\tau} + \sum_{m=1}^{K} e^{q_i^\top n_m/\tau}}

    with :math:`q` the first view's embeddings, :math:`k` the momentum target's embeddings of the second
    view and :math:`n` the queued keys of earlier batches (the queue is empty on the first step, which then
    uses the batch's other keys). ``symmetric=True`` averages this with the loss of the swapped views.
    Reads ``embeddings``, ``targets`` and ``negatives``; the keys are enqueued after the step.

    References:
        He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020;
        Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297.
    """

    def __init__(self, *, temperature: float = 0.2, symmetric: bool = False, normalize: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.symmetric, self.normalize = bool(symmetric), bool(normalize)

    def forward(self, out: Outputs) -> Tensor:
        a, b = out.global_views[0], out.global_views[-1]
        q, k = out.embeddings, out.targets

        def one(x: str, y: str) -> Tensor:
            return info_nce(q[x], k[y], negatives=out.negatives, temperature=self.temperature, normalize=self.normalize)

        return (one(a, b) + one(b, a)) / 2 if self.symmetric else one(a, b)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, symmetric={self.symmetric}"


class MoCoV3(nn.Module):
    r"""MoCo v3: the online prediction of one view against the momentum keys of the other, in-batch negatives.

    .. math:: \mathcal{L} = \operatorname{mean}_{(v, g)} \operatorname{ctr}(q_v, k_g), \qquad
              \operatorname{ctr}(q, k) = 2\tau \cdot \operatorname{InfoNCE}_\tau(q, k)

    (the paper scales by :math:`2\tau` and sums the two directions; ours averages them, so ours is the
    paper's / 2). Reads ``predictions`` and ``targets``; keys of every process are negatives.

    References:
        Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021.
    """

    def __init__(self, *, temperature: float = 0.2, normalize: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = bool(normalize)

    def forward(self, out: Outputs) -> Tensor:
        p, k, t = out.predictions, out.targets, self.temperature
        return mean_of([2 * t * info_nce(p[v], k[g], temperature=t, normalize=self.normalize) for v, g in out.ordered_pairs()])

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


class SigLIPMethod(nn.Module):
    r"""SigLIP with the model's learned logit scale :math:`1/\tau` and bias (paper init: scale 10, bias −10).

    .. math:: \mathcal{L} = -\frac1N \sum_{i,j} \log \sigma\big(\ell_{ij}\,(s\, z^{(1)\top}_i z^{(2)}_j + b)\big),
              \quad \ell_{ij} = \pm 1

    Reads ``embeddings``, ``temperature`` and ``logit_bias``.

    References:
        Zhai, Mustafa, Kolesnikov & Beyer, "Sigmoid Loss for Language Image Pre-Training", ICCV 2023.
    """

    def __init__(self, *, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = bool(normalize)

    def forward(self, out: Outputs) -> Tensor:
        z, scale = out.embeddings, 1.0 / out.temperature
        return mean_of([siglip(z[a], z[b], logit_scale=scale, logit_bias=out.logit_bias, normalize=self.normalize)
                      for a, b in out.pairs()])


def _moco_v2(*, temperature: float = 0.2, symmetric: bool = False, normalize: bool = True) -> MoCo:
    return MoCo(temperature=check_positive("temperature", temperature), symmetric=symmetric, normalize=normalize)


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="moco", factory=_moco_v2, kind="method",
        formula="-mean_i log( exp(q_i.k_i/t) / (exp(q_i.k_i/t) + sum_m exp(q_i.n_m/t)) ), k from the momentum tower, n a queue",
        reference="He et al. 2020 (MoCo), Chen et al. 2020 (MoCo v2), arXiv:2003.04297",
        reads=frozenset({"embeddings", "targets", "negatives"}),
        model={"momentum": 0.99, "momentum_schedule": "constant", "queue_size": 4096},
    ),
    ObjectiveSpec(
        name="moco_v3", factory=MoCoV3, kind="method",
        formula="mean over directions of 2t * info_nce(pred(z_v), k_g; t), k from the momentum tower",
        reference="Chen, Xie & He 2021 (MoCo v3), arXiv:2104.02057",
        reads=frozenset({"predictions", "targets"}), model={"momentum": 0.99, "predictor_hidden_factor": 4},
    ),
    ObjectiveSpec(
        name="byol", factory=BYOL, kind="method", uses_negatives=False,
        formula="mean over directions of 2 - 2 cos(pred(z_v), sg(z'_g)), z' from the momentum tower",
        reference="Grill et al. 2020 (BYOL), arXiv:2006.07733",
        reads=frozenset({"predictions", "targets"}), model={"momentum": 0.99, "predictor_hidden_factor": 4},
    ),
    ObjectiveSpec(
        name="simsiam", factory=SimSiam, kind="method", uses_negatives=False,
        formula="mean over directions of -cos(pred(z_v), sg(z_g))",
        reference="Chen & He 2021 (SimSiam), arXiv:2011.10566",
        reads=frozenset({"predictions", "embeddings"}), model={"predictor_hidden_factor": 0.25},
    ),
    ObjectiveSpec(
        name="siglip", factory=SigLIPMethod, kind="method",
        formula="-1/N sum_ij log sigmoid(l_ij (s z1_i.z2_j + b)), l_ii = 1, l_ij = -1, s and b learned",
        reference="Zhai et al. 2023 (SigLIP), arXiv:2303.15343",
        reads=frozenset({"embeddings", "temperature", "logit_bias"}),
        model={"learnable_temperature": 0.1, "logit_bias": -10.0},
    ),
    ObjectiveSpec(
        name="barlow_twins", factory=BarlowTwinsLoss, kind="pairwise",  # batch statistics: N >= 2
        formula="sum_i (1 - C_ii)^2 + l * sum_{i!=j} C_ij^2, C the cross-correlation of batch-standardised z1, z2",
        reference="Zbontar et al. 2021 (Barlow Twins), arXiv:2103.03230",
        model={"normalize": "none"},
    ),
    ObjectiveSpec(
        name="vicreg", factory=VICRegLoss, kind="pairwise",  # batch statistics: N >= 2
        formula="l * mse(z1, z2) + m * [v(z1) + v(z2)] + n * [c(z1) + c(z2)], v a std hinge, c off-diagonal covariance",
        reference="Bardes, Ponce & LeCun 2022 (VICReg), arXiv:2105.04906",
        model={"normalize": "none"},
    ),
    ObjectiveSpec(
        name="dcl", factory=DCL, kind="pairwise",
        formula="-mean_k [ s(u_k, u_p(k))/t - log sum_{l != k, p(k)} exp(s(u_k, u_l)/t) ]  (positive out of the denominator)",
        reference="Yeh et al. 2022 (Decoupled Contrastive Learning), arXiv:2110.06848",
    ),
    ObjectiveSpec(
        name="dclw", factory=DCLW, kind="pairwise",
        formula="dcl with the positive term weighted by w_i = 2 - N exp(s_ii/sigma) / sum_k exp(s_kk/sigma)",
        reference="Yeh et al. 2022 (Decoupled Contrastive Learning), arXiv:2110.06848",
    ),
]
