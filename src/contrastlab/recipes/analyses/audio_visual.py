r"""Images and spoken captions (homework 6, multimodal question 1(c)): which negatives does a dual encoder need?

Harwath et al. (IJCV 2019) train an image tower and an audio tower with a triplet loss in both directions.
For a batch of pairs with cosine similarities :math:`S_{ij}` (image :math:`i`, caption :math:`j`),

.. math::
    \mathcal{L}_s = \sum_i \big[\eta - S_{ii} + S_{i\,\bar\jmath}\big]_+ + \big[\eta - S_{ii} + S_{\bar\imath\, i}\big]_+,
    \quad \bar\jmath, \bar\imath \text{ drawn uniformly among the other items,}

and :math:`\mathcal{L}_h` is the same with *semi-hard* impostors (the most similar impostor that is still less
similar than the positive). Random impostors are mostly easy: once they sit :math:`\eta` below the positive the
hinge is zero and :math:`\mathcal{L}_s` stops teaching, which is why :math:`\mathcal{L}_s + \mathcal{L}_h`
retrieves much better. With no negatives at all the loss reduces to :math:`\frac1N\sum_i\lVert z^v_i - z^a_i
\rVert^2`, minimised exactly by mapping every input to one point: loss and uniformity go to zero and retrieval
falls to chance.

The tables give recall@1/5/10 in both directions (chance :math:`K/N` for :math:`N` candidates) and the geometry
of the embeddings; the checks test the three predictions above.
"""

from __future__ import annotations

import math
from pathlib import Path

from contrastlab.plots._figure import save_png
from contrastlab.plots.compare import grouped_bars, run_curves
from contrastlab.plots.curves import read_metrics_csv
from contrastlab.recipes.analyses._metrics import encoder, get
from contrastlab.recipes.summary import Check, Summary, Table

KS = (1, 5, 10)
#: run names of the recipe -> their role in the checks
SAMPLED, SEMI_HARD, INFONCE, POSITIVES = "L_s", "L_s+L_h", "infonce", "positives_only"


def retrieval(outcome) -> dict[str, dict]:
    """Direction ("image->audio", "audio->image") -> recall@K, median rank and candidates, from the head."""
    return encoder(outcome, "head").get("retrieval") or {}


def mean_recall(outcome, k: int) -> float | None:
    """Recall@k averaged over both directions (``None`` when the run measured no retrieval)."""
    values = [get(d, f"R@{k}") for d in retrieval(outcome).values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def chance_band(k: int, n: int, *, sigmas: float = 3.0) -> float:
    r"""The largest recall@k a random ranking of :math:`n` candidates reaches except by rare luck.

    Recall@k of a random ranking is a mean of :math:`n` Bernoulli(:math:`p = k/n`) indicators, so its
    standard error is :math:`\sqrt{p(1-p)/n}`; the band is :math:`p + 3\sigma`.

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
        rows.append(row)
    if n:
        rows.append(["chance", "", ""] + [v for _ in directions for v in [*(min(1.0, k / n) for k in KS), (n + 1) / 2]])
    columns = ["run", "objective", "sampler"] + [f"{d} {m}" for d in directions
                                                 for m in (*(f"R@{k}" for k in KS), "median rank")]
    summary.tables.append(Table(
        f"Cross-modal retrieval on {n or '?'} held-out pairs (head embeddings, cosine similarity)", columns, rows,
        note="Recall@K: the share of queries whose own pair ranks in the top K (ties counted as random order). "
             "Chance is K/N."))

    geo_rows = []
    for name, o in outcomes.items():
        first, last = _loss_ends(curves.get(name, {}))
        g = get(encoder(o, "head"), "geometry", default={}) or {}
        align = get(g, "alignment")
        geo_rows.append([name, first, last, align, None if align is None else 1.0 - align / 2.0,
                         get(g, "uniformity"), get(g, "effective_rank"), o.train_seconds])
    summary.tables.append(Table(
        "Training loss and the geometry of the held-out embeddings",
        ["run", "first logged loss", "last logged loss", "alignment", "positive cosine", "uniformity",
         "effective rank", "train s"], geo_rows,
        note="Alignment: mean squared distance between an image and its caption on the unit sphere (0..4); "
             "positive cosine = 1 - alignment/2. Uniformity: log mean exp(-2 d^2) over all pairs of one tower "
             "(0 when every embedding is the same point; about -4 at best in high dimension)."))

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
        summary.figures["Recall@K per run, averaged over image→audio and audio→image"] = str(path.relative_to(out_dir))

    _checks(summary, outcomes, curves, n, sigmas)
    summary.findings.append(
        "Why L_s is not enough: a random impostor is usually an easy one, so after a few hundred steps most "
        "sampled triplets already satisfy the margin, their hinge is zero and they contribute no gradient; "
        "semi-hard impostors keep supplying violated triplets, so L_s + L_h keeps learning.")
    summary.findings.append(
        "Without negatives nothing stops the towers from mapping every image and every caption to the same "
        "point: that is a global minimum of the positives-only loss (homework 6, 1c).")
    return summary


def _checks(summary: Summary, outcomes: dict, curves: dict, n: int | None, sigmas: float) -> None:
    if SAMPLED in outcomes and SEMI_HARD in outcomes:
        a, b = mean_recall(outcomes[SAMPLED], 1), mean_recall(outcomes[SEMI_HARD], 1)
        if a is not None and b is not None:
            summary.checks.append(Check("L_s + L_h (semi-hard impostors) retrieves at least as well as L_s alone",
                                        b >= a, f"mean R@1 {b:.3f} vs {a:.3f}"))
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
        summary.checks.append(Check("positives only: the training loss goes to zero", last < 0.01 and last < 0.1 * first,
                                    f"first logged {first:.4f}, last {last:.2g}"))
    u = get(encoder(o, "head"), "geometry", "uniformity")
    if u is not None:
        others = [get(encoder(outcomes[k], "head"), "geometry", "uniformity") for k in outcomes if k != POSITIVES]
        others = [v for v in others if v is not None]
        summary.checks.append(Check(
            "positives only: uniformity goes to zero (every embedding at one point)", u > -0.1,
            f"uniformity {u:.3f}" + (f"; runs with negatives {min(others):.2f} to {max(others):.2f}" if others else "")))
    if n:
        worst = max(((k, d, get(v, f"R@{k}")) for d, v in retrieval(o).items() for k in KS
                     if get(v, f"R@{k}") is not None), key=lambda t: t[2] - min(1.0, t[0] / n), default=None)
        if worst is not None:
            k, d, value = worst
            band = chance_band(k, n, sigmas=sigmas)
            summary.checks.append(Check("positives only: retrieval is at chance", all(
                get(v, f"R@{kk}") <= chance_band(kk, n, sigmas=sigmas) for v in retrieval(o).values() for kk in KS
                if get(v, f"R@{kk}") is not None),
                f"largest excess: {d} R@{k} {value:.3f}, chance {min(1.0, k / n):.3f} (band up to {band:.3f})"))
