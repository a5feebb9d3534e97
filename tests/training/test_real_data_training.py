"""Training on files read by loader workers: exact after SIGKILL, bad files named or skipped, DDP with workers."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastlab.training.checkpoint import read_checkpoint

CONFIG = """\
data: {name: image_folder, options: {root: imgs, test_fraction: 0.1}, num_workers: 2}
views: {name: simclr}
model: {encoder: {name: convnet, options: {widths: [8, 16]}}, head: {hidden: 16}, dim: 8}
objective: {name: nt_xent}
batch_size: 16
steps: 24
checkpoint: {every: 4}
log: {every: 4, progress: false, tensorboard: false}
"""

#: Columns of metrics.csv that depend on the clock, not on the computation.
TIMING = {"items_per_s", "view_fraction", "data_wait", "elapsed_s"}


def images(root: Path, n: int = 72, side: int = 12) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):  # a flat folder: unlabelled, as self-supervised data usually is
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"{i:04d}.png")
    return root


def cli(*args: str, cwd: Path, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "contrastlab", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def computed(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["folder", "shards"])
def test_sigkill_with_loader_workers_then_resume_is_bit_identical(tmp_path, source):
    """Map-style files (the checkpoint's step is the sampler's position) and a sharded stream (each of its 2 lanes
    skips, without decoding, to the position the checkpoint recorded)."""
    images(tmp_path / "imgs")
    config = CONFIG
    if source == "shards":
        from contrastlab.data.pack import pack

        pack(tmp_path / "imgs", tmp_path / "shards", shard_items=8, test_fraction=0.1, progress=False)
        config = config.replace("{name: image_folder, options: {root: imgs, test_fraction: 0.1}",
                                "{name: shards, options: {root: shards, shuffle_buffer: 16}")
    (tmp_path / "run.yaml").write_text(config)
    straight = cli("train", "run.yaml", "--out", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    proc = cli("train", "run.yaml", "--out", "crashed", cwd=tmp_path, wait=False)
    checkpoints = tmp_path / "crashed" / "checkpoints"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (checkpoints / "step-00000008").exists():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # the trainer; its workers notice and exit
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = cli("resume", "crashed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "step-00000024")
    b = read_checkpoint(tmp_path / "crashed" / "checkpoints" / "step-00000024")
    for field in ("model", "tensors"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), field
    assert computed(tmp_path / "straight" / "metrics.csv") == computed(tmp_path / "crashed" / "metrics.csv")
    if source == "shards":  # a stream's batches depend on its lanes (one per worker), which resume keeps
        return
    # the same run without workers reads the same batches: workers change speed, never results
    zero = cli("train", "run.yaml", "--out", "zero", "--set", "data.num_workers=0", cwd=tmp_path)
    assert zero.returncode == 0, zero.stderr
    c = read_checkpoint(tmp_path / "zero" / "checkpoints" / "step-00000024")
    assert all(torch.equal(a.model[k], c.model[k]) for k in a.model)


@pytest.mark.slow
def test_a_bad_file_mid_folder_is_named_or_skipped_and_counted(tmp_path):
    from contrastlab.data.user import load_image_folder

    root = images(tmp_path / "imgs")
    bad, deep = load_image_folder(root=str(root), test_fraction=0.1).files[30:32]  # two training items
    (root / bad).write_bytes((root / bad).read_bytes()[:50])  # truncated
    ramp = np.linspace(0, 65535, 144, dtype=np.uint16).reshape(12, 12)
    Image.fromarray(ramp).save(root / deep)  # 16-bit grey: read and scaled, not an error
    (tmp_path / "run.yaml").write_text(CONFIG.replace("steps: 24", "steps: 8"))
    failed = cli("train", "run.yaml", "--out", "fail", cwd=tmp_path)
    assert failed.returncode == 2
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert bad in failed.stderr and deep not in failed.stderr
    skipped = cli("train", "run.yaml", "--out", "skip", "--set", "data.on_error=skip", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    from contrastlab.training.sampler import ShardedBatches

    index = load_image_folder(root=str(root), test_fraction=0.1).files.index(bad)
    sampler = ShardedBatches(65, 16, seed=0)
    reads = sum(int((sampler.global_indices(step) == index).sum()) for step in range(8))  # 2 epochs of 64 of the 65
    assert reads >= 1 and f"{reads} unreadable items were replaced" in skipped.stderr
    rows = list(csv.DictReader(open(tmp_path / "skip" / "metrics.csv")))
    assert rows[-1]["skipped"] == str(reads) and float(rows[-1]["data_wait"]) >= 0


@pytest.mark.slow
def test_torchrun_two_processes_with_loader_workers(tmp_path):
    images(tmp_path / "imgs")
    (tmp_path / "run.yaml").write_text(CONFIG.replace("num_workers: 2", "num_workers: 1").replace("steps: 24", "steps: 8"))
    launch = Path(__file__).with_name("_launch.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run([*torchrun, str(launch), "train", "run.yaml", "--out", "run"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    ck = read_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000008")
    assert ck.meta["world_size"] == 2
