import json

import pytest
import torch

import contrastlab.evaluation.run_figures as run_figures
from contrastlab.evaluation.run_figures import FigureSample, figure_name, write_figures
from contrastlab.plots._figure import new_figure

PNG = b"\x89PNG\r\n\x1a\n"


def sample(n=12, *, images=True, rows=("head:image",)):
    g = torch.Generator().manual_seed(0)
    return FigureSample({r: torch.randn(n, 4, generator=g) for r in rows}, torch.arange(n) % 3,
                        torch.rand(n, 3, 8, 8, generator=g) if images else None)


def test_writes_every_figure_with_portable_names(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    metrics = {"encoders": {"head:image": {"invariance": {"colour": {"score": 0.1, "purity": 0.2, "chance": 0.1}}},
                            "raw": {}}}
    written = write_figures(tmp_path / "eval", metrics=metrics, train=sample(), test=sample(),
                            draw=["head:image", "missing"], metrics_csv=tmp_path / "metrics.csv")
    assert written == {name: f"{name}.png" for name in (
        "curves", "neighbours_head-image_train", "neighbours_head-image_test", "hypersphere_head-image",
        "tsne_head-image", "invariance")}
    for file in written.values():
        assert (tmp_path / "eval" / file).read_bytes()[:8] == PNG
    json.dumps(written)


def test_without_images_there_are_no_grids_and_no_error(tmp_path):
    (tmp_path / "empty.csv").write_text("")  # a run stopped before its first log row
    written = write_figures(tmp_path, metrics={"encoders": {}}, train=sample(images=False),
                            test=sample(images=False), draw=["head:image"], metrics_csv=tmp_path / "empty.csv")
    assert sorted(written) == ["hypersphere_head-image", "tsne_head-image"]
    tiny = FigureSample({"head": torch.randn(3, 1)}, None, torch.rand(3, 1, 4, 4))
    assert sorted(write_figures(tmp_path, metrics={"encoders": {}}, train=tiny, test=tiny, draw=["head"])) == [
        "neighbours_head_test", "neighbours_head_train"]  # 1-D, 3 items: no circle, no t-SNE


@pytest.mark.parametrize("given", [["cat", "dog", "emu"], None])
def test_class_names_reach_every_figure(tmp_path, monkeypatch, given):
    seen = []

    def spy(name):  # records what the figure was asked to name; draws a blank (the drawing is tested elsewhere)
        def call(*args, **kwargs):
            seen.append((name, kwargs.get("class_names")))
            return new_figure(1, 1)
        monkeypatch.setattr(run_figures, name, call)

    for name in ("neighbour_grid", "hypersphere_plot", "tsne_plot"):
        spy(name)
    metrics = {"encoders": {}, "run": {"class_names": ["from", "the", "metrics"]}}
    write_figures(tmp_path, metrics=metrics, train=sample(), test=sample(), draw=["head:image"], class_names=given)
    expected = given or ["from", "the", "metrics"]
    assert sorted(n for n, _ in seen) == ["hypersphere_plot", "neighbour_grid", "neighbour_grid", "tsne_plot"]
    assert all(names == expected for _, names in seen)


def test_figure_names():
    assert figure_name("neighbours", "random_head:caption", "train") == "neighbours_random_head-caption_train"
