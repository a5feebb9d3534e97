"""The default analysis: one row per run with accuracy and geometry, for recipes without a special one."""

from __future__ import annotations

from pathlib import Path

from contrastlab.recipes.analyses._metrics import accuracy_row
from contrastlab.recipes.summary import Summary, Table


def summarize(recipe, outcomes: dict, out_dir: Path, *, stage: str = "head") -> Summary:
    columns = ["run", "objective", "linear acc.", "5-NN acc.", "alignment", "uniformity", "MI bound", "train s"]
    rows = []
    for name, o in outcomes.items():
        r = accuracy_row(o, stage)
        rows.append([name, o.config["objective"]["name"], r["linear"], r["knn5"], r["alignment"], r["uniformity"],
                     r["mi_bound"], round(o.train_seconds, 1)])
    return Summary(tables=[Table(f"Test accuracy and geometry ({stage} features)", columns, rows)])
