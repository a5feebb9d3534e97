"""Crash safety: a run SIGKILLed again and again, at seeded random moments, loses nothing.

``tests/training/test_cli_train.py`` kills one run once, between checkpoints, and resumes it. This
goes further:

* the kills land at seeded random *file-system events*: the launcher counts every ``os.replace``
  and ``shutil.rmtree`` the run makes (each file of a checkpoint, the checkpoint's folder, the
  index, the pruning of old checkpoints, the metrics file) and SIGKILLs the process just before
  or just after the chosen one, so kills fall inside checkpoint writes, not only between them;
* further kills come from outside, at a random moment after a random step is logged;
* after every kill, everything on disk is checked: each checkpoint the run lists loads and fits
  the model, the index names a checkpoint that exists, ``metrics.csv`` parses with strictly
  increasing steps, ``config.yaml`` parses;
* the run is MoCo's (momentum target towers updated after each step, a queue of keys enqueued after
  each step), the state a method keeps outside the weights and the optimiser;
* the run is resumed after each kill (several resumes in a row), and its final checkpoint (weights,
  optimiser moments, random-generator states, index) and its metrics equal, bit for bit, those of
  a run that was never interrupted.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastlab.training.checkpoint import CheckpointManager, check_state_fits, read_checkpoint
from contrastlab.training.logging import read_metrics
from contrastlab.training.run import read_run_config

CONFIG = """\
data: {name: digits}
views: {name: simclr}
objective: {name: moco, options: {temperature: 0.2}}
model:
  encoder: {name: mlp, options: {hidden: [32]}}
  head: {name: mlp, hidden: 32}
  dim: 16
  queue_size: 64
optim: {name: adamw, lr: 3.0e-3}
batch_size: 32
steps: 90
threads: 1
device: cpu
checkpoint: {every: 3, keep_last: 2}
log: {every: 1, progress: false, tensorboard: false}
"""

#: Runs contrastlab with SIGKILL at file-system event KILL_AT (0: never), "before" or "after" it;
#: writes the number of events to EVENTS_FILE when it exits normally.
LAUNCHER = """
import atexit, os, shutil, signal, sys
kill_at, when, events_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
count = 0
def hook(real):
    def wrapped(*args, **kwargs):
        global count
        count += 1
        if count == kill_at and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if count == kill_at and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return wrapped
os.replace = hook(os.replace)
shutil.rmtree = hook(shutil.rmtree)
atexit.register(lambda: open(events_file, "w").write(str(count)))
from contrastlab.cli import main
raise SystemExit(main(sys.argv[4:]))
"""

#: Columns of metrics.csv that depend on the clock, not on the computation.
TIMING = {"items_per_s", "view_fraction", "data_wait", "elapsed_s"}


def _launch(args: list[str], *, cwd: Path, kill_at: int = 0, when: str = "before") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", LAUNCHER, str(kill_at), when, str(cwd / "events.txt"), *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _computed_metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def _last_step(run: Path) -> int:
    rows = read_metrics(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
    return rows[-1]["step"] if rows else 0


def _check_disk(run: Path, reference_model: dict[str, torch.Tensor]) -> list[str]:
    """Everything a killed run left must be usable; returns the checkpoints it lists."""
    read_run_config(run)  # config.yaml parses and checks
    manager = CheckpointManager(run / "checkpoints")
    names = manager.names()
    for name in names:
        ckpt = read_checkpoint(run / "checkpoints" / name)
        check_state_fits(ckpt.model, reference_model, what="model", source=ckpt.path)
        assert ckpt.meta["step"] == int(name.removeprefix("step-"))
    last = manager.path("last")
    assert last is None or last.name in names, (last, names)
    steps = [row["step"] for row in read_metrics(run / "metrics.csv")]
    assert steps == sorted(set(steps)), steps
    return names


@pytest.mark.slow
def test_repeated_sigkill_then_resume_is_bit_identical(tmp_path):
    rng = random.Random(8)
    (tmp_path / "run.yaml").write_text(CONFIG)

    straight = _launch(["train", "run.yaml", "--out", "straight"], cwd=tmp_path)
    code, err = _finish(straight)
    assert code == 0, err
    total_events = int((tmp_path / "events.txt").read_text())
    final = read_checkpoint(tmp_path / "straight" / "checkpoints" / "step-00000090")

    run = tmp_path / "crashed"
    kills = resumes = 0
    command = ["train", "run.yaml", "--out", "crashed"]
    plan = ["event"] * 4 + ["outside"] * 2
    rng.shuffle(plan)
    for how in plan:
        if how == "event":  # after the first checkpoint, so the run always has one to resume from
            at, when = rng.randint(8, total_events // 6), rng.choice(["before", "after"])
            proc = _launch(command, cwd=tmp_path, kill_at=at, when=when)
        else:
            start = _last_step(run)
            proc = _launch(command, cwd=tmp_path)
            target = start + rng.randint(1, 6)  # a few steps after this process starts training
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline and _last_step(run) < target:
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
        code, err = _finish(proc)
        if code == 0:  # the run got to its end before the kill: nothing left to resume
            break
        assert code == -signal.SIGKILL, err
        kills += 1
        names = _check_disk(run, final.model)
        assert names, "a kill after the first checkpoint must leave one"
        command = ["resume", "crashed"]
        resumes += 1

    code, err = _finish(_launch(["resume", "crashed"], cwd=tmp_path))
    assert code == 0, err
    assert kills == len(plan), kills
    _check_disk(run, final.model)

    again = read_checkpoint(run / "checkpoints" / "step-00000090")
    for field in ("model", "objective", "tensors"):
        a, b = getattr(final, field), getattr(again, field)
        assert a.keys() == b.keys(), field
        assert all(torch.equal(a[k], b[k]) for k in a), field
    drop = lambda meta: {k: v for k, v in meta.items() if k != "elapsed_s"}  # noqa: E731
    assert drop(final.meta) == drop(again.meta)
    index = lambda path: json.loads((path / "checkpoints" / "index.json").read_text())  # noqa: E731
    assert index(tmp_path / "straight") == index(run)
    assert _computed_metrics(tmp_path / "straight" / "metrics.csv") == _computed_metrics(run / "metrics.csv")
    assert not list((run / "checkpoints").glob("*.tmp"))
