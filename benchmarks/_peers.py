"""The contrastive losses compared by the loss benchmark, built by name so a subprocess can rebuild any of them.

Every method receives raw (unnormalised) embeddings and normalises them itself, as the peers do, and returns
the mean loss. Families: ``nt_xent`` (SimCLR, 2N rows), ``info_nce`` (one-way, N rows), ``clip`` (symmetric
InfoNCE, N rows).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmarks._common import GIB

Loss = Callable[[Tensor, Tensor], Tensor]

OURS_TILED, OURS_NAIVE, TORCH_NAIVE = "contrastlab tiled", "contrastlab naive", "torch naive"
LIGHTLY, PML = "lightly NTXentLoss", "pytorch-metric-learning NTXentLoss"

METHODS: dict[str, tuple[str, ...]] = {
    "nt_xent": (OURS_TILED, OURS_NAIVE, TORCH_NAIVE, LIGHTLY, PML),
    "info_nce": (OURS_TILED, OURS_NAIVE, TORCH_NAIVE),
    "clip": (OURS_TILED, OURS_NAIVE, TORCH_NAIVE),
}


def rows(family: str, n: int) -> int:
    """Rows (= columns) of the family's logit matrix for a batch of ``n`` pairs."""
    return 2 * n if family == "nt_xent" else n


def torch_naive(family: str, tau: float) -> Loss:
    """The textbook loss in plain torch: the full logit matrix and ``cross_entropy``."""

    def loss(z1: Tensor, z2: Tensor) -> Tensor:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        n = z1.shape[0]
        if family == "nt_xent":
            u = torch.cat([z1, z2])
            logits = (u @ u.T / tau).fill_diagonal_(float("-inf"))
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
            return F.cross_entropy(logits, target)
        logits = z1 @ z2.T / tau
        target = torch.arange(n)
        out = F.cross_entropy(logits, target)
        return (out + F.cross_entropy(logits.T, target)) / 2 if family == "clip" else out

    return loss


def _stub_module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = []  # a package, so that submodules can be stubbed under it

    def missing(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{name}.{attr} is a stub: torchvision is not installed")

        return unavailable

    module.__getattr__ = missing
    return module


def load_lightly() -> tuple[type | None, str]:
    """lightly's ``NTXentLoss`` class and a note on how it was loaded (``None`` and why, if it was not).

    ``lightly.loss`` imports torchvision at import time for losses unrelated to NT-Xent; torchvision is not a
    dependency here, so the modules it names are replaced by stubs that raise if ever called.
    """
    stubbed: list[str] = []
    for _ in range(10):
        try:
            module = importlib.import_module("lightly.loss.ntx_ent_loss")
        except ModuleNotFoundError as err:
            if not err.name or err.name.split(".")[0] != "torchvision":
                return None, f"lightly does not import: {err}"
            parts = err.name.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name not in sys.modules:
                    sys.modules[name] = _stub_module(name)
                    stubbed.append(name)
            for name in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")]:
                del sys.modules[name]
        except Exception as err:  # noqa: BLE001 - any import failure means "not comparable", reported
            return None, f"lightly does not import: {type(err).__name__}: {err}"
        else:
            version = getattr(sys.modules.get("lightly"), "__version__", "?")
            how = f" with stub modules {', '.join(stubbed)}" if stubbed else ""
            return module.NTXentLoss, f"lightly {version} NTXentLoss, imported{how}"
    return None, "lightly does not import: too many missing torchvision modules"


def _ours(family: str, tau: float, impl: str) -> Loss:
    from contrastlab.objectives.info_nce import info_nce, nt_xent

    if family == "nt_xent":
        return lambda z1, z2: nt_xent(z1, z2, temperature=tau, impl=impl)
    return lambda z1, z2: info_nce(z1, z2, temperature=tau, symmetric=family == "clip", impl=impl)


def build(method: str, family: str, tau: float) -> Loss:
    """The loss ``method`` of ``family`` as ``f(z1, z2) -> 0-dim loss``; ``ImportError`` if unavailable."""
    if method == OURS_TILED:
        return _ours(family, tau, "tiled")
    if method == OURS_NAIVE:
        return _ours(family, tau, "naive")
    if method == TORCH_NAIVE:
        return torch_naive(family, tau)
    if method == LIGHTLY and family == "nt_xent":
        cls, note = load_lightly()
        if cls is None:
            raise ImportError(note)
        lightly_loss = cls(temperature=tau)
        return lambda z1, z2: lightly_loss(z1, z2)
    if method == PML and family == "nt_xent":
        from pytorch_metric_learning.losses import NTXentLoss

        pml_loss = NTXentLoss(temperature=tau)

        def loss(z1: Tensor, z2: Tensor) -> Tensor:
            labels = torch.arange(z1.shape[0]).repeat(2)  # the two views of item i share label i
            return pml_loss(torch.cat([z1, z2]), labels)

        return loss
    raise ValueError(f"unknown method {method!r} for family {family!r}")


def predicted_extra_bytes(method: str, family: str, n: int, d: int) -> float:
    """A rough forecast of a case's extra peak memory, to skip cases that cannot fit before running them.

    Factors measured on the development machine: the naive losses keep about 3.5 float32 copies of the logit
    matrix (lightly 4.5); pytorch-metric-learning builds (N, N, N)-sized tensors: 2.2 GiB at N = 256.
    """
    r = rows(family, n)
    if method == OURS_TILED:
        return 10 * r * d * 4 + 2 * 1024**2 * 4
    if method == PML:
        return 2.2 * GIB * (n / 256) ** 3
    copies = 4.5 if method == LIGHTLY else 3.5
    return copies * r * r * 4
