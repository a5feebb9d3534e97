r"""Backbones from Hugging Face ``transformers``, built offline: from a local directory or from a config.

``transformers`` is optional (``pip install 'contrastlab[hf]'``) and is imported only when one of
these towers is built. Nothing is ever downloaded: ``model`` must be an existing directory written by
``save_pretrained`` (a hub name such as ``"bert-base-uncased"`` is refused), and ``config`` builds a
randomly initialised model from a dict of config keys, e.g.
``{"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
"intermediate_size": 64}``.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from contrastlab.encoders._checks import check_int, check_shape
from contrastlab.encoders.text import token_mask
from contrastlab.errors import one_line

#: What ``transformers`` raises for a model it cannot load, configure, build or run.
_LIBRARY_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError)


def _transformers(what: str):
    """The ``transformers`` module, or a ``ValueError`` that says how to install it."""
    try:
        import transformers
    except ImportError:
        raise ValueError(f"{what} needs the optional package transformers: pip install 'contrastlab[hf]'") from None
    return transformers


def _config_keys(config_class: type) -> set[str]:
    """The keys a ``transformers`` config class understands (its arguments, attributes and aliases)."""
    keys = set(inspect.signature(config_class.__init__).parameters) | set(getattr(config_class, "attribute_map", {}))
    try:
        keys |= set(config_class().to_dict())
    except _LIBRARY_ERRORS:  # a config without defaults: its arguments are the keys
        pass
    return keys - {"self", "args", "kwargs"}


def hf_config(options: Mapping[str, Any], *, fill: Mapping[str, Any] | None = None, what: str = "config"):
    """A ``transformers`` config from a dict of keys, checked: ``model_type`` must be known and so must every key.

    ``transformers`` itself keeps an unknown key as a silent extra attribute; here it is an error, so a
    misspelt ``hiden_size`` does not quietly build a model of the default size.

    Args:
        options: ``{"model_type": ..., **keys}``.
        fill: keys set when the config class has them and ``options`` does not (values only the
            data knows, such as ``vocab_size``); ``None`` values are skipped.
        what: how errors name the config.

    Returns:
        The config object.

    Raises:
        ValueError: a missing or unknown ``model_type``, an unknown key, or values ``transformers``
            refuses, naming them.

    Example:
        >>> hf_config({"model_type": "bert", "hidden_size": 32}, fill={"vocab_size": 50}).vocab_size
        50
    """
    transformers = _transformers(what)
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ValueError(f"{what} must be a mapping of config keys to values, got {options!r}")
    keys = dict(options)
    model_type = keys.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError(f"{what} needs a model_type naming a transformers architecture (e.g. 'bert' or 'vit'), "
                         f"got {model_type!r}")
    mapping = transformers.CONFIG_MAPPING
    if model_type not in mapping:
        close = difflib.get_close_matches(model_type, list(mapping.keys()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (e.g. 'bert' for text or 'vit' for images)"
        raise ValueError(f"{what}: model_type {model_type!r} is not a transformers architecture{hint}")
    known = _config_keys(mapping[model_type])
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{what}: {model_type!r} models have no config key {key!r}{hint}")
    keys.update({k: v for k, v in (fill or {}).items() if v is not None and k in known and k not in keys})
    try:
        return transformers.AutoConfig.for_model(model_type, **keys)
    except _LIBRARY_ERRORS as err:
        raise ValueError(f"{what}: transformers refuses the {model_type!r} config: {one_line(err)}") from None


def hf_model(model: str | os.PathLike | None, config: Mapping[str, Any] | None, *,
             fill: Mapping[str, Any] | None = None, what: str = "hf") -> nn.Module:
    """A ``transformers`` base model (``AutoModel``) from a local directory or from config keys: exactly one.

    Args:
        model: a directory holding a model saved with ``save_pretrained``; loaded with
            ``local_files_only=True`` in float32. Anything that is not an existing directory is refused.
        config: config keys for :func:`hf_config`; the model is randomly initialised.
        fill: for ``config``, keys set when absent (see :func:`hf_config`).
        what: how errors name the encoder.

    Returns:
        The model, in training mode.

    Raises:
        ValueError: both or neither source, a path that is not a directory, a directory that does not
            hold a model, or a config ``transformers`` refuses, naming the path or key.
    """
    if (model is None) == (config is None):
        raise ValueError(f"{what}: give exactly one of model (a local directory) or config (config keys), got "
                         f"{'both' if model is not None else 'neither'}")
    transformers = _transformers(what)
    if config is not None:
        cfg = hf_config(config, fill=fill, what=f"{what} config")
        try:
            net = transformers.AutoModel.from_config(cfg)
        except _LIBRARY_ERRORS as err:
            raise ValueError(f"{what}: cannot build a {cfg.model_type!r} model from config: {one_line(err)}") from None
        return net.train()
    if not isinstance(model, (str, os.PathLike)) or not str(model):
        raise ValueError(f"{what}: model must be the path of a local directory, got {model!r}")
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ValueError(f"{what}: model {str(model)!r} is not a local directory (models are never downloaded; "
                         "write one with save_pretrained and give its path)")
    bars = transformers.utils.logging
    shown = bars.is_progress_bar_enabled()
    bars.disable_progress_bar()  # a tiny local load needs no progress bar; its warnings still show
    try:
        net = transformers.AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except _LIBRARY_ERRORS as err:
        raise ValueError(f"{what}: cannot load a transformers model from {str(path)!r}: {one_line(err)}") from None
    finally:
        if shown:
            bars.enable_progress_bar()
    return net.train()


def _probe(net: nn.Module, run: Callable[[], Tensor], what: str, shape: tuple[int, ...]) -> int:
    """Run one dummy item through ``net`` (in eval mode, without gradients) and return the feature width.

    This finds at build time, with a message that names the shape, a model that cannot read the items.
    """
    net.eval()
    try:
        with torch.no_grad():
            features = run()
    except _LIBRARY_ERRORS as err:
        raise ValueError(f"{what}: the model cannot read items of shape {shape}: {one_line(err)}") from None
    finally:
        net.train()
    return int(features.shape[-1])


def _drop_unused_pooler(net: nn.Module, pooling: str) -> None:
    """Remove a learned pooling layer the chosen pooling never reads.

    Its weights would get no gradient, which ``DistributedDataParallel`` refuses; BERT- and ViT-style
    models skip a pooler that is ``None``.
    """
    pooler = getattr(net, "pooler", None)
    if pooling != "pooler" and isinstance(pooler, nn.Module) and next(pooler.parameters(), None) is not None:
        net.pooler = None


def _check_pooling(pooling: object, allowed: Sequence[str], what: str) -> str:
    if pooling not in allowed:
        raise ValueError(f"{what}: pooling must be one of {', '.join(map(repr, allowed))}, got {pooling!r}")
    return str(pooling)


class HFText(nn.Module):
    r"""A ``transformers`` text model over our token ids, pooled into one feature vector per item.

    The attention mask comes from ``lengths`` (real tokens are :math:`t < \ell`); ``pooling="mean"``
    averages the last hidden states of the real tokens,

    .. math:: y = \frac{1}{\ell} \sum_{t < \ell} h_t,

    and ``"cls"`` takes the first token's :math:`h_0` (our vocabularies have no ``[CLS]`` token, so
    this is the contextual state of the first word). Token ids are the data set's vocabulary ids
    (``0`` padding, ``1`` unknown), so a model loaded from a directory must have an embedding table of
    at least ``vocab_size`` rows; its own tokenizer is not used.

    Args:
        input_shape: per-item shape ``(T,)``: the padded length.
        model: a local directory holding a model saved with ``save_pretrained`` (never a hub name).
        config: config keys to build a randomly initialised model, with ``model_type``; ``vocab_size``
            and ``pad_token_id`` are filled in when absent.
        pooling: ``"mean"`` (masked mean over tokens) or ``"cls"`` (first token).
        vocab_size: number of token ids the data uses (the training code passes the data set's).
        padding_idx: the id used for padding.

    Shapes:
        forward: ``tokens`` ``(N, T)`` int64, ``lengths`` ``(N,)`` -> ``(N, out_dim)``, ``out_dim`` the
        model's hidden size.

    Raises:
        ValueError: both or neither of ``model`` / ``config``, a path that is not a model directory, an
            unknown config key, an embedding table smaller than ``vocab_size``, sequences longer than
            the model's positions, or ``transformers`` not installed; each naming the problem.

    References:
        Devlin, Chang, Lee & Toutanova, "BERT: pre-training of deep bidirectional transformers for
        language understanding", NAACL 2019; Wolf et al., "Transformers: state-of-the-art natural
        language processing", EMNLP 2020 (system demonstrations).

    Example:
        >>> import torch
        >>> tiny = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        ...         "intermediate_size": 32}
        >>> net = HFText((6,), config=tiny, vocab_size=20)
        >>> net(torch.tensor([[3, 4, 5, 0, 0, 0], [7, 0, 0, 0, 0, 0]]), torch.tensor([3, 1])).shape
        torch.Size([2, 16])
    """

    uses_lengths = True

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        model: str | os.PathLike | None = None,
        config: Mapping[str, Any] | None = None,
        pooling: str = "mean",
        vocab_size: int | None = None,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        what = "hf_text"
        (length,) = check_shape("input_shape", tuple(input_shape), ndim=1)
        self.pooling = _check_pooling(pooling, ("mean", "cls"), what)
        padding_idx = check_int("padding_idx", padding_idx, minimum=0)
        if vocab_size is not None:
            vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        if config is not None and vocab_size is None and isinstance(config, Mapping) and "vocab_size" not in config:
            raise ValueError(f"{what}: give vocab_size (the data's vocabulary size) or config.vocab_size")
        self.net = hf_model(model, config, fill={"vocab_size": vocab_size, "pad_token_id": padding_idx}, what=what)
        embeddings = self.net.get_input_embeddings()
        rows = getattr(embeddings, "num_embeddings", None)
        if rows is None:
            raise ValueError(f"{what}: the {type(self.net).__name__} model has no token embedding table to read token ids")
        if vocab_size is not None and rows < vocab_size:
            raise ValueError(f"{what}: the model's embedding table has {rows} rows but the data's vocabulary has "
                             f"{vocab_size} tokens; use a model with vocab_size >= {vocab_size}")
        positions = getattr(self.net.config, "max_position_embeddings", None)
        if isinstance(positions, int) and length > positions:
            raise ValueError(f"{what}: items have {length} tokens but the model has only {positions} positions")
        if not 0 <= padding_idx < rows:
            raise ValueError(f"padding_idx must be in [0, {rows}), got {padding_idx}")
        _drop_unused_pooler(self.net, self.pooling)
        self.vocab_size, self.padding_idx = rows, padding_idx
        dummy = torch.full((1, length), min(1, rows - 1), dtype=torch.int64)
        self.out_dim = _probe(self.net, lambda: self(dummy, torch.tensor([length])), what, (length,))

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        r"""Pooled features of a batch of token sequences.

        Args:
            tokens: token ids of shape ``(N, T)``, int64, padded at the end.
            lengths: valid lengths of shape ``(N,)``; ``None`` reads padding from ``padding_idx``.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: tokens that are not 2-D integers in ``[0, vocab_size)``.
        """
        if tokens.dim() != 2 or torch.is_floating_point(tokens):
            raise ValueError(f"HFText expects integer tokens of shape (N, T), got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]")
        valid = token_mask(tokens, lengths, padding_idx=self.padding_idx)
        h = self.net(input_ids=tokens, attention_mask=valid.long()).last_hidden_state
        if self.pooling == "cls":
            return h[:, 0]
        weights = valid.to(h.dtype).unsqueeze(2)
        return (h * weights).sum(dim=1) / weights.sum(dim=1)


class HFVision(nn.Module):
    r"""A ``transformers`` image model (a ViT, a ResNet, ...) pooled into one feature vector per image.

    ``pooling="mean"`` averages the last hidden state over patches (or over the spatial grid of a
    convolutional model), ``"cls"`` takes the first token of a transformer, and ``"pooler"`` reads the
    model's own pooled output. Built from a config, ``image_size`` and ``num_channels`` come from
    ``input_shape``.

    Args:
        input_shape: per-item shape ``(C, H, W)``.
        model: a local directory holding a model saved with ``save_pretrained`` (never a hub name).
        config: config keys to build a randomly initialised model, with ``model_type``.
        pooling: ``"mean"``, ``"cls"`` or ``"pooler"``.

    Shapes:
        forward: ``x`` ``(N, C, H, W)`` float -> ``(N, out_dim)``, ``out_dim`` the model's feature width.

    Raises:
        ValueError: both or neither of ``model`` / ``config``, a path that is not a model directory, an
            unknown config key, a config or model that disagrees with ``input_shape``, or
            ``transformers`` not installed; each naming the problem.

    References:
        Dosovitskiy et al., "An image is worth 16x16 words: transformers for image recognition at
        scale", ICLR 2021.

    Example:
        >>> import torch
        >>> tiny = {"model_type": "vit", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        ...         "intermediate_size": 32, "patch_size": 4}
        >>> HFVision((3, 8, 8), config=tiny)(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 16])
    """

    uses_lengths = False

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        model: str | os.PathLike | None = None,
        config: Mapping[str, Any] | None = None,
        pooling: str = "mean",
    ) -> None:
        super().__init__()
        what = "hf_vision"
        channels, height, width = check_shape("input_shape", tuple(input_shape), ndim=3)
        self.pooling = _check_pooling(pooling, ("mean", "cls", "pooler"), what)
        size = height if height == width else (height, width)
        if isinstance(config, Mapping):
            for key, value in (("num_channels", channels), ("image_size", size)):
                given = config.get(key, value)
                if given != value and not (isinstance(given, (list, tuple)) and tuple(given) == (height, width)):
                    raise ValueError(f"{what}: config.{key} is {given!r} but the images are {tuple(input_shape)}; "
                                     f"leave {key} out to take it from the data")
        self.net = hf_model(model, config, fill={"num_channels": channels, "image_size": size}, what=what)
        _drop_unused_pooler(self.net, self.pooling)
        self.input_shape = (channels, height, width)
        self.out_dim = _probe(self.net, lambda: self(torch.zeros(1, *self.input_shape)), what, self.input_shape)

    def forward(self, x: Tensor) -> Tensor:
        r"""Pooled features of a batch of images.

        Args:
            x: images of shape ``(N, C, H, W)``, float.

        Returns:
            Features of shape ``(N, out_dim)``.

        Raises:
            ValueError: images of another shape than ``input_shape``, or a pooling the model's
                output does not have (a pooled output, or tokens for ``"cls"``).
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape or not torch.is_floating_point(x):
            raise ValueError(f"HFVision expects float images of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)} {x.dtype}")
        out = self.net(pixel_values=x)
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"the {type(self.net).__name__} model has no pooled output; use pooling 'mean'")
            return pooled.flatten(1)
        h = out.last_hidden_state
        if h.dim() == 4:  # a convolutional model: (N, C, h, w)
            if self.pooling == "cls":
                raise ValueError(f"the {type(self.net).__name__} model gives a feature map, not tokens; use pooling 'mean'")
            return h.mean(dim=(2, 3))
        return h[:, 0] if self.pooling == "cls" else h.mean(dim=1)
