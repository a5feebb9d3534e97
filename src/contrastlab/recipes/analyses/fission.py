r"""Modality-level fission (CMU MMML lecture 4.1): what the shared and private codes of each modality keep.

The data are Shapes images and captions that name only the shape. A fission model's head gives each modality
one code :math:`[s_m ; p_m]`; evaluation reads the shared and private parts as rows of their own
(``shared:image``, ``private:image``, ``shared:text``, ...). For each code the analysis reports

* the invariance score of each factor (0: changing only that factor leaves the code where it was; about 1:
  it moves as far as a different item) and how well a probe decodes colour and shape from it;
* the partial information decomposition of the two towers' codes about each factor (redundancy: what both
  modalities' codes say about it; unique: what only one says; synergy: what only the two together say),
  estimated on held-out items with each tower read by a linear probe of the factor, with the value pure noise
  gives at this size beside it.

What the lecture's factorisation predicts, checked here: the shared image code is invariant to colour and keeps
the shape; the private image code keeps colour; about the shape the two towers' shared codes are mostly
redundant; about colour only the image tower says anything (unique to the image).

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 (fission; information theory).
    Tsai et al., "Learning Factorized Multimodal Representations", ICLR 2019.
    Bertschinger, Rauh, Olbrich, Jost & Ay, "Quantifying Unique Information", Entropy 2014.
"""

from __future__ import annotations

from pathlib import Path

from contrastlab.recipes.analyses._metrics import encoder, get
from contrastlab.recipes.summary import Check, Summary, Table

_FACTORS = ("shape", "colour", "size", "location")


def _codes(outcome) -> list[tuple[str, str]]:
    """(label, row) of the codes a run has: fission's shared and private parts, else the head of each tower."""
    rows = list(get(outcome.metrics, "encoders", default={}) or {})
    wanted = [r for r in rows if r.split(":")[0] in ("shared", "private")] or [r for r in rows if r.startswith("head")]
    return [(r.replace(":", " "), r) for r in wanted]


def summarize(recipe, outcomes: dict, out_dir: Path) -> Summary:
    summary = Summary()
    columns = ["run", "code", "dim"] + [f"{f} score" for f in _FACTORS] + ["colour decoded", "shape decoded"]
    rows = []
    for name, o in outcomes.items():
        for label, row in _codes(o):
            m = encoder(o, row)
            rows.append([name, label, m.get("dim")] + [get(m, "invariance", f, "score") for f in _FACTORS]
                        + [get(m, "decodability", "colour", "score"), get(m, "decodability", "shape", "score")])
    first = next(iter(outcomes.values()))
    chance = {f: get(encoder(first, _codes(first)[0][1]), "decodability", f, "chance") for f in ("colour", "shape")}
    summary.tables.append(Table(
        "What each code keeps: invariance scores (0 invariant, ~1 as sensitive as a new item) and probe accuracy",
        columns, rows,
        note=f"Decoded: a linear probe's held-out accuracy (chance: colour {chance['colour'] or 0:.2f}, shape "
             f"{chance['shape'] or 0:.2f}). The invariance score counts any movement when only that factor changes; "
             "the probe asks whether the factor's value can be read off."))

    pid_rows = []
    for name, o in outcomes.items():
        for stage, entry in (get(o.metrics, "cross_modal", default={}) or {}).items():
            for target, p in (entry.get("pid") or {}).items():
                if isinstance(p, dict) and "redundancy" in p:
                    pid_rows.append([name, stage, target, p.get("mi_joint"), p.get("redundancy"), p.get("unique_1"),
                                     p.get("unique_2"), p.get("synergy"), p.get("noise_synergy")])
    if pid_rows:
        towers = get(first.metrics, "cross_modal", "head", "towers", default=["image", "text"])
        summary.tables.append(Table(
            f"Partial information decomposition of the two towers' codes about each factor (bits; 1 = {towers[0]}, "
            f"2 = {towers[1]}); head: the whole code [shared ; private], shared: its shared part",
            ["run", "code", "about", "I(Y; both)", "redundancy", "unique 1", "unique 2", "synergy", "synergy of noise"],
            pid_rows,
            note="Estimated on held-out items, each tower's code read by a linear probe of the factor fitted on the "
                 "training items (BROJA definition); 'synergy of noise' is what the same "
                 "estimate gives with the factor shuffled: the size of the estimation bias at this number of items. "
                 "The label is the shape."))

    def decoded(o, row: str, factor: str) -> tuple[float | None, float | None]:
        d = get(encoder(o, row), "decodability", factor, default={}) or {}
        return d.get("score"), d.get("chance")

    if "fission" in outcomes:
        f = outcomes["fission"]
        (sc, chance), (pc, _) = decoded(f, "shared:image", "colour"), decoded(f, "private:image", "colour")
        if sc is not None and chance is not None:
            summary.checks.append(Check("no linear probe finds colour in the shared image code (within 0.1 of chance)",
                                        sc < chance + 0.1, f"accuracy {sc:.2f}, chance {chance:.2f}"))
        if pc is not None and chance is not None:
            summary.checks.append(Check("the private image code keeps colour (accuracy above twice chance)",
                                        pc > 2 * chance, f"accuracy {pc:.2f}, chance {chance:.2f}"))
        shape, shape_chance = decoded(f, "shared:image", "shape")
        if shape is not None and shape_chance is not None:
            summary.checks.append(Check("the shared image code keeps the shape (accuracy above twice chance)",
                                        shape > 2 * shape_chance, f"accuracy {shape:.2f}, chance {shape_chance:.2f}"))
        s_col = get(encoder(f, "shared:image"), "invariance", "colour", "score")
        p_col = get(encoder(f, "private:image"), "invariance", "colour", "score")
        if s_col is not None and p_col is not None:
            summary.checks.append(Check("changing only the colour moves the shared image code less than the private one",
                                        s_col < p_col, f"colour score {s_col:.2f} (shared) vs {p_col:.2f} (private)"))
        label = get(f.metrics, "cross_modal", "shared", "pid", "label", default=None)
        if label:
            summary.checks.append(Check(
                "about the shape, what the image's shared code says is redundant with the caption's",
                label["redundancy"] > max(label["unique_1"], label["synergy"]),
                f"R {label['redundancy']:.2f}, U_image {label['unique_1']:.2f}, U_text {label['unique_2']:.2f}, "
                f"S {label['synergy']:.2f} bits"))
        colour = get(f.metrics, "cross_modal", "head", "pid", "colour", default=None)
        if colour:
            summary.checks.append(Check(
                "about colour, the whole image code holds information the caption's does not (unique to the image)",
                colour["unique_1"] > max(colour["redundancy"], colour["unique_2"], colour.get("noise_unique_1", 0.0)),
                f"U_image {colour['unique_1']:.2f} (noise {colour.get('noise_unique_1', float('nan')):.2f}), "
                f"R {colour['redundancy']:.2f}, U_text {colour['unique_2']:.2f} bits"))
        shared_colour = get(f.metrics, "cross_modal", "shared", "pid", "colour", "mi_joint")
        if colour and shared_colour is not None:
            summary.checks.append(Check(
                "the image's colour information is in its private code: the shared codes hold under a quarter of it",
                shared_colour < 0.25 * colour["mi_joint"],
                f"I(colour; shared codes) {shared_colour:.2f} bits, I(colour; whole codes) {colour['mi_joint']:.2f} bits"))
    if "fission" in outcomes and "without_overlap" in outcomes:
        a, chance = decoded(outcomes["fission"], "shared:image", "colour")
        b, _ = decoded(outcomes["without_overlap"], "shared:image", "colour")
        if a is not None and b is not None:
            summary.checks.append(Check("the no-overlap term leaves less colour in the shared image code",
                                        a <= b, f"colour accuracy {a:.2f} with L3, {b:.2f} without"))
    return summary
