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
