"""Every example config in configs/ is valid, and the README's train command runs on one of them."""

import subprocess
import sys
from pathlib import Path

import pytest

from contrastlab.training import load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_example_config_is_valid(path):
    load_config(path)


@pytest.mark.slow
def test_train_then_eval_an_example_config(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "contrastlab"]
    r = subprocess.run(cmd + ["train", str(CONFIGS[0].parent / "simclr-digits.yaml"), "--set", "steps=30",
                              "--set", "log.progress=false", "--out", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained 30 steps" in r.stdout
    r = subprocess.run(cmd + ["eval", str(out), "--no-figures", "--max-items", "300"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "eval" / "metrics.json").is_file()
