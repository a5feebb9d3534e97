"""Fission and the coordination kernels, quick scale: the tables a user reads exist and hold sane numbers.

At the quick scale (30 steps) the predictions are not expected to hold; docs/RESULTS.md has the full runs.
"""

import json
import math

import pytest

from contrastlab.recipes.runner import run_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fission(tmp_path_factory):
    return run_recipe("fission", scale="quick", out=tmp_path_factory.mktemp("recipe") / "fission",
                      progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    return run_recipe("coordination-kernels", scale="quick", out=tmp_path_factory.mktemp("recipe") / "kernels",
                      progress=False, log=lambda *_: None, only=["cosine", "rbf", "gated"])


def test_fission_reads_the_shared_and_private_codes_of_both_towers(fission):
    codes = {(r[0], r[1]) for r in fission.summary.tables[0].rows}
    for part in ("shared image", "private image", "shared text", "private text"):
        assert ("fission", part) in codes and ("without_overlap", part) in codes
    assert ("contrastive", "head image") in codes
    for row in fission.summary.tables[0].rows:
        assert all(v is None or (0.0 <= v <= 1.0) for v in row[-2:])  # probe accuracies


def test_fission_decomposes_what_the_towers_share(fission):
    pid = fission.summary.tables[1]
    assert {r[1] for r in pid.rows} >= {"head", "shared"}
    assert {r[2] for r in pid.rows} >= {"label", "colour"}
    for row in pid.rows:
        joint, parts = row[3], row[4:8]
        assert math.isfinite(joint) and abs(sum(parts) - joint) < 1e-5  # the four atoms add up to I(Y; both)
        assert min(parts) > -1e-5


def test_fission_checks_and_report(fission):
    claims = [c.claim for c in fission.summary.checks]
    assert any("private image code keeps colour" in c for c in claims)
    assert any("unique to the image" in c for c in claims)
    html = fission.report.read_text()
    assert "Recipe fission" in html and "Partial information decomposition" in html


def test_kernels_table_names_each_coordination_function(kernels):
    rows = {r[0]: r for r in kernels.summary.tables[0].rows}
    assert rows["cosine"][1] == "cosine" and rows["rbf"][1] == "rbf(sigma=0.5)" and rows["gated"][1] == "gated"
    for row in rows.values():
        assert all(0.0 <= v <= 1.0 for v in row[3:9])  # recalls
    gated = json.loads((kernels.out_dir / "runs" / "gated" / "eval" / "metrics.json").read_text())
    assert gated["cross_modal"]["head"]["retrieval_similarity"] == "gated"
