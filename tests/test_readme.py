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

    own_data = _section("Your own data")  # those need the user's files: test_the_your_own_data_commands_run
    lines = [line.split("#")[0] for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("contrastlab train configs/") and "--set" in line and line not in own_data]
    assert len(lines) >= 3
    for line in lines:
        words = shlex.split(line)
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        build_components(load_config(ROOT / words[2], sets))


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"### {title}")
    return text[start:text.index("\n### ", start + 1)]


@pytest.mark.slow
def test_the_your_own_data_commands_run(tmp_path):
    """Each command of "Your own data" runs as written on a small folder and manifest (2 steps of 8 items)."""
    import shlex

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    lines = ["image,caption"]
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.jpg")
        lines.append(f"photos/{i}.jpg,a {('red', 'blue')[i % 2]} {('cat', 'dog', 'car')[i % 3]}")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    block = re.search(r"```sh\n(.*?)```", _section("Your own data"), flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("contrastlab ")]
    assert len(commands) >= 5
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "CONTRASTLAB_NO_PROGRESS": "1"}
    for n, command in enumerate(commands):
        words = shlex.split(command)
        words[0:1] = [sys.executable, "-m", "contrastlab"]
        if "train" in words:
            words[words.index("train") + 1] = str(ROOT / words[words.index("train") + 1])
            words += ["--out", f"run{n}", "--set", "steps=2", "--set", "epochs=null", "--set", "batch_size=8"]
        done = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, (command, done.stderr[-2000:])
