"""The report's sections on the structure of a representation: the geometry of sets (the similarity-learning
homework's diameter, margin and Tammes spread) and what two towers share (the partial information decomposition).

Everything from ``metrics.json`` is HTML-escaped (through :func:`~contrastlab.report.tables.fmt`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape
from typing import Any

from contrastlab.report._parts import as_map, run_heading, run_label, why
from contrastlab.report.load import EvaluatedRun
from contrastlab.report.tables import fmt

_SET_KINDS = {"classes": "classes", "augmentations": "augmentations of an item", "modalities": "an item's views"}


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table class='metrics'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _per_run(section: str, title: str, note: str, columns: Sequence[str], runs: list[EvaluatedRun],
             rows_of: Callable[[EvaluatedRun], list[list[Any]]], reason_of: Callable[[EvaluatedRun], str]) -> str:
    """A section with one table per run, or one line saying why a run has none."""
    parts = [f'<section id="{section}"><h2>{escape(title)}</h2><p class="note">{escape(note)}</p>']
    for run in runs:
        parts.append(run_heading(run, runs))
        rows = rows_of(run)
        parts.append(_table(columns, rows) if rows else why(f"{run_label(run, runs)}not shown: {reason_of(run)}"))
    parts.append("</section>")
    return "".join(parts)


def _set_rows(run: EvaluatedRun) -> list[list[Any]]:
    rows = []
    entries = [(str(r), as_map(as_map(e).get("sets"))) for r, e in as_map(run.metrics.get("encoders")).items()]
    entries += [(f"{r} (across towers)", {"modalities": as_map(as_map(e).get("sets"))})
                for r, e in as_map(run.metrics.get("cross_modal")).items() if as_map(as_map(e).get("sets"))]
    for row, sets in entries:
        for kind, g in sets.items():
            g = as_map(g)
            if not g:
                continue
            t = as_map(g.get("tammes"))
            rows.append([row, _SET_KINDS.get(kind, kind), g.get("sets"), g.get("median_diameter"), g.get("median_margin"),
                         g.get("separated_share"), t.get("min_angle"), t.get("reference_angle"), t.get("ratio"),
                         t.get("centre_norm_mean")])
    return rows


def sets_section(runs: list[EvaluatedRun]) -> str:
    """Diameter and margin of classes and invariance sets, and the spread of their centres (homework 4(b), 4(e)).

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    return _per_run(
        "sets", "Geometry of sets",
        "For each set (a class; the augmentations of one item; an item's image and caption): its diameter (the "
        "largest distance between two members, on the unit sphere) and its margin (the smallest distance to a member "
        "of another set). A set whose margin exceeds its diameter is separated: every member's nearest neighbour is "
        "in its own set. The Tammes view compares the smallest angle between set centres with the largest possible "
        "for that many points (exact for up to twice the dimension); a centre norm near 1 means each set sits at "
        "one point.",
        ["row", "sets of", "sets", "median diameter", "median margin", "separated share", "smallest centre angle °",
         "best possible °", "ratio", "centre norm"],
        runs, _set_rows,
        lambda run: "no labels and no second view of the items to form sets from, or a file written before the "
                    "geometry of sets was measured")


def _pid_rows(run: EvaluatedRun) -> list[list[Any]]:
    rows = []
    for stage, entry in as_map(run.metrics.get("cross_modal")).items():
        towers = as_map(entry).get("towers") or ["1", "2"]
        for target, p in as_map(as_map(entry).get("pid")).items():
            p = as_map(p)
            if "redundancy" not in p:
                continue
            rows.append([f"{stage}: {towers[0]} | {towers[1]}", target, p.get("mi_joint"), p.get("redundancy"),
                         p.get("unique_1"), p.get("unique_2"), p.get("synergy"),
                         p.get("noise_synergy")])
    return rows


def information_section(runs: list[EvaluatedRun]) -> str:
    """What two towers' codes say about the label and each factor: redundancy, the uniqueness of each, synergy.

    Args:
        runs: the evaluations on the page.

    Returns:
        A ``<section>``.
    """
    return _per_run(
        "information", "What the towers share",
        "The partial information decomposition (Bertschinger et al. 2014) of the information the two towers' codes "
        "carry about each target, in bits, on held-out items, each tower read by a linear probe of the target fitted "
        "on the training items: redundancy (what either tower alone tells), unique to tower 1 or 2, and synergy "
        "(what only the two together tell). The last column is the synergy the same estimate finds with the target "
        "shuffled: what estimation bias alone gives at this number of items.",
        ["towers", "about", "I(target; both)", "redundancy", "unique 1", "unique 2", "synergy", "synergy of noise"],
        runs, _pid_rows,
        lambda run: as_map(run.metrics.get("skipped")).get("pid") or (
            "one tower only" if "cross_modal" in run.metrics else "a file written before the decomposition was measured"))


__all__ = ["information_section", "sets_section"]
