"""``contrastlab eval RUN_DIR``, ``contrastlab analyze FILE --out DIR``, ``contrastlab compare A B`` and
``contrastlab report RUN_DIR [RUN_DIR ...] -o report.html``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from contrastlab.errors import UserError, check_can_create
from contrastlab.plugins import add_plugin_option
from contrastlab.rundir import hold, is_marked


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` and ``report`` sub-commands to the command line's sub-parsers."""
    p = sub.add_parser("eval", help="evaluate a trained run: probes, k-NN, geometry, invariances, figures",
                       description="Evaluate the frozen encoder of RUN_DIR next to raw-input and random-encoder "
                                   "baselines; write RUN_DIR/eval/metrics.json and PNG figures.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `contrastlab train`")
    p.add_argument("--stage", choices=("head", "backbone", "both"), default="both",
                   help="features after the projection head, from the backbone, or both (default: both)")
    p.add_argument("--max-items", type=int, default=None, metavar="N",
                   help="evaluate at most N items per split (a seeded random subset; of a stream, its first N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsets, views and resampling (default: 0)")
    p.add_argument("--invariance-items", type=int, default=1000, metavar="N",
                   help="test items for the invariance report (default: 1000; each factor re-renders them)")
    p.add_argument("--no-baselines", action="store_true", help="skip the raw-input and random-encoder baselines")
    p.add_argument("--no-figures", action="store_true", help="write metrics.json only")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="loader worker processes reading the items (default: the run's data.num_workers, else "
                        "none for in-memory data and up to 4 for files read on demand)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for torch and faiss (default: torch's default); 1 is fastest on a busy machine")
    add_plugin_option(p)
    p.set_defaults(func=_eval)

    a = sub.add_parser("analyze", help="analyse features computed elsewhere (.npz, .safetensors, .parquet)",
                       description="Measure features from any encoder as `eval` measures a run: probes, k-NN, "
                                   "geometry, per-factor decodability, cross-modal retrieval, comparisons; write "
                                   "DIR/metrics.json, figures and DIR/report.html. Keys: x, y, x_test, y_test, x2, "
                                   "paired, factor_<name>, baseline_<name>, images, class_names (see "
                                   "contrastlab.evaluation.analyze).")
    a.add_argument("file", metavar="FILE", help="a .npz, .safetensors or .parquet file of features")
    a.add_argument("--out", required=True, metavar="DIR", help="the folder to write the analysis into")
    a.add_argument("--towers", default="x,paired", metavar="A,B",
                   help="names for the towers of x and paired (default: x,paired), e.g. image,caption")
    a.add_argument("--max-items", type=int, default=None, metavar="N",
                   help="analyse at most N items per split (a seeded random subset)")
    a.add_argument("--seed", type=int, default=0, help="seed of the subsets and probes (default: 0)")
    a.add_argument("--no-figures", action="store_true", help="write metrics.json (and the report) without figures")
    a.add_argument("--overwrite", action="store_true", help="replace an analysis already in DIR")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=_analyze)

    c = sub.add_parser("compare", help="how similar are two representations: CKA, mutual k-NN, SVCCA",
                       description="Compare two representations of the same items. A and B are each a run folder "
                                   "(RUN, RUN:STAGE or RUN:STAGE:TOWER; STAGE is head or backbone) or a features "
                                   "file (FILE or FILE:KEY, KEY one of x, x2, paired, baseline_<name>; the test "
                                   "rows when the file has them).")
    c.add_argument("a", metavar="A", help="the first representation")
    c.add_argument("b", metavar="B", help="the second representation")
    c.add_argument("--items", type=int, default=2000, metavar="N",
                   help="compare on at most N items (a seeded random subset of the test split; default 2000)")
    c.add_argument("--k", type=int, default=10, help="neighbours for the mutual k-NN alignment (default: 10)")
    c.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    c.add_argument("-o", "--output", default=None, metavar="FILE.json", help="also write the numbers as JSON")
    add_plugin_option(c)
    c.set_defaults(func=_compare)

    r = sub.add_parser("report", help="one self-contained HTML page for one or more evaluated runs",
                       description="Compare evaluated runs side by side in one HTML file (figures embedded).")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="runs evaluated by `contrastlab eval`, folders written by `contrastlab analyze`, or their "
                        "metrics.json files")
    r.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    r.add_argument("--title", default=None, help="the page title")
    r.add_argument("--overwrite", action="store_true", help="replace the file given with -o when it exists")
    add_plugin_option(r)
    r.set_defaults(func=_report)


def _eval(args: argparse.Namespace) -> int:
    from contrastlab.data.loading import MAX_WORKERS
    from contrastlab.evaluation.pipeline import STAGES, EvalOptions, evaluate_run_dir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if args.max_items is not None and args.max_items < 2:
        raise UserError(f"--max-items must be at least 2, got {args.max_items}")
    _check_seed(args.seed)
    if args.workers is not None and not 0 <= args.workers <= MAX_WORKERS:
        raise UserError(f"--workers must be in [0, {MAX_WORKERS}], got {args.workers}")
    if args.threads is not None:
        _set_threads(args.threads)
    options = EvalOptions(stages=STAGES if args.stage == "both" else (args.stage,), max_items=args.max_items,
                          seed=args.seed, baselines=not args.no_baselines, figures=not args.no_figures,
                          invariance_items=args.invariance_items, num_workers=args.workers,
                          progress=not args.no_progress)
    with hold(run_dir, advice="wait for it to finish (a run is evaluated by one process at a time)"):
        _check_training_log(run_dir, figures=options.figures)
        metrics = evaluate_run_dir(run_dir, options=options)
    print(_summary(metrics))
    print(f"wrote {run_dir / 'eval' / 'metrics.json'} and {len(metrics['figures'])} figure(s) "
          f"in {metrics['seconds']:.1f} s")
    return 0


def _check_training_log(run_dir: Path, *, figures: bool) -> None:
    """Read the run's ``metrics.csv`` (drawn as the training curves) before any work, so a damaged log is one
    line naming it, not a failure after the evaluation ran."""
    from contrastlab.training.logging import read_metrics

    log = run_dir / "metrics.csv"
    if figures and log.is_file():
        read_metrics(log)


def _run_of(path: Path) -> Path | None:
    """The folder to lock for an evaluation named on the command line: the run of ``RUN``, ``RUN/eval`` or
    ``RUN/eval/metrics.json``, or the folder ``contrastlab analyze`` wrote; ``None`` when it is missing."""
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        return None
    if folder.name == "eval" and not is_marked(folder):
        folder = folder.parent
    return folder


@contextmanager
def _holding(paths: list[Path], advice: str) -> Iterator[None]:
    """Hold the run lock (:func:`contrastlab.rundir.hold`) of every run among ``paths``, each once."""
    runs: dict[Path, Path] = {}  # resolved -> as the user named it (one lock per folder: flock is per open file)
    for path in paths:
        run = _run_of(path)
        if run is not None:
            runs.setdefault(run.resolve(), run)
    with ExitStack() as stack:
        for run in runs.values():
            stack.enter_context(hold(run, advice=advice))
        yield


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**31:
        raise UserError(f"--seed must be in [0, 2**31), got {seed}")


def _analyze(args: argparse.Namespace) -> int:
    from contrastlab.evaluation.analyze import analyze_file
    from contrastlab.evaluation.pipeline import EvalOptions

    out = Path(args.out)
    if args.max_items is not None and args.max_items < 2:
        raise UserError(f"--max-items must be at least 2, got {args.max_items}")
    _check_seed(args.seed)
    towers = tuple(t.strip() for t in args.towers.split(","))
    if len(towers) != 2 or not all(towers) or towers[0] == towers[1]:
        raise UserError(f"--towers must be two different names separated by a comma, got {args.towers!r}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):  # never write over what the user keeps there
        if not (out / "metrics.json").is_file():
            raise UserError(f"--out {out} is a folder that holds other files; give a new or empty folder")
        if not args.overwrite:
            raise UserError(f"{out} already holds an analysis (metrics.json); add --overwrite to replace it")
    check_can_create(out, "output folder")
    options = EvalOptions(max_items=args.max_items, seed=args.seed, figures=not args.no_figures,
                          progress=not args.no_progress)
    run = next((p for p in (out.absolute(), *out.absolute().parents) if is_marked(p)), None)  # --out inside a run
    with _holding([run] if run is not None else [], advice="wait for it to finish before writing an analysis into it"):
        metrics = analyze_file(args.file, out_dir=out, options=options, towers=towers)
    print(_summary(metrics))
    print(f"wrote {out / 'metrics.json'}, {len(metrics['figures'])} figure(s) and {out / 'report.html'} "
          f"in {metrics['seconds']:.1f} s")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from contrastlab.evaluation.representations import compare_sources

    if args.items < 4:
        raise UserError(f"--items must be at least 4, got {args.items}")
    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    _check_seed(args.seed)
    out = Path(args.output) if args.output else None
    if out is not None:
        if out.is_dir():
            raise UserError(f"-o {out} is a folder; give the JSON file to write")
        if out.suffix.lower() != ".json":
            raise UserError(f"-o {out}: the comparison is written as JSON; give a file name ending in .json")
        check_can_create(out, "comparison")
    result = compare_sources(args.a, args.b, items=args.items, k=args.k, seed=args.seed)
    svcca = "–" if result.get("svcca") is None else f"{result['svcca']:.3f}"
    print(f"{result['a']}  vs  {result['b']}  ({result['items']} items)\n"
          f"linear CKA (debiased) {result['cka']:.3f}   (biased {result['cka_biased']:.3f})\n"
          f"mutual {args.k}-NN {result['mutual_knn']:.3f}   (chance {result['mutual_knn_chance']:.3f})\n"
          f"SVCCA {svcca}")
    if out is not None:
        from contrastlab.evaluation.pipeline import write_json

        write_json(result, out)
        print(f"wrote {out}")
    return 0


def _set_threads(n: int) -> None:
    import torch

    from contrastlab.training.config import MAX_THREADS

    if not 1 <= n <= MAX_THREADS:
        raise UserError(f"--threads must be in [1, {MAX_THREADS}], got {n}")

    from contrastlab.evaluation.knn import faiss_available

    torch.set_num_threads(n)
    if faiss_available():
        import faiss

        faiss.omp_set_num_threads(n)


def _summary(metrics: dict) -> str:
    verdict = metrics.get("verdict") or {}
    lines = [verdict["headline"]] if verdict.get("headline") else []
    lines += [f"warning: {w}" for w in verdict.get("warnings", [])]
    for name, enc in metrics["encoders"].items():
        parts = [f"{name:<16}"]
        cls = enc.get("classification", {})
        if cls:
            parts.append(f"probe {cls['probe_test_accuracy']:.3f}  5-NN {cls['knn5_accuracy']:.3f}  "
                         f"200-NN {cls['knn200_accuracy']:.3f}")
        geo = enc.get("geometry", {})
        if "alignment" in geo:
            parts.append(f"align {geo['alignment']:.3f}  uniform {geo['uniformity']:.3f}")
        if "effective_rank" in geo:
            parts.append(f"rank {geo['effective_rank']:.1f}")
        inv = enc.get("invariance", {})
        if inv:
            parts.append("  ".join(f"{f}:{r['label'][:4]}" for f, r in inv.items()))
        lines.append("  ".join(parts))
    reasons: dict[str, list[str]] = {}
    for measure, reason in metrics.get("skipped", {}).items():
        reasons.setdefault(reason, []).append(measure)
    lines += [f"skipped {', '.join(measures)}: {reason}" for reason, measures in reasons.items()]
    return "\n".join(lines)


def _report(args: argparse.Namespace) -> int:
    from contrastlab.report.html import write_report

    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"-o {out} is a folder; give the HTML file to write (e.g. {out / 'report.html'})")
    if out.suffix.lower() not in (".html", ".htm"):  # never replace a config, a checkpoint or metrics by mistake
        raise UserError(f"-o {out}: the report is an HTML page; give a file name ending in .html")
    if out.exists() and not args.overwrite:
        raise UserError(f"-o {out} already exists; add --overwrite to replace it, or give another file name")
    check_can_create(out, "report")
    with _holding([Path(d) for d in args.run_dirs], advice="wait for it to finish before reporting it"):
        out = write_report(args.run_dirs, out, title=args.title)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, {len(args.run_dirs)} run(s))")
    return 0
