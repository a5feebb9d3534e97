"""Section: training-step throughput of the one training loop, and the share of each step spent making views.

Runs :func:`contrastlab.training.train` for a few dozen steps on the Shapes world at 32 x 32 with SimCLR views,
the small conv net and NT-Xent (batch 256), and reads the loop's own ``metrics.csv``: items per second and
``view_fraction`` (data + views time / step time). The first logging window (warm-up) is left out.
"""

from __future__ import annotations

import csv
import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._common import Config, markdown_table, skipped

TITLE = "Training step throughput (Shapes 32 x 32, SimCLR views, conv net, NT-Xent)"


def _config(steps: int, every: int, batch: int, threads: int) -> dict[str, Any]:
    return {
        "data": {"name": "shapes", "options": {"n_items": 4 * batch}},
        "views": {"name": "simclr"},
        "objective": {"name": "nt_xent", "options": {"temperature": 0.2}},
        "model": {"encoder": {"name": "convnet"}, "dim": 128},
        "batch_size": batch,
        "steps": steps,
        "device": "cpu",
        "threads": threads,
        "checkpoint": {"every": 0},
        "log": {"every": every, "tensorboard": False, "progress": False},
    }


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.training.loop") is None:
        return skipped(TITLE, "contrastlab.training.loop is missing (training/ not landed yet)")
    try:
        from contrastlab.training import config_from_dict, train
    except ImportError as err:
        return skipped(TITLE, f"contrastlab.training does not import: {err}")
    steps, every, batch = (4, 2, 32) if config.quick else (40, 10, 256)
    cfg = config_from_dict(_config(steps, every, batch, config.threads))
    log(f"  {steps} steps of batch {batch} ...")
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run")
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            windows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    measured = windows[1:] or windows
    items = sum(w["items_per_s"] for w in measured) / len(measured)
    share = sum(w["view_fraction"] for w in measured) / len(measured)
    return {
        "title": TITLE,
        "status": "ok",
        "batch": batch,
        "steps": steps,
        "windows": windows,
        "items_per_s": round(items, 1),
        "steps_per_s": round(items / batch, 2),
        "view_fraction": round(share, 3),
        "goal_view_fraction_at_most": 0.15,
        "goal_met": share <= 0.15,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [[result["batch"], result["steps"], result["steps_per_s"], result["items_per_s"], result["view_fraction"],
             result["goal_met"]]]
    return markdown_table(["batch", "steps", "steps/s", "items/s", "data + views share", "share <= 15%"], rows)
