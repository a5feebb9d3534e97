"""What a recipe's analysis produces: tables, figures, findings, and checks of the source's predictions."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contrastlab.files import atomic_write_text


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in self.rows)
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><table class='summary'><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{note}")


@dataclass
class Check:
    """A qualitative outcome the source material predicts, and whether this run shows it."""

    claim: str
    passed: bool
    evidence: str


@dataclass
class Summary:
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  #: caption -> PNG path relative to the recipe dir
    findings: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tables": [{"title": t.title, "columns": t.columns, "rows": [[_plain(v) for v in r] for r in t.rows],
                        "note": t.note} for t in self.tables],
            "figures": self.figures,
            "findings": self.findings,
            "checks": [{"claim": c.claim, "passed": bool(c.passed), "evidence": c.evidence} for c in self.checks],
        }

    def markdown(self) -> str:
        parts = [t.markdown() for t in self.tables]
        if self.checks:
            parts.append("**What the source predicts, and what we measured**\n\n" + "\n".join(
                f"- {'yes' if c.passed else 'NO'}: {c.claim} ({c.evidence})" for c in self.checks))
        if self.findings:
            parts.append("\n".join(f"- {f}" for f in self.findings))
        return "\n\n".join(parts) + "\n"

    def write(self, out_dir: Path) -> None:
        atomic_write_text(out_dir / "summary.json", json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        atomic_write_text(out_dir / "summary.md", self.markdown())


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return value
