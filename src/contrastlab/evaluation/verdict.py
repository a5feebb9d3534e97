r"""The verdict of an evaluation in plain words: what the encoder learned, and whether it beats its baselines.

A metrics tree (what ``contrastlab eval`` writes as ``metrics.json``) holds dozens of numbers; a reader first
wants three answers: *is the trained encoder any good* (does it beat the raw inputs and a randomly initialised
copy on the same measure), *what did it learn* (the invariance report), and *can I trust these numbers* (a
collapsed encoder, a task the raw inputs already solve). :func:`verdict` writes them:

* ``headline`` — the best trained row by linear-probe test accuracy (else k-NN accuracy, else cross-modal
  recall@1 for unlabelled paired data, else the geometry alone), its margin over the best baseline, and the
  invariance summary;
* ``warnings`` — one sentence with numbers each: a trained row that does not beat its best baseline by more
  than the noise of the test set, a collapsed row, a probe at 1.000 for every row, baselines included;
* ``notes`` — every measure or section that was skipped, with its reason.

The tree is read defensively: missing sections, old files and non-numbers are passed over, never raised on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: The smallest margin a trained row must have over its best baseline to count as beating it.
TOLERANCE = 0.01
#: Uniformity (t = 2, on the unit sphere) above this: the features sit on (nearly) one point.
COLLAPSED_UNIFORMITY = -0.1
#: An accuracy at least this high counts as perfect (a probe at 1.000).
PERFECT = 0.999

#: The label measures that rank the rows, best first: (section, key, words).
LABEL_MEASURES: tuple[tuple[str, str, str], ...] = (
    ("classification", "probe_test_accuracy", "linear-probe test accuracy"),
    ("classification", "knn200_accuracy", "200-NN accuracy"),
    ("classification", "knn5_accuracy", "5-NN accuracy"),
)
RETRIEVAL_MEASURE = "cross-modal recall@1"

_WORDS = {"raw": "raw inputs"}


def _num(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` for anything else (text, NaN, booleans, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _map(value: object) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def _encoders(metrics: Mapping) -> dict[str, Mapping]:
    return {str(k): v for k, v in _map(metrics.get("encoders")).items() if isinstance(v, Mapping)}


def _and(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def display_name(row: str) -> str:
    """A row name in words: ``random_head:image`` → ``random head (image tower)``.

    Args:
        row: a row of ``metrics["encoders"]`` or ``metrics["cross_modal"]``.

    Returns:
        The name to use in sentences.

    Example:
        >>> display_name("random_head:image"), display_name("raw"), display_name("backbone")
        ('random head (image tower)', 'raw inputs', 'backbone')
    """
    base, _, tower = str(row).partition(":")
    words = _WORDS.get(base, base.replace("_", " "))
    return f"{words} ({tower} tower)" if tower else words


def _kind(metrics: Mapping, row: str) -> str | None:
    """``trained`` / ``baseline`` for an encoder row, or a cross-modal row (its own ``kind``, else its towers')."""
    encoders = _encoders(metrics)
    if row in encoders:
        return encoders[row].get("kind")
    own = _map(_map(metrics.get("cross_modal")).get(row)).get("kind")
    if isinstance(own, str):
        return own
    kinds = {enc.get("kind") for name, enc in encoders.items() if name.partition(":")[0] == row}
    return kinds.pop() if len(kinds) == 1 else None


def _tower(metrics: Mapping, row: str) -> str | None:
    tower = _encoders(metrics).get(row, {}).get("tower")
    return tower if isinstance(tower, str) else None


def _test_items(metrics: Mapping) -> int | None:
    n = _map(metrics.get("items")).get("test")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def _label_scores(metrics: Mapping) -> tuple[str, dict[str, float]] | None:
    """The first label measure any trained row has: ``(words, row → value)`` over every row that has it."""
    encoders = _encoders(metrics)
    for section, key, words in LABEL_MEASURES:
        scores = {row: v for row, enc in encoders.items() if (v := _num(_map(enc.get(section)).get(key))) is not None}
        if any(encoders[row].get("kind") == "trained" for row in scores):
            return words, scores
    return None


def _retrieval(metrics: Mapping) -> dict[str, dict[str, Any]]:
    """Row → ``{"value": mean recall@1 over directions, "directions": {dir: recall@1}, "candidates": n}``.

    Read from ``cross_modal`` (and, in files written before it, from the encoder rows' own ``retrieval``).
    """
    sources = dict(_map(metrics.get("cross_modal")))
    for row, enc in _encoders(metrics).items():
        if isinstance(enc.get("retrieval"), Mapping):
            sources.setdefault(row, {"retrieval": enc["retrieval"]})
    out: dict[str, dict[str, Any]] = {}
    for row, entry in sources.items():
        directions, candidates = {}, []
        for direction, values in _map(_map(entry).get("retrieval")).items():
            r1 = _num(_map(values).get("R@1"))
            if r1 is not None:
                directions[str(direction)] = r1
                if (n := _num(_map(values).get("candidates"))) is not None:
                    candidates.append(int(n))
        if directions:
            out[str(row)] = {"value": sum(directions.values()) / len(directions), "directions": directions,
                             "candidates": min(candidates) if candidates else None}
    return out


def _tolerance(baseline: float, n: int | None) -> float:
    """The margin below which two scores on ``n`` items are not told apart: the binomial standard error, ≥ 0.01."""
    if n is None:
        return TOLERANCE
    p = min(max(baseline, 0.0), 1.0)
    return max(TOLERANCE, math.sqrt(p * (1 - p) / n))


def _gaps(metrics: Mapping, measure: str, scores: Mapping[str, float], n: int | None) -> list[dict[str, Any]]:
    """Each trained row against the best baseline of its tower (or every baseline, without towers) and of its
    stage: the randomly initialised head is the head's baseline, not the backbone's (raw inputs, which have no
    stage, are every row's)."""
    out = []

    def stage(row: str):
        return _map(_encoders(metrics).get(row)).get("stage")

    for row, value in scores.items():
        if _kind(metrics, row) != "trained":
            continue
        tower = _tower(metrics, row)
        rivals = {b: v for b, v in scores.items() if _kind(metrics, b) == "baseline"
                  and (tower is None or _tower(metrics, b) in (None, tower))
                  and stage(b) in (None, stage(row))}
        if not rivals:
            continue
        best = max(rivals, key=rivals.get)
        tol = _tolerance(rivals[best], n)
        margin = value - rivals[best]
        out.append({"row": row, "measure": measure, "value": value, "baseline": best,
                    "baseline_value": rivals[best], "margin": margin, "tolerance": tol, "beats": margin > tol})
    return out


def _trivial_towers(metrics: Mapping, scores: Mapping[str, float]) -> list[str | None]:
    """The towers (``None``: rows without one) where every row, a baseline among them, scores perfectly."""
    groups: dict[str | None, list[str]] = {}
    for row in scores:
        groups.setdefault(_tower(metrics, row), []).append(row)
    return [tower for tower, rows in groups.items()
            if all(scores[r] >= PERFECT for r in rows) and any(_kind(metrics, r) == "baseline" for r in rows)]


def baseline_gaps(metrics: Mapping) -> list[dict[str, Any]]:
    """How far each trained row is above its best baseline, on the ranking label measure and on retrieval.

    A trained row is compared with the baselines of its own tower and stage (baselines without a tower or a
    stage count for every row). It *beats* them when its margin exceeds the tolerance: the binomial standard error of the baseline's
    score on the test items (the retrieval candidates), and at least :data:`TOLERANCE`.

    Args:
        metrics: an evaluation (``metrics.json``).

    Returns:
        One dict per (trained row, measure): ``row``, ``measure`` (words), ``value``, ``baseline`` (row),
        ``baseline_value``, ``margin``, ``tolerance``, ``beats``.

    Example:
        >>> m = {"items": {"test": 100}, "encoders": {
        ...     "head": {"kind": "trained", "classification": {"probe_test_accuracy": 0.30}},
        ...     "raw": {"kind": "baseline", "classification": {"probe_test_accuracy": 0.35}}}}
        >>> [(g["row"], g["baseline"], round(g["margin"], 2), g["beats"]) for g in baseline_gaps(m)]
        [('head', 'raw', -0.05, False)]
    """
    out = []
    labelled = _label_scores(metrics)
    if labelled is not None:
        words, scores = labelled
        trivial = _trivial_towers(metrics, scores)
        out += [g for g in _gaps(metrics, words, scores, _test_items(metrics)) if _tower(metrics, g["row"]) not in trivial]
    retrieval = _retrieval(metrics)
    if retrieval:
        ns = [r["candidates"] for r in retrieval.values() if r["candidates"] is not None]
        out += _gaps(metrics, RETRIEVAL_MEASURE, {row: r["value"] for row, r in retrieval.items()},
                     min(ns) if ns else None)
    return out


def collapsed_rows(metrics: Mapping) -> dict[str, str]:
    """The rows whose features collapsed, each with the numbers that say so.

    A row is collapsed when its uniformity (t = 2, unit sphere) is above :data:`COLLAPSED_UNIFORMITY` — the
    features sit near one point — or its effective rank is at most 1.5, or at most 2 % of a width of 16 or more
    (and at most 2 dimensions' worth anyway). Its alignment is then near zero for the wrong reason.

    Args:
        metrics: an evaluation (``metrics.json``).

    Returns:
        Row → the evidence, e.g. ``"effective rank 1.2 of 128 dimensions, uniformity -0.003"``.

    Example:
        >>> collapsed_rows({"encoders": {
        ...     "head": {"dim": 128, "geometry": {"effective_rank": 40.0, "uniformity": -3.5}},
        ...     "random_head": {"dim": 128, "geometry": {"effective_rank": 1.2, "uniformity": -0.003}}}})
        {'random_head': 'effective rank 1.2 of 128 dimensions, uniformity -0.003'}
    """
    out = {}
    for row, enc in _encoders(metrics).items():
        geometry = _map(enc.get("geometry"))
        rank, uniform, dim = (_num(geometry.get("effective_rank")), _num(geometry.get("uniformity")),
                              _num(enc.get("dim")))
        low_rank = rank is not None and (rank <= 1.5 or (dim is not None and dim >= 16 and rank <= max(2.0, 0.02 * dim)))
        flat = uniform is not None and uniform > COLLAPSED_UNIFORMITY
        if low_rank or flat:
            evidence = [] if rank is None else [f"effective rank {rank:.1f}" + (f" of {int(dim)} dimensions" if dim else "")]
            evidence += [] if uniform is None else [f"uniformity {uniform:.3f}"]
            out[row] = ", ".join(evidence)
    return out


def _invariance_summary(enc: Mapping) -> str | None:
    """"invariant to colour; sensitive to shape and size; colour still linearly decodable (accuracy 0.90 vs chance 0.20)"."""
    groups: dict[str, list[str]] = {}
    for factor, report in _map(enc.get("invariance")).items():
        label = _map(report).get("label")
        if label in ("invariant", "partial", "sensitive"):
            groups.setdefault(label, []).append(str(factor))
    if not groups:
        return None
    parts = [f"{words} {_and(groups[label])}" for label, words in
             (("invariant", "invariant to"), ("partial", "partly invariant to"), ("sensitive", "sensitive to"))
             if label in groups]
    decodability = _map(enc.get("decodability"))
    for factor in groups.get("invariant", []) + groups.get("partial", []):
        entry = _map(decodability.get(factor))
        score, chance = _num(entry.get("score")), _num(entry.get("chance"))
        if score is None or chance is None:
            continue
        what = "R²" if entry.get("kind") == "r2" else "accuracy"
        gain = (score - chance) / (1 - chance) if chance < 1 else 0.0
        how = ("still linearly decodable" if gain >= 0.5 else "partly linearly decodable" if gain >= 0.2
               else "not linearly decodable either")
        parts.append(f"{factor} {how} ({what} {score:.2f} vs chance {chance:.2f})")
    return "; ".join(parts)


def _skipped_notes(metrics: Mapping) -> list[str]:
    reasons: dict[str, list[str]] = {}
    for name, reason in _map(metrics.get("skipped")).items():
        reasons.setdefault(str(reason), []).append(str(name).replace("_", " "))
    return [f"Skipped {_and(names)}: {reason}." if not reason.endswith(".") else f"Skipped {_and(names)}: {reason}"
            for reason, names in reasons.items()]


def _trivial_warning(metrics: Mapping, words: str, scores: Mapping[str, float], tower: str | None) -> str:
    whose = "every row" if tower is None else f"every row of the {tower} tower"
    score = min(v for r, v in scores.items() if _tower(metrics, r) == tower)
    return (f"The {words} is {score:.3f} for {whose}, baselines included: the task may be trivial from the inputs, "
            "so this score says nothing about what training added.")


def _gap_warning(gap: Mapping[str, Any]) -> str:
    """A trained row that does not clearly beat its best baseline, in one sentence with the numbers."""
    row, rival = display_name(gap["row"]), display_name(gap["baseline"])
    if gap["margin"] > 0:
        return (f"The trained {row} is only {gap['margin']:.3f} above the {rival} on {gap['measure']} "
                f"({gap['value']:.3f} against {gap['baseline_value']:.3f}), within the noise of "
                f"±{gap['tolerance']:.3f}: it does not clearly beat this baseline.")
    return (f"The trained {row} does not beat the {rival} on {gap['measure']}: {gap['value']:.3f} against "
            f"{gap['baseline_value']:.3f}, {_below(gap['margin'])} it.")


def _collapse_warning(row: str, evidence: str, enc: Mapping) -> str:
    who = f"The trained {display_name(row)}" if enc.get("kind") == "trained" else f"The {display_name(row)}"
    alignment = _num(_map(enc.get("geometry")).get("alignment"))
    meaning = (f", so its near-zero alignment ({alignment:.4f}) means nothing" if alignment is not None
               else ", so its distances mean little")
    return f"{who} looks collapsed ({evidence}): its features sit near one point{meaning}."


def _below(margin: float) -> str:
    """"0.049 below" for a negative margin, "no higher than" for a tie at the printed precision."""
    return "no higher than" if -margin < 0.0005 else f"{-margin:.3f} below"


def _score_sentence(gap: Mapping | None, row: str, value: float, measure: str, where: str) -> str:
    """The headline's first sentence: is the best trained row any good?"""
    name = display_name(row)
    if gap is None:
        return f"The trained {name} reaches {measure} {value:.3f} {where}; no baseline was evaluated to compare it with."
    rival = f"{display_name(gap['baseline'])}, {gap['baseline_value']:.3f}"
    if gap["beats"]:
        return (f"Yes: the trained {name} beats its baselines, {measure} {value:.3f} {where}, "
                f"{gap['margin']:.3f} above the best baseline ({rival}).")
    if gap["margin"] > 0:
        return (f"Not clearly: the trained {name} is only {gap['margin']:.3f} above the best baseline ({rival}) "
                f"on {measure} ({value:.3f} {where}), within the noise of ±{gap['tolerance']:.3f}.")
    return (f"No: the best trained row, the {name}, does not beat its baselines: {measure} {value:.3f} {where}, "
            f"{_below(gap['margin'])} the best baseline ({rival}).")


def _retrieval_sentence(row: str, entry: Mapping) -> str:
    each = ", ".join(f"{d} {v:.3f}" for d, v in entry["directions"].items())
    n = entry["candidates"]
    among = f" among {n} candidates (chance {1 / n:.3f})" if n else ""
    return f"Cross-modal retrieval with the {display_name(row)}: recall@1 {entry['value']:.3f} ({each}){among}."


def _geometry_sentence(metrics: Mapping, trained: Sequence[str]) -> str:
    encoders = _encoders(metrics)
    described = []
    for row in trained[:3]:
        geometry = _map(encoders[row].get("geometry"))
        numbers = [f"{words} {v:.2f}" for key, words in (("alignment", "alignment"), ("uniformity", "uniformity"))
                   if (v := _num(geometry.get(key))) is not None]
        rank, dim = _num(geometry.get("effective_rank")), _num(encoders[row].get("dim"))
        if rank is not None:
            numbers.append(f"effective rank {rank:.1f}" + (f" of {int(dim)}" if dim else ""))
        if numbers:
            described.append(f"{display_name(row)}: {', '.join(numbers)}")
    if not described:
        return "Nothing to score: no labels, no second tower to retrieve across and no positive pairs were measured."
    return ("No labels and no second tower to score against, so only the geometry speaks (trained "
            + "; ".join(described) + ").")


def verdict(metrics: Mapping) -> dict[str, Any]:
    """The evaluation's answer in words: a headline, warnings with numbers, and a note per skipped section.

    The best trained row is the one with the highest linear-probe test accuracy (else 200-NN, else 5-NN
    accuracy; else, for unlabelled paired data, the mean cross-modal recall@1; else no row is ranked and the
    geometry is described). Rows of a tower where every row, baselines included, scores perfectly are ranked
    last: their score says nothing about training.

    Args:
        metrics: an evaluation, as ``contrastlab eval`` writes ``metrics.json`` (older files too).

    Returns:
        ``{"headline": str, "best": row or None, "warnings": [str], "notes": [str]}``, ready for JSON.

    Example:
        >>> m = {"items": {"test": 800}, "encoders": {
        ...     "head": {"kind": "trained", "dim": 128, "classification": {"probe_test_accuracy": 0.55},
        ...              "geometry": {"effective_rank": 90.0, "uniformity": -3.8, "alignment": 0.4},
        ...              "invariance": {"colour": {"label": "invariant"}, "shape": {"label": "sensitive"}},
        ...              "decodability": {"colour": {"kind": "accuracy", "score": 0.9, "chance": 0.2}}},
        ...     "random_head": {"kind": "baseline", "dim": 128, "classification": {"probe_test_accuracy": 0.35},
        ...                     "geometry": {"effective_rank": 3.0, "uniformity": -0.003, "alignment": 0.0004}}},
        ...     "skipped": {"retrieval": "one tower only"}}
        >>> v = verdict(m)
        >>> v["best"]
        'head'
        >>> print(v["headline"])  # doctest: +NORMALIZE_WHITESPACE
        Yes: the trained head beats its baselines, linear-probe test accuracy 0.550 on 800 test items, 0.200 above
        the best baseline (random head, 0.350). It is invariant to colour; sensitive to shape; colour still
        linearly decodable (accuracy 0.90 vs chance 0.20).
        >>> print(v["warnings"][0])  # doctest: +NORMALIZE_WHITESPACE
        The random head looks collapsed (effective rank 3.0 of 128 dimensions, uniformity -0.003): its features
        sit near one point, so its near-zero alignment (0.0004) means nothing.
        >>> v["notes"]
        ['Skipped retrieval: one tower only.']
    """
    encoders = _encoders(metrics)
    trained = [row for row, enc in encoders.items() if enc.get("kind") == "trained"]
    baselines = [row for row, enc in encoders.items() if enc.get("kind") == "baseline"]
    gaps = baseline_gaps(metrics)
    warnings: list[str] = []
    headline: list[str] = []
    best: str | None = None
    n = _test_items(metrics)
    where = f"on {n} test items" if n else "on the test items"

    labelled = _label_scores(metrics)
    retrieval = _retrieval(metrics)
    if labelled is not None:
        words, scores = labelled
        trivial = _trivial_towers(metrics, scores)
        warnings += [_trivial_warning(metrics, words, scores, tower) for tower in trivial]
        ranked = [r for r in scores if r in trained and _tower(metrics, r) not in trivial] or \
                 [r for r in scores if r in trained]
        best = max(ranked, key=lambda r: scores[r])
        gap = next((g for g in gaps if g["row"] == best and g["measure"] == words), None)
        headline.append(_score_sentence(gap, best, scores[best], words, where))
    elif any(_kind(metrics, r) == "trained" for r in retrieval):
        scores = {r: e["value"] for r, e in retrieval.items() if _kind(metrics, r) == "trained"}
        best = max(scores, key=scores.get)
        entry = retrieval[best]
        among = f"among {entry['candidates']} candidates" if entry["candidates"] else "on the test items"
        gap = next((g for g in gaps if g["row"] == best and g["measure"] == RETRIEVAL_MEASURE), None)
        headline.append(_score_sentence(gap, best, entry["value"], f"{RETRIEVAL_MEASURE} (mean of both directions)",
                                        among))
    elif trained:
        headline.append(_geometry_sentence(metrics, trained))
    else:
        headline.append("No trained encoder was evaluated: only baselines were measured.")

    described = best if best in encoders else next((r for r in trained if r.partition(":")[0] == best), None)
    with_invariance = [described] if described and encoders[described].get("invariance") else []
    with_invariance += [r for r in trained if r not in with_invariance and encoders[r].get("invariance")]
    if with_invariance and (summary := _invariance_summary(encoders[with_invariance[0]])):
        row = with_invariance[0]
        subject = "It is" if row == best else f"The trained {display_name(row)} is"
        headline.append(f"{subject} {summary}.")
    shown = {r: e for r, e in retrieval.items() if _kind(metrics, r) == "trained"}
    if labelled is not None and shown:
        top = max(shown, key=lambda r: shown[r]["value"])
        headline.append(_retrieval_sentence(top, shown[top]))

    warnings += [_gap_warning(gap) for gap in gaps if not gap["beats"]]
    warnings += [_collapse_warning(row, evidence, encoders[row]) for row, evidence in collapsed_rows(metrics).items()]

    notes = _skipped_notes(metrics)
    if trained and not baselines and "baselines" not in _map(metrics.get("skipped")):
        notes.append("No baseline was evaluated: nothing says whether these features beat raw inputs or a "
                     "randomly initialised encoder.")
    return {"headline": " ".join(headline), "best": best, "warnings": warnings, "notes": notes}
