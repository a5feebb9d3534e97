"""The asymmetric methods and your own encoders through the command line: train, resume, eval, and bad input."""

import json
import subprocess
import sys

import pytest

from contrastlab import cli
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint

RECIPE = """
data: {name: digits}
views: {name: simclr, options: {size: 8}}
objective: {name: byol}
model:
  encoder: {name: mlp, options: {hidden: [64]}}
  head: {name: mlp, hidden: 64}
  dim: 32
optim: {name: adamw, lr: 3.0e-3}
batch_size: 64
steps: 8
threads: 1
device: cpu
checkpoint: {every: 4, keep_last: 2}
log: {every: 4, progress: false, tensorboard: false}
"""

WRONG_SHAPE_PLUGIN = """
from torch import nn
from contrastlab.plugins import register_encoder

class Squash(nn.Module):
    out_dim = 16
    def __init__(self, input_shape):
        super().__init__()
        self.lin = nn.Linear(64, 16)
    def forward(self, x):
        return self.lin(x.flatten(1))[:, :, None]  # (N, 16, 1): not (N, F)

register_encoder("squash", Squash)
"""


def contrastlab(*args, cwd):
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_byol_trains_resumes_and_evaluates_through_the_command_line(tmp_path):
    (tmp_path / "byol.yaml").write_text(RECIPE)
    done = contrastlab("train", "byol.yaml", "--out", "run", "--set", "steps=4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # resume continues the run its config.yaml describes: ask for 4 more steps there
    (tmp_path / "run" / "config.yaml").write_text((tmp_path / "run" / "config.yaml").read_text().replace("steps: 4", "steps: 8"))
    assert cli.main(["resume", str(tmp_path / "run"), "--force"]) == 0  # in-process from here: the subprocess proved the CLI
    ckpt = read_checkpoint(CheckpointManager(tmp_path / "run" / "checkpoints").path("last"))
    assert ckpt.meta["step"] == 8 and any(k.startswith("targets.towers.") for k in ckpt.model)
    assert any(k.startswith("predictor.") for k in ckpt.model) and ckpt.meta["temperature"] is None
    assert cli.main(["eval", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert metrics["encoders"]["backbone"]["classification"]["knn5_accuracy"] > 0.2  # above chance (0.1) after 8 steps


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.momentum=1.5"], "model.momentum must be in [0, 1), got 1.5"),
        (["--set", "model.predictor.name=none"], "model.predictor.name: objective 'byol' reads predictions, but the predictor is 'none'"),
        (["--set", "objective.name=nt_xent", "--set", "model.momentum=0.9"], "model.momentum: objective 'nt_xent' reads no momentum targets"),
        (["--set", "objective.name=moco", "--set", "model.queue_size=0"], "model.queue_size must be in [1, 16777216], got 0"),
        (["--set", "objective.name=vicreg", "--set", "model.normalize=none", "--set", "objective.options.normalize=true"],
         "bad options for objective 'vicreg'"),
        (["--set", "objective.name=dcl", "--set", "model.normalize=none", "--set", "objective.options.normalize=true"],
         "objective.options.normalize is true (the objective would normalise onto the sphere), but model.normalize is 'none'"),
        (["--set", "objective.options.reduction=none", "--set", "objective.name=dcl"],
         "objective.options.reduction: training needs one loss per step ('mean' or 'sum'), got 'none'"),
    ],
)
def test_bad_method_settings_are_one_line_exit_2_and_nothing_is_written(tmp_path, capsys, args, message):
    (tmp_path / "byol.yaml").write_text(RECIPE)
    code = cli.main(["train", str(tmp_path / "byol.yaml"), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_a_plugin_encoder_of_the_wrong_shape_is_one_line_naming_the_view(tmp_path):
    (tmp_path / "squash.py").write_text(WRONG_SHAPE_PLUGIN)
    (tmp_path / "byol.yaml").write_text(RECIPE.replace("{name: mlp, options: {hidden: [64]}}", "{name: squash}"))
    done = contrastlab("train", "byol.yaml", "--plugin", "squash.py", "--out", "run", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the encoder of view 'view1' (Squash) must map a batch of 4 items to (4, 16) floating features" in lines[0]
    assert "got shape (4, 16, 1)" in lines[0] and not (tmp_path / "run").exists()
