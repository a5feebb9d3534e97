import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], capture_output=True, text=True)


def test_unknown_command_is_one_line_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2
    assert "no-such-command" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_no_command_names_the_commands():
    r = run()
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "name a command: objectives, train, resume, eval, analyze, compare, report, recipe, demo" in lines[0]


def test_errors_module_examples_run():
    import doctest

    import contrastlab.errors

    assert doctest.testmod(contrastlab.errors).failed == 0


def test_an_os_error_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch):
    from contrastlab import cli

    def fail(args):
        raise NotADirectoryError(20, "Not a directory", str(tmp_path / "notes.txt" / "run"))

    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setattr(cli, "build_parser", lambda: _parser_calling(fail))
    assert cli.main(["go"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"contrastlab: error: cannot use '{tmp_path / 'notes.txt' / 'run'}': '{tmp_path / 'notes.txt'}' is a file, not a folder"


def test_check_can_create_refuses_a_file_in_the_way(tmp_path):
    import pytest

    from contrastlab.errors import UserError, check_can_create

    (tmp_path / "notes.txt").write_text("x")
    check_can_create(tmp_path / "a" / "b", "output directory")
    assert not (tmp_path / "a").exists()  # a check only: nothing is created
    with pytest.raises(UserError, match="notes.txt is a file, not a folder"):
        check_can_create(tmp_path / "notes.txt" / "run", "output directory")


def _parser_calling(func):
    import argparse

    parser = argparse.ArgumentParser(prog="contrastlab")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("go").set_defaults(func=func)
    return parser
