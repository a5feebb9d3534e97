r"""Patches at growing distance: less shared information, and what it does to the representation.

Patch 1 starts at :math:`(x, y)` and patch 2 at :math:`(x + d, y + d)`. For each :math:`d` the evaluation
gives the InfoNCE loss of held-out positive pairs in groups of :math:`k`, hence the lower bound

.. math:: I(z_1; z_2) \ge \log k - \mathcal{L}_\text{InfoNCE}

(a negative value certifies nothing). The downstream accuracy must not depend on where the evaluation
happens to cut its patch, so the patch encoder is applied across the whole image: the mean of its backbone
features over a :math:`g \times g` grid of patches (:func:`~contrastlab.recipes.analyses._probe.patch_grid_features`),
the same for every :math:`d`. The evaluation's own numbers (one patch placed as at training, centred on the
pair) are kept for comparison.

References:
    Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (the bound); Tian, Sun, Poole, Krishnan,
    Schmid & Isola, "What Makes for Good Views for Contrastive Learning?", NeurIPS 2020 (patches at growing
    distance: accuracy peaks at an intermediate distance, not where the views share the most).
"""

from __future__ import annotations

import math
from pathlib import Path

from scipy.stats import spearmanr

from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.recipes.analyses._metrics import accuracy_row, encoder, get
from contrastlab.recipes.analyses._probe import patch_grid_features, probe_run
from contrastlab.recipes.summary import Check, Summary, Table


def _offset(outcome) -> int | None:
    views = outcome.config.get("views") or {}
    if views.get("name") != "patches":
        return None
    return int((views.get("options") or {}).get("offset", 0))


def _grid_accuracy(outcome, grid: int, seed: int, *, random_init: bool = False) -> dict[str, dict[str, float]]:
    from contrastlab.evaluation.features import random_init_copy
    from contrastlab.training import load_run

    run = load_run(outcome.run_dir)
    model = random_init_copy(run.model, seed=seed) if random_init else run.model
    items = outcome.metrics.get("items") or {}
    view = run.views.view_names[0]
    return {stage: probe_run(run, patch_grid_features(model, view, run.views.patch_size, grid=grid, stage=stage),
                             n_train=items.get("train"), n_test=items.get("test"), seed=seed)
            for stage in ("backbone", "head")}


def _figure(rows: list[dict], path: Path, grid: int, fresh: dict | None) -> Path:
    fig = new_figure(8.6, 3.3)
    d = [r["d"] for r in rows]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(d, [r["mi"] for r in rows], marker="o", color=PALETTE[0], label="log k - InfoNCE")
    logk = rows[0]["log_k"]
    if logk is not None:
        ax.axhline(logk, color="#555555", ls=":", lw=0.9, label=f"log k (k = {rows[0]['k']})")
    ax.axhline(0.0, color="#999999", lw=0.6)
    ax.set_title("Lower bound on I(v1; v2)", fontsize=10)
    ax.set_ylabel("nats", fontsize=9)
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(d, [r["grid"]["backbone"]["linear"] for r in rows], marker="o", color=PALETTE[1],
             label=f"whole image ({grid}x{grid} patches), linear")
    ax2.plot(d, [r["grid"]["backbone"]["knn5"] for r in rows], marker="s", color=PALETTE[2],
             label=f"whole image ({grid}x{grid} patches), 5-NN")
    ax2.plot(d, [r["eval_linear"] for r in rows], marker=".", ls="--", color=PALETTE[7],
             label="one patch as evaluated, linear")
    if fresh is not None:
        ax2.axhline(fresh["backbone"]["linear"], color=PALETTE[1], ls=":", lw=0.9, label="untrained, linear")
        ax2.axhline(fresh["backbone"]["knn5"], color=PALETTE[2], ls=":", lw=0.9, label="untrained, 5-NN")
    ax2.set_title("Shape accuracy (backbone features)", fontsize=10)
    for a in (ax, ax2):
        a.set_xlabel("offset d (pixels, diagonal)", fontsize=9)
        a.set_xticks(d)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    return save_png(fig, path)


def summarize(recipe, outcomes: dict, out_dir: Path, *, grid: int = 3) -> Summary:
    """Table, figure and checks of the view-distance recipe.

    Args:
        recipe: the recipe.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`.
        out_dir: the recipe folder (the figure is written there).
        grid: patches per side when the patch encoder reads the whole image.

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    seed = int(recipe.eval.get("seed", 0))
    rows = []
    for name, o in outcomes.items():
        d = _offset(o)
        if d is None:
            continue
        info = get(encoder(o, "head"), "information", default={}) or {}
        k = info.get("mi_k")
        rows.append({"name": name, "d": d, "mi": info.get("mi_lower_bound"), "loss": info.get("info_nce"), "k": k,
                     "log_k": math.log(k) if k else None, "grid": _grid_accuracy(o, grid, seed),
                     "eval_linear": accuracy_row(o, "backbone")["linear"],
                     "alignment": accuracy_row(o, "head")["alignment"]})
    rows.sort(key=lambda r: r["d"])
    table_rows = [[r["name"], r["d"], r["loss"], r["mi"], r["log_k"], r["grid"]["backbone"]["linear"],
                   r["grid"]["backbone"]["knn5"], r["grid"]["head"]["linear"], r["eval_linear"], r["alignment"]]
                  for r in rows]
    fresh = None
    if rows:
        fresh = _grid_accuracy(outcomes[rows[0]["name"]], grid, seed, random_init=True)
        table_rows.append(["random init", None, None, None, None, fresh["backbone"]["linear"],
                           fresh["backbone"]["knn5"], fresh["head"]["linear"], None, None])
        for key, what in (("linear", "linear probe"), ("knn5", "5-NN")):
            beaten = [r["d"] for r in rows if r["grid"]["backbone"][key] < fresh["backbone"][key]]
            if beaten:
                summary.findings.append(
                    f"The untrained encoder ({what} {fresh['backbone'][key]:.3f}) beats the trained ones at "
                    f"d = {', '.join(map(str, beaten))}: training on those views made the features worse for shape.")
    summary.tables.append(Table(
        "Mutual-information bound and accuracy against the distance between the patches",
        ["run", "d", "held-out InfoNCE", "MI bound (nats)", "log k", "image backbone + linear", "image backbone + 5-NN",
         "image head + linear", "patch backbone + linear", "L_align"],
        table_rows,
        note=f"image: the patch encoder's features averaged over a {grid}x{grid} grid of patches covering the image "
             "(the same input for every d). patch: the evaluation's own features, one patch placed where the pair "
             "would be centred (it moves towards the corner as d grows). random init: the same architecture untrained, "
             "read like the others. An MI bound below 0 certifies nothing."))
    if len(rows) >= 2 and all(r["mi"] is not None for r in rows):
        _figure(rows, out_dir / "view_distance.png", grid, fresh)
        summary.figures["The MI bound and the shape accuracy against the offset d"] = "view_distance.png"
        d, mi = [r["d"] for r in rows], [r["mi"] for r in rows]
        rho = float(spearmanr(d, mi).statistic) if len(set(mi)) > 1 else 0.0
        summary.checks.append(Check(
            "the farther apart the patches, the less they share: the MI bound falls with d",
            mi[-1] < mi[0] and rho < 0, f"{mi[0]:.2f} nats at d = {d[0]}, {mi[-1]:.2f} at d = {d[-1]}; "
                                        f"Spearman rank correlation {rho:.2f}"))
        acc = [r["grid"]["backbone"]["linear"] for r in rows]
        best = max(range(len(rows)), key=lambda i: acc[i])
        top = max(range(len(rows)), key=lambda i: mi[i])
        summary.checks.append(Check(
            "more shared information is not always better: the most accurate encoder is not the one whose views "
            "share the most", best != top,
            f"most accurate at d = {d[best]} ({acc[best]:.3f}); highest MI bound at d = {d[top]} ({acc[top]:.3f})"))
        if len(rows) >= 3:
            summary.checks.append(Check(
                "a sweet spot: accuracy peaks at an intermediate distance (neither the nearest nor the farthest "
                "patches), as Tian et al. (2020) found", 0 < best < len(rows) - 1,
                ", ".join(f"d = {x}: {a:.3f}" for x, a in zip(d, acc))))
    summary.findings.append(
        "At d = 0 the two patches are identical, so the loss is solved by any injective map and the bound "
        "approaches log k without the encoder having to capture anything about shapes.")
    return summary
