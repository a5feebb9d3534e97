"""The same config and seed give the same numbers, twice in a row, on CPU.

A run is trained and evaluated, then trained again from scratch into the same folder (``--overwrite``)
and evaluated again, each command in its own process. Everything computed must match exactly:
every value of ``metrics.csv`` but the clock columns, every value of ``eval/metrics.json`` but the
elapsed seconds, every figure byte for byte (but the training curves, which plot throughput), and
the final weights bit for bit. A different seed must change them (so the comparison can fail).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from contrastlab.training.checkpoint import read_checkpoint

CONFIG = """\
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.2}}
model:
  encoder: {name: mlp, options: {hidden: [32]}}
  head: {name: mlp, hidden: 32}
  dim: 16
optim: {name: adamw, lr: 3.0e-3}
batch_size: 64
steps: 30
seed: 3
threads: 1
device: cpu
checkpoint: {every: 10}
log: {every: 5, progress: false, tensorboard: false}
"""

CLOCK = {"items_per_s", "view_fraction", "data_wait", "elapsed_s"}


def _contrastlab(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def _computed(run: Path) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in row.items() if k not in CLOCK} for row in csv.DictReader(f)]
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    metrics.pop("seconds")
    weights = read_checkpoint(run / "checkpoints" / "step-00000030").model
    figures = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((run / "eval").glob("*.png"))
               if p.name != "curves.png"}  # the training curves show throughput, a clock measurement
    return {"rows": rows, "eval": metrics, "weights": weights, "figures": figures}


def _train_and_evaluate(root: Path, *extra: str) -> dict:
    _contrastlab("train", "run.yaml", "--out", "run", "--overwrite", *extra, cwd=root)
    _contrastlab("eval", "run", "--max-items", "300", "--threads", "1", cwd=root)
    return _computed(root / "run")


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_metrics_twice_in_a_row(tmp_path):
    (tmp_path / "run.yaml").write_text(CONFIG)
    first = _train_and_evaluate(tmp_path)
    second = _train_and_evaluate(tmp_path)
    assert len(first["rows"]) == 6 and first["rows"] == second["rows"]
    assert first["eval"] == second["eval"]
    assert first["figures"] and first["figures"] == second["figures"]
    assert first["weights"].keys() == second["weights"].keys()
    assert all(torch.equal(first["weights"][k], second["weights"][k]) for k in first["weights"])

    other = _train_and_evaluate(tmp_path, "--set", "seed=4")
    assert other["rows"] != first["rows"] and other["eval"] != first["eval"]
