r"""Per-factor decodability: how much of each generative factor a linear read-out recovers from features.

"Invariant" and "still decodable" are different questions. The invariance report
(:mod:`contrastlab.evaluation.invariance`) asks how far an embedding *moves* when one factor changes;
this module asks whether a *linear probe* can read the factor back out of the embedding. The two can
disagree: an encoder can barely move when colour changes (a small distance score, "invariant") and still
keep colour linearly decodable along a few weak directions; it can also move a lot along directions no
linear read-out can use.

For every factor, or group of factors reported together (default
:func:`~contrastlab.evaluation.invariance.default_groups`, e.g. ``location`` = x and y), a probe is fitted
on the training features and scored on the test features:

* **categorical** factors (integer codes: the Shapes world's ``shape``, ``colour``, ``background``): the
  project's linear probe (:class:`~contrastlab.evaluation.probe.LinearProbe`, multinomial logistic
  regression on standardised features, C = 1), scored by test accuracy. Chance is the accuracy of always
  answering the most common training class: that class's frequency among the test items.
* **continuous** factors (floats: ``x``, ``y``, ``size``, ``rotation``): ridge regression on the
  standardised features :math:`\tilde X`,

  .. math:: \hat w_\lambda = (\tilde X^\top \tilde X + \lambda I)^{-1} \tilde X^\top (y - \bar y),
            \qquad R^2 = 1 - \frac{\sum_i (y_i - \hat y_i)^2}{\sum_i (y_i - \bar y_{\text{test}})^2},

  λ chosen per factor from a grid (:math:`\lambda = N \cdot 10^{-4} \ldots N \cdot 10^{3}`) by the exact
  leave-one-out error on the training items: one eigendecomposition of the Gram matrix gives the fit,
  the leverages and so the leave-one-out residuals for every λ in closed form (Allen's PRESS; unlike its
  GCV approximation it stays sound with high-leverage items, such as rare pixels of raw images).
  Chance is 0 (the training mean scores about 0).

A group's score is the mean over its members (accuracies with accuracies, R² with R²). Both probes are
linear: a factor the features hold only non-linearly (say :math:`x^2` of a symmetric x) scores near
chance. Circular factors (``rotation``) are regressed as plain numbers.

References:
    Alain & Bengio, "Understanding intermediate layers using linear classifier probes", ICLR 2017
    workshop (linear probes as a read-out measure); Hoerl & Kennard, "Ridge Regression: Biased
    Estimation for Nonorthogonal Problems", Technometrics 1970; Allen, "The Relationship Between
    Variable Selection and Data Augmentation and a Method for Prediction", Technometrics 1974 (PRESS).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from contrastlab.evaluation._arrays import as_features
from contrastlab.evaluation.invariance import default_groups
from contrastlab.evaluation.probe import _one_blas_thread, fit_probe

#: Ridge strengths tried, per training item (features are standardised: unit variance per dimension).
RIDGE_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-4, 3, 29))


def _values(values, n: int, name: str, where: str) -> np.ndarray:
    a = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{where} factor {name!r} must have shape ({n},); got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{where} factor {name!r} must be numeric; got dtype {a.dtype}")
    return a


def _is_categorical(a: np.ndarray) -> bool:
    return a.dtype == bool or np.issubdtype(a.dtype, np.integer)


def _ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> np.ndarray:
    r"""Test R² of each target column, its ridge strength chosen by exact leave-one-out error.

    Features are standardised with the training statistics, targets centred (an unpenalised intercept).
    One eigendecomposition of the smaller Gram matrix (:math:`X^\top X = V E V^\top` when D ≤ N, else
    :math:`X X^\top = U E U^\top`; float32 products, float64 decomposition) gives every λ in closed form:
    with :math:`P = X V` (or :math:`K U`), the fitted values are
    :math:`\hat y_\lambda = P\,\mathrm{diag}(1 / (e + \lambda))\,B`, the leverages
    :math:`h_i = \frac1N + \sum_j P_{ij}^2 / (e_j (e_j + \lambda))` (:math:`U_{ij}^2 e_j / (e_j + \lambda)` in
    the dual form), and the leave-one-out error
    :math:`\sum_i \big((y_i - \hat y_i) / (1 - h_i)\big)^2` picks λ; the test predictions use the same
    decomposition.
    """
    n, d = x_train.shape
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    xs = ((x_train - mean) / scale).astype(np.float32)
    xt = ((x_test - mean) / scale).astype(np.float32)
    y_mean = y_train.mean(axis=0)
    yc = y_train - y_mean
    if d <= n:
        e, v = np.linalg.eigh((xs.T @ xs).astype(np.float64))
        e = np.clip(e, 0.0, None)
        v32 = v.astype(np.float32)
        p = (xs @ v32).astype(np.float64)  # fitted values P diag(1/(e+λ)) B
        b = v.T @ (xs.T.astype(np.float64) @ yc)
        a = (xt @ v32).astype(np.float64)
        lev = (p ** 2) / np.where(e > 0, e, np.inf)  # h_i(λ) = 1/N + lev @ (e / (e + λ))
    else:
        e, u = np.linalg.eigh((xs @ xs.T).astype(np.float64))
        e = np.clip(e, 0.0, None)
        p = u * e  # K U = U E
        b = u.T @ yc
        a = ((xt @ xs.T) @ u.astype(np.float32)).astype(np.float64)
        lev = u ** 2
    lambdas = np.asarray(RIDGE_GRID) * n
    shrink = 1.0 / (e[:, None] + lambdas[None, :])  # (r, L)
    fitted = (p @ (b[:, :, None] * shrink[:, None, :]).reshape(len(e), -1)).reshape(n, yc.shape[1], len(lambdas))
    hat = 1.0 / n + lev @ (e[:, None] * shrink)  # (N, L)
    loo = (yc[:, :, None] - fitted) / np.clip(1.0 - hat, 1e-12, None)[:, None, :]
    best = (loo ** 2).sum(axis=0).argmin(axis=1)  # (T,)
    pred = np.column_stack([a @ (b[:, t] / (e + lambdas[best[t]])) for t in range(b.shape[1])]) + y_mean
    total = ((y_test - y_test.mean(axis=0)) ** 2).sum(axis=0)
    residual = ((y_test - pred) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), np.nan)


def _accuracy(x_train: np.ndarray, codes_train: np.ndarray, x_test: np.ndarray,
              codes_test: np.ndarray) -> tuple[float, float]:
    """(test accuracy of the linear probe, chance = test frequency of the most common training class)."""
    classes, counts = np.unique(codes_train, return_counts=True)
    majority = classes[counts.argmax()]
    chance = float(np.mean(codes_test == majority))
    if len(classes) < 2:  # nothing to learn: the probe would answer the one class
        return chance, chance
    probe = fit_probe(x_train, codes_train, C=1.0)  # the same fit as linear_probe's when the codes are the labels
    return float(np.mean(probe.predict(x_test) == codes_test)), chance


def factor_decodability(train_features, train_factors: Mapping[str, object], test_features,
                        test_factors: Mapping[str, object], *, groups: Mapping[str, Sequence[str]] | None = None,
                        seed: int = 0) -> dict[str, dict]:
    r"""How well a linear probe on the features recovers each factor (see the module docstring).

    Args:
        train_features: (N, D) features of the items the probes are fitted on.
        train_factors: factor name → (N,) values of those items; integer codes are categorical,
            floats continuous (``Batch.factors`` of the Shapes world).
        test_features: (M, D) features of the held-out items the probes are scored on.
        test_factors: factor name → (M,) values of the held-out items.
        groups: report name → the factors scored together; default
            :func:`~contrastlab.evaluation.invariance.default_groups` of the factor names. A group's
            factors must all be categorical or all continuous.
        seed: accepted so that every evaluation measure takes one; the probes here are deterministic
            (zero-initialised L-BFGS, closed-form ridge with leave-one-out), so it changes nothing.

    Returns:
        Report name → ``{"kind": "accuracy" | "r2", "score": float, "chance": float, "factors": [names],
        "per_factor": {name: score}}``; ``score`` and ``chance`` are means over the group's factors. R² is
        ``nan`` for a factor constant over the test items.

    Raises:
        ValueError: mismatched shapes, a group naming an unknown factor or mixing categorical and
            continuous factors, or no factors at all.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> colour, x = rng.integers(0, 3, 400), rng.uniform(0, 1, 400)
        >>> features = np.column_stack([np.eye(3)[colour], x, rng.normal(size=(400, 4))])
        >>> factors = {"colour": colour, "x": x}
        >>> out = factor_decodability(features[:300], {k: v[:300] for k, v in factors.items()},
        ...                           features[300:], {k: v[300:] for k, v in factors.items()})
        >>> out["colour"]["kind"], out["colour"]["score"], round(out["x"]["score"], 3)
        ('accuracy', 1.0, 1.0)
    """
    xtr = as_features(train_features, name="train_features").double().numpy()
    xte = as_features(test_features, name="test_features").double().numpy()
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train and test features differ in width: {xtr.shape[1]} vs {xte.shape[1]}")
    if xtr.shape[0] < 2:
        raise ValueError(f"need at least 2 training items; got {xtr.shape[0]}")
    names = list(train_factors)
    groups = dict(groups) if groups is not None else default_groups(names)
    if not groups:
        raise ValueError("no factors to decode (train_factors is empty)")
    used = list(dict.fromkeys(m for members in groups.values() for m in members))
    for name, members in groups.items():
        missing = [m for m in members if m not in train_factors or m not in test_factors]
        if missing or not members:
            raise ValueError(f"factor group {name!r} names unknown factors {missing or list(members)}; "
                             f"known: {sorted(set(train_factors) & set(test_factors))}")
    ytr = {m: _values(train_factors[m], xtr.shape[0], m, "train") for m in used}
    yte = {m: _values(test_factors[m], xte.shape[0], m, "test") for m in used}
    kinds = {}
    for name, members in groups.items():
        found = {"accuracy" if _is_categorical(ytr[m]) else "r2" for m in members}
        if len(found) > 1:
            raise ValueError(f"factor group {name!r} mixes categorical and continuous factors: {list(members)}")
        kinds[name] = found.pop()

    continuous = [m for m in used if not _is_categorical(ytr[m])]
    xtr32, xte32 = xtr.astype(np.float32), xte.astype(np.float32)

    def ridge() -> dict[str, tuple[float, float]]:
        r2 = _ridge_r2(xtr, np.column_stack([ytr[m] for m in continuous]).astype(np.float64), xte,
                       np.column_stack([yte[m] for m in continuous]).astype(np.float64))
        return {m: (float(v), 0.0) for m, v in zip(continuous, r2)}

    def probe(m: str) -> dict[str, tuple[float, float]]:
        return {m: _accuracy(xtr32, ytr[m].astype(np.int64), xte32, yte[m].astype(np.int64))}

    tasks = ([ridge] if continuous else []) + [functools.partial(probe, m) for m in used if m not in continuous]
    workers = min(max(1, torch.get_num_threads()), len(tasks))
    scores: dict[str, tuple[float, float]] = {}
    # one BLAS thread per fit, the fits side by side: moderate products gain little from more BLAS threads, and
    # on a busy machine those threads mostly wait for each other
    with _one_blas_thread():
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                for part in pool.map(lambda task: task(), tasks):
                    scores.update(part)
        else:
            for task in tasks:
                scores.update(task())

    report = {}
    for name, members in groups.items():
        report[name] = {
            "kind": kinds[name], "score": float(np.mean([scores[m][0] for m in members])),
            "chance": float(np.mean([scores[m][1] for m in members])), "factors": list(members),
            "per_factor": {m: scores[m][0] for m in members},
        }
    return report
