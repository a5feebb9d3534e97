r"""Views that are the data's own modalities: modality pairs (image with caption tokens or with a
spectrogram) and identity views for autoencoders.

For a modality pair the positive pair is (image :math:`i`, caption :math:`i`): view names are the
modality names and each is read by its own tower. Padded sequences keep their valid lengths in
``Batch.lengths`` (see :meth:`~contrastlab.views._common.ViewsBase.view_lengths`).

References:
    Harwath, Recasens, Surís, Chuang, Torralba & Glass, "Jointly Discovering Visual Objects and
    Spoken Words from Raw Sensory Input", IJCV 2019 (image / spoken caption pairs).
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
    2021 (image / text pairs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.views._common import ViewsBase, check_names, require_modality
from contrastlab.views.simclr import SimCLRAugment


class ModalityPairViews(ViewsBase):
    r"""Views ``{modality: batch.inputs[modality]}`` for two or more modalities of each item.

    Args:
        dataset: A data set with at least two modalities.
        modalities: The modalities to pair, in order (default: all of the data set's, image first).
        augment_image: Apply a random SimCLR augmentation (default options) to the image view in training.

    Raises:
        ValueError: For fewer than two modalities or one the data set lacks.

    Example:
        >>> from contrastlab.data import build_dataset
        >>> ds = build_dataset("shapes", n_items=8, with_captions=True)
        >>> views = ModalityPairViews(ds)
        >>> batch = ds.get(torch.arange(4))
        >>> out = views(batch, torch.Generator().manual_seed(0))
        >>> views.view_names, tuple(out["text"].shape), sorted(views.view_lengths(batch))
        (('image', 'text'), (4, 11), ['text'])
    """

    def __init__(self, dataset: Dataset, *, modalities: Sequence[str] | None = None, augment_image: bool = False):
        if modalities is None:
            modalities = sorted(dataset.modalities, key=lambda m: (m != "image", m))
        modalities = check_names("modalities", modalities)
        for m in modalities:
            require_modality(dataset, m)
        if len(modalities) < 2 or len(set(modalities)) != len(modalities):
            raise ValueError(f"modality_pair views need at least two distinct modalities, got {list(modalities)}"
                             f" (data set {dataset.name!r} has {', '.join(dataset.modalities)})")
        self.augment = None
        if augment_image:
            shape = require_modality(dataset, "image", ndim=3)
            self.augment = SimCLRAugment(size=tuple(shape[1:]))
        self.view_names = modalities
        self.view_modalities = {m: m for m in modalities}
        self.view_shapes = {m: tuple(dataset.modalities[m]) for m in modalities}
        self.view_sources = {m: m for m in modalities}

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        out = self.eval_views(batch)
        if self.augment is not None and "image" in out:
            out["image"] = self.augment(out["image"], generator)
        return out

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {m: batch.inputs[m] for m in self.view_names}


class IdentityViews(ViewsBase):
    r"""The clean input, unchanged, for autoencoders: view ``"input"`` when the data set has one
    modality, else one view per modality named after it (each read by its own tower).

    Example:
        >>> from contrastlab.data import build_dataset
        >>> views = IdentityViews(build_dataset("digits", split="test"))
        >>> views.view_names, views.view_modalities
        (('input',), {'input': 'image'})
    """

    def __init__(self, dataset: Dataset, *, modalities: Sequence[str] | None = None):
        modalities = tuple(dataset.modalities) if modalities is None else check_names("modalities", modalities)
        for m in modalities:
            require_modality(dataset, m)
        if not modalities:
            raise ValueError("identity views need at least one modality")
        names = ("input",) if len(modalities) == 1 else modalities
        self.view_names = names
        self.view_modalities = dict(zip(names, modalities))
        self.view_shapes = {v: tuple(dataset.modalities[m]) for v, m in zip(names, modalities)}
        self.view_sources = dict(zip(names, modalities))

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        return self.eval_views(batch)

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {v: batch.inputs[m] for v, m in self.view_sources.items()}
