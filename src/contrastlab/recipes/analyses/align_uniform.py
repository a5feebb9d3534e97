r"""Wang & Isola's comparison: the contrastive loss against alignment plus uniformity.

Two tables and two figures:

* Table 1's shape: for each data set, the contrastive loss, the alignment and uniformity losses, and their
  sum, with linear and 5-NN accuracy on the encoder's output (after the head) and on the backbone, and the
  alignment :math:`\mathbb{E}\lVert f(x) - f(y)\rVert^2` and uniformity
  :math:`\log \mathbb{E} e^{-2\lVert f(x) - f(y)\rVert^2}` of held-out positive pairs;
* Fig. 7's sweep of :math:`(1 - w)\,\mathcal{L}_\text{align} + w\,\mathcal{L}_\text{uniform}` from
  alignment only (:math:`w = 0`) to uniformity only (:math:`w = 1`): each encoder at (uniformity,
  alignment) coloured by accuracy, and accuracy against :math:`w`.

The checks compare what we measure with what the paper reports: optimising the two properties directly
is about as good as the contrastive loss, and each property alone fails.

References:
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on
    the Hypersphere", ICML 2020, Table 1 and Fig. 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.plots.scatter import alignment_uniformity_scatter
from contrastlab.recipes.analyses._metrics import accuracy_row, encoder, get
from contrastlab.recipes.summary import Check, Summary, Table

#: How far below the contrastive loss's linear accuracy "about as good" may fall.
TOLERANCE = 0.02


def _weights(outcome) -> tuple[float, float, float, dict]:
    options = (outcome.config.get("objective") or {}).get("options") or {}
    return (float(options.get("contrastive_weight", 1.0)), float(options.get("align_weight", 1.0)),
            float(options.get("uniform_weight", 1.0)), options)


def loss_formula(outcome) -> str:
    """The run's objective as a formula, e.g. ``0.5·L_align(α=2) + 0.5·L_uniform(t=2)``.

    Example:
        >>> from types import SimpleNamespace
        >>> run = SimpleNamespace(config={"objective": {"name": "contrastive_align_uniform", "options": {
        ...     "temperature": 0.2, "align_weight": 0.0, "uniform_weight": 0.0}}})
        >>> loss_formula(run)
        'L_contrastive(τ=0.2)'
    """
    if (outcome.config.get("objective") or {}).get("name") != "contrastive_align_uniform":
        return str((outcome.config.get("objective") or {}).get("name"))
    wc, wa, wu, options = _weights(outcome)

    def term(weight: float, text: str) -> str | None:
        if weight == 0:
            return None
        return text if weight == 1 else f"{weight:g}·{text}"

    terms = [term(wc, f"L_contrastive(τ={options.get('temperature', 0.5):g})"),
             term(wa, f"L_align(α={options.get('alpha', 2.0):g})"),
             term(wu, f"L_uniform(t={options.get('t', 2.0):g})")]
    return " + ".join(t for t in terms if t)


def uniform_share(outcome) -> float | None:
    r"""The sweep coordinate :math:`w = w_u / (w_a + w_u)` of a run without a contrastive term, else ``None``."""
    wc, wa, wu, _ = _weights(outcome)
    if wc != 0 or wa + wu == 0:
        return None
    return wu / (wa + wu)


def _table1(outcomes: dict, names: Sequence[str]) -> Table:
    columns = ["data", "run", "loss", "output + linear", "output + 5-NN", "backbone + linear", "backbone + 5-NN",
               "L_align", "L_uniform"]
    rows, baselines = [], {}
    for name in names:
        if name not in outcomes:
            continue
        o = outcomes[name]
        head, backbone = accuracy_row(o, "head"), accuracy_row(o, "backbone")
        data = o.config["data"]["name"]
        rows.append([data, name, loss_formula(o), head["linear"], head["knn5"], backbone["linear"], backbone["knn5"],
                     head["alignment"], head["uniformity"]])
        baselines.setdefault(data, o)
    for data, o in baselines.items():
        raw, rand_h, rand_b = (accuracy_row(o, s) for s in ("raw", "random_head", "random_backbone"))
        if raw["linear"] is not None:
            rows.append([data, "raw pixels", "(baseline)", raw["linear"], raw["knn5"], None, None, None, None])
        if rand_h["linear"] is not None:
            rows.append([data, "random init", "(baseline)", rand_h["linear"], rand_h["knn5"], rand_b["linear"],
                         rand_b["knn5"], rand_h["alignment"], rand_h["uniformity"]])
    return Table("Table 1's shape: test accuracy of linear and 5-NN classifiers, with the alignment and uniformity "
                 "of held-out positive pairs (output = after the head, L2-normalised)", columns, rows,
                 note="L_align: mean squared distance of positive pairs (lower is more aligned); L_uniform: "
                      "log mean Gaussian potential, t = 2 (lower is more uniform; -4 would be every pair antipodal).")


def _sweep_rows(outcomes: dict, names: Sequence[str]) -> list[tuple[str, float, dict]]:
    rows = []
    for name in names:
        if name in outcomes and uniform_share(outcomes[name]) is not None:
            rows.append((name, uniform_share(outcomes[name]), accuracy_row(outcomes[name], "head")))
    return sorted(rows, key=lambda r: r[1])


def _sweep_figure(rows: list[tuple[str, float, dict]], path: Path) -> Path:
    fig = new_figure(8.4, 3.2)
    ax = fig.add_subplot(1, 2, 1)
    w = [r[1] for r in rows]
    for i, (key, label) in enumerate((("linear", "output + linear"), ("knn5", "output + 5-NN"))):
        ax.plot(w, [r[2][key] for r in rows], marker="o", color=PALETTE[i], label=label)
    ax.set_xlabel("w in (1 - w) L_align + w L_uniform", fontsize=9)
    ax.set_ylabel("test accuracy", fontsize=9)
    ax.set_title("Accuracy against the weight", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(w, [r[2]["alignment"] for r in rows], marker="o", color=PALETTE[2], label="L_align")
    ax2.set_xlabel("w", fontsize=9)
    ax2.set_ylabel("L_align (lower: more aligned)", fontsize=9, color=PALETTE[2])
    twin = ax2.twinx()
    twin.plot(w, [r[2]["uniformity"] for r in rows], marker="s", color=PALETTE[3], label="L_uniform")
    twin.set_ylabel("L_uniform (lower: more uniform)", fontsize=9, color=PALETTE[3])
    ax2.set_title("Alignment and uniformity against the weight", fontsize=10)
    ax2.grid(alpha=0.3)
    return save_png(fig, path)


def _competitive_checks(outcomes: dict, table: Sequence[str], summary: Summary) -> None:
    """Per data set: are L_align + L_uniform, and the sum of all three, about as good as the contrastive loss?"""
    by_data: dict[str, dict[str, str]] = {}
    for name in table:
        if name not in outcomes:
            continue
        o = outcomes[name]
        wc, wa, wu, _ = _weights(o)
        kind = ("contrastive" if wa == wu == 0 else "align_uniform" if wc == 0 and wa > 0 and wu > 0
                else "sum" if min(wc, wa, wu) > 0 else None)
        if kind:
            by_data.setdefault(o.config["data"]["name"], {})[kind] = name
    for data, kinds in by_data.items():
        if "contrastive" not in kinds:
            continue
        base = accuracy_row(outcomes[kinds["contrastive"]], "head")["linear"]
        for kind, claim in (("align_uniform", "optimising L_align + L_uniform directly"),
                            ("sum", "adding L_align + L_uniform to the contrastive loss")):
            if kind in kinds and base is not None:
                acc = accuracy_row(outcomes[kinds[kind]], "head")["linear"]
                summary.checks.append(Check(
                    f"{data}: {claim} is at least as good as the contrastive loss alone (linear accuracy on the "
                    f"output, within {TOLERANCE:.2f})", acc is not None and acc >= base - TOLERANCE,
                    f"{acc:.3f} vs {base:.3f}" if acc is not None else "no accuracy"))


def _sweep_checks(rows: list[tuple[str, float, dict]], summary: Summary) -> None:
    if len(rows) < 3 or rows[0][1] != 0.0 or rows[-1][1] != 1.0:
        return
    first, last, inner = rows[0], rows[-1], rows[1:-1]
    u_first, u_others = first[2]["uniformity"], [r[2]["uniformity"] for r in rows[1:]]
    if u_first is not None and all(u is not None for u in u_others):
        summary.checks.append(Check(
            "alignment alone (w = 0) collapses the representation: it is the least uniform encoder of the sweep",
            u_first > max(u_others), f"L_uniform {u_first:.3f} vs at most {max(u_others):.3f} for w > 0"))
    a_last, a_others = last[2]["alignment"], [r[2]["alignment"] for r in rows[:-1]]
    if a_last is not None and all(a is not None for a in a_others):
        summary.checks.append(Check(
            "uniformity alone (w = 1) leaves positive pairs apart: it is the least aligned encoder of the sweep",
            a_last > max(a_others), f"L_align {a_last:.3f} vs at most {max(a_others):.3f} for w < 1"))
    accs = [r[2]["linear"] for r in rows]
    if all(a is not None for a in accs):
        best = max(range(len(rows)), key=lambda i: accs[i])
        best_inner = max(r[2]["linear"] for r in inner)
        summary.checks.append(Check(
            "both properties are needed: the most accurate encoder of the sweep optimises both (0 < w < 1)",
            0 < rows[best][1] < 1,
            f"best w = {rows[best][1]:g} ({accs[best]:.3f}); w = 0: {accs[0]:.3f}, w = 1: {accs[-1]:.3f}, "
            f"best inner: {best_inner:.3f}"))


def summarize(recipe, outcomes: dict, out_dir: Path, *, table: Sequence[str] = (),
              sweep: Sequence[str] = ()) -> Summary:
    """Tables, figures and checks of the align-uniform recipe.

    Args:
        recipe: the recipe.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`.
        out_dir: the recipe folder (figures are written there).
        table: the runs of Table 1, in order (runs that did not run are left out).
        sweep: the runs of the weight sweep (runs with a contrastive term are left out).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    table = list(table) or [n for n in outcomes if n not in sweep]
    summary.tables.append(_table1(outcomes, table))
    _competitive_checks(outcomes, table, summary)
    rows = _sweep_rows(outcomes, sweep)
    if rows:
        summary.tables.append(Table(
            "Fig. 7's sweep: (1 - w) L_align + w L_uniform", ["run", "w", "output + linear", "output + 5-NN",
                                                               "backbone + linear", "L_align", "L_uniform"],
            [[name, w, r["linear"], r["knn5"], accuracy_row(outcomes[name], "backbone")["linear"], r["alignment"],
              r["uniformity"]] for name, w, r in rows]))
        complete = [r for r in rows if r[2]["alignment"] is not None and r[2]["uniformity"] is not None]
        if complete:
            fig = alignment_uniformity_scatter(
                [f"w={w:g}" for _, w, _ in complete], [r["alignment"] for _, _, r in complete],
                [r["uniformity"] for _, _, r in complete], [r["linear"] for _, _, r in complete],
                title="Alignment and uniformity of the sweep, coloured by linear accuracy")
            save_png(fig, out_dir / "align_uniform_scatter.png")
            summary.figures["Fig. 7's view: each encoder of the sweep at (L_uniform, L_align), coloured by the "
                            "output's linear accuracy; the best sit low and left"] = "align_uniform_scatter.png"
        if len(rows) >= 2:
            _sweep_figure(rows, out_dir / "align_uniform_sweep.png")
            summary.figures["Accuracy, alignment and uniformity against the weight w"] = "align_uniform_sweep.png"
        _sweep_checks(rows, summary)
    shapes = [n for n in table if n in outcomes and get(encoder(outcomes[n], "head"), "invariance")]
    if shapes:
        inv = [(n, get(encoder(outcomes[n], "head"), "invariance")) for n in shapes]
        factors = [f for f in ("shape", "colour", "location", "size") if f in inv[0][1]]
        summary.tables.append(Table(
            "Shapes world: invariance of the output (score 0: invariant; 1: moves as much as a new item)",
            ["run"] + factors, [[n] + [get(i, f, "score") for f in factors] for n, i in inv],
            note="The views resample colour and location, so both should be ignored; shape (the label) and size "
                 "should not."))
    summary.findings.append(
        "Every run shares the encoder, views, optimiser and steps; only the objective's weights differ. "
        "MNIST-5k: L_align + L_uniform is the sweep's balanced run (w = 0.5).")
    return summary
