"""End to end: train a tiny real run, then ``contrastlab eval`` and ``contrastlab report`` in subprocesses."""

import json
import shutil
import subprocess
import sys

import pytest

# Runs the real command line with the training and evaluation commands registered (a no-op once
# cli.py lists them itself).
RUNNER = (
    "import sys; from contrastlab import cli; "
    "cli._COMMAND_MODULES = tuple(dict.fromkeys(cli._COMMAND_MODULES + "
    "('contrastlab.training.commands', 'contrastlab.evaluation.commands'))); "
    "raise SystemExit(cli.main(sys.argv[1:]))"
)

RECIPE = """\
data: {name: shapes, options: {n_items: 400, n_test: 120}}
views: {name: factor_resample, options: {resample: [colour]}}
model: {encoder: {name: convnet}, dim: 16}
objective: {name: nt_xent, options: {temperature: 0.2}}
optim: {name: adamw, lr: 1.0e-3}
batch_size: 64
steps: 30
threads: 1
log: {every: 5, tensorboard: false, progress: false}
checkpoint: {every: 0}
"""


def contrastlab(*args, cwd):
    return subprocess.run([sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("contrastlab.training.commands")
    root = tmp_path_factory.mktemp("e2e")
    (root / "tiny.yaml").write_text(RECIPE)
    r = contrastlab("train", "tiny.yaml", "--out", "run", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


@pytest.mark.slow
def test_eval_then_report(trained):
    root = trained
    r = contrastlab("eval", "run", "--max-items", "120", "--threads", "1", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "metrics.json" in r.stdout
    metrics = json.loads((root / "run" / "eval" / "metrics.json").read_text())
    encoders = metrics["encoders"]
    assert {"head", "backbone", "raw", "random_head", "random_backbone"} <= set(encoders)
    for name, file in metrics["figures"].items():
        assert (root / "run" / "eval" / file).stat().st_size > 1000, name
    assert {"curves", "invariance", "neighbours_head_test", "neighbours_head_train"} <= set(metrics["figures"])
    # Views that resample colour teach colour invariance: the head moves less than raw pixels do.
    assert encoders["head"]["invariance"]["colour"]["score"] < encoders["raw"]["invariance"]["colour"]["score"] - 0.15
    assert encoders["raw"]["invariance"]["location"]["label"] == "sensitive"
    assert 0.0 <= encoders["head"]["classification"]["probe_test_accuracy"] <= 1.0

    r = contrastlab("report", "run", "run", "-o", "out/report.html", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    html = (root / "out" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 * len(metrics["figures"])
    assert "Invariance" in html and '<table class="metrics">' in html


@pytest.mark.slow
def test_broken_runs_give_one_line_errors(trained):
    root = trained
    bad = root / "bad"
    shutil.copytree(root / "run", bad, ignore=shutil.ignore_patterns("eval"))
    weights = sorted(bad.glob("checkpoints/*/model.safetensors"))
    assert weights
    for w in weights:
        w.write_bytes(b"not a checkpoint")
    r = contrastlab("eval", "bad", cwd=root)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert str(weights[-1].parent.relative_to(root)) in r.stderr

    shutil.rmtree(bad / "checkpoints")
    r = contrastlab("eval", "bad", cwd=root)
    assert r.returncode == 2 and "no checkpoint" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    for args, needle in ((("eval", "nowhere"), "nowhere does not exist"),
                         (("report", "bad", "-o", "x.html"), "bad/eval/metrics.json does not exist"),
                         (("eval", "run", "--max-items", "1"), "--max-items must be at least 2"),
                         (("eval", "run", "--threads", "0"), "--threads must be in [1, 1024], got 0"),
                         (("eval", "run", "--threads", "100000"), "--threads must be in [1, 1024], got 100000"),
                         (("eval", "run", "--seed", "-1"), "--seed must be in [0, 2**31), got -1")):
        r = contrastlab(*args, cwd=root)
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_compare_two_stages_and_a_run_with_itself(trained):
    root = trained
    r = contrastlab("compare", "run", "run", "--items", "100", "-o", "same.json", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    same = json.loads((root / "same.json").read_text())
    assert same["items"] == 100 and same["cka"] == pytest.approx(1.0, abs=1e-6) and same["mutual_knn"] == 1.0
    r = contrastlab("compare", "run:head", "run:backbone", "--items", "100", cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "run:head  vs  run:backbone  (100 items)" in r.stdout and "linear CKA (debiased)" in r.stdout
    r = contrastlab("compare", "run:neck", "run", cwd=root)
    assert r.returncode == 2 and "head or backbone" in r.stderr and "Traceback" not in r.stderr
