"""Shared measuring tools: timing by median of repeats, the matmul peak, peak memory in a subprocess, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30
MIB = 2**20


@dataclass
class Config:
    """What one benchmark run measures: ``quick`` shrinks every section to a smoke test of under a minute."""

    quick: bool = False
    threads: int = 1
    memory_budget_gib: float = 6.0  #: cases predicted to need more extra memory are skipped, and said so
    time_budget_s: float = 20.0  #: repeats per case are limited to roughly this much time
    max_n: int | None = None  #: the loss section's largest batch (pairs), ``None`` for all sizes
    loss_sizes: tuple[int, ...] | None = None  #: the loss section's batches (pairs), ``None`` for the mode's
    loss_families: tuple[str, ...] | None = None  #: loss families to run, ``None`` for all
    loss_methods: tuple[str, ...] | None = None  #: methods to run, ``None`` for all (peers included)
    memory: bool = True  #: measure each loss case's peak memory in a subprocess
    notes: list[str] = field(default_factory=list)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _summary(samples: list[float], load_before: float | None) -> dict[str, Any]:
    return {
        "seconds": statistics.median(samples),
        "samples": [round(s, 6) for s in samples],
        "spread": round(max(samples) / min(samples), 3),
        "load_before": load_before,
        "load_after": load_average(),
    }


def time_interleaved(
    calls: dict[str, Callable[[], Any]], *, budget_s: float, max_repeats: int = 5
) -> dict[str, dict[str, Any] | BaseException]:
    """Median wall time of each call over repeats taken in turns (``a b c a b c ...``), after one warm-up each.

    Taking turns spreads a busy machine's slow spells over all methods alike, so their ratios stay fairer
    than their absolute times. A call whose warm-up took over a third of ``budget_s`` is not repeated: its
    warm-up is its only sample (large cases run once; a one-time cost is small next to such a run). A call
    that raises ``RuntimeError`` or ``MemoryError`` gets the exception instead of a timing.
    """
    load_before = load_average()
    first: dict[str, float] = {}
    out: dict[str, dict[str, Any] | BaseException] = {}
    for name, fn in calls.items():
        try:
            first[name] = _timed(fn)
        except (RuntimeError, MemoryError) as err:
            out[name] = err
    wanted = {
        name: 0 if t * 3 > budget_s else int(min(max_repeats, max(2, (budget_s - t) // max(t, 1e-6))))
        for name, t in first.items()
    }
    samples: dict[str, list[float]] = {name: [] for name in first}
    for round_ in range(max_repeats):
        for name in first:
            if round_ < wanted[name]:
                samples[name].append(_timed(calls[name]))
    for name, t in first.items():
        out[name] = _summary(samples[name] or [t], load_before)
    return out


def time_call(fn: Callable[[], Any], *, budget_s: float, max_repeats: int = 5) -> dict[str, Any]:
    """:func:`time_interleaved` for a single call (exceptions propagate)."""
    result = time_interleaved({"call": fn}, budget_s=budget_s, max_repeats=max_repeats)["call"]
    if isinstance(result, BaseException):
        raise result
    return result


def matmul_peak(sizes: tuple[int, ...], *, repeats: int = 5) -> dict[str, Any]:
    """The best median GFLOP/s of square float32 ``torch.mm`` over ``sizes`` (2 n^3 flops each)."""
    best: dict[str, Any] = {"gflops": 0.0}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        timing = time_call(lambda: torch.mm(a, b, out=out), budget_s=60.0, max_repeats=repeats)
        gflops = 2 * n**3 / timing["seconds"] / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": round(gflops, 1), "n": n, **timing}
    return best


def probe_memory(case: dict[str, Any], *, threads: int, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run one case in a fresh ``python -m benchmarks._memprobe`` and return its extra peak memory.

    The child resets its peak resident size (``/proc/self/clear_refs``) after building the inputs, runs the
    case once (forward and backward) and reports ``VmHWM - VmRSS`` before the case: the memory the case itself
    added, in bytes, and the wall time of that run.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "benchmarks._memprobe", json.dumps(case), str(threads)]
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
        return {"error": last[:300]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(config: Config) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": config.threads,
        "quick": config.quick,
        "memory_budget_gib": config.memory_budget_gib,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": load_average(),
    }


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def skipped(title: str, note: str) -> dict[str, Any]:
    """The result of a section that could not run: its title and why."""
    return {"title": title, "status": "skipped", "note": note}
