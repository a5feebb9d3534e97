"""Small test fixtures implementing the Dataset and ViewGenerator protocols (not product code)."""

from __future__ import annotations

import torch
from torch import Tensor

from contrastlab.data.base import Batch


class Clusters:
    """``n`` vectors ``(dim,)`` around ``k`` random centres, labelled by centre."""

    name = "clusters"
    factor_names: tuple[str, ...] = ()

    def __init__(self, n: int = 256, dim: int = 8, k: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(k, dim, generator=g) * 3
        self.labels = torch.arange(n) % k
        self.x = centres[self.labels] + 0.5 * torch.randn(n, dim, generator=g)
        self.modalities = {"x": (dim,)}
        self.num_classes = k

    def __len__(self) -> int:
        return self.x.shape[0]

    def get(self, index: Tensor) -> Batch:
        return Batch(inputs={"x": self.x[index]}, labels=self.labels[index], index=index)


class NoisyViews:
    """``count`` views of the one modality: the input plus Gaussian noise (clean for evaluation)."""

    def __init__(self, count: int = 2, sigma: float = 0.3) -> None:
        self.view_names = tuple(f"view{i + 1}" for i in range(count))
        self.view_modalities = {v: "x" for v in self.view_names}
        self.sigma = sigma

    def __call__(self, batch: Batch, generator: torch.Generator) -> dict[str, Tensor]:
        x = batch.inputs["x"]
        return {v: x + self.sigma * torch.randn(x.shape, generator=generator) for v in self.view_names}

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        return {v: batch.inputs["x"] for v in self.view_names}


def config(**overrides):
    """A small checked TrainConfig for the fixtures (MLP encoder, InfoNCE)."""
    from contrastlab.training._schema import set_dotted
    from contrastlab.training.config import config_from_dict

    raw = {
        "data": {"name": "clusters"},
        "views": {"name": "noisy"},
        "objective": {"name": "info_nce", "options": {"temperature": 0.2}},
        "model": {"encoder": {"name": "mlp", "options": {"hidden": [32]}}, "head": {"name": "linear"}, "dim": 8},
        "optim": {"name": "adamw", "lr": 0.01},
        "batch_size": 32,
        "steps": 40,
        "threads": 1,
        "device": "cpu",
        "checkpoint": {"every": 10, "keep_last": 2},
        "log": {"every": 5, "progress": False, "tensorboard": False},
    }
    for key, value in overrides.items():
        set_dotted(raw, f"{key}={value}")
    return config_from_dict(raw)


def ensure_objectives() -> None:
    """Make sure the objectives these tests use are registered (a no-op once the registry lists them)."""
    from importlib import import_module

    from contrastlab.objectives.registry import OBJECTIVES

    for module in ("info_nce", "multiview", "supcon", "reconstruction", "cca"):
        for spec in import_module(f"contrastlab.objectives.{module}").SPECS:
            OBJECTIVES.setdefault(spec.name, spec)


class FailingViews(NoisyViews):
    """Noisy views that break at one call: ``mode="raise"`` simulates a crash, ``"nan"`` a blow-up."""

    def __init__(self, at_call: int, mode: str = "raise") -> None:
        super().__init__()
        self.at_call, self.mode, self.calls = at_call, mode, 0

    def __call__(self, batch, generator):
        self.calls += 1
        views = super().__call__(batch, generator)
        if self.calls == self.at_call:
            if self.mode == "raise":
                raise RuntimeError("simulated crash")
            views = {v: torch.full_like(x, float("nan")) for v, x in views.items()}
        return views


class TwoModalities:
    """Items with two real-valued modalities that share a latent cause (for multimodal autoencoders)."""

    name = "two_modalities"
    factor_names: tuple[str, ...] = ()
    num_classes = None

    def __init__(self, n: int = 128, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        latent = torch.randn(n, 3, generator=g)
        self.a = latent @ torch.randn(3, 10, generator=g)
        self.b = latent @ torch.randn(3, 6, generator=g)
        self.modalities = {"a": (10,), "b": (6,)}

    def __len__(self) -> int:
        return self.a.shape[0]

    def get(self, index: Tensor) -> Batch:
        return Batch(inputs={"a": self.a[index], "b": self.b[index]}, index=index)


class PairViews:
    """One view per modality, unchanged."""

    view_names = ("a", "b")
    view_modalities = {"a": "a", "b": "b"}

    def __call__(self, batch, generator):
        return dict(batch.inputs)

    def eval_views(self, batch):
        return dict(batch.inputs)
