"""Self-supervised methods on MNIST-1D: the notebook's baselines on the local data, and the recipe at quick scale."""

import doctest
import json

import pytest
import torch

from contrastlab.data import build_dataset
from contrastlab.evaluation.probe import linear_probe
from contrastlab.recipes.analyses import mnist1d_ssl
from contrastlab.recipes.analyses.mnist1d_ssl import neighbour_accuracy
from contrastlab.recipes.runner import run_recipe
from contrastlab.recipes.spec import load_recipe

#: A run of each kind of model part: in-batch negatives, a queue and momentum keys, a predictor and momentum
#: target, a learned logit scale and bias.
ONLY = ["simclr", "moco", "byol", "siglip"]


def test_docstring_examples_run():
    assert doctest.testmod(mnist1d_ssl).failed == 0


def test_the_local_data_are_the_notebooks_raw_signals_give_its_numbers():
    train, test = build_dataset("mnist1d", split="train"), build_dataset("mnist1d", split="test")
    assert (len(train), len(test)) == (4000, 1000)  # the notebook's split
    a, b = train.get(torch.arange(len(train))), test.get(torch.arange(len(test)))
    x, y, xt, yt = a.inputs["signal"], a.labels, b.inputs["signal"], b.labels
    knn = neighbour_accuracy(x, y, xt, yt, k=10)
    assert knn["euclidean"] == pytest.approx(0.596, abs=1e-9)  # notebook: "kNN accuracy: 59.6%"
    assert knn["cosine"] < knn["euclidean"] - 0.05  # the distance matters on raw signals
    assert linear_probe(x, y, xt, yt)["test_accuracy"] == pytest.approx(0.328, abs=0.005)  # "Linear accuracy: 32.8%"


def test_euclidean_and_cosine_neighbours_differ_when_norms_carry_the_class():
    # Two classes on one ray, told apart only by their length: Euclidean separates them, cosine cannot.
    x = torch.tensor([[1.0, 0.0], [1.1, 0.0], [5.0, 0.0], [5.2, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    acc = neighbour_accuracy(x, y, torch.tensor([[0.9, 0.0], [5.1, 0.0]]), torch.tensor([0, 1]), k=1)
    assert acc["euclidean"] == 1.0 and acc["cosine"] <= 0.5


def test_the_recipe_trains_every_method_on_one_setup():
    recipe = load_recipe("mnist1d-ssl")
    assert set(recipe.runs) == {"simclr", "moco", "moco_v3", "byol", "simsiam", "barlow_twins", "vicreg", "dcl",
                                "dclw", "siglip"}
    configs = {run: recipe.run_config(run, "full") for run in recipe.runs}
    shared = {k: v for k, v in configs["simclr"].items() if k not in ("objective", "model")}
    for run, cfg in configs.items():  # only the objective (and MoCo's queue and momentum schedule) differs
        assert {k: v for k, v in cfg.items() if k not in ("objective", "model")} == shared, run
        model = {k: v for k, v in cfg["model"].items() if k not in ("queue_size", "momentum_schedule")}
        assert model == configs["simclr"]["model"], run
    assert configs["moco"]["model"]["queue_size"] < 4000  # smaller than an epoch: no item meets its own key


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return run_recipe("mnist1d-ssl", scale="quick", out=tmp_path_factory.mktemp("recipe") / "ssl", only=ONLY,
                      progress=False, log=lambda *_: None)


@pytest.mark.slow
def test_quick_scale_writes_the_table_the_checks_and_the_report(quick):
    summary = json.loads((quick.out_dir / "summary.json").read_text())
    methods, repro = summary["tables"]
    assert [row[0] for row in methods["rows"]] == [*ONLY, "raw signals", "random init"]
    assert "10-NN Euclidean (backbone)" in methods["columns"]
    for row in methods["rows"]:
        assert all(0.0 <= v <= 1.0 for v in row[3:6])  # accuracies
    assert [row[0] for row in repro["rows"]] == ["raw signals, 10-NN (Euclidean)", "raw signals, linear probe",
                                                 "simclr backbone, linear probe", "simclr backbone, 10-NN (Euclidean)"]
    # 300 evaluation items, not the notebook's split: the reproduction is reported, not checked ...
    assert any("not checked" in f for f in summary["findings"])
    # ... and every method is checked against the same network with random weights, pass or fail.
    claims = [c["claim"] for c in summary["checks"]]
    assert claims == [f"{run}: its backbone is linearly more accurate than the same network with random weights"
                      for run in ONLY]
    for rel in summary["figures"].values():
        assert (quick.out_dir / rel).read_bytes()[:4] == b"\x89PNG"
    assert "Recipe mnist1d-ssl" in quick.report.read_text()
