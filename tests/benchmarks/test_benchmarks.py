"""The benchmark suite: its measuring tools, the peers it compares, and a quick end-to-end run."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # ``benchmarks`` is a top-level package of the repository, not of contrastlab
    sys.path.insert(0, str(ROOT))

from benchmarks import _peers, losses, oversubscription, run, training  # noqa: E402
from benchmarks._common import Config, markdown_table, probe_memory, time_interleaved  # noqa: E402


def test_time_interleaved_takes_turns_and_reports_failures():
    order = []

    def fast():
        order.append("a")

    def slow():
        order.append("b")
        time.sleep(0.002)

    def broken():
        raise RuntimeError("out of memory")

    out = time_interleaved({"a": fast, "b": slow, "c": broken}, budget_s=0.5, max_repeats=3)
    assert isinstance(out["c"], RuntimeError)
    assert out["b"]["seconds"] >= 0.002 > out["a"]["seconds"]
    assert len(out["a"]["samples"]) == len(out["b"]["samples"]) == 3
    assert order[2:] == ["a", "b"] * 3  # after one warm-up each, the repeats alternate


def test_a_slow_first_run_is_the_only_sample():
    calls = []
    out = time_interleaved({"x": lambda: (calls.append(1), time.sleep(0.05))}, budget_s=0.1)
    assert len(calls) == 1 and out["x"]["samples"] == [pytest.approx(out["x"]["seconds"], abs=1e-5)]


def test_markdown_table_formats_numbers_and_missing_values():
    table = markdown_table(["a", "b"], [[1234.5, None], [0.012345, True]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1,234 | — |", "| 0.0123 | yes |"]


@pytest.mark.parametrize("family", ["nt_xent", "info_nce", "clip"])
def test_every_available_method_computes_the_same_loss(family):
    z1, z2 = torch.randn(64, 16), torch.randn(64, 16)
    values = {}
    for method in _peers.METHODS[family]:
        try:
            fn = _peers.build(method, family, 0.2)
        except ImportError:
            continue
        values[method] = float(fn(z1, z2))
    assert {_peers.OURS_TILED, _peers.OURS_NAIVE, _peers.TORCH_NAIVE} <= set(values)
    for method, value in values.items():
        assert value == pytest.approx(values[_peers.TORCH_NAIVE], rel=1e-5), method


def test_lightly_loads_or_says_why():
    cls, note = _peers.load_lightly()
    assert note
    if cls is None:
        assert "does not import" in note
    else:
        assert "NTXentLoss" in note
        ones = torch.ones(4, 3)
        assert float(cls(temperature=0.5)(ones, ones)) == pytest.approx(float(torch.log(torch.tensor(7.0))))


def test_cases_that_cannot_fit_are_skipped_with_the_reason():
    config = Config(memory_budget_gib=1.0)
    assert "> budget 1 GiB" in losses._skip_reason(_peers.TORCH_NAIVE, "nt_xent", 16384, config, {})
    assert losses._skip_reason(_peers.OURS_TILED, "nt_xent", 65536, config, {}) is None
    assert "N > 512" in losses._skip_reason(_peers.PML, "nt_xent", 1024, Config(memory_budget_gib=1e6), {})
    failed = {_peers.LIGHTLY: "x"}
    assert "failed at a smaller size" in losses._skip_reason(_peers.LIGHTLY, "nt_xent", 256, config, failed)


def _row(n, method, seconds, family="nt_xent", pct=70.0, extra=None):
    return {"family": family, "n": n, "rows": _peers.rows(family, n), "method": method, "status": "ok",
            "seconds": seconds, "pct_peak": pct, "executed_pct_peak": pct * 4 / 6, "extra_mib": extra}


def test_threshold_and_goals_from_rows():
    rows = [
        _row(1024, _peers.OURS_TILED, 1.2), _row(1024, _peers.OURS_NAIVE, 1.0),
        _row(2048, _peers.OURS_TILED, 0.9), _row(2048, _peers.OURS_NAIVE, 1.0),
        _row(4096, _peers.OURS_TILED, 1.0), _row(4096, _peers.OURS_NAIVE, 2.0),
        _row(4096, _peers.LIGHTLY, 1.5), _row(4096, _peers.TORCH_NAIVE, 1.6),
        _row(65536, _peers.OURS_TILED, 50.0, pct=55.0, extra=900.0),
    ]
    assert losses._proposed_threshold(rows, "nt_xent") == 4096  # tiled wins from N=2048 pairs = 4096 rows on
    goals = {g["goal"]: g for g in losses._goals(rows)}
    assert goals["NT-Xent N=4096: speed-up over lightly NTXentLoss >= 2.0x"]["met"] is False
    assert goals["NT-Xent N=4096: speed-up over torch naive >= 1.5x"]["met"] is True
    assert "NT-Xent N=65536: speed-up over lightly NTXentLoss >= 2.0x" not in goals  # lightly cannot run there
    assert goals["NT-Xent N=4096: flops executed >= 60% of matmul peak (%)"]["met"] is False  # 70 * 4/6
    assert goals["NT-Xent N=65536: flops executed >= 60% of matmul peak (%)"]["measured"] == pytest.approx(55 * 4 / 6)
    assert goals["NT-Xent N=65536 (131,072 rows): extra memory < 2 GiB (MiB)"]["met"] is True


def test_missing_section_module_is_skipped_with_a_note(monkeypatch):
    import importlib.util

    from benchmarks import knn

    real = importlib.util.find_spec
    def find_spec(name, *args):
        return None if name.startswith("contrastlab.evaluation") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    result = knn.run(Config(quick=True), log=lambda _: None)
    assert result["status"] == "skipped" and "contrastlab.evaluation.knn is missing" in result["note"]
    text = run.render({"environment": {"started": "now", "cpu": "cpu", "cores": 2, "threads": 1, "torch": "t",
                                       "python": "p", "quick": True, "load_average_start": 0.0, "seconds": 1.0},
                       "sections": {"knn": result}})
    assert "*Skipped:* contrastlab.evaluation.knn is missing" in text


@pytest.mark.parametrize("case", sorted(training.CASES))
def test_the_bare_loop_computes_what_train_computes(case):
    """The training section's hand-written loop does train()'s work: same items, views, model, loss, EMA.

    With a constant learning rate its per-step losses, averaged over train()'s logging windows, are the
    losses train() logs (to metrics.csv's 6 digits). Nothing is timed here.
    """
    from contrastlab.training import config_from_dict

    cfg = config_from_dict(training.config_dict(case, steps=4, batch=16, threads=None, every=2, schedule="constant"))
    bare = training.bare_loop(cfg)
    logged = [w["loss"] for w in training.train_run(cfg)["windows"]]
    steps = bare["losses"]
    assert len(steps) == 4 and len(bare["elapsed_s"]) == 4
    assert [(steps[0] + steps[1]) / 2, (steps[2] + steps[3]) / 2] == pytest.approx(logged, rel=2e-5)


def test_training_section_windows_and_table():
    assert training.window_seconds([1.0, 3.0, 6.0]) == [1.0, 2.0, 3.0]
    row = {"case": "simclr", "threads": 1, "bare_items_per_s": 1000.0, "train_items_per_s": 990.0, "ratio": 0.99,
           "spread": 1.02, "loop_ratio": 0.995, "best_window_ratio": 1.0, "cpu_ratio": 0.99, "fixed_s": 0.1,
           "view_fraction": 0.12, "load_before": 1.0, "load_after": 1.5}
    text = training.markdown({"steps": 60, "batch": 256, "repeats": 3, "log_every": 10, "rows": [row],
                              "goal_ratio_at_least": 0.9, "goal_ratio_met": True, "view_fraction": 0.12,
                              "goal_view_fraction_at_most": 0.15})
    assert "Goal ratio ≥ 0.9: met" in text
    assert "| simclr | 1 | 1,000 | 990 | 0.99 | 1.02 | 0.995 | 1 | 0.99 | 0.1 | 0.12 | 1.0 → 1.5 |" in text


def test_merge_replaces_only_the_sections_run():
    old = {"environment": {"started": "then"}, "sections": {"losses": {"title": "L"}, "training": {"title": "old"}}}
    new = {"environment": {"started": "now"}, "sections": {"training": {"title": "new"}}}
    merged = run.merge(old, new)
    assert merged["environment"] == {"started": "then"} and list(merged["sections"]) == ["losses", "training"]
    assert merged["sections"]["losses"] == {"title": "L"}
    assert merged["sections"]["training"] == {"title": "new", "environment": {"started": "now"}}


@pytest.mark.slow
def test_memory_probe_sees_the_naive_matrix_but_not_the_tiled_one():
    n = 2048  # NT-Xent: 4096 rows, one float32 logit matrix is 64 MiB
    naive = probe_memory({"family": "nt_xent", "method": _peers.TORCH_NAIVE, "n": n, "d": 32, "tau": 0.1}, threads=1)
    tiled = probe_memory({"family": "nt_xent", "method": _peers.OURS_TILED, "n": n, "d": 32, "tau": 0.1}, threads=1)
    if naive["extra_bytes"] is None:
        pytest.skip("/proc/self/clear_refs is not available")
    assert naive["extra_bytes"] > 2 * 64 * 2**20
    # RSS deltas carry allocator noise of a few MiB; the tiled kernel must stay well under one full logit matrix.
    assert tiled["extra_bytes"] < 48 * 2**20
    assert tiled["extra_bytes"] < naive["extra_bytes"] / 4


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path):
    start = time.perf_counter()
    # One thread: under pytest-xdist two threads per process would fight for the cores.
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--threads", "1", "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["sections"]) == set(run.SECTIONS)
    section = results["sections"]["losses"]
    assert section["status"] == "ok" and section["matmul_peak_gflops"] > 0
    ok = [r for r in section["rows"] if r["status"] == "ok"]
    assert {r["method"] for r in ok} >= {_peers.OURS_TILED, _peers.OURS_NAIVE, _peers.TORCH_NAIVE}
    assert all(r["loss_rel_diff"] < 1e-4 and r["seconds"] > 0 for r in ok)
    assert any(r.get("extra_mib") is not None for r in ok)
    text = (tmp_path / "results.md").read_text()
    assert "## Contrastive losses (forward + backward)" in text and "| family | N | rows | method |" in text
    assert elapsed < 120, f"quick mode took {elapsed:.0f} s"


def test_focused_loss_run_filters_and_uses_the_peak_timed_in_turns():
    config = Config(quick=True, loss_sizes=(64,), loss_families=("clip",), loss_methods=("tiled", "torch naive"),
                    memory=False, time_budget_s=0.2)
    assert losses._methods("clip", config) == (_peers.OURS_TILED, _peers.TORCH_NAIVE)
    result = losses.run(config, log=lambda _: None)
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    assert {(r["family"], r["n"], r["method"]) for r in rows} == {("clip", 64, _peers.OURS_TILED),
                                                                 ("clip", 64, _peers.TORCH_NAIVE)}
    for r in rows:
        assert r["peak_in_turns_gflops"] > 0 and "extra_mib" not in r
        assert r["pct_peak"] == pytest.approx(100 * r["gflops"] / r["peak_in_turns_gflops"], abs=0.1)


def test_oversubscription_trainer_cases_and_table():
    out = oversubscription.trainer(n=48, threads=1, block=16, repeats=2)
    for method in ("tiled", "naive"):
        assert out[method]["seconds"] > 0 and len(out[method]["wall"]) == 2
        assert out[method]["operators"] > 0 and out[method]["cpu_per_wall"] > 0
    assert out["tiled"]["operators"] > out["naive"]["operators"]  # many small operators per call: the cause
    quick = oversubscription.cases(True, (None,))
    assert {(c["k"], c["threads"]) for c in quick} == {(0, 1), (4, 1), (0, 2), (4, 2)}
    rows = [{"k": k, "threads": 1, "policy": "default", "block": None,
             "tiled": {**out["tiled"], "seconds": t}, "naive": {**out["naive"], "seconds": 1.0},
             "load_before": 1.0, "load_after": 1.0} for k, t in ((0, 0.5), (4, 2.0))]
    oversubscription._slowdowns(rows)
    assert rows[1]["tiled"]["slowdown"] == 4.0 and rows[1]["naive"]["slowdown"] == 1.0
    text = oversubscription.markdown({"n": 48, "rows_of_logits": 96, "dim": 128, "repeats": 2,
                                      "competitor_threads": 2, "cores": 2, "rows": rows})
    assert "| 4 | 1 | default | default | 2.000 | 4.00 |" in text
