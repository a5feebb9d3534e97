"""The README's Python examples run as written (each in a fresh interpreter, its run directories under tmp)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_the_tour_sections():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for section in ("Your own data", "Your own encoder", "Your own training loop", "An encoder trained elsewhere"):
        assert f"### {section}" in text
    assert len(BLOCKS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_a_readme_python_example_runs(tmp_path, index):
    code = BLOCKS[index].replace('"runs/', f'"{tmp_path}/runs/')
    if "register_encoder(" in code:  # the plugin file: loading it through the plugin loader registers its encoder
        (tmp_path / "my_net.py").write_text(code)
        code = f"from contrastlab.plugins import load_plugin\nprint(load_plugin({str(tmp_path / 'my_net.py')!r}).registers)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "CONTRASTLAB_NO_PROGRESS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (tmp_path / "my_net.py").exists() or not (tmp_path / "__pycache__").exists()


def test_the_readme_method_commands_build():
    """Each `contrastlab train CONFIG --set ...` line of the README names a config and overrides that build."""
    import shlex

    from contrastlab.training import load_config
    from contrastlab.training.build import build_components

    lines = [line.split("#")[0] for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("contrastlab train configs/") and "--set" in line]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        build_components(load_config(ROOT / words[2], sets))
