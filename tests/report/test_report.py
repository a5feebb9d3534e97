import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from contrastlab.errors import UserError
from contrastlab.plots import neighbour_grid, png_bytes, training_curves
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
    """A run folder with an evaluation in the format written before towers had rows (no verdict, no
    cross_modal, no comparison)."""
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


# -- evaluations in the current format: towers as rows, cross-modal measures, comparisons, class names

@cache
def grid_png() -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes(neighbour_grid(rng.random((6, 3, 8, 8)), [0, 1], [[1, 2], [3, 4]], [[0.9, 0.8], [0.7, 0.6]],
                                    labels=[0, 1, 0, 2, 1, 1], class_names=["cat", "dog", "emu"]))


@cache
def curves_png() -> bytes:
    return png_bytes(training_curves({"step": np.arange(5.0), "loss": np.linspace(2, 1, 5)}))


def row(kind, probe=None, *, tower=None, dim=16, rank=8.0, uniformity=-3.0, alignment=0.5, factors=True):
    out = {"kind": kind, "stage": None, "tower": tower, "dim": dim, "towers": {tower or "image": dim},
           "geometry": {"norms": {"mean": 1.0}, "effective_rank": rank}}
    if alignment is not None:
        out["geometry"].update(alignment=alignment, uniformity=uniformity, pairs=100)
    if probe is not None:
        out["classification"] = {"probe_train_accuracy": min(1.0, probe + 0.1), "probe_test_accuracy": probe,
                                 "knn5_accuracy": probe - 0.05, "knn200_accuracy": probe - 0.02}
    if factors:
        out["invariance"] = {
            "colour": {"factors": ["colour"], "score": 0.05, "purity": 0.13, "chance": 0.125, "label": "invariant"},
            "location": {"factors": ["x", "y"], "score": 0.97, "purity": 0.6, "chance": 0.06, "label": "sensitive"}}
        out["decodability"] = {"colour": {"kind": "accuracy", "score": 0.91, "chance": 0.125, "factors": ["colour"]},
                               "location": {"kind": "r2", "score": 0.8, "chance": 0.0, "factors": ["x", "y"]}}
    return out


def retrieval(r1, n=200):
    return {"image->caption": {"R@1": r1, "R@5": min(1, 3 * r1), "R@10": min(1, 4 * r1),
                              "median_rank": 3, "candidates": n},
            "caption->image": {"R@1": r1 - 0.02, "R@5": min(1, 3 * r1), "R@10": min(1, 4 * r1),
                              "median_rank": 4, "candidates": n}}


def clip_like() -> dict:
    """Image and caption towers as separate rows, retrieval across them, class names, no factors."""
    encoders = {}
    for stage, probe in (("head", 0.62), ("backbone", 0.55)):
        for tower, shift in (("image", 0.0), ("caption", -0.04)):
            encoders[f"{stage}:{tower}"] = row("trained", probe + shift, tower=tower, factors=False)
    encoders["raw:image"] = row("baseline", 0.30, tower="image", dim=192, rank=40.0, alignment=None, factors=False)
    for tower in ("image", "caption"):
        encoders[f"random_head:{tower}"] = row("baseline", 0.33, tower=tower, factors=False)
    return {
        "run": {"run_dir": "runs/clip", "source": "run", "objective": "clip", "dataset": "captioned-shapes",
                "step": 200, "config": {"objective": {"name": "clip"}}, "class_names": ["cat", "dog", "<b>bird</b>"]},
        "items": {"train": 400, "test": 200}, "selection": {"test": "all 200"},
        "skipped": {"invariance": "the data has no generative factors to resample",
                    "decodability": "the data has no generative factors"},
        "encoders": encoders,
        "cross_modal": {
            "head": {"towers": ["image", "caption"], "retrieval": retrieval(0.41),
                     "cca": {"image|caption": {"mean": 0.61, "top": [0.95, 0.9, 0.8]}},
                     "geometry": {"alignment": 0.7, "uniformity": -3.0}},
            "random_head": {"towers": ["image", "caption"], "retrieval": retrieval(0.03),
                            "cca": {"image|caption": {"mean": 0.2, "top": [0.5, 0.3]}}},
            "backbone": {"towers": ["image", "caption"], "cca": {"image|caption": {"mean": 0.4, "top": [0.8]}}}},
        "comparison": [
            {"a": "head:image", "b": "backbone:image", "cka": 0.71, "cka_biased": 0.75, "mutual_knn": 0.4,
             "mutual_knn_chance": 0.05, "svcca": 0.6, "svcca_dims": [16, 16], "items": 200},
            {"a": "head:image", "b": "head:caption", "cka": 0.52, "cka_biased": 0.55, "mutual_knn": 0.2,
             "mutual_knn_chance": 0.05, "svcca": None, "svcca_dims": [16, 16], "items": 200}],
        "figures": {"curves": "curves.png", "neighbours_head-image_test": "neighbours_head-image_test.png",
                    "neighbours_head-image_train": "neighbours_head-image_train.png",
                    "hypersphere_head-image": "hypersphere_head-image.png"},
        "seconds": 2.0,
    }


def losing() -> dict:
    """A trained encoder that loses to its raw inputs, with a collapsed random head; Shapes-like factors."""
    return {
        "run": {"run_dir": "runs/lose", "source": "run", "objective": "nt_xent", "dataset": "shapes", "step": 50,
                "config": {"steps": 50}, "class_names": ["circle", "square", "triangle"]},
        "items": {"train": 800, "test": 800},
        "skipped": {"retrieval": "one tower only: there is nothing to retrieve across"},
        "encoders": {"head": row("trained", 0.30, dim=128, rank=60.0, uniformity=-3.8, alignment=0.4),
                     "backbone": row("trained", 0.33, dim=1024, rank=300.0, uniformity=-2.3, alignment=0.6),
                     "raw": row("baseline", 0.40, dim=3072, rank=375.0, alignment=None),
                     "random_head": row("baseline", 0.31, dim=128, rank=1.1, uniformity=-0.002, alignment=0.0001),
                     "random_backbone": row("baseline", 0.35, dim=1024, rank=300.0, uniformity=-2.0, alignment=0.3)},
        "cross_modal": {},
        "comparison": [{"a": "head", "b": "backbone", "cka": 0.8, "cka_biased": 0.82, "mutual_knn": 0.3,
                        "mutual_knn_chance": 0.01, "svcca": 0.7, "svcca_dims": [32, 32], "items": 800}],
        "figures": {"curves": "curves.png", "neighbours_backbone_test": "neighbours_backbone_test.png",
                    "neighbours_backbone_train": "neighbours_backbone_train.png",
                    "neighbours_head_test": "neighbours_head_test.png", "invariance": "invariance.png"},
        "seconds": 3.0,
    }


def unlabelled() -> dict:
    """Features analysed from a file (``contrastlab analyze``): no labels, no factors, no images, no baselines."""
    return {
        "run": {"run_dir": None, "source": "features", "objective": None, "dataset": "feats.npz", "step": None,
                "config": None},
        "items": {"train": 300, "test": 100},
        "skipped": {"linear_probe": "the data set has no labels", "knn": "the data set has no labels",
                    "clustering": "the data set has no labels",
                    "invariance": "features alone cannot be re-rendered with one factor changed",
                    "decodability": "the data has no generative factors",
                    "retrieval": "one tower only: there is nothing to retrieve across",
                    "comparison": "one encoder only: nothing to compare it with",
                    "pairs": "no positive pairs (a second view of each item) to measure alignment and uniformity on",
                    "baselines": "no baseline features were given"},
        "encoders": {"features": row("trained", None, dim=32, rank=20.0, alignment=None, factors=False)},
        "cross_modal": {}, "comparison": [], "figures": {}, "seconds": 0.5,
    }


def write_evaluation(folder: Path, metrics: dict) -> Path:
    """``metrics.json`` and every PNG it names into ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, file in metrics["figures"].items():
        (folder / file).write_bytes(grid_png() if name.startswith("neighbours") else curves_png())
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def make_run(root: Path, name: str, metrics: dict) -> Path:
    write_evaluation(root / name / "eval", metrics)
    return root / name


def section(html: str, id_: str) -> str:
    return re.search(rf'<section[^>]* id="{id_}">(.*?)</section>', html, re.S).group(1)


def text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))


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
    verdicts = section(html, "verdict")  # one box per run, computed for these older files
    assert verdicts.count('class="verdict-box') == 2 and "<h3>run-a</h3>" in verdicts and "<h3>run-b</h3>" in verdicts
    assert "Yes: the trained backbone beats its baselines" in verdicts
    summary = re.search(r'<table class="rows">(.*?)</table>', html, re.S).group(1)
    assert summary.count('<tr class="baseline">') == 2 and summary.count("<td class=\"key\">run-b</td>") == 3


def test_the_answer_comes_first(tmp_path):
    html = build_report([make_run(tmp_path, "lose", losing())])
    body = html[html.index("<main>"):]
    order = re.findall(r'<section[^>]* id="([\w-]+)"', body)
    assert order == ["verdict", "neighbours", "summary", "invariance", "cross-modal", "information", "sets",
                     "comparison", "alignment-uniformity", "figures", "metrics", "configuration"]
    assert re.match(r'<main>\s*<section class="verdict" id="verdict">', body)
    verdict = text(section(html, "verdict"))
    assert "No: the best trained row, the backbone, does not beat its baselines" in verdict
    assert "circle, square, triangle" in verdict  # the classes, by name
    warnings = re.findall(r'<p class="warning"><span class="mark" aria-hidden="true">⚠</span> ([^<]*)</p>', html)
    assert len(warnings) == 3  # head and backbone lose to the raw inputs; the random head collapsed
    assert any("The random head looks collapsed (effective rank 1.1 of 128 dimensions" in w for w in warnings)
    # the best trained row's grids lead, test then train; the head's grid waits in "More figures"
    grids = section(html, "neighbours")
    assert grids.index("neighbours_backbone_test (lose)") < grids.index("neighbours_backbone_train (lose)")
    assert "neighbours_head_test" not in grids and "neighbours_head_test" in section(html, "figures")
    summary = section(html, "summary")
    assert re.search(r'<tr class="loses"><td class="key">head</td>', summary)
    assert "⚠ loses to raw (-0.100 on linear-probe test accuracy)" in summary
    assert re.search(r'<tr class="best loses"><td class="key">backbone</td>', summary)
    assert re.search(r'<tr class="collapsed baseline"><td class="key">random_head</td>', summary)
    invariance = section(html, "invariance")
    assert "<th>decodable (chance)</th>" in invariance and "0.9100 <small>acc</small> (0.1250)" in invariance
    assert "0.8000 <small>R²</small> (0.0000)" in invariance and "invariance (lose)" in invariance
    assert "one tower only: there is nothing to retrieve across" in section(html, "cross-modal")
    assert "<td>0.8000</td>" in section(html, "comparison")
    assert "Hollow grey points are collapsed rows" in section(html, "alignment-uniformity")
    assert html.count('alt="invariance (lose)"') == 1  # each figure once


def test_towers_as_rows_and_cross_modal_retrieval(tmp_path):
    html = build_report([make_run(tmp_path, "clip", clip_like())])
    verdict = text(section(html, "verdict"))
    assert "Yes: the trained head (image tower) beats its baselines" in verdict
    assert "Cross-modal retrieval with the head: recall@1 0.400" in verdict
    assert "cat, dog, &lt;b&gt;bird&lt;/b&gt;" in section(html, "verdict")  # class names, escaped
    summary = section(html, "summary")
    for name in ("head:image", "head:caption", "backbone:image", "backbone:caption", "raw:image",
                 "random_head:image", "random_head:caption"):
        assert f'<td class="key">{name}</td>' in summary
    assert "neighbours_head-image_test (clip)" in section(html, "neighbours")
    cross = section(html, "cross-modal")
    assert cross.count("image-&gt;caption") == 2 and cross.count("caption-&gt;image") == 2
    assert '<tr class="baseline"><td class="key">random_head</td>' in cross
    assert "<td>0.0050</td>" in cross  # chance recall@1 among 200 candidates
    assert re.search(r'<table class="cca">.*backbone.*0\.4000', cross, re.S)
    comparison = section(html, "comparison")
    assert "head:caption" in comparison and "0.4000 (0.0500)" in comparison and "0.6000 (16 × 16)" in comparison
    assert "not shown: the data has no generative factors to resample" in section(html, "invariance")
    assert "Nearest neighbours of the head:image features on the test split" in html
    assert "head:image features on the circle" in section(html, "figures")


def test_every_section_that_cannot_be_shown_says_why(tmp_path):
    folder = write_evaluation(tmp_path / "analysis", unlabelled())  # what contrastlab analyze writes
    html = build_report([folder])
    ids = re.findall(r'<section[^>]* id="([\w-]+)"', html)
    why = {i: m.group(1) for i in ids if (m := re.search(r'<p class="why">([^<]*)</p>', section(html, i)))}
    assert why == {
        "neighbours": "no figures were written for this evaluation",
        "invariance": "not shown: features alone cannot be re-rendered with one factor changed",
        "cross-modal": "not shown: one tower only: there is nothing to retrieve across",
        "information": "not shown: one tower only",
        "sets": "not shown: no labels and no second view of the items to form sets from, or a file written before "
                "the geometry of sets was measured",
        "comparison": "not shown: one encoder only: nothing to compare it with",
        "alignment-uniformity": "not shown: no positive pairs (a second view of each item) to measure alignment "
                                "and uniformity on",
        "figures": "no figures were written",
        "configuration": "No configuration: these features were not trained by contrastlab.",
    }
    notes = section(html, "verdict")
    assert "Skipped linear probe, knn and clustering: the data set has no labels." in notes
    assert "features from <code>feats.npz</code>" in notes
    metrics = losing()
    metrics["figures"] = {"curves": "curves.png"}
    html = build_report([make_run(tmp_path, "no-images", metrics)])
    assert "no images: the items are not images, so there are no neighbour grids" in section(html, "neighbours")


def test_an_evaluation_is_found_from_its_run_folder_its_own_folder_or_its_file(tmp_path):
    run = make_run(tmp_path, "clip", clip_like())
    by_run, by_folder, by_file = (load_evaluated(p) for p in (run, run / "eval", run / "eval" / "metrics.json"))
    assert by_run.name == by_folder.name == by_file.name == "clip"
    assert by_run.figures == by_folder.figures == by_file.figures
    folder = write_evaluation(tmp_path / "analysis", unlabelled())
    assert load_evaluated(folder).name == "analysis" and load_evaluated(folder / "metrics.json").name == "analysis"
    metrics = unlabelled()
    metrics["figures"] = {"leak": "../clip/eval/curves.png"}  # figures must stay inside the evaluation's folder
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=re.escape(f"{folder / 'metrics.json'}: figure 'leak' must be a PNG file")):
        load_evaluated(folder / "metrics.json")


def test_the_stored_verdict_is_shown_and_nothing_from_the_file_is_markup(tmp_path):
    metrics = losing()
    evil = '<img src=x onerror=alert(1)><script>alert(2)</script>'
    metrics["verdict"] = {"headline": f"stored {evil}", "best": "backbone", "warnings": [f"warned {evil}"],
                          "notes": [f"noted {evil}"]}
    metrics["run"]["class_names"] = [evil]
    metrics["skipped"] = {"comparison": evil}
    metrics["comparison"] = []
    metrics["encoders"][evil] = row("trained", 0.5)
    metrics["encoders"][evil]["invariance"] = {evil: {"score": 0.1, "label": evil, "factors": [evil]}}
    metrics["cross_modal"] = {evil: {"towers": ["a", "b"], "retrieval": {evil: {"R@1": 0.5, "candidates": 9}},
                                     "cca": {evil: {"mean": 0.3, "top": [evil]}}}}
    html = build_report([make_run(tmp_path, "evil", metrics)])
    assert "<script" not in html and "<img src=x" not in html and "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    verdict = text(section(html, "verdict"))
    assert "stored &lt;img" in verdict and "warned &lt;img" in verdict and "noted &lt;img" in verdict


def test_every_figure_enlarges_on_click_and_is_embedded_once(tmp_path):
    html = build_report([make_run(tmp_path, "lose", losing()), make_run(tmp_path, "clip", clip_like())])
    images = re.findall(r"<img[^>]*>", html)
    toggles = re.findall(r'<label class="zoom"[^>]*><input type="checkbox" aria-label="[^"]*"><img [^>]*></label>', html)
    assert len(images) == len(toggles) == 5 + 4 + 1  # every figure of both runs, once each, and the scatter
    for run, metrics in (("lose", losing()), ("clip", clip_like())):
        for name in metrics["figures"]:
            assert html.count(f'alt="{name} ({run})"') == 1, name
    assert ".zoom input:checked + img" in html  # the style that shows it over the whole window


def test_a_recipe_preamble_stays_on_top(runs):
    html = build_report(runs, preamble="<h2>Recipe demo</h2><p>our own answer</p>")
    body = html[html.index("<main>"):]
    assert body.index("Recipe demo") < body.index('id="verdict"') < body.index('id="summary"')


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


def test_duplicate_run_names_are_told_apart(tmp_path):
    a = make_evaluated(tmp_path / "x", "run", 0.5, 0.1)
    b = make_evaluated(tmp_path / "y", "run", 0.5, 0.1)
    html = build_report([a, b])
    assert "run (2)" in html


_PROBE = """<script>
window.addEventListener("load", () => {
  const b = document.body, set = (k, v) => b.setAttribute("data-" + k, String(v));
  const images = Array.from(document.images);
  set("images", images.length);
  set("loaded", images.filter(i => i.complete && i.naturalWidth > 0).length);
  set("toggles", images.filter(i => i.parentElement.matches("label.zoom")
      && i.previousElementSibling && i.previousElementSibling.matches("input[type=checkbox]")).length);
  set("first", document.querySelector("main").firstElementChild.id);
  set("tables", document.querySelectorAll("table").length);
  const w = document.querySelector(".warning"), r = w.getBoundingClientRect(), style = getComputedStyle(w);
  set("warning", [Math.round(r.top), Math.round(r.height), style.display, style.visibility,
                  style.backgroundColor.replace(/[^0-9,]/g, "")].join("|"));
  const label = document.querySelector("label.zoom"), img = label.querySelector("img");
  label.click();
  set("open", [getComputedStyle(img).position, Math.round(img.getBoundingClientRect().width), innerWidth].join("|"));
  label.click();
  set("closed", getComputedStyle(img).position);
});
</script>"""


def chromium(*args, profile):
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--window-size=1200,900"]
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_headless_chromium_shows_the_verdict_first_and_every_figure(tmp_path):
    report = write_report([make_run(tmp_path, "lose", losing()), make_run(tmp_path, "clip", clip_like())],
                          tmp_path / "out" / "report.html")
    probed = tmp_path / "probed.html"  # a copy with a small script that records what the browser sees
    probed.write_text(report.read_text().replace("</body>", _PROBE + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = chromium("--dump-dom", probed.as_uri(), profile=profile)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    seen = dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))
    assert seen["first"] == "verdict"  # the first thing in the page's main part
    assert int(seen["images"]) == 10 and seen["loaded"] == seen["images"] == seen["toggles"]
    top, height, display, visibility, background = seen["warning"].split("|")
    assert 0 < int(top) < 900 and int(height) > 10 and display == "block" and visibility == "visible"
    assert background == "255,241,201"  # the warning's amber box
    position, width, window = seen["open"].split("|")
    assert position == "fixed" and int(width) == int(window)  # a click shows the figure over the whole window
    assert seen["closed"] == "static"  # and a second click puts it back
    assert int(seen["tables"]) >= 8

    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile:
        chromium(f"--screenshot={shot}", report.as_uri(), profile=profile)
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 0.05  # not a blank page
    amber = np.abs(pixels - np.array([255, 241, 201]) / 255).max(axis=-1) < 0.02
    assert amber.sum() > 5000  # the warning box is on screen above the fold


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
    "cross-modal-a-list": _edit(lambda m: m.update(cross_modal=[1])),
    "cross-modal-retrieval-text": _edit(lambda m: m.update(cross_modal={"head": {"retrieval": "R@1 = 1"}})),
    "cross-modal-direction-a-number": _edit(lambda m: m.update(cross_modal={"head": {"retrieval": {"a->b": 1}}})),
    "comparison-a-mapping": _edit(lambda m: m.update(comparison={"a": "head"})),
    "verdict-headline-a-number": _edit(lambda m: m.update(verdict={"headline": 5})),
    "verdict-warnings-text": _edit(lambda m: m.update(verdict={"headline": "ok", "warnings": "careful"})),
    "class-names-numbers": _edit(lambda m: m["run"].update(class_names=[0, 1])),
    "decodability-a-list": _edit(lambda m: m["encoders"]["head"].update(decodability=[1])),
    "decodability-factor-a-number": _edit(lambda m: m["encoders"]["head"].update(decodability={"colour": 0.9})),
    "tower-a-number": _edit(lambda m: m["encoders"]["head"].update(tower=3)),
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


def test_sets_and_what_the_towers_share_are_tables_per_run(tmp_path):
    """The homework's geometry of sets and the PID of two towers, each a table; a hostile target name is escaped."""
    metrics = losing()
    metrics["encoders"]["head"]["sets"] = {
        "classes": {"sets": 5, "median_diameter": 1.2, "median_margin": 0.4, "separated_share": 0.2, "min_size": 30,
                    "tammes": {"min_angle": 60.0, "reference_angle": 104.48, "ratio": 0.574, "centre_norm_mean": 0.5,
                               "reference_how": "exact"}},
        "augmentations": {"sets": 200, "median_diameter": 0.1, "median_margin": 0.3, "separated_share": 0.9,
                          "min_size": 2}}
    pid = {"redundancy": 0.5, "unique_1": 0.25, "unique_2": 0.125, "synergy": 0.0625, "mi_joint": 0.9375,
           "noise_synergy": 0.01}
    metrics["cross_modal"] = {"head": {"towers": ["image", "text"], "pid": {"<b>label</b>": pid},
                                       "sets": {"sets": 200, "median_diameter": 0.7, "median_margin": 0.2,
                                                "separated_share": 0.1, "min_size": 2}}}
    html = build_report([make_run(tmp_path, "two-towers", metrics)])
    sets = text(section(html, "sets"))
    assert "classes" in sets and "augmentations of an item" in sets and "head (across towers)" in sets
    assert "0.5740" in sets and "104.4800" in sets, sets
    info = section(html, "information")
    assert "&lt;b&gt;label&lt;/b&gt;" in info and "<b>label" not in info
    assert all(f"{v:.4f}" in text(info) for v in (0.5, 0.25, 0.125, 0.0625, 0.9375))
