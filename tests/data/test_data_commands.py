"""`contrastlab data pack` and `contrastlab data check`: what a user runs and what they would check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from contrastlab.cli import main
from contrastlab.data.check import check_source, render
from contrastlab.data.pack import pack


def make_folder(root, classes=("cat", "dog"), n=5, size=(6, 8)):
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", CONTRASTLAB_NO_PROGRESS="1")
    return subprocess.Popen([sys.executable, "-m", "contrastlab", "data", *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow  # three interpreters start side by side: a few seconds on an idle machine
def test_pack_and_check_end_to_end_in_subprocesses(tmp_path):
    src = make_folder(tmp_path / "imgs")
    pack(src, tmp_path / "mine", shard_items=3, progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    runs = {  # started together: each pays the interpreter's start-up once, side by side
        "pack": cli("pack", src, "--out", tmp_path / "shards", "--shard-items", "3"),
        "check": cli("check", tmp_path / "mine", "--json"),
        "busy": cli("pack", src, "--out", tmp_path / "busy"),
    }
    out = {name: (p.communicate(timeout=120), p.returncode) for name, p in runs.items()}

    (stdout, stderr), code = out["pack"]
    assert code == 0, stderr
    assert "packed 10 items (train 8 in 3 shard(s), test 2 in 1 shard(s))" in stdout
    names = sorted(p.name for p in (tmp_path / "shards").iterdir())
    assert names == ["shards.json", "test-000000.tar", "train-000000.tar", "train-000001.tar", "train-000002.tar"]
    with tarfile.open(tmp_path / "shards" / "train-000000.tar") as tar:
        assert [m.name.split(".")[1] for m in tar.getmembers()] == ["png", "cls"] * 3

    (stdout, stderr), code = out["check"]
    report = json.loads(stdout)
    assert code == 0 and stderr == "" and report["kind"] == "shards" and report["items"] == 10
    assert report["classes"] == {"cat": 5, "dog": 5} and report["splits"] == {"train": 8, "test": 2}
    assert report["image_sizes"] == {"8x6": 10} and report["problems"] == 0

    (stdout, stderr), code = out["busy"]
    assert code == 2 and stdout == "" and len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert "busy' is not empty" in stderr
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["keep.txt"]  # nothing written, no temp files


def test_check_names_unreadable_files_and_exits_1(tmp_path, capsys):
    src = make_folder(tmp_path / "imgs")
    good = (src / "cat" / "0.png").read_bytes()
    (src / "dog" / "3.png").write_bytes(good[:70])  # truncated
    (src / "dog" / "4.png").write_bytes(b"junk")
    Image.fromarray(np.zeros((6, 8), dtype=np.uint16) + 4000).save(src / "cat" / "deep.png")
    assert main(["data", "check", str(src), "--max-listed", "1"]) == 1
    captured = capsys.readouterr()
    assert "problems: 2" in captured.out and "dog/3.png" in captured.out and "... and 1 more" in captured.out
    assert "classes (2): cat 6, dog 5" in captured.out and "16-bit 1" in captured.out
    assert captured.err.strip() == f"contrastlab: 2 problem(s) in 11 item(s) of {src}"


def test_check_manifests_and_arrays(tmp_path, capsys):
    make_folder(tmp_path, classes=("img",), n=3)
    lines = [{"image": f"img/{i}.png", "caption": "a dot", "label": "xy"[i % 2]} for i in range(3)]
    lines.append({"image": "img/9.png", "caption": ""})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    report = check_source(tmp_path / "m.jsonl", progress=False)
    assert report["items"] == 4 and report["captions"] == 3 and report["classes"] == {"x": 2, "y": 1}
    missing = f"image file '{tmp_path / 'img/9.png'}' not found"
    assert [u["error"] for u in report["unreadable"]] == ["empty caption", missing]
    np.savez(tmp_path / "d.npz", x=np.array([[0.5, np.nan], [1.0, 2.0]]), y=np.arange(2))
    report = check_source(tmp_path / "d.npz", progress=False)
    assert report["items"] == 2 and report["problems"] == 1 and report["arrays"][0]["non_finite"] == 1
    np.save(tmp_path / "a.npy", np.zeros((4, 3, 5, 5), dtype=np.uint8))
    assert main(["data", "check", str(tmp_path / "a.npy")]) == 0
    assert "(4, 3, 5, 5)" in capsys.readouterr().out
    assert "every item can be read" in render(check_source(tmp_path / "img", progress=False))


def test_check_reports_damaged_shards(tmp_path):
    out = tmp_path / "shards"
    pack(make_folder(tmp_path / "imgs"), out, shard_items=3, test_fraction=0, progress=False)
    data = (out / "train-000001.tar").read_bytes()
    (out / "train-000001.tar").write_bytes(data[:2148])  # the first item survives, the tar ends early
    report = check_source(out, progress=False)
    assert report["items"] == 8 and report["problems"] == 1
    problem = report["unreadable"][0]
    assert problem["item"] == "train-000001.tar" and "1 item(s) can be read but shards.json lists 3" in problem["error"]


@pytest.mark.parametrize("argv, message", [
    (["data", "check", "{tmp}/nowhere"], "not found"),
    (["data", "pack", "{tmp}/nowhere", "--out", "{tmp}/o"], "source '{tmp}/nowhere' not found"),
    (["data", "pack", "{tmp}/imgs", "--out", "{tmp}/o", "--shard-items", "0"], "shard_items must be a positive"),
    (["data", "pack", "{tmp}/imgs", "--out", "{tmp}/o", "--size", "big"], "expected N or HxW"),
    (["data", "pack", "{tmp}/imgs", "--out", "{tmp}/imgs/o"], "inside the source folder"),
    (["data"], "name a data command: check, pack"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    make_folder(tmp_path / "imgs", n=2)
    tmp = str(tmp_path)
    assert main([a.format(tmp=tmp) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message.format(tmp=tmp) in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "imgs" / "o").exists()
