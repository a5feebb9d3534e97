"""End to end through the command line, on real data (digits with SimCLR views)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from contrastlab import cli
from contrastlab.training import load_run
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint
from contrastlab.training.logging import read_metrics

RECIPE = """
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.2}}
model:
  encoder: {name: convnet, options: {widths: [16, 32]}}
  head: {name: mlp, hidden: 64}
  dim: 32
optim: {name: adamw, lr: 3.0e-3}
batch_size: 64
steps: 300
threads: 1
device: cpu
checkpoint: {every: 50, keep_last: 2}
log: {every: 25, progress: false}
"""

# Until the front lists the training commands, add them (the tuple is fixed; this only appends ours).
LAUNCH = (
    "import sys, contrastlab.cli as c\n"
    "m = 'contrastlab.training.commands'\n"
    "c._COMMAND_MODULES += () if m in c._COMMAND_MODULES else (m,)\n"
    "raise SystemExit(c.main())\n"
)


def command(*args):
    return [sys.executable, "-c", LAUNCH, *args]


def recipe(tmp_path, text=RECIPE):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def commands(monkeypatch):
    name = "contrastlab.training.commands"
    if name not in cli._COMMAND_MODULES:
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, name))


@pytest.mark.slow
def test_train_loss_falls_and_the_checkpoint_reloads_identically(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(command("train", str(recipe(tmp_path)), "--out", str(out)), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "trained 300 steps" in r.stdout and str(out) in r.stdout
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["step"] == 300
    first, last = sum(r["loss"] for r in rows[:2]) / 2, sum(r["loss"] for r in rows[-2:]) / 2
    assert last < first - 0.4, (first, last)  # InfoNCE on 2N = 128 candidates starts near log(127) = 4.84
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    run = load_run(out)
    saved = read_checkpoint(out / "checkpoints" / "step-00000300").model
    state = run.model.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in state)
    assert not run.model.training and run.objective == "nt_xent" and run.metrics_path == out / "metrics.csv"
    test = run.dataset("test")
    batch = test.get(torch.arange(32))
    with torch.no_grad():
        a = run.model.encode(run.views.eval_views(batch))
        b = load_run(out).model.encode(run.views.eval_views(batch))
    assert all(torch.equal(a[v], b[v]) for v in a)
    assert load_run(out, which="best").step in (250, 300)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    fast = RECIPE.replace("steps: 300", "steps: 400").replace("progress: false", "progress: false, tensorboard: false")
    path = recipe(tmp_path, fast)
    straight = subprocess.Popen(command("train", str(path), "--out", str(tmp_path / "straight")), stderr=subprocess.PIPE)
    killed = subprocess.Popen(command("train", str(path), "--out", str(tmp_path / "killed")), stderr=subprocess.PIPE)
    index = tmp_path / "killed" / "checkpoints" / "index.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if index.is_file() and json.loads(index.read_text())["last"] >= "step-00000100":
            break
        assert killed.poll() is None, killed.stderr.read().decode()
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    last = CheckpointManager(tmp_path / "killed" / "checkpoints").path("last").name
    assert "step-00000100" <= last < "step-00000400"
    r = subprocess.run(command("resume", str(tmp_path / "killed")), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert straight.wait(timeout=300) == 0
    a = read_checkpoint(tmp_path / "straight" / "checkpoints" / "step-00000400").model
    b = read_checkpoint(tmp_path / "killed" / "checkpoints" / "step-00000400").model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(tmp_path / "killed" / "metrics.csv")]
    assert steps == list(range(25, 425, 25))


@pytest.mark.slow
def test_a_config_error_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run(command("train", str(recipe(tmp_path)), "--set", "optim.lrr=0.1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "contrastlab: error: unknown config key 'optim.lrr'; did you mean 'optim.lr'? allowed: name, lr, weight_decay, "
        "momentum, nesterov, betas, trust_coefficient, exclude_bias_and_norm, grad_clip"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "batch_size=many"], "batch_size: expected an integer, got 'many' (str)"),
        (["--set", "objective.name=infonce"], "unknown objective 'infonce'; did you mean 'info_nce'?"),
        (["--set", "model.encoder.name=convnet2"], "unknown encoder 'convnet2'; did you mean 'convnet'?"),
        (["--set", "views.name=colour_split"], "need RGB images"),
        (
            ["--set", "views.name=simclr", "--set", "objective.name=cmc_full_graph", "--set", "data.name=nope"],
            "unknown data set 'nope'",
        ),
        (["--set", "objective.name=cmc_full_graph", "--set", "views.name=identity"], "takes at least 2 views, but views 'identity' make 1"),
        (["--set", "data.name=mnist1d", "--set", "views.name=identity", "--set", "objective.name=supcon"], "encoder 'convnet' for view 'input' (items of shape (40,)): input_shape must have 3 dimension(s)"),
        (["--set", "objective.options.temperature=-1"], "objective.options.temperature must be a number > 0, got -1"),
        (["--set", "batch_size=0"], "batch_size must be > 0, got 0"),
        (["--set", "batch_size=10000"], "batch_size 10000 is larger than the data set"),
    ],
)
def test_config_errors_name_the_key(tmp_path, capsys, commands, args, message):
    code = cli.main(["train", str(recipe(tmp_path)), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_resume_needs_a_run(tmp_path, capsys, commands):
    assert cli.main(["resume", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    launch = Path(__file__).with_name("_launch.py")
    fast = RECIPE.replace("steps: 300", "steps: 40").replace("checkpoint: {every: 50, keep_last: 2}", "checkpoint: {every: 20}")
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    r = subprocess.run(
        [*torchrun, str(launch), "train", str(recipe(tmp_path, fast)), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained 40 steps") == 1  # only the main process reports
    ck = read_checkpoint(out / "checkpoints" / "step-00000040")
    assert ck.meta["world_size"] == 2 and "rng.views.1" in ck.tensors
    assert [row["step"] for row in read_metrics(out / "metrics.csv")] == [25, 40]
    r = subprocess.run([sys.executable, str(launch), "resume", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "trained with 2 process(es)" in r.stderr
