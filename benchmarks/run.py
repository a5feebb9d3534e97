"""Run the benchmark sections and write ``results.json`` and ``results.md``.

    python -m benchmarks.run            # everything (minutes; the largest cases run once)
    python -m benchmarks.run --quick    # a smoke test of every section, under a minute
    python -m benchmarks.run --only losses --out /tmp/bench
    python -m benchmarks.run --only training --merge   # re-run one section, keep the others' numbers

Each section is a module of this package with ``TITLE``, ``run(config, log) -> dict`` and
``markdown(result) -> str``; a section whose subject is not importable returns a ``skipped`` result that
says what is missing, and the run goes on; a section that raises is recorded as ``failed`` (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import import_module
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import Config, environment, load_average

SECTIONS: tuple[str, ...] = ("losses", "views", "training", "monitors", "knn", "probe", "data_loading", "shards")
DEFAULT_OUT = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of every section")
    p.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=f"sections to run: {SECTIONS}")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for results.json and results.md")
    p.add_argument("--merge", action="store_true",
                   help="keep the other sections of an existing results.json in --out (each merged section "
                        "records when and under what load it ran)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--max-n", type=int, default=None, help="largest batch (pairs) in the loss section")
    p.add_argument("--memory-budget-gib", type=float, default=6.0,
                   help="skip cases predicted to need more extra memory than this (default 6)")
    return p


def render(results: dict[str, Any]) -> str:
    env = results["environment"]
    lines = [
        "# contrastlab benchmarks",
        "",
        f"{env['started']}; {env['cpu']}, {env['cores']} cores, {env['threads']} torch threads; torch {env['torch']}, "
        f"Python {env['python']}{'; quick mode' if env['quick'] else ''}. Load average (1 min) "
        f"{env['load_average_start']} at the start, {env.get('load_average_end')} at the end; "
        f"{env.get('seconds', 0):.0f} s in all. See docs/PERFORMANCE.md for the method.",
    ]
    for name, section in results["sections"].items():
        lines += ["", f"## {section['title']}", ""]
        own = section.get("environment")
        if own:
            quick = "; quick mode" if own["quick"] else ""
            lines += [f"*Run on its own:* {own['started']}, `--threads {own['threads']}`{quick}; load average "
                      f"(1 min) {own['load_average_start']} at the start, {own.get('load_average_end')} at the end; "
                      f"{section.get('seconds', 0):.0f} s.", ""]
        if section["status"] != "ok":
            lines.append(f"*{section['status'].capitalize()}:* {section['note']}")
            continue
        lines.append(import_module(f"benchmarks.{name}").markdown(section))
    return "\n".join(lines) + "\n"


def merge(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``previous`` results with the sections of ``new`` replaced; each new section keeps ``new``'s
    environment (when it ran, the load, the threads), the whole keeps ``previous``'s."""
    sections = dict(previous["sections"])
    for name, section in new["sections"].items():
        sections[name] = {**section, "environment": new["environment"]}
    order = [n for n in SECTIONS if n in sections] + [n for n in sections if n not in SECTIONS]
    return {"environment": previous["environment"], "sections": {n: sections[n] for n in order}}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    config = Config(quick=args.quick, threads=args.threads, memory_budget_gib=args.memory_budget_gib,
                    time_budget_s=1.0 if args.quick else 20.0, max_n=args.max_n)
    started = time.perf_counter()
    results: dict[str, Any] = {"environment": environment(config), "sections": {}}

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    for name in args.only or SECTIONS:
        log(f"[{name}]")
        section_start = time.perf_counter()
        module = import_module(f"benchmarks.{name}")
        try:
            result = module.run(config, log)
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the others' numbers
            result = {"title": module.TITLE, "status": "failed", "note": f"{type(err).__name__}: {err}"}
        result["seconds"] = round(time.perf_counter() - section_start, 1)
        results["sections"][name] = result
        if result["status"] != "ok":
            log(f"  {result['status']}: {result['note']}")
    results["environment"].update(load_average_end=load_average(), seconds=round(time.perf_counter() - started, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    previous = args.out / "results.json"
    if args.merge and previous.is_file():
        results = merge(json.loads(previous.read_text()), results)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render(results))
    log(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 1 if any(r["status"] == "failed" for r in results["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
