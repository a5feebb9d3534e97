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


@dataclass(frozen=True)
class Spread:
    """One table cell measured under several seeds: shown as mean ± standard deviation."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def sd(self) -> float:
        """The sample standard deviation (n - 1), 0 for one value."""
        n, m = len(self.values), self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1)) if n > 1 else 0.0


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
    if isinstance(value, Spread):
        return f"{fmt(value.mean)} ± {fmt(value.sd)}"
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
    if isinstance(value, Spread):
        return {"mean": _plain(value.mean), "sd": _plain(value.sd), "values": [_plain(v) for v in value.values]}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _combine(values: list[Any]) -> Any:
    """One cell from the same cell of every seed's table."""
    if all(v == values[0] for v in values[1:]):
        return values[0]  # the same under every seed (a setting, a chance level, a label)
    if all(_is_number(v) for v in values):
        finite = tuple(float(v) for v in values if math.isfinite(v))
        if len(finite) == len(values):
            return Spread(finite)
        if not finite:
            return float("nan")
        return f"{fmt(Spread(finite))} ({len(finite)} of {len(values)} seeds finite)"
    if all(isinstance(v, bool) for v in values):
        return f"yes in {sum(values)}/{len(values)}"
    return " / ".join(fmt(v) for v in values)


def aggregate(summaries: dict[int, Summary], *, folder: str = "seed-{seed}") -> Summary:
    """One summary from a recipe run under several seeds.

    Tables of the same title and shape are merged cell by cell: numbers that differ become
    :class:`Spread` (mean ± sd), equal cells stay as they are. A table whose shape differs between
    seeds is shown once per seed. A check holds when it holds under every seed; its evidence says
    under how many and lists each seed's. Figures and findings are the first seed's, with their
    paths under ``folder`` (formatted with the seed).

    Example:
        >>> a, b = Summary([Table("t", ["x"], [[1.0]])]), Summary([Table("t", ["x"], [[3.0]])])
        >>> aggregate({0: a, 1: b}).tables[0].rows[0][0].mean
        2.0
    """
    if not summaries:
        raise ValueError("aggregate needs the summary of at least one seed")
    seeds = list(summaries)
    first = summaries[seeds[0]]
    n = len(seeds)
    out = Summary()
    for i, table in enumerate(first.tables):
        same = [s.tables[i] for s in summaries.values()
                if i < len(s.tables) and (s.tables[i].title, s.tables[i].columns) == (table.title, table.columns)
                and [len(r) for r in s.tables[i].rows] == [len(r) for r in table.rows]]
        if len(same) == n:
            rows = [[_combine([t.rows[r][c] for t in same]) for c in range(len(row))] for r, row in enumerate(table.rows)]
            note = f"Mean ± standard deviation over {n} seeds ({', '.join(map(str, seeds))})."
            out.tables.append(Table(table.title, table.columns, rows, f"{table.note} {note}".strip()))
        else:
            for seed, s in summaries.items():
                if i < len(s.tables):
                    t = s.tables[i]
                    out.tables.append(Table(f"{t.title} (seed {seed})", t.columns, t.rows, t.note))
    for check in first.checks:
        found = {seed: next((c for c in s.checks if c.claim == check.claim), None) for seed, s in summaries.items()}
        held = sum(1 for c in found.values() if c is not None and c.passed)
        each = "; ".join(f"seed {seed}: {c.evidence if c else 'not checked'}" for seed, c in found.items())
        out.checks.append(Check(check.claim, held == n, f"held under {held} of {n} seeds; {each}"))
    out.figures = {f"{caption} (seed {seeds[0]})": f"{folder.format(seed=seeds[0])}/{rel}" for caption, rel in first.figures.items()}
    out.findings = [f"Seed {seeds[0]}: {f}" for f in first.findings]
    return out
