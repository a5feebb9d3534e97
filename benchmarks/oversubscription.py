"""Oversubscription: the tiled and the naive NT-Xent while other processes run multi-threaded matrix products.

    python -m benchmarks.oversubscription            # K = 0, 1, 2, 4 competitors; 1 and 2 trainer threads;
                                                     # OpenMP wait policy default and PASSIVE; two block sizes
    python -m benchmarks.oversubscription --quick    # K = 0 and 4, 1 and 2 threads, default policy, N = 1024
                                                     # (about a minute on a quiet machine; minutes under load)
    python -m benchmarks.oversubscription --k 0 4 --threads 2 --policy default passive --block 512 2048

A *trainer* process (fresh, so that ``OMP_WAIT_POLICY`` and the thread count apply from its start) times one
forward + backward of the tiled and of the naive NT-Xent (``N`` pairs, ``D = 128``, cosine, tau = 0.1) in
turns, while ``K`` *competitor* processes each loop over ``torch.mm`` of two 384 x 384 matrices with two
threads, as data-loader workers or a parallel test run would. The slowdown of a case is its median time with
``K`` competitors over its median time with none, for the same trainer settings. The trainer also reports its
CPU time per call (OpenMP threads that spin while they wait burn CPU without progress), its context switches,
and how many operators one call runs (each operator over a large tensor is one parallel region with a barrier
at its end).

Each case is a separate trainer process, so the numbers are comparable within one run only; the load average
before and after each case is recorded, because other processes on the machine compete too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TITLE = "Oversubscription: tiled and naive NT-Xent beside competing processes"
DIM = 128
TAU = 0.1


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


# --------------------------------------------------------------------------------------------------- processes


def compete(threads: int) -> None:
    """A competitor: multi-threaded matrix products until killed (prints ``ready`` once running)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(384, 384), torch.randn(384, 384)
    out = torch.empty(384, 384)
    torch.mm(a, b, out=out)
    print("ready", flush=True)
    while True:
        torch.mm(a, b, out=out)


def _count_operators(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.calls


def trainer(n: int, threads: int, block: int | None, repeats: int) -> dict[str, Any]:
    """Time tiled and naive NT-Xent (forward + backward) in turns in this process; medians and costs per call."""
    import torch

    from contrastlab.objectives._tiled import tiled_nt_xent
    from contrastlab.objectives.info_nce import nt_xent

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(n, DIM, generator=generator).requires_grad_()
    z2 = torch.randn(n, DIM, generator=generator).requires_grad_()
    losses = {
        "tiled": lambda: tiled_nt_xent(z1, z2, temperature=TAU, similarity="cosine", block_size=block),
        "naive": lambda: nt_xent(z1, z2, temperature=TAU, impl="naive"),
    }

    def step(name: str) -> None:
        z1.grad = z2.grad = None
        losses[name]().backward()

    out: dict[str, Any] = {}
    for name in losses:
        step(name)  # warm-up
        out[name] = {"operators": _count_operators(lambda: step(name)), "wall": [], "cpu": [], "nvcsw": 0,
                     "nivcsw": 0}
    for _ in range(repeats):
        for name in losses:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            wall, cpu = time.perf_counter(), time.process_time()
            step(name)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            after = resource.getrusage(resource.RUSAGE_SELF)
            row = out[name]
            row["wall"].append(wall)
            row["cpu"].append(cpu)
            row["nvcsw"] += after.ru_nvcsw - usage.ru_nvcsw
            row["nivcsw"] += after.ru_nivcsw - usage.ru_nivcsw
    for row in out.values():
        row["seconds"] = statistics.median(row["wall"])
        row["cpu_per_wall"] = round(sum(row["cpu"]) / sum(row["wall"]), 2)
        row["spread"] = round(max(row["wall"]) / min(row["wall"]), 2)
        row["switches_per_call"] = {"voluntary": row.pop("nvcsw") // repeats,
                                    "involuntary": row.pop("nivcsw") // repeats}
        row["wall"] = [round(t, 4) for t in row["wall"]]
        row.pop("cpu")
    return out


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**env, "PYTHONPATH": path, **extra}


def _start_competitors(k: int, threads: int) -> list[subprocess.Popen]:
    cmd = [sys.executable, "-m", "benchmarks.oversubscription", "--compete", str(threads)]
    env = _python_env({"OMP_NUM_THREADS": str(threads)})
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    for proc in procs:  # wait until each is computing
        proc.stdout.readline()
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def run_case(case: dict[str, Any], *, n: int, repeats: int, competitor_threads: int) -> dict[str, Any]:
    """One trainer process beside ``case['k']`` competitors; its timings with the case and the load."""
    extra = {"OMP_NUM_THREADS": str(case["threads"])}
    if case["policy"] != "default":
        extra["OMP_WAIT_POLICY"] = case["policy"].upper()
    cmd = [sys.executable, "-m", "benchmarks.oversubscription", "--trainer", json.dumps(
        {"n": n, "threads": case["threads"], "block": case["block"], "repeats": repeats})]
    procs = _start_competitors(case["k"], competitor_threads)
    load_before = _load()
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=_python_env(extra), capture_output=True, text=True, timeout=600)
    finally:
        _stop(procs)
    if out.returncode != 0:
        return {**case, "error": (out.stderr.strip().splitlines() or ["?"])[-1][:300]}
    return {**case, "load_before": load_before, "load_after": _load(), **json.loads(out.stdout.splitlines()[-1])}


# --------------------------------------------------------------------------------------------------- the section


def cases(quick: bool, blocks: tuple[int | None, ...], ks: tuple[int, ...] | None = None,
          threads: tuple[int, ...] | None = None, policies: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The (K, threads, policy, block) cases: all of the options given, else the defaults of the mode."""
    if quick or ks or threads or policies:
        ks, threads = ks or ((0, 4) if quick else (0, 1, 2, 4)), threads or (1, 2)
        return [{"k": k, "threads": t, "policy": p, "block": b} for p in policies or ("default",)
                for b in (blocks if not quick else (None,)) for t in threads for k in ks]
    out = [{"k": k, "threads": t, "policy": p, "block": None}
           for p in ("default", "passive") for t in (1, 2) for k in (0, 1, 2, 4)]
    out += [{"k": k, "threads": 2, "policy": "default", "block": b} for b in blocks if b is not None for k in (0, 4)]
    return out


def _slowdowns(rows: list[dict[str, Any]]) -> None:
    """Add ``slowdown`` (time / time with no competitor, same settings) to every method of every row."""
    for row in rows:
        base = next((r for r in rows if r.get("k") == 0 and "error" not in r
                     and all(r[key] == row[key] for key in ("threads", "policy", "block"))), None)
        for method in ("tiled", "naive"):
            if method in row and base is not None:
                row[method]["slowdown"] = round(row[method]["seconds"] / base[method]["seconds"], 2)


def run(quick: bool = False, *, n: int | None = None, repeats: int | None = None, competitor_threads: int = 2,
        blocks: tuple[int | None, ...] = (None, 2048), log=print, **only) -> dict[str, Any]:
    """Every case in turn; the result holds the rows (timings, slowdowns, costs) and the loads.

    ``only`` takes ``ks``, ``threads`` and ``policies`` (tuples) to run a subset; ``n`` defaults to 2048 pairs
    (1024 in quick mode).
    """
    repeats = repeats or (2 if quick else 5)
    n = n or (1024 if quick else 2048)
    rows = []
    for case in cases(quick, blocks, **only):
        log(f"  K={case['k']} threads={case['threads']} policy={case['policy']} block={case['block']} ...")
        rows.append(run_case(case, n=n, repeats=repeats, competitor_threads=competitor_threads))
    _slowdowns(rows)
    return {"title": TITLE, "status": "ok", "n": n, "rows_of_logits": 2 * n, "dim": DIM, "repeats": repeats,
            "competitor_threads": competitor_threads, "cores": os.cpu_count(), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    head = (f"NT-Xent N = {result['n']} ({result['rows_of_logits']} rows), D = {result['dim']}, forward + backward, "
            f"median of {result['repeats']}; K competitors each running {result['competitor_threads']}-thread "
            f"`torch.mm` on a {result['cores']}-core machine. `slowdown` = time / time with K = 0 (same settings); "
            "`cpu/wall` = the trainer's CPU seconds per wall second; `ops` = operators per call.")
    lines = [head, "", "| K | threads | OMP_WAIT_POLICY | block | tiled s | slowdown | cpu/wall | ops | naive s | "
             "slowdown | cpu/wall | ops | load |", "|" + "---|" * 13]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['k']} | {r['threads']} | {r['policy']} | {r['block'] or 'default'} | "
                         f"error: {r['error']} |" + " |" * 8)
            continue
        t, v = r["tiled"], r["naive"]
        lines.append(
            f"| {r['k']} | {r['threads']} | {r['policy']} | {r['block'] or 'default'} | {t['seconds']:.3f} | "
            f"{t.get('slowdown', float('nan')):.2f} | {t['cpu_per_wall']} | {t['operators']} | {v['seconds']:.3f} | "
            f"{v.get('slowdown', float('nan')):.2f} | {v['cpu_per_wall']} | {v['operators']} | "
            f"{r['load_before']}–{r['load_after']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.oversubscription", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="K = 0 and 4, 1 and 2 threads, default policy, N = 1024")
    p.add_argument("--n", type=int, default=None, help="pairs per batch (default 2048: 4096 rows; quick 1024)")
    p.add_argument("--k", type=int, nargs="+", default=None, help="competitor counts to run (a subset)")
    p.add_argument("--threads", type=int, nargs="+", default=None, help="trainer thread counts to run")
    p.add_argument("--policy", nargs="+", choices=("default", "passive", "active"), default=None,
                   help="OMP_WAIT_POLICY values to run")
    p.add_argument("--block", nargs="+", default=None, help="block sizes of the tiled kernel ('default' or rows)")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per method and case")
    p.add_argument("--competitor-threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    p.add_argument("--compete", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--trainer", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.compete is not None:
        compete(args.compete)
        return 0
    if args.trainer is not None:
        print(json.dumps(trainer(**json.loads(args.trainer))))
        return 0
    started = time.perf_counter()
    only = {key: tuple(value) for key, value in (("ks", args.k), ("threads", args.threads),
                                                  ("policies", args.policy)) if value}
    blocks = tuple(None if b == "default" else int(b) for b in args.block) if args.block else (None, 2048)
    result = run(args.quick, n=args.n, repeats=args.repeats, competitor_threads=args.competitor_threads,
                 blocks=blocks, log=lambda m: print(m, file=sys.stderr, flush=True), **only)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(markdown(result))
    print(f"\n{result['seconds']:.0f} s; load average (1 min) now {_load()}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
