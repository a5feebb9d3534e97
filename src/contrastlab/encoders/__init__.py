"""Encoders: backbones for images, sequences and text, projection heads, decoders, and the model.

See :data:`~contrastlab.encoders.registry.ENCODERS` for the backbones a config can name.
"""

from contrastlab.encoders.build import build_model
from contrastlab.encoders.conv1d import Conv1dEncoder
from contrastlab.encoders.convnet import ConvNet
from contrastlab.encoders.decoders import DECODERS, ConvDecoder, MLPDecoder, build_decoder
from contrastlab.encoders.heads import HEADS, LinearHead, MLPHead, NoHead, build_head, l2_normalize
from contrastlab.encoders.mlp import MLP
from contrastlab.encoders.model import MultiViewModel, Tower
from contrastlab.encoders.registry import ENCODERS, build_encoder
from contrastlab.encoders.resnet import CifarResNet18
from contrastlab.encoders.text import TextEncoder

__all__ = [
    "DECODERS",
    "ENCODERS",
    "HEADS",
    "CifarResNet18",
    "Conv1dEncoder",
    "ConvDecoder",
    "ConvNet",
    "LinearHead",
    "MLP",
    "MLPDecoder",
    "MLPHead",
    "MultiViewModel",
    "NoHead",
    "TextEncoder",
    "Tower",
    "build_decoder",
    "build_encoder",
    "build_head",
    "build_model",
    "l2_normalize",
]
