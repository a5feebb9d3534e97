"""The report reads back what eval wrote, and writes its page, without losing or leaving anything on failure.

Every failure is one :class:`~contrastlab.errors.UserError` line naming the file (the command line prints it and
exits 2); a failed write leaves no ``.tmp`` file and no folder it made; ``-o FILE`` is never replaced without
``--overwrite``; a run another process holds is refused; warnings never add lines to a failure.
"""

from __future__ import annotations


import errno
import json
import os
import warnings
from pathlib import Path

import pytest

from contrastlab import cli, files
from contrastlab.errors import UserError
from contrastlab.report.html import write_report
from contrastlab.report.load import load_evaluated

METRICS = {"run": {"config": None}, "encoders": {"head": {"kind": "trained", "geometry": {"alignment": 0.5,
                                                                                          "uniformity": -2.0}}}}



def _evaluated(root: Path, name: str = "run", metrics: object = METRICS) -> Path:
    (root / name / "eval").mkdir(parents=True)
    (root / name / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return root / name


def _tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("text, expect", [
    ("{\"encoders\": {", "is not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
    ("{\"encoders\": [1, 2]}", "'encoders' must map encoder names"),
    ("{\"encoders\": {\"head\": {\"geometry\": [1]}}}", "'encoders.head.geometry' must be a mapping"),
    ("{\"encoders\": {}, \"items\": {\"test\": \"many\"}}", "'items.test' must be a count"),
    ("{\"encoders\": {}, \"figures\": {\"a\": \"../../etc/passwd\"}}", "must be a PNG file inside"),
    ("{\"encoders\": {}, \"run\": {\"x\": " * 80 + "1" + "}}" * 80, "nest more than"),
])
def test_a_damaged_metrics_json_is_one_line_naming_the_file(tmp_path, text, expect):
    run = _evaluated(tmp_path)
    (run / "eval" / "metrics.json").write_bytes(text.encode())
    with pytest.raises(UserError) as info:
        load_evaluated(run)
    message = str(info.value)
    assert "\n" not in message and str(run / "eval" / "metrics.json") in message and expect in message


def test_non_utf8_metrics_json_is_named(tmp_path):
    run = _evaluated(tmp_path)
    (run / "eval" / "metrics.json").write_bytes(b"{\"encoders\": {\"\xff\": {}}}")
    with pytest.raises(UserError, match="metrics.json is not valid JSON"):
        load_evaluated(run)


def test_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    target.write_text("old")
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    with pytest.raises(OSError) as info:
        files.atomic_write_text(target, "new")
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"] and target.read_text() == "old"


def test_report_on_a_full_disk_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    run = _evaluated(tmp_path)
    (tmp_path / "r.html").write_text("old page")
    before = _tree(tmp_path)
    monkeypatch.setattr(files.os, "fsync", _full_disk)
    for out in (tmp_path / "r.html", tmp_path / "new" / "deeper" / "r.html"):
        with pytest.raises(OSError):
            write_report([run], out)
        assert _tree(tmp_path) == before  # no r.html.tmp, no half page, no folders made for it


def test_report_refuses_an_existing_file_without_overwrite(tmp_path, monkeypatch, capsys):
    _evaluated(tmp_path)
    (tmp_path / "r.html").write_text("precious")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "run", "-o", "r.html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["contrastlab: error: -o r.html already exists; add --overwrite to replace it, or give another "
                   "file name"]
    assert (tmp_path / "r.html").read_text() == "precious"
    assert cli.main(["report", "run", "-o", "r.html", "--overwrite"]) == 0
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("named", ["run", "run/eval", "run/eval/metrics.json"])
def test_report_refuses_a_run_another_process_holds(tmp_path, monkeypatch, capsys, named, held_by_another):
    _evaluated(tmp_path)
    monkeypatch.chdir(tmp_path)
    with held_by_another(tmp_path / "run"):
        assert cli.main(["report", named, "-o", "r.html"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use by another contrastlab process" in err[0]
    assert not (tmp_path / "r.html").exists()
    assert cli.main(["report", "run", "run/eval", "-o", "r.html"]) == 0  # one run named twice: locked once


def _command(monkeypatch, body):
    """Make ``contrastlab report`` run ``body`` instead (the parser is built afresh by each ``cli.main``)."""
    from contrastlab.evaluation import commands

    monkeypatch.setattr(commands, "_report", body)


def test_a_failing_command_prints_one_line_whatever_it_warned(monkeypatch, capsys):
    def body(args):
        warnings.warn("lbfgs failed to converge", UserWarning)
        warnings.warn("overflow encountered in exp", RuntimeWarning)
        raise UserError("the one line")

    _command(monkeypatch, body)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert cli.main(["report", "x"]) == 2
    assert capsys.readouterr().err.splitlines() == ["contrastlab: error: the one line"]


def test_a_command_that_succeeds_still_shows_its_warnings_once(monkeypatch, capsys):
    def body(args):
        for _ in range(3):
            warnings.warn("lbfgs failed to converge", UserWarning)
        return 0

    _command(monkeypatch, body)
    shown = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **k: shown.append(str(message)))
        assert cli.main(["report", "x"]) == 0
    assert shown == ["lbfgs failed to converge"]
    assert capsys.readouterr().err == ""
