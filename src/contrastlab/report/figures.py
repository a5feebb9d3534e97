"""The report's figures: embedded once, enlarged on click without script, captioned from their names; the
nearest-neighbour grids of the best trained row, the alignment–uniformity scatter, and the remaining figures."""

from __future__ import annotations

import base64
import re
from html import escape

from contrastlab.evaluation.run_figures import figure_name
from contrastlab.evaluation.verdict import collapsed_rows
from contrastlab.plots import alignment_uniformity_scatter, png_bytes
from contrastlab.report._parts import as_map, run_label, run_verdict, why
from contrastlab.report.load import EvaluatedRun

#: The caption of the invariance figure.
INVARIANCE_CAPTION = ("Invariance report: distance score (0 = invariant, 1 = as far as a new item; dashed lines at "
                      "the label thresholds) and k-NN purity against chance (black ticks), for every row.")


def figure_html(data: bytes | None, alt: str, caption: str) -> str:
    """A figure that enlarges on click, without script: a checkbox in a label around the image.

    Clicking the image ticks the (visually hidden) checkbox; the style sheet then shows the image fixed over the
    whole window (``.zoom input:checked + img``); clicking again closes it. The image is embedded once.

    Args:
        data: the PNG file's bytes, or ``None`` for a figure the run does not have.
        alt: the image's alternative text.
        caption: the caption under it.

    Returns:
        A ``<figure>`` element.

    Example:
        >>> html = figure_html(b"\\x89PNG", "a <b>", "c")
        >>> '<label class="zoom"' in html and 'type="checkbox"' in html and "a &lt;b&gt;" in html
        True
    """
    if data is None:
        body = '<div class="missing">not available for this run</div>'
    else:
        src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        body = (f'<label class="zoom" title="click to enlarge; click again to close">'
                f'<input type="checkbox" aria-label="enlarge: {escape(alt)}">'
                f'<img alt="{escape(alt)}" src="{src}"></label>')
    return f"<figure>{body}<figcaption>{escape(caption)}</figcaption></figure>"


def _figrow(cells: list[str], columns: int) -> str:
    return (f'<div class="figrow" style="grid-template-columns: repeat({columns}, minmax(0, 1fr))">'
            + "".join(cells) + "</div>")


def _figure_row(run: EvaluatedRun, key: str) -> str:
    """The encoder row a figure key names (``head-image`` → ``head:image``), or the key itself."""
    for row in as_map(run.metrics.get("encoders")):
        if figure_name("tsne", str(row)) == f"tsne_{key}":
            return str(row)
    return key


def caption(run: EvaluatedRun, name: str) -> str:
    """The caption of a figure, from its name (``neighbours_<row>_<split>``, ``hypersphere_<row>``, …).

    Args:
        run: the evaluation the figure belongs to (its rows name the figures).
        name: the figure's name.

    Returns:
        The caption text (not yet escaped).
    """
    if name == "curves":
        return "Training curves from metrics.csv."
    if name == "invariance":
        return INVARIANCE_CAPTION
    if m := re.fullmatch(r"neighbours_(.+)_(train|test)", name):
        return (f"Nearest neighbours of the {_figure_row(run, m[1])} features on the {m[2]} split: each query, then "
                "its nearest neighbours with their class and cosine similarity.")
    if m := re.fullmatch(r"hypersphere_(.+)", name):
        return (f"{_figure_row(run, m[1])} features on the circle, with the density of angles per class "
                "(Wang & Isola, Fig. 3).")
    if m := re.fullmatch(r"tsne_(.+)", name):
        return f"t-SNE of the {_figure_row(run, m[1])} features of test items, by class."
    return name


def embed(run: EvaluatedRun, name: str, runs: list[EvaluatedRun]) -> str:
    """The run's figure ``name`` as an enlargeable ``<figure>`` ("not available" when its file is missing)."""
    path = run.figures.get(name)  # resolved inside the evaluation's folder by load_evaluated
    data = path.read_bytes() if path is not None and path.is_file() else None
    text = caption(run, name) + (f" — {run.name}" if len(runs) > 1 else "")
    return figure_html(data, f"{name} ({run.name})", text)


def grid_row(run: EvaluatedRun) -> str | None:
    """The trained row whose neighbour grids lead the page: the verdict's best row, else the first trained row
    that has grids.

    Args:
        run: a loaded evaluation.

    Returns:
        The row, or ``None`` when no trained row has a neighbour grid.
    """
    figures = run.figures
    best = run_verdict(run).get("best")
    encoders = as_map(run.metrics.get("encoders"))
    candidates = [best] if isinstance(best, str) else []
    candidates += [r for r in encoders if isinstance(best, str) and str(r).partition(":")[0] == best]
    candidates += [r for r, e in encoders.items() if as_map(e).get("kind") == "trained"]
    for row in dict.fromkeys(candidates):
        if any(figure_name("neighbours", str(row), split) in figures for split in ("test", "train")):
            return str(row)
    return None


def _no_grids(run: EvaluatedRun) -> str:
    skipped = as_map(run.metrics.get("skipped"))
    if "figures" in skipped:
        return f"no figures: {skipped['figures']}"
    if not run.metrics.get("figures"):
        return "no figures were written for this evaluation"
    if not any(as_map(e).get("kind") == "trained" for e in as_map(run.metrics.get("encoders")).values()):
        return "no trained row to draw neighbours for"
    return "no images: the items are not images, so there are no neighbour grids"


def neighbours_section(runs: list[EvaluatedRun]) -> tuple[str, set[tuple[str, str]]]:
    """The nearest-neighbour grids of each run's best trained row, test split then train.

    Args:
        runs: the evaluations on the page.

    Returns:
        ``(the section, the (run name, figure name) pairs it shows)``.
    """
    shown: set[tuple[str, str]] = set()
    parts = ['<section id="neighbours"><h2>Nearest neighbours</h2>']
    rows = {run.name: grid_row(run) for run in runs}
    if any(rows.values()):
        parts.append('<p class="note">What the best trained row puts next to each query image, on held-out items '
                     "then on training items. Click a figure to enlarge it.</p>")
    for run in runs:
        row = rows[run.name]
        names = [] if row is None else [figure_name("neighbours", row, split) for split in ("test", "train")]
        cells = [embed(run, name, runs) for name in names if name in run.figures]
        shown.update((run.name, name) for name in names if name in run.figures)
        if cells:
            parts.append('<div class="figrow" style="grid-template-columns: repeat(2, minmax(0, 620px))">'
                         + "".join(cells) + "</div>")
    for run in runs:
        if rows[run.name] is None:
            parts.append(why(run_label(run, runs) + _no_grids(run)))
    parts.append("</section>")
    return "".join(parts), shown


def scatter_section(runs: list[EvaluatedRun]) -> str:
    """Every row with alignment and uniformity as a point (Wang & Isola, Fig. 7); collapsed rows hollow and grey.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    names, align, unif, acc, flat = [], [], [], [], []
    for run in runs:
        collapsed = collapsed_rows(run.metrics)
        for row, enc in as_map(run.metrics.get("encoders")).items():
            geometry = as_map(as_map(enc).get("geometry"))
            if geometry.get("alignment") is None or geometry.get("uniformity") is None:
                continue
            names.append(row if len(runs) == 1 else f"{run.name}/{row}")
            align.append(geometry["alignment"])
            unif.append(geometry["uniformity"])
            acc.append(as_map(as_map(enc).get("classification")).get("probe_test_accuracy"))
            flat.append(row in collapsed)
    parts = ['<section id="alignment-uniformity"><h2>Alignment and uniformity</h2>']
    if not names:
        for run in runs:
            reason = as_map(run.metrics.get("skipped")).get("pairs") or "no positive pairs were measured"
            parts.append(why(f"{run_label(run, runs)}not shown: {reason}"))
        return "".join(parts) + "</section>"
    fig = alignment_uniformity_scatter(names, align, unif, acc, collapsed=flat,
                                       title="Alignment and uniformity on held-out pairs")
    colour = ("coloured by linear-probe test accuracy (Wang &amp; Isola, Fig. 7)" if any(a is not None for a in acc)
              else "drawn grey: without labels there is no probe accuracy to colour them by")
    collapse = (" Hollow grey points are collapsed rows: their features sit near one point, so their near-zero "
                "alignment is not a virtue." if any(flat) else "")
    parts.append(f'<p class="note">Each point is an encoder row on held-out positive pairs, {colour}: lower left is '
                 f"aligned and uniform.{collapse}</p>")
    parts.append('<div class="figrow" style="grid-template-columns: minmax(0, 640px)">'
                 + figure_html(png_bytes(fig), "alignment-uniformity scatter", "Alignment against uniformity.")
                 + "</div></section>")
    return "".join(parts)


def _figure_order(runs: list[EvaluatedRun]) -> list[str]:
    names = list(dict.fromkeys(n for run in runs for n in run.figures))
    rows = list(dict.fromkeys(str(r) for run in runs for r in as_map(run.metrics.get("encoders"))))
    order = [n for n in ("curves",) if n in names]
    for row in rows:
        order += [n for n in (figure_name("neighbours", row, "test"), figure_name("neighbours", row, "train"),
                              figure_name("hypersphere", row), figure_name("tsne", row)) if n in names]
    return list(dict.fromkeys(order + names))


def figures_section(runs: list[EvaluatedRun], shown: set[tuple[str, str]]) -> str:
    """The figures not shown above, one row per figure with the runs side by side.

    Args:
        runs: the evaluations on the page.
        shown: (run name, figure name) pairs already on the page.

    Returns:
        A ``<section>``.
    """
    parts = ['<section id="figures"><h2>More figures</h2>']
    order = [n for n in _figure_order(runs) if any((run.name, n) not in shown for run in runs if n in run.figures)]
    for name in order:
        cells = []
        for run in runs:
            if (run.name, name) in shown:
                cells.append('<figure><div class="missing">shown above</div></figure>')
            elif name in run.figures:
                cells.append(embed(run, name, runs))
            else:
                cells.append(figure_html(None, name, caption(run, name)))
        parts.append(f"<h3>{escape(name)}</h3>" + _figrow(cells, len(runs)))
    if not order:
        for run in runs:
            skipped = as_map(run.metrics.get("skipped"))
            reason = (f"no figures: {skipped['figures']}" if "figures" in skipped
                      else "every figure is shown above" if run.figures else "no figures were written")
            parts.append(why(f"{run_label(run, runs)}{reason}"))
    parts.append("</section>")
    return "".join(parts)
