r"""CMC with more views: does the representation improve as views are added, with either combination?

For :math:`M` views :math:`V_1, \dots, V_M` (view 1 the core view) CMC combines pairwise contrastive losses as

.. math::
    \mathcal{L}_C = \sum_{j=2}^{M} \mathcal{L}(V_1, V_j) \quad \text{(core view)}, \qquad
    \mathcal{L}_F = \sum_{1 \le i < j \le M} \mathcal{L}(V_i, V_j) \quad \text{(full graph)}.

The standard evaluation reads an item's features from every encoder side by side, so a run with more views
also offers the probe more features. The fair comparison is the core view's own encoder (L), the same
input and width in every run; this analysis probes it separately (backbone and head) on the items the
evaluation used, and reports the all-encoder numbers beside it.

References:
    Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (equations (9) and (10) on the slides;
    representations improve as more views are added).
"""

from __future__ import annotations

from pathlib import Path

from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.recipes.analyses._metrics import accuracy_row
from contrastlab.recipes.analyses._probe import probe_run, tower_features
from contrastlab.recipes.summary import Check, Summary, Table

#: How far below the 2-view accuracy "not worse" may fall.
TOLERANCE = 0.02
_MODES = {"cmc_core_view": "core view", "cmc_full_graph": "full graph"}


def _describe(outcome) -> tuple[list[str], str]:
    views = list(((outcome.config.get("views") or {}).get("options") or {}).get("views") or [])
    mode = _MODES.get(outcome.config["objective"]["name"], outcome.config["objective"]["name"])
    return views, ("core view = full graph" if len(views) == 2 else mode)


def _core_accuracy(outcome, core: str, seed: int, *, random_init: bool = False) -> dict[str, dict[str, float]]:
    from contrastlab.evaluation.features import random_init_copy
    from contrastlab.training import load_run

    run = load_run(outcome.run_dir)
    model = random_init_copy(run.model, seed=seed) if random_init else run.model
    items = outcome.metrics.get("items") or {}
    return {stage: probe_run(run, tower_features(model, run.views, [core], stage=stage),
                             n_train=items.get("train"), n_test=items.get("test"), seed=seed)
            for stage in ("backbone", "head")}


def _figure(points: dict[str, list[tuple[int, float, float]]], path: Path, core: str) -> Path:
    fig = new_figure(8.6, 3.3)
    panels = ((f"the core view's encoder ({core}) alone", 1), ("all encoders side by side", 2))
    for k, (title, idx) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        for i, (mode, rows) in enumerate(sorted(points.items())):
            rows = sorted(rows)
            ax.plot([r[0] for r in rows], [r[idx] for r in rows], marker="o", color=PALETTE[i], label=mode)
        ax.set_xlabel("number of views M", fontsize=9)
        ax.set_ylabel("linear-probe accuracy (backbone)", fontsize=9)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(sorted({r[0] for rows in points.values() for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_png(fig, path)


def summarize(recipe, outcomes: dict, out_dir: Path, *, core: str = "L") -> Summary:
    """Tables, figure and checks of the cmc-views recipe.

    Args:
        recipe: the recipe.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`.
        out_dir: the recipe folder (the figure is written there).
        core: the core view's channel group (its tower is probed alone).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    rows, measured = [], {}
    for name, o in outcomes.items():
        views, mode = _describe(o)
        acc = _core_accuracy(o, core, int(recipe.eval.get("seed", 0)))
        head, backbone = accuracy_row(o, "head"), accuracy_row(o, "backbone")
        measured[name] = (len(views), mode, acc, backbone["linear"])
        rows.append([name, " + ".join(views), len(views), mode, acc["backbone"]["linear"], acc["backbone"]["knn5"],
                     acc["head"]["linear"], backbone["linear"], head["linear"], head["mi_bound"]])
    fresh = None
    if outcomes:
        fresh = _core_accuracy(next(iter(outcomes.values())), core, int(recipe.eval.get("seed", 0)), random_init=True)
        rows.append(["random init", core, None, "(baseline)", fresh["backbone"]["linear"], fresh["backbone"]["knn5"],
                     fresh["head"]["linear"], None, None, None])
    summary.tables.append(Table(
        "Shape accuracy against the views CMC learns from",
        ["run", "views", "M", "objective", f"{core} backbone + linear", f"{core} backbone + 5-NN",
         f"{core} head + linear", "all backbones + linear", "all heads + linear", "MI bound (nats)"], rows,
        note=f"'{core}': the core view's encoder alone, the same input in every run (random init: untrained). "
             "'all': every encoder's "
             "features side by side (more views also means more features). MI bound: log k - InfoNCE on held-out "
             "positive pairs, averaged over all pairs of views."))

    points: dict[str, list[tuple[int, float, float]]] = {}
    for name, (m, mode, acc, all_linear) in measured.items():
        modes = ("core view", "full graph") if m == 2 else (mode,)
        for each in modes:
            points.setdefault(each, []).append((m, acc["backbone"]["linear"], all_linear))
    if any(len(p) > 1 for p in points.values()):
        _figure(points, out_dir / "cmc_views.png", core)
        summary.figures[f"Linear-probe accuracy against the number of views: the {core} encoder alone and all "
                        "encoders (backbone features)"] = "cmc_views.png"

    two = [acc["backbone"]["linear"] for m, _, acc, _ in measured.values() if m == 2]
    if two:
        base = two[0]
        for mode in ("core view", "full graph"):
            for m, acc in sorted((m, a["backbone"]["linear"]) for m, md, a, _ in measured.values()
                                 if md == mode and m > 2):
                summary.checks.append(Check(
                    f"more views are not worse ({mode}, {m} views): the {core} encoder is at least as accurate as "
                    f"with 2 views (within {TOLERANCE:.2f})", acc >= base - TOLERANCE, f"{acc:.3f} vs {base:.3f}"))
        more = [a["backbone"]["linear"] for m, _, a, _ in measured.values() if m > 2]
        if more:
            summary.checks.append(Check(
                f"more views help: some run with 3 or 4 views gives a more accurate {core} encoder than 2 views",
                max(more) > base, f"best {max(more):.3f} vs {base:.3f}"))
    if fresh is not None and measured:
        best = max(a["backbone"]["knn5"] for _, _, a, _ in measured.values())
        if fresh["backbone"]["knn5"] >= best:
            summary.findings.append(
                f"The untrained {core} encoder's 5-NN accuracy ({fresh['backbone']['knn5']:.3f}) beats every trained "
                f"one (best {best:.3f}); its linear probe does not ({fresh['backbone']['linear']:.3f}). Untrained, "
                "the backbone is positively homogeneous (convolutions without bias, batch norm with fresh unit "
                "statistics, ReLU, average pooling): f(c x) = c f(x), so cosine neighbours ignore how bright a "
                "shape is in L, and the pooling ignores where it is, leaving shape and size.")
    pairs = {}
    for name, (m, mode, acc, _) in measured.items():
        if m > 2:
            pairs.setdefault(m, {})[mode] = acc["backbone"]["linear"]
    for m, modes in sorted(pairs.items()):
        if {"core view", "full graph"} <= set(modes):
            summary.findings.append(f"{m} views: full graph {modes['full graph']:.3f} vs core view "
                                    f"{modes['core view']:.3f} ({core} encoder, backbone, linear probe).")
    return summary
