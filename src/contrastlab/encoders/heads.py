"""Projection heads: what sits between the backbone's features and the objective."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.encoders._checks import check_int


class MLPHead(nn.Module):
    r"""A two-layer projection head with batch norm, as in SimCLR.

    .. math:: g(h) = W_2\, \operatorname{ReLU}\big(\operatorname{BN}(W_1 h)\big) + b_2

    Args:
        in_dim: width of the backbone's features.
        out_dim: width of the embedding.
        hidden: width of the hidden layer (``None``: ``in_dim``).
        batch_norm: use ``BatchNorm1d`` after the first layer.

    Shapes:
        forward: ``(N, in_dim)`` -> ``(N, out_dim)``.

    Raises:
        ValueError: a width that is not a positive integer.

    References:
        Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of visual
        representations", ICML 2020.

    Example:
        >>> import torch
        >>> MLPHead(1024, 128, hidden=512)(torch.randn(4, 1024)).shape
        torch.Size([4, 128])
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden: int | None = None, batch_norm: bool = True) -> None:
        super().__init__()
        in_dim, out_dim = check_int("in_dim", in_dim), check_int("out_dim", out_dim)
        hidden = in_dim if hidden is None else check_int("hidden", hidden)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden, bias=not batch_norm),
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class LinearHead(nn.Module):
    r"""A linear projection head, :math:`g(h) = W h + b`.

    Args:
        in_dim: width of the backbone's features.
        out_dim: width of the embedding.

    Shapes:
        forward: ``(N, in_dim)`` -> ``(N, out_dim)``.

    Raises:
        ValueError: a width that is not a positive integer.

    References:
        Wu, Xiong, Yu & Lin, "Unsupervised feature learning via non-parametric instance
        discrimination", CVPR 2018 (a linear projection to a 128-d unit sphere).

    Example:
        >>> import torch
        >>> LinearHead(64, 16)(torch.randn(3, 64)).shape
        torch.Size([3, 16])
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(check_int("in_dim", in_dim), check_int("out_dim", out_dim))
        self.out_dim = out_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.proj(h)


class NoHead(nn.Module):
    r"""No projection: the embedding is the backbone's features, :math:`g(h) = h`.

    Args:
        in_dim: width of the backbone's features (also the output width).

    Shapes:
        forward: ``(N, in_dim)`` -> ``(N, in_dim)``.

    Example:
        >>> import torch
        >>> NoHead(8)(torch.ones(2, 8)).shape
        torch.Size([2, 8])
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = check_int("in_dim", in_dim)

    def forward(self, h: Tensor) -> Tensor:
        return h


def l2_normalize(z: Tensor, *, eps: float = 1e-12) -> Tensor:
    r"""Project each row onto the unit sphere, :math:`z / \max(\lVert z \rVert_2, \epsilon)`.

    Args:
        z: embeddings of shape ``(N, D)``.
        eps: floor on the norm (a zero row stays zero).

    Returns:
        Unit-norm rows, shape ``(N, D)``.

    Example:
        >>> import torch
        >>> l2_normalize(torch.tensor([[3.0, 4.0]])).tolist()
        [[0.6000000238418579, 0.800000011920929]]
    """
    return F.normalize(z, dim=-1, eps=eps)


#: Head name -> factory ``(in_dim, out_dim, **options) -> nn.Module``.
HEADS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLPHead,
    "linear": LinearHead,
    "none": lambda in_dim, out_dim=None: NoHead(in_dim),
}


def build_head(name: str, in_dim: int, out_dim: int, **options) -> nn.Module:
    """Build the head registered as ``name`` (``"mlp"``, ``"linear"`` or ``"none"``).

    Args:
        name: the head's registry name.
        in_dim: width of the backbone's features.
        out_dim: embedding width (ignored by ``"none"``).
        **options: the head's keyword options (``hidden``, ``batch_norm`` for ``"mlp"``).

    Returns:
        The head; its ``out_dim`` attribute is the embedding width.

    Raises:
        ValueError: an unknown name or option, naming it.

    Example:
        >>> build_head("linear", 32, 8).out_dim
        8
    """
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; known: {', '.join(sorted(HEADS))}")
    try:
        return HEADS[name](in_dim, out_dim, **options)
    except TypeError as err:
        raise ValueError(f"bad options for head {name!r}: {err}") from None
