"""The recipe runner's bookkeeping: resuming, and what it does with a damaged record of a finished run."""

import json

import pytest

from contrastlab.recipes.runner import run_recipe

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("damage", ["[]", '{"train_seconds": 1}', '{"encoders": {}, "train_seconds": "abc"}', "{"])
def test_resume_runs_again_a_run_whose_metrics_are_damaged(tmp_path, damage):
    out, lines = tmp_path / "sup", []
    first = run_recipe("supervised", scale="quick", out=out, only=["cross_entropy"], progress=False, log=lambda *_: None)
    metrics = out / "runs" / "cross_entropy" / "eval" / "metrics.json"
    metrics.write_text(damage)
    again = run_recipe("supervised", scale="quick", out=out, only=["cross_entropy"], resume=True, progress=False,
                       log=lines.append)
    assert any("is not a finished evaluation; running it again" in line for line in lines)
    assert json.loads(metrics.read_text())["encoders"] == first.runs["cross_entropy"].metrics["encoders"]
    assert again.summary.to_dict()["tables"][0]["rows"][0][:-1] == first.summary.to_dict()["tables"][0]["rows"][0][:-1]
