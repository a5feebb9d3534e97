import copy
import json
from pathlib import Path

import pytest

from contrastlab.evaluation.verdict import baseline_gaps, collapsed_rows, display_name, verdict

OLD_FILE = Path(__file__).parents[1] / "report" / "data" / "eval_metrics.json"  # written before towers had rows


def row(kind, probe=None, *, dim=128, rank=60.0, uniformity=-3.5, alignment=0.4, tower=None, knn=None,
        invariance=None, decodability=None):
    out = {"kind": kind, "stage": None, "dim": dim, "tower": tower,
           "geometry": {"effective_rank": rank, "uniformity": uniformity, "alignment": alignment}}
    if probe is not None or knn is not None:
        out["classification"] = {k: v for k, v in (("probe_test_accuracy", probe), ("knn5_accuracy", knn)) if v is not None}
    if invariance:
        out["invariance"] = invariance
    if decodability:
        out["decodability"] = decodability
    return out


def metrics(encoders, *, test=800, **extra):
    return {"items": {"train": 1000, "test": test}, "skipped": {}, "encoders": encoders, **extra}


WINNING = metrics({
    "head": row("trained", 0.62, invariance={
        "colour": {"label": "invariant", "score": 0.05}, "shape": {"label": "sensitive", "score": 0.8},
        "location": {"label": "sensitive", "score": 0.9, "factors": ["x", "y"]},
        "size": {"label": "partial", "score": 0.4}},
        decodability={"colour": {"kind": "accuracy", "score": 0.9, "chance": 0.2},
                      "size": {"kind": "r2", "score": 0.05, "chance": 0.0}}),
    "backbone": row("trained", 0.70, dim=1024, rank=300.0),
    "raw": row("baseline", 0.30, dim=3072, rank=375.0, uniformity=None, alignment=None),
    "random_head": row("baseline", 0.35),
    "random_backbone": row("baseline", 0.40, dim=1024, rank=300.0),
})


def test_a_winning_encoder_gets_a_yes_with_its_margin_and_what_it_learned():
    v = verdict(WINNING)
    assert v["best"] == "backbone"
    assert v["headline"].startswith("Yes: the trained backbone beats its baselines, linear-probe test accuracy 0.700 "
                                    "on 800 test items, 0.300 above the best baseline (random backbone, 0.400).")
    # the invariance of the best row is not known; the head's is told, naming the head
    assert ("The trained head is invariant to colour; partly invariant to size; sensitive to shape and location; "
            "colour still linearly decodable (accuracy 0.90 vs chance 0.20); size not linearly decodable either "
            "(R² 0.05 vs chance 0.00).") in v["headline"]
    assert v["warnings"] == [] and v["notes"] == []
    json.dumps(v)  # JSON-ready


def test_a_losing_encoder_is_a_no_and_a_warning_with_numbers():
    m = copy.deepcopy(WINNING)
    m["encoders"]["head"]["classification"]["probe_test_accuracy"] = 0.30
    m["encoders"]["backbone"]["classification"]["probe_test_accuracy"] = 0.33
    v = verdict(m)
    assert v["best"] == "backbone"
    assert v["headline"].startswith("No: the best trained row, the backbone, does not beat its baselines: "
                                    "linear-probe test accuracy 0.330 on 800 test items, 0.070 below the best "
                                    "baseline (random backbone, 0.400).")
    assert ("The trained head does not beat the random backbone on linear-probe test accuracy: 0.300 against 0.400, "
            "0.100 below it.") in v["warnings"]
    assert sum("does not beat" in w for w in v["warnings"]) == 2


def test_a_margin_within_the_noise_of_the_test_set_is_not_a_win():
    m = copy.deepcopy(WINNING)
    del m["encoders"]["backbone"]
    m["encoders"]["head"]["classification"]["probe_test_accuracy"] = 0.42  # 0.02 above, se of 0.4 on 800 ≈ 0.017
    m["items"]["test"] = 200  # ... but on 200 items the standard error is 0.035
    gap = baseline_gaps(m)[0]
    assert gap["baseline"] == "random_backbone" and gap["tolerance"] == pytest.approx((0.4 * 0.6 / 200) ** 0.5)
    assert not gap["beats"]
    v = verdict(m)
    assert v["headline"].startswith("Not clearly: the trained head is only 0.020 above the best baseline")
    assert any("within the noise of ±0.035" in w for w in v["warnings"])
    m["items"]["test"] = 100_000  # many items: the 0.01 floor decides, and 0.02 beats it
    assert baseline_gaps(m)[0]["beats"] and verdict(m)["headline"].startswith("Yes")


def test_a_collapsed_row_is_named_and_its_alignment_discounted():
    m = copy.deepcopy(WINNING)
    m["encoders"]["random_head"]["geometry"].update(effective_rank=3.1, uniformity=-0.003, alignment=0.0004)
    m["encoders"]["head"]["geometry"].update(effective_rank=1.2)  # low rank alone, uniformity fine
    assert collapsed_rows(m) == {"random_head": "effective rank 3.1 of 128 dimensions, uniformity -0.003",
                                 "head": "effective rank 1.2 of 128 dimensions, uniformity -3.500"}
    warnings = verdict(m)["warnings"]
    assert ("The random head looks collapsed (effective rank 3.1 of 128 dimensions, uniformity -0.003): its features "
            "sit near one point, so its near-zero alignment (0.0004) means nothing.") in warnings
    assert any(w.startswith("The trained head looks collapsed") for w in warnings)
    # 2 % of a wide row: rank 9 of 512 is collapsed, rank 9 of 64 and anything of a 2-D row is not
    wide = {"encoders": {"a": row("trained", dim=512, rank=9.0), "b": row("trained", dim=64, rank=9.0),
                         "c": row("trained", dim=2, rank=1.9)}}
    assert list(collapsed_rows(wide)) == ["a"]


def test_a_probe_that_is_perfect_for_every_row_is_a_trivial_task_not_a_win():
    m = metrics({"head:image": row("trained", 0.55, tower="image"),
                 "head:caption": row("trained", 1.0, tower="caption"),
                 "raw:image": row("baseline", 0.30, tower="image"),
                 "random_head:image": row("baseline", 0.35, tower="image"),
                 "random_head:caption": row("baseline", 1.0, tower="caption")})
    v = verdict(m)
    assert v["best"] == "head:image"  # the caption tower's perfect score says nothing about training
    assert v["headline"].startswith("Yes: the trained head (image tower) beats its baselines")
    assert "(random head (image tower), 0.350)" in v["headline"]  # compared within its own tower
    assert v["warnings"] == ["The linear-probe test accuracy is 1.000 for every row of the caption tower, baselines "
                             "included: the task may be trivial from the inputs, so this score says nothing about "
                             "what training added."]
    flat = metrics({"head": row("trained", 1.0), "random_head": row("baseline", 1.0)})
    assert "for every row, baselines included" in verdict(flat)["warnings"][0]


def test_unlabelled_paired_data_is_judged_by_cross_modal_retrieval():
    def retrieval(r1):
        return {"image->caption": {"R@1": r1, "candidates": 500},
                "caption->image": {"R@1": r1 - 0.02, "candidates": 500}}

    m = metrics({"head:image": row("trained", tower="image"), "head:caption": row("trained", tower="caption"),
                 "random_head:image": row("baseline", tower="image"),
                 "random_head:caption": row("baseline", tower="caption")},
                cross_modal={"head": {"towers": ["image", "caption"], "retrieval": retrieval(0.42)},
                             "random_head": {"towers": ["image", "caption"], "retrieval": retrieval(0.03)}},
                skipped={"linear_probe": "the data set has no labels", "knn": "the data set has no labels",
                         "invariance": "the data has no generative factors to resample"})
    v = verdict(m)
    assert v["best"] == "head"
    assert v["headline"].startswith("Yes: the trained head beats its baselines, cross-modal recall@1 (mean of both "
                                    "directions) 0.410 among 500 candidates, 0.390 above the best baseline "
                                    "(random head, 0.020).")
    assert v["notes"] == ["Skipped linear probe and knn: the data set has no labels.",
                          "Skipped invariance: the data has no generative factors to resample."]
    m["cross_modal"]["random_head"]["retrieval"] = retrieval(0.45)
    v = verdict(m)
    assert v["headline"].startswith("No:") and any("on cross-modal recall@1" in w for w in v["warnings"])


def test_without_labels_or_towers_only_the_geometry_is_described():
    m = metrics({"head": row("trained", alignment=0.41, uniformity=-3.2, rank=40.0)},
                skipped={"linear_probe": "the data set has no labels"})
    v = verdict(m)
    assert v["best"] is None
    assert v["headline"] == ("No labels and no second tower to score against, so only the geometry speaks (trained "
                             "head: alignment 0.41, uniformity -3.20, effective rank 40.0 of 128).")
    assert "No baseline was evaluated" in v["notes"][-1]
    assert verdict({"encoders": {"raw": row("baseline", 0.3)}})["headline"].startswith("No trained encoder")


def test_an_old_file_gets_a_verdict():
    v = verdict(json.loads(OLD_FILE.read_text()))
    assert v["best"] == "head"
    assert v["headline"].startswith("Not clearly: the trained head is only 0.017 above the best baseline "
                                    "(raw inputs, 0.242)")
    assert "It is invariant to colour" in v["headline"]
    assert any("The random head looks collapsed (effective rank 2.1 of 16 dimensions" in w for w in v["warnings"])
    assert any("The trained backbone does not beat the raw inputs" in w and "no higher than it" in w
               for w in v["warnings"])


def test_junk_values_are_passed_over_not_raised_on():
    m = metrics({"head": {"kind": "trained", "dim": "wide", "classification": {"probe_test_accuracy": "0.9"},
                          "geometry": {"effective_rank": None, "uniformity": float("nan")}, "invariance": [1]},
                 "raw": "not a row", "random": {"kind": "baseline", "classification": 5}},
                items=None, cross_modal={"head": {"retrieval": {"a->b": {"R@1": True}}}}, skipped=[1])
    v = verdict(m)
    assert v["best"] is None and isinstance(v["headline"], str)
    json.dumps(v)


def test_display_names():
    assert display_name("random_backbone:audio") == "random backbone (audio tower)"
    assert display_name("features") == "features"


def test_a_trained_stage_is_judged_against_the_random_copy_of_the_same_stage():
    """The head's baselines are raw inputs and the random head, not the random backbone (backbone features
    usually probe better than head features, trained or not)."""
    m = {"items": {"test": 800}, "encoders": {
        "head": {"kind": "trained", "stage": "head", "classification": {"probe_test_accuracy": 0.40}},
        "backbone": {"kind": "trained", "stage": "backbone", "classification": {"probe_test_accuracy": 0.71}},
        "raw": {"kind": "baseline", "stage": None, "classification": {"probe_test_accuracy": 0.31}},
        "random_head": {"kind": "baseline", "stage": "head", "classification": {"probe_test_accuracy": 0.30}},
        "random_backbone": {"kind": "baseline", "stage": "backbone", "classification": {"probe_test_accuracy": 0.42}}}}
    gaps = {g["row"]: g for g in baseline_gaps(m)}
    assert gaps["head"]["baseline"] == "raw" and gaps["head"]["beats"]
    assert gaps["backbone"]["baseline"] == "random_backbone" and gaps["backbone"]["beats"]
    assert not verdict(m)["warnings"]
