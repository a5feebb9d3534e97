"""Objectives: embeddings in, a loss out. See :mod:`contrastlab.objectives.registry`.

The public face for your own training loop is :mod:`contrastlab.losses` (every loss as a function and an
``nn.Module``, one vocabulary; ``docs/LOSSES.md``). This package exports the same losses by name, so
``from contrastlab.objectives import info_nce`` is the *function*.

A note on names: five files are named like their loss (``info_nce.py``, ``nce.py``, ``supcon.py``,
``align_uniform.py``, ``siglip.py``). The package attribute is the function, and the file stays an ordinary
module, reached through the import system: ``from contrastlab.objectives.info_nce import TILED_THRESHOLD`` or
``importlib.import_module("contrastlab.objectives.info_nce")``. Only ``import contrastlab.objectives.info_nce
as m`` (which Python resolves through the package attribute) gives the function instead of the module.
"""

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.registry import OBJECTIVES, build_objective, get_objective

# Each import below loads its module first (Python then binds the module's name on this package) and then
# binds the function under the same name, so the function wins; a module is bound only when first loaded.
from contrastlab.objectives.align_uniform import (
    AlignLoss,
    AlignUniform,
    UniformLoss,
    align_loss,
    align_uniform,
    uniform_loss,
)
from contrastlab.objectives.cca import DCCALoss, dcca_loss
from contrastlab.objectives.combined import ContrastiveAlignUniform, contrastive_align_uniform
from contrastlab.objectives.decoupled import DCL, DCLW, dcl
from contrastlab.objectives.hinge import VSEHinge, vse_hinge
from contrastlab.objectives.info_nce import InfoNCE, NTXent, info_nce, nt_xent
from contrastlab.objectives.multiview import MultiViewObjective, core_view, full_graph
from contrastlab.objectives.nce import NCE, nce
from contrastlab.objectives.predictive import (
    BYOLLoss,
    NegativeCosine,
    SimSiamLoss,
    byol_loss,
    negative_cosine,
    simsiam_loss,
)
from contrastlab.objectives.reconstruction import (
    AutoencoderLoss,
    MultimodalReconstruction,
    multimodal_reconstruction,
    reconstruction_loss,
)
from contrastlab.objectives.redundancy import BarlowTwinsLoss, VICRegLoss, barlow_twins, vicreg
from contrastlab.objectives.siglip import SigLIP, siglip
from contrastlab.objectives.similarity import Similarity, parse_similarity
from contrastlab.objectives.supcon import ClassTowerContrastive, SupCon, class_contrastive, supcon
from contrastlab.objectives.temperature import LearnableTemperature
from contrastlab.objectives.triplet import Triplet, triplet_margin

__all__ = [
    "OBJECTIVES",
    "ObjectiveSpec",
    "build_objective",
    "get_objective",
    # losses: function, module
    "info_nce",
    "InfoNCE",
    "nt_xent",
    "NTXent",
    "dcl",
    "DCL",
    "DCLW",
    "nce",
    "NCE",
    "siglip",
    "SigLIP",
    "triplet_margin",
    "Triplet",
    "vse_hinge",
    "VSEHinge",
    "align_loss",
    "AlignLoss",
    "uniform_loss",
    "UniformLoss",
    "align_uniform",
    "AlignUniform",
    "contrastive_align_uniform",
    "ContrastiveAlignUniform",
    "core_view",
    "full_graph",
    "MultiViewObjective",
    "supcon",
    "SupCon",
    "class_contrastive",
    "ClassTowerContrastive",
    "dcca_loss",
    "DCCALoss",
    "barlow_twins",
    "BarlowTwinsLoss",
    "vicreg",
    "VICRegLoss",
    "negative_cosine",
    "NegativeCosine",
    "simsiam_loss",
    "SimSiamLoss",
    "byol_loss",
    "BYOLLoss",
    "reconstruction_loss",
    "AutoencoderLoss",
    "multimodal_reconstruction",
    "MultimodalReconstruction",
    "LearnableTemperature",
    # the coordination function of the pairwise losses (their similarity= option)
    "Similarity",
    "parse_similarity",
]
