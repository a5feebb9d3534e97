"""Run a recipe: train each run, evaluate it, compare the runs, write one report.

The recipe folder holds ``recipe.json`` (what was run), ``runs/<run>/`` (each a normal run directory with its
``eval/``), ``summary.json`` / ``summary.md`` (the recipe's tables and checks), its figures, and ``report.html``.

Under several seeds (:func:`run_recipe_seeds`) the folder holds one such recipe folder per seed,
``seed-<S>/``, and beside them the summary and report of all seeds together: each number as
mean ± standard deviation, each check with the number of seeds under which it held.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from contrastlab.errors import UserError
from contrastlab.files import atomic_write_text
from contrastlab.recipes.spec import SCALES, Recipe, load_recipe
from contrastlab.recipes.summary import Summary, aggregate

MARKER = "recipe.json"


@dataclass
class RunOutcome:
    """One trained and evaluated run of a recipe."""

    name: str
    run_dir: Path
    config: dict[str, Any]  #: the plain training config that was run
    metrics: dict[str, Any]  #: the evaluation (``eval/metrics.json``)
    train_seconds: float


@dataclass
class RecipeResult:
    recipe: Recipe
    scale: str
    out_dir: Path
    runs: dict[str, RunOutcome]
    summary: Summary
    report: Path


def _prepare(out: Path, recipe: Recipe, scale: str, *, overwrite: bool, resume: bool, seeds: list[int]) -> dict[str, Any]:
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not marker.is_file():
            raise UserError(f"output directory {out} is not empty and holds no recipe ({MARKER}); choose another --out")
        if resume:
            previous = _read_json(marker)
            problem = _record_problem(previous, done=int if len(seeds) > 1 else str)
            if problem is not None:
                raise UserError(f"{marker} is not a recipe record: {problem}; "
                                "use --overwrite to start the recipe again")
            if (previous.get("recipe"), previous.get("scale")) != (recipe.name, scale):
                raise UserError(f"{out} holds recipe {previous.get('recipe')!r} at scale {previous.get('scale')!r}, "
                                f"not {recipe.name!r} at {scale!r}; --resume needs the same recipe and scale")
            if previous.get("seeds", [0]) != seeds:
                raise UserError(f"{out} holds the recipe under seeds {previous.get('seeds', [0])}, not {seeds}; "
                                "--resume needs the same seeds")
            return previous
        if not overwrite:
            raise UserError(f"output directory {out} already holds a recipe run; use --overwrite to replace it "
                            "or --resume to finish it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {"recipe": recipe.name, "scale": scale, "seeds": seeds, "runs": list(recipe.runs), "done": []}
    _write_json(marker, state)
    return state


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _record_problem(record: Any, *, done: type) -> str | None:
    """What in a parsed ``recipe.json`` differs from what :func:`_prepare` writes, or ``None``.

    Args:
        record: the parsed file.
        done: the type of the entries of ``done``: run names (``str``) in a recipe folder, seeds (``int``) in
            the folder of several seeds.
    """
    if not isinstance(record, dict):
        return f"it must hold a JSON object, got {_short(record)}"
    for key in ("recipe", "scale"):
        if not isinstance(record.get(key), str):
            return f"'{key}' must be text, got {_short(record.get(key))}"
    seeds = record.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds):
        return f"'seeds' must be a list of integers, got {_short(seeds)}"
    if "runs" in record and not (isinstance(record["runs"], list) and all(isinstance(r, str) for r in record["runs"])):
        return f"'runs' must be a list of run names, got {_short(record['runs'])}"
    entries = record.get("done")
    if not isinstance(entries, list) or not all(isinstance(v, done) and not isinstance(v, bool) for v in entries):
        what = "run names" if done is str else "seeds"
        return f"'done' must be a list of {what}, got {_short(entries)}"
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, an integer too long, nested too deeply
        reason = "nested too deeply" if isinstance(err, RecursionError) else " ".join(str(err).split())
        raise UserError(f"{path} is not valid JSON ({reason}); use --overwrite to start the recipe again") from None
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror or err}); use --overwrite to start the recipe again") \
            from None


def _finished_metrics(path: Path) -> dict[str, Any] | None:
    """A finished run's evaluation as the runner wrote it, or ``None`` when the file is not one or the run's
    ``metrics.csv`` (which the analyses read) is damaged: the run is then trained again."""
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("encoders"), dict) or \
            not isinstance(metrics.get("train_seconds"), (int, float)) or isinstance(metrics.get("train_seconds"), bool):
        return None
    log = path.parent.parent / "metrics.csv"  # the training log the analyses read
    if log.is_file():
        from contrastlab.training.logging import read_metrics

        try:
            read_metrics(log)
        except (UserError, OSError):
            return None
    return metrics


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def run_recipe(
    name: str,
    *,
    scale: str = "quick",
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    only: list[str] | None = None,
    progress: bool = True,
    log=print,
    seed: int = 0,
) -> RecipeResult:
    """Train, evaluate and compare every run of the recipe ``name`` at ``scale``.

    Args:
        name: a recipe name (``contrastlab recipe --list``).
        scale: ``"quick"`` (tests, a minute or two), ``"demo"`` or ``"full"`` (minutes on 2 cores).
        out: the recipe folder (default ``runs/recipes/<name>-<scale>``).
        overwrite: replace an existing recipe folder.
        resume: keep the runs an earlier, interrupted call finished; run the rest.
        only: run only these runs (the analysis still sees only what ran).
        progress: show progress bars while training.
        log: where progress lines go.
        seed: added to every run's seed (which also draws the synthetic data sets), so that ``seed=1``
            repeats the whole experiment with other initial weights, batches, views and data.

    Returns:
        A :class:`RecipeResult`.

    Raises:
        UserError: an unusable output folder; ValueError: an unknown recipe, scale or run, or a bad seed.
    """
    from contrastlab.evaluation.pipeline import EvalOptions, evaluate
    from contrastlab.recipes.analyses import run_analysis
    from contrastlab.training import config_from_dict, load_run, train

    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    _check_seeds([seed])
    recipe = load_recipe(name)
    run_names = _run_names(recipe, only)
    # Check every run's config before training any of them.
    configs = {}
    for run in run_names:
        raw = recipe.run_config(run, scale)
        raw.setdefault("log", {})["progress"] = progress
        if seed and isinstance(raw.get("seed", 0), int):  # (a seed that is not an integer fails the check below)
            raw["seed"] = raw.get("seed", 0) + seed
        try:
            config_from_dict(raw)
        except ValueError as err:
            raise ValueError(f"recipe {name!r}, run {run!r}: {err}") from None
        configs[run] = raw
    eval_options = EvalOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in recipe.eval_options(scale).items()})

    out_dir = Path(out) if out else default_out(name, scale, [seed])
    state = _prepare(out_dir, recipe, scale, overwrite=overwrite, resume=resume, seeds=[seed])
    outcomes: dict[str, RunOutcome] = {}
    for i, run in enumerate(run_names, 1):
        run_dir = out_dir / "runs" / run
        metrics_path = run_dir / "eval" / "metrics.json"
        if resume and run in state["done"] and metrics_path.is_file():
            metrics = _finished_metrics(metrics_path)
            if metrics is not None:
                log(f"[{i}/{len(run_names)}] {run}: already done")
                outcomes[run] = RunOutcome(run, run_dir, configs[run], metrics, float(metrics["train_seconds"]))
                continue
            log(f"[{i}/{len(run_names)}] {run}: {metrics_path} is not a finished evaluation; running it again")
        log(f"[{i}/{len(run_names)}] {run}: training ({configs[run]['objective']['name']}"
            f" on {configs[run]['data']['name']} with {configs[run]['views']['name']} views)")
        cfg = config_from_dict(configs[run])
        cfg.out = str(run_dir)
        started = time.perf_counter()
        train(cfg, run_dir, overwrite=True)
        seconds = time.perf_counter() - started
        log(f"[{i}/{len(run_names)}] {run}: trained in {seconds:.0f} s; evaluating")
        metrics = _evaluate_one_thread(evaluate, load_run(run_dir), eval_options, run_dir / "eval")
        metrics["train_seconds"] = round(seconds, 2)
        from contrastlab.evaluation.pipeline import write_json

        write_json(metrics, metrics_path)
        outcomes[run] = RunOutcome(run, run_dir, configs[run], metrics, seconds)
        state["done"] = sorted(set(state["done"]) | {run})
        _write_json(out_dir / MARKER, state)

    summary = run_analysis(recipe, outcomes, out_dir)
    summary.write(out_dir)
    report = write_recipe_report(recipe, scale, outcomes, summary, out_dir)
    return RecipeResult(recipe, scale, out_dir, outcomes, summary, report)


def _run_names(recipe: Recipe, only: list[str] | None) -> list[str]:
    """The recipe's runs in order, or those of ``only``; an unknown name is a ValueError."""
    unknown = [r for r in only or [] if r not in recipe.runs]
    if unknown:
        raise ValueError(f"recipe {recipe.name!r} has no run {unknown[0]!r}; runs: {', '.join(recipe.runs)}")
    return [r for r in recipe.runs if not only or r in only]


def default_out(name: str, scale: str, seeds: list[int]) -> Path:
    """``runs/recipes/NAME-SCALE``, with the seeds appended unless it is seed 0 alone."""
    suffix = "" if seeds == [0] else "-seed-" + "-".join(map(str, seeds))
    return Path("runs") / "recipes" / f"{name}-{scale}{suffix}"


def _check_seeds(seeds: list[int]) -> None:
    if not seeds:
        raise ValueError("give at least one seed")
    bad = next((s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**31), None)
    if bad is not None:
        raise ValueError(f"a seed must be an integer in [0, 2**31), got {bad!r}")
    repeated = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
    if repeated is not None:
        raise ValueError(f"seed {repeated} is given twice; each seed repeats the whole recipe once")


def run_recipe_seeds(
    name: str,
    seeds: list[int],
    *,
    scale: str = "quick",
    out: str | Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    only: list[str] | None = None,
    progress: bool = True,
    log=print,
) -> RecipeResult:
    """:func:`run_recipe` once per seed, then one summary and report of all seeds together.

    One seed is exactly :func:`run_recipe` with that ``seed``. Under several, each seed's recipe
    folder is ``<out>/seed-<S>/`` (resumable on its own), and ``<out>`` gets the merged
    ``summary.json`` / ``summary.md`` (see :func:`~contrastlab.recipes.summary.aggregate`) and a
    ``report.html`` that links every seed's own report.

    Returns:
        A :class:`RecipeResult` whose ``summary`` is the merged one and whose ``runs`` are the first
        seed's.

    Raises:
        UserError: an unusable output folder; ValueError: an unknown recipe, scale or run, or bad seeds.

    Example:
        >>> run_recipe_seeds("supervised", [0, 1, 2], scale="full")  # doctest: +SKIP
    """
    seeds = list(seeds)
    _check_seeds(seeds)
    common = dict(scale=scale, overwrite=overwrite, resume=resume, only=only, progress=progress, log=log)
    if len(seeds) == 1:
        return run_recipe(name, out=out, seed=seeds[0], **common)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; scales: {', '.join(SCALES)}")
    recipe = load_recipe(name)
    _run_names(recipe, only)
    out_dir = Path(out) if out else default_out(name, scale, seeds)
    state = _prepare(out_dir, recipe, scale, overwrite=overwrite, resume=resume, seeds=seeds)
    results: dict[int, RecipeResult] = {}
    for k, seed in enumerate(seeds, 1):
        log(f"seed {seed} ({k} of {len(seeds)})")
        results[seed] = run_recipe(name, out=out_dir / f"seed-{seed}", seed=seed,
                                   **{**common, "overwrite": False})  # --overwrite was applied to the whole folder above
        state["done"] = sorted(set(state["done"]) | {seed})
        _write_json(out_dir / MARKER, state)
    summary = aggregate({s: r.summary for s, r in results.items()})
    summary.write(out_dir)
    links = "".join(f"<li><a href='seed-{s}/report.html'>seed {s}</a></li>" for s in seeds)
    preamble = summary_html(recipe, scale, summary, out_dir) + f"<h3>Each seed's report</h3><ul>{links}</ul>"
    first = results[seeds[0]]
    from contrastlab.report.html import build_report

    page = build_report([o.run_dir for o in first.runs.values()], preamble=preamble,
                        title=f"contrastlab recipe: {recipe.name}, {len(seeds)} seeds (runs below: seed {seeds[0]})")
    report = atomic_write_text(out_dir / "report.html", page)
    return RecipeResult(recipe, scale, out_dir, first.runs, summary, report)


def _evaluate_one_thread(evaluate, run, options, out_dir: Path) -> dict:
    """Evaluation is many small operations: one thread is faster than two that wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return evaluate(run, options=options, out_dir=out_dir)
    finally:
        torch.set_num_threads(threads)


def summary_html(recipe: Recipe, scale: str, summary: Summary, out_dir: Path) -> str:
    """The recipe's own section of the report: its question, tables, checks and figures."""
    parts = [f"<h2>Recipe {escape(recipe.name)} ({escape(scale)} scale)</h2>",
             f"<p>{escape(recipe.description)}</p>"]
    if recipe.source:
        parts.append(f"<p class=note>Source: {escape(recipe.source)}</p>")
    parts += [t.html() for t in summary.tables]
    if summary.checks:
        items = "".join(
            f"<li class='{'pass' if c.passed else 'fail'}'><b>{'yes' if c.passed else 'no'}</b>: "
            f"{escape(c.claim)} <span class=note>({escape(c.evidence)})</span></li>" for c in summary.checks)
        parts.append(f"<h3>What the source predicts, and what we measured</h3><ul class=checks>{items}</ul>")
    if summary.findings:
        parts.append("<ul>" + "".join(f"<li>{escape(f)}</li>" for f in summary.findings) + "</ul>")
    for caption, rel in summary.figures.items():
        data = base64.b64encode((out_dir / rel).read_bytes()).decode("ascii")
        parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{escape(caption)}'>"
                     f"<figcaption>{escape(caption)}</figcaption></figure>")
    return "\n".join(parts)


def write_recipe_report(recipe: Recipe, scale: str, outcomes: dict[str, RunOutcome], summary: Summary,
                        out_dir: Path) -> Path:
    from contrastlab.report.html import build_report

    page = build_report([o.run_dir for o in outcomes.values()], title=f"contrastlab recipe: {recipe.name}",
                        preamble=summary_html(recipe, scale, summary, out_dir))
    return atomic_write_text(out_dir / "report.html", page)


def print_summary(result: RecipeResult, stream=sys.stdout) -> None:
    stream.write(result.summary.markdown())
    stream.write(f"\nreport: {result.report}\n")
