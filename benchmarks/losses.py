"""Section: contrastive losses, forward + backward, ours (tiled and naive) against naive torch and the peers.

All methods run in this one process on the same inputs (D = 128, raw embeddings that every method normalises
itself); peak memory is measured per case in a fresh subprocess. Achieved GFLOP/s use the naive algorithm's
flop count, 6 R^2 D for an R x R logit matrix (one product forward, two backward), for every method, so they
compare times; the tiled kernels execute 4 R^2 D (NT-Xent, upper triangle only), 6 R^2 D (one-way InfoNCE,
gradients formed in the forward sweep) or 8 R^2 D (CLIP, logits recomputed in backward), reported as
``executed``.

The matmul peak is measured at the start and end of the section and, for every size, *in turns with the
methods* (a square float32 product timed in the same interleaved rounds): percentages use the in-turns peak,
so a busy spell slows the numerator and the denominator alike. A focused run of a few cases:

    python -m benchmarks.losses --sizes 4096 8192 --families info_nce clip --methods tiled --threads 1
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from benchmarks import _peers
from benchmarks._common import GIB, MIB, Config, fmt, markdown_table, matmul_peak, probe_memory, time_interleaved

TITLE = "Contrastive losses (forward + backward)"
DIM = 128
TAU = 0.1
FULL_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
QUICK_SIZES = {"nt_xent": (128, 512), "info_nce": (512,), "clip": (512,)}
MAX_N = {_peers.PML: 512}  #: pytorch-metric-learning's NT-Xent is O(N^3) in memory
EXECUTED = {"nt_xent": 4, "info_nce": 6, "clip": 8}  #: flops the tiled kernels execute, in units of R^2 D


def _inputs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, DIM, generator=generator)
    z2 = z1 + torch.randn(n, DIM, generator=generator)  # positives correlated, as after training a bit
    return z1.requires_grad_(), z2.requires_grad_()


def _threshold() -> int | None:
    try:
        from contrastlab.objectives.info_nce import TILED_THRESHOLD
    except ImportError:
        return None
    return TILED_THRESHOLD


def _skip_reason(method: str, family: str, n: int, config: Config, failed: dict[str, str]) -> str | None:
    if method in failed:
        return f"skipped: failed at a smaller size ({failed[method]})"
    if n > MAX_N.get(method, n):
        return f"skipped: N > {MAX_N[method]} (O(N^3) memory)"
    need = _peers.predicted_extra_bytes(method, family, n, DIM)
    if need > config.memory_budget_gib * GIB:
        return f"skipped: needs ~{need / GIB:.1f} GiB > budget {config.memory_budget_gib:g} GiB"
    return None


def _peak_call(n: int):
    """A square float32 product of size ``n`` and its flop count, to time in turns with the losses."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3


def _step(loss_fn, z1: torch.Tensor, z2: torch.Tensor):
    def step() -> None:
        z1.grad = z2.grad = None
        loss_fn(z1, z2).backward()

    return step


def _family_rows(family: str, config: Config, log) -> list[dict[str, Any]]:
    sizes = config.loss_sizes or (QUICK_SIZES[family] if config.quick else FULL_SIZES)
    sizes = [n for n in sizes if config.max_n is None or n <= config.max_n]
    peak_fn, peak_flops = _peak_call(1024 if config.quick else 2048)
    failed: dict[str, str] = {}
    builders: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    for n in sizes:
        z1, z2 = _inputs(n)
        r = _peers.rows(family, n)
        size_rows: dict[str, dict[str, Any]] = {}
        for method in _methods(family, config):
            row = size_rows[method] = {"family": family, "n": n, "rows": r, "method": method}
            reason = _skip_reason(method, family, n, config, failed)
            if reason is None and method not in builders:
                try:
                    builders[method] = _peers.build(method, family, TAU)
                except ImportError as err:
                    failed[method] = f"does not import: {err}"
                    reason = f"skipped: does not import ({err})"
            row["status"] = reason or "pending"
        runnable = [m for m, row in size_rows.items() if row["status"] == "pending"]
        log(f"  {family} N={n}: {', '.join(runnable)}")
        calls = {m: _step(builders[m], z1, z2) for m in runnable}
        timings = time_interleaved({**calls, PEAK: peak_fn}, budget_s=config.time_budget_s)
        peak_timing = timings.pop(PEAK)
        # The median, like the methods' times: under load the best sample would flatter the peak.
        peak_now = None if isinstance(peak_timing, BaseException) else peak_flops / peak_timing["seconds"] / 1e9
        reference_value = None
        for method in runnable:
            row, timing = size_rows[method], timings[method]
            if isinstance(timing, BaseException):
                failed[method] = f"N={n}: {type(timing).__name__}"
                row["status"] = f"error: {str(timing).splitlines()[0][:200]}"
                continue
            with torch.no_grad():
                value = float(builders[method](z1.detach(), z2.detach()))
            reference_value = value if reference_value is None else reference_value
            gflops = 6 * r * r * DIM / timing["seconds"] / 1e9
            row.update(status="ok", loss=value, loss_rel_diff=abs(value - reference_value) / abs(reference_value))
            row.update(timing, gflops=round(gflops, 1), peak_in_turns_gflops=peak_now and round(peak_now, 1))
            if not config.memory:
                continue
            if not config.quick or (family, n, method) == ("nt_xent", sizes[-1], _peers.OURS_TILED):
                case = {"family": family, "method": method, "n": n, "d": DIM, "tau": TAU}
                mem = probe_memory(case, threads=config.threads)
                row["extra_mib"] = round(mem["extra_bytes"] / MIB, 1) if mem.get("extra_bytes") is not None else None
                row["probe_seconds"] = mem.get("seconds")
                if "error" in mem:
                    row["probe_error"] = mem["error"]
        out += size_rows.values()
        z1.grad = z2.grad = None
        del z1, z2
    return out


PEAK = "matmul peak"  #: the square product timed in turns with each size's methods


def _methods(family: str, config: Config) -> tuple[str, ...]:
    wanted = config.loss_methods
    return tuple(m for m in _peers.METHODS[family] if wanted is None or any(w in m for w in wanted))


def _ok(rows: list[dict[str, Any]], family: str, n: int, method: str) -> dict[str, Any] | None:
    return next((r for r in rows if (r["family"], r["n"], r["method"], r["status"]) == (family, n, method, "ok")), None)


def _speedups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for r in rows:
        if r["method"] == _peers.OURS_TILED and r["status"] == "ok":
            entry = {"family": r["family"], "n": r["n"], "rows": r["rows"]}
            for other in _peers.METHODS[r["family"]][1:]:
                o = _ok(rows, r["family"], r["n"], other)
                entry[other] = round(o["seconds"] / r["seconds"], 2) if o else None
            result.append(entry)
    return result


def _proposed_threshold(rows: list[dict[str, Any]], family: str) -> int | None:
    """Smallest row count from which the tiled kernel is never slower than our naive one (measured sizes)."""
    pairs = []
    for r in rows:
        if r["family"] == family and r["method"] == _peers.OURS_TILED and r["status"] == "ok":
            naive = _ok(rows, family, r["n"], _peers.OURS_NAIVE)
            pairs.append((r["rows"], naive is None or r["seconds"] <= naive["seconds"]))
    best = None
    for count, tiled_wins in reversed(pairs):
        if not tiled_wins:
            break
        best = count
    return best


def _goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    goals = []
    for r in rows:
        if (r["family"], r["method"], r["status"]) != ("nt_xent", _peers.OURS_TILED, "ok") or r["n"] < 4096:
            continue
        for other, target in ((_peers.LIGHTLY, 2.0), (_peers.TORCH_NAIVE, 1.5)):
            o = _ok(rows, "nt_xent", r["n"], other)
            if o is not None:  # a peer that cannot run at this size is listed as skipped in the main table
                measured = round(o["seconds"] / r["seconds"], 2)
                goals.append({"goal": f"NT-Xent N={r['n']}: speed-up over {other} >= {target}x",
                              "measured": measured, "met": measured >= target})
        executed = r["executed_pct_peak"]
        goals.append({"goal": f"NT-Xent N={r['n']}: flops executed >= 60% of matmul peak (%)",
                      "measured": executed, "met": executed >= 60})
        if r["n"] == 65536:
            extra = r.get("extra_mib")
            goals.append({"goal": "NT-Xent N=65536 (131,072 rows): extra memory < 2 GiB (MiB)", "measured": extra,
                          "met": None if extra is None else extra < 2048})
    return goals


def run(config: Config, log=print) -> dict[str, Any]:
    peak_sizes = (1024,) if config.quick else (2048,) if config.loss_sizes else (2048, 4096)
    log("  matmul peak ...")
    peak_start = matmul_peak(peak_sizes)
    lightly_cls, lightly_note = _peers.load_lightly()
    rows: list[dict[str, Any]] = []
    for family in config.loss_families or ("nt_xent", "info_nce", "clip"):
        rows += _family_rows(family, config, log)
    peak_end = matmul_peak(peak_sizes)
    # The better of the two measurements is nearer the machine's real peak: percentages are conservative.
    peak = max(peak_start["gflops"], peak_end["gflops"])
    for r in rows:
        if r["status"] == "ok":  # against the peak timed in turns with the case, the section's where missing
            r["pct_peak"] = round(100 * r["gflops"] / (r.get("peak_in_turns_gflops") or peak), 1)
            if r["method"] == _peers.OURS_TILED:
                r["executed_pct_peak"] = round(r["pct_peak"] * EXECUTED[r["family"]] / 6, 1)
    threshold = _threshold()
    for r in rows:
        if threshold is not None and r["method"] == _peers.OURS_TILED:
            r["auto_picks"] = "tiled" if r["rows"] >= threshold else "naive"
    return {
        "title": TITLE,
        "status": "ok",
        "dim": DIM,
        "temperature": TAU,
        "matmul_peak_gflops": peak,
        "matmul_peak_start": peak_start,
        "matmul_peak_end": peak_end,
        "lightly": lightly_note,
        "tiled_threshold_now": threshold,
        "proposed_threshold_rows": {f: _proposed_threshold(rows, f) for f in ("nt_xent", "info_nce", "clip")},
        "rows": rows,
        "speedups": _speedups(rows),
        "goals": _goals(rows),
    }


def markdown(result: dict[str, Any]) -> str:
    start, end = result["matmul_peak_start"], result["matmul_peak_end"]
    parts = [
        f"D = {result['dim']}, temperature {result['temperature']}. fp32 matmul peak "
        f"{result['matmul_peak_gflops']:.0f} GFLOP/s, the better of {start['gflops']:.0f} (start of the section) "
        f"and {end['gflops']:.0f} (end), square "
        f"n={start['n']}. {result['lightly']}.",
        "GFLOP/s count the naive algorithm's 6·R²·D flops for every method; `exec %` is the share of the peak the "
        "tiled kernel actually executes. Both are shares of the peak timed in turns with that size's methods "
        "(`peak`, GFLOP/s). `spread` is slowest / fastest repeat.",
    ]
    columns = ["family", "N", "rows", "method", "seconds", "spread", "GFLOP/s", "peak", "% peak", "exec %",
               "extra MiB", "loss", "status"]
    table = [
        [r["family"], r["n"], r["rows"], r["method"], r.get("seconds"), r.get("spread"), r.get("gflops"),
         r.get("peak_in_turns_gflops"), r.get("pct_peak"), r.get("executed_pct_peak"), r.get("extra_mib"),
         r.get("loss"), r["status"]]
        for r in result["rows"]
    ]
    parts.append(markdown_table(columns, table))
    others = sorted({k for s in result["speedups"] for k in s} - {"family", "n", "rows"})
    parts.append("Speed-up of `contrastlab tiled` (other method's time / tiled time):")
    parts.append(markdown_table(["family", "N", *others], [[s["family"], s["n"], *[s.get(o) for o in others]]
                                                            for s in result["speedups"]]))
    if result["goals"]:
        parts.append(markdown_table(["goal", "measured", "met"], [[g["goal"], g["measured"], g["met"]]
                                                                  for g in result["goals"]]))
    proposed = ", ".join(f"{f}: {fmt(v)}" for f, v in result["proposed_threshold_rows"].items())
    parts.append(f"TILED_THRESHOLD now {fmt(result['tiled_threshold_now'])}; rows from which tiled is never slower "
                 f"than naive here: {proposed}. Cases marked `skipped` were predicted not to fit the memory budget "
                 "(or, for pytorch-metric-learning, are beyond the N <= 512 it can handle).")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """A focused run of chosen sizes, families and methods, printed as the section's markdown."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.losses", description="a focused run of the loss section")
    p.add_argument("--sizes", type=int, nargs="+", required=True, help="batches (pairs)")
    p.add_argument("--families", nargs="+", choices=("nt_xent", "info_nce", "clip"), default=None)
    p.add_argument("--methods", nargs="+", default=None,
                   help="substrings of method names, e.g. 'tiled' 'torch naive' (default: all)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--memory", action="store_true", help="also measure peak memory (a subprocess per case)")
    p.add_argument("--time-budget-s", type=float, default=20.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = Config(threads=args.threads, time_budget_s=args.time_budget_s, loss_sizes=tuple(args.sizes),
                    loss_families=args.families and tuple(args.families),
                    loss_methods=args.methods and tuple(args.methods), memory=args.memory)
    from benchmarks._common import load_average

    before = load_average()
    result = run(config, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(markdown(result))
    print(f"\n{args.threads} thread(s); load average (1 min) {before} at the start, {load_average()} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
