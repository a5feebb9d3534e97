"""Loading never runs code hidden in a file, and a config can only name what the registries list.

A pickle payload whose ``__reduce__`` creates a marker file is planted, in turn, in the place of
every file a checkpoint consists of (and of the checkpoint index). Each time ``resume``, ``eval`` and
``read_checkpoint`` refuse it with a one-line error that names the file, and the marker never
appears. A control shows the payload is live: unpickling it does create the marker.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from contrastlab import cli
from contrastlab.errors import UserError
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint

CONFIG = """\
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.2}}
model:
  encoder: {name: mlp, options: {hidden: [16]}}
  head: {name: linear}
  dim: 8
batch_size: 16
steps: 2
threads: 1
device: cpu
log: {every: 1, progress: false, tensorboard: false}
"""

SRC = Path(__file__).parents[1] / "src" / "contrastlab"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appearing proves code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payloads(marker: Path) -> dict[str, bytes]:
    torch_zip = io.BytesIO()
    torch.save({"towers.image.weight": Payload(marker)}, torch_zip)
    return {"pickle": pickle.dumps(Payload(marker)), "torch.save": torch_zip.getvalue()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("safe")
    (root / "run.yaml").write_text(CONFIG)
    assert cli.main(["train", str(root / "run.yaml"), "--out", str(root / "run")]) == 0
    return root / "run"


def test_the_payload_is_live(tmp_path):
    marker = tmp_path / "marker"
    payloads = _payloads(marker)
    pickle.loads(payloads["pickle"]).close()
    assert marker.exists()
    marker.unlink()
    torch.load(io.BytesIO(payloads["torch.save"]), weights_only=False)["towers.image.weight"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError):  # the safe torch loader refuses it, as any torch.load here must
        torch.load(io.BytesIO(payloads["torch.save"]), weights_only=True)
    assert not marker.exists()


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("contrastlab: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("kind", ["pickle", "torch.save"])
@pytest.mark.parametrize("name", ["model.safetensors", "state.safetensors", "state.json", "objective.safetensors", "index.json"])
def test_a_planted_pickle_is_refused_without_running(trained, tmp_path, capsys, name, kind):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    marker = tmp_path / "marker"
    last = CheckpointManager(run / "checkpoints").path("last")
    target = run / "checkpoints" / name if name == "index.json" else last / name
    target.write_bytes(_payloads(marker)[kind])

    expected = "checkpoint index" if name == "index.json" else name
    assert expected in _one_line_error(capsys, ["resume", str(run)])
    assert expected in _one_line_error(capsys, ["eval", str(run), "--no-baselines", "--no-figures", "--max-items", "20"])
    with pytest.raises(UserError, match=re.escape(expected)):
        read_checkpoint(last) if name != "index.json" else CheckpointManager(run / "checkpoints")
    assert not marker.exists()
    assert not (run / "eval").exists()


YAML_PAYLOADS = {
    "apply": "!!python/object/apply:builtins.open ['{marker}', 'w']",
    "new": "!!python/object/new:builtins.open ['{marker}', 'w']",
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
}


@pytest.mark.parametrize("tag", list(YAML_PAYLOADS))
def test_configs_never_build_python_objects(trained, tmp_path, capsys, tag):
    marker = tmp_path / "marker"
    value = YAML_PAYLOADS[tag].format(marker=marker)
    (tmp_path / "evil.yaml").write_text(CONFIG + f"seed: {value}\n")
    line = _one_line_error(capsys, ["train", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "a")])
    assert "is not valid YAML" in line and "python/" in line
    line = _one_line_error(capsys, ["train", str(tmp_path / "evil.yaml"), "--out", str(tmp_path / "b"),
                                    "--set", f"seed={value}"])
    assert "python/" in line
    (tmp_path / "ok.yaml").write_text(CONFIG)
    line = _one_line_error(capsys, ["train", str(tmp_path / "ok.yaml"), "--out", str(tmp_path / "c"), "--set", f"seed={value}"])
    assert "--set seed" in line and "python/" in line
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", f"seed: {value}"))
    for argv in (["resume", str(run)], ["eval", str(run)]):
        line = _one_line_error(capsys, argv)
        assert "config.yaml" in line and "python/" in line
    assert not marker.exists()
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c"))


@pytest.mark.parametrize(
    "key, message",
    [
        ("objective.name", "unknown objective 'this'"),
        ("data.name", "unknown data set 'this'"),
        ("views.name", "unknown views 'this'"),
        ("model.encoder.name", "unknown encoder 'this'"),
        ("objective.options.pairwise", "'this'"),
    ],
)
def test_configs_only_name_registered_things(tmp_path, capsys, key, message):
    """``this`` is a module whose import prints the Zen of Python: naming it must not import it."""
    if "this" in sys.modules:
        pytest.skip("the module 'this' was imported by something else in this process")
    (tmp_path / "ok.yaml").write_text(CONFIG)
    argv = ["train", str(tmp_path / "ok.yaml"), "--out", str(tmp_path / "run"), "--set", f"{key}=this"]
    if key == "objective.options.pairwise":
        argv += ["--set", "objective.name=cmc_full_graph", "--set", "objective.options={pairwise: this}"]
    line = _one_line_error(capsys, argv)
    assert message in line
    assert "this" not in sys.modules and "Zen of Python" not in capsys.readouterr().out


def test_recipes_are_looked_up_by_name_only(capsys):
    line = _one_line_error(capsys, ["recipe", "../training/config"])
    assert "unknown recipe '../training/config'" in line


def test_no_unsafe_deserialisation_anywhere_in_the_package():
    """Every loader in the package is a safe one: no pickle, no unsafe YAML, no pickled numpy arrays."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
        assert not re.search(r"\bpickle\.loads?\(|\bmarshal\.loads?\(|\bdill\b|\bjoblib\.load\(", text), path
        assert not re.search(r"yaml\.(unsafe_load|full_load|load_all)\(|yaml\.Loader\b|UnsafeLoader|FullLoader", text), path
        for call in re.findall(r"yaml\.load\([^)]*\)", text):
            assert "Loader=_Loader" in call or "SafeLoader" in call, (path, call)
        assert "allow_pickle=True" not in text, path
        if path.name == "plugins.py":  # the one place user code runs: a file the user names with --plugin, never a config
            assert text.count("exec(") == 1 and "exec(code, module.__dict__)" in text, path
            continue
        assert not re.search(r"\beval\(|\bexec\(|__import__\(", text.replace("model.eval()", "").replace(".eval()", "")), path
