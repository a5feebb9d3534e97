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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from contrastlab.data.base import Batch, Dataset, to_device
from contrastlab.data.loading import MAX_WORKERS, LoaderOptions
from contrastlab.evaluation.clustering import cluster_scores
from contrastlab.evaluation.compare import compare_representations
from contrastlab.evaluation.decodability import factor_decodability
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
from contrastlab.evaluation.structure import (
    PID_MAX_CLASSES, augmentation_sets, modality_sets, pid_targets, set_summary, tower_pid,
)
from contrastlab.files import atomic_write_text
from contrastlab.progress import item_bar
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


@dataclass(frozen=True)
class Featurizers:
    """What the measures know about the encoders whose features were collected.

    Attributes:
        kinds: featurizer name -> ``"trained"`` or ``"baseline"``.
        stages: featurizer name -> the model's stage (``"head"``, ``"backbone"``) or ``None``.
        modalities: tower name -> the modality it reads; towers of different modalities are measured as
            separate rows (an image tower and a caption tower are two encoders), towers of one modality
            (CMC's channel groups) together, their features side by side.
        shared: featurizer names whose towers embed into one space (the head), where cross-tower
            retrieval means something.
        similarity: featurizer name -> the model's learned coordination function of its towers (gated
            coordination): cross-modal retrieval ranks by it instead of the cosine.
    """

    kinds: dict[str, str]
    stages: dict[str, str | None]
    modalities: dict[str, str] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()
    similarity: dict[str, Any] = field(default_factory=dict)

    def rows(self, features: Mapping[str, Mapping[str, Tensor]]) -> dict[str, tuple[str, tuple[str, ...]]]:
        """Row name -> (featurizer, its towers in the row): ``name`` or, per tower, ``name:tower``.

        Example:
            >>> f = Featurizers({"head": "trained"}, {"head": "head"}, {"image": "image", "text": "text"})
            >>> f.rows({"head": {"image": None, "text": None}})
            {'head:image': ('head', ('image',)), 'head:text': ('head', ('text',))}
        """
        out: dict[str, tuple[str, tuple[str, ...]]] = {}
        for name, towers in features.items():
            modalities = {self.modalities.get(t, t) for t in towers}
            if len(towers) >= 2 and len(modalities) >= 2:
                out.update({f"{name}:{t}": (name, (t,)) for t in towers})
            else:
                out[name] = (name, tuple(towers))
        return out


def _row_features(collected: Collected, featurizer: str, towers: tuple[str, ...]) -> Tensor:
    return concat_towers({t: collected.features[featurizer][t] for t in towers})


def _skipped_measures(train: Collected, test: Collected, has_classes: bool, options: EvalOptions) -> dict[str, str]:
    """The label-based measures that cannot run on these items, each with the reason."""
    if train.labels is None or test.labels is None:
        return dict.fromkeys(_LABEL_MEASURES, "the data set has no labels" if not has_classes
                             else "some items have no labels")
    m = min(options.analysis_items, len(test))
    if len(torch.unique(test.labels[:m])) < 2:
        return {"clustering": f"fewer than 2 classes among the {m} test items it uses"}
    return {}


def _row_metrics(x_tr: Tensor, x_te: Tensor, train: Collected, test: Collected, options: EvalOptions,
                 skipped: Mapping[str, str], *, decode: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"dim": int(x_te.shape[1])}
    if "linear_probe" not in skipped:
        out["classification"] = _classification(x_tr, x_te, train.labels, test.labels)
    if "clustering" not in skipped:
        m = min(options.analysis_items, x_te.shape[0])
        out["clustering"] = cluster_scores(x_te[:m], test.labels[:m], seed=options.seed)
    geometry: dict[str, Any] = {"norms": feature_norms(x_te)}
    try:
        geometry["effective_rank"] = effective_rank(x_te)
    except ValueError:  # an all-zero matrix
        geometry["effective_rank"] = 0.0
    out["geometry"] = geometry
    if "linear_probe" not in skipped:  # labels: classes are sets too
        m = min(options.analysis_items, x_te.shape[0])
        classes = set_summary(x_te[:m], test.labels[:m])
        if classes:
            out["sets"] = {"classes": classes}
    if decode and "decodability" not in skipped:
        out["decodability"] = factor_decodability(x_tr, train.factors, x_te, test.factors, seed=options.seed)
    return out


def _pair_geometry(pairs: dict[str, Tensor], towers: dict[str, str], *, head: bool,
                   temperature: float | None) -> dict[str, Any]:
    """Alignment and uniformity over the positive pairs of every two views (and the MI bound when
    ``temperature`` is given: embeddings of one space, compared by the objective).

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
    if head and temperature is not None:
        bounds = [info_nce_bound(pairs[a], pairs[b], temperature=temperature) for a, b in combos]
        out["info_nce"] = sum(b["loss"] for b in bounds) / len(bounds)
        out["mi_lower_bound"] = sum(b["mi_lower_bound"] for b in bounds) / len(bounds)
        out["mi_k"] = bounds[0]["k"]
        out["temperature"] = temperature
    return out


def _split_information(geometry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    information = {k: geometry.pop(k) for k in _INFORMATION if k in geometry}
    return geometry, information


@dataclass
class Pairs:
    """Embeddings of positive pairs of held-out items, for alignment, uniformity and the MI bound.

    Attributes:
        views: featurizer name -> view name -> (N, D) embeddings; row i of every view is item i.
        towers: view name -> the tower that reads it.
        temperature: the critic's temperature for the InfoNCE bound (head embeddings only).
    """

    views: dict[str, dict[str, Tensor]]
    towers: dict[str, str]
    temperature: float | None = None


def _tower_analysis(towers: dict[str, Tensor], limit: int, *, retrieval: bool, similarity=None) -> dict[str, Any]:
    """Canonical correlations between every two towers, and retrieval where they share a space (the head),
    ranked by the model's coordination function when it has one."""
    out: dict[str, Any] = {}
    for a, b in itertools.combinations(towers, 2):
        xa, xb = towers[a][:limit], towers[b][:limit]
        if retrieval and xa.shape[1] == xb.shape[1]:
            for direction, values in retrieval_metrics(xa, xb, names=(a, b), similarity=similarity).items():
                out.setdefault("retrieval", {})[direction] = {**values, "candidates": int(xa.shape[0])}
            if similarity is not None:
                out["retrieval_similarity"] = getattr(similarity, "name", type(similarity).__name__)
        if xa.shape[0] > 2 * (xa.shape[1] + xb.shape[1]):
            rho = canonical_correlations(xa, xb)
            out.setdefault("cca", {})[f"{a}|{b}"] = {
                "mean": float(rho.mean()), "top": [float(r) for r in rho[:10]]}
    return out


#: Test items the comparisons between rows use: the debiased CKA's spread is about 1/N, and SVCCA's SVDs of wide
#: backbones dominate the cost beyond this.
COMPARE_ITEMS = 1000


def _comparisons(test: Collected, rows: dict[str, tuple[str, tuple[str, ...]]], f: Featurizers,
                 options: EvalOptions) -> list[dict[str, Any]]:
    """CKA, mutual k-NN and SVCCA between the rows worth comparing: two stages of the trained encoder, each
    trained row and its randomly initialised copy, and two towers of one stage."""
    m = min(options.analysis_items, len(test), COMPARE_ITEMS)
    if m < 4:
        return []
    wanted: list[tuple[str, str]] = []
    trained = [r for r, (name, _) in rows.items() if f.kinds.get(name) == "trained"]
    for a, b in itertools.combinations(trained, 2):
        (na, ta), (nb, tb) = rows[a], rows[b]
        if (na != nb and ta == tb) or (na == nb and ta != tb):  # two stages of one tower; two towers of one stage
            wanted.append((a, b))
    for r in trained:
        name, towers = rows[r]
        twin = next((o for o, (n2, t2) in rows.items() if n2 == f"random_{name}" and t2 == towers), None)
        if twin is not None:
            wanted.append((r, twin))
    out = []
    for a, b in wanted:
        xa, xb = (_row_features(test, *rows[r])[:m] for r in (a, b))
        out.append({"a": a, "b": b, **compare_representations(xa, xb, seed=options.seed)})
    return out


def measure(train: Collected, test: Collected, featurizers: Featurizers, *, options: EvalOptions = EvalOptions(),
            pairs: Pairs | None = None, invariance: Callable[[str, tuple[str, ...]], dict] | None = None,
            has_classes: bool = True, skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every measure on collected features: per encoder row, across towers, and between rows.

    Args:
        train: the training split's features (fits the probes, the k-NN bank).
        test: the held-out split's features (everything is scored on them).
        featurizers: the encoders' kinds, stages and tower modalities.
        options: how much to measure (``analysis_items``, ``seed``).
        pairs: embeddings of positive pairs, or ``None`` (alignment and uniformity are then skipped).
        invariance: ``(featurizer, towers) -> invariance report`` for data with generative factors, or ``None``.
        has_classes: whether the data set has classes at all (the reason given when labels are missing).
        skipped: sections already known not to run, with their reasons.

    Per-factor decodability is measured on the trained rows and the raw / given baselines, not on the
    randomly initialised copies (a random network keeps what its input had; the raw row already says that).

    Returns:
        ``{"encoders": row -> measures, "cross_modal": featurizer -> measures across its towers,
        "comparison": [...], "skipped": name -> reason}``.
    """
    skipped = {**(skipped or {}), **_skipped_measures(train, test, has_classes, options)}
    if not (set(train.factors) & set(test.factors)):
        skipped.setdefault("decodability", "the data has no generative factors")
    rows = featurizers.rows(test.features)
    encoders: dict[str, dict[str, Any]] = {}
    steps = len(rows) * (1 if invariance is None else 2) + 1
    with item_bar(steps, "measures", enabled=options.progress, unit="step") as bar:
        for row, (name, towers) in rows.items():
            x_tr, x_te = _row_features(train, name, towers), _row_features(test, name, towers)
            encoders[row] = {"kind": featurizers.kinds[name], "stage": featurizers.stages.get(name),
                             "tower": towers[0] if row != name else None,
                             "towers": {t: int(test.features[name][t].shape[1]) for t in towers},
                             **_row_metrics(x_tr, x_te, train, test, options, skipped,
                                            decode=not name.startswith("random_"))}
            bar.update(1)
        cross = _measure_rest(train, test, featurizers, rows, encoders, skipped, options=options, pairs=pairs,
                              invariance=invariance, bar=bar)
        comparison = _comparisons(test, rows, featurizers, options)
        bar.update(1)
    if not comparison:
        skipped.setdefault("comparison", "one encoder only, so there is nothing to compare it with")
    return {"encoders": encoders, "cross_modal": cross, "comparison": comparison, "skipped": skipped}


def _measure_rest(train: Collected, test: Collected, featurizers: Featurizers, rows, encoders, skipped, *,
                  options: EvalOptions,
                  pairs: Pairs | None, invariance, bar) -> dict[str, dict[str, Any]]:
    """Across towers, positive pairs and invariance: the parts of :func:`measure` after the rows' own measures
    (which it adds to ``encoders``); returns the cross-modal section."""
    cross: dict[str, dict[str, Any]] = {}
    for name, towers in test.features.items():
        if len(towers) >= 2:
            cross[name] = {"towers": list(towers),
                           **_tower_analysis(dict(towers), options.analysis_items, retrieval=name in featurizers.shared,
                                             similarity=featurizers.similarity.get(name))}
    if not cross:
        skipped.setdefault("retrieval", "one tower only, so there is nothing to retrieve across")
        skipped.setdefault("pid", "one tower only, so there is no second representation to share information with")
    # the trained encoder's head (and a fission model's parts): its backbone says nothing new here
    decomposed = [n for n in cross if featurizers.kinds.get(n) == "trained" and featurizers.stages.get(n) != "backbone"]
    targets = pid_targets(train, test, min(options.analysis_items, len(train)),
                          min(options.analysis_items, len(test))) if decomposed else {}
    for name in decomposed:
        pid = tower_pid(train, test, name, tuple(list(test.features[name])[:2]), targets, seed=options.seed)
        if pid:
            cross[name]["pid"] = pid
        else:
            skipped.setdefault("pid", "no labels or generative factors (with 2 to "
                                      f"{PID_MAX_CLASSES} values) to decompose the towers' information about")

    if pairs is None:
        skipped.setdefault("pairs", "no positive pairs (a second view of each item) to measure alignment and "
                                    "uniformity on")
    else:
        for name, views in pairs.views.items():
            head = name in featurizers.shared
            for row, (rname, towers) in rows.items():
                if rname != name:
                    continue
                own = {v: e for v, e in views.items() if pairs.towers.get(v, v) in towers}
                geometry, information = _split_information(
                    _pair_geometry(own, pairs.towers, head=head, temperature=pairs.temperature if head else None))
                encoders[row]["geometry"].update(geometry)
                augmented = augmentation_sets(own, pairs.towers, towers)
                if augmented is not None:
                    encoders[row].setdefault("sets", {})["augmentations"] = set_summary(*augmented, search=False)
                if information:
                    encoders[row]["information"] = information
            if name in cross and name not in rows and head:  # towers that are separate rows, in one space
                geometry = _pair_geometry(views, pairs.towers, head=True, temperature=pairs.temperature)
                if geometry:
                    cross[name]["geometry"] = geometry
                paired = modality_sets(views, pairs.towers)
                if paired is not None:
                    cross[name]["sets"] = set_summary(*paired, search=False)

    if invariance is None:
        skipped.setdefault("invariance", "the data has no generative factors")
    else:
        for row, (name, towers) in rows.items():
            encoders[row]["invariance"] = invariance(name, towers)
            bar.update(1)
    return cross


def _positive_pairs(model: Encoder, views: ViewGenerator, batch: Batch, stage: str,
                    options: EvalOptions) -> dict[str, Tensor]:
    """Embeddings of every training view of the items (seeded): view name -> (N, D)."""
    generator = torch.Generator().manual_seed(options.seed + 2)
    size = options.batch_size
    chunks = [encode_pairs(model, views, to_device(slice_batch(batch, slice(s, s + size)), "cpu"), generator,
                           stage=stage) for s in range(0, len(batch), size)]
    return {view: torch.cat([chunk[view] for chunk in chunks]) for view in chunks[0]}


class _SharedRenders:
    """The invariance report of every row from one rendering of each resampled batch, and one forward pass
    of each featurizer per batch: ``resample`` is memoised on the generator's state (the report draws the
    same numbers for every encoder), features on the batch."""

    def __init__(self, resample, featurizers: Mapping[str, Featurizer], batch_size: int) -> None:
        self._resample, self._featurizers, self._size = resample, featurizers, batch_size
        self._renders: dict[tuple, tuple[Tensor, Batch]] = {}
        self._features: dict[tuple[int, str], dict[str, Tensor]] = {}
        self._alive: list[Batch] = []  # keeps the batches whose id() keys the features

    def resample(self, batch: Batch, names, generator: torch.Generator) -> Batch:
        key = (id(batch), tuple(names), generator.get_state().numpy().tobytes())
        if key not in self._renders:
            changed = self._resample(batch, names, generator)
            self._renders[key] = (generator.get_state(), changed)
            self._alive += [batch, changed]
        state, changed = self._renders[key]
        generator.set_state(state)
        return changed

    def encoder(self, name: str, towers: tuple[str, ...]):
        def encode(batch: Batch) -> Tensor:
            key = (id(batch), name)
            if key not in self._features:
                self._alive.append(batch)
                featurize, size = self._featurizers[name], self._size
                parts = [featurize(to_device(slice_batch(batch, slice(s, s + size)), "cpu"))
                         for s in range(0, len(batch), size)]
                self._features[key] = {t: torch.cat([p[t] for p in parts]) for t in parts[0]}
            return concat_towers({t: self._features[key][t] for t in towers})
        return encode


def _featurizers(run: LoadedRunLike, options: EvalOptions, example: Batch,
                 names: Mapping[str, str]) -> tuple[dict, Featurizers, dict]:
    """(featurizers, what they are, models by featurizer name); ``example`` tells whether raw inputs exist."""
    featurizers: dict[str, Featurizer] = {}
    kinds: dict[str, str] = {}
    stages: dict[str, str | None] = {}
    models: dict[str, Encoder] = {}
    stages_read = model_stages(run.model, options.stages)
    for stage in stages_read:
        name = names.get(stage, stage)
        featurizers[name] = trained_featurizer(run.model, run.views, stage=stage)
        kinds[name], stages[name], models[name] = "trained", stage, run.model
    if options.baselines:
        if raw_inputs(example) is not None:
            featurizers["raw"], kinds["raw"], stages["raw"] = raw_featurizer, "baseline", None
        if isinstance(run.model, torch.nn.Module):
            fresh = random_init_copy(run.model, seed=options.seed)
            for stage in stages_read:
                name = f"random_{names.get(stage, stage)}"
                featurizers[name] = trained_featurizer(fresh, run.views, stage=stage)
                kinds[name], stages[name], models[name] = "baseline", stage, fresh
    modalities = tower_sources(run.model, run.views)
    shared = frozenset(n for n, s in stages.items() if s in ("head", "shared"))
    return featurizers, Featurizers(kinds, stages, modalities, shared, _coordination(run.model, stages, kinds)), models


def _coordination(model, stages: Mapping[str, str | None], kinds: Mapping[str, str]) -> dict[str, Any]:
    """The trained model's learned coordination function, for the featurizer whose codes it compares (a fission
    model's shared code, else the head)."""
    fn = getattr(model, "coordination", None)
    if fn is None:
        return {}
    stage = "shared" if getattr(model, "shared_dim", None) else "head"
    return {n: fn for n, s in stages.items() if s == stage and kinds.get(n) == "trained"}


def model_stages(model: Encoder, requested: tuple[str, ...]) -> tuple[str, ...]:
    """The stages to read: those requested, and a fission model's shared and private codes (``model.stages``)
    whenever its head is requested (they are parts of the head's output).

    Example:
        >>> from types import SimpleNamespace
        >>> model_stages(SimpleNamespace(stages=("head", "backbone", "shared", "private")), ("head",))
        ('head', 'shared', 'private')
        >>> model_stages(object(), ("head", "backbone"))
        ('head', 'backbone')
    """
    extra = tuple(s for s in getattr(model, "stages", ()) if s not in STAGES) if "head" in requested else ()
    return tuple(requested) + extra


def tower_sources(model: Encoder, views: ViewGenerator) -> dict[str, str]:
    """Tower name -> the data modality its views are made from (``view_sources``, else the view's modality):
    CMC's L and ab towers both read the image; an image tower and a caption tower read different data.

    Example:
        >>> from types import SimpleNamespace
        >>> views = SimpleNamespace(view_names=("L", "ab"), view_modalities={"L": "L", "ab": "ab"},
        ...                         view_sources={"L": "image", "ab": "image"})
        >>> tower_sources(SimpleNamespace(view_towers={"L": "L", "ab": "ab"}), views)
        {'L': 'image', 'ab': 'image'}
    """
    sources = getattr(views, "view_sources", None) or {}
    out: dict[str, str] = {}
    for view, tower in view_towers(model, views).items():
        out.setdefault(tower, str(sources.get(view, views.view_modalities.get(view, view))))
    return out


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


def check_out_dir(out_dir: str | Path) -> None:
    """Refuse an output folder that cannot take the results before any work is done.

    Raises:
        ValueError: ``out_dir`` is a file, or ``out_dir/metrics.json`` a folder.
    """
    for path in (Path(out_dir), Path(out_dir) / "metrics.json"):
        if path.exists() and path.is_dir() != (path == Path(out_dir)):
            raise ValueError(f"cannot write the evaluation: {path} is a {'folder' if path.is_dir() else 'file'}")


def _figure_sample(collected: Collected, rows: Mapping[str, tuple[str, tuple[str, ...]]]):
    from contrastlab.evaluation.run_figures import FigureSample

    sample = collected.figure_sample()
    return FigureSample(features={row: _row_features(sample, name, towers) for row, (name, towers) in rows.items()},
                        labels=sample.labels, images=sample.images)


#: Prefix of the hidden folder inside an output folder where :func:`finish` writes before it publishes.
_STAGE = ".contrastlab-new-"


def _made_folders(out_dir: Path) -> list[Path]:
    """Create ``out_dir`` (and missing parents); the folders that did not exist, deepest first."""
    missing = []
    for folder in (out_dir, *out_dir.parents):
        if folder.exists():
            break
        missing.append(folder)
    out_dir.mkdir(parents=True, exist_ok=True)
    return missing


def _sweep_stages(out_dir: Path) -> None:
    """Remove stages that killed processes left in ``out_dir`` (their process is gone)."""
    import os
    import shutil

    for path in out_dir.glob(_STAGE + "*"):
        pid = path.name[len(_STAGE):]
        if not (path.is_dir() and pid.isdigit()) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:  # alive, another user's: leave it
            pass


def _old_figures(out_dir: Path) -> set[str]:
    """The figure files the evaluation already in ``out_dir`` lists (to remove those the new one does not write)."""
    try:
        figures = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8")).get("figures", {})
        return {f for f in figures.values() if isinstance(f, str) and "/" not in f and f.endswith(".png")}
    except (OSError, ValueError, RecursionError, AttributeError):
        return set()


def _publish(stage: Path, out_dir: Path) -> None:
    """Move every file of ``stage`` into ``out_dir`` (``metrics.json`` last), each by one rename, then remove the
    figures of the previous evaluation that the new one does not have. Files that are not the evaluation's stay."""
    import os

    from contrastlab.files import fsync_dir

    stale = _old_figures(out_dir)
    files = sorted(stage.iterdir(), key=lambda p: p.name == "metrics.json")
    for path in files:  # find out before anything moves
        target = out_dir / path.name
        if target.is_dir() and not target.is_symlink():
            raise ValueError(f"cannot write the evaluation: {target} is a folder")
    for path in files:
        os.replace(path, out_dir / path.name)
    for name in stale - {p.name for p in files}:
        old = out_dir / name
        if old.is_file() and not old.is_symlink():
            old.unlink()
    stage.rmdir()
    fsync_dir(out_dir)


def finish(metrics: dict[str, Any], train: Collected, test: Collected, featurizers: Featurizers, *,
           options: EvalOptions, out_dir: str | Path | None, started: float, metrics_csv: Path | None = None,
           class_names=None, report: str | None = None) -> dict[str, Any]:
    """Add the verdict and the figures to ``metrics``, time it, and write ``metrics.json`` into ``out_dir``.

    Everything is written first into a hidden folder inside ``out_dir`` and moved into place only once all of it
    is written: an evaluation that fails (a full disk, an unreadable log, Ctrl-C) leaves ``out_dir`` as it was,
    with no temporary file, and removes ``out_dir`` itself when it made it.

    Args:
        report: the title of a ``report.html`` to write beside ``metrics.json`` (``contrastlab analyze``), or ``None``.
    """
    from contrastlab.evaluation.verdict import verdict

    metrics.setdefault("figures", {})
    if out_dir is None:
        metrics["verdict"] = verdict(metrics)
        metrics["seconds"] = round(time.perf_counter() - started, 3)
        return metrics
    import os
    import shutil

    out_dir = Path(out_dir)
    made = _made_folders(out_dir)
    stage = out_dir / f"{_STAGE}{os.getpid()}"
    try:
        _sweep_stages(out_dir)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        if options.figures:
            from contrastlab.evaluation.run_figures import write_figures

            rows = featurizers.rows(test.features)
            draw = [r for r, (name, _) in rows.items() if featurizers.kinds.get(name) == "trained"]
            metrics["figures"] = write_figures(
                stage, metrics=metrics, train=_figure_sample(train, rows), test=_figure_sample(test, rows),
                draw=draw, class_names=class_names, metrics_csv=metrics_csv, seed=options.seed)
        metrics["verdict"] = verdict(metrics)
        metrics["seconds"] = round(time.perf_counter() - started, 3)
        write_json(metrics, stage / "metrics.json")
        if report is not None:
            from contrastlab.report.html import write_report

            write_report([stage], stage / "report.html", title=report, names=[out_dir.resolve().name or str(out_dir)])
        _publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in made:  # deepest first; only folders this call made, and only while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return metrics


def evaluate(run: LoadedRunLike, *, options: EvalOptions = EvalOptions(), out_dir: str | Path | None = None,
             names: Mapping[str, str] | None = None, source: str = "run", report: str | None = None) -> dict:
    """Evaluate a loaded run; write ``metrics.json`` and the figures into ``out_dir`` when given.

    Args:
        run: a :class:`LoadedRunLike` (``contrastlab.training.load_run(run_dir)``).
        options: what to evaluate.
        out_dir: folder for ``metrics.json`` and the PNG figures; nothing is written when ``None``.
        names: the row name of each stage (default: the stage's own name), e.g. ``{"head": "encoder"}``.
        source: what was evaluated, recorded as ``run.source`` (``"run"``, or ``"encoder"`` for your own).
        report: the title of a ``report.html`` to write into ``out_dir`` with the results, or ``None``.

    Returns:
        The metrics as a JSON-ready dict: ``run``, ``items`` (split → items evaluated), ``selection``
        (split → how they were chosen), ``skipped`` (measure or section → why it did not run, e.g. no
        labels), ``encoders`` (row → measures; towers of different modalities are separate rows
        ``stage:tower``), ``cross_modal`` (stage → retrieval, CCA and pair geometry across its towers),
        ``comparison`` (CKA, mutual k-NN and SVCCA between rows), ``verdict``, ``figures``
        (figure name → file name), ``seconds``.

    Raises:
        ValueError: when a split is too small or an option is bad, or ``out_dir`` cannot take the results.
    """
    if out_dir is not None:  # find out now, not after the figures were replaced
        check_out_dir(out_dir)
    names = dict(names or {})
    started = time.perf_counter()
    train_ds, test_ds = run.dataset("train"), run.dataset("test")
    loader = LoaderOptions(num_workers=_workers(run, options))
    selected = {"train": Selection.of(train_ds, options.max_items, options.seed),
                "test": Selection.of(test_ds, options.max_items, options.seed + 1)}
    known = {split: len(sel.indices) for split, sel in selected.items() if sel.indices is not None}
    if any(n < 2 for n in known.values()):  # a stream's count is known only once it is read
        _too_few(known)
    example = to_device(selected["test"].first(test_ds, 2, LoaderOptions(num_workers=0), options.batch_size), "cpu")
    featurizers, about, models = _featurizers(run, options, example, names)
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

    pair_batch = selected["test"].first(test_ds, options.pair_items, loader, options.batch_size)
    views = {name: _positive_pairs(model, run.views, pair_batch, about.stages[name], options)
             for name, model in models.items()}
    pairs = Pairs(views, view_towers(run.model, run.views), _temperature(run))
    del pair_batch

    invariance: Callable[[str, tuple[str, ...]], dict] | None = None
    skipped: dict[str, str] = {}
    if options.baselines and "raw" not in featurizers:
        skipped["raw_baseline"] = "the items have no fixed-size numeric input to use as raw features"
    if options.baselines and not isinstance(run.model, torch.nn.Module):
        skipped["random_baseline"] = "the encoder is not a torch module: there are no weights to draw anew"
    if not options.invariance:
        skipped["invariance"] = "turned off (EvalOptions.invariance)"
    elif hasattr(test_ds, "resample") and getattr(test_ds, "factor_names", ()):
        if counts["test"] < _MIN_INVARIANCE_ITEMS:
            skipped["invariance"] = f"needs at least {_MIN_INVARIANCE_ITEMS} test items"
        else:
            inv_batch = selected["test"].first(test_ds, options.invariance_items, loader, options.batch_size)
            shared = _SharedRenders(test_ds.resample, featurizers, options.batch_size)

            def report_of(name: str, towers: tuple[str, ...]) -> dict:
                return invariance_report(inv_batch, shared.encoder(name, towers), shared.resample, seed=options.seed)

            invariance = report_of

    measured = measure(train, test, about, options=options, pairs=pairs, invariance=invariance,
                       has_classes=getattr(test_ds, "num_classes", None) is not None, skipped=skipped)
    class_names = _class_names(test_ds)
    info = {"run_dir": str(run.run_dir), "source": source, "objective": run.objective,
            "dataset": getattr(train_ds, "name", "?"), "step": getattr(run, "step", None), "config": run.config}
    if class_names is not None:
        info["class_names"] = class_names
    metrics = {
        "run": info,
        "items": counts,
        "selection": {split: selected[split].describe(ds, counts[split])
                      for split, ds in (("train", train_ds), ("test", test_ds))},
        **measured,
    }
    return finish(metrics, train, test, about, options=options, out_dir=out_dir, started=started,
                  metrics_csv=getattr(run, "metrics_path", None), class_names=class_names, report=report)


def _class_names(dataset) -> list[str] | None:
    """The data set's class names in label order, or ``None`` when it has none."""
    names = getattr(dataset, "class_names", None)
    n = getattr(dataset, "num_classes", None)
    if names is None or n is None or len(names) != n:
        return None
    return [str(c) for c in names]


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
