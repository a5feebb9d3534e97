"""Small pieces the report's sections share: one-line reasons, run labels, the run's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from contrastlab.evaluation.verdict import verdict
from contrastlab.report.load import EvaluatedRun


def why(text: str) -> str:
    """A one-line reason a section is not shown, escaped."""
    return f'<p class="why">{escape(text)}</p>'


def run_label(run: EvaluatedRun, runs: list[EvaluatedRun]) -> str:
    """"run-a: " before a per-run line when several runs share the page."""
    return f"{run.name}: " if len(runs) > 1 else ""


def run_heading(run: EvaluatedRun, runs: list[EvaluatedRun]) -> str:
    """The run's name as a sub-heading when several runs share the page (nothing for one run)."""
    return f"<h3>{escape(run.name)}</h3>" if len(runs) > 1 else ""


def as_map(value: object) -> Mapping:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def run_verdict(run: EvaluatedRun) -> dict[str, Any]:
    """The run's verdict: as ``metrics.json`` holds it, else computed from its metrics (older files).

    Args:
        run: a loaded evaluation.

    Returns:
        ``{"headline", "best", "warnings", "notes"}``.
    """
    stored = run.metrics.get("verdict")
    return dict(stored) if isinstance(stored, Mapping) else verdict(run.metrics)
