r"""Data sets read on demand: each item is decoded when a batch asks for it (by a loader worker).

A source of this kind keeps only what names its items in memory (file paths, offsets, labels) and
implements :meth:`OnDemand.read`, one item's arrays. :meth:`OnDemand.get` assembles a :class:`Batch`
from them; images stay uint8 (C, H, W) until :func:`~contrastlab.data.base.to_device`.

An item that cannot be read (a corrupt, truncated or unsupported file) either stops the run with one
line naming the file (``on_error="fail"``, the default) or is replaced by the next readable item in
the data set's order and counted in ``Batch.skipped`` (``on_error="skip"``): the batch keeps its size,
so every process of a distributed run still takes the same step, and the choice is deterministic, so
a resumed run reads the same replacements.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from contrastlab.data.base import Batch
from contrastlab.errors import UserError

ON_ERROR: tuple[str, ...] = ("fail", "skip")


def check_on_error(value: str) -> str:
    """``value`` if it is ``"fail"`` or ``"skip"``; ``ValueError`` naming it otherwise."""
    if value not in ON_ERROR:
        raise ValueError(f"on_error must be 'fail' or 'skip', got {value!r}")
    return value


class OnDemand:
    r"""Base of the data sets whose items are read from files when asked for (the ``Dataset`` protocol).

    Subclasses set ``name``, ``modalities`` (per-item shapes), ``classes`` (what each label stands for, in
    label order; empty when unlabelled), ``labels`` (int64 array (N,) or ``None``) and, when ``classes`` are
    only the source's label values rather than names (integer labels), ``named = False`` (``class_names``
    is then ``None``); and implement :meth:`read` and :meth:`describe`. Everything they hold must pickle
    cheaply: loader worker processes receive a copy.

    Args:
        on_error: ``"fail"`` or ``"skip"`` (see the module docstring).
    """

    factor_names: tuple[str, ...] = ()
    in_memory = False  #: read on demand: the training loop gives it loader workers
    name: str
    modalities: dict[str, tuple[int, ...]]
    classes: tuple[str, ...] = ()
    labels: np.ndarray | None = None
    named: bool = True  #: whether ``classes`` are names (``class_names``) or only label values

    def __init__(self, *, on_error: str = "fail") -> None:
        self.on_error = check_on_error(on_error)

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.labels is not None else None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """What label ``i`` is called (``class_names[i]``); ``None`` when unlabelled or the source names no classes."""
        return tuple(self.classes) if self.labels is not None and self.named else None

    def __len__(self) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, modalities={self.modalities})"

    def read(self, i: int) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Item ``i``'s inputs (modality -> array of the modality's per-item shape; images uint8) and the
        valid lengths of its padded sequences; :class:`UserError` naming the file when it cannot be read."""
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """Where item ``i`` comes from (a file, a manifest line), for messages."""
        return f"item {i}"

    def first_image_size(self, image: Callable[[int], np.ndarray], what: str) -> tuple[int, int]:
        """Height and width of the first readable image (``image(i)`` decodes item i's), which every other image
        must match unless a size is given; unreadable ones are passed over only with ``on_error="skip"``."""
        for i in range(len(self)):
            try:
                return tuple(image(i).shape[1:])
            except UserError:
                if self.on_error == "fail":
                    raise
        raise UserError(f"none of the {len(self)} images of {what} can be read")

    def _read_or_replace(self, i: int) -> tuple[int, dict[str, np.ndarray], dict[str, int], int]:
        """Item ``i``, or with ``on_error="skip"`` the next readable item after it: (index read, inputs,
        lengths, items skipped)."""
        n = len(self)
        for step in range(n):
            j = (i + step) % n
            try:
                inputs, lengths = self.read(j)
                self._check_shapes(j, inputs)
                return j, inputs, lengths, step
            except UserError:
                if self.on_error == "fail":
                    raise
        raise UserError(f"data set {self.name!r}: none of its {n} items can be read (on_error: skip)")

    def _check_shapes(self, i: int, inputs: dict[str, np.ndarray]) -> None:
        for key, shape in self.modalities.items():
            got = tuple(inputs[key].shape)
            if got != tuple(shape):
                raise UserError(f"{self.describe(i)}: {key} has shape {got}, but the data set's items are "
                                f"{tuple(shape)} (pass size=... to resize every image)")

    def get(self, index: torch.Tensor | Sequence[int]) -> Batch:
        """The items at ``index`` read, decoded and stacked into one :class:`Batch`."""
        index = torch.as_tensor(index, dtype=torch.int64).reshape(-1)
        rows, taken, skipped = [], [], 0
        lengths: dict[str, list[int]] = {}
        for i in index.tolist():
            j, inputs, item_lengths, missed = self._read_or_replace(int(i))
            rows.append(inputs)
            taken.append(j)
            skipped += missed
            for key, value in item_lengths.items():
                lengths.setdefault(key, []).append(value)
        taken_t = torch.tensor(taken, dtype=torch.int64)
        stacked = {k: torch.from_numpy(np.stack([r[k] for r in rows])) if rows
                   else torch.empty((0, *self.modalities[k])) for k in self.modalities}
        return Batch(
            inputs=stacked,
            labels=None if self.labels is None else torch.from_numpy(self.labels[taken_t.numpy()]),
            lengths={k: torch.tensor(v, dtype=torch.int64) for k, v in lengths.items()},
            index=taken_t,
            skipped=skipped,
        )
