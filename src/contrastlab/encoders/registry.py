"""The plain registry of encoder backbones: a name -> a factory ``(input_shape, **options)``.

Every backbone has ``out_dim`` (the width of its features) and ``uses_lengths`` (whether its
``forward`` takes ``lengths`` for padded sequences).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence

from torch import nn

from contrastlab.encoders.conv1d import Conv1dEncoder
from contrastlab.encoders.convnet import ConvNet
from contrastlab.encoders.hf import HFText, HFVision
from contrastlab.encoders.late_fusion import LateFusion
from contrastlab.encoders.mlp import MLP
from contrastlab.encoders.resnet import CifarResNet18
from contrastlab.encoders.text import TextEncoder
from contrastlab.errors import check_flags

#: Encoder name -> factory ``(input_shape, **options) -> nn.Module``.
ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "convnet": ConvNet,
    "resnet18": CifarResNet18,
    "conv1d": Conv1dEncoder,
    "text": TextEncoder,
    "hf_text": HFText,  # transformers is imported only when one is built
    "hf_vision": HFVision,
    "late_fusion": LateFusion,  # the modalities of a joined input (views: joined), each its own sub-encoder
}


def check_encoder_name(name: str) -> str:
    """``name`` if it is registered; ``ValueError`` with a did-you-mean otherwise.

    Example:
        >>> check_encoder_name("convnet")
        'convnet'
    """
    if name not in ENCODERS:
        close = difflib.get_close_matches(str(name), ENCODERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown encoder {name!r}; {hint}known: {', '.join(sorted(ENCODERS))}")
    return name


def build_encoder(name: str, input_shape: Sequence[int], **options) -> nn.Module:
    """Build the backbone registered as ``name`` for items of shape ``input_shape``.

    Args:
        name: a key of :data:`ENCODERS`.
        input_shape: the per-item shape it reads, e.g. ``(3, 32, 32)``.
        **options: the encoder's keyword options.

    Returns:
        The backbone (with ``out_dim`` and ``uses_lengths`` attributes).

    Raises:
        ValueError: an unknown name or option, naming it.

    Example:
        >>> build_encoder("mlp", (10,), hidden=[32]).out_dim
        32
    """
    factory = ENCODERS[check_encoder_name(name)]
    check_flags(factory, options, f"encoder {name!r}")
    try:
        return factory(tuple(input_shape), **options)
    except TypeError as err:
        raise ValueError(f"bad options for encoder {name!r}: {err}") from None
