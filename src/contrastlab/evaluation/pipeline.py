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

Sources read on demand are read through loader workers and streams in shard order (a stream's subset is
its first ``max_items`` items); images reach the featurizers as floats (:func:`~contrastlab.data.base.to_device`).
Measures that need labels are skipped on unlabelled data, each named with its reason under ``skipped``.
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

from contrastlab.data.base import Batch, Dataset, to_device
from contrastlab.data.loading import MAX_WORKERS, LoaderOptions
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
from contrastlab.evaluation.selection import Selection, slice_batch
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
        max_items: at most this many items per split (a seeded random subset; of a stream, its first
            ``max_items`` items in shard order); ``None`` for all.
        seed: seeds the subsets, the training views of the positive pairs and the resampling.
        baselines: also evaluate raw inputs and a randomly initialised copy of the model.
        figures: write figures (see :mod:`contrastlab.evaluation.run_figures`).
        invariance: run the invariance report on data sets with generative factors (it re-renders
            every item with factors changed; with spoken captions that means new speech synthesis).
        invariance_items: test items used by the invariance report.
        pair_items: test items whose positive pairs give alignment, uniformity and the MI bound.
        analysis_items: test items used by clustering, retrieval and CCA (cost grows with N²).
        batch_size: items per forward pass.
        figure_items: the figures (neighbour grids, hypersphere, t-SNE) draw a seeded random sample of at
            most this many items of each split; only their images are kept.
        num_workers: loader workers reading the items; ``None``: the run's ``data.num_workers``, else the
            data set's default (none for in-memory data).
        progress: show a progress bar over the feature extraction on stderr (only on a terminal).
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
    figure_items: int = 1000
    num_workers: int | None = None
    progress: bool = False

    def __post_init__(self):
        if not self.stages or any(s not in STAGES for s in self.stages):
            raise ValueError(f"stages must be a non-empty subset of {STAGES}; got {self.stages!r}")
        for name in ("invariance_items", "pair_items", "analysis_items", "batch_size", "figure_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if self.max_items is not None and (not isinstance(self.max_items, int) or self.max_items < 2):
            raise ValueError(f"max_items must be an integer >= 2 or None; got {self.max_items!r}")
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                             or not 0 <= self.num_workers <= MAX_WORKERS):
            raise ValueError(f"num_workers must be in [0, {MAX_WORKERS}] or None; got {self.num_workers!r}")


def _chunked(featurize: Featurizer, size: int):
    def encode(batch: Batch) -> Tensor:
        parts = [concat_towers(featurize(to_device(slice_batch(batch, slice(s, s + size)), "cpu")))
                 for s in range(0, len(batch), size)]
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
#: The measures that compare features with class labels.
_LABEL_MEASURES = ("linear_probe", "knn", "clustering")
_MIN_INVARIANCE_ITEMS = 7  # k + 2 with the report's 5 neighbours


def _positive_pairs(model: Encoder, views: ViewGenerator, batch: Batch, stage: str,
                    options: EvalOptions) -> dict[str, Tensor]:
    """Embeddings of every training view of the items (seeded): view name -> (N, D)."""
    generator = torch.Generator().manual_seed(options.seed + 2)
    size = options.batch_size
    chunks = [encode_pairs(model, views, to_device(slice_batch(batch, slice(s, s + size)), "cpu"), generator,
                           stage=stage) for s in range(0, len(batch), size)]
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


def _skipped_measures(train: Collected, test: Collected, dataset, options: EvalOptions) -> dict[str, str]:
    """The label-based measures that cannot run on these items, each with the reason."""
    if train.labels is None or test.labels is None:
        unlabelled = getattr(dataset, "num_classes", None) is None
        return dict.fromkeys(_LABEL_MEASURES, "the data set has no labels" if unlabelled else "some items have no labels")
    m = min(options.analysis_items, len(test))
    if len(torch.unique(test.labels[:m])) < 2:
        return {"clustering": f"fewer than 2 classes among the {m} test items it uses"}
    return {}


def _encoder_metrics(train: Collected, test: Collected, name: str, options: EvalOptions,
                     skipped: dict[str, str]) -> dict[str, Any]:
    towers_tr, towers_te = train.features[name], test.features[name]
    x_tr, x_te = concat_towers(towers_tr), concat_towers(towers_te)
    out: dict[str, Any] = {"dim": int(x_te.shape[1]), "towers": {t: int(f.shape[1]) for t, f in towers_te.items()}}
    if "linear_probe" not in skipped:
        out["classification"] = _classification(x_tr, x_te, train.labels, test.labels)
    if "clustering" not in skipped:
        m = min(options.analysis_items, x_te.shape[0])
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


def _too_few(counts: dict[str, int]) -> None:
    raise ValueError("need at least 2 items in each split; got "
                     + ", ".join(f"{n} {split}" for split, n in counts.items()))


def _workers(run: LoadedRunLike, options: EvalOptions) -> int | None:
    """The loader workers: the option, else the run's ``data.num_workers``, else ``None`` (the data set's default)."""
    if options.num_workers is not None:
        return options.num_workers
    data = run.config.get("data") if isinstance(run.config, dict) else None
    workers = data.get("num_workers") if isinstance(data, dict) else None
    return workers if isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0 else None


def evaluate(run: LoadedRunLike, *, options: EvalOptions = EvalOptions(), out_dir: str | Path | None = None) -> dict:
    """Evaluate a loaded run; write ``metrics.json`` and the figures into ``out_dir`` when given.

    Args:
        run: a :class:`LoadedRunLike` (``contrastlab.training.load_run(run_dir)``).
        options: what to evaluate.
        out_dir: folder for ``metrics.json`` and the PNG figures; nothing is written when ``None``.

    Returns:
        The metrics as a JSON-ready dict: ``run``, ``items`` (split → items evaluated), ``selection``
        (split → how they were chosen), ``skipped`` (measure → why it did not run, e.g. no labels),
        ``encoders`` (encoder name → measures), ``figures`` (figure name → file name), ``seconds``.

    Raises:
        ValueError: when a split is too small or an option is bad, or ``out_dir`` cannot take the results.
    """
    if out_dir is not None:  # find out now, not after the figures were replaced
        for path in (Path(out_dir), Path(out_dir) / "metrics.json"):
            if path.exists() and path.is_dir() != (path == Path(out_dir)):
                raise ValueError(f"cannot write the evaluation: {path} is a {'folder' if path.is_dir() else 'file'}")
    started = time.perf_counter()
    train_ds, test_ds = run.dataset("train"), run.dataset("test")
    loader = LoaderOptions(num_workers=_workers(run, options))
    selected = {"train": Selection.of(train_ds, options.max_items, options.seed),
                "test": Selection.of(test_ds, options.max_items, options.seed + 1)}
    known = {split: len(sel.indices) for split, sel in selected.items() if sel.indices is not None}
    if any(n < 2 for n in known.values()):  # a stream's count is known only once it is read
        _too_few(known)
    example = to_device(selected["test"].first(test_ds, 2, LoaderOptions(num_workers=0), options.batch_size), "cpu")
    featurizers, kinds, models = _featurizers(run, options, example)
    collected = {}
    for split, ds in (("train", train_ds), ("test", test_ds)):
        sel = selected[split]
        collected[split] = collect(ds, sel.indices, featurizers, batch_size=options.batch_size, loader=loader,
                                   limit=sel.limit, keep_images=options.figure_items if options.figures else 0,
                                   seed=options.seed, progress=options.progress, desc=f"{split} features")
    train, test = collected["train"], collected["test"]
    counts = {split: len(c) for split, c in collected.items()}
    if any(n < 2 for n in counts.values()):
        _too_few(counts)

    skipped = _skipped_measures(train, test, test_ds, options)
    encoders: dict[str, dict[str, Any]] = {}
    for name in featurizers:
        stage = name.removeprefix("random_") if name != "raw" else None
        encoders[name] = {"kind": kinds[name], "stage": stage, **_encoder_metrics(train, test, name, options, skipped)}

    pair_batch = selected["test"].first(test_ds, options.pair_items, loader, options.batch_size)
    for name, model in models.items():
        pairs = _positive_pairs(model, run.views, pair_batch, name.removeprefix("random_"), options)
        geometry = _pair_geometry(pairs, view_towers(model, run.views), head=name.endswith("head"),
                                  temperature=_temperature(run))
        information = {k: geometry.pop(k) for k in _INFORMATION if k in geometry}
        encoders[name]["geometry"].update(geometry)
        if information:
            encoders[name]["information"] = information
    del pair_batch

    if (options.invariance and hasattr(test_ds, "resample") and getattr(test_ds, "factor_names", ())
            and counts["test"] >= _MIN_INVARIANCE_ITEMS):
        inv_batch = selected["test"].first(test_ds, options.invariance_items, loader, options.batch_size)
        for name, featurize in featurizers.items():
            encoders[name]["invariance"] = invariance_report(
                inv_batch, _chunked(featurize, options.batch_size), test_ds.resample, seed=options.seed)

    metrics = {
        "run": {"run_dir": str(run.run_dir), "objective": run.objective, "dataset": getattr(train_ds, "name", "?"),
                "step": getattr(run, "step", None), "config": run.config},
        "items": counts,
        "selection": {split: selected[split].describe(ds, counts[split])
                      for split, ds in (("train", train_ds), ("test", test_ds))},
        "skipped": skipped,
        "encoders": encoders,
        "figures": {},
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if options.figures:
            from contrastlab.evaluation.run_figures import write_figures

            metrics["figures"] = write_figures(run, metrics, train.figure_sample(), test.figure_sample(), out_dir,
                                               stages=options.stages, seed=options.seed)
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
