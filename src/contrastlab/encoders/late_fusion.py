r"""Late fusion (CMU MMML lecture 4.1): one sub-encoder per modality, their features combined afterwards.

It reads the joined input of ``views: joined`` (:class:`~contrastlab.views.fusion.JoinedViews`), splits it back
into the modalities with the view's ``layout`` (channel ranges of stacked images, or ranges of the flat vector
reshaped to each part's shape), encodes each part with its own sub-encoder and concatenates their features:

.. math:: h = [\, f_1(x_1) ;\ f_2(x_2) ;\ \dots \,]

(the projection head then mixes them). The same view read by any ordinary encoder is early fusion, so the two are
compared on equal terms: same data, same views, same objective, same head.

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 (early and late fusion).
    Snoek, Worring & Smeulders, "Early versus Late Fusion in Semantic Video Analysis", ACM Multimedia 2005.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LateFusion"]


def _default_encoder(shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    return ("convnet", {}) if len(shape) == 3 else ("mlp", {"hidden": [256]})


class LateFusion(nn.Module):
    r"""Per-modality sub-encoders on the parts of a joined input, their features concatenated.

    Args:
        input_shape: the joined input's per-item shape.
        layout: the view's layout, ``{"stacked": bool, "parts": [[modality, shape], ...]}`` (filled in by training
            from ``views: joined``).
        encoders: modality -> ``{"name": ..., "options": {...}}`` of its sub-encoder (default: ``convnet`` for
            images, an ``mlp`` with one hidden layer of 256 for vectors such as word counts).

    Shapes:
        forward: ``(N, *input_shape)`` -> ``(N, sum of the sub-encoders' out_dim)``.

    Raises:
        ValueError: without a layout (the input is not a joined view), a layout that does not match the input, or
            a sub-encoder option naming an unknown modality.

    Example:
        >>> layout = {"stacked": False, "parts": [["a", [4]], ["b", [2, 3]]]}
        >>> net = LateFusion((10,), layout=layout, encoders={"a": {"name": "mlp", "options": {"hidden": [8]}},
        ...                                                   "b": {"name": "mlp", "options": {"hidden": [5]}}})
        >>> net(torch.randn(7, 10)).shape, net.out_dim
        (torch.Size([7, 13]), 13)
    """

    uses_lengths = False

    def __init__(self, input_shape: Sequence[int], *, layout: Mapping[str, Any] | None = None,
                 encoders: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        from contrastlab.encoders.registry import build_encoder

        if not isinstance(layout, Mapping) or not isinstance(layout.get("parts"), (list, tuple)):
            raise ValueError("late_fusion reads the modalities of a joined input: use it with views: joined")
        self.stacked = bool(layout.get("stacked"))
        self.parts = [(str(m), tuple(int(d) for d in shape)) for m, shape in layout["parts"]]
        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - {m for m, _ in self.parts})
        if unknown:
            raise ValueError(f"encoders given for {unknown}, which are not parts of the joined input "
                             f"({', '.join(m for m, _ in self.parts)})")
        input_shape = tuple(input_shape)
        if self.stacked:
            expected = (sum(s[0] for _, s in self.parts), *self.parts[0][1][1:])
        else:
            expected = (sum(math.prod(s) for _, s in self.parts),)
        if input_shape != expected:
            raise ValueError(f"the joined input has shape {input_shape}, its layout says {expected}")
        self.sub = nn.ModuleDict()
        for m, shape in self.parts:
            choice = encoders.get(m)
            name, options = (choice.get("name"), dict(choice.get("options") or {})) if choice else _default_encoder(shape)
            try:
                self.sub[m] = build_encoder(name, shape, **options)
            except ValueError as err:
                raise ValueError(f"late_fusion encoder for {m!r}: {err}") from None
        self.out_dim = sum(e.out_dim for e in self.sub.values())

    def split(self, x: Tensor) -> dict[str, Tensor]:
        """The joined input's parts, modality -> ``(N, *shape)``."""
        out, start = {}, 0
        for m, shape in self.parts:
            size = shape[0] if self.stacked else math.prod(shape)
            part = x[:, start:start + size]
            out[m] = part if self.stacked else part.reshape(x.shape[0], *shape)
            start += size
        return out

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.sub[m](part) for m, part in self.split(x).items()], dim=1)

    def extra_repr(self) -> str:
        return f"parts={[m for m, _ in self.parts]}, stacked={self.stacked}, out_dim={self.out_dim}"
