"""Section: the cost of the training monitors (held-out kNN, online probe, RankMe, collapse) at their default cadence.

Two short runs (80 steps, about the shortest the automatic cadence measures) on the Shapes world at 32 x 32 with SimCLR views and the small conv net, batch 256 (the cases of the
training section): SimCLR (NT-Xent, tau = 0.2) and BYOL. Each case is trained by :func:`contrastlab.training.train`
twice per repetition, back to back, the order flipped every repetition: with the monitors at their default
(``monitor.every: null``, the automatic cadence; the online probe on) and with ``monitor.every: 0`` (no monitors).
Everything else is the same: a checkpoint only at the end, a ``metrics.csv`` row every 10 steps, no TensorBoard, no
progress bar. A two-step run with monitors comes first, untimed: the first call in a process pays for imports and
first-call set-up.

``ratio`` is the median over repetitions of (whole ``train()`` call with monitors) / (without), in wall time, and
``cpu_ratio`` the same in process CPU time: they include reading the held-out items once (the Shapes world renders
them), every measurement and the probe's step at every training step. On a shared machine two calls a minute apart
can differ by far more than the monitors cost, so ``inside_ratio`` also times, within each call with monitors, the
time spent inside the monitors' methods (patched with a stopwatch) against the rest of the call: 1 + that share.
The goal is at most 1.10 for both ``ratio`` and ``inside_ratio``. The parts are also timed on their own, in this
process: ``setup_s`` (building the monitors: the test split and reading the bank and the queries), ``measure_s``
(one measurement, the median of a few) and ``probe_ms`` (one probe step).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import Config, load_average, markdown_table, skipped

TITLE = "Training monitors: train() with and without them (Shapes 32 x 32, SimCLR views, conv net, batch 256)"

GOAL_RATIO = 1.10  #: train() with the monitors at their default cadence should take at most this much longer


def config_dict(case: str, *, steps: int, batch: int, threads: int | None, every: int | None,
                items: int = 512) -> dict[str, Any]:
    """One case of the training section with a test split of ``items`` items and the given ``monitor`` cadence."""
    from benchmarks.training import config_dict as training_config

    raw = training_config(case, steps=steps, batch=batch, threads=threads)
    raw["data"] = {"name": "shapes", "options": {"n_items": max(10 * batch, 2 * items), "n_test": items}}
    raw["monitor"] = {"every": every, "items": items}
    return raw


class _Stopwatch:
    """Adds up the time spent inside the monitors' methods during a train() call (patched in, then restored)."""

    NAMES = ("for_run", "after_step", "row")

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "_Stopwatch":
        from contrastlab.training.monitors import Monitors

        self.saved = {name: Monitors.__dict__[name] for name in self.NAMES}
        for name, original in self.saved.items():
            setattr(Monitors, name, self._timed(original))
        return self

    def _timed(self, original):
        is_class = isinstance(original, classmethod)
        func = original.__func__ if is_class else original

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return classmethod(timed) if is_class else timed

    def __exit__(self, *exc) -> None:
        from contrastlab.training.monitors import Monitors

        for name, original in self.saved.items():
            setattr(Monitors, name, original)


def _train(raw: dict[str, Any]) -> dict[str, float]:
    """One ``train()`` call in a fresh directory: wall and CPU seconds, seconds inside the monitors, monitor rows."""
    from contrastlab.training import config_from_dict, train
    from contrastlab.training.logging import read_metrics

    cfg = config_from_dict(raw)
    with tempfile.TemporaryDirectory() as tmp, _Stopwatch() as watch:
        start, cpu = time.perf_counter(), time.process_time()
        train(cfg, Path(tmp) / "run")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        measured = sum(1 for row in read_metrics(Path(tmp) / "run" / "metrics.csv") if row["knn_acc"] == row["knn_acc"])
    return {"wall_s": wall, "cpu_s": cpu, "monitor_s": watch.seconds, "measured": measured}


def _parts(raw: dict[str, Any], repeats: int) -> dict[str, float]:
    """The monitors' parts timed on their own: building them, one measurement, one probe step."""
    import torch

    from contrastlab.data.base import to_device
    from contrastlab.data.loading import sample_batch
    from contrastlab.training import config_from_dict
    from contrastlab.training.build import build_components, make_dataset
    from contrastlab.training.monitors import Monitors, monitor_every

    cfg = config_from_dict(raw)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comps = build_components(cfg)
    every = monitor_every(cfg.monitor, total=cfg.steps, batch_size=cfg.batch_size, views=len(comps.views.view_names),
                          log_every=cfg.log.every)
    start = time.perf_counter()
    monitors = Monitors.for_run(cfg.monitor, every=every, total=cfg.steps, model=comps.model, views=comps.views,
                                train=comps.dataset, held_out=lambda: make_dataset(cfg, "test"),
                                device=torch.device("cpu"), seed=0, batch_size=cfg.batch_size)
    setup_s = time.perf_counter() - start
    batch = to_device(sample_batch(comps.dataset, cfg.batch_size), "cpu")
    module = comps.loss_module().train()
    _, out = module(comps.views(batch, torch.Generator().manual_seed(0)))
    monitors.measure(every, out)  # warm-up
    measures = []
    for _ in range(repeats):
        start = time.perf_counter()
        monitors.measure(every, out)
        measures.append(time.perf_counter() - start)
    probe = []
    for _ in range(20):
        start = time.perf_counter()
        monitors.after_step(out, batch.labels)
        probe.append(time.perf_counter() - start)
    return {"every": every, "setup_s": setup_s, "measure_s": statistics.median(measures),
            "probe_ms": 1000 * statistics.median(probe)}


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.training.monitors") is None:
        return skipped(TITLE, "contrastlab.training.monitors is missing")
    # 80 steps of 256 is about the shortest run the automatic cadence measures (2 x 512 items / 5 % = 20,480 items);
    # quick mode is a smoke test: too short for the automatic cadence, it measures every 3 steps and judges nothing
    steps, batch, repeats, items = (6, 32, 1, 64) if config.quick else (80, 256, 3, 512)
    rows = []
    for case in ("simclr", "byol"):
        on = config_dict(case, steps=steps, batch=batch, threads=config.threads, every=3 if config.quick else None,
                         items=items)
        off = config_dict(case, steps=steps, batch=batch, threads=config.threads, every=0, items=items)
        log(f"  {case}: {steps} steps of {batch}, {repeats} repetition(s) of (monitors, none) in turns")
        _train(config_dict(case, steps=2, batch=batch, threads=config.threads, every=1, items=items))  # untimed warm-up
        load_before = load_average()
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for rep in range(repeats):
            for which in (("on", "off") if rep % 2 == 0 else ("off", "on")):
                runs[which].append(_train(on if which == "on" else off))
        pairs = list(zip(runs["on"], runs["off"]))
        ratios = [a["wall_s"] / b["wall_s"] for a, b in pairs]
        cpu_ratios = [a["cpu_s"] / b["cpu_s"] for a, b in pairs]
        inside = [1 + r["monitor_s"] / (r["wall_s"] - r["monitor_s"]) for r in runs["on"]]
        parts = _parts(on, repeats=3 if config.quick else 5)
        rows.append({
            "case": case, "steps": steps, "batch": batch, "every": parts["every"], "measurements": runs["on"][0]["measured"],
            "with_s": round(statistics.median(r["wall_s"] for r in runs["on"]), 2),
            "without_s": round(statistics.median(r["wall_s"] for r in runs["off"]), 2),
            "ratio": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "spread": round(max(ratios) / min(ratios), 3),
            "cpu_ratio": round(statistics.median(cpu_ratios), 3), "cpu_ratios": [round(r, 3) for r in cpu_ratios],
            "inside_ratio": round(statistics.median(inside), 4), "inside_ratios": [round(r, 4) for r in inside],
            "monitor_s": round(statistics.median(r["monitor_s"] for r in runs["on"]), 3),
            "setup_s": round(parts["setup_s"], 3), "measure_s": round(parts["measure_s"], 3),
            "probe_ms": round(parts["probe_ms"], 3),
            "goal_met": None if config.quick else statistics.median(inside) <= GOAL_RATIO and statistics.median(ratios) <= GOAL_RATIO,
            "load_before": load_before, "load_after": load_average(),
        })
        log(f"    wall ratio {rows[-1]['ratio']} {rows[-1]['ratios']}, cpu ratio {rows[-1]['cpu_ratio']} "
            f"{rows[-1]['cpu_ratios']}, inside ratio {rows[-1]['inside_ratio']} {rows[-1]['inside_ratios']}, "
            f"load {load_before} -> {rows[-1]['load_after']}")
    return {"title": TITLE, "status": "ok", "goal_ratio": GOAL_RATIO, "threads": config.threads, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = (f"`train()` with the monitors at their default cadence against `monitor.every: 0`, {result['threads']} "
            f"thread(s), runs timed back to back in turns. `ratio` (wall) and `cpu ratio` (process CPU time) are "
            f"medians over repetitions of with / without; `inside ratio` is 1 + the time spent inside the monitors "
            f"(building them, the probe's steps, the measurements) over the rest of the same call, which a busy "
            f"machine disturbs far less. Goal: both `ratio` and `inside ratio` at most {result['goal_ratio']}. "
            f"`setup s` builds the monitors (test split, bank and queries read once); `measure s` is one measurement; "
            f"`probe ms` one step of the online probe.")
    keys = ("case", "steps", "batch", "every", "measurements", "with_s", "without_s", "ratio", "spread", "cpu_ratio",
            "inside_ratio", "monitor_s", "setup_s", "measure_s", "probe_ms", "goal_met", "load_before", "load_after")
    columns = ["case", "steps", "batch", "every", "measured", "with s", "without s", "ratio", "spread", "cpu ratio",
               "inside ratio", "in monitors s", "setup s", "measure s", "probe ms", "goal met", "load before",
               "load after"]
    return head + "\n\n" + markdown_table(columns, [[r.get(k) for k in keys] for r in result["rows"]])
