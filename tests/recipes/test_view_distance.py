import json
import subprocess
import sys

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.encoders.build import build_model
from contrastlab.recipes.analyses._probe import patch_grid_features
from contrastlab.views.patches import take_patches


def _patch_model():
    shape = (3, 16, 16)
    return build_model({"patch1": shape, "patch2": shape}, {"patch1": "image", "patch2": "image"},
                       encoder=("convnet", {"widths": [4, 8], "pool": "avg"}), head="linear", dim=3).eval()


def test_patch_grid_is_the_mean_over_patches_covering_the_image():
    model = _patch_model()
    batch = build_dataset("shapes", n_items=4).get(torch.arange(4))
    images = batch.inputs["image"]
    got = patch_grid_features(model, "patch1", 16, grid=2, stage="backbone")(batch)
    corners = [take_patches(images, torch.full((4,), x), torch.full((4,), y), 16) for y in (0, 16) for x in (0, 16)]
    expected = torch.stack([model.encode({"patch1": p}, stage="backbone")["patch1"] for p in corners]).mean(0)
    assert torch.allclose(got, expected, atol=1e-6)
    centre = patch_grid_features(model, "patch1", 16, grid=1, stage="head")(batch)
    assert torch.allclose(centre, model({"patch1": images[:, :, 8:24, 8:24]})["patch1"], atol=1e-6)
    with pytest.raises(ValueError, match="grid must be an integer >= 1, got 0"):
        patch_grid_features(model, "patch1", 16, grid=0)


@pytest.mark.slow
def test_quick_scale_end_to_end_through_the_cli(tmp_path):
    out = tmp_path / "vd"
    done = subprocess.run([sys.executable, "-m", "contrastlab", "recipe", "view-distance", "--scale", "quick",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MI bound falls with d" in done.stdout and f"report: {out / 'report.html'}" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    rows = [row for row in summary["tables"][0]["rows"] if row[0].startswith("d=")]
    assert [row[1] for row in rows] == [0, 4, 8, 12, 16]
    mi = [row[3] for row in rows]
    # Identical patches (d = 0) share the most: the bound is near log k; it falls as the patches separate.
    assert mi[0] > 0.8 * rows[0][4]
    assert mi[-1] < mi[2] < mi[0]
    assert summary["checks"][0]["passed"], summary["checks"][0]["evidence"]
    assert (out / "view_distance.png").read_bytes()[:4] == b"\x89PNG"
