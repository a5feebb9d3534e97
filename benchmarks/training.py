"""Section: the one training loop (:func:`contrastlab.training.train`) against a bare hand-written loop.

Two cases on the Shapes world at 32 x 32 with SimCLR views and the small conv net, batch 256:
SimCLR (NT-Xent, tau = 0.2) and BYOL (predictor and momentum targets, whose EMA update is an after-step
hook). For each case and each thread count, in one process and in turns (``bare train``, ``train bare``, ...):

* **bare** -- what a user would write by hand around the *same* pieces: ``build_components`` from the
  same config (same data set, view generator, model and objective), the same view generator called the
  same way, the same items in the same order, ``torch.optim.AdamW`` over the trainable parameters, and
  per step only ``views -> model -> loss -> zero_grad -> backward -> step`` (BYOL also its EMA update,
  written with ``torch._foreach_lerp_``). Losses are kept as detached tensors (no host sync) so they can
  be compared with train()'s ``metrics.csv`` (see ``tests/benchmarks``).
* **train()** -- the library's loop on that config: a fixed number of steps, a checkpoint only at the end,
  a ``metrics.csv`` row every 10 steps, no TensorBoard, no progress bar.

Times are wall-clock inside this process: the process start-up and imports are excluded. Two ratios of
items/s (train() / bare) are reported:

* ``ratio`` (the headline): train()'s whole call -- building the pieces, writing ``config.yaml`` and
  ``metrics.csv``, every step, the final checkpoint -- against the bare loop's ``build_components`` plus
  its steps (it writes nothing);
* ``loop_ratio``: steps only -- train()'s ``elapsed_s`` at its last ``metrics.csv`` row (its loop, before
  the final checkpoint) against the bare loop's steps. ``fixed_s`` is the rest of train()'s call minus
  the bare build time: its set-up, files and final checkpoint.

Each ratio is the median over repetitions of the ratio of one (bare, train()) pair timed back to back;
``spread`` is the largest / smallest of those ratios. Two checks that are less sensitive to other
processes: ``best_window_ratio`` compares the fastest window of ``log.every`` steps of each loop (the
first window left out; the bare loop notes the time after each step, train()'s windows are its
``metrics.csv`` rows), and ``cpu_ratio`` the process CPU time of the whole calls. The data + views
share of each step comes from train()'s own ``metrics.csv`` (first logging window left out as warm-up).
"""

from __future__ import annotations

import csv
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import Config, load_average, markdown_table, skipped

TITLE = "The training loop against a bare loop (Shapes 32 x 32, SimCLR views, conv net, batch 256)"

CASES: dict[str, dict[str, Any]] = {
    "simclr": {"objective": {"name": "nt_xent", "options": {"temperature": 0.2}}},
    "byol": {"objective": {"name": "byol"}},
}
GOAL_RATIO = 0.9  #: train() should reach at least this share of the bare loop's items/s
GOAL_VIEW_FRACTION = 0.15  #: data + views should stay at most this share of a step


def config_dict(case: str, *, steps: int, batch: int, threads: int | None, every: int = 10,
                schedule: str = "cosine") -> dict[str, Any]:
    """The config of one case (``schedule="constant"`` makes train()'s losses comparable with the bare loop's)."""
    return {
        "data": {"name": "shapes", "options": {"n_items": 4 * batch}},
        "views": {"name": "simclr"},
        **CASES[case],
        "model": {"encoder": {"name": "convnet"}, "dim": 128},
        "batch_size": batch,
        "steps": steps,
        "device": "cpu",
        "threads": threads,
        "schedule": {"name": schedule},
        "checkpoint": {"every": 0},
        "log": {"every": every, "tensorboard": False, "progress": False},
    }


def bare_loop(cfg) -> dict[str, Any]:
    """The hand-written loop over the pieces ``cfg`` builds: returns its times and its per-step losses.

    Seeds, items and view generator state follow train()'s (one process), so the losses are train()'s
    when the learning rate is constant.
    """
    from contrastlab.encoders.model import to_output_space
    from contrastlab.encoders.momentum import momentum_at
    from contrastlab.objectives.predictive import negative_cosine
    from contrastlab.training.build import build_components
    from contrastlab.training.sampler import ShardedBatches, derive_seed

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    comps = build_components(cfg)
    torch.manual_seed(derive_seed(cfg.seed, 0, 2))
    model, objective, make_views, data = comps.model, comps.objective, comps.views, comps.dataset
    names = list(make_views.view_names)
    params = [p for m in (model, objective) for p in m.parameters() if p.requires_grad]
    o = cfg.optim
    opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sampler = ShardedBatches(len(data), cfg.batch_size, seed=cfg.seed)
    order = [sampler.indices(s) for s in range(cfg.steps)]
    rng = torch.Generator().manual_seed(derive_seed(cfg.seed, 0, 1))
    steps = cfg.steps

    if model.targets is None:  # SimCLR: the model's embeddings of both views, the objective on the pair
        a, b = names

        def loss_of(views):
            z = model(views)
            return objective(z[a], z[b])

        def after(step):
            pass
    else:  # BYOL: online projection -> predictor; target projection without gradient; EMA after the step
        tower = {v: model.view_towers[v] for v in names}
        space = model.output_space
        online_p, target_p = list(model.towers.parameters()), list(model.targets.towers.parameters())
        online_b, target_b = list(model.towers.buffers()), list(model.targets.towers.buffers())
        base, schedule = model.targets.momentum, model.targets.schedule

        def loss_of(views):
            z = {v: model.towers[tower[v]](views[v])[1] for v in names}
            p = {v: to_output_space(model.predictor[tower[v]](z[v]), space) for v in names}
            with torch.no_grad():
                t = {v: to_output_space(model.targets.towers[tower[v]](views[v])[1], space) for v in names}
            pairs = [(v, g) for g in names for v in names if v != g]
            return torch.stack([2.0 + 2.0 * negative_cosine(p[v], t[g]) for v, g in pairs]).mean()

        @torch.no_grad()
        def after(step):
            torch._foreach_lerp_(target_p, online_p, 1.0 - momentum_at(base, step, steps, schedule))
            torch._foreach_copy_(target_b, online_b)

    model.train()
    losses, stamps = [], []
    t1, c1 = time.perf_counter(), time.process_time()
    for step in range(steps):
        batch = data.get(order[step])
        views = make_views(batch, rng)
        loss = loss_of(views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        after(step + 1)
        losses.append(loss.detach())
        stamps.append(time.perf_counter())
    t2, c2 = time.perf_counter(), time.process_time()
    return {"build_s": t1 - t0, "loop_s": t2 - t1, "cpu_s": c2 - c0, "losses": [float(x) for x in losses],
            "elapsed_s": [t - t1 for t in stamps]}


def window_seconds(elapsed: list[float]) -> list[float]:
    """Durations of consecutive windows from the elapsed times at their ends (the first from 0)."""
    return [b - a for a, b in zip([0.0, *elapsed[:-1]], elapsed)]


def train_run(cfg) -> dict[str, Any]:
    """One train() call in a fresh temporary run directory: its wall time, loop time and metrics rows."""
    from contrastlab.training import train

    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        train(cfg, Path(tmp) / "run")
        call_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            windows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    return {"call_s": call_s, "cpu_s": cpu_s, "loop_s": windows[-1]["elapsed_s"], "windows": windows}


def _median_spread(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), (max(values) / min(values) if min(values) > 0 else float("nan"))


def measure(case: str, *, steps: int, batch: int, threads: int, repeats: int, every: int = 10,
            log=print) -> dict[str, Any]:
    """``repeats`` (bare, train()) pairs of one case, taken in turns, the order flipped every repetition."""
    from contrastlab.training import config_from_dict

    cfg = config_from_dict(config_dict(case, steps=steps, batch=batch, threads=threads, every=every))
    load_before = load_average()
    bare, trained, pairs = [], [], []
    for rep in range(repeats):
        order = ("bare", "train") if rep % 2 == 0 else ("train", "bare")
        got = {}
        for which in order:
            got[which] = bare_loop(cfg) if which == "bare" else train_run(cfg)
        b, t = got["bare"], got["train"]
        b.pop("losses")
        every = cfg.log.every
        # full windows of ``every`` steps, as train()'s metrics.csv rows; the first (warm-up) left out
        elapsed = b.pop("elapsed_s")
        b["windows_s"] = window_seconds([elapsed[s - 1] for s in range(every, steps + 1, every)])[1:]
        t["windows_s"] = window_seconds([w["elapsed_s"] for w in t["windows"] if int(w["step"]) % every == 0])[1:]
        bare.append(b)
        trained.append(t)
        pairs.append({
            "ratio": (b["build_s"] + b["loop_s"]) / t["call_s"],
            "loop_ratio": b["loop_s"] / t["loop_s"],
            "cpu_ratio": b["cpu_s"] / t["cpu_s"],
            "fixed_s": t["call_s"] - t["loop_s"] - b["build_s"],
        })
        log(f"  {case}, {threads} thread(s), repetition {rep + 1}: bare {b['build_s'] + b['loop_s']:.2f} s, "
            f"train() {t['call_s']:.2f} s, ratio {pairs[-1]['ratio']:.3f} (steps only {pairs[-1]['loop_ratio']:.3f}, "
            f"CPU time {pairs[-1]['cpu_ratio']:.3f}; load {load_average()})")
    items = steps * batch
    bare_total = [b["build_s"] + b["loop_s"] for b in bare]
    ratio, spread = _median_spread([p["ratio"] for p in pairs])
    loop_ratio, loop_spread = _median_spread([p["loop_ratio"] for p in pairs])
    shares = [w["view_fraction"] for t in trained for w in (t["windows"][1:] or t["windows"])]
    bare_windows = [w for b in bare for w in b["windows_s"]]
    train_windows = [w for t in trained for w in t["windows_s"]]
    best = min(bare_windows) / min(train_windows) if bare_windows and train_windows else float("nan")
    return {
        "case": case,
        "threads": threads,
        "steps": steps,
        "batch": batch,
        "bare_items_per_s": round(items / statistics.median(bare_total), 1),
        "train_items_per_s": round(items / statistics.median([t["call_s"] for t in trained]), 1),
        "ratio": round(ratio, 3),
        "spread": round(spread, 3),
        "bare_loop_items_per_s": round(items / statistics.median([b["loop_s"] for b in bare]), 1),
        "train_loop_items_per_s": round(items / statistics.median([t["loop_s"] for t in trained]), 1),
        "loop_ratio": round(loop_ratio, 3),
        "loop_spread": round(loop_spread, 3),
        "best_window_ratio": round(best, 3),
        "cpu_ratio": round(_median_spread([p["cpu_ratio"] for p in pairs])[0], 3),
        "cpu_spread": round(_median_spread([p["cpu_ratio"] for p in pairs])[1], 3),
        "bare_build_s": round(statistics.median([b["build_s"] for b in bare]), 3),
        "fixed_s": round(statistics.median([p["fixed_s"] for p in pairs]), 3),
        "view_fraction": round(statistics.mean(shares), 3),
        "samples": {"bare": [{k: round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v]
                              for k, v in b.items()} for b in bare],
                    "train": [{k: round(t[k], 4) if isinstance(t[k], float) else [round(x, 4) for x in t[k]]
                               for k in ("call_s", "cpu_s", "loop_s", "windows_s")} for t in trained],
                    "pairs": [{k: round(v, 4) for k, v in p.items()} for p in pairs]},
        "load_before": load_before,
        "load_after": load_average(),
    }


def run(config: Config, log=print) -> dict[str, Any]:
    if importlib.util.find_spec("contrastlab.training.loop") is None:
        return skipped(TITLE, "contrastlab.training.loop is missing (training/ not landed yet)")
    try:
        from contrastlab.training import config_from_dict, train  # noqa: F401
        from contrastlab.training.build import build_components  # noqa: F401
    except ImportError as err:
        return skipped(TITLE, f"contrastlab.training does not import: {err}")
    if config.quick:
        steps, every, batch, repeats, thread_counts = 4, 2, 32, 1, (1,)
    else:
        steps, every, batch, repeats, thread_counts = 60, 10, 256, 3, (1, 2)
    saved_threads = torch.get_num_threads()
    log(f"  {len(CASES)} cases x threads {thread_counts} x {repeats} repetitions of {steps} steps of batch "
        f"{batch} ...")
    # A short untimed warm-up of both loops, so that one-time costs (allocator, kernels) land on neither.
    for case in CASES:
        warm = config_from_dict(config_dict(case, steps=2, batch=min(batch, 32), threads=thread_counts[0],
                                            every=1))
        bare_loop(warm)
        train_run(warm)
    rows = []
    try:
        for threads in thread_counts:
            for case in CASES:
                rows.append(measure(case, steps=steps, batch=batch, threads=threads, repeats=repeats, every=every,
                                    log=log))
    finally:
        torch.set_num_threads(saved_threads)
    simclr = [r for r in rows if r["case"] == "simclr"]
    share = max(r["view_fraction"] for r in simclr)
    return {
        "title": TITLE,
        "status": "ok",
        "steps": steps,
        "batch": batch,
        "repeats": repeats,
        "log_every": every,
        "timed": "ratio: train()'s whole call (set-up, files, steps, final checkpoint) vs the bare loop's "
                 "build_components + steps; loop_ratio: steps only; both exclude process start-up and imports",
        "rows": rows,
        "goal_ratio_at_least": GOAL_RATIO,
        "goal_ratio_met": all(r["ratio"] >= GOAL_RATIO for r in rows),
        "goal_view_fraction_at_most": GOAL_VIEW_FRACTION,
        "view_fraction": share,
        "goal_met": share <= GOAL_VIEW_FRACTION,
    }


def markdown(result: dict[str, Any]) -> str:
    columns = ["case", "threads", "bare items/s", "train() items/s", "ratio", "spread", "steps only", "best window",
               "CPU time", "fixed extra (s)", "data + views share", "load before → after"]
    rows = [[r["case"], r["threads"], r["bare_items_per_s"], r["train_items_per_s"], r["ratio"], r["spread"],
             r["loop_ratio"], r["best_window_ratio"], r["cpu_ratio"], r["fixed_s"], r["view_fraction"],
             f"{r['load_before']} → {r['load_after']}"] for r in result["rows"]]
    met = "met" if result["goal_ratio_met"] else "not met"
    lines = [
        f"{result['steps']} steps of batch {result['batch']}; {result['repeats']} (bare, train()) pairs per row, "
        f"timed in turns. items/s: median over the repetitions of the whole call (train(): set-up, files, steps "
        f"and the final checkpoint; bare: build_components and steps). ratio = train() / bare items/s, the median "
        f"of the pairs' ratios (spread: largest / smallest); steps only: without set-up and final checkpoint; "
        f"best window: fastest {result.get('log_every', 10)}-step window of each, first window left out; CPU "
        f"time: process CPU time of the whole calls. Fixed extra: train()'s call minus its steps minus the bare "
        f"build. Goal ratio ≥ {result['goal_ratio_at_least']}: {met}. Data + views share of a train() step "
        f"(SimCLR, worst row): {result['view_fraction']} (goal ≤ {result['goal_view_fraction_at_most']}).",
        "",
        markdown_table(columns, rows),
    ]
    return "\n".join(lines)
