r"""Labels in a contrastive objective: cross-entropy, SupCon, and cross-entropy as a dual encoder.

The homework's worked answer 6 writes softmax cross-entropy as a dual-encoder contrastive loss: the input
tower gives :math:`z_i = f_1(x_i)`, the class tower embeds the one-hot label, :math:`f_2(c) = W^\top e_c = w_c`,
and the candidates of input :math:`i` are all :math:`C` classes,

.. math::
    \mathcal{L} = -\frac1N \sum_i \log \frac{\exp\big((z_i^\top w_{y_i} + b_{y_i})/\tau\big)}
        {\sum_{c} \exp\big((z_i^\top w_c + b_c)/\tau\big)},

which is the cross-entropy of the linear classifier :math:`g(z) = (W z + b)/\tau`, so
:math:`\hat y_{\text{contrastive}} = \arg\max_c f_1(x)^\top f_2(c) = \hat y_{\text{CE}}`. The library therefore
has one objective for both, ``class_contrastive``: the ``cross_entropy`` run is it with unnormalised embeddings
and :math:`\tau = 1` (an ordinary classifier head); the ``class_tower`` run puts the input embeddings on the
unit sphere with :math:`\tau = 0.1`, as CLIP-style dual encoders do. For every such run this analysis rebuilds a
plain ``torch.nn.Linear`` with the class tower's weights and checks, on the held-out items, that the class
tower's scores, predictions and loss equal the linear classifier's. SupCon (Khosla et al. 2020) is read out as
its authors do, with a linear probe on the frozen features.

References:
    Similarity-learning homework, worked answer 6 (``reference/homework-similarity-learning-answers.md``).
    Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362.
    Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from contrastlab.plots._figure import save_png
from contrastlab.plots.compare import grouped_bars
from contrastlab.recipes.analyses._metrics import encoder, get
from contrastlab.recipes.summary import Check, Summary, Table


def linear_twin(tower) -> nn.Linear:
    r"""A ``torch.nn.Linear`` that computes the class tower's scores: weight :math:`W/\tau`, bias :math:`b/\tau`.

    Args:
        tower: a :class:`~contrastlab.objectives.supcon.ClassTowerContrastive` with ``C`` classes of width ``D``.

    Returns:
        ``nn.Linear(D, C)`` holding copies of the class embeddings and biases, divided by the temperature.

    Example:
        >>> from contrastlab.objectives.supcon import ClassTowerContrastive
        >>> tower = ClassTowerContrastive(3, 4, temperature=0.5)
        >>> z = torch.randn(5, 4)
        >>> torch.allclose(linear_twin(tower)(z), tower.logits(z))
        True
    """
    table = tower.class_embeddings.detach()
    layer = nn.Linear(table.shape[1], table.shape[0], bias=tower.bias is not None)
    with torch.no_grad():
        layer.weight.copy_(table / tower.temperature)
        if tower.bias is not None:
            layer.bias.copy_(tower.bias.detach() / tower.temperature)
    return layer


def class_tower_identity(run, *, max_items: int | None = None) -> dict:
    r"""Compare a ``class_contrastive`` run's class tower with a linear classifier of the same weights.

    The dual-encoder scores are computed literally: the class tower embeds each one-hot label,
    :math:`w_c = f_2(c)`, and every input is scored against every class, :math:`(z_i^\top w_c + b_c)/\tau`.

    Args:
        run: a loaded run (``contrastlab.training.load_run``) whose objective is ``class_contrastive``.
        max_items: use at most this many held-out items.

    Returns:
        ``{"items", "agreement", "max_abs_logit_diff", "logit_scale", "contrastive_loss", "cross_entropy",
        "tower_accuracy", "linear_accuracy"}``: the share of items where both predict the same class, the
        largest score difference and the largest score, both losses and both accuracies.
    """
    test = run.dataset("test")
    n = len(test) if max_items is None else min(len(test), max_items)
    batch = test.get(torch.arange(n))
    tower = run.objective_module
    with torch.no_grad():
        views = run.views.eval_views(batch)
        first = next(iter(views))
        z = run.model.encode({first: views[first]}, stage="head")[first].float()
        classes = torch.arange(tower.class_embeddings.shape[0])
        w = tower.class_tower(classes)  # (C, D): the class tower's output for every one-hot label
        dual = z @ w.T
        if tower.bias is not None:
            dual = dual + tower.bias
        dual = dual / tower.temperature
        linear = linear_twin(tower)(z)
        y = batch.labels
        return {
            "items": n,
            "agreement": float((dual.argmax(1) == linear.argmax(1)).float().mean()),
            "max_abs_logit_diff": float((dual - linear).abs().max()),
            "logit_scale": float(linear.abs().max()),
            "contrastive_loss": float(tower(z, y)),
            "cross_entropy": float(F.cross_entropy(linear, y)),
            "tower_accuracy": float((dual.argmax(1) == y).float().mean()),
            "linear_accuracy": float((linear.argmax(1) == y).float().mean()),
        }


def summarize(recipe, outcomes: dict, out_dir: Path, *, tolerance: float = 1e-5) -> Summary:
    """The accuracy table, the identity table for every class-tower run, the accuracy figure and the checks.

    Args:
        recipe: the :class:`~contrastlab.recipes.spec.Recipe`.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome` (``cross_entropy`` and ``supcon``
            are compared in one check).
        out_dir: the recipe folder; the figure is written there.
        tolerance: the largest score and loss difference, relative to their size, that still counts as equal.

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    from contrastlab.training import load_run

    summary = Summary()
    identity = {}
    for name, o in outcomes.items():
        if o.config["objective"]["name"] == "class_contrastive":
            identity[name] = class_tower_identity(load_run(o.run_dir))

    rows = []
    for name, o in outcomes.items():
        opts = o.config["objective"].get("options") or {}
        head, backbone = encoder(o, "head"), encoder(o, "backbone")
        rows.append([name, o.config["objective"]["name"], opts.get("temperature"), o.config["model"].get("normalize"),
                     (identity.get(name) or {}).get("tower_accuracy"),
                     get(head, "classification", "probe_test_accuracy"), get(head, "classification", "knn5_accuracy"),
                     get(backbone, "classification", "probe_test_accuracy"),
                     get(backbone, "classification", "knn5_accuracy"), get(head, "geometry", "alignment"),
                     get(head, "geometry", "uniformity"), o.train_seconds])
    summary.tables.append(Table(
        "Held-out accuracy of each objective",
        ["run", "objective", "temperature", "normalised", "own classifier (class tower)", "linear probe (head)",
         "5-NN (head)", "linear probe (backbone)", "5-NN (backbone)", "alignment", "uniformity", "train s"], rows,
        note="The class tower is the run's own classifier (cross-entropy); SupCon has none and is read out with a "
             "linear probe on frozen features. Chance is 0.10 (ten balanced classes)."))
    if identity:
        summary.tables.append(Table(
            "The class tower is a linear classifier: dual-encoder scores vs torch.nn.Linear with the same weights",
            ["run", "items", "prediction agreement", "max |logit difference|", "largest |logit|",
             "contrastive loss", "cross-entropy of the linear classifier", "accuracy (tower)", "accuracy (linear)"],
            [[name, r["items"], r["agreement"], r["max_abs_logit_diff"], r["logit_scale"], r["contrastive_loss"],
              r["cross_entropy"], r["tower_accuracy"], r["linear_accuracy"]] for name, r in identity.items()],
            note="Scores of the dual encoder: f1(x).f2(c) + b_c over every class c, with f2(c) = W^T e_c; the linear "
                 "classifier: nn.Linear(D, C) with weight W / t and bias b / t."))

    groups = list(outcomes)

    def read(stage: str, key: str) -> list:
        return [get(encoder(outcomes[g], stage), "classification", key) for g in groups]

    series = {"own classifier": [(identity.get(g) or {}).get("tower_accuracy") for g in groups],
              "probe (head)": read("head", "probe_test_accuracy"), "5-NN (head)": read("head", "knn5_accuracy"),
              "probe (backbone)": read("backbone", "probe_test_accuracy")}
    series = {k: v for k, v in series.items() if any(x is not None for x in v)}
    if series:
        path = save_png(grouped_bars(groups, series, ylabel="held-out accuracy", title="Cross-entropy vs SupCon",
                                     reference=0.1), out_dir / "supervised_accuracy.png")
        summary.figures["Held-out accuracy per run and read-out"] = str(path.relative_to(out_dir))

    for name, r in identity.items():
        summary.checks.append(Check(
            f"{name}: the class tower predicts exactly what a linear classifier with its weights predicts",
            r["agreement"] == 1.0 and r["max_abs_logit_diff"] <= tolerance * max(1.0, r["logit_scale"]),
            f"agreement {r['agreement']:.3f} on {r['items']} items, "
            f"max logit difference {r['max_abs_logit_diff']:.2g}"))
        summary.checks.append(Check(
            f"{name}: the dual-encoder contrastive loss equals the linear classifier's cross-entropy",
            abs(r["contrastive_loss"] - r["cross_entropy"]) <= tolerance * max(1.0, r["cross_entropy"]),
            f"{r['contrastive_loss']:.6f} vs {r['cross_entropy']:.6f}"))
    for name, o in outcomes.items():
        acc = (identity.get(name) or {}).get("tower_accuracy")
        if acc is None:
            acc = get(encoder(o, "backbone"), "classification", "probe_test_accuracy")
        if acc is not None:
            summary.checks.append(Check(f"{name} learns the classes (held-out accuracy far above chance 0.10)",
                                        acc > 0.3, f"accuracy {acc:.3f}"))
    if "supcon" in outcomes and "cross_entropy" in identity:
        sup = get(encoder(outcomes["supcon"], "backbone"), "classification", "probe_test_accuracy")
        ce = identity["cross_entropy"]["tower_accuracy"]
        if sup is not None:
            summary.checks.append(Check(
                "SupCon (linear probe on the frozen backbone) is at least as accurate as cross-entropy (Khosla et al.)",
                sup >= ce, f"{sup:.3f} vs {ce:.3f}"))
    summary.findings.append(
        "There is no separate cross-entropy objective: class_contrastive with unnormalised embeddings and "
        "temperature 1 is softmax cross-entropy of a linear classifier, and the identity table shows the class "
        "tower and nn.Linear give the same scores, predictions and loss.")
    return summary
