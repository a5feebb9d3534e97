r"""Evaluate a trained run: every measure on the frozen encoder, next to the baselines.

``evaluate(run)`` reads features of the training and test items through the run's model at the
requested stages (after the head, from the backbone), and the same for two baselines that any
claim about a learned representation must beat: the raw inputs, and the same architecture with
freshly initialised weights. For each of these *encoders* it reports

* classification: linear probe (train/test accuracy) and k-NN (5-NN vote, weighted 200-NN);
* clustering: k-means NMI/ARI against the labels;
* geometry: feature norms, effective rank, and alignment/uniformity on held-out positive pairs;
* information: the InfoNCE mutual-information bound (head), canonical correlations between towers;
* retrieval between towers (image → caption, L → ab, …): recall@1/5/10 and median rank;
* the invariance report for data sets with generative factors (the Shapes world).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset
from contrastlab.evaluation.clustering import cluster_scores
from contrastlab.evaluation.features import (
    Collected, Encoder, Featurizer, collect, concat_towers, encode_pairs, random_init_copy, raw_featurizer,
    raw_inputs, trained_featurizer, view_towers,
)
from contrastlab.evaluation.geometry import alignment, effective_rank, feature_norms, uniformity
from contrastlab.evaluation.information import canonical_correlations, info_nce_bound
from contrastlab.evaluation.invariance import invariance_report
from contrastlab.evaluation.knn import knn_evaluate
from contrastlab.evaluation.probe import linear_probe
from contrastlab.evaluation.retrieval import retrieval_metrics
from contrastlab.files import atomic_write_text
from contrastlab.views.base import ViewGenerator

STAGES: tuple[str, ...] = ("head", "backbone")


class LoadedRunLike(Protocol):
    """The fields of ``contrastlab.training.LoadedRun`` that evaluation reads."""

    run_dir: Path
    config: dict
    model: Encoder
    views: ViewGenerator
    objective: str
    metrics_path: Path

    def dataset(self, split: str) -> Dataset: ...


@dataclass(frozen=True)
class EvalOptions:
    """How much to evaluate.

    Attributes:
        stages: the model's stages to read features from (``"head"``, ``"backbone"``).
        max_items: at most this many items per split (a seeded random subset); ``None`` for all.
        seed: seeds the subsets, the training views of the positive pairs and the resampling.
        baselines: also evaluate raw inputs and a randomly initialised copy of the model.
        figures: write figures (see :mod:`contrastlab.evaluation.run_figures`).
        invariance: run the invariance report on data sets with generative factors (it re-renders
            every item with factors changed; with spoken captions that means new speech synthesis).
        invariance_items: test items used by the invariance report.
        pair_items: test items whose positive pairs give alignment, uniformity and the MI bound.
        analysis_items: test items used by clustering, retrieval and CCA (cost grows with N²).
        batch_size: items per forward pass.
    """

    stages: tuple[str, ...] = STAGES
    max_items: int | None = None
    seed: int = 0
    baselines: bool = True
    figures: bool = True
    invariance: bool = True
    invariance_items: int = 1000
    pair_items: int = 2000
    analysis_items: int = 5000
    batch_size: int = 256

    def __post_init__(self):
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of {STAGES}; got {self.stages!r}")
        for name in ("invariance_items", "pair_items", "analysis_items", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.max_items is not None and (not isinstance(self.max_items, int) or self.max_items < 2):
            raise ValueError(f"max_items must be an integer >= 2 or None; got {self.max_items!r}")


def _subset(n: int, limit: int | None, seed: int) -> Tensor:
    """All of ``range(n)``, or a sorted seeded random subset of ``limit`` of them."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def slice_batch(batch: Batch, rows: slice | Tensor) -> Batch:
    """The items ``rows`` of a batch, every field sliced alike.

    Args:
        batch: N items.
        rows: a slice or an index tensor.

    Returns:
        A :class:`Batch` of the chosen items.

    Example:
        >>> b = Batch({"x": torch.arange(4)}, labels=torch.arange(4) * 10)
        >>> slice_batch(b, slice(1, 3)).labels.tolist()
        [10, 20]
    """
    pick = lambda d: {k: v[rows] for k, v in d.items()}  # noqa: E731
    return Batch(inputs=pick(batch.inputs), labels=None if batch.labels is None else batch.labels[rows],
                 factors=pick(batch.factors), lengths=pick(batch.lengths),
                 index=None if batch.index is None else batch.index[rows])


def _chunked(featurize: Featurizer, size: int):
    def encode(batch: Batch) -> Tensor:
        parts = [concat_towers(featurize(slice_batch(batch, slice(s, s + size)))) for s in range(0, len(batch), size)]
        return torch.cat(parts)
    return encode


#: The critic's temperature for the InfoNCE bound of runs whose objective has none (e.g. a triplet loss).
_DEFAULT_TEMPERATURE = 0.1


def _temperature(run) -> float:
    """The temperature the run trained with (learned or fixed, as its checkpoint records it)."""
    value = getattr(run, "temperature", None)
    return float(value) if isinstance(value, (int, float)) and value > 0 else _DEFAULT_TEMPERATURE


def _classification(train: Tensor, test: Tensor, y_train: Tensor, y_test: Tensor) -> dict[str, float]:
    out = {f"probe_{k}": v for k, v in linear_probe(train, y_train, test, y_test).items()}
    out.update(knn_evaluate(train, y_train, test, y_test))
    return out


_INFORMATION = ("info_nce", "mi_lower_bound", "mi_k", "temperature")
_MIN_INVARIANCE_ITEMS = 7  # k + 2 with the report's 5 neighbours


def _positive_pairs(model: Encoder, views: ViewGenerator, batch: Batch, stage: str,
                    options: EvalOptions) -> dict[str, Tensor]:
    """Embeddings of every training view of the items (seeded): view name -> (N, D)."""
    generator = torch.Generator().manual_seed(options.seed + 2)
    size = options.batch_size
    chunks = [encode_pairs(model, views, slice_batch(batch, slice(s, s + size)), generator, stage=stage)
              for s in range(0, len(batch), size)]
    return {view: torch.cat([chunk[view] for chunk in chunks]) for view in chunks[0]}


def _pair_geometry(pairs: dict[str, Tensor], towers: dict[str, str], *, head: bool,
                   temperature: float) -> dict[str, Any]:
    """Alignment and uniformity over the positive pairs of every two views (and the MI bound at the head).

    Head embeddings of all views share one space (the objective compares them); backbone features
    do only for views read by the same tower, so at the backbone other pairs are left out.
    """
    names = list(pairs)
    combos = [(a, b) for a, b in itertools.combinations(names, 2)
              if pairs[a].shape[1] == pairs[b].shape[1] and (head or towers.get(a) == towers.get(b))]
    if not combos:
        return {}
    used = list(dict.fromkeys(v for combo in combos for v in combo))
    out: dict[str, Any] = {
        "alignment": sum(alignment(pairs[a], pairs[b]) for a, b in combos) / len(combos),
        "uniformity": sum(uniformity(pairs[v]) for v in used) / len(used),
        "pairs": int(pairs[names[0]].shape[0]),
    }
    if head:
        bounds = [info_nce_bound(pairs[a], pairs[b], temperature=temperature) for a, b in combos]
        out["info_nce"] = sum(b["loss"] for b in bounds) / len(bounds)
        out["mi_lower_bound"] = sum(b["mi_lower_bound"] for b in bounds) / len(bounds)
        out["mi_k"] = bounds[0]["k"]
        out["temperature"] = temperature
    return out


def _tower_analysis(towers: dict[str, Tensor], limit: int, *, retrieval: bool) -> dict[str, Any]:
    """Canonical correlations between every two towers, and retrieval where they share a space (the head)."""
    out: dict[str, Any] = {}
    for a, b in itertools.combinations(towers, 2):
        xa, xb = towers[a][:limit], towers[b][:limit]
        if retrieval and xa.shape[1] == xb.shape[1]:
            for direction, values in retrieval_metrics(xa, xb, names=(a, b)).items():
                out.setdefault("retrieval", {})[direction] = {**values, "candidates": int(xa.shape[0])}
        if xa.shape[0] > 2 * (xa.shape[1] + xb.shape[1]):
            rho = canonical_correlations(xa, xb)
            out.setdefault("cca", {})[f"{a}|{b}"] = {
                "mean": float(rho.mean()), "top": [float(r) for r in rho[:10]]}
    return out


def _encoder_metrics(train: Collected, test: Collected, name: str, options: EvalOptions) -> dict[str, Any]:
    towers_tr, towers_te = train.features[name], test.features[name]
    x_tr, x_te = concat_towers(towers_tr), concat_towers(towers_te)
    out: dict[str, Any] = {"dim": int(x_te.shape[1]), "towers": {t: int(f.shape[1]) for t, f in towers_te.items()}}
    if train.labels is not None and test.labels is not None:
        out["classification"] = _classification(x_tr, x_te, train.labels, test.labels)
        m = min(options.analysis_items, x_te.shape[0])
        if len(torch.unique(test.labels[:m])) >= 2:
            out["clustering"] = cluster_scores(x_te[:m], test.labels[:m], seed=options.seed)
    geometry = {"norms": feature_norms(x_te)}
    try:
        geometry["effective_rank"] = effective_rank(x_te)
    except ValueError:  # an all-zero matrix
        geometry["effective_rank"] = 0.0
    out["geometry"] = geometry
    if len(towers_te) >= 2:
        out.update(_tower_analysis(towers_te, options.analysis_items, retrieval=name.endswith("head")))
    return out


def _featurizers(run: LoadedRunLike, options: EvalOptions, example: Batch) -> tuple[dict, dict, dict]:
    """(featurizers, encoder kinds, models by encoder name); ``example`` tells whether raw inputs exist."""
    featurizers: dict[str, Featurizer] = {}
    kinds: dict[str, str] = {}
    models: dict[str, Encoder] = {}
    for stage in options.stages:
        featurizers[stage] = trained_featurizer(run.model, run.views, stage=stage)
        kinds[stage], models[stage] = "trained", run.model
    if options.baselines:
        if raw_inputs(example) is not None:
            featurizers["raw"], kinds["raw"] = raw_featurizer, "baseline"
        if isinstance(run.model, torch.nn.Module):
            fresh = random_init_copy(run.model, seed=options.seed)
            for stage in options.stages:
                featurizers[f"random_{stage}"] = trained_featurizer(fresh, run.views, stage=stage)
                kinds[f"random_{stage}"], models[f"random_{stage}"] = "baseline", fresh
    return featurizers, kinds, models


def evaluate(run: LoadedRunLike, *, options: EvalOptions = EvalOptions(), out_dir: str | Path | None = None) -> dict:
    """Evaluate a loaded run; write ``metrics.json`` and the figures into ``out_dir`` when given.

    Args:
        run: a :class:`LoadedRunLike` (``contrastlab.training.load_run(run_dir)``).
        options: what to evaluate.
        out_dir: folder for ``metrics.json`` and the PNG figures; nothing is written when ``None``.

    Returns:
        The metrics as a JSON-ready dict: ``run``, ``items``, ``encoders`` (encoder name →
        measures), ``figures`` (figure name → file name), ``seconds``.

    Raises:
        ValueError: when a split is too small or an option is bad, or ``out_dir`` cannot take the results.
    """
    if out_dir is not None:  # find out now, not after the figures were replaced
        for path in (Path(out_dir), Path(out_dir) / "metrics.json"):
            if path.exists() and path.is_dir() != (path == Path(out_dir)):
                raise ValueError(f"cannot write the evaluation: {path} is a {'folder' if path.is_dir() else 'file'}")
    started = time.perf_counter()
    train_ds, test_ds = run.dataset("train"), run.dataset("test")
    idx_train = _subset(len(train_ds), options.max_items, options.seed)
    idx_test = _subset(len(test_ds), options.max_items, options.seed + 1)
    if len(idx_train) < 2 or len(idx_test) < 2:
        raise ValueError(f"need at least 2 items in each split; got {len(idx_train)} train, {len(idx_test)} test")
    featurizers, kinds, models = _featurizers(run, options, test_ds.get(idx_test[:2]))
    train = collect(train_ds, idx_train, featurizers, batch_size=options.batch_size, keep_images=options.figures)
    test = collect(test_ds, idx_test, featurizers, batch_size=options.batch_size, keep_images=options.figures)

    encoders: dict[str, dict[str, Any]] = {}
    for name in featurizers:
        stage = name.removeprefix("random_") if name != "raw" else None
        encoders[name] = {"kind": kinds[name], "stage": stage, **_encoder_metrics(train, test, name, options)}

    pair_batch = test_ds.get(idx_test[:options.pair_items])
    for name, model in models.items():
        pairs = _positive_pairs(model, run.views, pair_batch, name.removeprefix("random_"), options)
        geometry = _pair_geometry(pairs, view_towers(model, run.views), head=name.endswith("head"),
                                  temperature=_temperature(run))
        information = {k: geometry.pop(k) for k in _INFORMATION if k in geometry}
        encoders[name]["geometry"].update(geometry)
        if information:
            encoders[name]["information"] = information

    if (options.invariance and hasattr(test_ds, "resample") and getattr(test_ds, "factor_names", ())
            and len(idx_test) >= _MIN_INVARIANCE_ITEMS):
        inv_batch = test_ds.get(idx_test[:options.invariance_items])
        for name, featurize in featurizers.items():
            encoders[name]["invariance"] = invariance_report(
                inv_batch, _chunked(featurize, options.batch_size), test_ds.resample, seed=options.seed)

    metrics = {
        "run": {"run_dir": str(run.run_dir), "objective": run.objective, "dataset": getattr(train_ds, "name", "?"),
                "step": getattr(run, "step", None), "config": run.config},
        "items": {"train": int(len(idx_train)), "test": int(len(idx_test))},
        "encoders": encoders,
        "figures": {},
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if options.figures:
            from contrastlab.evaluation.run_figures import write_figures

            metrics["figures"] = write_figures(run, metrics, train, test, out_dir, stages=options.stages,
                                               seed=options.seed)
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    if out_dir is not None:
        write_json(metrics, Path(out_dir) / "metrics.json")
    return metrics


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def write_json(metrics: dict, path: str | Path) -> Path:
    """Write metrics as strict JSON, atomically (a temporary file, then a rename).

    NaN and infinities become ``null``; tensors, numpy scalars and paths become plain values.

    Args:
        metrics: the metrics tree.
        path: the JSON file to write.

    Returns:
        ``path``.

    Example:
        >>> import tempfile, os
        >>> p = write_json({"a": float("nan"), "b": torch.tensor([1, 2])}, os.path.join(tempfile.mkdtemp(), "m.json"))
        >>> p.read_text().split()
        ['{', '"a":', 'null,', '"b":', '[', '1,', '2', ']', '}']
    """
    return atomic_write_text(path, json.dumps(_jsonable(metrics), indent=2, allow_nan=False) + "\n")


def evaluate_run_dir(run_dir: str | Path, *, options: EvalOptions = EvalOptions()) -> dict:
    """Load a run with ``contrastlab.training.load_run`` and evaluate it into ``RUN_DIR/eval/``.

    Args:
        run_dir: a run folder written by ``contrastlab train``.
        options: what to evaluate.

    Returns:
        The metrics (also written to ``RUN_DIR/eval/metrics.json``).

    Raises:
        contrastlab.errors.UserError: from ``load_run`` for a missing run, config or checkpoint.
        ValueError: for a bad option or a split that is too small.
    """
    from contrastlab.training import load_run

    run = load_run(run_dir)
    return evaluate(run, options=options, out_dir=Path(run_dir) / "eval")
