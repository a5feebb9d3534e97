r"""Coordinated representations of two modalities (CMU MMML lecture 4.1): CCA, deep CCA, contrastive, fusion.

Every method ends with one representation per modality. Each is read in its own *coordinated space*:

* linear CCA (on raw pixels, or on a randomly initialised encoder's features) and deep CCA: the canonical
  variates of linear CCA fitted on the training items (for deep CCA, on the network outputs, as Andrew et al.
  read it out);
* the contrastive dual encoder: its embeddings, compared by cosine similarity (what it was trained on);
* the multimodal autoencoder: the joint code computed from one modality alone,
  :math:`\phi(\{z_m\})`, the code its decoders read when the other modality is missing.

For each, on held-out items: canonical correlations (linear CCA fitted on training items, so a method cannot
score by memorising), retrieval L :math:`\leftrightarrow` ab, and a linear probe of the shape from both
modalities' features. The autoencoder's cross-modal reconstruction ("can it hallucinate the other modality?")
gets its own table.

References:
    Liang, Zadeh & Morency, CMU 11-777 Multimodal Machine Learning, lecture 4.1 (fusion and coordination).
    Andrew, Arora, Bilmes & Livescu, "Deep Canonical Correlation Analysis", ICML 2013.
    Ngiam, Khosla, Kim, Nam, Lee & Ng, "Multimodal Deep Learning", ICML 2011.
    Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (L and ab as two views).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from contrastlab.data.base import Batch
from contrastlab.evaluation.coordination import coordination_report
from contrastlab.evaluation.features import collect, random_init_copy, trained_featurizer
from contrastlab.evaluation.probe import linear_probe
from contrastlab.evaluation.retrieval import retrieval_metrics
from contrastlab.plots._figure import PALETTE, new_figure, save_png
from contrastlab.recipes.summary import Check, Summary, Table


def _items(n: int, limit: int | None) -> torch.Tensor:
    return torch.arange(n if limit is None else min(n, limit))


def joint_codes(model, views, batch: Batch) -> dict[str, torch.Tensor]:
    r"""A multimodal autoencoder's joint code computed from each modality alone.

    With fusion :math:`\phi` and per-view embeddings :math:`z_v`, the code of view :math:`v` is
    :math:`\phi(\{z_v\})`, :math:`\phi` applied with only :math:`v` present: exactly what the decoders read
    when every other modality is dropped. Two such codes of one item are comparable (they live in the joint
    space), which per-view embeddings are not (each has its own map into it).

    Args:
        model: a :class:`~contrastlab.encoders.model.MultiViewModel` with a ``fusion`` module.
        views: the run's view generator (its ``eval_views`` are encoded).
        batch: N items.

    Returns:
        View name -> (N, D) joint codes.
    """
    shown = views.eval_views(batch)
    with torch.no_grad():
        z = model(shown)
        n = len(batch)
        out = {}
        for v in z:
            present = {u: torch.full((n,), u == v, dtype=torch.bool) for u in z}
            out[v] = model.fusion(z, present=present).float()
    return out


def _recon_table(model, views, batch: Batch, train_batch: Batch) -> Table:
    """Mean squared error of decoding every view from each subset of views, against the mean image."""
    shown, means = views.eval_views(batch), views.eval_views(train_batch)
    names = list(shown)
    with torch.no_grad():
        z = model(shown)
        n = len(batch)
        subsets = [tuple(names)] + [(v,) for v in names]
        rows = []
        for subset in subsets:
            present = {u: torch.full((n,), u in subset, dtype=torch.bool) for u in names}
            joint = model.fusion(z, present=present)
            row = [" + ".join(subset)]
            for v in names:
                recon = model.decoders[model.view_towers[v]](joint)
                row.append(float((recon - shown[v]).pow(2).mean()))
            rows.append(row)
        rows.append(["nothing (the training mean of each view)"] +
                    [float((means[v].mean(dim=0, keepdim=True) - shown[v]).pow(2).mean()) for v in names])
    return Table("Multimodal autoencoder: reconstruction error of each view from the codes of the views kept",
                 ["decoded from"] + [f"{v} MSE" for v in names], rows,
                 note="Below the mean-image row, a modality the decoder never saw is being reconstructed from the "
                      "other one (cross-modal 'hallucination', Ngiam et al. 2011).")


def summarize(recipe, outcomes: dict, out_dir: Path, *, n_components: int = 8, raw_dim: int = 64,
              train_items: int | None = 2000, test_items: int | None = 1000, reg: float = 1e-3) -> Summary:
    """The coordination table, the autoencoder's reconstruction table, the correlation figure and the checks.

    Args:
        recipe: the :class:`~contrastlab.recipes.spec.Recipe`.
        outcomes: run name -> :class:`~contrastlab.recipes.runner.RunOutcome`; every run must use the same
            data and two-view generator (runs named ``deep_cca``, ``contrastive``, ``multimodal_ae`` take part
            in the checks).
        out_dir: the recipe folder; the figure is written there.
        n_components: canonical pairs kept by every CCA.
        raw_dim: principal directions kept of raw pixels and of the random encoder's features before CCA.
        train_items: training items that fit the CCAs and the probes (``None``: all).
        test_items: held-out items that measure them (``None``: all).
        reg: the CCAs' ridge (relative to the features' scale).

    Returns:
        The :class:`~contrastlab.recipes.summary.Summary`.
    """
    from contrastlab.training import load_run

    summary = Summary()
    loaded = {name: load_run(o.run_dir) for name, o in outcomes.items()}
    first = next(iter(loaded.values()))
    views = first.views
    a, b = views.view_names[:2]
    train_ds, test_ds = first.dataset("train"), first.dataset("test")
    idx_tr, idx_te = _items(len(train_ds), train_items), _items(len(test_ds), test_items)

    def raw_views(batch):
        return {v: x.reshape(len(batch), -1) for v, x in views.eval_views(batch).items()}

    featurizers = {"linear CCA, raw pixels": raw_views,
                   "linear CCA, random encoder": trained_featurizer(random_init_copy(first.model, seed=0), views,
                                                                   stage="backbone")}
    native = {}  # methods compared in their own space (not through CCA)
    for name, run in loaded.items():
        if run.objective == "multimodal_autoencoder" and run.model.fusion is not None:
            featurizers[name] = (lambda m: (lambda batch: joint_codes(m, views, batch)))(run.model)
            native[name] = "joint code from one modality"
        else:
            featurizers[name] = trained_featurizer(run.model, views, stage="head")
            if run.objective != "dcca":
                native[name] = "embedding (cosine)"
    train = collect(train_ds, idx_tr, featurizers, batch_size=256)
    test = collect(test_ds, idx_te, featurizers, batch_size=256)
    chance_acc = float(np.bincount(test.labels.numpy()).max() / len(test.labels)) if test.labels is not None else None

    rows, spectra = [], {}
    for name in featurizers:
        ftr, fte = train.features[name], test.features[name]
        is_raw = name.startswith("linear CCA")
        report = coordination_report(ftr[a], ftr[b], fte[a], fte[b], n_components=n_components, reg=reg,
                                     max_dim=raw_dim if is_raw else None, train_labels=train.labels,
                                     test_labels=test.labels, names=(a, b))
        spectra[name] = report["test_correlations"]
        if name in native:
            space = native[name]
            ret = retrieval_metrics(fte[a], fte[b], names=(a, b))
            acc = linear_probe(torch.cat([ftr[a], ftr[b]], 1), train.labels, torch.cat([fte[a], fte[b]], 1),
                               test.labels)["test_accuracy"] if test.labels is not None else None
        else:
            space = "canonical variates" + (f" (PCA {raw_dim} first)" if is_raw else " of the outputs")
            ret, acc = report["retrieval"], (report.get("probe") or {}).get("test_accuracy")
        cca_ret = report["retrieval"]
        seconds = outcomes[name].train_seconds if name in outcomes else None
        rows.append([name, space, report["mean_test_correlation"], report["test_correlations"][0],
                     float(np.mean(report["train_correlations"])),
                     ret[f"{a}->{b}"]["R@1"], ret[f"{b}->{a}"]["R@1"],
                     (ret[f"{a}->{b}"]["R@10"] + ret[f"{b}->{a}"]["R@10"]) / 2,
                     (cca_ret[f"{a}->{b}"]["R@1"] + cca_ret[f"{b}->{a}"]["R@1"]) / 2, acc, seconds])
    m = len(idx_te)
    rows.append(["chance", "", 0.0, 0.0, None, 1 / m, 1 / m, min(1.0, 10 / m), 1 / m, chance_acc, None])
    summary.tables.append(Table(
        f"Coordination of {a} and {b}: {len(idx_tr)} training items fit the CCA, {m} held-out items measure it",
        ["method", "coordinated space", f"held-out canonical corr. (mean of top {n_components})", "top corr.",
         "in-sample corr. (mean)", f"R@1 {a}->{b}", f"R@1 {b}->{a}", "R@10 (mean)", "R@1 in CCA space (mean)",
         "shape accuracy (linear probe)", "train s"], rows,
        note="Retrieval and accuracy are measured in each method's coordinated space; 'R@1 in CCA space' reads "
             "every method through linear CCA on its features. Accuracy: a linear probe on both modalities' "
             "features side by side; chance is the majority class."))

    for name, run in loaded.items():
        model = run.model
        if run.objective == "multimodal_autoencoder" and model.decoders is not None and model.fusion is not None:
            table = _recon_table(run.model, views, test_ds.get(idx_te[:256]), train_ds.get(idx_tr[:1024]))
            summary.tables.append(table)
            _hallucination_checks(summary, name, table, views.view_names)

    fig = new_figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, rho) in enumerate(spectra.items()):
        ax.plot(np.arange(1, len(rho) + 1), rho, marker="o", color=PALETTE[i % len(PALETTE)], label=name)
    ax.set_xlabel("canonical pair", fontsize=9)
    ax.set_ylabel("held-out correlation", fontsize=9)
    ax.set_title(f"Canonical correlations between {a} and {b} on held-out items", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = save_png(fig, out_dir / "coordination_correlations.png")
    summary.figures["Held-out canonical correlations of each method, largest first"] = str(path.relative_to(out_dir))

    _checks(summary, {r[0]: r for r in rows}, m)
    summary.findings.append(
        "In-sample canonical correlations of wide features are close to 1 whatever the features are; only the "
        "held-out ones separate the methods, so the CCA is always fitted on training items and read on others.")
    return summary


def _hallucination_checks(summary: Summary, name: str, table: Table, view_names) -> None:
    errors = {row[0]: row[1:] for row in table.rows}
    baseline = table.rows[-1][1:]
    for j, target in enumerate(view_names):
        for source in view_names:
            if source != target and source in errors:
                got, mean = errors[source][j], baseline[j]
                summary.checks.append(Check(
                    f"{name}: decoding {target} from {source} alone beats the mean image (cross-modal reconstruction)",
                    got < mean, f"MSE {got:.4f} vs {mean:.4f}"))


def _checks(summary: Summary, rows: dict, m: int) -> None:
    corr = {k: r[2] for k, r in rows.items()}
    r1 = {k: (r[5] + r[6]) / 2 for k, r in rows.items()}
    raw = "linear CCA, raw pixels"
    if "deep_cca" in rows and raw in rows:
        summary.checks.append(Check(
            "deep CCA finds more held-out correlation than linear CCA on raw pixels (Andrew et al. 2013)",
            corr["deep_cca"] > corr[raw],
            f"mean of the top canonical correlations {corr['deep_cca']:.3f} vs {corr[raw]:.3f}"))
    for name in ("deep_cca", "contrastive", "multimodal_ae"):
        if name in rows:
            summary.checks.append(Check(f"{name}: the two modalities are coordinated (cross-modal R@1 above chance)",
                                        r1[name] > 3.0 / m, f"mean R@1 {r1[name]:.3f}, chance {1 / m:.4f}"))
    if "contrastive" in rows and raw in rows:
        summary.checks.append(Check(
            "the contrastive dual encoder retrieves across modalities better than linear CCA on raw pixels",
            r1["contrastive"] > r1[raw], f"mean R@1 {r1['contrastive']:.3f} vs {r1[raw]:.3f}"))
