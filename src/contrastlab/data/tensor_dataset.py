"""An in-memory data set of tensors: the common form of every real data set."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from contrastlab.data.base import Batch


class TensorDataset:
    r"""Items held as tensors in memory, fetched in batches (implements the ``Dataset`` protocol).

    Args:
        name: Data set name.
        inputs: Modality name to a tensor, shape (N, ...). Images are float32 (N, C, H, W) in [0, 1].
        labels: Optional int64 class labels, shape (N,), with values in ``[0, len(classes))``.
        lengths: Optional modality name to valid lengths, shape (N,), for padded sequences.
        classes: Class names, in label order (required with labels); also ``class_names``.

    Raises:
        ValueError: When the tensors disagree on N, or a label is outside ``[0, len(classes))``.

    Example:
        >>> ds = TensorDataset("toy", {"signal": torch.zeros(4, 8)}, torch.tensor([0, 1, 0, 1]),
        ...                    classes=("a", "b"))
        >>> batch = ds.get(torch.tensor([3, 0]))
        >>> batch.inputs["signal"].shape, batch.labels.tolist(), ds.num_classes, ds.class_names
        (torch.Size([2, 8]), [1, 0], 2, ('a', 'b'))
    """

    factor_names: tuple[str, ...] = ()

    def __init__(self, name: str, inputs: dict[str, Tensor], labels: Tensor | None = None, *,
                 lengths: dict[str, Tensor] | None = None, classes: Sequence[str] | None = None):
        if not inputs:
            raise ValueError("inputs must hold at least one modality")
        sizes = {k: int(v.shape[0]) for k, v in inputs.items()}
        if labels is not None:
            sizes["labels"] = int(labels.shape[0])
        for key, value in (lengths or {}).items():
            sizes[f"lengths[{key}]"] = int(value.shape[0])
        if len(set(sizes.values())) != 1:
            raise ValueError(f"inputs, labels and lengths must share the first dimension, got {sizes}")
        if labels is not None:
            if classes is None:
                raise ValueError("classes must be given with labels")
            labels = labels.to(torch.int64)
            if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
                raise ValueError(f"labels must lie in [0, {len(classes)}), got range "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        self.name = name
        self._inputs = dict(inputs)
        self._labels = labels
        self._lengths = dict(lengths or {})
        self.classes: tuple[str, ...] = tuple(classes) if labels is not None else ()
        self.modalities: dict[str, tuple[int, ...]] = {k: tuple(v.shape[1:]) for k, v in inputs.items()}
        self.num_classes: int | None = len(self.classes) if labels is not None else None
        self.class_names: tuple[str, ...] | None = tuple(str(c) for c in self.classes) if labels is not None else None

    def __len__(self) -> int:
        return int(next(iter(self._inputs.values())).shape[0])

    def __repr__(self) -> str:
        return f"TensorDataset({self.name!r}, n={len(self)}, modalities={self.modalities})"

    def get(self, index: Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)) as one :class:`Batch`."""
        index = torch.as_tensor(index, dtype=torch.int64)
        return Batch(
            inputs={k: v[index] for k, v in self._inputs.items()},
            labels=None if self._labels is None else self._labels[index],
            lengths={k: v[index] for k, v in self._lengths.items()},
            index=index.clone(),
        )
