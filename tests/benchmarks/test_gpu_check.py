"""The device check's CPU dry run: every part it can run without CUDA runs, and the summary says what was skipped.

The whole dry run (``python -m benchmarks.gpu_check --dry-run``, torchrun's two gloo processes included) takes about
45 s on 2 cores; these tests run its parts in this process (no start-up of a fresh interpreter per part) and the
driver with the one part that costs nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a top-level package of the repository, not of contrastlab
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu_check  # noqa: E402


def test_the_driver_writes_json_and_markdown_and_says_what_it_skipped(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--parts", "cuda_tests", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["dry_run"] is True and list(summary["parts"]) == ["cuda_tests"]
    part = summary["parts"]["cuda_tests"]
    assert part["status"] == "skipped" and "no CUDA" in part["note"] and part["budget_s"] > 0
    report = (tmp_path / "gpu_check.md").read_text()
    assert "dry run" in report and "| cuda_tests | skipped |" in report


@pytest.mark.slow
def test_the_loss_part_times_tiled_and_naive_on_the_cpu():
    result = gpu_check.part_losses(True, 120.0)
    rows = result["rows"]
    assert result["device"] == "cpu" and {r["method"] for r in rows} == {"contrastlab tiled", "contrastlab naive"}
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in rows)
    tiled, naive = (next(r for r in rows if r["n"] == 512 and r["method"] == m)
                    for m in ("contrastlab tiled", "contrastlab naive"))
    assert tiled["loss"] == pytest.approx(naive["loss"], rel=1e-4)  # the two compute one loss
    assert tiled["speedup_vs_naive"] > 0 and tiled["extra_mib"] is not None
    assert "| contrastlab tiled |" in gpu_check.markdown(_summary({"losses": result}))


@pytest.mark.slow
def test_the_simclr_part_trains_the_recipe_small_on_the_cpu():
    result = gpu_check.part_simclr(True, 60.0)
    assert result["status"] == "ok" and result["steps"] == 4 and result["precision"] == "bf16"
    assert result["encoder"] == "resnet18" and result["channels_last"] is True and result["items_per_s"] > 0
    assert "items/s" in gpu_check.markdown(_summary({"simclr": result}))


def _summary(parts):
    env = {"started": "now", "device": "cpu", "torch": "x", "python": "y"}
    return {"dry_run": True, "dry_reason": "test", "environment": env, "parts": parts, "seconds": 1.0}
