"""One self-contained HTML page for one or several evaluations, the answer first.

The page needs nothing but itself: figures are embedded as base64 PNG data URIs, the style sheet
is inline, and there is no script and no external request (figures enlarge on click through a CSS
checkbox toggle). Each run must have been evaluated first (``contrastlab eval RUN_DIR`` writes
``RUN_DIR/eval/metrics.json`` and the figures; ``contrastlab analyze`` writes them into its folder).
"""

from __future__ import annotations

import datetime as _dt
from html import escape
from importlib import resources
from pathlib import Path
from string import Template

from contrastlab import __version__
from contrastlab.errors import UserError
from contrastlab.files import atomic_write_text
from contrastlab.report.load import EvaluatedRun, load_evaluated
from contrastlab.report.figures import figures_section, neighbours_section, scatter_section
from contrastlab.report.sections import (
    comparison_section, cross_modal_section, invariance_section, summary_section, verdict_section,
)
from contrastlab.report.structure import information_section, sets_section
from contrastlab.report.tables import config_table, metrics_table

__all__ = ["EvaluatedRun", "build_report", "load_evaluated", "write_report"]


def _unique_names(runs: list[EvaluatedRun]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run.name
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            run.name = f"{base} ({seen[base]})"


def build_report(run_dirs: list[str | Path], *, title: str | None = None, preamble: str = "",
                 names: list[str] | None = None) -> str:
    """The HTML page for the evaluated runs, side by side in the order given, the answer first.

    The page shows, in order: the verdict of each run (headline, warnings in a marked box, notes), the
    nearest-neighbour grids of the best trained row, a summary of every row, invariance beside decodability,
    cross-modal retrieval, representation comparison, the alignment–uniformity scatter, the remaining figures,
    every metric, and the configuration. A section that cannot be shown says why in one line. Figures enlarge on
    click (no script: a checkbox toggles them).

    Args:
        run_dirs: one or more evaluations: run folders evaluated by ``contrastlab eval``, folders written by
            ``contrastlab analyze``, or ``metrics.json`` files.
        title: the page title (default names the runs).
        preamble: trusted HTML shown first (a recipe's comparison of its runs).
        names: the name shown for each run, in order (default: each run's folder).

    Returns:
        The HTML text.

    Raises:
        UserError: when no run is given or a run has no evaluation.

    Example:
        >>> html = build_report(["runs/a", "runs/b"])  # doctest: +SKIP
        >>> html.startswith("<!DOCTYPE html>")  # doctest: +SKIP
        True
    """
    if not run_dirs:
        raise UserError("name at least one run directory")
    runs = [load_evaluated(d) for d in run_dirs]
    for run, name in zip(runs, names or []):
        run.name = name
    _unique_names(runs)
    title = title or "contrastlab report: " + ", ".join(r.name for r in runs)
    body = [preamble] if preamble else []
    body.append(verdict_section(runs))
    grids, shown = neighbours_section(runs)
    body += [grids, summary_section(runs), invariance_section(runs, shown), cross_modal_section(runs),
             information_section(runs), sets_section(runs), comparison_section(runs), scatter_section(runs),
             figures_section(runs, shown)]
    body.append('<section id="metrics"><h2>All metrics</h2><p class=note>Every measure of every row, features of '
                "the frozen encoder next to the baselines. Accuracies are on the test split; geometry is on test "
                "items.</p>")
    body.append(metrics_table([(run.name, enc, m) for run in runs for enc, m in run.metrics["encoders"].items()]))
    body.append('</section><section id="configuration"><h2>Configuration</h2>')
    configs = {run.name: run.metrics.get("run", {}).get("config") or {} for run in runs}
    body.append(config_table(configs) if any(configs.values()) else
                '<p class="why">No configuration: these features were not trained by contrastlab.</p>')
    body.append("</section>")
    template = Template(resources.files("contrastlab.report").joinpath("template.html").read_text())
    style = resources.files("contrastlab.report").joinpath("style.css").read_text()
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return template.substitute(title=escape(title), style=style, version=__version__, body="\n".join(body),
                               subtitle=escape(f"{len(runs)} run(s), generated {stamp} by contrastlab {__version__}. "
                                               "Click a figure to enlarge it; click again to close."))


def write_report(run_dirs: list[str | Path], out: str | Path, *, title: str | None = None,
                 names: list[str] | None = None) -> Path:
    """Build the report (see :func:`build_report`) and write it to ``out`` in one step, creating its folder.

    A write that fails (a full disk) leaves no partial file and removes the folders it made.

    Args:
        run_dirs: one or more evaluations (run folders, ``contrastlab analyze`` folders, ``metrics.json`` files).
        out: the HTML file to write.
        title: the page title.
        names: the name shown for each run (default: each run's folder).

    Returns:
        ``out``.

    Raises:
        UserError: when no run is given or a run has no evaluation.

    Example:
        >>> write_report(["runs/a", "runs/b"], "report.html")  # doctest: +SKIP
        PosixPath('report.html')
    """
    out = Path(out)
    html = build_report(run_dirs, title=title, names=names)
    made = [folder for folder in out.parents if not folder.exists()]  # deepest first
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return atomic_write_text(out, html)
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                break
        raise
