"""A catalogue of bad inputs to every command, each run in a process of its own as ``python -m contrastlab ...``
would run it (forked from a server that has imported torch once, checked against real subprocesses).

Every case must end with exit status 2, exactly one line on stderr that names the problem and the
offending value or path, no traceback, and an untouched sandbox: the names and SHA-256 hashes of
every file and folder in the case's working folder (inputs, earlier runs, outputs) are the same
after the command as before it. Nothing is created, changed or deleted by a command that fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

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
checkpoint: {every: 1}
log: {every: 1, progress: false, tensorboard: false}
"""

SPEECH = """\
data: {name: shapes, options: {n_items: 16, image_size: 8, with_speech: true}}
views: {name: modality_pair}
objective: {name: clip}
batch_size: 8
steps: 1
"""


def _png(path: Path, height: int = 8, width: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path)


@pytest.fixture(scope="module")
def template(tmp_path_factory, worker_id) -> Path:
    """The inputs every case starts from: a config, a trained and evaluated run, a run of another
    architecture, and user data with one planted fault each. Built once for all xdist workers (under a
    file lock in their shared temporary folder); cases copy it and never change it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # one folder per session, for all xdist workers
    root = shared / "bad-inputs-template"
    with FileLock(str(shared / "bad-inputs-template.lock")):
        if not (root / ".complete").is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            _build_template(root)
            (root / ".complete").write_text("")
    return root


def _build_template(root: Path) -> None:
    from contrastlab import cli

    (root / "base.yaml").write_text(BASE)
    here = Path.cwd()
    os.chdir(root)
    try:
        assert cli.main(["train", "base.yaml", "--out", "run"]) == 0
        assert cli.main(["train", "base.yaml", "--out", "other", "--set", "model.dim=16"]) == 0
        assert cli.main(["eval", "run", "--max-items", "40", "--no-baselines", "--no-figures", "--threads", "1",
                         "--invariance-items", "8"]) == 0
    finally:
        os.chdir(here)
    for label in ("a", "b"):
        for i in range(5):
            _png(root / "mixed" / label / f"{i}.png")
    _png(root / "mixed" / "b" / "odd.png", height=9)
    (root / "no_images" / "cats").mkdir(parents=True)
    (root / "no_images" / "cats" / "notes.txt").write_text("not an image")
    for i in range(5):
        _png(root / "pairs" / f"{i}.png")
    rows = "".join(f"{i}.png,a grey square\n" for i in range(5)) + "missing.png,a lost square\n"
    (root / "pairs" / "pairs.csv").write_text("image,caption\n" + rows)
    x = np.random.default_rng(0).random((20, 16))
    y = np.arange(20) % 2
    with_nan, with_inf = x.copy(), x.copy()
    with_nan[3, 5] = np.nan
    with_inf[7, 2] = -np.inf
    np.savez(root / "nan.npz", x=with_nan, y=y)
    np.savez(root / "inf.npz", x=with_inf, y=y)
    (root / "speech.yaml").write_text(SPEECH)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: relative path -> content hash (``"dir"`` for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@contextlib.contextmanager
def _busy(run_dir: Path | None):
    """Hold the lock a live training run holds on its directory."""
    if run_dir is None:
        yield
        return
    import fcntl

    fd = os.open(run_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _last(ws: Path, run: str = "run") -> Path:
    return ws / run / "checkpoints" / "step-00000002"


def _write(name: str, text: str | bytes) -> Callable[[Path], None]:
    def plant(ws: Path) -> None:
        (ws / name).write_bytes(text if isinstance(text, bytes) else text.encode())

    return plant


def _rewrite_tensors(file: Path, change: Callable[[dict], None]) -> None:
    import safetensors.torch

    tensors = safetensors.torch.load_file(file)
    change(tensors)
    file.write_bytes(safetensors.torch.save(tensors))


def _to_half(tensors: dict) -> None:
    for key, value in tensors.items():
        if value.is_floating_point():
            tensors[key] = value.half()


def _cut_rng(tensors: dict) -> None:
    tensors["rng.torch.0"] = tensors["rng.torch.0"][:100].clone()


def _misshape_moment(tensors: dict) -> None:
    import torch

    key = next(k for k in sorted(tensors) if k.endswith(".exp_avg"))
    tensors[key] = torch.zeros(3, 3)


def _edit_config(run: str, key: str, value) -> Callable[[Path], None]:
    def plant(ws: Path) -> None:
        import yaml

        path = ws / run / "config.yaml"
        raw = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        node = raw
        for name in parents:
            node = node[name]
        node[last] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    return plant


def _dead_run(ws: Path) -> None:
    """A run killed after its config and one logged step, before its first checkpoint."""
    from contrastlab.rundir import MARKER

    (ws / "dead").mkdir()
    for name in ("config.yaml", MARKER):
        shutil.copy(ws / "run" / name, ws / "dead" / name)
    rows = (ws / "run" / "metrics.csv").read_text().splitlines()
    (ws / "dead" / "metrics.csv").write_text("\n".join(rows[:2]) + "\n")


def _project(ws: Path) -> None:
    """A user's project folder that happens to hold a config.yaml (not a run)."""
    (ws / "proj").mkdir()
    (ws / "proj" / "config.yaml").write_text(BASE)
    (ws / "proj" / "notes.md").write_text("my notes")


def _unmark(ws: Path) -> None:
    from contrastlab.rundir import MARKER

    (ws / "run" / MARKER).unlink()


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]  #: after ``python -m contrastlab``, run in the case's working folder
    expect: tuple[str, ...]  #: what the one error line must contain
    plant: Callable[[Path], None] | None = None  #: puts the bad input in place
    env: dict[str, str] = field(default_factory=dict)
    busy: str | None = None  #: a run directory another process is using (held locked during the command)


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _train(*overrides: str, out: str = "new") -> tuple[str, ...]:
    return ("train", "base.yaml", "--out", out, *(a for o in overrides for a in ("--set", o)))


def _deep_image_folder(ws: Path) -> None:
    """Two 32-bit integer TIFFs (Pillow mode I): their range is not known, so they are refused."""
    from PIL import Image

    (ws / "deep").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 70000 + i, np.int32)).save(ws / "deep" / f"{i}.tif")


def _npz_bad_crc(ws: Path, flip: bool = True) -> None:
    """An .npz whose stored member x has one byte flipped past its .npy header: its CRC-32 no longer matches."""
    np.savez(ws / "crc.npz", x=np.random.default_rng(0).random((20, 16)), y=np.arange(20) % 2)
    data = bytearray((ws / "crc.npz").read_bytes())
    data[data.find(b"x.npy") + 200] ^= 0xFF if flip else 0
    (ws / "crc.npz").write_bytes(bytes(data))


def _wav_cut_short(ws: Path) -> None:
    """An image-audio manifest whose second WAV file ends inside its fmt chunk."""
    import struct

    fmt = struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
    wav = b"RIFF" + struct.pack("<I", 236) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    wav += b"data" + struct.pack("<I", 200) + bytes(200)
    (ws / "talk").mkdir()
    for i in range(5):
        _png(ws / "talk" / f"{i}.png")
        (ws / "talk" / f"{i}.wav").write_bytes(wav if i != 1 else wav[:30])
    (ws / "talk" / "talk.csv").write_text("image,audio\n" + "".join(f"{i}.png,{i}.wav\n" for i in range(5)))


def _jsonl_nested(ws: Path) -> None:
    """A JSONL manifest whose third line nests 100,000 arrays (json.loads raises RecursionError)."""
    (ws / "cap").mkdir()
    for i in range(3):
        _png(ws / "cap" / f"{i}.png")
    lines = [f'{{"image": "{i}.png", "caption": "a grey square"}}' for i in range(2)]
    lines.append('{"image": "2.png", "caption": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (ws / "cap" / "deep.jsonl").write_text("\n".join(lines) + "\n")


def _csv_field_too_long(ws: Path) -> None:
    """A CSV manifest whose second row opens a quote it never closes: one field runs past the csv limit."""
    (ws / "long").mkdir()
    _png(ws / "long" / "0.png")
    (ws / "long" / "long.csv").write_text('image,caption\n0.png,a grey square\n0.png,"' + "x" * 200_000 + "\n")


def _metrics_csv_huge_field(ws: Path) -> None:
    p = ws / "run" / "metrics.csv"
    lines = p.read_text().splitlines(True)
    lines.insert(1, "1,0," + "9" * 200_000 + ",0.1\n")
    p.write_text("".join(lines))


def _metrics_csv_not_a_number(ws: Path) -> None:
    p = ws / "run" / "metrics.csv"
    lines = p.read_text().splitlines(True)
    cells = lines[1].split(",")
    cells[2] = "lots"
    lines[1] = ",".join(cells)
    p.write_text("".join(lines))


def _recipe_record_wrong_type(ws: Path) -> None:
    (ws / "results").mkdir()
    (ws / "results" / "summary.md").write_text("precious")
    (ws / "results" / "recipe.json").write_text(
        '{"recipe": "supervised", "scale": "quick", "seeds": [0], "runs": ["x"], "done": [["x"]]}')


def _old_analysis_with_a_folder_in_the_way(ws: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(ws / "ok.npz", x=rng.random((20, 4)), y=np.arange(20) % 2)
    (ws / "an").mkdir()
    (ws / "an" / "metrics.json").write_text('{"encoders": {}}\n')
    (ws / "an" / "report.html").mkdir()


_NOISY_PLUGIN = '''import warnings
from torch import nn
from contrastlab.plugins import register_encoder

warnings.warn("this plugin warns as it loads")
register_encoder("noisy", lambda input_shape: nn.Flatten())
'''

_EVAL = ("eval", "run", "--max-items", "40", "--no-baselines", "--threads", "1", "--invariance-items", "8")


_TORCHRUN = {"RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"}

CASES: dict[str, Case] = {
    # -- train: the config file
    "config-missing": Case(("train", "nope.yaml"), ("config file not found", "nope.yaml")),
    "config-is-a-folder": Case(("train", "mixed"), ("config mixed is a folder",)),
    "config-not-text": Case(("train", "binary.yaml"), ("binary.yaml is not UTF-8 text",),
                            _write("binary.yaml", b"data: {name: \xff\xfe}\n")),
    "config-malformed": Case(("train", "broken.yaml"), ("broken.yaml", "line 2", "is not valid YAML"),
                             _write("broken.yaml", "data: {name: digits\nviews: [\n")),
    "config-unknown-key": Case(("train", "typo.yaml"), ("unknown config key 'batchsize'", "did you mean 'batch_size'"),
                               _write("typo.yaml", BASE.replace("batch_size:", "batchsize:"))),
    "config-python-tag": Case(("train", "evil.yaml"), ("evil.yaml", "is not valid YAML", "python/object/apply:os.system"),
                              _write("evil.yaml", BASE + "seed: !!python/object/apply:os.system ['touch pwned']\n")),
    "set-without-equals": Case(_train("optim.lr"), ("--set expects key=value", "'optim.lr'")),
    # -- train: values
    "type-batch-size": Case(_train("batch_size=many"), ("batch_size: expected an integer", "'many'")),
    "temperature-zero": Case(_train("objective.options.temperature=0"), ("objective.options.temperature must be a number > 0", "got 0")),
    "temperature-negative": Case(_train("objective.options.temperature=-0.5"), ("temperature must be a number > 0", "-0.5")),
    "batch-size-zero": Case(_train("batch_size=0"), ("batch_size must be > 0, got 0",)),
    "lr-negative": Case(_train("optim.lr=-1e-3"), ("optim.lr must be > 0, got -0.001",)),
    "seed-out-of-range": Case(_train("seed=99999999999999999999"), ("seed must be in [0, 2**63)", "99999999999999999999")),
    "seed-negative": Case(_train("seed=-3"), ("seed must be in [0, 2**63), got -3",)),
    "threads-absurd": Case(_train("threads=100000"), ("threads must be in [1, 1024], got 100000",)),
    "model-too-big-for-memory": Case(_train("model.dim=99999999999999"), ("model.dim must be in [1, 65536], got 99999999999999",)),
    "out-empty": Case(("train", "base.yaml", "--out", ""), ("--out is empty",)),
    "duplicate-key": Case(("train", "twice.yaml"), ("twice.yaml: line 15", "the key 'batch_size' is given twice (lines 9 and 15)"),
                          lambda ws: (ws / "twice.yaml").write_text(BASE + "batch_size: 32\n")),
    "integer-too-long": Case(_train("batch_size=" + "9" * 5000), ("--set batch_size", "integer too long to read")),
    "flag-not-true-or-false": Case(_train("model.encoder.options={hidden: [16], batch_norm: maybe}"),
                                   ("encoder 'mlp': option 'batch_norm' must be true or false, got 'maybe'",)),
    "batch-of-one-with-negatives": Case(_train("batch_size=1"), ("objective 'nt_xent'", "in-batch negatives", "batch_size >= 2, got 1")),
    # -- train: the pieces do not fit
    "more-views-than-made": Case(
        _train("data.name=shapes", "data.options={n_items: 32, image_size: 8, with_captions: true}",
               "views.name=modality_pair", "views.options.modalities=[image, text, audio]", "objective.name=clip"),
        ("no 'audio' modality", "it has image, text")),
    "two-modalities-from-one": Case(_train("views.name=modality_pair", "objective.name=clip"),
                                    ("need at least two distinct modalities", "'digits' has image")),
    "multimodal-objective-one-modality": Case(
        _train("views.name=identity", "objective.name=multimodal_autoencoder", "objective.options={}"),
        ("objective 'multimodal_autoencoder' needs views of at least 2 modalities", "of modality 'image'", "'autoencoder'")),
    # -- train: the user's data
    "empty-data-folder": Case(_train("data.name=image_folder", "data.options.root=no_images"), ("no images", "no_images")),
    "manifest-missing-file": Case(_train("data.name=manifest", "data.options.path=pairs/pairs.csv", "views.name=modality_pair"),
                                  ("pairs.csv line 7", "missing.png", "not found")),
    "list-unknown-kind": Case(("list", "encoder"), ("unknown kind 'encoder'", "did you mean 'encoders'")),
    "data-check-missing": Case(("data", "check", "nope"), ("source 'nope' not found",)),
    "data-pack-missing": Case(("data", "pack", "nope", "--out", "shards"), ("source 'nope' not found",)),
    "data-pack-into-a-project": Case(("data", "pack", "mixed", "--size", "8", "--out", "."), ("output folder '.' is not empty",
                                                                              "--overwrite")),
    "images-of-mixed-sizes": Case(_train("data.name=image_folder", "data.options.root=mixed"), ("odd.png", "is 8x9", "8x8", "size=")),
    "npz-with-nan": Case(_train("data.name=npz", "data.options.path=nan.npz"), ("nan.npz", "1 NaN or infinite", "(3, 5)")),
    "npz-with-inf": Case(_train("data.name=npz", "data.options.path=inf.npz"), ("inf.npz", "1 NaN or infinite", "(7, 2): -inf")),
    "espeak-ng-missing": Case(("train", "speech.yaml", "--out", "new"), ("espeak-ng", "not found on PATH", "apt-get install espeak-ng"),
                              env={"PATH": str(Path(sys.executable).parent), "CONTRASTLAB_CACHE": "speech-cache"}),
    # -- train: the user's data files
    "image-32-bit-integer": Case(_train("data.name=image_folder", "data.options.root=deep"),
                                 ("0.tif", "32-bit integer image (Pillow mode I)", "save it as 8 or 16 bits"),
                                 _deep_image_folder),
    "npz-bad-crc": Case(_train("data.name=npz", "data.options.path=crc.npz"),
                        ("member 'x' of", "crc.npz", "is damaged: its CRC-32 is"), _npz_bad_crc),
    "wav-header-cut-short": Case(_train("data.name=manifest", "data.options.path=talk/talk.csv", "views.name=modality_pair",
                                        "objective.name=clip"),
                                 ("talk.csv line 3", "1.wav", "WAV fmt chunk is truncated"), _wav_cut_short),
    "jsonl-nested-too-deep": Case(_train("data.name=manifest", "data.options.path=cap/deep.jsonl", "views.name=modality_pair",
                                         "objective.name=clip"),
                                  ("deep.jsonl line 3", "nested too deeply"), _jsonl_nested),
    "csv-field-too-long": Case(_train("data.name=manifest", "data.options.path=long/long.csv", "views.name=modality_pair",
                                      "objective.name=clip"),
                               ("long.csv line 3", "longer than 131072 characters"), _csv_field_too_long),
    "data-check-not-an-npz": Case(("data", "check", "fake.npz"), ("fake.npz", "is not an .npz archive"),
                                  _write("fake.npz", b"x,y\n1,0\n")),
    "data-size-beyond-memory": Case(_train("data.name=shapes", "data.options={n_items: 10000000, with_speech: true}",
                                           "views.name=modality_pair", "objective.name=clip"),
                                    ("data.options.n_items: 10000000 would need", "GiB for 10000000 items",
                                     "GiB is available")),
    # -- train: where it writes
    "output-exists": Case(_train(out="run"), ("output directory run already exists", "--overwrite")),
    "output-under-a-file": Case(_train(out="base.yaml/run"), ("base.yaml/run", "base.yaml is a file, not a folder")),
    "output-under-proc": Case(_train(out="/proc/contrastlab-test/run"), ("/proc/contrastlab-test",)),
    "torchrun-world-size": Case(_train(), ("batch_size 16 does not split evenly over 3 processes",),
                                env={**_TORCHRUN, "WORLD_SIZE": "3"}),
    # -- resume
    "resume-not-a-run": Case(("resume", "mixed"), ("mixed is not a run directory",)),
    "resume-truncated-checkpoint": Case(("resume", "run"), ("model.safetensors is not a readable safetensors file",),
                                        lambda ws: _truncate(_last(ws) / "model.safetensors")),
    "resume-other-architecture": Case(
        ("resume", "run"), ("does not fit this model", "is (16, 16) in the checkpoint but (8, 16)"),
        lambda ws: shutil.copy(_last(ws, "other") / "model.safetensors", _last(ws) / "model.safetensors")),
    # -- train --overwrite: what only a training step shows is found before the old run is deleted
    "overwrite-with-an-option-that-does-not-fit": Case(
        _train("objective.name=dcca", "objective.options={n_components: 1000}", out="run") + ("--overwrite",),
        ("trial step on the first 16 items", "n_components must be <= min(D1, D2) = 8, got 1000")),
    "overwrite-with-a-batch-too-small-for-batchnorm": Case(
        _train("views.name=identity", "views.options={}", "objective.name=autoencoder", "objective.options={}",
               "batch_size=1", out="run") + ("--overwrite",),
        ("trial step on the first 1 items", "Expected more than 1 value per channel")),
    "overwrite-with-a-temperature-that-overflows": Case(
        _train("objective.options={temperature: 1e-300}", out="run") + ("--overwrite",),
        ("trial step on the first 16 items", "gave a loss of nan")),
    "crop-scale-nan": Case(_train("views.options.crop_scale=[.nan, 1.0]"), ("crop_scale must be a (min, max) pair of finite numbers", "nan")),
    "overwrite-a-run-in-use": Case(_train(out="run") + ("--overwrite",), ("run directory run is in use by another",), busy="run"),
    "resume-a-run-in-use": Case(("resume", "run"), ("run directory run is in use by another",), busy="run"),
    "resume-other-world-size": Case(("resume", "run"), ("trained with 1 process(es)", "got 2"), env={**_TORCHRUN, "WORLD_SIZE": "2"}),
    # -- ownership: --overwrite replaces only a run contrastlab made, and only once the new run has a checkpoint
    "overwrite-the-project-folder": Case(("train", "base.yaml", "--out", ".", "--overwrite"),
                                         ("--overwrite refuses to replace .", "no .contrastlab-run marker"),
                                         _write("config.yaml", BASE)),
    "overwrite-a-folder-holding-a-config": Case(_train(out="proj") + ("--overwrite",),
                                                ("--overwrite refuses to replace proj", "not a run directory contrastlab made"),
                                                _project),
    "overwrite-a-run-without-marker": Case(_train(out="run") + ("--overwrite",), ("refuses to replace run", ".contrastlab-run"),
                                           _unmark),
    "overwrite-then-diverge": Case(_train("optim.lr=1e308", out="run") + ("--overwrite",),
                                   ("became non-finite at step 1", "run is kept")),
    # -- a run killed before its first checkpoint
    "train-into-a-run-that-died": Case(_train(out="dead"), ("dead holds a run that stopped before its first checkpoint",
                                                            "--overwrite"), _dead_run),
    "resume-a-run-that-died": Case(("resume", "dead"), ("stopped before its first checkpoint", "metrics.csv logged 1 step(s)",
                                                         "contrastlab train dead/config.yaml --out dead --overwrite"), _dead_run),
    # -- what is read back: the config against the checkpoint, the checkpoint against the model
    "resume-after-editing-the-model": Case(("resume", "run"), ("run/config.yaml was changed since checkpoint", "'model.dim'",
                                                               "cannot resume"), _edit_config("run", "model.dim", 16)),
    "resume-after-editing-the-lr": Case(("resume", "run"), ("'optim.lr'", "pass --force"), _edit_config("run", "optim.lr", 0.5)),
    "resume-checkpoint-in-half-precision": Case(("resume", "run"), ("is float16 in the checkpoint but float32",),
                                                lambda ws: _rewrite_tensors(_last(ws) / "model.safetensors", _to_half)),
    "eval-checkpoint-in-half-precision": Case(("eval", "run"), ("is float16 in the checkpoint but float32",),
                                              lambda ws: _rewrite_tensors(_last(ws) / "model.safetensors", _to_half)),
    "resume-random-state-cut-short": Case(("resume", "run"), ("random-generator state 'rng.torch.0' is uint8 (100,)",),
                                          lambda ws: _rewrite_tensors(_last(ws) / "state.safetensors", _cut_rng)),
    "resume-optimiser-moments-of-another-shape": Case(("resume", "run"), ("optimiser state that does not fit", "is (3, 3)"),
                                                      lambda ws: _rewrite_tensors(_last(ws) / "state.safetensors", _misshape_moment)),
    # -- sizes are bounded before anything is allocated
    "view-size-absurd": Case(_train("views.options.size=100000000"), ("views: size[0] must be an int in [2, 4096]", "100000000")),
    "batch-of-views-beyond-memory": Case(_train("views.options.size=4096", "batch_size=512"),
                                         ("batch_size: 512 items of views like 'view1' (1, 4096, 4096)", "GiB is available")),
    "queue-beyond-memory": Case(_train("objective.name=info_nce", "model.queue_size=16000000", "model.dim=65536"),
                                ("model.queue_size: 16000000 would need", "GiB is available")),
    "embedding-width-absurd": Case(_train("model.dim=10000000"), ("model.dim must be in [1, 65536], got 10000000",)),
    "model-beyond-memory": Case(_train("model.head={name: mlp, hidden: 300000000}"),
                                ("model: its 7,800,001,064 weights would need about 116.2 GiB to train", "GiB is available")),
    # -- files contrastlab reads back
    "eval-metrics-csv-huge-field": Case(_EVAL, ("run/metrics.csv", "field larger than field limit"),
                                        _metrics_csv_huge_field),
    "eval-metrics-csv-not-a-number": Case(_EVAL, ("run/metrics.csv line 2", "column 'loss': 'lots' is not a number"),
                                          _metrics_csv_not_a_number),
    "report-metrics-json-too-deep": Case(("report", "run", "-o", "r.html"), ("run/eval/metrics.json is not valid JSON",),
                                         _write("run/eval/metrics.json", "[" * 100_000 + "]" * 100_000)),
    "recipe-resume-record-wrong-type": Case(("recipe", "supervised", "--out", "results", "--resume"),
                                            ("results/recipe.json is not a recipe record",
                                             "'done' must be a list of run names"), _recipe_record_wrong_type),
    # -- outputs the user names, replaced only with --overwrite and never half
    "report-over-an-existing-file": Case(("report", "run", "-o", "r.html"), ("-o r.html already exists", "--overwrite"),
                                         _write("r.html", "<p>precious</p>")),
    "analyze-overwrite-fails-midway": Case(("analyze", "ok.npz", "--out", "an", "--overwrite", "--no-figures"),
                                           ("cannot write the evaluation", "an/report.html is a folder"),
                                           _old_analysis_with_a_folder_in_the_way),
    # -- the run lock
    "eval-a-run-in-use": Case(_EVAL, ("run directory run is in use by another",), busy="run"),
    "report-a-run-in-use": Case(("report", "run", "-o", "r.html"), ("run directory run is in use by another",), busy="run"),
    # -- warnings never add a line to a failure
    "report-fails-after-a-warning": Case(("report", "other", "-o", "r.html", "--plugin", "noisy.py"),
                                         ("other/eval/metrics.json does not exist",),
                                         _write("noisy.py", _NOISY_PLUGIN), env={"PYTHONWARNINGS": "default"}),
    # -- eval
    "eval-truncated-state": Case(("eval", "run"), ("state.json is not valid JSON",), lambda ws: _truncate(_last(ws) / "state.json")),
    "eval-metrics-is-a-folder": Case(("eval", "run"), ("cannot write the evaluation", "run/eval/metrics.json is a folder"),
                                     lambda ws: _replace_with_folder(ws / "run" / "eval" / "metrics.json")),
    "eval-other-architecture": Case(
        ("eval", "run"), ("does not fit this model", "(8, 16)"),
        lambda ws: shutil.copy(_last(ws, "other") / "model.safetensors", _last(ws) / "model.safetensors")),
    # -- analyze, compare
    "analyze-nan-features": Case(("analyze", "nan.npz", "--out", "an"), ("nan.npz", "x has a NaN or infinite value (row 3)")),
    "analyze-not-a-features-file": Case(("analyze", "base.yaml", "--out", "an"), ("base.yaml", "must be a .npz")),
    "analyze-into-a-data-folder": Case(("analyze", "inf.npz", "--out", "mixed"), ("mixed is a folder that holds other files",)),
    "compare-missing-file": Case(("compare", "nope.npz", "run"), ("nope.npz does not exist",)),
    "compare-unknown-stage": Case(("compare", "run:neck", "run"), ("the stage must be head or backbone", "'neck'")),
    "compare-nan-features": Case(("compare", "run", "inf.npz:x"), ("inf.npz: x has a NaN or infinite value (row 7)",)),
    # -- report, recipe, demo, objectives
    "report-not-evaluated": Case(("report", "other", "-o", "r.html"), ("other/eval/metrics.json does not exist", "contrastlab eval other")),
    "report-over-a-config": Case(("report", "run", "-o", "run/config.yaml"), ("run/config.yaml", "ending in .html")),
    "report-under-a-file": Case(("report", "run", "-o", "base.yaml/r.html"), ("base.yaml is a file, not a folder",)),
    "recipe-unknown": Case(("recipe", "homework-invarience"), ("unknown recipe 'homework-invarience'", "did you mean 'homework-invariance'")),
    "recipe-seed-twice": Case(("recipe", "supervised", "--seeds", "1", "1"), ("seed 1 is given twice",)),
    "recipe-seed-negative": Case(("recipe", "supervised", "--seeds", "0", "-3"), ("a seed must be an integer in [0, 2**31), got -3",)),
    "recipe-seed-not-a-number": Case(("recipe", "supervised", "--seeds", "one"), ("--seeds", "invalid int value: 'one'")),
    "recipe-into-a-data-folder": Case(("recipe", "homework-invariance", "--out", "mixed"), ("mixed is not empty and holds no recipe",)),
    "demo-over-another-recipe": Case(
        ("demo", "--out", "results"), ("results already holds a recipe run",),
        lambda ws: ((ws / "results").mkdir(), (ws / "results" / "summary.md").write_text("precious"),
                    (ws / "results" / "recipe.json").write_text(
                        '{"recipe": "supervised", "scale": "full", "seeds": [0], "runs": ["x"], "done": ["x"]}'))),
    "demo-into-a-data-folder": Case(("demo", "--out", "pairs"), ("pairs is not empty and holds no recipe",)),
    "objectives-unknown-flag": Case(("objectives", "--verbose"), ("unrecognized arguments: --verbose",)),
}


#: For each class of bad input added for reliability, a deliberately broken case: a command that
#: succeeds or changes the workspace. The harness must fail on each (proof that the class's checks can
#: fail); ``CLASSES`` names the cases of each class.
CLASSES: dict[str, tuple[str, ...]] = {
    "ownership": ("overwrite-the-project-folder", "overwrite-a-folder-holding-a-config", "overwrite-a-run-without-marker",
                  "overwrite-then-diverge"),
    "died-before-checkpoint": ("train-into-a-run-that-died", "resume-a-run-that-died"),
    "read-back": ("resume-after-editing-the-model", "resume-after-editing-the-lr", "resume-checkpoint-in-half-precision",
                  "eval-checkpoint-in-half-precision", "resume-random-state-cut-short",
                  "resume-optimiser-moments-of-another-shape"),
    "bounds": ("view-size-absurd", "data-size-beyond-memory", "batch-of-views-beyond-memory", "queue-beyond-memory",
               "embedding-width-absurd", "model-beyond-memory"),
    "files-read-back": ("eval-metrics-csv-huge-field", "eval-metrics-csv-not-a-number", "report-metrics-json-too-deep",
                        "recipe-resume-record-wrong-type"),
    "user-outputs": ("report-over-an-existing-file", "analyze-overwrite-fails-midway"),
    "locks": ("eval-a-run-in-use", "report-a-run-in-use", "overwrite-a-run-in-use", "resume-a-run-in-use"),
    "warnings": ("report-fails-after-a-warning",),
    "data-files": ("image-32-bit-integer", "npz-bad-crc", "wav-header-cut-short", "jsonl-nested-too-deep", "csv-field-too-long",
                   "data-check-not-an-npz"),
}
BROKEN: dict[str, Case] = {
    "ownership": Case(_train(out="fresh"), ("refuses",)),  # a new run: exit 0 and a new folder
    "died-before-checkpoint": Case(_train(out="dead") + ("--overwrite",), ("stopped",), _dead_run),  # restarted: exit 0
    "read-back": Case(("resume", "run"), ("changed",), _edit_config("run", "log.every", 2)),  # a free key: resumes, exit 0
    "bounds": Case(_train("views.options.size=12"), ("size",)),  # within bounds: trains
    "files-read-back": Case(("report", "run", "-o", "r.html"), ("not valid",)),  # intact files: a report, exit 0
    "user-outputs": Case(("report", "run", "-o", "r.html", "--overwrite"), ("exists",), _write("r.html", "old")),
    "locks": Case(("report", "run", "-o", "r.html"), ("in use",)),  # nobody holds the run: exit 0
    "warnings": Case(("report", "run", "-o", "r.html", "--plugin", "noisy.py"), ("warns",),  # succeeds, warning shown
                     _write("noisy.py", _NOISY_PLUGIN), env={"PYTHONWARNINGS": "default"}),
    "data-files": Case(("data", "check", "crc.npz"), ("damaged",), lambda ws: _npz_bad_crc(ws, flip=False)),  # intact: exit 0
}


#: A fork server: one interpreter that has imported torch and contrastlab once and forks a fresh process per
#: case. The child sets the case's folder, environment, warning filters (from PYTHONWARNINGS, as interpreter
#: start-up does) and argv, sends stdout and stderr to files, runs the command line as ``python -m contrastlab``
#: does (an exception that escapes prints its traceback, status 1) and exits with its status. Each case is still
#: a process of its own; it no longer pays the 1.5 s of importing torch (110 cases: ~3 minutes of CPU).
#: ``test_the_fork_server_runs_cases_as_python_m_contrastlab_does`` checks it against real subprocesses.
_FORK_SERVER = r"""
import atexit, json, os, sys, traceback, warnings
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: F401 - what every case would pay for
from contrastlab import cli
import contrastlab.training.commands, contrastlab.training.loop, contrastlab.evaluation.commands  # noqa: F401,E401
start_filters = warnings.filters[:]
reply = sys.stdout
for line in sys.stdin:
    case = json.loads(line)
    reply.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(case["cwd"])
            os.environ.clear(); os.environ.update(case["env"])
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(target, fd); os.close(target)
            warnings.filters[:] = start_filters
            options = [o for o in os.environ.get("PYTHONWARNINGS", "").split(",") if o]
            warnings._processoptions(options)
            sys.argv = ["contrastlab", *case["args"]]
            code = cli.main(case["args"])
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
        except BaseException:
            traceback.print_exc(); code = 1
        finally:
            try:
                atexit._run_exitfuncs(); sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    reply.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\n"); reply.flush()
"""


class _ForkServer:
    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)

    def run(self, args, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        import select

        out, err = cwd.parent / "case.stdout", cwd.parent / "case.stderr"
        self.proc.stdin.write(json.dumps({"args": list(args), "cwd": str(cwd), "env": env, "stdout": str(out),
                                          "stderr": str(err)}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise subprocess.TimeoutExpired(list(args), timeout)
        code = json.loads(self.proc.stdout.readline())
        return subprocess.CompletedProcess(list(args), code, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def fork_server():
    server = _ForkServer({**os.environ, "OMP_NUM_THREADS": "1"})
    yield server
    server.close()


def _subprocess(args, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """A case as a user runs it: ``python -m contrastlab ARGS``."""
    return subprocess.run([sys.executable, "-m", "contrastlab", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _run_case(case: Case, template: Path, tmp_path: Path, launch=_subprocess) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    if case.plant is not None:
        case.plant(ws)
    before = _snapshot(ws)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **case.env}
    with _busy(ws / case.busy if case.busy else None):
        r = launch(case.args, cwd=ws, env=env, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("contrastlab: error: "), r.stderr
    for text in case.expect:
        assert text in lines[0], (text, lines[0])
    assert _snapshot(ws) == before
    assert not (ws / "pwned").exists()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(name, template, tmp_path, fork_server):
    _run_case(CASES[name], template, tmp_path, launch=fork_server.run)


def test_the_catalogue_covers_every_command():
    assert len(CASES) >= 25
    from contrastlab.cli import build_parser

    commands = {a for c in CASES.values() for a in c.args[:1]}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) <= commands


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_case_of_each_class_fails_the_harness(name, template, tmp_path, fork_server):
    assert set(CLASSES[name]) <= set(CASES)
    with pytest.raises(AssertionError):
        _run_case(BROKEN[name], template, tmp_path, launch=fork_server.run)


@pytest.mark.parametrize("name", ["config-malformed", "report-fails-after-a-warning", "resume-a-run-in-use",
                                  "espeak-ng-missing", "torchrun-world-size"])
def test_the_fork_server_runs_cases_as_python_m_contrastlab_does(name, template, tmp_path, fork_server):
    """The same case through a real ``python -m contrastlab`` and through the fork server: the same status,
    stdout and stderr (cases chosen for what a fork could change: warning filters, locks, PATH, torchrun's
    environment)."""
    case = CASES[name]
    results = []
    for label, launch in (("real", _subprocess), ("forked", fork_server.run)):
        ws = tmp_path / label / "ws"
        shutil.copytree(template, ws)
        if case.plant is not None:
            case.plant(ws)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **case.env}
        with _busy(ws / case.busy if case.busy else None):
            r = launch(case.args, cwd=ws, env=env, timeout=120)
        results.append((r.returncode, r.stdout, r.stderr.replace(str(ws), "WS")))
    assert results[0] == results[1]
    _run_case(case, template, tmp_path / "again")  # and the real subprocess passes the harness


@pytest.mark.parametrize("code", ["raise KeyError('planted')", "import os; os._exit(3)"])
def test_the_fork_server_reports_a_plugins_failure_and_an_exit_status_as_python_does(code, tmp_path, fork_server):
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "boom.py").write_text(code + "\n")
    args = ("list", "objectives", "--plugin", "boom.py")
    real = _subprocess(args, cwd=tmp_path / "ws", env=dict(os.environ), timeout=120)
    forked = fork_server.run(args, cwd=tmp_path / "ws", env=dict(os.environ), timeout=120)
    assert (forked.returncode, forked.stderr) == (real.returncode, real.stderr)
    assert real.returncode == (2 if "KeyError" in code else 3)
