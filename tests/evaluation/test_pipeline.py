import json

import pytest
import torch

from contrastlab.data.base import Batch
from contrastlab.evaluation.pipeline import EvalOptions, evaluate
from contrastlab.evaluation.selection import slice_batch

PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluate_writes_metrics_and_figures(simclr_run):
    out_dir = simclr_run.run_dir / "eval"
    metrics = evaluate(simclr_run, options=EvalOptions(invariance_items=60), out_dir=out_dir)
    saved = json.loads((out_dir / "metrics.json").read_text())  # strict JSON: no NaN
    assert saved["encoders"].keys() == metrics["encoders"].keys() == {
        "head", "backbone", "raw", "random_head", "random_backbone"}
    assert saved["items"] == {"train": 120, "test": 60}
    head = saved["encoders"]["head"]
    assert head["kind"] == "trained" and head["dim"] == 8 and head["towers"] == {"image": 8}
    assert saved["encoders"]["raw"]["dim"] == 3 * 32 * 32 and saved["encoders"]["raw"]["kind"] == "baseline"
    for enc in saved["encoders"].values():
        cls = enc["classification"]
        assert set(cls) == {"probe_train_accuracy", "probe_test_accuracy", "knn5_accuracy", "knn200_accuracy"}
        assert all(0.0 <= v <= 1.0 for v in cls.values())
        assert set(enc["invariance"]) == {"shape", "colour", "location", "size"}
        assert enc["geometry"]["effective_rank"] >= 1.0
    assert 0.0 <= head["geometry"]["alignment"] <= 4.0 and -8.0 <= head["geometry"]["uniformity"] <= 0.0
    assert head["information"]["temperature"] == 0.2 and head["information"]["mi_k"] == 60
    assert "information" not in saved["encoders"]["backbone"]
    assert "alignment" not in saved["encoders"]["raw"]["geometry"]  # the raw baseline has no views
    # the homework's sets: classes for every row; the two augmentations of each item for the rows with views
    sets = head["sets"]
    assert sets["classes"]["sets"] == len(set(simclr_run.dataset("test").factors["shape"].tolist()))
    assert sets["augmentations"]["sets"] == 60 and sets["augmentations"]["min_size"] == 2
    assert 0.0 <= sets["augmentations"]["separated_share"] <= 1.0
    assert sets["classes"]["tammes"]["reference_how"] == "exact" and sets["classes"]["tammes"]["ratio"] <= 1.0 + 1e-9
    assert "augmentations" not in saved["encoders"]["raw"].get("sets", {})
    expected = {"curves", "invariance"} | {f"{kind}_{stage}" for kind in ("hypersphere", "tsne")
                                            for stage in ("head", "backbone")} | {
        f"neighbours_{stage}_{split}" for stage in ("head", "backbone") for split in ("train", "test")}
    assert set(saved["figures"]) == expected
    for file in saved["figures"].values():
        assert (out_dir / file).read_bytes()[:8] == PNG


def test_one_stage_without_baselines_or_figures(simclr_run):
    metrics = evaluate(simclr_run, options=EvalOptions(stages=("backbone",), baselines=False, figures=False,
                                                       max_items=40, invariance_items=30))
    assert list(metrics["encoders"]) == ["backbone"]
    assert metrics["items"] == {"train": 40, "test": 40}
    assert metrics["figures"] == {}


def test_the_invariance_report_can_be_switched_off(simclr_run):
    # With spoken captions every resampled factor means new speech synthesis; recipes turn the report off.
    metrics = evaluate(simclr_run, options=EvalOptions(stages=("head",), baselines=False, figures=False,
                                                       max_items=40, invariance=False))
    assert "invariance" not in metrics["encoders"]["head"]
    assert "classification" in metrics["encoders"]["head"]


def test_two_towers_give_retrieval_and_canonical_correlations(two_tower_run):
    """CMC-like towers read one image: one row with their features side by side (the paper's probe), and what
    happens between them in its own section."""
    metrics = evaluate(two_tower_run, options=EvalOptions(baselines=False, figures=False, invariance_items=40))
    head = metrics["encoders"]["head"]
    assert head["towers"] == {"rgb": 8, "grey": 8} and head["dim"] == 16 and head["tower"] is None
    cross = metrics["cross_modal"]["head"]
    assert cross["towers"] == ["rgb", "grey"]
    assert set(cross["retrieval"]) == {"rgb->grey", "grey->rgb"}
    assert cross["retrieval"]["rgb->grey"]["candidates"] == 60
    assert 0.0 <= cross["retrieval"]["rgb->grey"]["R@10"] <= 1.0
    assert len(cross["cca"]["rgb|grey"]["top"]) == 8
    assert "alignment" in head["geometry"]  # heads of different towers share the objective's space
    backbone = metrics["encoders"]["backbone"]
    assert "alignment" not in backbone["geometry"]  # their backbones do not
    assert "retrieval" not in metrics["cross_modal"]["backbone"]
    pairs = {(c["a"], c["b"]) for c in metrics["comparison"]}
    assert ("head", "backbone") in pairs


def test_towers_of_different_data_are_separate_rows(two_modality_run):
    """An image tower and a caption tower: each measured alone (the caption's words must not decide the image's
    probe), alignment of the paired views and retrieval across them in the cross-modal section."""
    metrics = evaluate(two_modality_run, options=EvalOptions(figures=False, invariance_items=40))
    rows = metrics["encoders"]
    assert {"head:rgb", "head:grey", "backbone:rgb", "backbone:grey", "random_head:rgb", "raw"} <= set(rows)
    assert "head" not in rows
    assert rows["head:rgb"]["tower"] == "rgb" and rows["head:rgb"]["dim"] == 8
    assert rows["head:rgb"]["kind"] == "trained" and rows["random_head:rgb"]["kind"] == "baseline"
    assert {"classification", "invariance"} <= set(rows["head:grey"])
    cross = metrics["cross_modal"]["head"]
    assert set(cross["retrieval"]) == {"rgb->grey", "grey->rgb"} and "alignment" in cross["geometry"]
    pairs = {(c["a"], c["b"]) for c in metrics["comparison"]}
    assert {("head:rgb", "head:grey"), ("head:rgb", "backbone:rgb"), ("head:rgb", "random_head:rgb")} <= pairs
    assert metrics["verdict"]["headline"]


def test_slice_batch_keeps_rows_together():
    b = Batch({"x": torch.arange(6).view(6, 1)}, labels=torch.arange(6), factors={"f": torch.arange(6) * 2},
              lengths={"x": torch.ones(6)}, index=torch.arange(6) + 10)
    s = slice_batch(b, slice(2, 4))
    assert s.inputs["x"].flatten().tolist() == [2, 3] and s.factors["f"].tolist() == [4, 6]
    assert s.index.tolist() == [12, 13] and s.labels.tolist() == [2, 3] and len(s.lengths["x"]) == 2


@pytest.mark.parametrize("bad, match", [({"stages": ("neck",)}, "neck"), ({"max_items": 1}, "1"),
                                         ({"batch_size": 0}, "0")])
def test_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        EvalOptions(**bad)
