r"""FactorCL's synthetic experiment: a linear probe on both modalities' representations, beside the paper's numbers.

FactorCL's notebook reads every method the same way: the frozen representation of :math:`x_1` and of :math:`x_2`,
side by side, and a logistic regression from it to the label, fitted on the training items and scored on the test
items. Which representation is probed follows the notebook: for FactorCL the embedding its objective is computed on
(here the head output, shared and unique codes of each modality), for SimCLR the encoder's output before the
projection head (here the backbone). The probe is the library's
(:class:`~contrastlab.evaluation.probe.LinearProbe`: the same L2-regularised logistic regression, C = 1, on
standardised features, fitted to convergence) where the notebook runs scikit-learn's for 200 iterations on raw
features.

Beside the concatenation, each modality alone and (for FactorCL) the shared and the unique codes alone are probed,
and the best accuracy the latent parts allow is given in closed form
(:func:`~contrastlab.data.factorcl_synthetic.bayes_accuracy`): one modality alone cannot reach 1, both together can.

References:
    Liang, Deng, Ma, Zou, Morency & Salakhutdinov, "Factorized Contrastive Learning: Going Beyond Multi-view
    Redundancy", NeurIPS 2023 (and the repository's ``Synthetic/synthetic_example.ipynb``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from contrastlab.data.factorcl_synthetic import bayes_accuracy
from contrastlab.evaluation.probe import linear_probe
from contrastlab.evaluation.selection import subset
from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.recipes.analyses._probe import features_of, tower_features
from contrastlab.recipes.summary import Check, Summary, Table

#: The notebook's linear-probe test accuracies (one run each).
PUBLISHED: dict[str, float] = {"factorcl_sup": 0.986, "factorcl_ssl": 0.972, "simclr": 0.956}


def _probe(train: torch.Tensor, y_train: torch.Tensor, test: torch.Tensor, y_test: torch.Tensor) -> float:
    return float(linear_probe(train, y_train, test, y_test)["test_accuracy"])


def probe_columns(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor, widths: list[int],
                  shared_dim: int | None) -> dict[str, float | None]:
    r"""Linear-probe test accuracy of the concatenated features and of parts of them.

    Args:
        x_tr: ``(N, W)`` training features, the towers' features side by side.
        y_tr: ``(N,)`` labels.
        x_te: ``(M, W)`` test features.
        y_te: ``(M,)`` labels.
        widths: each tower's width, in order (they sum to W).
        shared_dim: the shared code's width at the start of every tower's features, or ``None`` when the features
            are not split into shared and unique codes.

    Returns:
        ``{"both": ..., "tower0": ..., "tower1": ..., "shared": ..., "unique": ...}`` (the last two ``None``
        without ``shared_dim``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 4, generator=g); y = ((x[:, 0] + x[:, 2]) > 0).long()
        >>> cols = probe_columns(x[:100], y[:100], x[100:], y[100:], [2, 2], 1)
        >>> cols["both"] > cols["tower0"], cols["shared"] > cols["unique"]
        (True, True)
    """
    starts = np.cumsum([0, *widths]).tolist()
    towers = [list(range(a, b)) for a, b in zip(starts[:-1], starts[1:])]
    parts: dict[str, list[int] | None] = {"both": list(range(starts[-1]))}
    parts.update({f"tower{i}": cols for i, cols in enumerate(towers)})
    parts["shared"] = None if shared_dim is None else [c for cols in towers for c in cols[:shared_dim]]
    parts["unique"] = None if shared_dim is None else [c for cols in towers for c in cols[shared_dim:]]
    return {k: None if cols is None else _probe(x_tr[:, cols], y_tr, x_te[:, cols], y_te) for k, cols in parts.items()}


def summarize(recipe, outcomes: dict, out_dir: Path, *, representation: Mapping[str, str] | None = None,
              published: Mapping[str, float] | None = None, train_items: int | None = None,
              test_items: int | None = None) -> Summary:
    """The accuracy table, the closed-form ceilings, a figure and the paper's orderings as checks.

    Args:
        recipe: the :class:`~contrastlab.recipes.spec.Recipe`.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`; every run must read the same two
            modalities (runs named ``factorcl_sup``, ``factorcl_ssl`` and ``simclr`` take part in the checks).
        out_dir: the recipe folder; the figure is written there.
        representation: run name -> the stage probed (``"head"`` or ``"backbone"``; default ``"head"``).
        published: run name -> the paper's accuracy (default :data:`PUBLISHED`).
        train_items: training items that fit the probes (``None``: all).
        test_items: test items that score them (``None``: all).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    from contrastlab.training import load_run

    representation = dict(representation or {})
    published = dict(PUBLISHED if published is None else published)
    loaded = {name: load_run(o.run_dir) for name, o in outcomes.items()}
    first = next(iter(loaded.values()))
    train_ds, test_ds = first.dataset("train"), first.dataset("test")
    towers = list(train_ds.modalities)
    idx_tr, idx_te = subset(len(train_ds), train_items, 0), subset(len(test_ds), test_items, 1)
    y_te_all = None

    rows, accuracy = [], {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small probes: one thread, as in the evaluation
    try:
        for name, run in loaded.items():
            stage = representation.get(name, "head")
            features = tower_features(run.model, run.views, towers, stage=stage)
            x_tr, y_tr = features_of(train_ds, idx_tr, features)
            x_te, y_te = features_of(test_ds, idx_te, features)
            y_te_all = y_te
            width = x_tr.shape[1] // len(towers)
            shared_dim = getattr(run.objective_module, "shared_dim", None) if stage == "head" else None
            cols = probe_columns(x_tr, y_tr, x_te, y_te, [width] * len(towers), shared_dim)
            accuracy[name] = cols
            what = f"{stage} ({' ‖ '.join(towers)}, {x_tr.shape[1]}-d)"
            rows.append([name, what, cols["both"], published.get(name), cols["tower0"], cols["tower1"],
                         cols["shared"], cols["unique"], outcomes[name].train_seconds])
        raw = lambda batch: torch.cat([batch.inputs[m].flatten(1) for m in towers], dim=1)  # noqa: E731
        x_tr, y_tr = features_of(train_ds, idx_tr, raw)
        x_te, y_te = features_of(test_ds, idx_te, raw)
        cols = probe_columns(x_tr, y_tr, x_te, y_te, [x_tr.shape[1] // len(towers)] * len(towers), None)
        accuracy["raw inputs"] = cols
        rows.append(["raw inputs", f"{' ‖ '.join(towers)} ({x_tr.shape[1]}-d)", cols["both"], None, cols["tower0"],
                     cols["tower1"], None, None, None])
    finally:
        torch.set_num_threads(threads)
    chance = float(np.bincount(y_te_all.numpy()).max() / len(y_te_all))
    rows.append(["chance (majority class)", "", chance, None, chance, chance, None, None, None])

    summary = Summary()
    summary.tables.append(Table(
        f"Linear-probe test accuracy on FactorCL's synthetic data ({len(idx_tr)} training, {len(idx_te)} test items)",
        ["method", "representation probed", f"accuracy ({' ‖ '.join(towers)})", "paper (notebook)",
         f"{towers[0]} alone", f"{towers[1]} alone", "shared codes only", "unique codes only", "train s"], rows,
        note="Every method is read as FactorCL's notebook reads it: both modalities' representations side by side, "
             "a logistic regression fitted on the training items and scored on the test items (here the library's "
             "probe: standardised features, C = 1, fitted to convergence). FactorCL: the head embedding, whose first "
             "half per modality is the shared code and the rest the unique code; SimCLR: the encoder's output "
             "before the projection head. The paper's numbers are single runs of the notebook."))

    dims = getattr(train_ds, "label_dims", None)
    if dims is not None:
        ceilings = [["both modalities (all latent parts)", bayes_accuracy(dims, ["shared", "unique1", "unique2"])],
                    [f"{towers[0]} alone (shared + unique1)", bayes_accuracy(dims, ["shared", "unique1"])],
                    [f"{towers[1]} alone (shared + unique2)", bayes_accuracy(dims, ["shared", "unique2"])],
                    ["the shared part alone", bayes_accuracy(dims, ["shared"])]]
        summary.tables.append(Table(
            "The best accuracy each part of the data allows (closed form)", ["what a classifier sees", "accuracy"],
            ceilings, note=f"The label is the sign of the sum of the label coordinates (k = {list(dims)} of the "
                           "shared, unique1 and unique2 parts); a classifier that misses some parts can only guess "
                           "their sum's sign: 1/2 + arcsin(sqrt(known / all)) / pi."))

    _figure(summary, accuracy, published, out_dir)
    _checks(summary, accuracy)
    return summary


def _figure(summary: Summary, accuracy: dict, published: Mapping[str, float], out_dir: Path) -> None:
    names = list(accuracy)
    fig = new_figure(5.5, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    for k, (key, label) in enumerate((("both", "both modalities"), ("tower0", "first alone"),
                                      ("tower1", "second alone"))):
        ax.bar(x + (k - 1) * 0.27, [accuracy[n][key] for n in names], width=0.27, color=PALETTE[k], label=label)
    paper = [(i, published[n]) for i, n in enumerate(names) if n in published]
    if paper:
        ax.scatter([i - 0.27 for i, _ in paper], [v for _, v in paper], marker="D", color="black", zorder=3,
                   label="paper (both)")
    ax.set_xticks(x, names, fontsize=8)
    low = min(min(v for v in accuracy[n].values() if v is not None) for n in names)
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_ylabel("linear-probe test accuracy", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    path = save_png(fig, out_dir / "factorcl_accuracy.png")
    summary.figures["Linear-probe accuracy per method, both modalities and each alone"] = str(path.relative_to(out_dir))


def _checks(summary: Summary, accuracy: dict) -> None:
    acc = {n: a["both"] for n, a in accuracy.items()}
    for a, b, paper in (("factorcl_sup", "simclr", "0.986 vs 0.956"), ("factorcl_ssl", "simclr", "0.972 vs 0.956"),
                        ("factorcl_sup", "factorcl_ssl", "0.986 vs 0.972")):
        if a in acc and b in acc:
            summary.checks.append(Check(f"{a} reaches at least {b}'s linear-probe accuracy (paper: {paper})",
                                        acc[a] >= acc[b], f"{acc[a]:.3f} vs {acc[b]:.3f}"))
    for name, a in accuracy.items():
        if name != "raw inputs":
            single = max(a["tower0"], a["tower1"])
            summary.checks.append(Check(
                f"{name}: both modalities together beat either alone (the label needs both unique parts)",
                a["both"] > single, f"{a['both']:.3f} vs {single:.3f}"))
