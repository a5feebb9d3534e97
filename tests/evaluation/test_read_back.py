"""Files contrastlab reads back (``metrics.csv``, ``recipe.json``) are checked, and ``eval`` / ``analyze`` write
their results so that a failure leaves the folder as it was.

A damaged file is one :class:`~contrastlab.errors.UserError` line naming the file (and the line and value); a
legitimate one (a diverged loss, a run killed mid-line) still reads. ``eval`` takes the run's lock.
"""

from __future__ import annotations


import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from contrastlab import cli, files
from contrastlab.errors import UserError
from contrastlab.evaluation.analyze import analyze
from contrastlab.evaluation.pipeline import EvalOptions
from contrastlab.recipes import runner
from contrastlab.recipes.spec import load_recipe
from contrastlab.training.logging import COLUMNS, MetricsLog, read_metrics

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
steps: 2
threads: 1
device: cpu
log: {every: 1, progress: false, tensorboard: false}
"""
HEADER = "step,epoch,loss,lr\n"
EVAL = ["--max-items", "40", "--no-baselines", "--threads", "1", "--invariance-items", "8", "--no-progress"]



def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- metrics.csv --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, losses", [
    (HEADER + "1,0,2.5,0.1\n2,0,nan,0.1\n3,0,inf,0.1\n", [2.5, "nan", "inf"]),  # a diverged loss is a record
    (HEADER + "1,0,2.5,0.1\n2,0,1.", [2.5]),  # killed mid-line
    (HEADER + "1,0,2.5,0.1\n2,0,oops,0.1\n", [2.5]),  # killed mid-line, the cell cut
    (HEADER + "\n1,0,2.5,0.1\n\n", [2.5]),  # blank lines
    (HEADER, []),  # stopped before its first row
])
def test_legitimate_training_logs_read(tmp_path, text, losses):
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    assert [str(r["loss"]) if r["loss"] != 2.5 else 2.5 for r in read_metrics(path)] == losses


def test_a_log_written_by_training_reads_back(tmp_path):
    log = MetricsLog(tmp_path / "metrics.csv")
    log.write({"step": 5, "epoch": 0, "loss": float("inf")})
    log.close()
    (row,) = read_metrics(tmp_path / "metrics.csv")
    assert row["step"] == 5 and row["loss"] == float("inf") and set(row) == set(COLUMNS)


@pytest.mark.parametrize("data, expect", [
    (HEADER + "1,0," + "9" * 200_000 + ",0.1\n2,0,1,1\n", "is not a readable CSV file (field larger than field limit"),
    ((HEADER + "1,0,\xe9,0.1\n").encode("latin-1"), "is not UTF-8 text"),
    ("", "has no header row"),
    ("step,epoch,lr\n1,0,0.1\n", "has no column 'loss'"),
    ("just some text\n", "has no column 'step'"),
    (HEADER + "1,0,lots,0.1\n2,0,1,1\n", "line 2: column 'loss': 'lots' is not a number"),
    (HEADER + "1,0\n2,0,1,1\n", "line 2: has 2 cells, the header 4"),
    (HEADER + "1,0,1,1,1\n2,0,1,1\n", "line 2: has 5 cells, the header 4"),
    (HEADER + "inf,0,1,1\n2,0,1,1\n", "line 2: column 'step': 'inf' is not a whole number >= 0"),
    (HEADER + "1.5,0,1,1\n2,0,1,1\n", "line 2: column 'step': '1.5' is not a whole number >= 0"),
    (HEADER + "1,,1,1\n2,0,1,1\n", "line 2: column 'epoch': '' is not a number"),
])
def test_a_damaged_training_log_is_one_line_naming_it(tmp_path, data, expect):
    path = tmp_path / "metrics.csv"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(UserError) as info:
        read_metrics(path)
    assert str(info.value).startswith(str(path)) and expect in str(info.value) and "\n" not in str(info.value)


# -- eval of a run ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    (root / "base.yaml").write_text(BASE)
    here = Path.cwd()
    os.chdir(root)
    try:
        assert cli.main(["train", "base.yaml", "--out", "run"]) == 0
    finally:
        os.chdir(here)
    return root


@pytest.fixture
def ws(trained, tmp_path, monkeypatch) -> Path:
    import shutil

    shutil.copytree(trained, tmp_path / "ws")
    monkeypatch.chdir(tmp_path / "ws")
    return tmp_path / "ws"


def test_eval_refuses_a_damaged_training_log_before_any_work(ws, capsys):
    log = ws / "run" / "metrics.csv"
    lines = log.read_text().splitlines(True)
    cells = lines[1].split(",")
    cells[2] = "lots"
    log.write_text("".join([lines[0], ",".join(cells), *lines[2:]]))
    before = _tree(ws)
    assert cli.main(["eval", "run", *EVAL]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "contrastlab: error: run/metrics.csv line 2: column 'loss': 'lots' is not a number"]
    assert _tree(ws) == before


def test_eval_refuses_a_run_another_process_holds(ws, capsys, held_by_another):
    before = _tree(ws)
    with held_by_another(ws / "run"):
        assert cli.main(["eval", "run", *EVAL]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("contrastlab: error: run directory run is in use by another contrastlab process")
    assert _tree(ws) == before


def test_eval_on_a_full_disk_keeps_the_previous_evaluation(ws, monkeypatch, capsys):
    assert cli.main(["eval", "run", *EVAL]) == 0
    before = _tree(ws)
    assert "run/eval/metrics.json" in before and "run/eval/curves.png" in before
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    assert cli.main(["eval", "run", *EVAL, "--seed", "3"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _tree(ws) == before  # the old figures and metrics.json, no .tmp, no staging folder


# -- analyze ------------------------------------------------------------------------------------------------------

def _features():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    return np.eye(3)[y] + 0.2 * rng.normal(size=(60, 3)), y


def test_analyze_on_a_full_disk_leaves_no_folder_and_keeps_an_old_analysis(tmp_path, monkeypatch):
    x, y = _features()
    analyze(x, y, options=EvalOptions(figures=False, progress=False), out_dir=tmp_path / "old")
    before = _tree(tmp_path)
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    for out in (tmp_path / "old", tmp_path / "new" / "deeper"):
        with pytest.raises(OSError):
            analyze(x, y, options=EvalOptions(figures=False, progress=False), out_dir=out)
        assert _tree(tmp_path) == before


def test_analyze_overwrite_replaces_its_own_files_and_keeps_the_users(tmp_path, monkeypatch, capsys):
    x, y = _features()
    np.savez(tmp_path / "f.npz", x=x, y=y)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["analyze", "f.npz", "--out", "an", "--no-progress"]) == 0
    old = json.loads((tmp_path / "an" / "metrics.json").read_text())
    assert old["figures"] and all((tmp_path / "an" / f).is_file() for f in old["figures"].values())
    (tmp_path / "an" / "notes.txt").write_text("mine")
    assert cli.main(["analyze", "f.npz", "--out", "an", "--no-progress"]) == 2  # no --overwrite
    assert "already holds an analysis" in capsys.readouterr().err
    assert cli.main(["analyze", "f.npz", "--out", "an", "--no-progress", "--no-figures", "--overwrite"]) == 0
    left = sorted(p.name for p in (tmp_path / "an").iterdir())
    assert left == ["metrics.json", "notes.txt", "report.html"]  # the old figures went with the old analysis
    assert "contrastlab analysis: an" in (tmp_path / "an" / "report.html").read_text()


# -- recipe.json --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, expect", [
    ('{"recipe": "supervised", "scale": "quick", "seeds": "x", "done": []}', "'seeds' must be a list of integers"),
    ('{"recipe": "supervised", "scale": "quick", "runs": 5, "done": []}', "'runs' must be a list of run names"),
    ('{"recipe": "supervised", "scale": "quick", "done": null}', "'done' must be a list of run names"),
    ('{"recipe": "supervised", "scale": "quick", "done": [["x"]]}', "'done' must be a list of run names"),
    ('{"recipe": ["supervised"], "scale": "quick", "done": []}', "'recipe' must be text"),
    ('["supervised", "quick"]', "it must hold a JSON object"),
    ('{"recipe": "supervised", ', "is not valid JSON"),
    ("[" * 100_000, "is not valid JSON"),
    ('{"recipe": "supervised", "scale": "quick", "done": [' + "9" * 5000 + "]}", "is not valid JSON"),
])
def test_a_damaged_recipe_record_is_one_line_naming_it(tmp_path, record, expect):
    out = tmp_path / "results"
    out.mkdir()
    (out / "recipe.json").write_text(record)
    before = _tree(tmp_path)
    with pytest.raises(UserError) as info:
        runner._prepare(out, load_recipe("supervised"), "quick", overwrite=False, resume=True, seeds=[0])
    assert str(info.value).startswith(str(out / "recipe.json")) and expect in str(info.value)
    assert "\n" not in str(info.value) and _tree(tmp_path) == before


def test_a_seeds_record_holds_seeds(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "recipe.json").write_text('{"recipe": "supervised", "scale": "quick", "seeds": [0, 1], "done": ["a"]}')
    with pytest.raises(UserError, match="'done' must be a list of seeds"):
        runner._prepare(out, load_recipe("supervised"), "quick", overwrite=False, resume=True, seeds=[0, 1])


def test_a_finished_run_with_a_damaged_log_is_run_again(tmp_path):
    metrics = tmp_path / "run" / "eval" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"encoders": {}, "train_seconds": 1.0}')
    (tmp_path / "run" / "metrics.csv").write_text(HEADER + "1,0,2,0.1\n")
    assert runner._finished_metrics(metrics) is not None
    (tmp_path / "run" / "metrics.csv").write_bytes(b"\xff\xfe")
    assert runner._finished_metrics(metrics) is None
