"""Run directories: the ownership marker, the lock, and replacing a run without ever losing the old one."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from contrastlab import rundir
from contrastlab.errors import UserError
from contrastlab.training.checkpoint import config_changes


def _run(path: Path, text: str = "old") -> Path:
    path.mkdir(parents=True)
    rundir.mark(path)
    (path / "config.yaml").write_text("seed: 0\n")
    (path / "checkpoints" / "step-00000001").mkdir(parents=True)
    (path / "checkpoints" / "step-00000001" / "model.safetensors").write_text(text)
    return path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def test_only_a_marked_folder_is_ever_replaced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rundir.check_new_run_dir(tmp_path / "missing", overwrite=False) is False
    (tmp_path / "empty").mkdir()
    assert rundir.check_new_run_dir(tmp_path / "empty", overwrite=False) is False
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("seed: 0\n")  # any folder may hold a config.yaml: not a run
    with pytest.raises(UserError, match="not a run directory contrastlab made"):
        rundir.check_new_run_dir(project, overwrite=True)
    run = _run(tmp_path / "run")
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        rundir.check_new_run_dir(run, overwrite=False)
    assert rundir.check_new_run_dir(run, overwrite=True) is True
    (tmp_path / "link").symlink_to(run)
    with pytest.raises(UserError, match="symbolic link"):
        rundir.check_new_run_dir(tmp_path / "link", overwrite=True)
    monkeypatch.chdir(run)
    with pytest.raises(UserError, match="the current folder"):
        rundir.check_new_run_dir(Path("."), overwrite=True)


def test_a_run_without_checkpoint_is_named_as_such(tmp_path):
    run = _run(tmp_path / "run")
    (run / "checkpoints" / "step-00000001" / "model.safetensors").unlink()
    (run / "checkpoints" / "step-00000001").rmdir()
    with pytest.raises(UserError, match="stopped before its first checkpoint; pass --overwrite"):
        rundir.check_new_run_dir(run, overwrite=False)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_replacement_swaps_in_the_new_run_and_removes_the_old(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(rundir, "_exchange", lambda a, b: False)
    old = _run(tmp_path / "run")
    replacement = rundir.Replacement(old)
    staging = replacement.begin()
    assert staging.parent == tmp_path and staging.name.startswith(".run.new-") and rundir.is_marked(staging)
    (staging / "config.yaml").write_text("seed: 1\n")
    assert (old / "config.yaml").read_text() == "seed: 0\n"  # untouched until the commit
    replacement.commit()
    replacement.abort()  # after a commit: only releases the lock
    assert (old / "config.yaml").read_text() == "seed: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_aborted_replacement_leaves_the_old_run_byte_for_byte(tmp_path):
    old = _run(tmp_path / "run")
    before = _tree(tmp_path)
    replacement = rundir.Replacement(old)
    (replacement.begin() / "metrics.csv").write_text("step\n1\n")
    replacement.abort()
    assert _tree(tmp_path) == before


def test_the_lock_refuses_a_second_holder_and_the_new_run_is_locked_after_the_swap(tmp_path):
    old = _run(tmp_path / "run")
    with rundir.hold(old):
        with rundir.hold(old):  # this process holds it already: a nested hold is a no-op
            pass
        with pytest.raises(UserError, match="in use"):  # ... but the lock is still held by the outer one
            _held_elsewhere(old)
    fd = rundir._flock(old)  # as another process would hold it
    with pytest.raises(UserError, match="run directory .*run is in use by another contrastlab process"):
        with rundir.hold(old):
            pass
    rundir._release(fd)
    replacement = rundir.Replacement(old)
    replacement.begin()
    replacement.commit()
    with pytest.raises(UserError, match="in use"):  # the new run at the old path is held by its writer
        with rundir.hold(old):
            pass
    replacement.close()
    with rundir.hold(old):
        pass


def _held_elsewhere(path: Path) -> None:
    fd = rundir._flock(path)
    if fd is None:
        raise UserError("in use")
    rundir._release(fd)


def test_another_thread_of_the_same_process_is_refused(tmp_path):
    import threading

    old = _run(tmp_path / "run")
    errors = []

    def second():
        try:
            with rundir.hold(old):
                pass
        except UserError as err:
            errors.append(str(err))

    with rundir.hold(old):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "in use" in errors[0]


def test_sweep_removes_only_siblings_no_process_holds(tmp_path):
    old = _run(tmp_path / "run")
    live = rundir.Replacement(old)
    live.begin()
    stale = tmp_path / ".run.new-99999999"
    stale.mkdir()
    rundir.mark(stale)
    unmarked = tmp_path / ".run.new-12345"
    unmarked.mkdir()
    assert rundir.sweep(old) == [stale]
    assert live.staging.is_dir() and unmarked.is_dir()
    live.abort()


def test_config_changes_split_free_forced_and_forbidden_keys():
    recorded = {"optim": {"lr": 0.1, "betas": {"__tuple__": [0.9, 0.99]}}, "seed": 0, "log": {"every": 1},
                "model": {"dim": 8, "given": {}}, "steps": 10}
    same = {"optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "seed": 0, "log": {"every": 1}, "model": {"dim": 8, "given": {}},
            "steps": 10}
    assert config_changes(recorded, same) == ([], [])
    edited = {**same, "log": {"every": 7}, "steps": 20, "optim": {"lr": 0.1, "betas": [0.9, 0.99]},
              "model": {"dim": 16, "given": {"image": "x.Net"}, "compile": True}, "tf32": True}
    assert config_changes(recorded, edited) == (["steps"], ["model.dim"])
    newer = {**same, "future_key": 3}  # a key of a later version: not a change
    assert config_changes(recorded, newer) == ([], [])
    added = {**same, "objective": {"options": {"temperature": 0.5}}}  # an option written by hand: a change
    assert config_changes(recorded, added) == ([], ["objective.options.temperature"])
    moved = {**same, "data": {"options": {"root": "/new/place"}}}  # the data moved: allowed with --force
    assert config_changes({**recorded, "data": {"options": {}}}, moved) == (["data.options.root"], [])
    tower = {**same, "model": {**same["model"], "encoders": {"text": {"frozen": True}}}}  # a field of a later version
    assert config_changes({**recorded, "model": {**recorded["model"], "encoders": {}}}, tower) == ([], [])


BASE = """\
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.2}}
model:
  encoder: {name: mlp, options: {hidden: [16]}}
  head: {name: linear}
  dim: 8
optim: {name: adamw, lr: 1.0e-3}
batch_size: 16
threads: 1
device: cpu
log: {every: 1, progress: false, tensorboard: false}
"""


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_keeps_the_old_run_and_the_next_train_sweeps(tmp_path):
    """``train --overwrite`` killed while its new run has no checkpoint: the old run is whole; the hidden
    sibling it left is removed by the next ``train --overwrite``, which then replaces the run."""
    (tmp_path / "base.yaml").write_text(BASE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "contrastlab", "train", "base.yaml", "--out", "run"]
    subprocess.run([*cmd, "--set", "steps=1"], cwd=tmp_path, env=env, check=True, capture_output=True)
    before = _tree(tmp_path / "run")
    slow = subprocess.Popen([*cmd, "--overwrite", "--set", "steps=100000", "--set", "checkpoint.every=100000"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any((p / "metrics.csv").is_file() for p in tmp_path.glob(".run.new-*")):
            assert time.monotonic() < deadline and slow.poll() is None, "the new run never started"
            time.sleep(0.1)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    assert _tree(tmp_path / "run") == before
    assert len(list(tmp_path.glob(".run.new-*"))) == 1
    r = subprocess.run([*cmd, "--overwrite", "--set", "steps=2", "--set", "seed=5"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.yaml", "run"]
    assert "seed: 5" in (tmp_path / "run" / "config.yaml").read_text()
