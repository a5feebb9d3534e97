r"""Every contrastlab loss for your own training loop: a function and an ``nn.Module``, one vocabulary.

``loss = info_nce(z1, z2, temperature=0.1, symmetric=True)`` or ``InfoNCE(temperature=0.1, symmetric=True)``;
the module stores the options and calls the function, so both give the same value. The implementations live
in :mod:`contrastlab.objectives` (one file per loss); this module only gathers them under one flat name
space. A complete loop is in ``docs/LOSSES.md``.

Vocabulary (the same keyword means the same thing in every loss that has it):

* ``temperature`` -- :math:`\tau > 0`, a float or a 0-dim tensor. For a learned one, keep a
  :class:`LearnableTemperature` in the model and pass its output, ``temperature=temp()`` (modules take it
  per call: ``loss_fn(z1, z2, temperature=temp())``); the gradient flows to it. SigLIP takes a logit scale
  :math:`t = 1/\tau` and a bias instead, as its paper does.
* ``normalize`` -- ``True``: L2-normalise the embeddings inside (cosine similarity); ``False``: use them as
  given. ``align_loss`` / ``uniform_loss`` default to ``False`` (they double as metrics of given points);
  ``triplet_margin`` says it with ``metric="cosine"``.
* ``reduction`` -- ``"mean"`` (the default), ``"sum"`` or ``"none"``: the per-sample losses, so
  ``none.mean()`` is the mean and ``none.sum()`` the sum. A sample is an anchor: ``(N,)`` for pairwise
  losses, ``(2N,)`` for NT-Xent and DCL (the anchors of ``z1``, then those of ``z2``), ``(N, V)`` for SupCon
  on ``(N, V, D)``. Losses that are statistics of the whole batch -- uniformity, ``align_uniform``, deep
  CCA -- have no per-sample form and raise ``ValueError`` for anything but ``"mean"``; Barlow Twins and
  VICReg take no ``reduction`` at all. ``core_view`` / ``full_graph`` reduce over *pairs of views*
  (``"sum"``, CMC's, or ``"mean"``).
* ``symmetric`` -- the *mean* of the two directions (anchors in ``z1``, then in ``z2``), as CLIP:
  ``info_nce``, ``nce``, ``vse_hinge``, ``contrastive_align_uniform``. ``triplet_margin``'s
  ``bidirectional=True`` is the *sum* of the directions (Harwath et al.'s loss; the audio-visual recipe's
  results were trained with it), hence its different name.
* ``similarity`` -- the coordination function :math:`s(a, b)` of the pairwise losses (``info_nce``,
  ``nt_xent``, ``dcl``, ``nce``, ``vse_hinge``, ``triplet_margin``, ``supcon``; CMC through its pairwise
  loss): ``None`` (the default: dot products of the embeddings after ``normalize``, i.e. cosine), a name --
  ``"cosine"``, ``"dot"``, ``"linear"``, ``"polynomial"``, ``"exponential"``, ``"rbf"`` --, a mapping
  ``{"name": "rbf", "sigma": 0.5}`` or a callable ``(a, b) -> (N, M)`` (a learned one). Applied after
  ``normalize``; the logits are :math:`s/\tau`. Modules take it per call too. The type and its parser,
  ``Similarity`` and ``parse_similarity``, are in :mod:`contrastlab.objectives` (options, not losses).
* ``negatives`` -- explicit negatives, ``(M, D)`` shared (a queue, a memory bank) or ``(N, M, D)`` per
  anchor, for ``info_nce`` and ``nce``; ``None`` uses the other rows of the batch.
* labels -- supervised losses take ``(embeddings, labels)`` as pytorch-metric-learning does:
  ``supcon(embeddings (N, D) or (N, V, D), labels (N,))``, ``triplet_margin(embeddings (N, D), labels (N,))``,
  ``class_contrastive(z, labels, class_embeddings)``.

The losses. Formulas in plain text, per anchor (the loss is their mean) except for the batch statistics;
s is cosine similarity when ``normalize=True``, tau the temperature, [x]_+ = max(0, x), sig the logistic
function, sg stop-gradient, sv_j the j-th singular value. Full formulas, shapes and references are in each
function's docstring.

===============  =========================  ========================  =================================================  ===================
name             function                   module                    formula                                            paper
===============  =========================  ========================  =================================================  ===================
InfoNCE, CLIP    info_nce                   InfoNCE                   -log softmax_j(s_ij/tau)[i]                        CPC 2018; CLIP 2021
NT-Xent          nt_xent                    NTXent                    -log softmax_{l!=k}(s_kl/tau)[p(k)]                SimCLR 2020
DCL, DCLW        dcl                        DCL, DCLW                 -w s_kp(k)/tau + lse_{l!=k,p(k)} s_kl/tau          Yeh 2022
NCE              nce                        NCE                       -log sig(g_ii) - sum_{j!=i} log sig(-g_ij)         CMC 2020
SigLIP           siglip                     SigLIP                    -sum_j log sig(y_ij (t s_ij + b))                  Zhai 2023
triplet          triplet_margin             Triplet                   [m - S_ii + S_ij(i)]_+, directions summed          Harwath 2019
VSE, VSE++       vse_hinge                  VSEHinge                  sum (max) over j!=i of [m - s_ii + s_ij]_+         Faghri 2018
alignment        align_loss                 AlignLoss                 |x_i - y_i|^a                                      Wang & Isola 2020
uniformity       uniform_loss               UniformLoss               log mean_{i<j} exp(-t |x_i - x_j|^2)               Wang & Isola 2020
align + uniform  align_uniform              AlignUniform              align + w uniform                                  Wang & Isola 2020
weighted sum     contrastive_align_uniform  ContrastiveAlignUniform   w_c info_nce + w_a align + w_u uniform             Wang & Isola 2020
CMC              core_view, full_graph      MultiViewObjective        sum_j L(V_1, V_j); sum_{i<j} L(V_i, V_j)           CMC 2020
SupCon           supcon                     SupCon                    -mean_{p in P(i)} log softmax_{a!=i}(s_ia/tau)[p]  Khosla 2020
class tower      class_contrastive          ClassTowerContrastive     -log softmax_c((z_i.w_c + b_c)/tau)[y_i]           = cross-entropy
deep CCA         dcca_loss                  DCCALoss                  -sum_{j<=k} sv_j(S11^-1/2 S12 S22^-1/2)            Andrew 2013
Barlow Twins     barlow_twins               BarlowTwinsLoss           sum_i (1 - C_ii)^2 + l sum_{i!=j} C_ij^2           Zbontar 2021
VICReg           vicreg                     VICRegLoss                l s(Z, Z') + mu v(Z, Z') + nu c(Z, Z')             Bardes 2022
negative cosine  negative_cosine            NegativeCosine            -cos(p_i, sg z_i)                                  SimSiam 2021
SimSiam          simsiam_loss               SimSiamLoss               (D(p1, z2) + D(p2, z1)) / 2                        SimSiam 2021
BYOL             byol_loss                  BYOLLoss                  2 - 2 cos(p_i, sg t_i), mean of both ways          Grill 2020
autoencoder      reconstruction_loss        AutoencoderLoss           mean_j (xhat_ij - x_ij)^2                          Hinton 2006
multimodal AE    multimodal_reconstruction  MultimodalReconstruction  sum_m w_m MSE_m / sum_m w_m                        Ngiam 2011
===============  =========================  ========================  =================================================  ===================

The learnable temperature is a model part, not a loss: :class:`LearnableTemperature` (CLIP's clamped logit
scale); call its ``clamp_()`` after ``optimizer.step()``.

Example:
    >>> import torch
    >>> from contrastlab.losses import InfoNCE, info_nce
    >>> z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    >>> per_anchor = info_nce(z1, z2, symmetric=True, reduction="none")
    >>> per_anchor.shape, torch.allclose(per_anchor.mean(), InfoNCE(symmetric=True)(z1, z2))
    (torch.Size([8]), True)
"""

from __future__ import annotations

from contrastlab import objectives as _objectives
from contrastlab.objectives import *  # noqa: F403 - the losses, gathered once in contrastlab.objectives

del OBJECTIVES, ObjectiveSpec, build_objective, get_objective  # noqa: F821 - the registry stays in contrastlab.objectives
del Similarity, parse_similarity  # noqa: F821 - an option's type, not a loss: it stays in contrastlab.objectives

#: Every loss (function and module) and LearnableTemperature.
__all__ = [n for n in _objectives.__all__ if n in globals()]
