"""Homework 6, 1(c): positives only vs NT-Xent, BYOL, SimSiam and SimSiam without stop-gradient, at quick scale."""

import doctest
import json
import subprocess
import sys

import pytest

from contrastlab.recipes.analyses import _points, positives_only
from contrastlab.recipes.analyses.positives_only import (
    COLLAPSED_RANK, COLLAPSED_UNIFORMITY, NEAR_CHANCE_MARGIN, SPREAD_UNIFORMITY, collapse_verdicts,
)

RUNS = ("nt_xent", "positives_only", "byol", "simsiam", "simsiam_no_stop_gradient")


def test_docstring_examples_run():
    for module in (positives_only, _points):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_collapse_verdicts_use_the_stated_thresholds():
    at = collapse_verdicts({"uniformity": COLLAPSED_UNIFORMITY, "effective_rank": COLLAPSED_RANK,
                            "knn5": 0.1 + NEAR_CHANCE_MARGIN}, chance=0.1)
    assert at == {"uniformity": (True, False), "effective_rank": (False, True), "knn": (True, False)}
    spread = collapse_verdicts({"uniformity": SPREAD_UNIFORMITY, "effective_rank": 60.0, "knn5": 0.3}, chance=0.1)
    assert spread == {"uniformity": (False, True), "effective_rank": (False, True), "knn": (False, True)}
    # between the thresholds an encoder is neither collapsed nor spread out
    assert collapse_verdicts({"uniformity": -0.5, "knn5": 0.25}, chance=0.1) == \
        {"uniformity": (False, False), "knn": (False, False)}
    assert collapse_verdicts({"uniformity": None, "effective_rank": None, "knn5": None}, chance=0.1) == {}


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe") / "pos"
    r = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "positives-only", "--scale", "quick",
                        "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r.stdout


@pytest.mark.slow
def test_summary_has_the_table_the_checks_the_figures_and_the_report(recipe_dir):
    out, stdout = recipe_dir
    assert "Collapse without negatives" in stdout and f"report: {out / 'report.html'}" in stdout
    summary = json.loads((out / "summary.json").read_text())
    table = summary["tables"][0]
    assert [row[0] for row in table["rows"]] == [*RUNS, "random init", "raw signals"]
    claims = [c["claim"] for c in summary["checks"]]
    assert len(claims) == 15  # three criteria for each of the five runs, pass or fail
    for run in RUNS:
        verb = "collapses" if run in ("positives_only", "simsiam_no_stop_gradient") else "does not collapse"
        assert sum(c.startswith(f"{run} {verb}: ") for c in claims) == 3, run
    for rel in summary["figures"].values():
        assert (out / rel).read_bytes()[:4] == b"\x89PNG"
    assert "Recipe positives-only" in (out / "report.html").read_text()


@pytest.mark.slow
def test_removing_the_negatives_collapses_and_a_predictor_with_stop_gradient_does_not(recipe_dir):
    out, _ = recipe_dir
    table = json.loads((out / "summary.json").read_text())["tables"][0]
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["rows"]}
    u, rank, align = "uniformity (head)", "effective rank (head)", "alignment (head)"
    # Wide margins already after 60 steps (about -0.03 vs -3.2 and -0.2 vs -1.7 for uniformity).
    assert rows["positives_only"][u] > rows["nt_xent"][u] + 1.5
    assert rows["positives_only"][align] < rows["nt_xent"][align] / 4
    assert rows["positives_only"][rank] < rows["nt_xent"][rank] / 2
    assert rows["simsiam_no_stop_gradient"][u] > rows["simsiam"][u] + 0.5
    for run in ("nt_xent", "byol", "simsiam"):
        assert rows[run][u] <= SPREAD_UNIFORMITY, (run, rows[run][u])
