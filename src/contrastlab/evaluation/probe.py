r"""Linear probe: multinomial logistic regression on standardised frozen features.

The probe measures how much class information a *linear* read-out can recover from a frozen
representation (the standard protocol of SimCLR, CMC and Wang & Isola's Table 1).

:func:`fit_probe` remembers its last few fits by content (features, labels, options): one evaluation
asks for the same fit more than once (the Shapes world's ``shape`` factor is also its class label, so
:func:`linear_probe` and :func:`~contrastlab.evaluation.decodability.factor_decodability` fit the same
probe), and the fit is deterministic, so the second ask returns the first fit.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import warnings
from collections import OrderedDict

import numpy as np
from scipy.linalg import qr
from scipy.linalg.blas import get_blas_funcs
from scipy.linalg.lapack import get_lapack_funcs
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from contrastlab.evaluation._arrays import as_features, as_labels, check_positive_float, check_positive_int


class LinearProbe(ClassifierMixin, BaseEstimator):
    r"""Multinomial logistic regression on standardised features, fitted with full-batch L-BFGS.

    Features are standardised with the training mean and standard deviation
    (:math:`\tilde x = (x - \mu) / \sigma`, a constant feature keeps :math:`\sigma = 1`), then

    .. math::
        \min_{W, b}\; \frac{1}{N} \sum_{i=1}^{N}
        -\log \frac{\exp(w_{y_i}^\top \tilde x_i + b_{y_i})}{\sum_{c=1}^{K} \exp(w_c^\top \tilde x_i + b_c)}
        \;+\; \frac{1}{2 C N} \lVert W \rVert_F^2 ,

    which has the same minimiser as scikit-learn's ``LogisticRegression(C=C)`` with the multinomial
    loss (the intercept is not penalised). Every class gets its own weight row, also when K = 2.
    The fit is scipy's L-BFGS-B on the analytic gradient,
    :math:`\nabla_W = \frac1N (P - Y)^\top \tilde X + \frac{1}{CN} W` (P the softmax probabilities, Y the
    one-hot labels); the products with :math:`\tilde X` run in the precision of ``X`` (float32 features
    stay float32, float64 gives a tighter optimum), the rest in float64.

    References:
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
        ICML 2020 (linear evaluation protocol); Wang & Isola, "Understanding Contrastive
        Representation Learning through Alignment and Uniformity on the Hypersphere", ICML 2020.

    Args:
        C: inverse regularisation strength, > 0.
        max_iter: at most this many L-BFGS iterations.
        tol: stop when the largest absolute gradient entry falls below ``tol``.

    Attributes:
        classes_: the class labels seen in ``fit``, shape (K,).
        mean_: training feature means, shape (D,).
        scale_: training feature standard deviations, shape (D,).
        coef_: weights on the *standardised* features, shape (K, D).
        intercept_: biases, shape (K,).
        n_features_in_: D.
        n_iter_: L-BFGS iterations used.

    Raises:
        ValueError: from ``fit`` for a bad option, mismatched shapes, or fewer than two classes.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = np.concatenate([rng.normal(-3, 1, (50, 4)), rng.normal(3, 1, (50, 4))])
        >>> y = np.repeat([0, 1], 50)
        >>> LinearProbe().fit(X, y).score(X, y)
        1.0
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-5):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        """Fit on features ``X`` (N, D) and integer or string labels ``y`` (N,); returns ``self``."""
        C = check_positive_float(self.C, "C")
        max_iter = check_positive_int(self.max_iter, "max_iter")
        tol = check_positive_float(self.tol, "tol")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"LinearProbe needs at least 2 classes in the data; got 1 class: {self.classes_[0]!r}")
        self.mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        x = ((X - self.mean_) / self.scale_).astype(X.dtype, copy=False)
        with _one_blas_thread():  # small products: extra threads only wait on each other on a busy machine
            self.coef_, self.intercept_, self.n_iter_, converged = _fit_softmax(x, encoded, len(self.classes_), C,
                                                                                max_iter, tol)
        if not converged:
            warnings.warn(f"LinearProbe: L-BFGS did not converge in max_iter={max_iter} iterations",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _scores(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return ((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_

    def decision_function(self, X) -> np.ndarray:
        """Class scores (logits), shape (N, K); for K = 2 the margin of ``classes_[1]``, shape (N,)."""
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the scores), shape (N, K)."""
        scores = self._scores(X)
        scores = scores - scores.max(axis=1, keepdims=True)
        p = np.exp(scores)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The most probable class for each row, shape (N,)."""
        best = np.argmax(self._scores(X), axis=1)
        return self.classes_[best]


def linear_probe(train_features, train_labels, test_features, test_labels, *, C: float = 1.0,
                 max_iter: int = 1000) -> dict[str, float]:
    r"""Train a :class:`LinearProbe` on one split and report accuracy on both.

    Args:
        train_features: (N, D) features of the training items.
        train_labels: (N,) integer labels.
        test_features: (M, D) features of held-out items.
        test_labels: (M,) integer labels.
        C: inverse regularisation strength of the probe.
        max_iter: L-BFGS iteration limit.

    Returns:
        ``{"train_accuracy": float, "test_accuracy": float}``.

    Raises:
        ValueError: for mismatched shapes or a bad option.

    Example:
        >>> import torch
        >>> x = torch.randn(40, 3); y = (x[:, 0] > 0).long()
        >>> linear_probe(x, y, x, y)["test_accuracy"] > 0.9
        True
    """
    xtr = as_features(train_features, name="train_features").numpy()
    xte = as_features(test_features, name="test_features").numpy()
    ytr = as_labels(train_labels, xtr.shape[0], name="train_labels")
    yte = as_labels(test_labels, xte.shape[0], name="test_labels")
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"train and test features differ in width: {xtr.shape[1]} vs {xte.shape[1]}")
    probe = fit_probe(xtr, ytr, C=C, max_iter=max_iter)
    return {"train_accuracy": float(probe.score(xtr, ytr)), "test_accuracy": float(probe.score(xte, yte))}


#: Fits kept by :func:`fit_probe`.
_CACHE_SIZE = 4
_cache: OrderedDict[tuple, LinearProbe] = OrderedDict()
_cache_lock = threading.Lock()


def _digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return hashlib.blake2b(a.view(np.uint8).reshape(-1), digest_size=16).hexdigest()


def fit_probe(X, y, *, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-5) -> LinearProbe:
    """A :class:`LinearProbe` fitted on ``X``, ``y``; the same object again for the same inputs and options.

    The last few fits are kept, keyed by a hash of the features' and labels' bytes, their shapes and
    dtypes, and the options (hashing costs a few ms; a fit of thousands of items, far more). Do not
    modify the returned probe.

    Args:
        X: (N, D) float32 or float64 numpy features.
        y: (N,) labels.
        C: inverse regularisation strength.
        max_iter: L-BFGS iteration limit.
        tol: gradient tolerance.

    Returns:
        The fitted probe.

    Example:
        >>> import numpy as np
        >>> X = np.array([[0.0], [0.1], [1.0], [1.1]]); y = np.array([0, 0, 1, 1])
        >>> fit_probe(X, y) is fit_probe(X.copy(), y.copy())
        True
    """
    X, y = np.asarray(X), np.asarray(y)
    key = (X.shape, X.dtype.str, _digest(X), y.shape, y.dtype.str, _digest(y) if y.dtype != object else id(y),
           float(C), int(max_iter), float(tol))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    probe = LinearProbe(C=C, max_iter=max_iter, tol=tol).fit(X, y)
    with _cache_lock:
        _cache[key] = probe
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return probe


_blas_lock = threading.Lock()
_blas_depth = 0
_blas_limits = None


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS on one thread (threadpoolctl) while any caller, on any thread, is inside; the first in sets the
    limit and the last out restores it, so fits running side by side do not undo each other's limit."""
    global _blas_depth, _blas_limits
    with _blas_lock:
        if _blas_depth == 0:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:  # pragma: no cover - scikit-learn brings it
                threadpool_limits = None
            _blas_limits = None if threadpool_limits is None else threadpool_limits(limits=1, user_api="blas")
        _blas_depth += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_depth -= 1
            if _blas_depth == 0 and _blas_limits is not None:
                _blas_limits.restore_original_limits()
                _blas_limits = None


#: Wider than this many times the items, the probe fits in the row space of the features (see ``_fit_softmax``).
_REDUCE_RATIO, _REDUCE_MIN = 1.25, 1 << 20


def _fit_softmax(x: np.ndarray, target: np.ndarray, k: int, C: float, max_iter: int,
                 tol: float) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Minimise the probe's objective over (W, b) by L-BFGS (scipy) on the analytic gradient.

    With P the softmax probabilities and Y the one-hot labels, the gradient is
    ``(P - Y)^T x / N + W / (C N)`` for W and the column sums of ``(P - Y) / N`` for b. The products with
    ``x`` run in its precision (float32 features: float32 products, half the memory traffic); the softmax,
    the loss and the optimiser's state are float64.

    Features much wider than the items (D > 1.25 N, e.g. raw pixels) are first factored,
    ``x^T = Q R`` (Householder QR, Q: D x N orthonormal, R upper triangular): the optimal W lies in the
    row space of x, so ``W = B Q^T`` with ``||W|| = ||B||`` and the scores are ``x W^T = R^T B^T``. L-BFGS
    from zero takes the same steps in B as in W (an orthogonal change of variables), while each product
    reads half of an N x N triangle instead of N x D numbers.

    Returns:
        ``(coef (K, D), intercept (K,), iterations, converged)``.
    """
    n, d = x.shape
    reduced = d > _REDUCE_RATIO * n and n * d >= _REDUCE_MIN
    if reduced:
        (householder, tau), r = qr(x.T, mode="raw", check_finite=False)
        r = np.asfortranarray(r)
        trmm = get_blas_funcs("trmm", (r,))

        def scores(wt):  # x W^T = R^T B^T
            return trmm(1.0, r, wt, trans_a=1)

        def back(g):  # (x^T G) in B's coordinates: R G
            return trmm(1.0, r, g)
        width = n
    else:
        def scores(wt):
            return x @ wt

        def back(g):
            return x.T @ g
        width = d
    penalty = 1.0 / (2.0 * C * n)
    rows = np.arange(n)
    onehot = np.zeros((n, k), dtype=x.dtype)
    onehot[rows, target] = 1.0
    label_sums = back(onehot).T.astype(np.float64)  # Y^T x: the labels' part of the gradient, fixed
    counts = np.bincount(target, minlength=k).astype(np.float64)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:k * width].reshape(k, width), theta[k * width:]
        z = scores(np.asfortranarray(w.T, dtype=x.dtype)).astype(np.float64)
        z += b
        z -= z.max(axis=1, keepdims=True)
        true_scores = z[rows, target]
        np.exp(z, out=z)
        total = z.sum(axis=1)  # >= 1: the largest score is 0 after the shift
        loss = float(np.mean(np.log(total) - true_scores)) + penalty * float(np.vdot(w, w))
        z /= total[:, None]  # the softmax probabilities P
        grad_w = (back(np.asfortranarray(z, dtype=x.dtype)).T - label_sums) / n + 2.0 * penalty * w
        grad_b = (z.sum(axis=0) - counts) / n
        return loss, np.concatenate([grad_w.ravel(), grad_b])

    result = minimize(objective, np.zeros(k * width + k), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter, "maxcor": 20, "gtol": tol, "ftol": 64 * np.finfo(float).eps,
                               "maxls": 50})
    theta = result.x
    coef = theta[:k * width].reshape(k, width)
    if reduced:  # W^T = Q [B^T; 0]
        ormqr = get_lapack_funcs("ormqr", (householder,))
        padded = np.zeros((d, k), dtype=householder.dtype, order="F")
        padded[:n] = coef.T
        coef = ormqr("L", "N", householder, tau, padded, lwork=max(1, 64 * k))[0].T.astype(np.float64)
    return np.ascontiguousarray(coef), theta[k * width:].copy(), int(result.nit), result.status != 1
