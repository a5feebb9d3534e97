"""A backbone the user brings: any ``nn.Module`` mapping a batch of one view to ``(N, F)`` features."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def check_features(module: nn.Module, sample: Tensor, *, who: str, out_dim: int | None = None) -> int:
    """Run ``module`` once on a few real items (eval mode, no gradient) and check it returns ``(n, F)`` features.

    Args:
        module: a backbone.
        sample: a few items ``(n, ...)``.
        who: how errors name the module (e.g. ``"encoders['image'] (mypkg.Net)"``).
        out_dim: the width it must return, when it declares one.

    Returns:
        ``F``, the width it returns.

    Raises:
        ValueError: in one line: the module failed on the sample, or returned anything else.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(sample)
    except Exception as err:  # the user's code: any failure is reported in one line
        message = " ".join(str(err).split())
        raise ValueError(f"{who} failed on a batch of shape {tuple(sample.shape)}: {type(err).__name__}: {message}") from None
    finally:
        module.train(was_training)
    n = sample.shape[0]
    width = "F" if out_dim is None else out_dim
    ok = isinstance(out, Tensor) and out.dim() == 2 and out.shape[0] == n and out.is_floating_point()
    if not ok or (out_dim is not None and out.shape[1] != out_dim):
        got = f"shape {tuple(out.shape)} {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
        declared = "" if out_dim is None else f" (its out_dim is {out_dim})"
        raise ValueError(f"{who} must map a batch of {n} items to ({n}, {width}) floating features{declared}, got {got}")
    return int(out.shape[1])


class GivenBackbone(nn.Module):
    r"""Wraps a user's module as a contrastlab backbone (``out_dim``, ``uses_lengths``).

    The module's own ``out_dim`` is used when it has one; otherwise one forward pass on a few real
    items (``sample``) finds it. A module whose ``forward`` takes ``lengths`` (padded sequences) sets
    ``uses_lengths = True`` on itself.

    Args:
        module: maps ``(N, ...)`` inputs to ``(N, F)`` features.
        sample: a few items of the view it reads, ``(n, ...)``, for the dry forward.
        key: the view or modality it reads (for error messages).

    Raises:
        ValueError: the module fails on the sample, or returns anything but a floating ``(n, F)``
            tensor, naming the key and what it returned.

    Example:
        >>> backbone = GivenBackbone(nn.Sequential(nn.Flatten(), nn.Linear(12, 7)), torch.randn(2, 3, 4), key="image")
        >>> backbone.out_dim, backbone(torch.randn(5, 3, 4)).shape
        (7, torch.Size([5, 7]))
    """

    def __init__(self, module: nn.Module, sample: Tensor, *, key: str) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"encoders[{key!r}] must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.uses_lengths = bool(getattr(module, "uses_lengths", False))
        self.class_name = f"{type(module).__module__}.{type(module).__qualname__}"
        declared = getattr(module, "out_dim", None)
        self.out_dim = check_features(module, sample, who=f"encoders[{key!r}] ({self.class_name})",
                                      out_dim=declared if isinstance(declared, int) else None)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.module(x, lengths) if self.uses_lengths else self.module(x)
