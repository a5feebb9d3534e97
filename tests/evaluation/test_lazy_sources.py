"""Evaluation on data read on demand (image folders through loader workers), on streams and on unlabelled data."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from contrastlab.data.base import Batch, to_device
from contrastlab.data.loading import LoaderOptions
from contrastlab.data.tensor_dataset import TensorDataset
from contrastlab.data.user import load_image_folder
from contrastlab.evaluation.features import collect, raw_featurizer, trained_featurizer
from contrastlab.evaluation.pipeline import EvalOptions, evaluate

SIZE = 8  # tiny images: the towers' 4x4 pooling leaves 2x2


def write_images(folder, n, *, classes=None, seed=0):
    """``n`` random RGB PNG files, flat or spread over class sub-folders."""
    import matplotlib.image

    rng = np.random.default_rng(seed)
    for i in range(n):
        where = folder if classes is None else folder / classes[i % len(classes)]
        where.mkdir(parents=True, exist_ok=True)
        matplotlib.image.imsave(where / f"{i:03d}.png", rng.random((SIZE, SIZE, 3)))
    return folder


def in_memory_copy(ds):
    """The same items as float images held in memory."""
    whole = to_device(ds.get(torch.arange(len(ds))), "cpu")
    return TensorDataset("copy", {"image": whole.inputs["image"]}, whole.labels,
                         classes=ds.classes if ds.labels is not None else None)


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("labelled"), 40, classes=("a", "b", "c"))


def test_features_through_loader_workers_equal_features_of_the_images_in_memory(labelled_folder, run_of):
    lazy = load_image_folder(root=str(labelled_folder))
    assert lazy.get(torch.tensor([0])).inputs["image"].dtype == torch.uint8
    memory = in_memory_copy(lazy)
    run = run_of({"train": memory}, memory.get(torch.arange(2)).inputs["image"])
    featurizers = {"raw": raw_featurizer, "head": trained_featurizer(run.model, run.views, stage="head"),
                   "backbone": trained_featurizer(run.model, run.views, stage="backbone")}
    order = torch.randperm(len(lazy), generator=torch.Generator().manual_seed(3))[:25]  # not sorted: order matters

    from_files = collect(lazy, order, featurizers, batch_size=4, loader=LoaderOptions(num_workers=2), keep_images=6)
    held = collect(memory, order, featurizers, batch_size=7, keep_images=6)

    for name in featurizers:
        a, b = from_files.features[name], held.features[name]
        assert a.keys() == b.keys()
        for tower in a:
            assert a[tower].shape[0] == 25
            torch.testing.assert_close(a[tower], b[tower], rtol=1e-5, atol=1e-6)
    assert torch.equal(from_files.labels, held.labels) and torch.equal(held.labels, memory.get(order).labels)
    # the same figure sample whatever the batch size; files keep uint8, memory its floats
    assert torch.equal(from_files.image_rows, held.image_rows)
    assert from_files.images.dtype == torch.uint8 and held.images.dtype == torch.float32
    torch.testing.assert_close(from_files.figure_sample().images, held.figure_sample().images)


def test_only_a_bounded_sample_of_images_is_kept(labelled_folder):
    lazy = load_image_folder(root=str(labelled_folder))
    got = collect(lazy, None, {"raw": raw_featurizer}, batch_size=3, keep_images=5, seed=1)
    n = len(lazy)
    assert got.features["raw"]["raw"].shape[0] == n
    assert got.images.shape == (5, 3, SIZE, SIZE) and got.images.dtype == torch.uint8
    rows = got.image_rows
    assert rows.tolist() == sorted(set(rows.tolist())) and 0 <= int(rows.min()) and int(rows.max()) < n
    assert torch.equal(got.images, lazy.get(rows).inputs["image"])  # each kept image is its row's
    assert got.images.untyped_storage().nbytes() == got.images.numel()  # no batch kept alive behind a view
    # the sample is spread over the pass, not its first rows, and it is the seed's
    assert int(rows.max()) >= 5
    other = collect(lazy, None, {"raw": raw_featurizer}, batch_size=11, keep_images=5, seed=1)
    assert torch.equal(other.image_rows, rows)
    assert collect(lazy, None, {"raw": raw_featurizer}, keep_images=0).images is None
    with pytest.raises(ValueError, match="keep_images"):
        collect(lazy, None, {"raw": raw_featurizer}, keep_images=True)

    sample = got.figure_sample()  # what the figures draw: features, labels and images of the same rows
    assert sample.images.dtype == torch.float32 and float(sample.images.max()) <= 1.0
    assert torch.equal(sample.features["raw"]["raw"], got.features["raw"]["raw"][rows])
    assert torch.equal(sample.labels, got.labels[rows])


def test_the_figures_get_only_the_figure_sample(simclr_run, monkeypatch):
    import contrastlab.evaluation.run_figures as run_figures

    seen = {}

    def fake_write_figures(out_dir, *, metrics, train, test, draw, **_):
        seen.update(train=train, test=test)
        return {}

    monkeypatch.setattr(run_figures, "write_figures", fake_write_figures)
    metrics = evaluate(simclr_run, options=EvalOptions(stages=("head",), baselines=False, invariance=False,
                                                       figure_items=9), out_dir=simclr_run.run_dir / "eval")
    assert metrics["items"] == {"train": 120, "test": 60}
    for split in ("train", "test"):
        drawn = seen[split]
        assert drawn.images.shape[0] == 9 == drawn.features["head"].shape[0] == drawn.labels.shape[0]


class _Epoch(torch.utils.data.IterableDataset):
    def __init__(self, images, labels, batch_size):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __iter__(self):
        for s in range(0, len(self.images), self.batch_size):
            rows = torch.arange(s, min(s + self.batch_size, len(self.images)))
            yield Batch({"image": self.images[rows]}, labels=self.labels[rows], index=rows)


class FakeStream:
    """A stream of uint8 images: batches from ``epoch`` only, no ``get``, no ``head``, no ``len``."""

    streaming = True
    in_memory = False
    factor_names = ()
    num_classes = 3

    def __init__(self, name, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.name, self.modalities = name, {"image": (3, 32, 32)}
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(n) % 3
        self.calls = []

    def epoch(self, epoch, *, batch_size, seed, shuffle=True, drop_last=True, **_):
        self.calls.append({"shuffle": shuffle, "drop_last": drop_last})
        return _Epoch(self.images, self.labels, batch_size)


def test_a_stream_is_evaluated_on_its_first_max_items(run_of):
    streams = {"train": FakeStream("fake", 50, seed=0), "test": FakeStream("fake", 40, seed=1)}
    run = run_of(streams, streams["train"].images[:2].float() / 255)
    metrics = evaluate(run, options=EvalOptions(max_items=21, batch_size=8, invariance=False, figure_items=6),
                       out_dir=run.run_dir / "eval")
    assert metrics["items"] == {"train": 21, "test": 21}
    assert metrics["selection"] == {"train": "first 21 in stream order", "test": "first 21 in stream order"}
    assert not {"linear_probe", "knn", "clustering"} & set(metrics["skipped"])
    assert {"classification", "geometry"} <= set(metrics["encoders"]["head"])
    assert metrics["encoders"]["head"]["geometry"]["pairs"] == 21
    assert {"neighbours_head_test", "tsne_head"} <= set(metrics["figures"])
    assert all(c == {"shuffle": False, "drop_last": False} for s in streams.values() for c in s.calls)

    # the first 21 items in order, as floats, are what the featurizers saw
    got = collect(streams["test"], None, {"raw": raw_featurizer}, batch_size=8, limit=21)
    torch.testing.assert_close(got.features["raw"]["raw"],
                               streams["test"].images[:21].float().div(255).flatten(1))
    assert torch.equal(got.labels, streams["test"].labels[:21])
    whole = evaluate(run, options=EvalOptions(stages=("head",), baselines=False, figures=False, invariance=False))
    assert whole["items"] == {"train": 50, "test": 40}
    assert whole["selection"]["train"] == "all 50 in stream order"


def test_unlabelled_items_skip_the_label_measures(tmp_path, run_of):
    folder = write_images(tmp_path / "flat", 30)
    splits = {s: load_image_folder(root=str(folder), split=s) for s in ("train", "test")}
    assert splits["train"].num_classes is None
    run = run_of(splits, to_device(splits["train"].get(torch.arange(2)), "cpu").inputs["image"])
    metrics = evaluate(run, options=EvalOptions(num_workers=1), out_dir=run.run_dir / "eval")
    reason = "the data set has no labels"
    assert {k: metrics["skipped"][k] for k in ("linear_probe", "knn", "clustering")} == dict.fromkeys(
        ("linear_probe", "knn", "clustering"), reason)
    for enc in metrics["encoders"].values():
        assert "classification" not in enc and "clustering" not in enc and enc["geometry"]["effective_rank"] > 0
    assert {"alignment", "uniformity"} <= set(metrics["encoders"]["head"]["geometry"])
    assert {"hypersphere_head", "neighbours_head_train"} <= set(metrics["figures"])


CONFIG = """\
data: {{name: image_folder, options: {{root: {root}}}}}
views: {{name: simclr}}
model: {{encoder: {{name: convnet}}, dim: 16}}
objective: {{name: nt_xent}}
batch_size: 16
steps: 4
threads: 1
log: {{every: 2, tensorboard: false, progress: false}}
checkpoint: {{every: 0}}
"""


@pytest.mark.slow
def test_eval_and_report_of_a_run_on_an_unlabelled_folder(tmp_path):
    folder = write_images(tmp_path / "flat", 40)
    (tmp_path / "flat.yaml").write_text(CONFIG.format(root=json.dumps(str(folder))))

    def contrastlab(*args):
        return subprocess.run([sys.executable, "-m", "contrastlab", *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=600)

    r = contrastlab("train", "flat.yaml", "--out", "run")
    assert r.returncode == 0, r.stderr[-3000:]
    r = contrastlab("eval", "run", "--threads", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped linear_probe, knn, clustering: the data set has no labels" in r.stdout
    assert "item/s" not in r.stderr  # no progress bar
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert {k: metrics["skipped"][k] for k in ("linear_probe", "knn", "clustering")} == dict.fromkeys(
        ("linear_probe", "knn", "clustering"), "the data set has no labels")
    assert metrics["items"] == {"train": 32, "test": 8} and metrics["selection"]["test"] == "all 8"
    head = metrics["encoders"]["head"]
    assert "classification" not in head and {"alignment", "uniformity", "effective_rank"} <= set(head["geometry"])
    assert "neighbours_head_test" in metrics["figures"]

    r = contrastlab("report", "run", "-o", "report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    page = (tmp_path / "report.html").read_text()
    assert '<table class="metrics">' in page and "(train: all 32; test: all 8)" in page
    assert "Skipped linear probe, knn and clustering: the data set has no labels." in page  # the report says why
    assert "drawn grey: without labels" in page


class _Terminal:
    """A stand-in for stderr on a terminal."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


@pytest.mark.parametrize("progress, env, shown", [(True, None, True), (False, None, False), (True, "1", False)])
def test_the_progress_bar_counts_items_on_a_terminal_only_when_asked(progress, env, shown, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("CONTRASTLAB_NO_PROGRESS", raising=False)
    if env:
        monkeypatch.setenv("CONTRASTLAB_NO_PROGRESS", env)
    ds = TensorDataset("toy", {"signal": torch.zeros(7, 3)})
    collect(ds, torch.arange(7), {"raw": raw_featurizer}, batch_size=3, progress=progress, desc="test features")
    assert ("test features" in terminal.text and "7/7" in terminal.text) == shown
