"""A small stand-in for ``contrastlab.training.LoadedRun``: same fields, tiny untrained towers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.data.base import Batch


class TinyTower(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 16, dim: int = 8):
        super().__init__()
        self.backbone = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.LazyLinear(width), nn.ReLU())
        self.head = nn.Linear(width, dim)


class TinyModel(nn.Module):
    """``encode(views, *, stage, lengths)`` like ``MultiViewModel``: backbone features or normalised head output."""

    def __init__(self, view_towers: dict[str, str], example: torch.Tensor):
        super().__init__()
        self.view_towers = dict(view_towers)
        self.towers = nn.ModuleDict({t: TinyTower() for t in dict.fromkeys(view_towers.values())})
        for tower in self.towers.values():
            tower.backbone(example)  # materialise the lazy layer
        self.eval()

    def encode(self, views, *, stage="head", lengths=None):
        out = {}
        for view, x in views.items():
            tower = self.towers[self.view_towers[view]]
            h = tower.backbone(x)
            out[view] = h if stage == "backbone" else F.normalize(tower.head(h), dim=1)
        return out


class TwoAugmentations:
    """Two noisy copies of the image for training; the clean image twice for evaluation."""

    view_names = ("view1", "view2")
    view_modalities = {"view1": "image", "view2": "image"}

    def __call__(self, batch: Batch, generator: torch.Generator):
        x = batch.inputs["image"]
        return {v: x + 0.1 * torch.randn(x.shape, generator=generator) for v in self.view_names}

    def eval_views(self, batch: Batch):
        return {v: batch.inputs["image"] for v in self.view_names}


class ColourAndGrey:
    """CMC-like: one tower reads the colour image, another its grey version."""

    view_names = ("rgb", "grey")
    view_modalities = {"rgb": "rgb", "grey": "grey"}

    def __init__(self, sources: dict[str, str] | None = None):
        self.view_sources = sources or {"rgb": "image", "grey": "image"}  # both made from the image, as in CMC

    def eval_views(self, batch: Batch):
        x = batch.inputs["image"]
        return {"rgb": x, "grey": x.mean(dim=1, keepdim=True).expand_as(x).contiguous()}

    def __call__(self, batch: Batch, generator: torch.Generator):
        return self.eval_views(batch)


@dataclass
class FixtureRun:
    run_dir: Path
    model: nn.Module
    views: object
    datasets: dict
    objective: str = "nt_xent"
    config: dict = field(default_factory=lambda: {"objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
                                                  "data": {"name": "shapes"}, "steps": 3})
    temperature: float | None = 0.2  #: what a run's checkpoint records (LoadedRun.temperature)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.csv"

    def dataset(self, split):
        return self.datasets[split]


def make_run(tmp_path: Path, views, n_train: int = 120, n_test: int = 60) -> FixtureRun:
    from contrastlab.data.shapes import ShapesDataset

    datasets = {s: ShapesDataset(n_items=n_train, n_test=n_test, split=s, seed=5) for s in ("train", "test")}
    example = datasets["train"].get(torch.arange(2)).inputs["image"]
    towers = {v: views.view_modalities[v] for v in views.view_names}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step,loss,lr,phase\n" + "".join(
        f"{s},{2.0 / (1 + s):.4f},0.001,train\n" for s in range(0, 50, 10)))
    return FixtureRun(run_dir=run_dir, model=TinyModel(towers, example), views=views, datasets=datasets)


@pytest.fixture
def simclr_run(tmp_path):
    return make_run(tmp_path, TwoAugmentations())


@pytest.fixture
def two_tower_run(tmp_path):
    return make_run(tmp_path, ColourAndGrey())


@pytest.fixture
def two_modality_run(tmp_path):
    """Two towers that read different data (as an image tower and a caption tower do)."""
    return make_run(tmp_path, ColourAndGrey({"rgb": "image", "grey": "sketch"}))


@pytest.fixture
def run_of(tmp_path):
    """A factory: ``run_of(datasets, example)`` is a :class:`FixtureRun` over any train/test data sets (in-memory,
    read on demand or streams), its tiny untrained towers sized by ``example`` (N, C, H, W) float images."""

    def make(datasets: dict, example: torch.Tensor, views=None) -> FixtureRun:
        views = views if views is not None else TwoAugmentations()
        run_dir = tmp_path / "run"
        run_dir.mkdir(exist_ok=True)
        towers = {v: views.view_modalities[v] for v in views.view_names}
        return FixtureRun(run_dir=run_dir, model=TinyModel(towers, example), views=views, datasets=datasets,
                          config={"data": {"name": "test"}, "steps": 1})

    return make
