r"""Linear probe: multinomial logistic regression on standardised frozen features.

The probe measures how much class information a *linear* read-out can recover from a frozen
representation (the standard protocol of SimCLR, CMC and Wang & Isola's Table 1).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
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
    The optimisation runs in the precision of ``X`` (float32 features stay float32; float64 gives a
    tighter optimum).

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
        x = torch.as_tensor((X - self.mean_) / self.scale_)
        target = torch.as_tensor(encoded, dtype=torch.int64)
        n, d = x.shape
        k = len(self.classes_)
        weight = torch.zeros(k, d, dtype=x.dtype, requires_grad=True)
        bias = torch.zeros(k, dtype=x.dtype, requires_grad=True)
        penalty = 1.0 / (2.0 * C * n)
        optimizer = torch.optim.LBFGS(
            [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
            history_size=20, line_search_fn="strong_wolfe",
        )

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(torch.addmm(bias, x, weight.T), target)
            loss = loss + penalty * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.n_iter_ = int(optimizer.state[weight].get("n_iter", 0))
        if self.n_iter_ >= max_iter:
            warnings.warn(f"LinearProbe: L-BFGS did not converge in max_iter={max_iter} iterations",
                          ConvergenceWarning, stacklevel=2)
        self.coef_ = weight.detach().double().numpy()
        self.intercept_ = bias.detach().double().numpy()
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
    probe = LinearProbe(C=C, max_iter=max_iter).fit(xtr, ytr)
    return {"train_accuracy": float(probe.score(xtr, ytr)), "test_accuracy": float(probe.score(xte, yte))}
