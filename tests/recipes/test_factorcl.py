"""FactorCL's synthetic experiment end to end at the quick scale: three runs, the probe table, checks, a report."""

import json
import math

import pytest

from contrastlab.recipes.runner import run_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_recipe("factorcl-synthetic", scale="quick", out=tmp_path_factory.mktemp("recipe") / "factorcl",
                      progress=False, log=lambda *_: None)


def test_one_row_per_method_with_finite_accuracies_beside_the_papers(result):
    table = result.summary.tables[0]
    rows = {r[0]: dict(zip(table.columns, r)) for r in table.rows}
    assert list(rows) == ["factorcl_sup", "factorcl_ssl", "simclr", "raw inputs", "chance (majority class)"]
    assert [rows[n]["paper (notebook)"] for n in ("factorcl_sup", "factorcl_ssl", "simclr")] == [0.986, 0.972, 0.956]
    for name, row in rows.items():
        for column in ("accuracy (x1 ‖ x2)", "x1 alone", "x2 alone"):
            assert math.isfinite(row[column]) and 0.0 <= row[column] <= 1.0, (name, column)
    for name in ("factorcl_sup", "factorcl_ssl"):  # split into shared and unique codes: both probed
        assert 0.0 <= rows[name]["shared codes only"] <= 1.0 and 0.0 <= rows[name]["unique codes only"] <= 1.0
    assert rows["simclr"]["shared codes only"] is None and rows["simclr"]["representation probed"].startswith("backbone")
    assert rows["chance (majority class)"]["accuracy (x1 ‖ x2)"] < 0.6
    assert rows["raw inputs"]["accuracy (x1 ‖ x2)"] > 0.9  # the label is linear in the two inputs together


def test_checks_are_the_papers_orderings_and_are_reported_either_way(result):
    claims = [c.claim for c in result.summary.checks]
    assert "factorcl_sup reaches at least simclr's linear-probe accuracy (paper: 0.986 vs 0.956)" in claims
    assert "factorcl_ssl reaches at least simclr's linear-probe accuracy (paper: 0.972 vs 0.956)" in claims
    assert all(isinstance(c.passed, bool) for c in result.summary.checks)
    ceilings = {r[0]: r[1] for r in result.summary.tables[1].rows}
    assert ceilings["both modalities (all latent parts)"] == 1.0
    assert ceilings["x1 alone (shared + unique1)"] == pytest.approx(0.825, abs=1e-3)


def test_summary_figure_and_report_are_written(result):
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert len(summary["tables"]) == 2 and len(summary["checks"]) == 6
    for rel in summary["figures"].values():
        assert (result.out_dir / rel).read_bytes()[:4] == b"\x89PNG"
    assert "Recipe factorcl-synthetic" in result.report.read_text()
    assert "factorcl_sup" in (result.out_dir / "summary.md").read_text()
    for run in ("factorcl_sup", "factorcl_ssl"):  # the critics are part of each run's checkpoint
        assert list((result.out_dir / "runs" / run / "checkpoints").glob("step-*/objective.safetensors"))
