"""Cross-entropy, SupCon and the class-tower (dual-encoder) form of cross-entropy at quick scale."""

import json

import pytest
import torch
import torch.nn.functional as F

from contrastlab.objectives.supcon import ClassTowerContrastive
from contrastlab.recipes.analyses.supervised import linear_twin
from contrastlab.recipes.runner import run_recipe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    return run_recipe("supervised", scale="quick", out=tmp_path_factory.mktemp("recipe") / "sup", progress=False,
                      log=lambda *_: None)


def _checks(result):
    return {c.claim: c for c in result.summary.checks}


def test_the_class_tower_is_a_linear_classifier(result):
    checks = _checks(result)
    for run in ("cross_entropy", "class_tower"):
        same = checks[f"{run}: the class tower predicts exactly what a linear classifier with its weights predicts"]
        loss = checks[f"{run}: the dual-encoder contrastive loss equals the linear classifier's cross-entropy"]
        assert same.passed and loss.passed, (same, loss)
    table = next(t for t in result.summary.tables if t.title.startswith("The class tower is a linear classifier"))
    for row in table.rows:
        assert row[2] == 1.0 and row[3] < 1e-4  # agreement, max logit difference
        assert row[-2] == row[-1]  # accuracy of the tower and of nn.Linear


def test_every_objective_learns_the_classes(result):
    checks = _checks(result)
    for run in ("cross_entropy", "class_tower", "supcon"):
        claim = f"{run} learns the classes (held-out accuracy far above chance 0.10)"
        assert checks[claim].passed, checks[claim]
    assert any(c.claim.startswith("SupCon (linear probe") for c in result.summary.checks)  # reported either way


def test_summary_and_figure_are_written(result):
    summary = json.loads((result.out_dir / "summary.json").read_text())
    assert [t["title"] for t in summary["tables"]][0] == "Held-out accuracy of each objective"
    for rel in summary["figures"].values():
        assert (result.out_dir / rel).read_bytes()[:4] == b"\x89PNG"
    assert "Recipe supervised" in result.report.read_text()


def test_linear_twin_matches_scores_written_from_the_formula():
    torch.manual_seed(3)
    tower = ClassTowerContrastive(4, 5, temperature=0.3).double()
    z = torch.randn(6, 5, dtype=torch.float64)
    expected = torch.empty(6, 4, dtype=torch.float64)
    for i in range(6):
        for c in range(4):
            w_c = tower.class_tower(torch.tensor([c]))[0]  # the class tower's embedding of one-hot e_c
            expected[i, c] = (z[i] @ w_c + tower.bias[c]) / 0.3
    twin = linear_twin(tower).double()
    torch.testing.assert_close(twin(z), expected)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(tower(z, y), F.cross_entropy(twin(z), y))
    with torch.no_grad():
        tower.bias[0] += 1.0  # a twin built before the change no longer matches: the comparison can fail
    assert not torch.allclose(twin(z), tower.logits(z))
