r"""Homework 6, question 1(c): a contrastive loss computed on positive pairs only, against the methods that
learn without negatives and do not collapse.

With only positive pairs the loss is minimised by mapping every input to the same point: alignment
:math:`\mathbb{E}\lVert f(x) - f(y)\rVert^2` is then 0, its global minimum, and nothing in the loss pushes
other items apart. BYOL (a predictor and a momentum target) and SimSiam (a predictor and a stop-gradient)
also have no negatives, yet do not collapse in practice; SimSiam without its stop-gradient does
(Chen & He 2021, Fig. 2).

Collapse is judged on the held-out head embeddings (the space the loss acts on, L2-normalised), by three
criteria fixed before any run was measured, from what collapse means:

* **uniformity** :math:`\log \mathbb{E}\, e^{-2\lVert f(x) - f(y)\rVert^2}` at least :data:`COLLAPSED_UNIFORMITY`
  (−0.1: the Gaussian potential of a random pair averages at least :math:`e^{-0.1} \approx 0.9`, every pair
  nearly at one point); a spread-out encoder has at most :data:`SPREAD_UNIFORMITY` (−1: the potential averages
  at most :math:`e^{-1}`). On the sphere it lies in [−4, 0] in high dimension.
* **effective rank** (Roy & Vetterli; ``contrastlab.evaluation.geometry.effective_rank``, uncentred) below
  :data:`COLLAPSED_RANK` of D dimensions. A point has rank 1; the tiny residuals a finite-precision collapse
  leaves in the other D − 1 directions still add to the entropy of the singular values (the audio-visual
  recipe's collapsed towers measured 3.4–3.7 at D = 128), hence 4 rather than 1 or 2.
* **k-NN accuracy** (5-NN, cosine, the evaluation's) at most chance + :data:`NEAR_CHANCE_MARGIN`, against at
  least :data:`LEARNED_FACTOR` × chance for an encoder that learned the classes.

References:
    Homework 6, question 1(c) (``reference/homework6-contrastive-questions.md``).
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere", ICML 2020.
    Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020.
    Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.
    Roy & Vetterli, "The Effective Rank: A Measure of Effective Dimensionality", EUSIPCO 2007.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from contrastlab.plots._figure import save_png
from contrastlab.plots.compare import run_curves
from contrastlab.plots.curves import read_metrics_csv
from contrastlab.plots.scatter import alignment_uniformity_scatter
from contrastlab.recipes.analyses._metrics import accuracy_row
from contrastlab.recipes.analyses._points import merge_coincident
from contrastlab.recipes.summary import Check, Summary, Table

#: uniformity (t = 2) at or above which the embeddings sit at about one point
COLLAPSED_UNIFORMITY = -0.1
#: uniformity (t = 2) at or below which the embeddings are spread out
SPREAD_UNIFORMITY = -1.0
#: effective rank below which the embeddings span only a handful of directions
COLLAPSED_RANK = 4.0
#: "near chance" is at most chance plus this
NEAR_CHANCE_MARGIN = 0.1
#: "learned the classes" is at least this multiple of chance
LEARNED_FACTOR = 3.0


def _last_loss(run_dir: Path) -> float | None:
    path = Path(run_dir) / "metrics.csv"
    try:
        loss = read_metrics_csv(path).get("loss")
    except (OSError, ValueError):
        return None
    return float(loss[-1]) if loss is not None and len(loss) else None


def _chance(outcomes: Mapping) -> float | None:
    """1 / the number of classes of the recipe's data set (its test split), read through the first run."""
    from contrastlab.training import load_run

    for o in outcomes.values():
        classes = getattr(load_run(o.run_dir).dataset("test"), "num_classes", None)
        if classes:
            return 1.0 / classes
    return None


def collapse_verdicts(row: Mapping, chance: float) -> dict[str, tuple[bool, bool]]:
    """For each criterion, whether the encoder looks collapsed and whether it looks spread out.

    Args:
        row: ``uniformity``, ``effective_rank`` and ``knn5`` of the head (None where not measured).
        chance: the k-NN accuracy of guessing, 1 / classes.

    Returns:
        criterion -> (collapsed, spread); a criterion that was not measured is left out. Between the two
        thresholds an encoder is neither.

    Example:
        >>> collapse_verdicts({"uniformity": -0.01, "effective_rank": 1.2, "knn5": 0.5}, 0.1)
        {'uniformity': (True, False), 'effective_rank': (True, False), 'knn': (False, True)}
    """
    out = {}
    if row.get("uniformity") is not None:
        u = row["uniformity"]
        out["uniformity"] = (u >= COLLAPSED_UNIFORMITY, u <= SPREAD_UNIFORMITY)
    if row.get("effective_rank") is not None:
        r = row["effective_rank"]
        out["effective_rank"] = (r < COLLAPSED_RANK, r >= COLLAPSED_RANK)
    if row.get("knn5") is not None:
        k = row["knn5"]
        # (a tolerance for the products of floats: 3 x 0.1 is 0.30000000000000004)
        out["knn"] = (k <= chance + NEAR_CHANCE_MARGIN + 1e-9, k >= LEARNED_FACTOR * chance - 1e-9)
    return out


_CLAIMS = {
    "uniformity": ("uniformity of the head embeddings at least {c:g} (every pair nearly at one point)",
                   "uniformity of the head embeddings at most {s:g} (pairs spread apart)"),
    "effective_rank": ("effective rank of the head embeddings below {r:g} (of D = {d})",
                       "effective rank of the head embeddings at least {r:g} (of D = {d})"),
    "knn": ("5-NN accuracy on the head near chance (at most {near:.2f}; chance {chance:.2f})",
            "5-NN accuracy on the head far above chance (at least {learned:.2f}; chance {chance:.2f})"),
}


def _evidence(key: str, row: Mapping) -> str:
    value = {"uniformity": row.get("uniformity"), "effective_rank": row.get("effective_rank"),
             "knn": row.get("knn5")}[key]
    return f"{key.replace('_', ' ')} {value:.3f}"


def _checks(summary: Summary, outcomes: Mapping, rows: Mapping[str, dict], chance: float,
            collapse: Sequence[str], no_collapse: Sequence[str]) -> None:
    for expected, names in ((True, collapse), (False, no_collapse)):
        for name in names:
            if name not in rows:
                continue
            dim = outcomes[name].config["model"].get("dim")
            fill = dict(c=COLLAPSED_UNIFORMITY, s=SPREAD_UNIFORMITY, r=COLLAPSED_RANK, d=dim, chance=chance,
                        near=chance + NEAR_CHANCE_MARGIN, learned=LEARNED_FACTOR * chance)
            for key, (collapsed, spread) in collapse_verdicts(rows[name], chance).items():
                text = _CLAIMS[key][0 if expected else 1].format(**fill)
                verb = "collapses" if expected else "does not collapse"
                summary.checks.append(Check(f"{name} {verb}: {text}", collapsed if expected else spread,
                                            _evidence(key, rows[name])))


def _curves(outcomes: Mapping) -> dict[str, dict]:
    out = {}
    for name, o in outcomes.items():
        try:
            out[name] = read_metrics_csv(Path(o.run_dir) / "metrics.csv")
        except (OSError, ValueError):
            continue
    return out


def summarize(recipe, outcomes: dict, out_dir: Path, *, collapse: Sequence[str] = (),
              no_collapse: Sequence[str] = (), mechanism: Mapping[str, str] | None = None) -> Summary:
    """The geometry-and-accuracy table, the collapse checks and two figures.

    Args:
        recipe: the :class:`~contrastlab.recipes.spec.Recipe`.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`.
        out_dir: the recipe folder; figures are written there.
        collapse: runs the source predicts to collapse (each criterion is one check).
        no_collapse: runs predicted not to collapse.
        mechanism: run -> what keeps it from collapsing (a column of the table).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    mechanism = dict(mechanism or {})
    chance = _chance(outcomes) if outcomes else None
    rows, table = {}, []
    for name, o in outcomes.items():
        head, backbone = accuracy_row(o, "head"), accuracy_row(o, "backbone")
        rows[name] = head
        table.append([name, o.config["objective"]["name"], mechanism.get(name, ""), head["effective_rank"],
                      head["uniformity"], head["alignment"], head["knn5"], head["linear"], backbone["knn5"],
                      backbone["linear"], _last_loss(o.run_dir), o.train_seconds])
    first = next(iter(outcomes.values()), None)
    if first is not None:
        rand, raw = accuracy_row(first, "random_head"), accuracy_row(first, "raw")
        if rand["linear"] is not None:
            rand_b = accuracy_row(first, "random_backbone")
            table.append(["random init", "(baseline)", "", rand["effective_rank"], rand["uniformity"],
                          rand["alignment"], rand["knn5"], rand["linear"], rand_b["knn5"], rand_b["linear"], None,
                          None])
        if raw["linear"] is not None:
            table.append(["raw signals", "(baseline)", "", raw["effective_rank"], None, None, raw["knn5"],
                          raw["linear"], None, None, None, None])
    dim = first.config["model"].get("dim") if first is not None else None
    summary.tables.append(Table(
        "Collapse without negatives: held-out head embeddings (L2-normalised) and accuracy",
        ["run", "objective", "what prevents collapse", "effective rank (head)", "uniformity (head)",
         "alignment (head)", "5-NN (head)", "linear (head)", "5-NN (backbone)", "linear (backbone)",
         "last training loss", "train s"], table,
        note=f"Effective rank of the uncentred test embeddings (1: one direction; at most D = {dim}). Uniformity: "
             "log mean exp(-2 d^2) over pairs of test items (0: every embedding at one point; about -4 at best). "
             "Alignment: mean squared distance of held-out positive pairs (0..4). Accuracies on the test split; "
             + (f"chance {chance:.2f}." if chance else "chance unknown (the data set has no labels).")))

    curves = _curves(outcomes)
    columns = [c for c in ("align", "uniform") if any(c in v for v in curves.values())]
    if curves and columns:
        path = save_png(run_curves(curves, columns, title="Alignment and uniformity of the training batches"),
                        out_dir / "positives_only_curves.png")
        summary.figures["Training: alignment and uniformity of each batch's embeddings (collapse: both go to 0)"] = \
            str(path.relative_to(out_dir))
    complete = [n for n in outcomes if rows[n]["alignment"] is not None and rows[n]["uniformity"] is not None]
    if complete:
        points = merge_coincident({n: (rows[n]["alignment"], rows[n]["uniformity"], rows[n]["knn5"]) for n in complete})
        fig = alignment_uniformity_scatter(list(points), [p[0] for p in points.values()],
                                           [p[1] for p in points.values()], [p[2] for p in points.values()],
                                           title="Held-out geometry, coloured by head 5-NN")
        path = save_png(fig, out_dir / "positives_only_geometry.png")
        summary.figures["Each encoder at (uniformity, alignment) of its held-out head embeddings; collapsed "
                        "encoders sit at (0, 0)"] = str(path.relative_to(out_dir))

    if chance is not None:
        _checks(summary, outcomes, rows, chance, collapse, no_collapse)
    summary.findings.append(
        "Every run shares the data, encoder, head, views, optimiser and steps; only the objective (and the model "
        "parts it needs: a predictor, a momentum target) differs.")
    return summary
