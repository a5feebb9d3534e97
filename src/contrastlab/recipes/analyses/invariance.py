"""The homework's invariance experiment (question 8b): which factors does each encoder ignore?

For every run and the two baselines (raw pixels, a randomly initialised encoder) the table gives, per
factor, the distance score (0 invariant, ~1 as sensitive as a new item) and the 5-NN purity. The checks
compare each encoder with what the worked answers expect.
"""

from __future__ import annotations

from pathlib import Path

from contrastlab.recipes.analyses._metrics import encoder, get
from contrastlab.recipes.summary import Check, Summary, Table

#: What the worked answers expect (8b and 7d): run name -> (invariant factors, sensitive factors).
EXPECTED = {
    "A": (("colour",), ("shape", "location")),
    "B": (("location",), ("colour",)),
    "C": (("shape", "location"), ("colour",)),
}


def _rows(outcomes: dict, stage: str, factors: list[str]) -> list[list]:
    rows = []
    first = next(iter(outcomes.values()))
    baselines = [("raw pixels", encoder(first, "raw")), (f"random init ({stage})", encoder(first, f"random_{stage}"))]
    entries = [(name, encoder(o, stage)) for name, o in outcomes.items()] + baselines
    for name, m in entries:
        inv = m.get("invariance") or {}
        row = [name]
        for f in factors:
            row += [get(inv, f, "score"), get(inv, f, "purity")]
        rows.append(row)
    return rows


def summarize(recipe, outcomes: dict, out_dir: Path, *, invariant_below: float = 0.3,
              sensitive_above: float = 0.5) -> Summary:
    first = next(iter(outcomes.values()))
    inv = encoder(first, "head").get("invariance") or encoder(first, "raw").get("invariance") or {}
    factors = [f for f in ("shape", "colour", "location", "size") if f in inv] + \
              [f for f in inv if f not in ("shape", "colour", "location", "size")]
    columns = ["encoder"] + [f"{f} {what}" for f in factors for what in ("score", "5-NN purity")]
    chance = ", ".join(f"{f} {get(inv, f, 'chance'):.2f}" for f in factors if get(inv, f, "chance") is not None)
    summary = Summary()
    for stage in ("head", "backbone"):
        if any(encoder(o, stage).get("invariance") for o in outcomes.values()):
            summary.tables.append(Table(
                f"Invariance of the {stage} features (score: 0 invariant, 1 as sensitive as a new item)",
                columns, _rows(outcomes, stage, factors),
                note=f"5-NN purity by chance: {chance}. Labels: invariant below {invariant_below}, "
                     f"sensitive from {sensitive_above}."))

    def score(run: str, factor: str) -> float | None:
        return get(encoder(outcomes[run], "head"), "invariance", factor, "score") if run in outcomes else None

    for run, (invariant, sensitive) in EXPECTED.items():
        if run not in outcomes:
            continue
        for f in invariant:
            s = score(run, f)
            if s is not None:
                summary.checks.append(Check(f"encoder {run} is invariant to {f}", s < invariant_below, f"score {s:.2f}"))
        for f in sensitive:
            s = score(run, f)
            if s is not None:
                summary.checks.append(Check(f"encoder {run} is sensitive to {f}", s >= sensitive_above, f"score {s:.2f}"))
    if "A" in outcomes and "autoencoder" in outcomes:
        a, ae = score("A", "colour"), score("autoencoder", "colour")
        if a is not None and ae is not None:
            summary.checks.append(Check("A is more invariant to colour than the autoencoder", a < ae,
                                        f"colour score {a:.2f} vs {ae:.2f}"))
    if "autoencoder" in outcomes:
        ae_inv = encoder(outcomes["autoencoder"], "head").get("invariance") or {}
        raw_inv = encoder(first, "raw").get("invariance") or {}
        for f in ("colour", "size", "location"):
            p, c, r = get(ae_inv, f, "purity"), get(ae_inv, f, "chance"), get(raw_inv, f, "purity")
            if p is not None and c is not None:
                summary.checks.append(Check(
                    f"the autoencoder's neighbours share {f} more often than chance", p > c,
                    f"5-NN purity {p:.2f}, chance {c:.2f}" + (f", raw pixels {r:.2f}" if r is not None else "")))
    summary.findings.append(
        "Baselines matter: raw pixels and a random encoder already group items by colour and location, so an "
        "autoencoder that does the same has not necessarily learned anything beyond pixel similarity.")
    return summary
