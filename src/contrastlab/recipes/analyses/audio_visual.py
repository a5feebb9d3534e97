r"""Images and spoken captions (homework 6, multimodal question 1(c)): which negatives does a dual encoder need?

Harwath et al. (IJCV 2019) train an image tower and an audio tower with a triplet loss in both directions.
For a batch of pairs with cosine similarities :math:`S_{ij}` (image :math:`i`, caption :math:`j`),

.. math::
    \mathcal{L}_s = \frac1N \sum_i \Big(\big[\eta - S_{ii} + S_{i\,\bar\jmath}\big]_+
        + \big[\eta - S_{ii} + S_{\bar\imath\, i}\big]_+\Big),
    \quad \bar\jmath, \bar\imath \text{ drawn uniformly among the other items,}

and :math:`\mathcal{L}_h` is the same with *semi-hard* impostors (the most similar impostor that is still less
similar than the positive). Random impostors are mostly easy: once they sit :math:`\eta` below the positive the
hinge is zero and :math:`\mathcal{L}_s` stops teaching, which is why Harwath et al. find
:math:`\mathcal{L}_s + \mathcal{L}_h` retrieves much better. With no negatives at all the loss reduces to
:math:`\frac1N\sum_i\lVert z^v_i - z^a_i \rVert^2`, minimised exactly by mapping every input to one point: loss
and uniformity go to zero and retrieval falls to chance.

The tables give recall@1/5/10 in both directions (chance :math:`K/N` for :math:`N` candidates) and the geometry
of the embeddings; the checks test the predictions above.

References:
    Harwath, Recasens, Surís, Chuang, Torralba & Glass, "Jointly Discovering Visual Objects and Spoken Words
    from Raw Sensory Input", IJCV 2019 (L_s, L_h, recall@K both ways).
    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere", ICML 2020 (the uniformity that exposes the collapse).
"""

from __future__ import annotations

import math
from pathlib import Path

from contrastlab.plots._figure import save_png
from contrastlab.plots.compare import grouped_bars, run_curves
from contrastlab.plots.curves import read_metrics_csv
from contrastlab.recipes.analyses._metrics import across_towers, get
from contrastlab.recipes.summary import Check, Summary, Table

KS = (1, 5, 10)
#: run names of the recipe -> their role in the checks
SAMPLED, SEMI_HARD, INFONCE, POSITIVES = "L_s", "L_s+L_h", "infonce", "positives_only"


def retrieval(outcome) -> dict[str, dict]:
    """The retrieval a run's evaluation measured between its towers, after the head.

    Args:
        outcome: a :class:`~contrastlab.recipes.runner.RunOutcome`.

    Returns:
        Direction (``"image->audio"``, ``"audio->image"``) -> ``{"R@1", "R@5", "R@10", "median_rank",
        "candidates", ...}``; empty when nothing was measured.

    Example:
        >>> from types import SimpleNamespace
        >>> run = SimpleNamespace(metrics={"encoders": {"head": {"retrieval": {"a->b": {"R@1": 0.5}}}}})
        >>> retrieval(run)["a->b"]["R@1"]
        0.5
    """
    return across_towers(outcome, "head")["retrieval"]


def mean_recall(outcome, k: int) -> float | None:
    """Recall@k averaged over both directions.

    Args:
        outcome: a :class:`~contrastlab.recipes.runner.RunOutcome`.
        k: the cut-off K.

    Returns:
        The mean, or ``None`` when the run measured no retrieval.

    Example:
        >>> from types import SimpleNamespace
        >>> ret = {"a->b": {"R@1": 0.2}, "b->a": {"R@1": 0.4}}
        >>> round(mean_recall(SimpleNamespace(metrics={"encoders": {"head": {"retrieval": ret}}}), 1), 3)
        0.3
    """
    values = [get(d, f"R@{k}") for d in retrieval(outcome).values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def chance_band(k: int, n: int, *, sigmas: float = 3.0) -> float:
    r"""The largest recall@k a random ranking of :math:`n` candidates reaches except by rare luck.

    Recall@k of a random ranking is a mean of :math:`n` Bernoulli(:math:`p = k/n`) indicators, so its
    standard error is :math:`\sqrt{p(1-p)/n}`; the band is :math:`p + s\,\sigma` with :math:`s` = ``sigmas``.

    Args:
        k: the cut-off K.
        n: the number of candidates.
        sigmas: how many standard errors above chance the band reaches.

    Returns:
        The top of the band.

    Example:
        >>> round(chance_band(1, 100), 4)
        0.0398
    """
    p = min(1.0, k / n)
    return p + sigmas * math.sqrt(p * (1.0 - p) / n)


def _curves(outcomes: dict) -> dict[str, dict]:
    out = {}
    for name, o in outcomes.items():
        path = Path(o.run_dir) / "metrics.csv"
        if path.is_file():
            try:
                out[name] = read_metrics_csv(path)
            except ValueError:
                continue
    return out


def _loss_ends(columns: dict) -> tuple[float | None, float | None]:
    loss = columns.get("loss")
    if loss is None or len(loss) == 0:
        return None, None
    return float(loss[0]), float(loss[-1])


def summarize(recipe, outcomes: dict, out_dir: Path, *, sigmas: float = 3.0) -> Summary:
    """Retrieval and geometry tables, training curves and recall figures, and the checks.

    Args:
        recipe: the :class:`~contrastlab.recipes.spec.Recipe`.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome` (runs named ``L_s``, ``L_s+L_h``,
            ``infonce``, ``positives_only`` take part in the checks).
        out_dir: the recipe folder; figures are written there.
        sigmas: the width of the chance band, in standard errors (see :func:`chance_band`).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    summary = Summary()
    curves = _curves(outcomes)
    directions = list(dict.fromkeys(d for o in outcomes.values() for d in retrieval(o)))
    n = next((int(get(d, "candidates")) for o in outcomes.values() for d in retrieval(o).values()
              if get(d, "candidates")), None)

    rows = []
    for name, o in outcomes.items():
        r = retrieval(o)
        row = [name, o.config["objective"]["name"], (o.config["objective"].get("options") or {}).get("sampler")]
        for d in directions:
            row += [get(r, d, f"R@{k}") for k in KS] + [get(r, d, "median_rank")]
        rows.append(row + [overall_recall(o)])
    if n:
        rows.append(["chance", "", ""] + [v for _ in directions for v in [*(min(1.0, k / n) for k in KS), (n + 1) / 2]]
                    + [sum(min(1.0, k / n) for k in KS) / len(KS)])
    columns = ["run", "objective", "sampler"] + [f"{d} {m}" for d in directions
                                                 for m in (*(f"R@{k}" for k in KS), "median rank")] + ["mean recall"]
    summary.tables.append(Table(
        f"Cross-modal retrieval on {n or '?'} held-out pairs (head embeddings, cosine similarity)", columns, rows,
        note="Recall@K: the share of queries whose own pair ranks in the top K (ties counted as random order). "
             "Chance is K/N. Mean recall: over K = 1, 5, 10 and both directions."))

    geo_rows = []
    for name, o in outcomes.items():
        first, last = _loss_ends(curves.get(name, {}))
        g = across_towers(o, "head")["geometry"]
        align = get(g, "alignment")
        geo_rows.append([name, first, last, align, None if align is None else 1.0 - align / 2.0,
                         get(g, "uniformity"), get(g, "effective_rank"), o.train_seconds])
    summary.tables.append(Table(
        "Training loss and the geometry of the held-out embeddings",
        ["run", "first logged loss", "last logged loss", "alignment", "positive cosine", "uniformity",
         "effective rank", "train s"], geo_rows,
        note="Alignment: mean squared distance between an image and its caption on the unit sphere (0..4); "
             "positive cosine = 1 - alignment/2. Uniformity: log mean exp(-2 d^2) over all pairs of one tower "
             "(0 when every embedding is the same point; about -4 at best in high dimension). The first run's training "
             "time includes synthesising the speech it did not find in the cache."))

    if curves:
        path = save_png(run_curves(curves, [c for c in ("loss", "align", "uniform")
                                            if any(c in v for v in curves.values())],
                                   title="Training: loss, alignment and uniformity of the batch embeddings",
                                   symlog=("loss",)), out_dir / "av_curves.png")
        summary.figures["Training curves of every run (positives only: loss and uniformity go to zero)"] = \
            str(path.relative_to(out_dir))
    if outcomes and n:
        series = {f"R@{k}": [mean_recall(o, k) for o in outcomes.values()] for k in KS}
        path = save_png(grouped_bars(list(outcomes), series, ylabel="recall (mean of both directions)",
                                     title=f"Retrieval among {n} held-out pairs", reference=1.0 / n,
                                     reference_label="chance R@1"), out_dir / "av_recall.png")
        caption = "Recall@K per run, averaged over image→audio and audio→image"
        summary.figures[caption] = str(path.relative_to(out_dir))

    _checks(summary, outcomes, curves, n, sigmas)
    summary.findings.append(
        "Why L_s is not enough: a random impostor is usually an easy one, so after a few hundred steps most "
        "sampled triplets already satisfy the margin, their hinge is zero and they contribute no gradient; "
        "semi-hard impostors keep supplying violated triplets, so L_s + L_h keeps learning.")
    summary.findings.append(
        "Without negatives nothing stops the towers from mapping every image and every caption to the same "
        "point: that is a global minimum of the positives-only loss (homework 6, 1c).")
    return summary


def overall_recall(outcome) -> float | None:
    """Recall averaged over K in (1, 5, 10) and both directions: one number per run, steadier than R@1 alone.

    Args:
        outcome: a :class:`~contrastlab.recipes.runner.RunOutcome`.

    Returns:
        The mean recall, or ``None`` when some recall is missing.
    """
    values = [mean_recall(outcome, k) for k in KS]
    return None if any(v is None for v in values) else sum(values) / len(values)


def _checks(summary: Summary, outcomes: dict, curves: dict, n: int | None, sigmas: float) -> None:
    if SAMPLED in outcomes and SEMI_HARD in outcomes:
        a, b = overall_recall(outcomes[SAMPLED]), overall_recall(outcomes[SEMI_HARD])
        if a is not None and b is not None:
            summary.checks.append(Check(
                "L_s + L_h (semi-hard impostors) retrieves at least as well as L_s alone (Harwath et al.)", b >= a,
                f"recall averaged over K = 1, 5, 10 and both directions {b:.3f} vs {a:.3f}; "
                f"R@1 {mean_recall(outcomes[SEMI_HARD], 1):.3f} vs {mean_recall(outcomes[SAMPLED], 1):.3f}"))
    if n:
        for name in (SAMPLED, SEMI_HARD, INFONCE):
            if name in outcomes and mean_recall(outcomes[name], 10) is not None:
                r10, band = mean_recall(outcomes[name], 10), chance_band(10, n, sigmas=sigmas)
                summary.checks.append(Check(f"{name} (with negatives) retrieves above chance", r10 > band,
                                            f"mean R@10 {r10:.3f}, chance band up to {band:.3f}"))
    if POSITIVES not in outcomes:
        return
    o = outcomes[POSITIVES]
    first, last = _loss_ends(curves.get(POSITIVES, {}))
    if first is not None:
        summary.checks.append(Check("positives only: the training loss goes to zero",
                                    last < 0.01 and last < 0.1 * first, f"first logged {first:.4f}, last {last:.2g}"))
    u = get(across_towers(o, "head")["geometry"], "uniformity")
    if u is not None:
        others = [get(across_towers(outcomes[k], "head")["geometry"], "uniformity") for k in outcomes if k != POSITIVES]
        others = [v for v in others if v is not None]
        spread = f"; runs with negatives {min(others):.2f} to {max(others):.2f}" if others else ""
        summary.checks.append(Check("positives only: uniformity goes to zero (every embedding at one point)",
                                    u > -0.1, f"uniformity {u:.3f}{spread}"))
    if n:
        excess = [(get(v, f"R@{k}") - chance_band(k, n, sigmas=sigmas), d, k, get(v, f"R@{k}"))
                  for d, v in retrieval(o).items() for k in KS if get(v, f"R@{k}") is not None]
        if excess:
            worst, d, k, value = max(excess)
            summary.checks.append(Check(
                "positives only: retrieval is at chance", worst <= 0,
                f"closest to or furthest above the chance band: {d} R@{k} {value:.3f}, chance {min(1.0, k / n):.3f}, "
                f"band up to {chance_band(k, n, sigmas=sigmas):.3f}"))
