"""Images and spoken captions at quick scale, through the command line (needs espeak-ng)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the captions")]


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("recipe") / "av"
    # The speech cache outlives the test session (pytest's cache folder), so re-runs skip the synthesis.
    cache = getattr(request.config, "cache", None)
    speech = cache.mkdir("contrastlab-speech") if cache is not None else tmp_path_factory.mktemp("speech")
    env = {**os.environ, "CONTRASTLAB_CACHE": str(speech)}
    r = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "audio-visual", "--scale", "quick",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _checks(out):
    return {c["claim"]: c for c in _summary(out)["checks"]}


def test_prints_the_retrieval_table_and_the_report_path(recipe_dir):
    out, stdout = recipe_dir
    assert "Cross-modal retrieval on 150 held-out pairs" in stdout
    assert f"report: {out / 'report.html'}" in stdout


def test_semi_hard_negatives_help_and_every_objective_with_negatives_retrieves(recipe_dir):
    checks = _checks(recipe_dir[0])
    for claim in ("L_s + L_h (semi-hard impostors) retrieves at least as well as L_s alone (Harwath et al.)",
                  "L_s (with negatives) retrieves above chance", "L_s+L_h (with negatives) retrieves above chance",
                  "infonce (with negatives) retrieves above chance"):
        assert checks[claim]["passed"], checks[claim]


def test_positives_only_collapses(recipe_dir):
    out, _ = recipe_dir
    checks = _checks(out)
    for claim in ("positives only: the training loss goes to zero",
                  "positives only: uniformity goes to zero (every embedding at one point)"):
        assert checks[claim]["passed"], checks[claim]
    assert "positives only: retrieval is at chance" in checks  # reported, passed or not
    recall = {}
    for run in ("positives_only", "infonce"):
        metrics = json.loads((out / "runs" / run / "eval" / "metrics.json").read_text())
        recall[run] = [d["R@10"] for d in metrics["cross_modal"]["head"]["retrieval"].values()]
    assert max(recall["positives_only"]) < 0.5 * min(recall["infonce"]), recall


def test_figures_are_written(recipe_dir):
    out, _ = recipe_dir
    figures = _summary(out)["figures"]
    assert len(figures) == 2
    for rel in figures.values():
        assert (out / rel).read_bytes()[:4] == b"\x89PNG"
