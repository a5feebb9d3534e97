"""The report's text and table sections: the verdict, a summary of every row, invariance with decodability,
cross-modal retrieval and representation comparison (the figure sections are in :mod:`.figures`).

Every section is shown for every run; where it cannot be, it says why in one line. Everything that comes from
``metrics.json`` (names, notes, class names) is HTML-escaped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from contrastlab.evaluation.verdict import RETRIEVAL_MEASURE, baseline_gaps, collapsed_rows
from contrastlab.report._parts import as_map, run_heading, run_label, run_verdict, why
from contrastlab.report.figures import embed
from contrastlab.report.load import EvaluatedRun
from contrastlab.report.tables import (
    cca_table, comparison_table, invariance_table, retrieval_table, summary_table,
)



def _class_names(run: EvaluatedRun) -> list[str] | None:
    names = as_map(run.metrics.get("run")).get("class_names")
    return names if isinstance(names, list) and names else None


def _about(run: EvaluatedRun) -> str:
    """What was evaluated, in one line: the source, the data, the items and how they were chosen, the classes."""
    info, items = as_map(run.metrics.get("run")), as_map(run.metrics.get("items"))
    source = info.get("source")
    if source == "features":
        what = f"features from <code>{escape(str(info.get('dataset')))}</code>"
    else:
        who = "your encoder" if source == "encoder" else f"objective <code>{escape(str(info.get('objective')))}</code>"
        what = f"{who}, data <code>{escape(str(info.get('dataset')))}</code>"
        if info.get("step") is not None:
            what += f", step {escape(str(info.get('step')))}"
    selection = as_map(run.metrics.get("selection"))
    chosen = f" ({escape('; '.join(f'{k}: {v}' for k, v in selection.items()))})" if selection else ""
    line = (f"{what}; {escape(str(items.get('train', '?')))} train / {escape(str(items.get('test', '?')))} test "
            f"items evaluated{chosen}")
    if info.get("run_dir"):
        line += f"; <code>{escape(str(info['run_dir']))}</code>"
    names = _class_names(run)
    if names:
        shown = ", ".join(names[:12]) + (f" … ({len(names)} in all)" if len(names) > 12 else "")
        line += f"; classes: {escape(shown)}"
    return f'<p class="about">{line}.</p>'


def verdict_section(runs: list[EvaluatedRun]) -> str:
    """The answer first: per run, what was evaluated, the headline, the warnings in a marked box, the notes.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section class="verdict">``.
    """
    parts = ['<section class="verdict" id="verdict"><h2>Verdict</h2>']
    for run in runs:
        v = run_verdict(run)
        warnings, notes = list(v.get("warnings", [])), list(v.get("notes", []))
        tone = " warned" if warnings else " good" if str(v.get("headline", "")).startswith("Yes") else ""
        parts.append(f'<div class="verdict-box{tone}">{run_heading(run, runs)}{_about(run)}'
                     f'<p class="headline">{escape(str(v.get("headline", "")))}</p>')
        if warnings:
            parts.append('<div class="warnings" role="alert">' + "".join(
                f'<p class="warning"><span class="mark" aria-hidden="true">⚠</span> {escape(w)}</p>'
                for w in warnings) + "</div>")
        if notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _loss_flags(run: EvaluatedRun) -> dict[tuple[str, str], str]:
    """(row, measure) → "loses to raw inputs (-0.049 on linear-probe test accuracy)" for trained rows that do
    not beat their best baseline."""
    flags = {}
    for g in baseline_gaps(run.metrics):
        if g["beats"]:
            continue
        how = "within noise of" if g["margin"] > 0 else "loses to"
        flags[(g["row"], g["measure"])] = f"⚠ {how} {g['baseline']} ({g['margin']:+.3f} on {g['measure']})"
    return flags


def summary_section(runs: list[EvaluatedRun]) -> str:
    """One line per encoder row of every run, baselines muted, losing and collapsed rows flagged.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    lines = []
    for run in runs:
        best = run_verdict(run).get("best")
        collapsed = collapsed_rows(run.metrics)
        losses = _loss_flags(run)
        for row, enc in as_map(run.metrics.get("encoders")).items():
            flags = [("loses", text) for (r, _), text in losses.items() if r == row]
            if row in collapsed:
                flags.append(("collapsed", f"⚠ collapsed ({collapsed[row]})"))
            if row == best:
                flags.insert(0, ("best", "best trained row"))
            lines.append({"run": run.name, "row": row, "metrics": as_map(enc), "flags": flags})
    note = ('<p class="note">Accuracies on the test split, geometry on held-out items (alignment and uniformity '
            "on positive pairs, on the unit sphere). Baselines, in grey, are what any learned representation must "
            "beat: the raw inputs and the same architecture randomly initialised.</p>")
    return f'<section id="summary"><h2>Summary of every row</h2>{note}{summary_table(lines, with_run=len(runs) > 1)}</section>'


def invariance_section(runs: list[EvaluatedRun], shown: set[tuple[str, str]]) -> str:
    """Invariance (distance score, label, purity) beside decodability (a linear read-out) per factor and row.

    Args:
        runs: the evaluations on the page.
        shown: (run name, figure name) pairs already on the page; the invariance figure is added to it.

    Returns:
        A ``<section>``.
    """
    parts = ['<section id="invariance"><h2>Invariance and decodability</h2>',
             '<p class="note">Score: mean embedding distance when only that factor changes ÷ mean distance to a '
             "random other item (invariant below 0.3, sensitive from 0.5). Purity: fraction of each item's 5 nearest "
             "neighbours sharing its value (continuous factors in quartile bins), with chance in brackets. "
             "Decodable: accuracy (or R²) of a linear read-out of the factor from the features, with chance in "
             "brackets — an invariant factor that is still decodable was moved, not removed.</p>"]
    for run in runs:
        encoders = as_map(run.metrics.get("encoders"))
        reports = {r: dict(as_map(e).get("invariance") or {}) for r, e in encoders.items()}
        decoding = {r: dict(as_map(e).get("decodability") or {}) for r, e in encoders.items()}
        reports = {r: v for r, v in reports.items() if v or decoding.get(r)}
        decoding = {r: v for r, v in decoding.items() if v}
        parts.append(run_heading(run, runs))
        if not reports and not decoding:
            skipped = as_map(run.metrics.get("skipped"))
            reason = skipped.get("invariance") or skipped.get("decodability") or "the data has no generative factors"
            parts.append(why(f"{run_label(run, runs)}not shown: {reason}"))
            continue
        parts.append(invariance_table(reports, decoding))
        if "invariance" in run.figures:
            parts.append('<div class="figrow" style="grid-template-columns: minmax(0, 960px)">'
                         + embed(run, "invariance", runs) + "</div>")
            shown.add((run.name, "invariance"))
    parts.append("</section>")
    return "".join(parts)


def _cross_modal(run: EvaluatedRun) -> tuple[dict, dict, dict]:
    """(row → retrieval directions, row → CCA pairs, row → kind), from ``cross_modal`` and older encoder rows."""
    retrieval, cca, kinds = {}, {}, {}
    encoders = as_map(run.metrics.get("encoders"))
    sources = {str(r): as_map(e) for r, e in as_map(run.metrics.get("cross_modal")).items()}
    for row, enc in encoders.items():  # files written before cross_modal: measures inside the row
        if isinstance(as_map(enc).get("retrieval"), Mapping) or isinstance(as_map(enc).get("cca"), Mapping):
            sources.setdefault(str(row), as_map(enc))
    for row, entry in sources.items():
        if as_map(entry.get("retrieval")):
            retrieval[row] = dict(entry["retrieval"])
        if as_map(entry.get("cca")):
            cca[row] = dict(entry["cca"])
        kind = entry.get("kind")
        if not isinstance(kind, str):
            own = {as_map(e).get("kind") for r, e in encoders.items() if str(r) == row or str(r).partition(":")[0] == row}
            kind = own.pop() if len(own) == 1 else None
        kinds[row] = kind
    return retrieval, cca, kinds


def cross_modal_section(runs: list[EvaluatedRun]) -> str:
    """Retrieval across towers (image → caption and back) and their canonical correlations.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    parts = ['<section id="cross-modal"><h2>Cross-modal retrieval</h2>',
             '<p class="note">Each query of one tower ranks every test item of the other by cosine similarity; '
             "recall@k is the fraction whose own partner is among the first k. Canonical correlations say how much "
             "the two towers share, whatever their spaces.</p>"]
    for run in runs:
        retrieval, cca, kinds = _cross_modal(run)
        parts.append(run_heading(run, runs))
        if not retrieval and not cca:
            skipped = as_map(run.metrics.get("skipped"))
            towers = [len(as_map(as_map(e).get("towers"))) for e in as_map(run.metrics.get("encoders")).values()]
            reason = (skipped.get("retrieval") or skipped.get("cross_modal")
                      or ("one tower only: there is nothing to retrieve across"
                          if "cross_modal" in run.metrics or all(t <= 1 for t in towers)
                          else "no cross-modal measures in this file"))
            parts.append(why(f"{run_label(run, runs)}not shown: {reason}"))
            continue
        if retrieval:
            flags = {row: text for (row, measure), text in _loss_flags(run).items() if measure == RETRIEVAL_MEASURE}
            parts.append(retrieval_table(retrieval, kinds=kinds, flags=flags))
        if cca:
            parts.append(cca_table(cca))
    parts.append("</section>")
    return "".join(parts)


def comparison_section(runs: list[EvaluatedRun]) -> str:
    """How alike the rows' representations are: CKA, mutual k-NN and SVCCA between chosen pairs of rows.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    parts = ['<section id="comparison"><h2>Representation comparison</h2>',
             '<p class="note">Linear CKA (1: the same representation up to rotation and scale), the overlap of '
             "each item's 10 nearest neighbours in both (against chance), and the mean SVCCA correlation: between "
             "the head and the backbone, each trained row and its random twin, and two towers.</p>"]
    for run in runs:
        entries = run.metrics.get("comparison")
        parts.append(run_heading(run, runs))
        if not entries:
            reason = as_map(run.metrics.get("skipped")).get("comparison") or (
                "nothing to compare" if isinstance(entries, list)
                else "this file was written before representation comparisons were measured")
            parts.append(why(f"{run_label(run, runs)}not shown: {reason}"))
            continue
        parts.append(comparison_table(entries))
    parts.append("</section>")
    return "".join(parts)


