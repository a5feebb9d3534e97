r"""What did *your* encoder learn? The evaluation of a run, for features and encoders from anywhere.

Two ways in, one set of measures (those of ``contrastlab eval``, :mod:`~contrastlab.evaluation.pipeline`):

* **features** computed elsewhere — arrays in Python, or a file (:func:`load_features`: ``.npz``,
  ``.safetensors`` or ``.parquet``). Keys (the ``npz`` data source's, plus what only features have):

  ============================  ====================================================================
  ``x``, ``y``                  features (N, D) and labels (N,) (ints or strings) of the training items
  ``x_test``, ``y_test``        the held-out items; without them a fixed stratified 80/20 split of ``x``
  ``x2``, ``x2_test``           a second view of the same items (rows are positive pairs): alignment,
                                uniformity
  ``paired``, ``paired_test``   features of a paired modality (a caption tower's), row-paired with ``x``:
                                each tower measured alone, plus cross-modal retrieval, CCA and CKA
  ``factor_<name>``             a generative factor's values (N,) for ``x`` (``test_factor_<name>`` for
                                ``x_test``): decodability per factor
  ``baseline_<name>``           features of a baseline encoder of the same items (``test_baseline_<name>``),
                                measured beside yours (e.g. raw pixels, a random network)
  ``images``, ``test_images``   the items' images (N, C, H, W) or (N, H, W, C), uint8 or floats in [0, 1]:
                                nearest-neighbour grids
  ``class_names``               the class names in label order (strings; ``.safetensors``: metadata)
  ============================  ====================================================================

* **an encoder** — any torch module or function from a batch of inputs to (N, D) features — over a
  contrastlab data set: the same passes as ``eval`` (raw-input and random-weights baselines, positive pairs
  from a view generator, and the Shapes world's invariance report, which re-renders items with one factor
  changed and so needs the encoder itself).

Sections that need inputs the caller did not give are skipped, each with its reason under ``skipped``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from contrastlab.errors import did_you_mean
from contrastlab.evaluation.feature_files import as_array, feature_matrix, load_features
from contrastlab.evaluation.features import Collected
from contrastlab.evaluation.pipeline import (
    EvalOptions, Featurizers, Pairs, check_out_dir, evaluate, finish, measure,
)
from contrastlab.evaluation.selection import subset

#: The name of the row of the features analysed (and of its towers, ``features:x`` and ``features:paired``).
ROW = "features"


def _vector(value, name: str, n: int) -> np.ndarray:
    a = as_array(value, name)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must have one value per row ({n}); got shape {a.shape}")
    return a


def _labels(train, test, n_train: int, n_test: int, class_names) -> tuple[Tensor | None, Tensor | None, list | None]:
    """Integer labels for both splits: strings map to 0..K-1 in sorted order (and name the classes)."""
    if train is None and test is None:
        if class_names is not None:
            raise ValueError("class_names were given without labels (y)")
        return None, None, None
    if train is None or test is None:
        raise ValueError("labels must be given for both splits (y and y_test) or neither")
    ytr, yte = _vector(train, "y", n_train), _vector(test, "y_test", n_test)
    if ytr.dtype.kind in "USO" or yte.dtype.kind in "USO":
        if not (ytr.dtype.kind in "USO" and yte.dtype.kind in "USO"):
            raise ValueError("y and y_test must both be strings or both be integers")
        names = sorted(set(ytr.astype(str).tolist()) | set(yte.astype(str).tolist()))
        if class_names is not None:
            raise ValueError("class_names are given by the string labels already; drop class_names")
        lookup = {c: i for i, c in enumerate(names)}
        return (torch.tensor([lookup[c] for c in ytr.astype(str).tolist()]),
                torch.tensor([lookup[c] for c in yte.astype(str).tolist()]), names)
    for a, name in ((ytr, "y"), (yte, "y_test")):
        if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(np.mod(a, 1) == 0)):
            raise ValueError(f"{name} must hold integer class labels or strings; got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} has a negative class label ({int(a.min())})")
    ytr_t, yte_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    if class_names is not None:
        names = [str(c) for c in as_array(class_names, "class_names").reshape(-1).tolist()]
        top = int(max(ytr_t.max(), yte_t.max())) + 1
        if len(names) < top:
            raise ValueError(f"class_names names {len(names)} classes but the labels go up to {top - 1}")
        class_names = names
    return ytr_t, yte_t, class_names


def _images(value, name: str, n: int) -> Tensor | None:
    if value is None:
        return None
    a = as_array(value, name)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] != n:
        raise ValueError(f"{name} must be {n} images (N, C, H, W) or (N, H, W, C); got shape {a.shape}")
    if a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels; got shape {a.shape}")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a)).float().div_(255.0)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
        raise ValueError(f"{name} must be uint8 or floats in [0, 1]")
    return t


def _split_train(arrays: dict[str, Any], labels) -> dict[str, Any]:
    """A fixed stratified 80/20 split of the rows of every training key, for data without ``x_test``."""
    from contrastlab.data._split import split_indices

    n = feature_matrix(arrays["x"], "x").shape[0]
    if n < 4:
        raise ValueError(f"x has {n} rows; give at least 4 (or x_test) to split off held-out items")
    y = None if labels is None else _vector(labels, "y", n)
    try:
        rows = {s: split_indices(n, s, labels=None if y is None else np.unique(y, return_inverse=True)[1])
                for s in ("train", "test")}
    except ValueError:
        rows = {s: split_indices(n, s) for s in ("train", "test")}
    out: dict[str, Any] = {}
    for key, value in arrays.items():
        if key == "class_names":
            out[key] = value
            continue
        test_key = "x_test" if key == "x" else "y_test" if key == "y" else f"{key}_test" if key in ("x2", "paired") \
            else "test_images" if key == "images" else f"test_{key}"
        a = as_array(value, key)
        if a.shape[:1] != (n,):
            raise ValueError(f"{key} must have one row per row of x ({n}); got shape {a.shape}")
        out[key], out[test_key] = a[rows["train"]], a[rows["test"]]
    return out


def _prefixed(arrays: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _pairs(split: dict[str, Tensor], tower_names: tuple[str, str], limit: int) -> Pairs | None:
    views: dict[str, Tensor] = {}
    towers: dict[str, str] = {}
    if "x2" in split:
        views.update({"view1": split["x"][:limit], "view2": split["x2"][:limit]})
        towers.update({"view1": tower_names[0], "view2": tower_names[0]})
    if "paired" in split:
        views.setdefault(tower_names[0], split["x"][:limit])
        towers.setdefault(tower_names[0], tower_names[0])
        views[tower_names[1]] = split["paired"][:limit]
        towers[tower_names[1]] = tower_names[1]
    return Pairs({ROW: views}, towers, None) if len(views) >= 2 else None


def _analyze_arrays(arrays: dict[str, Any], *, options: EvalOptions, out_dir, towers: tuple[str, str],
                    source: str, started: float, report: str | None = None) -> dict[str, Any]:
    if "x_test" not in arrays:
        arrays = _split_train(arrays, arrays.get("y"))
    split: dict[str, dict[str, Tensor]] = {"train": {}, "test": {}}
    for key, part, name in (("x", "train", "x"), ("x_test", "test", "x"), ("x2", "train", "x2"),
                            ("x2_test", "test", "x2"), ("paired", "train", "paired"), ("paired_test", "test", "paired")):
        if arrays.get(key) is not None:
            split[part][name] = feature_matrix(arrays[key], key)
    for name in ("x2", "paired"):
        if (name in split["train"]) != (name in split["test"]):
            raise ValueError(f"{name} must be given for both splits ({name} and {name}_test) or neither")
    n = {s: split[s]["x"].shape[0] for s in split}
    for s, d in split.items():
        for name, a in d.items():
            if a.shape[0] != n[s]:
                raise ValueError(f"{name if s == 'train' else name + '_test'} has {a.shape[0]} rows but "
                                 f"{'x' if s == 'train' else 'x_test'} has {n[s]}")
    for s, key in (("train", "x2"), ("test", "x2")):
        if key in split[s] and split[s][key].shape[1] != split[s]["x"].shape[1]:
            raise ValueError(f"x2 is a second view of the same encoder and must have x's width "
                             f"({split[s]['x'].shape[1]}); got {split[s][key].shape[1]}")
    if any(v < 2 for v in n.values()):
        raise ValueError(f"need at least 2 items in each split; got {n['train']} train, {n['test']} test")
    ytr, yte, class_names = _labels(arrays.get("y"), arrays.get("y_test"), n["train"], n["test"],
                                    arrays.get("class_names"))
    factors = {"train": {k: torch.as_tensor(_vector(v, f"factor_{k}", n["train"]))
                         for k, v in _prefixed(arrays, "factor_").items()},
               "test": {k: torch.as_tensor(_vector(v, f"test_factor_{k}", n["test"]))
                        for k, v in _prefixed(arrays, "test_factor_").items()}}
    if set(factors["train"]) != set(factors["test"]):
        raise ValueError(f"factors must be given for both splits: factor_* has {sorted(factors['train'])}, "
                         f"test_factor_* has {sorted(factors['test'])}")
    baselines = {"train": _prefixed(arrays, "baseline_"), "test": _prefixed(arrays, "test_baseline_")}
    if set(baselines["train"]) != set(baselines["test"]):
        raise ValueError(f"baselines must be given for both splits: baseline_* has {sorted(baselines['train'])}, "
                         f"test_baseline_* has {sorted(baselines['test'])}")
    a, b = towers
    kinds, stages = {ROW: "trained"}, {ROW: None}
    features: dict[str, dict[str, dict[str, Tensor]]] = {}
    for s in ("train", "test"):
        own = {a: split[s]["x"]}
        if "paired" in split[s]:
            own[b] = split[s]["paired"]
        features[s] = {ROW: own}
        for name, value in baselines[s].items():
            row = f"baseline_{name}" if name == ROW else name
            x = feature_matrix(value, f"{'baseline_' if s == 'train' else 'test_baseline_'}{name}")
            if x.shape[0] != n[s]:
                raise ValueError(f"baseline {name!r} has {x.shape[0]} rows in the {s} split, the features {n[s]}")
            features[s][row] = {"baseline": x}
            kinds[row], stages[row] = "baseline", None
    shared = frozenset({ROW}) if "paired" in split["test"] and split["test"]["paired"].shape[1] == split["test"]["x"].shape[1] \
        else frozenset()
    about = Featurizers(kinds, stages, {a: a, b: b}, shared)
    max_items = options.max_items
    rows = {s: (subset(n[s], max_items, options.seed + (s == "test")) if max_items else None) for s in n}
    collected = {}
    for s, y, images_key in (("train", ytr, "images"), ("test", yte, "test_images")):
        take = rows[s]
        pick = (lambda t: t) if take is None else (lambda t: t[take])
        images = _images(arrays.get(images_key), images_key, n[s])
        keep = min(options.figure_items, n[s] if take is None else len(take))
        image_rows = None if images is None else torch.arange(keep)
        collected[s] = Collected(
            features={name: {t: pick(f) for t, f in towers_.items()} for name, towers_ in features[s].items()},
            labels=None if y is None else pick(y),
            images=None if images is None else pick(images)[:keep],
            image_rows=image_rows, factors={k: pick(v) for k, v in factors[s].items()})
    test_split = {k: (v if rows["test"] is None else v[rows["test"]]) for k, v in split["test"].items()}
    pairs = _pairs(test_split, towers, options.pair_items)
    skipped = {"invariance": "features alone cannot be re-rendered with one factor changed: analyse the encoder "
                             "itself (contrastlab.analyze(encoder=..., dataset=...))"}
    if not baselines["train"]:
        skipped["baselines"] = ("no baseline features were given (baseline_<name> keys): there is nothing to say "
                                "whether these features beat raw inputs or a random network")
    measured = measure(collected["train"], collected["test"], about, options=options, pairs=pairs, invariance=None,
                       has_classes=ytr is not None, skipped=skipped)
    info: dict[str, Any] = {"run_dir": None, "source": "features", "objective": None, "dataset": source,
                            "step": None, "config": None}
    if class_names is not None:
        info["class_names"] = class_names
    counts = {s: len(collected[s]) for s in collected}
    metrics = {"run": info, "items": counts,
               "selection": {s: (f"all {n[s]}" if rows[s] is None else f"a seeded random {counts[s]} of {n[s]}")
                             for s in n},
               **measured}
    return finish(metrics, collected["train"], collected["test"], about, options=options, out_dir=out_dir,
                  started=started, class_names=class_names, report=report)


class _FunctionModel:
    """A user's encoder (a module or a function per modality) behind the :class:`~contrastlab.evaluation.features.Encoder`
    protocol: every view of a modality goes through that modality's encoder; the stage is ignored."""

    def __init__(self, encoders: Mapping[str, Callable], view_modalities: Mapping[str, str]) -> None:
        self.encoders, self.view_modalities = dict(encoders), dict(view_modalities)

    @torch.no_grad()
    def encode(self, views, *, stage: str = "head", lengths=None) -> dict[str, Tensor]:
        out = {}
        for view, x in views.items():
            modality = self.view_modalities.get(view, view)
            if modality not in self.encoders:
                continue
            z = self.encoders[modality](x)
            z = torch.as_tensor(z.detach() if isinstance(z, Tensor) else np.asarray(z))
            if z.ndim < 2 or z.shape[0] != x.shape[0]:
                raise ValueError(f"the encoder of {modality!r} returned shape {tuple(z.shape)} for {x.shape[0]} "
                                 f"items; it must return (N, D) features")
            out[view] = z.reshape(z.shape[0], -1).float()
        return out


class _Modules(nn.Module):
    """The user's modules, so that the random-weights baseline can redraw them."""

    def __init__(self, encoders: Mapping[str, nn.Module], view_modalities: Mapping[str, str]) -> None:
        super().__init__()
        self.towers = nn.ModuleDict(dict(encoders))
        self.view_modalities = dict(view_modalities)

    def encode(self, views, *, stage: str = "head", lengths=None) -> dict[str, Tensor]:
        return _FunctionModel(dict(self.towers.items()), self.view_modalities).encode(views, stage=stage)


class _EncoderRun:
    """The fields of a loaded run that :func:`~contrastlab.evaluation.pipeline.evaluate` reads, for a user's encoder."""

    def __init__(self, model, views, datasets: dict[str, Any]) -> None:
        self.model, self.views, self._datasets = model, views, datasets
        self.run_dir, self.config, self.objective, self.metrics_path, self.step, self.temperature = \
            None, None, None, None, None, None

    def dataset(self, split: str):
        return self._datasets[split]


def _datasets(dataset, test_dataset, dataset_options: Mapping[str, Any], seed: int) -> dict[str, Any]:
    if isinstance(dataset, str):
        from contrastlab.data.registry import build_dataset

        if test_dataset is not None:
            raise ValueError("test_dataset goes with a Dataset object; a registered name builds its own test split")
        return {s: build_dataset(dataset, split=s, seed=seed, **dict(dataset_options)) for s in ("train", "test")}
    if dataset_options:
        raise ValueError("dataset_options go with a registered data set name, not a Dataset object")
    if test_dataset is None:
        raise ValueError("give test_dataset (the held-out items) with a Dataset object, or a registered name "
                         "such as 'shapes' whose test split is built for you")
    return {"train": dataset, "test": test_dataset}


def _analyze_encoder(encoder, dataset, *, test_dataset, dataset_options, views, options: EvalOptions, out_dir,
                     seed: int, report: str | None = None) -> dict[str, Any]:
    from contrastlab.views.pairs import IdentityViews
    from contrastlab.views.registry import build_views

    datasets = _datasets(dataset, test_dataset, dataset_options or {}, seed)
    train = datasets["train"]
    if isinstance(views, str):
        views = build_views(views, train)
    elif views is None:
        views = IdentityViews(train)
    encoders = dict(encoder) if isinstance(encoder, Mapping) else None
    if encoders is None:
        modality = next(iter(views.view_modalities.values()))
        encoders = {modality: encoder}
    unknown = [m for m in encoders if m not in train.modalities]
    if unknown:
        raise ValueError(f"the data set has no modality {unknown[0]!r}{did_you_mean(unknown[0], train.modalities)}; "
                         f"it has {', '.join(train.modalities)}")
    for m, e in encoders.items():
        if not callable(e):
            raise ValueError(f"the encoder of {m!r} must be a torch module or a function of a batch; got {type(e).__name__}")
    modules = all(isinstance(e, nn.Module) for e in encoders.values())
    model = _Modules(encoders, views.view_modalities) if modules else _FunctionModel(encoders, views.view_modalities)
    was_training = {m: e.training for m, e in encoders.items() if isinstance(e, nn.Module)}
    for e in encoders.values():
        if isinstance(e, nn.Module):
            e.eval()
    try:
        metrics = evaluate(_EncoderRun(model, views, datasets), options=options, out_dir=out_dir,
                           names={"head": "encoder"}, source="encoder", report=report)
    finally:
        for m, flag in was_training.items():
            encoders[m].train(flag)
    metrics["run"]["dataset"] = getattr(train, "name", str(dataset))
    return metrics


def analyze(x=None, y=None, *, x_test=None, y_test=None, x2=None, x2_test=None, paired=None, paired_test=None,
            factors: Mapping[str, Any] | None = None, test_factors: Mapping[str, Any] | None = None,
            baselines: Mapping[str, tuple[Any, Any]] | None = None, class_names: Sequence[str] | None = None,
            images=None, test_images=None, towers: tuple[str, str] = ("x", "paired"),
            encoder=None, dataset=None, test_dataset=None, dataset_options: Mapping[str, Any] | None = None,
            views=None, options: EvalOptions | None = None, out_dir: str | Path | None = None,
            report: bool = True) -> dict[str, Any]:
    """Analyse features or an encoder from anywhere, as ``contrastlab eval`` analyses a run.

    Give either features (``x``, and usually ``y``; see the module docstring for every key) or an
    ``encoder`` and a ``dataset``.

    Args:
        x: (N, D) features of the training items (numpy or torch).
        y: (N,) labels, ints or strings.
        x_test: (M, D) features of held-out items; without them a fixed stratified 80/20 split of ``x``.
        y_test: (M,) their labels.
        x2: (N, D) a second view of the same items by the same encoder (positive pairs).
        x2_test: (M, D) the same for the held-out items.
        paired: (N, E) features of a paired modality (e.g. the caption tower's), row-paired with ``x``.
        paired_test: (M, E) the same for the held-out items.
        factors: factor name -> (N,) values of the training items.
        test_factors: factor name -> (M,) values of the held-out items.
        baselines: baseline name -> ``(train (N, B), test (M, B))`` features of another encoder of the same items.
        class_names: the class names in label order (integer labels).
        images: (N, C, H, W) or (N, H, W, C) images of the training items, for the neighbour grids.
        test_images: the held-out items' images.
        towers: the names of ``x``'s tower and ``paired``'s tower (e.g. ``("image", "caption")``).
        encoder: a torch module or function mapping a batch of inputs (N, ...) to (N, D) features, or a
            modality -> encoder mapping for data with several modalities.
        dataset: a registered data set name (``"shapes"``; both splits are built) or a data set object.
        test_dataset: the held-out data set object, with a data set object.
        dataset_options: options of a registered data set (``{"n_items": 2000}``).
        views: a registered view generator name (``"simclr"``) or object, whose views give the positive pairs
            of the encoder; default: the inputs unchanged (no pairs).
        options: how much to evaluate (:class:`~contrastlab.evaluation.pipeline.EvalOptions`).
        out_dir: folder for ``metrics.json``, the figures and (with ``report``) ``report.html``.
        report: also write ``report.html`` into ``out_dir``.

    Returns:
        The metrics (the layout of ``contrastlab eval``'s ``metrics.json``).

    Raises:
        ValueError: for features of the wrong shape, labels that do not fit, unknown modalities, or
            both (or neither of) features and an encoder.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, 300); x = np.eye(3)[y] + 0.3 * rng.normal(size=(300, 3))
        >>> m = analyze(x, y, options=EvalOptions(figures=False))
        >>> m["encoders"]["features"]["classification"]["probe_test_accuracy"] > 0.9
        True
    """
    options = options or EvalOptions()
    started = time.perf_counter()
    if out_dir is not None:
        check_out_dir(out_dir)
    if (x is None) == (encoder is None):
        raise ValueError("give either features (x) or an encoder and a dataset")
    if encoder is not None:
        if dataset is None:
            raise ValueError("an encoder needs a dataset to encode (a registered name such as 'shapes', or an object)")
        metrics = _analyze_encoder(encoder, dataset, test_dataset=test_dataset, dataset_options=dataset_options,
                                   views=views, options=options, out_dir=out_dir, seed=options.seed,
                                   report=_report_title(out_dir) if report else None)
    else:
        arrays: dict[str, Any] = {"x": x}
        for key, value in (("y", y), ("x_test", x_test), ("y_test", y_test), ("x2", x2), ("x2_test", x2_test),
                           ("paired", paired), ("paired_test", paired_test), ("images", images),
                           ("test_images", test_images), ("class_names", class_names)):
            if value is not None:
                arrays[key] = value
        arrays.update({f"factor_{k}": v for k, v in (factors or {}).items()})
        arrays.update({f"test_factor_{k}": v for k, v in (test_factors or {}).items()})
        for name, pair in (baselines or {}).items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"baseline {name!r} must be a (train, test) pair of feature arrays")
            arrays[f"baseline_{name}"], arrays[f"test_baseline_{name}"] = pair
        _check_towers(towers)
        metrics = _analyze_arrays(arrays, options=options, out_dir=out_dir, towers=tuple(towers), source="arrays",
                                  started=started, report=_report_title(out_dir) if report else None)
    return metrics


def _check_towers(towers) -> None:
    if (not isinstance(towers, (tuple, list)) or len(towers) != 2 or not all(isinstance(t, str) and t for t in towers)
            or towers[0] == towers[1]):
        raise ValueError(f"towers must be two different names, e.g. ('image', 'caption'); got {towers!r}")


def _report_title(out_dir: str | Path | None) -> str | None:
    """The title of the ``report.html`` written with the analysis into ``out_dir`` (none without a folder)."""
    return None if out_dir is None else f"contrastlab analysis: {Path(out_dir).resolve().name}"


def analyze_file(path: str | Path, *, out_dir: str | Path | None = None, options: EvalOptions | None = None,
                 towers: tuple[str, str] = ("x", "paired"), report: bool = True) -> dict[str, Any]:
    """:func:`load_features`, then :func:`analyze` (what ``contrastlab analyze FILE --out DIR`` runs).

    Args:
        path: a ``.npz``, ``.safetensors`` or ``.parquet`` features file.
        out_dir: folder for ``metrics.json``, the figures and ``report.html``.
        options: how much to evaluate.
        towers: the names of ``x``'s and ``paired``'s towers.
        report: also write ``report.html``.

    Returns:
        The metrics.

    Raises:
        UserError: for an unreadable file or unknown key; ValueError for arrays that do not fit together.
    """
    options = options or EvalOptions()
    started = time.perf_counter()
    arrays = load_features(path)
    if out_dir is not None:
        check_out_dir(out_dir)
    _check_towers(towers)
    try:
        metrics = _analyze_arrays(arrays, options=options, out_dir=out_dir, towers=tuple(towers),
                                  source=Path(path).name, started=started,
                                  report=_report_title(out_dir) if report else None)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return metrics
