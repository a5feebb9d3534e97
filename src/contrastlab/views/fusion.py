r"""The modalities of an item joined into one input, for early or late fusion (CMU MMML lecture 4.1).

*Early* fusion concatenates the modalities' inputs and lets one encoder read them together, so it can model
interactions between raw elements of different modalities from the first layer; *late* fusion encodes each
modality with its own sub-encoder and combines the features afterwards. Both read the same view, the joined input
(``views: joined``), so every objective and evaluation works on either: any ordinary encoder on it is early fusion,
the ``late_fusion`` encoder (:mod:`contrastlab.encoders.late_fusion`) splits it back into the modalities
(``JoinedViews.layout``) and is late fusion. (The multimodal autoencoder's ``model.fusion`` is late fusion of the
towers' codes, for reconstruction.)

How the modalities are joined: images of one spatial size are stacked along the channels (``(C_1 + C_2, H, W)``:
a conv net then sees every modality at every pixel); anything else is flattened and concatenated. Caption token
ids are turned into word counts over the vocabulary (a bag of words, ``(V,)``, float) before the join — token ids
are labels of words, not quantities, and cannot be concatenated with pixels.

``copies=2`` gives two views of the joined input (``joint1``, ``joint2``) with independent SimCLR augmentations of
the image part (for SimCLR-style objectives on the fused input); ``copies=1`` gives one view ``joint`` (supervised
objectives, autoencoders).

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 (early and late fusion).
    Baltrušaitis, Ahuja & Morency, "Multimodal Machine Learning: A Survey and Taxonomy", IEEE TPAMI 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import ViewsBase, check_names, require_modality
from contrastlab.views.simclr import SimCLRAugment

__all__ = ["JoinedViews", "bag_of_words"]


def bag_of_words(ids: Tensor, vocab_size: int) -> Tensor:
    r"""Word counts of padded token ids: ``(N, T)`` int64 -> ``(N, V)`` float32, padding (id 0) not counted.

    Example:
        >>> bag_of_words(torch.tensor([[2, 3, 2, 0]]), 5).tolist()
        [[0.0, 0.0, 2.0, 1.0, 0.0]]
    """
    counts = torch.zeros(ids.shape[0], vocab_size, dtype=torch.float32, device=ids.device)
    counts.scatter_add_(1, ids.long(), torch.ones_like(ids, dtype=torch.float32))
    counts[:, 0] = 0.0
    return counts


class JoinedViews(ViewsBase):
    r"""One input per item made of all its modalities (see the module docstring).

    Args:
        dataset: a data set with at least two modalities.
        modalities: the modalities to join, in order (default: all, image first).
        copies: 1 (view ``joint``) or 2 (views ``joint1``, ``joint2``, each with its own augmentation of the image).
        augment_image: apply a random SimCLR augmentation to the image part while training (default: with 2 copies).

    Raises:
        ValueError: fewer than two modalities, an unknown one, a token modality without a vocabulary, or a bad
            ``copies``.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8, with_captions=True, image_size=16)
        >>> views = JoinedViews(ds)
        >>> views.view_names, views.view_shapes["joint"] == (3 * 16 * 16 + len(ds.vocabulary),)
        (('joint',), True)
        >>> views.layout["parts"] == [["image", [3, 16, 16]], ["text", [len(ds.vocabulary)]]]
        True
    """

    def __init__(self, dataset: Dataset, *, modalities: Sequence[str] | None = None, copies: int = 1,
                 augment_image: bool | None = None):
        if modalities is None:
            modalities = sorted(dataset.modalities, key=lambda m: (m != "image", m))
        modalities = check_names("modalities", modalities)
        if len(modalities) < 2 or len(set(modalities)) != len(modalities):
            raise ValueError(f"joined views join at least two distinct modalities, got {list(modalities)} "
                             f"(data set {dataset.name!r} has {', '.join(dataset.modalities)})")
        if copies not in (1, 2) or isinstance(copies, bool):
            raise ValueError(f"copies must be 1 or 2, got {copies!r}")
        shapes = {m: require_modality(dataset, m) for m in modalities}
        self.vocab_size: dict[str, int] = {}
        for m in modalities:
            if len(shapes[m]) == 1 and m in ("text",):
                vocabulary = getattr(dataset, "vocabulary", None)
                if vocabulary is None:
                    raise ValueError(f"modality {m!r} holds token ids, but data set {dataset.name!r} has no vocabulary "
                                     "to count words over")
                self.vocab_size[m] = len(vocabulary)
        self.modalities = modalities
        images = [shapes[m] for m in modalities if len(shapes[m]) == 3]
        self.stack = len(images) == len(modalities) and len({s[1:] for s in images}) == 1
        if self.stack:
            joint = (sum(s[0] for s in images), *images[0][1:])
        else:
            joint = (sum(self.vocab_size.get(m) or math.prod(shapes[m]) for m in modalities),)
        #: how the joined input splits back into the modalities: stacked along channels or flat, and each part's
        #: per-item shape in order (what the late_fusion encoder reads)
        self.layout = {"stacked": self.stack, "parts": [[m, list((self.vocab_size[m],) if m in self.vocab_size else shapes[m])]
                                                        for m in modalities]}
        if augment_image is None:
            augment_image = copies == 2
        self.augment = None
        if augment_image:
            if "image" not in modalities:
                raise ValueError("augment_image needs an 'image' modality among the joined ones")
            self.augment = SimCLRAugment(size=tuple(require_modality(dataset, "image", ndim=3)[1:]))
        names = ("joint",) if copies == 1 else ("joint1", "joint2")
        self.view_names = names
        self.view_modalities = dict.fromkeys(names, "joint")
        self.view_shapes = dict.fromkeys(names, tuple(joint))
        self.view_sources = dict.fromkeys(names, "joint")

    def _join(self, parts: dict[str, Tensor]) -> Tensor:
        if self.stack:
            return torch.cat([parts[m] for m in self.modalities], dim=1)
        flat = [bag_of_words(parts[m], self.vocab_size[m]) if m in self.vocab_size else parts[m].float().flatten(1)
                for m in self.modalities]
        return torch.cat(flat, dim=1)

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        out = {}
        for name in self.view_names:
            parts = {m: batch.inputs[m] for m in self.modalities}
            if self.augment is not None:
                parts["image"] = self.augment(parts["image"], generator)
            out[name] = self._join(parts)
        return out

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        joined = self._join({m: batch.inputs[m] for m in self.modalities})
        return dict.fromkeys(self.view_names, joined)
