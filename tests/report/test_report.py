import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from contrastlab.errors import UserError
from contrastlab.plots import png_bytes, training_curves
from contrastlab.report import build_report, load_evaluated, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def encoder(kind, stage, acc, align=None, invariance=True):
    out = {"kind": kind, "stage": stage, "dim": 8, "towers": {"image": 8},
           "classification": {"probe_train_accuracy": acc + 0.05, "probe_test_accuracy": acc,
                              "knn5_accuracy": acc - 0.1, "knn200_accuracy": acc - 0.05},
           "geometry": {"norms": {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}, "effective_rank": 5.5}}
    if align is not None:
        out["geometry"].update({"alignment": align, "uniformity": -3.1, "pairs": 100})
    if invariance:
        out["invariance"] = {
            "colour": {"factors": ["colour"], "score": 0.05, "purity": 0.13, "chance": 0.125, "label": "invariant"},
            "location": {"factors": ["x", "y"], "score": 0.97, "purity": 0.6, "chance": 0.06, "label": "sensitive"},
        }
    return out


def make_evaluated(root: Path, name: str, acc: float, lr: float) -> Path:
    run = root / name
    (run / "eval").mkdir(parents=True)
    fig = training_curves({"step": np.arange(5.0), "loss": np.linspace(2, 1, 5) * acc})
    (run / "eval" / "curves.png").write_bytes(png_bytes(fig))
    metrics = {
        "run": {"run_dir": str(run), "objective": "nt_xent", "dataset": "shapes",
                "config": {"optim": {"lr": lr, "name": "adamw"}, "steps": 100, "note": "<b>not bold</b>"}},
        "items": {"train": 100, "test": 50},
        "encoders": {"head": encoder("trained", "head", acc, align=0.4),
                     "backbone": encoder("trained", "backbone", acc + 0.02, align=0.9),
                     "raw": encoder("baseline", None, 0.3)},
        "figures": {"curves": "curves.png", "tsne_head": "tsne_head.png"},  # the second file is missing
        "seconds": 1.0,
    }
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return run


@pytest.fixture
def runs(tmp_path):
    return [make_evaluated(tmp_path, "run-a", 0.8, 0.001), make_evaluated(tmp_path, "run-b", 0.6, 0.01)]


def test_page_is_self_contained(runs, tmp_path):
    html = build_report(runs)
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    sources = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(sources) == 2 + 1  # the curves of both runs and the alignment-uniformity scatter
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html  # config values are escaped
    assert html.count("not available for this run") == 2  # the missing t-SNE, one per run


def test_runs_side_by_side(runs):
    html = build_report(runs, title="two runs")
    assert "<title>two runs</title>" in html
    metrics = re.search(r'<table class="metrics">(.*?)</table>', html, re.S).group(1)
    assert '<th colspan="3">run-a</th>' in metrics and '<th colspan="3">run-b</th>' in metrics
    probe_row = re.search(r"linear probe, test accuracy</td>(.*?)</tr>", metrics).group(1)
    assert re.findall(r"<td>([^<]*)</td>", probe_row) == ["0.8000", "0.8200", "0.3000", "0.6000", "0.6200", "0.3000"]
    config = re.search(r'<table class="config">(.*?)</table>', html, re.S).group(1)
    assert re.search(r"<tr class=diff><td class=\"key\">optim.lr</td>", config)  # differs between runs
    assert "<tr><td class=\"key\">steps</td>" in config  # the same in both
    assert html.count('<table class="invariance">') == 2
    assert 'class="invariant">invariant<' in html and 'class="sensitive">sensitive<' in html


def test_duplicate_run_names_are_told_apart(tmp_path):
    a = make_evaluated(tmp_path / "x", "run", 0.5, 0.1)
    b = make_evaluated(tmp_path / "y", "run", 0.5, 0.1)
    html = build_report([a, b])
    assert "run (2)" in html


def test_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_report([tmp_path / "nowhere"])
    (tmp_path / "bare").mkdir()
    with pytest.raises(UserError, match=r"bare/eval/metrics.json does not exist: run `contrastlab eval"):
        load_evaluated(tmp_path / "bare")
    (tmp_path / "bad" / "eval").mkdir(parents=True)
    (tmp_path / "bad" / "eval" / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match="metrics.json is not valid JSON"):
        load_evaluated(tmp_path / "bad")
    with pytest.raises(UserError, match="at least one"):
        build_report([])


_PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const b = document.body;
  b.setAttribute("data-images", images.length);
  b.setAttribute("data-loaded", images.filter(i => i.complete && i.naturalWidth > 0).length);
  b.setAttribute("data-tables", document.querySelectorAll("table").length);
  b.setAttribute("data-rows", document.querySelectorAll("table.metrics tr").length);
});
</script>"""


def chromium(*args, profile):
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_chromium_loads_every_figure_and_table(runs, tmp_path):
    report = write_report(runs, tmp_path / "out" / "report.html")
    probed = tmp_path / "probed.html"  # a copy with a small script that records what loaded
    probed.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = chromium("--dump-dom", probed.as_uri(), profile=profile)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert int(attrs["images"]) == 3
    assert attrs["loaded"] == attrs["images"]
    assert int(attrs["tables"]) == 1 + 2 + 1  # metrics, two invariance tables, configuration
    assert int(attrs["rows"]) > 10

    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        chromium(f"--screenshot={shot}", "--window-size=1200,1600", report.as_uri(), profile=profile)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels[..., :3].std() > 0.05  # not a blank page
