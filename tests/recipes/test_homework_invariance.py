"""The homework's invariance experiment at quick scale, through the command line, as a user runs it."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "hw"
    r = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "homework-invariance", "--scale", "quick",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def _checks(out):
    summary = json.loads((out / "summary.json").read_text())
    return {c["claim"]: c for c in summary["checks"]}


def test_prints_the_invariance_table_and_the_report_path(recipe_dir):
    out, stdout = recipe_dir
    assert "Invariance of the head features" in stdout
    assert f"report: {out / 'report.html'}" in stdout
    html = (out / "report.html").read_text()
    assert "Recipe homework-invariance" in html and "<img" in html


def test_encoders_learn_the_invariances_their_views_teach(recipe_dir):
    checks = _checks(recipe_dir[0])
    # The robust predictions of worked answer 8b, with wide margins at this scale (scores ~0.15 vs ~0.9).
    for claim in ("encoder A is invariant to colour", "encoder B is invariant to location",
                  "encoder C is sensitive to colour", "A is more invariant to colour than the autoencoder"):
        assert checks[claim]["passed"], checks[claim]


def test_every_run_was_evaluated_with_baselines(recipe_dir):
    out, _ = recipe_dir
    for run in ("autoencoder", "A", "B", "C"):
        metrics = json.loads((out / "runs" / run / "eval" / "metrics.json").read_text())
        assert {"head", "raw", "random_head"} <= set(metrics["encoders"])
        assert metrics["encoders"]["head"]["invariance"]["colour"]["score"] is not None


def test_an_existing_recipe_folder_is_refused_and_left_alone(recipe_dir):
    out, _ = recipe_dir
    before = sorted(p.name for p in out.iterdir())
    r = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "homework-invariance", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--overwrite" in r.stderr and str(out) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == before
