"""Monitors during training: held-out kNN, online probe, RankMe, collapse warning (training/monitors.py)."""

import csv
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from _train_fixtures import Clusters, FailingViews, NoisyViews, config, ensure_objectives
from contrastlab.data.base import Batch, to_device
from contrastlab.evaluation.features import encode_towers
from contrastlab.evaluation.geometry import effective_rank
from contrastlab.evaluation.knn import knn_classify
from contrastlab.training import train
from contrastlab.training.build import build_components
from contrastlab.training.checkpoint import CheckpointManager, read_checkpoint
from contrastlab.training.config import MonitorConfig
from contrastlab.training.logging import COLUMNS, MONITOR_COLUMNS, read_metrics
from contrastlab.training.monitors import (
    COLLAPSE_STD, HeldOut, Monitors, OnlineProbe, embedding_std, monitor_due, monitor_every,
)

ensure_objectives()

#: metrics.csv columns that measure the clock, not the computation.
CLOCK = {"items_per_s", "view_fraction", "data_wait", "elapsed_s"}


def run(tmp_path, name="run", cfg=None, views=None, dataset=None, **kw):
    return train(cfg or config(), tmp_path / name, dataset=dataset or Clusters(), views=views or NoisyViews(), **kw)


def computed_rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in CLOCK} for row in csv.DictReader(f)]


def last_checkpoint(run_dir):
    return read_checkpoint(CheckpointManager(run_dir / "checkpoints").path("last"))


class Unlabelled(Clusters):
    """Clusters without labels."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.num_classes = None

    def get(self, index):
        batch = super().get(index)
        batch.labels = None
        return batch


class Constant(nn.Module):
    """A collapsed backbone: the same learned vector for every input."""

    out_dim = 6

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.linspace(-1.0, 1.0, self.out_dim))

    def forward(self, x):
        return self.value.expand(x.shape[0], -1) + 0.0 * x[:, :1]


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("key, value, message", [
    ("monitor.every", "-1", "monitor.every must be >= 0"),
    ("monitor.items", "1", "monitor.items must be in [2, 10000]"),
    ("monitor.knn_k", "0", "monitor.knn_k must be >= 1"),
    ("monitor.knn_temperature", "0", "monitor.knn_temperature must be > 0 or null"),
    ("monitor.probe_lr", "-0.1", "monitor.probe_lr must be > 0"),
    ("monitor.probe", "sometimes", "monitor.probe: expected true or false or null"),
    ("monitor.evrey", "5", "did you mean 'monitor.every'"),
])
def test_config_errors_are_one_line_naming_the_key(key, value, message):
    with pytest.raises(ValueError) as info:
        config(**{key: value})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_defaults_and_the_automatic_cadence():
    cfg = config()
    assert cfg.monitor == MonitorConfig() and cfg.monitor.every is None and cfg.monitor.probe is None
    every = monitor_every(MonitorConfig(), total=10_000, batch_size=256, views=2, log_every=10)
    assert every == 500  # about 20 measurements over a long run
    small_batches = monitor_every(MonitorConfig(), total=2000, batch_size=32, views=2, log_every=5)
    assert small_batches % 5 == 0 and small_batches >= 2 * 512 / (0.05 * 3 * 32 * 2)  # each at most ~5 % of its steps (bank + queries, backbone)
    assert monitor_every(MonitorConfig(), total=200, batch_size=32, views=2, log_every=5) == 0  # too short to afford
    assert monitor_every(MonitorConfig(every=7), total=200, batch_size=32, views=2, log_every=5) == 7
    assert [s for s in range(1, 13) if monitor_due(s, 5, 12)] == [5, 10, 12] and not monitor_due(5, 0, 12)


def test_a_probe_asked_for_on_unlabelled_data_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"^monitor.probe: the online probe needs labels"):
        run(tmp_path, cfg=config(**{"monitor.probe": "true"}), dataset=Unlabelled())
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the measurements


def test_the_knn_monitor_equals_knn_classify_on_features_computed_by_hand():
    cfg = config(**{"monitor.items": 40, "monitor.knn_k": 5})
    torch.manual_seed(0)
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    model, views = comps.model, comps.views
    train_data, test_data = Clusters(n=120), Clusters(n=100, seed=0)
    monitors = Monitors.for_run(cfg.monitor, every=5, total=10, model=model, views=views, train=train_data,
                                held_out=lambda: test_data, device=torch.device("cpu"), seed=3, batch_size=16)
    model.train()
    out = comps.loss_module()(views(train_data.get(torch.arange(32)), torch.Generator().manual_seed(0)))[1]
    got = monitors.measure(5, out)
    assert model.training and all(m.training for m in model.modules())  # train mode restored

    def by_hand(dataset, batches):
        index = torch.cat([b.index for b in batches])
        items = dataset.get(index)
        model.eval()
        feats = encode_towers(model, views, to_device(items, "cpu"), stage="backbone")["x"]
        model.train()
        return feats, items.labels

    bank, bank_y = by_hand(train_data, monitors.held_out.bank)
    queries, query_y = by_hand(test_data, monitors.held_out.queries)
    assert len(bank) == len(queries) == 40 and len(set(torch.cat([b.index for b in monitors.held_out.bank]).tolist())) == 40
    assert got["knn_acc"] == knn_classify(bank, bank_y, queries, query_y, k=5, temperature=0.07)
    assert got["rankme"] == pytest.approx(effective_rank(queries, eps=1e-7), rel=1e-9)
    assert got["emb_std"] == pytest.approx(embedding_std(out.embeddings["view1"])) and got["collapse"] == 0
    assert 0.0 <= got["probe_acc"] <= 1.0
    again = Monitors.for_run(cfg.monitor, every=5, total=10, model=model, views=views, train=train_data,
                             held_out=lambda: test_data, device=torch.device("cpu"), seed=3, batch_size=16)
    assert again.measure(5, out) == got  # a fixed, seeded subset


def test_the_probe_reads_backbone_features_when_the_outputs_carry_them():
    from types import SimpleNamespace

    cfg = config(**{"monitor.items": 40})
    torch.manual_seed(0)
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())
    data = Clusters()
    monitors = Monitors.for_run(cfg.monitor, every=5, total=10, model=comps.model, views=comps.views, train=data,
                                held_out=lambda: Clusters(n=80, seed=1), device=torch.device("cpu"), seed=0,
                                batch_size=16, stage="backbone")
    assert monitors.probe.linear.in_features == 32  # the MLP's hidden width, not the head's 8
    batch = data.get(torch.arange(32))
    views = comps.views(batch, torch.Generator().manual_seed(0))
    tower = comps.model.towers["x"]
    out = SimpleNamespace(embeddings={v: comps.model(views)[v] for v in views},
                          features={v: tower.features(x) for v, x in views.items()})
    monitors.after_step(out, batch.labels)
    assert int(monitors.probe.seen) == 32
    assert 0.0 <= monitors.measure(5, out)["probe_acc"] <= 1.0


def test_a_probe_state_that_does_not_fit_is_dropped_with_a_note():
    cfg = config(**{"monitor.items": 20})
    torch.manual_seed(0)
    comps = build_components(cfg, dataset=Clusters(), views=NoisyViews())

    def monitors(stage):
        return Monitors.for_run(cfg.monitor, every=5, total=10, model=comps.model, views=comps.views, train=Clusters(),
                                held_out=None, device=torch.device("cpu"), seed=0, batch_size=16, stage=stage)

    backbone, head = monitors("backbone"), monitors("head")
    tensors, plain = backbone.state()
    before = {k: v.clone() for k, v in head.probe.state_dict().items()}
    head.take_notes()
    head.load_state(tensors, plain, source="ckpt")
    assert any("does not fit this run" in note and "starts afresh" in note for note in head.take_notes())
    assert all(torch.equal(before[k], v) for k, v in head.probe.state_dict().items())
    again = monitors("head")
    again.load_state(*head.state(), source="ckpt")  # one that fits loads silently
    assert not [n for n in again.take_notes() if "does not fit" in n]


def test_embedding_std_is_simsiams_measure():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, 16, generator=g)
    assert embedding_std(spread) == pytest.approx(1.0, abs=0.02)  # uniform on the sphere: 1/sqrt(D) per dimension
    assert embedding_std(torch.ones(10, 16) * 3) == 0.0
    line = torch.randn(4000, 1, generator=g) * torch.eye(16)[:1]  # all on one axis: sqrt(1/16)
    assert embedding_std(line) == pytest.approx(0.25, abs=0.01)
    assert np.isnan(embedding_std(torch.ones(1, 4)))


def test_the_online_probe_learns_and_uses_no_global_random_state():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 6, generator=g) * 5 + 3
    y = (x[:, 0] + x[:, 1] > 6).long()
    state = torch.get_rng_state()
    probe = OnlineProbe(6, 2, lr=1e-2, seed=0)
    for start in range(0, 512 * 4, 64):
        rows = torch.arange(start, start + 64) % 512
        probe.step(x[rows], y[rows])
    assert torch.equal(state, torch.get_rng_state())
    assert probe.accuracy(x, y) > 0.9 and 0.5 < probe.train_accuracy() <= 1.0
    assert np.isnan(probe.train_accuracy())  # the count starts again
    same = OnlineProbe(6, 2, lr=1e-2, seed=0)
    assert torch.equal(same.linear.weight, OnlineProbe(6, 2, lr=1e-2, seed=0).linear.weight)


# ---------------------------------------------------------------- in the loop


def test_monitor_columns_are_filled_on_monitor_rows_only(tmp_path):
    run(tmp_path, cfg=config(steps=40, **{"monitor.every": 10}))
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert list(rows[0]) == list(COLUMNS) and set(MONITOR_COLUMNS) <= set(COLUMNS)
    measured = [r["step"] for r in rows if r["knn_acc"] == r["knn_acc"]]
    assert measured == [10, 20, 30, 40]
    for r in rows:
        assert 0 <= r["probe_train_acc"] <= 1  # the probe's running accuracy: every row
        filled = [r[c] == r[c] for c in ("knn_acc", "probe_acc", "rankme", "emb_std", "collapse")]
        assert all(filled) if r["step"] in measured else not any(filled)
    last = rows[-1]
    assert last["knn_acc"] > 0.9 and last["probe_acc"] > 0.5 and last["collapse"] == 0 and last["rankme"] > 2
    text = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert text[1].count(",,") >= 1 and "nan" not in text[1].split(",")[-7:]  # empty cells, not "nan"


def test_weights_are_bit_identical_with_monitors_on_or_off(tmp_path):
    cfg_on = config(steps=30, **{"monitor.every": 5, "model.encoder.options": "{hidden: [32], dropout: 0.2}"})
    cfg_off = config(steps=30, **{"monitor.every": 0, "model.encoder.options": "{hidden: [32], dropout: 0.2}"})
    run(tmp_path, "on", cfg=cfg_on)
    run(tmp_path, "off", cfg=cfg_off)
    on, off = last_checkpoint(tmp_path / "on"), last_checkpoint(tmp_path / "off")
    assert on.model.keys() == off.model.keys() and all(torch.equal(on.model[k], off.model[k]) for k in on.model)
    rng = [k for k in off.tensors if k.startswith("rng.")]
    assert rng and all(torch.equal(on.tensors[k], off.tensors[k]) for k in rng)  # no random stream was touched
    assert any(k.startswith("monitor.probe.") for k in on.tensors) and not any(k.startswith("monitor.") for k in off.tensors)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in MONITOR_COLUMNS} for r in rows]  # noqa: E731
    assert strip(computed_rows(tmp_path / "on" / "metrics.csv")) == strip(computed_rows(tmp_path / "off" / "metrics.csv"))


def test_resume_after_a_crash_continues_the_probe_exactly(tmp_path):
    cfg = config(steps=40, **{"checkpoint.every": 10, "monitor.every": 5})
    run(tmp_path, "straight", cfg=cfg)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, "crashed", cfg=cfg, views=FailingViews(at_call=27))
    run(tmp_path, "crashed", cfg=cfg, resume=True)
    a, b = last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "crashed")
    for field in ("model", "tensors"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), field
    assert any(k.startswith("monitor.probe_optimizer.") for k in a.tensors) and a.meta["monitor"] == b.meta["monitor"]
    assert computed_rows(tmp_path / "straight" / "metrics.csv") == computed_rows(tmp_path / "crashed" / "metrics.csv")


def test_a_collapsed_encoder_trips_the_warning_once(tmp_path, capfd):
    run(tmp_path, cfg=config(steps=30, **{"monitor.every": 5}), encoders={"x": Constant()})
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "look collapsed" in line]
    assert len(warnings) == 1 and "at step 5:" in warnings[0], err
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["collapse"] == r["collapse"]]
    assert len(rows) == 6 and all(r["collapse"] == 1 and r["emb_std"] < COLLAPSE_STD for r in rows)
    assert all(r["rankme"] == pytest.approx(1.0, abs=1e-3) for r in rows)  # one direction


def test_a_healthy_run_does_not_warn(tmp_path, capfd):
    run(tmp_path, cfg=config(steps=40, **{"monitor.every": 5}))
    assert "collapsed" not in capfd.readouterr().err
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["collapse"] == r["collapse"]]
    assert rows and all(r["collapse"] == 0 for r in rows)


def test_unlabelled_data_skips_the_label_monitors_with_a_note(tmp_path, capfd):
    run(tmp_path, cfg=config(steps=20, **{"monitor.every": 10}), dataset=Unlabelled())
    err = capfd.readouterr().err
    assert err.count("has no labels, so kNN accuracy and the online probe are skipped") == 1, err
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(r[c] != r[c] for r in rows for c in ("knn_acc", "probe_acc", "probe_train_acc"))
    measured = [r for r in rows if r["rankme"] == r["rankme"]]
    assert [r["step"] for r in measured] == [10, 20] and all(r["emb_std"] > 0.1 and r["collapse"] == 0 for r in measured)


def test_the_curves_figure_draws_the_monitor_columns(tmp_path):
    from contrastlab.plots.curves import read_metrics_csv, training_curves

    run(tmp_path, cfg=config(steps=20, **{"monitor.every": 10}))
    fig = training_curves(read_metrics_csv(tmp_path / "run" / "metrics.csv"))
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert list(axes)[:4] == ["loss", "accuracy", "rankme", "emb_std"] and "collapse" not in axes
    lines = {line.get_label(): line for line in axes["accuracy"].get_lines()}
    assert set(lines) == {"knn_acc", "probe_acc", "probe_train_acc"}
    assert list(lines["knn_acc"].get_xdata()) == [10.0, 20.0]  # the empty cells are skipped
    assert len(lines["probe_train_acc"].get_xdata()) == 4


# ---------------------------------------------------------------- DDP and the command line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_run(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    ensure_objectives()
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    cfg = config(steps=12, **{"monitor.every": 2, "checkpoint.every": 4,
                              "model.encoder.options": "{hidden: [32], batch_norm: false}"})
    try:
        train(cfg, os.path.join(out_dir, "ddp"), dataset=Clusters(), views=NoisyViews())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    os._exit(0)


def test_under_ddp_the_monitors_run_on_rank_0_without_deadlock(tmp_path):
    context = mp.spawn(_ddp_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.time() + 240
    while not context.join(timeout=1):
        if time.time() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail("the two processes did not finish: a monitor waited on the other process")
    rows = read_metrics(tmp_path / "ddp" / "metrics.csv")
    assert [r["step"] for r in rows if r["knn_acc"] == r["knn_acc"]] == [2, 4, 6, 8, 10, 12]
    ckpt = last_checkpoint(tmp_path / "ddp")
    assert ckpt.meta["world_size"] == 2 and any(k.startswith("monitor.probe.") for k in ckpt.tensors)


DIGITS = """\
data: {name: digits}
views: {name: simclr}
objective: {name: nt_xent, options: {temperature: 0.2}}
model:
  encoder: {name: mlp, options: {hidden: [32]}}
  head: {name: mlp, hidden: 32}
  dim: 16
optim: {name: adamw, lr: 3.0e-3}
batch_size: 64
steps: 30
threads: 1
device: cpu
checkpoint: {every: 0}
log: {every: 5, progress: true, tensorboard: true}
monitor: {every: 10, items: 200}
"""


def test_the_command_line_writes_the_monitor_columns(tmp_path):
    (tmp_path / "run.yaml").write_text(DIGITS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "contrastlab", "train", "run.yaml", "--out", "run"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(MONITOR_COLUMNS) <= set(rows[0])
    measured = {int(row["step"]): row for row in rows if row["knn_acc"] != ""}
    assert sorted(measured) == [10, 20, 30]
    assert all(row["rankme"] == "" and row["collapse"] == "" for row in rows if int(row["step"]) not in measured)
    final = measured[30]
    assert float(final["knn_acc"]) > 0.3 and float(final["probe_acc"]) > 0.2  # 10 classes: chance is 0.1
    assert final["collapse"] == "0" and float(final["rankme"]) > 2
    assert f"knn={float(final['knn_acc']):.2f}" in r.stderr  # the progress bar's postfix
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/knn_acc", "train/probe_acc", "train/rankme", "train/collapse", "train/probe_train_acc"} <= set(scalars)
    assert [e.step for e in events.Scalars("train/knn_acc")] == [10, 20, 30]


#: ``contrastlab`` killed by SIGKILL right after its ``KILL_AT``-th ``os.replace`` (0: never).
KILLER = """
import os, signal, sys
kill_at, count, real = int(sys.argv[1]), [0], os.replace
def replace(*args, **kwargs):
    real(*args, **kwargs)
    count[0] += 1
    if count[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from contrastlab.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def test_sigkill_then_resume_is_bit_identical_with_the_monitors(tmp_path):
    text = DIGITS.replace("checkpoint: {every: 0}", "checkpoint: {every: 5}").replace("progress: true, tensorboard: true",
                                                                                      "progress: false, tensorboard: false")
    (tmp_path / "run.yaml").write_text(text.replace("monitor: {every: 10, items: 200}", "monitor: {every: 5, items: 200}"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(kill_at, *args):
        return subprocess.run([sys.executable, "-c", KILLER, str(kill_at), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    assert launch(0, "train", "run.yaml", "--out", "straight").returncode == 0
    killed = launch(17, "train", "run.yaml", "--out", "killed")  # inside the third or fourth checkpoint
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = CheckpointManager(tmp_path / "killed" / "checkpoints").path("last").name
    assert "step-00000005" <= last < "step-00000030"
    resumed = launch(0, "resume", "killed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = last_checkpoint(tmp_path / "straight"), last_checkpoint(tmp_path / "killed")
    for field in ("model", "tensors"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), field
    assert any(k.startswith("monitor.probe.") for k in a.tensors)
    rows = computed_rows(tmp_path / "straight" / "metrics.csv")
    assert rows == computed_rows(tmp_path / "killed" / "metrics.csv") and all(r["knn_acc"] != "" for r in rows)


def test_a_run_too_short_for_the_automatic_cadence_has_no_monitors_and_says_nothing(tmp_path, capfd):
    run(tmp_path, cfg=config(steps=10))
    assert "monitors" not in capfd.readouterr().err
    assert not any(k.startswith("monitor.") for k in last_checkpoint(tmp_path / "run").tensors)
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert all(r[c] != r[c] for r in rows for c in MONITOR_COLUMNS)


def test_held_out_without_a_test_split_uses_training_items_outside_the_bank():
    held = HeldOut.build(Clusters(n=100), None, items=30, seed=0, batch_size=8)
    bank = torch.cat([b.index for b in held.bank])
    queries = torch.cat([b.index for b in held.queries])
    assert len(bank) == len(queries) == 30 and not set(bank.tolist()) & set(queries.tolist())
    assert held.note and "outside the kNN bank" in held.note
    small = HeldOut.build(Clusters(n=20), None, items=30, seed=0, batch_size=8)
    assert sum(len(b) for b in small.bank) == 10 and sum(len(b) for b in small.queries) == 10
    assert isinstance(small.bank[0], Batch)
