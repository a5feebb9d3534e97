"""``contrastlab.analyze`` and ``contrastlab analyze FILE``: the evaluation of features and encoders from anywhere."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import contrastlab
from contrastlab.errors import UserError
from contrastlab.evaluation.analyze import analyze, analyze_file, load_features
from contrastlab.evaluation.pipeline import EvalOptions

QUICK = EvalOptions(figures=False, invariance_items=60, pair_items=200, analysis_items=400)


def blobs(n: int, d: int = 8, classes: int = 4, noise: float = 0.4, seed: int = 0):
    """Features in which the class is linearly decodable: a class centre plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 2
    return (centres[y] + noise * rng.normal(size=(n, d))).astype(np.float32), y


def test_contrastlab_analyze_is_the_library_function():
    assert contrastlab.analyze is analyze


def test_separable_features_are_decoded_and_the_missing_sections_say_why():
    x, y = blobs(400)
    m = analyze(x, y, options=QUICK)
    row = m["encoders"]["features"]
    assert row["kind"] == "trained" and row["dim"] == 8
    assert row["classification"]["probe_test_accuracy"] > 0.95
    assert row["classification"]["knn5_accuracy"] > 0.95
    assert m["items"] == {"train": 320, "test": 80}  # the fixed stratified 80/20 split
    for section in ("invariance", "pairs", "decodability", "baselines", "retrieval"):
        assert m["skipped"][section], section
    assert m["verdict"]["headline"]


def test_random_features_are_not_decoded():
    x, y = blobs(400)
    noise = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    m = analyze(noise, y, options=QUICK)
    assert m["encoders"]["features"]["classification"]["probe_test_accuracy"] < 0.45


def test_a_baseline_that_wins_is_a_visible_warning():
    x, y = blobs(400, seed=2)
    noise = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    m = analyze(noise[:300], y[:300], x_test=noise[300:], y_test=y[300:],
                baselines={"raw": (x[:300], x[300:])}, options=QUICK)
    assert m["encoders"]["raw"]["kind"] == "baseline"
    assert m["encoders"]["raw"]["classification"]["probe_test_accuracy"] > 0.9
    assert any("raw" in w for w in m["verdict"]["warnings"]), m["verdict"]


def test_string_labels_name_the_classes():
    x, y = blobs(200, classes=3)
    names = np.array(["cat", "dog", "emu"])[y]
    m = analyze(x, names, options=QUICK)
    assert m["run"]["class_names"] == ["cat", "dog", "emu"]


def test_paired_towers_are_separate_rows_with_retrieval_between_them():
    """Image and caption features: each tower on its own (a caption naming the class must not lift the
    image's probe), cross-modal retrieval and CKA between the towers."""
    rng = np.random.default_rng(0)
    n, d = 300, 16
    shared = rng.normal(size=(n, d))
    image = shared + 0.3 * rng.normal(size=(n, d))
    caption = shared + 0.3 * rng.normal(size=(n, d))
    y = rng.integers(0, 3, n)
    m = analyze(image, y, paired=caption, towers=("image", "caption"), options=QUICK)
    assert {"features:image", "features:caption"} <= set(m["encoders"])
    assert m["encoders"]["features:image"]["tower"] == "image"
    assert "features" not in m["encoders"]
    cross = m["cross_modal"]["features"]
    assert cross["towers"] == ["image", "caption"]
    assert cross["retrieval"]["image->caption"]["R@1"] > 0.5
    assert "alignment" in cross["geometry"]
    pair = next(c for c in m["comparison"] if {c["a"], c["b"]} == {"features:image", "features:caption"})
    assert pair["cka"] > 0.7


def test_factors_are_decoded_per_factor():
    rng = np.random.default_rng(0)
    n = 400
    shape = rng.integers(0, 3, n)
    size = rng.uniform(0, 1, n)
    x = np.concatenate([np.eye(3)[shape], size[:, None], rng.normal(size=(n, 4))], axis=1)
    y = shape
    m = analyze(x[:300], y[:300], x_test=x[300:], y_test=y[300:],
                factors={"shape": shape[:300], "size": size[:300]},
                test_factors={"shape": shape[300:], "size": size[300:]}, options=QUICK)
    dec = m["encoders"]["features"]["decodability"]
    assert dec["shape"]["kind"] == "accuracy" and dec["shape"]["score"] > 0.95
    assert dec["size"]["kind"] == "r2" and dec["size"]["score"] > 0.9
    assert "decodability" not in m["skipped"]


def test_a_second_view_gives_alignment_and_uniformity():
    x, y = blobs(300)
    x2 = x + 0.05 * np.random.default_rng(4).normal(size=x.shape).astype(np.float32)
    m = analyze(x, y, x2=x2, options=QUICK)
    geo = m["encoders"]["features"]["geometry"]
    assert 0 <= geo["alignment"] < 0.1 and geo["uniformity"] < 0
    assert "pairs" not in m["skipped"]


@pytest.mark.parametrize("problem, kwargs, message", [
    ("not 2-D", dict(x=np.zeros(10)), r"shape \(N, D\)"),
    ("NaN", dict(x=np.full((10, 2), np.nan)), "NaN"),
    ("labels too short", dict(x=np.zeros((10, 2)), y=np.zeros(3)), "one value per row"),
    ("x2 of another width", dict(x=np.zeros((10, 2)), x2=np.zeros((10, 3))), "width"),
    ("factors on one split", dict(x=np.zeros((10, 2)), x_test=np.zeros((5, 2)), factors={"a": np.zeros(10)}),
     "both splits"),
])
def test_bad_arrays_are_one_line_naming_the_problem(problem, kwargs, message):
    with pytest.raises(ValueError, match=message):
        analyze(**kwargs, options=QUICK)


def _save(tmp_path, fmt: str, arrays: dict, class_names=None):
    path = tmp_path / f"f.{fmt}"
    if fmt == "npz":
        extra = {} if class_names is None else {"class_names": np.array(class_names)}
        np.savez(path, **arrays, **extra)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        meta = None if class_names is None else {"class_names": json.dumps(class_names)}
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path), metadata=meta)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        n, m = len(arrays["x"]), len(arrays["x_test"])
        table = {"x": list(np.concatenate([arrays["x"], arrays["x_test"]]).tolist()),
                 "y": np.concatenate([arrays["y"], arrays["y_test"]]).tolist(),
                 "split": ["train"] * n + ["test"] * m}
        pq.write_table(pa.table(table), path)
    return path


@pytest.mark.parametrize("fmt", ["npz", "safetensors", "parquet"])
def test_every_file_format_gives_the_same_numbers(tmp_path, fmt):
    x, y = blobs(300)
    arrays = {"x": x[:200], "y": y[:200], "x_test": x[200:], "y_test": y[200:]}
    direct = analyze(**arrays, options=QUICK)
    m = analyze_file(_save(tmp_path, fmt, arrays), options=QUICK)
    assert m["encoders"]["features"]["classification"] == pytest.approx(
        direct["encoders"]["features"]["classification"], abs=1e-6)
    assert m["items"] == {"train": 200, "test": 100}


def test_class_names_from_files(tmp_path):
    x, y = blobs(100, classes=2)
    for fmt in ("npz", "safetensors"):
        path = _save(tmp_path, fmt, {"x": x, "y": y}, class_names=["left", "right"])
        assert [str(c) for c in load_features(path)["class_names"]] == ["left", "right"]


@pytest.mark.parametrize("content, message", [
    ({"x": np.zeros((4, 2)), "x_tset": np.zeros((2, 2))}, "unknown key 'x_tset'.*x_test"),
    ({"y": np.zeros(4)}, "no features under the key 'x'"),
    ({"x": np.zeros((4, 2)), "x2_test": np.zeros((2, 2))}, "x2_test needs x_test"),
])
def test_bad_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "f.npz"
    np.savez(path, **content)
    with pytest.raises(UserError, match=message):
        load_features(path)


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "f.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="f.npz"):
        load_features(tmp_path / "f.npz")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="must be a"):
        load_features(tmp_path / "f.txt")


class PixelMean(nn.Module):
    """A user's own image encoder: pooled pixels through a linear layer."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.linear = nn.Linear(48, 16)

    def forward(self, x):
        return self.linear(self.pool(x).flatten(1))


def test_a_users_encoder_on_the_shapes_world_gets_the_invariance_report():
    torch.manual_seed(0)
    net = PixelMean().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m = analyze(encoder=net, dataset="shapes", dataset_options={"n_items": 300, "n_test": 120},
                views="simclr", options=EvalOptions(figures=False, max_items=120, invariance_items=60, pair_items=60,
                                                    stages=("head",)))
    assert {"encoder", "raw", "random_encoder"} <= set(m["encoders"])
    inv = m["encoders"]["encoder"]["invariance"]
    assert {"shape", "colour", "location"} <= set(inv)
    assert "alignment" in m["encoders"]["encoder"]["geometry"]
    assert "decodability" in m["encoders"]["encoder"]
    assert m["run"]["source"] == "encoder" and m["run"]["class_names"]
    assert net.training  # the user's module is handed back as it was
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_plain_function_is_an_encoder_too():
    m = analyze(encoder=lambda x: x.mean(dim=(2, 3)), dataset="shapes",
                dataset_options={"n_items": 200, "n_test": 80},
                options=EvalOptions(figures=False, max_items=80, invariance=False, stages=("head",)))
    assert "encoder" in m["encoders"] and "random_encoder" not in m["encoders"]
    assert "not a torch module" in m["skipped"]["random_baseline"]


def test_an_encoder_needs_its_data():
    with pytest.raises(ValueError, match="needs a dataset"):
        analyze(encoder=lambda x: x)
    with pytest.raises(ValueError, match="either features"):
        analyze(np.zeros((4, 2)), encoder=lambda x: x)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "contrastlab", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.mark.slow
def test_analyze_command_writes_metrics_figures_and_a_report(tmp_path):
    rng = np.random.default_rng(0)
    x, y = blobs(300)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "emb.npz", x=x, y=np.array(["a", "b", "c", "d"])[y], images=images)
    r = cli("analyze", "emb.npz", "--out", "analysis", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "analysis"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["encoders"]["features"]["classification"]["probe_test_accuracy"] > 0.9
    assert any(name.startswith("neighbours_features") for name in metrics["figures"])
    html = (out / "report.html").read_text()
    assert "features" in html and "data:image/png;base64," in html
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = cli("analyze", "emb.npz", "--out", "analysis", cwd=tmp_path)  # an analysis is never replaced unasked
    assert r.returncode == 2 and "--overwrite" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.slow
def test_compare_command_known_answers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12))
    q = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    np.savez(tmp_path / "a.npz", x=x, paired=rng.normal(size=(300, 12)))
    np.savez(tmp_path / "b.npz", x=3.0 * x @ q + 1.0)
    r = cli("compare", "a.npz", "b.npz", "-o", "cmp.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    same = json.loads((tmp_path / "cmp.json").read_text())
    assert same["cka"] == pytest.approx(1.0, abs=1e-6) and same["mutual_knn"] == pytest.approx(1.0)
    # The rest in this process (the catalogue in tests/test_bad_inputs.py runs the errors as subprocesses).
    from contrastlab.evaluation.representations import compare_sources

    assert abs(compare_sources(f"{tmp_path}/a.npz:paired", f"{tmp_path}/b.npz")["cka"]) < 0.1
    with pytest.raises(UserError, match="'nope'"):
        compare_sources(f"{tmp_path}/a.npz:nope", f"{tmp_path}/b.npz")
    np.savez(tmp_path / "c.npz", x=x[:100])
    with pytest.raises(UserError, match="same items"):
        compare_sources(f"{tmp_path}/a.npz", f"{tmp_path}/c.npz")
