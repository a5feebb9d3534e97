"""What a data set hands to a view generator.

A :class:`Batch` is a batch of *items*: row ``i`` of every field belongs to item ``i``.

* ``inputs`` maps a modality name to a tensor (``{"image": (N, C, H, W)}``,
  ``{"image": ..., "audio": (N, F, T)}``, ``{"signal": (N, L)}``, ``{"text": (N, T) int64}``).
* ``labels`` are class labels ``(N,)`` int64 when the data set has them.
* ``factors`` map a generative factor name to its values ``(N,)`` (Shapes world only).
* ``lengths`` map a modality name to valid lengths ``(N,)`` for padded sequences.
* ``index`` are the item indices in the data set ``(N,)``.
* ``skipped`` counts unreadable items that were replaced by readable ones (``data.on_error: skip``).

Images may arrive as uint8 (files read on demand stay uint8 until the device, a quarter of the bytes
to decode, pin and copy); :func:`to_device` moves a batch and turns every uint8 input into float32 in
[0, 1] there. In-memory data sets hand out float32 images directly (their fast path).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    inputs: dict[str, Tensor]
    labels: Tensor | None = None
    factors: dict[str, Tensor] = field(default_factory=dict)
    lengths: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None
    skipped: int = 0

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def apply(self, fn) -> "Batch":
        """A batch of ``fn`` applied to every tensor (inputs, labels, factors, lengths, index); ``skipped`` kept."""
        each = lambda d: {k: fn(v) for k, v in d.items()}  # noqa: E731
        return Batch(inputs=each(self.inputs), labels=None if self.labels is None else fn(self.labels),
                     factors=each(self.factors), lengths=each(self.lengths),
                     index=None if self.index is None else fn(self.index), skipped=self.skipped)

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> "Batch":
        """Every tensor moved to ``device`` (dtypes unchanged)."""
        return self.apply(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Every tensor in page-locked memory (``DataLoader(pin_memory=True)`` calls this in its pinning thread)."""
        return self.apply(lambda t: t.pin_memory())


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """``batch`` on ``device`` with uint8 inputs turned into float32 in [0, 1] there (images are decoded
    to uint8 by loader workers and cross to the device at a quarter of the float size).

    Generative factors stay on the host: they describe items (a synthetic world re-renders views from
    them on the CPU), the model never reads them.

    Example:
        >>> b = to_device(Batch({"image": torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)}), "cpu")
        >>> b.inputs["image"].dtype, float(b.inputs["image"].max())
        (torch.float32, 1.0)
    """
    moved = replace(batch, factors={}).to(device, non_blocking=True)
    moved.factors = batch.factors
    moved.inputs = {k: v.float().div_(255.0) if v.dtype == torch.uint8 else v for k, v in moved.inputs.items()}
    return moved


from typing import Protocol, runtime_checkable  # noqa: E402


@runtime_checkable
class Dataset(Protocol):
    """An indexable set of items, fetched in batches: held in memory, or read from files on demand.

    ``modalities`` maps each modality name to the per-item shape (``{"image": (3, 32, 32)}``);
    ``num_classes`` is ``None`` when there are no labels; ``factor_names`` is empty except for
    synthetic data with generative factors. ``get`` may return uint8 images (see :func:`to_device`).

    ``class_names`` says what the classes are called: ``None`` when there are no labels or the source
    gives no names (integer labels alone); otherwise ``len(class_names) == num_classes`` and label ``i``
    is called ``class_names[i]``. It is optional for a data set of one's own: one without the attribute
    reads as ``None``. Use :func:`class_name` / :func:`label_names`, which fall back to the index.
    """

    name: str
    modalities: dict[str, tuple[int, ...]]
    num_classes: int | None
    class_names: tuple[str, ...] | None
    factor_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def get(self, index: Tensor) -> Batch:
        """The items at ``index`` (int64, shape (B,)) as one :class:`Batch`."""
        ...


def label_names(dataset) -> list[str]:
    """What each label of ``dataset`` is called, in label order: its ``class_names`` when it has them, else the
    index as a string (``"0"``, ``"1"``, ...); empty for unlabelled data.

    Example:
        >>> from types import SimpleNamespace
        >>> label_names(SimpleNamespace(num_classes=2, class_names=("cat", "dog")))
        ['cat', 'dog']
        >>> label_names(SimpleNamespace(num_classes=3, class_names=None)), label_names(SimpleNamespace(num_classes=None))
        (['0', '1', '2'], [])
    """
    n = getattr(dataset, "num_classes", None)
    names = getattr(dataset, "class_names", None)
    if n is None:
        return []
    if names is not None and len(names) == n:
        return [str(c) for c in names]
    return [str(i) for i in range(n)]


def class_name(dataset, label: int) -> str:
    """What label ``label`` of ``dataset`` is called: ``class_names[label]``, else ``str(label)`` (no names, or a
    label outside them).

    Example:
        >>> from types import SimpleNamespace
        >>> ds = SimpleNamespace(num_classes=2, class_names=("cat", "dog"))
        >>> class_name(ds, 1), class_name(SimpleNamespace(num_classes=2, class_names=None), 1)
        ('dog', '1')
    """
    label = int(label)
    names = getattr(dataset, "class_names", None)
    return str(names[label]) if names is not None and 0 <= label < len(names) else str(label)
