import json

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.encoders.build import build_model
from contrastlab.recipes.analyses._probe import tower_features
from contrastlab.recipes.runner import run_recipe
from contrastlab.views.registry import build_views


def test_tower_features_read_only_the_chosen_towers():
    ds = build_dataset("shapes", n_items=8)
    views = build_views("colour_split", ds, views=["L", "ab", "edges"])
    model = build_model({v: views.view_shapes[v] for v in views.view_names}, views.view_modalities,
                        encoder=("convnet", {"widths": [4, 8], "pool": "avg"}), head="linear", dim=3,
                        shared=False).eval()
    batch = ds.get(torch.arange(5))
    got = tower_features(model, views, ["L"], stage="backbone")(batch)
    shown = views.eval_views(batch)
    assert torch.equal(got, model.encode({"L": shown["L"]}, stage="backbone")["L"])
    both = tower_features(model, views, ["ab", "L"], stage="head")(batch)
    assert both.shape == (5, 6) and torch.equal(both[:, 3:], model({"L": shown["L"]})["L"])
    with pytest.raises(ValueError, match="the model has no tower 'R'"):
        tower_features(model, views, ["R"], stage="head")


@pytest.mark.slow
def test_quick_scale_end_to_end(tmp_path):
    result = run_recipe("cmc-views", scale="quick", out=tmp_path, progress=False, log=lambda *a: None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {row[0]: row for row in summary["tables"][0]["rows"]}
    assert [rows[r][2] for r in ("2-views", "3-views-core", "3-views-full", "4-views-core", "4-views-full")] == \
        [2, 3, 3, 4, 4]
    assert rows["3-views-full"][3] == "full graph" and rows["2-views"][3] == "core view = full graph"
    assert all(0.0 <= rows[r][4] <= 1.0 for r in rows)
    assert (tmp_path / "cmc_views.png").read_bytes()[:4] == b"\x89PNG"
    # CMC: more views are not worse. At the quick scale the accuracies are within a few points of each
    # other, so only "the best run with more views is not worse than two views" is asserted.
    more = max(rows[r][4] for r in rows if r.startswith(("3-", "4-")))
    assert more >= rows["2-views"][4]
    assert result.summary.checks and result.summary.checks[-1].claim.startswith("more views help")
