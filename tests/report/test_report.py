import base64
import json
import re
import shutil
import subprocess
import sys
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


# -- untrusted metrics.json: a malformed file and figure paths outside eval/ are refused in one line

REAL_METRICS = Path(__file__).parent / "data" / "eval_metrics.json"  # written by `contrastlab eval` on a tiny run


def test_a_real_evaluation_loads(tmp_path):
    (tmp_path / "run" / "eval").mkdir(parents=True)
    (tmp_path / "run" / "eval" / "metrics.json").write_text(REAL_METRICS.read_text())
    run = load_evaluated(tmp_path / "run")
    assert set(run.figures) == set(json.loads(REAL_METRICS.read_text())["figures"])
    assert all(path.parent == (tmp_path / "run" / "eval").resolve() for path in run.figures.values())
    html = build_report([tmp_path / "run"])
    assert html.count("not available for this run") == len(run.figures)  # the PNG files were not copied


def _edit(change):
    def text(metrics: dict) -> str:
        change(metrics)
        return json.dumps(metrics)
    return text


def _deep_config(metrics: dict) -> str:
    metrics["run"]["config"] = "@"
    return json.dumps(metrics).replace('"@"', '{"a": ' * 900 + "1" + "}" * 900)


MALFORMED = {
    "config-a-number": _edit(lambda m: m["run"].update(config=5)),
    "figures-a-number": _edit(lambda m: m.update(figures=5)),
    "figure-file-a-number": _edit(lambda m: m.update(figures={"a": 5})),
    "encoder-a-number": _edit(lambda m: m["encoders"].update(x=5)),
    "geometry-a-number": _edit(lambda m: m["encoders"]["head"].update(geometry=5)),
    "classification-a-list": _edit(lambda m: m["encoders"]["head"].update(classification=[1])),
    "items-null": _edit(lambda m: m.update(items=None)),
    "run-null": _edit(lambda m: m.update(run=None)),
    "encoders-missing": _edit(lambda m: m.pop("encoders")),
    "item-count-markup": _edit(lambda m: m["items"].update(train="<script>alert(1)</script>")),
    "alignment-text": _edit(lambda m: m["encoders"]["head"]["geometry"].update(alignment="0.4")),
    "invariance-a-list": _edit(lambda m: m["encoders"]["head"].update(invariance=[1])),
    "invariance-factors-a-number": _edit(lambda m: m["encoders"]["head"]["invariance"]["colour"].update(factors=5)),
    "config-nested-900-deep": _deep_config,
    "a-list": lambda m: "[1, 2]",
    "100000-brackets": lambda m: "[" * 100_000,
    "huge-integer": lambda m: '{"encoders": {}, "items": {"train": ' + "9" * 5000 + "}}",
    "alignment-infinite": _edit(lambda m: m["encoders"]["head"]["geometry"].update(alignment=float("inf"))),
    "alignment-nan": _edit(lambda m: m["encoders"]["head"]["geometry"].update(alignment=float("nan"))),
    "alignment-400-digits": _edit(lambda m: m["encoders"]["head"]["geometry"].update(alignment=10**400)),
}


@pytest.mark.parametrize("variant", list(MALFORMED))
def test_malformed_metrics_is_one_user_error_naming_the_file(tmp_path, variant):
    run = make_evaluated(tmp_path, "run", 0.8, 0.001)
    path = run / "eval" / "metrics.json"
    path.write_text(MALFORMED[variant](json.loads(path.read_text())))
    with pytest.raises(UserError, match=re.escape(str(path))) as err:
        load_evaluated(run)
    assert re.search(r"is not (valid JSON|an evaluation written by contrastlab eval)", str(err.value))
    with pytest.raises(UserError):
        write_report([run], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_the_message_says_what_is_wrong(tmp_path):
    run = make_evaluated(tmp_path, "run", 0.8, 0.001)
    path = run / "eval" / "metrics.json"
    path.write_text(MALFORMED["figures-a-number"](json.loads(path.read_text())))
    with pytest.raises(UserError) as err:
        load_evaluated(run)
    assert str(err.value) == (f"{path} is not an evaluation written by contrastlab eval: "
                              "'figures' must map names to PNG files, got 5")


SECRET = b"\x89PNG\r\n\x1a\n top secret, not part of any run"


def _plant(run: Path, tmp_path: Path, how: str) -> str:
    """Point the figure 'leak' of ``run`` at a file outside its eval/ folder; returns the path written."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    file = {"absolute": str(secret), "dotdot": "../../secret.png", "etc-passwd": "/etc/passwd",
            "symlink": "leak.png", "not-png": "notes.txt", "eval-itself": "."}[how]
    if how == "symlink":
        (run / "eval" / "leak.png").symlink_to(secret)
    if how == "not-png":
        (run / "eval" / "notes.txt").write_text("private notes")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    metrics["figures"]["leak"] = file
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return file


@pytest.mark.parametrize("how", ["absolute", "dotdot", "etc-passwd", "symlink", "not-png", "eval-itself"])
def test_figures_outside_eval_are_refused_and_never_embedded(tmp_path, how):
    run = make_evaluated(tmp_path, "run", 0.8, 0.001)
    file = _plant(run, tmp_path, how)
    with pytest.raises(UserError) as err:
        load_evaluated(run)
    message = str(err.value)
    assert str(run / "eval" / "metrics.json") in message and "'leak'" in message and repr(file) in message
    with pytest.raises(UserError):
        write_report([run], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_a_symlink_to_a_figure_inside_eval_is_embedded(tmp_path):
    run = make_evaluated(tmp_path, "run", 0.8, 0.001)
    (run / "eval" / "alias.png").symlink_to("curves.png")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    metrics["figures"]["tsne_head"] = "alias.png"
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    html = build_report([run])
    assert "not available for this run" not in html
    assert len(re.findall(r"<img[^>]* src=", html)) == 2 + 1  # curves twice and the scatter


def test_cli_refuses_a_planted_figure_in_one_line(tmp_path):
    run = make_evaluated(tmp_path, "run", 0.8, 0.001)
    _plant(run, tmp_path, "etc-passwd")
    r = subprocess.run([sys.executable, "-m", "contrastlab", "report", "run", "-o", "r.html"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("contrastlab: error: "), r.stderr
    assert "run/eval/metrics.json" in lines[0] and "'/etc/passwd'" in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "r.html").exists()
