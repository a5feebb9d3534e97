"""A text encoder: token embeddings, an optional small transformer, masked mean pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from contrastlab.encoders._checks import check_int, check_probability, check_shape


def token_mask(tokens: Tensor, lengths: Tensor | None, *, padding_idx: int) -> Tensor:
    r"""Which tokens are real: ``t < length`` when lengths are given, else ``token != padding_idx``.

    The first position always counts, so an empty item still has one step to pool over.

    Args:
        tokens: token ids of shape ``(N, T)``.
        lengths: valid lengths of shape ``(N,)`` or ``None``.
        padding_idx: the id used for padding.

    Returns:
        A boolean mask of shape ``(N, T)``.

    Example:
        >>> import torch
        >>> token_mask(torch.tensor([[5, 6, 0, 0]]), None, padding_idx=0).tolist()
        [[True, True, False, False]]
    """
    if lengths is None:
        valid = tokens != padding_idx
    else:
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < lengths.to(tokens.device)[:, None]
    valid = valid.clone()
    valid[:, 0] = True
    return valid


class TextEncoder(nn.Module):
    r"""Embed tokens, optionally contextualise them with a transformer, average the real ones.

    With ``layers=0`` this is a bag of embeddings,

    .. math:: y = \frac{1}{|\mathcal{T}|} \sum_{t \in \mathcal{T}} E[x_t],

    where :math:`\mathcal{T}` are the non-padding positions. With ``layers > 0`` the embeddings plus
    learned position embeddings pass through a pre-norm transformer encoder whose attention ignores
    padding, and the outputs are averaged the same way, then layer-normalised.

    Args:
        input_shape: per-item shape ``(T,)``: the padded length (the longest sequence the position
            embeddings cover).
        vocab_size: number of token ids (ids are ``0 .. vocab_size - 1``).
        dim: embedding and output width.
        layers: transformer layers (0 for a bag of embeddings).
        heads: attention heads (must divide ``dim``).
        dropout: dropout inside the transformer.
        padding_idx: the id used for padding.

    Shapes:
        forward: ``tokens`` ``(N, T)`` int64, ``lengths`` ``(N,)`` -> ``(N, dim)``.

    Raises:
        ValueError: bad options, or tokens outside ``[0, vocab_size)``.

    References:
        Vaswani et al., "Attention is all you need", NeurIPS 2017; the bag of embeddings as in
        Joulin, Grave, Bojanowski & Mikolov, "Bag of tricks for efficient text classification", EACL 2017.

    Example:
        >>> import torch
        >>> net = TextEncoder((6,), vocab_size=20, dim=16, layers=1, heads=2)
        >>> net(torch.tensor([[3, 4, 5, 0, 0, 0], [7, 0, 0, 0, 0, 0]])).shape
        torch.Size([2, 16])
    """

    uses_lengths = True

    def __init__(
        self,
        input_shape: Sequence[int],
        *,
        vocab_size: int,
        dim: int = 128,
        layers: int = 0,
        heads: int = 4,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        (max_len,) = check_shape("input_shape", tuple(input_shape), ndim=1)
        vocab_size = check_int("vocab_size", vocab_size, minimum=2)
        dim = check_int("dim", dim)
        layers = check_int("layers", layers, minimum=0)
        heads = check_int("heads", heads)
        if layers and dim % heads:
            raise ValueError(f"heads must divide dim, got heads={heads} and dim={dim}")
        rate = check_probability("dropout", dropout)
        if not 0 <= check_int("padding_idx", padding_idx, minimum=0) < vocab_size:
            raise ValueError(f"padding_idx must be in [0, {vocab_size}), got {padding_idx}")
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        self.transformer: nn.TransformerEncoder | None = None
        if layers:
            self.position = nn.Parameter(torch.zeros(max_len, dim))
            nn.init.normal_(self.position, std=0.02)
            layer = nn.TransformerEncoderLayer(
                dim, heads, dim_feedforward=4 * dim, dropout=rate, batch_first=True, norm_first=True
            )
            self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(dim)
        self.vocab_size, self.padding_idx, self.max_len = vocab_size, padding_idx, max_len
        self.out_dim = dim

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        r"""Pooled features of a batch of token sequences.

        Args:
            tokens: token ids of shape ``(N, T)``, int64, padded at the end.
            lengths: valid lengths of shape ``(N,)``; ``None`` reads padding from ``padding_idx``.

        Returns:
            Features of shape ``(N, dim)``.

        Raises:
            ValueError: tokens that are not 2-D integers in ``[0, vocab_size)``, or longer than the
                position embeddings.
        """
        if tokens.dim() != 2 or torch.is_floating_point(tokens):
            raise ValueError(f"TextEncoder expects integer tokens of shape (N, T), got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got range [{int(tokens.min())}, {int(tokens.max())}]")
        valid = token_mask(tokens, lengths, padding_idx=self.padding_idx)
        h = self.embed(tokens)
        if self.transformer is not None:
            if tokens.shape[1] > self.max_len:
                raise ValueError(f"sequences can be at most {self.max_len} tokens long, got {tokens.shape[1]}")
            h = self.transformer(h + self.position[: tokens.shape[1]], src_key_padding_mask=~valid)
        weights = valid.to(h.dtype).unsqueeze(2)
        pooled = (h * weights).sum(dim=1) / weights.sum(dim=1)
        return self.norm(pooled) if self.transformer is not None else pooled
