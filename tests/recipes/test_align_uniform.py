import json
from types import SimpleNamespace

import pytest

from contrastlab.recipes.analyses.align_uniform import loss_formula, uniform_share
from contrastlab.recipes.runner import run_recipe


def _run(options, name="contrastive_align_uniform"):
    return SimpleNamespace(config={"objective": {"name": name, "options": options}})


def test_loss_formula_and_sweep_coordinate():
    assert loss_formula(_run({"temperature": 0.2, "align_weight": 0.0, "uniform_weight": 0.0})) == \
        "L_contrastive(τ=0.2)"
    assert loss_formula(_run({"contrastive_weight": 0.0, "align_weight": 0.98, "uniform_weight": 0.96})) == \
        "0.98·L_align(α=2) + 0.96·L_uniform(t=2)"
    assert loss_formula(_run({"temperature": 0.5})) == "L_contrastive(τ=0.5) + L_align(α=2) + L_uniform(t=2)"
    assert loss_formula(_run({}, name="nt_xent")) == "nt_xent"
    assert uniform_share(_run({"contrastive_weight": 0.0, "align_weight": 0.3, "uniform_weight": 0.7})) == \
        pytest.approx(0.7)
    assert uniform_share(_run({"align_weight": 0.3, "uniform_weight": 0.7})) is None  # has a contrastive term


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("align-uniform")
    return run_recipe("align-uniform", scale="quick", out=out, progress=False, log=lambda *a: None)


@pytest.mark.slow
def test_quick_scale_end_to_end(quick):
    out = quick.out_dir
    summary = json.loads((out / "summary.json").read_text())
    table1, sweep = summary["tables"][0], summary["tables"][1]
    assert [row[1] for row in table1["rows"]] == ["mnist-contrastive", "mnist-w=0.5", "mnist-sum",
                                                  "shapes-contrastive", "shapes-align-uniform", "shapes-sum"]
    assert [row[1] for row in sweep["rows"]] == [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    for row in table1["rows"]:  # accuracies in [0, 1] for every run; uniformity of unit vectors in [-4t, 0]
        assert all(0.0 <= v <= 1.0 for v in row[3:7]) and -8.0 <= row[8] <= 0.0
    for caption, rel in summary["figures"].items():
        assert (out / rel).read_bytes()[:4] == b"\x89PNG", caption
    assert (out / "report.html").is_file()


@pytest.mark.slow
def test_quick_scale_shows_what_fig7_predicts(quick):
    checks = {c.claim.split(":")[0]: c for c in quick.summary.checks}
    # Wang & Isola, Fig. 7: alignment alone collapses, uniformity alone leaves positives apart,
    # and the best encoder optimises both. All three are robust already after 60 steps.
    for key in ("alignment alone (w = 0) collapses the representation",
                "uniformity alone (w = 1) leaves positive pairs apart",
                "both properties are needed"):
        assert checks[key].passed, checks[key].evidence
    sweep = {row[0]: row for row in quick.summary.tables[1].rows}
    assert sweep["mnist-w=0.0"][6] > -0.5  # collapsed: nearly every pair at distance 0
    assert sweep["mnist-w=0.5"][2] > sweep["mnist-w=1.0"][2] + 0.05
