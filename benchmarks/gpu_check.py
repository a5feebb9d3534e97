"""The device check: what only a GPU shows, in under 8 minutes on one H200 (``make gpu-check``).

    python -m benchmarks.gpu_check                  # every part; a CPU-only machine gets the dry run
    python -m benchmarks.gpu_check --dry-run        # small sizes on the CPU, the CUDA-only parts skipped
    python -m benchmarks.gpu_check --parts losses simclr --out /tmp/check

Parts, each run in its own subprocess under its own time budget (a part that overruns is stopped and
recorded as ``timeout``; the others still run):

* ``cuda_tests`` — ``pytest -m cuda``: the tests marked as needing a CUDA device.
* ``losses`` — NT-Xent and CLIP, forward and backward, tiled against naive (the functions of
  :mod:`benchmarks._peers` that :mod:`benchmarks.losses` measures on the CPU), up to 65,536 pairs: median
  time and peak extra device memory (``torch.cuda.max_memory_allocated``); naive cases predicted not to fit
  in the device's memory are skipped, and said so.
* ``simclr`` — 300 steps of ``configs/simclr-resnet18-gpu.yaml`` (SimCLR, the CIFAR-style ResNet-18, synthetic
  32x32 Shapes images) in bf16 with ``torch.compile`` and channels_last: items/s after the compile warm-up,
  the time to the first logged step, peak device memory.
* ``torchrun`` — a few steps of the same recipe under ``torchrun --standalone`` with one process per GPU
  (NCCL when there are two or more), and a one-process NCCL group running contrastlab's collectives.

Without CUDA (or with ``--dry-run``) the check runs small: the loss part on the CPU at two sizes, a tiny
SimCLR run without compile, a two-process gloo torchrun run; ``cuda_tests`` and the NCCL group are skipped,
and the summary says so. It writes ``gpu_check.json`` and ``gpu_check.md`` into ``$OUT`` when that is set,
else ``--out`` (default ``gpu-check/``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "simclr-resnet18-gpu.yaml"
PARTS = ("cuda_tests", "losses", "simclr", "torchrun")
#: Seconds each part may take on a GPU (the four sum to under 8 minutes with the start-up around them).
BUDGET_S = {"cuda_tests": 120, "losses": 100, "simclr": 170, "torchrun": 80}
#: ... and in a dry run on the CPU.
DRY_BUDGET_S = {"cuda_tests": 60, "losses": 30, "simclr": 60, "torchrun": 60}
SIMCLR_STEPS, WARMUP_STEPS = 300, 50  #: steps timed; items/s counts the logged rows after the warm-up
MIB = 2**20


def _env() -> dict[str, str]:
    """The environment of a child process: this repository importable (``benchmarks``), one thread per core."""
    path = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------- the parts


def part_cuda_tests(dry: bool, budget_s: float) -> dict[str, Any]:
    """``pytest -m cuda`` in a subprocess: its exit status and summary line."""
    if dry:
        return {"status": "skipped", "note": "no CUDA device (dry run): the CUDA-marked tests need one"}
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
           "--import-mode=importlib", "tests"]
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "note": f"pytest -m cuda ran past {budget_s:.0f} s"}
    lines = [line for line in out.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else out.stderr.strip()[-300:]
    if out.returncode == 5:  # pytest: no test collected
        return {"status": "ok", "note": "no test is marked cuda", "summary": summary}
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))][:20]
    return {"status": "ok" if out.returncode == 0 else "failed", "returncode": out.returncode, "summary": summary,
            "failures": failures}


def part_losses(dry: bool, budget_s: float) -> dict[str, Any]:
    """Tiled against naive NT-Xent and CLIP, forward and backward, on the device (the CPU in a dry run)."""
    import torch

    from benchmarks import _peers, losses
    from benchmarks._common import probe_memory, time_call

    device = torch.device("cpu" if dry else "cuda")
    sizes = (128, 512) if dry else (1024, 4096, 16384, 65536)
    families = ("nt_xent",) if dry else ("nt_xent", "clip")
    methods = (_peers.OURS_TILED, _peers.OURS_NAIVE)
    room = 0.7 * (torch.cuda.mem_get_info()[0] if device.type == "cuda" else 4 * 2**30)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for family in families:
        for n in sizes:
            z1, z2 = (z.detach().to(device).requires_grad_() for z in losses._inputs(n))
            for method in methods:
                row = {"family": family, "n": n, "rows": _peers.rows(family, n), "method": method}
                rows.append(row)
                need = _peers.predicted_extra_bytes(method, family, n, losses.DIM)
                if need > room:
                    row["status"] = f"skipped: needs ~{need / 2**30:.0f} GiB, {room / 2**30:.0f} GiB free"
                    continue
                if time.perf_counter() - t0 > 0.75 * budget_s:
                    row["status"] = "skipped: out of the part's time budget"
                    continue
                loss_fn = _peers.build(method, family, losses.TAU)

                def step() -> None:
                    z1.grad = z2.grad = None
                    loss_fn(z1, z2).backward()
                    if device.type == "cuda":
                        torch.cuda.synchronize()

                try:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        base = torch.cuda.memory_allocated()
                        torch.cuda.reset_peak_memory_stats()
                        step()
                        row["extra_mib"] = round((torch.cuda.max_memory_allocated() - base) / MIB, 1)
                    timing = time_call(step, budget_s=min(5.0, budget_s / 20), max_repeats=5)
                    with torch.no_grad():
                        row["loss"] = float(loss_fn(z1.detach(), z2.detach()))
                except (RuntimeError, MemoryError) as err:  # an out-of-memory error is a result, not a crash
                    row["status"] = f"error: {str(err).splitlines()[0][:200]}"
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    continue
                row.update(status="ok", seconds=timing["seconds"], spread=timing["spread"])
                if device.type == "cpu" and n == sizes[-1]:  # peak resident memory, in a fresh process
                    case = {"family": family, "method": method, "n": n, "d": losses.DIM, "tau": losses.TAU}
                    mem = probe_memory(case, threads=1, timeout_s=max(10.0, budget_s / 4))
                    row["extra_mib"] = None if mem.get("extra_bytes") is None else round(mem["extra_bytes"] / MIB, 1)
            z1 = z2 = None  # free the inputs before the next size
    for row in rows:  # the naive time over the tiled time at the same size
        if row["method"] == _peers.OURS_TILED and row["status"] == "ok":
            naive = next((r for r in rows if (r["family"], r["n"], r["method"], r["status"])
                          == (row["family"], row["n"], _peers.OURS_NAIVE, "ok")), None)
            row["speedup_vs_naive"] = round(naive["seconds"] / row["seconds"], 2) if naive else None
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS of a fresh process (largest size)"
    return {"status": "ok", "device": str(device), "dim": losses.DIM, "temperature": losses.TAU,
            "memory_measured_as": memory, "rows": rows}


def _recipe_overrides(dry: bool, steps: int) -> list[str]:
    common = [f"steps={steps}", "checkpoint.every=0", "monitor.every=0", "log.progress=false",
              "log.tensorboard=false", "schedule.warmup_steps=10"]
    if not dry:
        return common + ["log.every=10", "device=cuda"]
    return common + ["log.every=1", "device=cpu", "batch_size=16", "data.options.n_items=64",
                     "model.encoder.options.width=4", "model.head.hidden=32", "model.dim=16", "model.compile=false",
                     "threads=1"]


def part_simclr(dry: bool, budget_s: float) -> dict[str, Any]:
    """``SIMCLR_STEPS`` steps of the ResNet-18 recipe (bf16, compile, channels_last): items/s and peak memory."""
    import torch

    from contrastlab.training import load_config, train
    from contrastlab.training.logging import read_metrics

    steps = 4 if dry else SIMCLR_STEPS
    overrides = _recipe_overrides(dry, steps)
    cfg = load_config(RECIPE, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        if torch.cuda.is_available() and not dry:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = train(cfg, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
        rows = read_metrics(result.run_dir / "metrics.csv")
    warm = [r for r in rows if r["step"] > WARMUP_STEPS] or rows[-1:]
    out = {
        "status": "ok", "steps": result.step, "batch_size": cfg.batch_size, "precision": cfg.precision,
        "compile": cfg.model.compile, "channels_last": cfg.model.channels_last, "tf32": cfg.tf32,
        "encoder": cfg.model.encoder.name, "encoder_options": cfg.model.encoder.options,
        "overrides": overrides, "seconds": round(seconds, 1),
        "first_row_elapsed_s": round(rows[0]["elapsed_s"], 1) if rows else None,
        "items_per_s": round(statistics.median(r["items_per_s"] for r in warm), 1) if warm else None,
        "items_per_s_after_step": WARMUP_STEPS if len(warm) > 1 else None,
        "loss_first": rows[0]["loss"] if rows else None, "loss_last": rows[-1]["loss"] if rows else None,
    }
    if torch.cuda.is_available() and not dry:
        out["peak_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def part_nccl(dry: bool, budget_s: float) -> dict[str, Any]:
    """Under torchrun: contrastlab's collectives on CUDA tensors in an NCCL group (what one GPU can show)."""
    import torch
    import torch.distributed as dist

    from contrastlab.training import distributed

    info = distributed.detect()
    torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl")
    try:
        device = torch.device("cuda", info.local_rank)
        x = torch.full((4, 3), float(info.rank + 1), device=device, requires_grad=True)
        gathered = distributed.all_gather_with_grad(x)
        gathered.sum().backward()
        mean = distributed.all_reduce_mean(float(info.rank))
        plain = distributed.all_gather_no_grad(torch.arange(2, device=device))
        ok = gathered.shape[0] == 4 * info.world_size and x.grad is not None and plain.shape[0] == 2 * info.world_size
        return {"status": "ok" if ok else "failed", "world_size": info.world_size, "all_reduce_mean": mean,
                "gathered_rows": int(gathered.shape[0]), "grad_sum": float(x.grad.sum())}
    finally:
        dist.destroy_process_group()


def part_torchrun(dry: bool, budget_s: float) -> dict[str, Any]:
    """A few steps of the recipe under torchrun (one process per GPU; two gloo processes on the CPU)."""
    import torch

    procs = 2 if dry else max(1, torch.cuda.device_count())
    steps = 2 if dry else 20
    overrides = [o for o in _recipe_overrides(dry, steps) if not o.startswith("device=")]
    overrides += ["model.compile=false", "log.every=1"] + (["device=cpu"] if dry else ["device=cuda"])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    out: dict[str, Any] = {"processes": procs, "backend": "gloo" if dry else "nccl", "steps": steps}
    if not dry and procs == 1:
        out["note"] = "one GPU: CONTRASTLAB_DDP=1 makes the one training process form an NCCL group of one"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = launcher + ["-m", "contrastlab", "train", str(RECIPE), "--out", str(Path(tmp) / "run")]
        for o in overrides:
            cmd += ["--set", o]
        run = _child(cmd, timeout=max(5.0, budget_s * (0.6 if not dry else 0.95)), extra_env={"CONTRASTLAB_DDP": "1"})
        out["train"] = run
        if run["status"] == "ok":
            metrics = Path(tmp) / "run" / "metrics.csv"
            out["train"]["metrics_rows"] = max(0, len(metrics.read_text().splitlines()) - 1) if metrics.is_file() else 0
    if not dry:
        left = budget_s - (time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            result = Path(tmp) / "nccl.json"
            cmd = launcher + [str(Path(__file__).resolve()), "--part", "nccl", "--json", str(result)]
            out["nccl"] = _child(cmd, timeout=max(5.0, left))
            if out["nccl"]["status"] == "ok" and result.is_file():
                out["nccl"].update(json.loads(result.read_text()))
    else:
        out["nccl"] = {"status": "skipped", "note": "no CUDA device (dry run)"}
    bad = [k for k in ("train", "nccl") if out[k]["status"] not in ("ok", "skipped")]
    out["status"] = "failed" if bad else "ok"
    return out


def _child(cmd: list[str], *, timeout: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env={**_env(), **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1)}
    out = {"status": "ok" if done.returncode == 0 else "failed", "returncode": done.returncode,
           "seconds": round(time.perf_counter() - t0, 1)}
    if done.returncode != 0:
        out["stderr_tail"] = done.stderr.strip()[-1500:]
    return out


RUNNERS = {"cuda_tests": part_cuda_tests, "losses": part_losses, "simclr": part_simclr, "torchrun": part_torchrun,
           "nccl": part_nccl}


# ---------------------------------------------------------------------------------------------- the report


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a short markdown report."""
    env = summary["environment"]
    after = lambda step: "" if step is None else f" after step {step}"  # noqa: E731
    lines = ["# contrastlab device check", "",
             f"{env['started']}; {env['device']}; torch {env['torch']}, Python {env['python']}; "
             f"{'dry run (small sizes on the CPU, CUDA parts skipped); ' if summary['dry_run'] else ''}"
             f"{summary['seconds']:.0f} s in all.", ""]
    if summary["dry_run"]:
        lines += [f"Dry run: {summary['dry_reason']}. The numbers below only show that every part runs.", ""]
    lines += ["| part | status | seconds | budget s |", "|---|---|---|---|"]
    for name, part in summary["parts"].items():
        lines.append(f"| {name} | {part['status']} | {_fmt(part.get('wall_s'))} | {_fmt(part.get('budget_s'))} |")
    parts = summary["parts"]
    tests = parts.get("cuda_tests")
    if tests:
        lines += ["", "## CUDA-marked tests", "", tests.get("summary") or tests.get("note") or tests["status"]]
        lines += [f"* {f}" for f in tests.get("failures", [])]
    losses = parts.get("losses")
    if losses and losses.get("rows"):
        lines += ["", "## Losses, forward + backward (tiled vs naive)", "",
                  f"On {losses['device']}, D = {losses['dim']}; memory: {losses['memory_measured_as']}.", "",
                  "| family | pairs | rows | method | seconds | spread | extra MiB | naive / tiled | status |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in losses["rows"]:
            lines.append(f"| {r['family']} | {r['n']} | {r['rows']} | {r['method']} | {_fmt(r.get('seconds'))} | "
                         f"{_fmt(r.get('spread'))} | {_fmt(r.get('extra_mib'))} | {_fmt(r.get('speedup_vs_naive'))} | "
                         f"{r['status']} |")
    simclr = parts.get("simclr")
    if simclr and simclr["status"] == "ok":
        lines += ["", "## SimCLR, ResNet-18, 32x32 Shapes", "",
                  f"{simclr['steps']} steps at batch {simclr['batch_size']}, {simclr['precision']}, compile "
                  f"{simclr['compile']}, channels_last {simclr['channels_last']}, tf32 {simclr['tf32']}: "
                  f"**{_fmt(simclr['items_per_s'])} items/s** (median of the logged rows"
                  f"{after(simclr['items_per_s_after_step'])}), first logged row after "
                  f"{_fmt(simclr['first_row_elapsed_s'])} s{' (compilation)' if simclr['compile'] else ''}, "
                  f"{simclr['seconds']} s in all; peak device memory {_fmt(simclr.get('peak_mib'))} MiB; "
                  f"loss {_fmt(simclr['loss_first'])} → {_fmt(simclr['loss_last'])}."]
    run = parts.get("torchrun")
    if run and "train" in run:
        lines += ["", "## torchrun", "",
                  f"{run['processes']} process(es), backend {run['backend']}, {run['steps']} steps: {run['train']['status']} "
                  f"in {_fmt(run['train'].get('seconds'))} s. NCCL collectives: {run['nccl']['status']}"
                  f"{' — ' + run['nccl']['note'] if run['nccl'].get('note') else ''}." + (f" {run['note']}." if run.get('note') else "")]
    for name, part in parts.items():
        if part.get("error"):
            lines += ["", f"**{name}**: {part['error']}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- running


def _run_part(name: str, dry: bool, budget_s: float) -> dict[str, Any]:
    """One part in a fresh subprocess (its own CUDA context, compile caches and memory peak) under its budget."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "part.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--json", str(result),
               "--budget-s", str(budget_s)] + (["--dry-run"] if dry else [])
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=budget_s + 30)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "error": f"ran past its budget of {budget_s:.0f} s (+30 s grace)",
                    "wall_s": round(time.perf_counter() - t0, 1), "budget_s": budget_s}
        wall = round(time.perf_counter() - t0, 1)
        if done.returncode != 0 or not result.is_file():
            tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            return {"status": "failed", "error": tail[:500], "stderr_tail": done.stderr.strip()[-3000:],
                    "wall_s": wall, "budget_s": budget_s}
        out = json.loads(result.read_text())
        out.update(wall_s=wall, budget_s=budget_s)
        return out


def _environment(dry: bool) -> dict[str, Any]:
    import platform

    import torch

    device = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}" if torch.cuda.is_available()
              else f"CPU ({os.cpu_count()} cores), no CUDA device")
    return {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
            "python": platform.python_version(), "device": device, "cuda": torch.version.cuda}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="small sizes on the CPU; CUDA parts skipped (automatic "
                                                          "without a CUDA device)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), metavar="PART", help=f"of {PARTS}")
    p.add_argument("--out", type=Path, default=None, help="folder for gpu_check.json and .md (default: $OUT, else "
                                                          "gpu-check/)")
    p.add_argument("--part", choices=sorted(RUNNERS), help=argparse.SUPPRESS)  # a child process: run one part
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--budget-s", type=float, default=60.0, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.part:  # a child: one part, its result as JSON
        dry = args.dry_run or (args.part != "nccl" and not _cuda())
        result = RUNNERS[args.part](dry, args.budget_s)
        if args.json is not None and int(os.environ.get("RANK", "0")) == 0:
            args.json.write_text(json.dumps(result, indent=1, default=str))
        return 0
    cuda = _cuda()
    dry = args.dry_run or not cuda
    reason = "asked for (--dry-run)" if args.dry_run else ("no CUDA device" if not cuda else "")
    out_dir = args.out or Path(os.environ.get("OUT") or "gpu-check")
    out_dir.mkdir(parents=True, exist_ok=True)
    budgets = DRY_BUDGET_S if dry else BUDGET_S
    summary: dict[str, Any] = {"dry_run": dry, "dry_reason": reason, "environment": _environment(dry), "parts": {}}
    t0 = time.perf_counter()
    for name in args.parts:
        print(f"gpu_check: {name} (budget {budgets[name]} s) ...", flush=True)
        summary["parts"][name] = part = _run_part(name, dry, budgets[name])
        print(f"gpu_check: {name}: {part['status']} in {part.get('wall_s')} s", flush=True)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / "gpu_check.json").write_text(json.dumps(summary, indent=1, default=str))
    (out_dir / "gpu_check.md").write_text(markdown(summary))
    print(f"gpu_check: wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'} ({summary['seconds']:.0f} s)")
    failed = [n for n, p in summary["parts"].items() if p["status"] not in ("ok", "skipped")]
    if failed:
        print(f"gpu_check: parts not ok: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
