r"""Linear CCA in closed form, a scikit-learn estimator (the deep CCA objective is in :mod:`.cca`).

In its own module so that the objectives load without scikit-learn; ``contrastlab.objectives.cca.LinearCCA``
names the same class.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from contrastlab.objectives._checks import check_non_negative
from contrastlab.objectives.cca import _check_n_components

__all__ = ["LinearCCA"]


def _as_matrix(name: str, a) -> np.ndarray:
    try:
        m = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape (n_samples, n_features): {err}") from None
    if m.ndim != 2:
        raise ValueError(f"{name} must have shape (n_samples, n_features), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contains NaN or infinity ({int((~np.isfinite(m)).sum())} entries)")
    return m


def _inverse_sqrt(cov: np.ndarray, name: str) -> np.ndarray:
    """Symmetric :math:`\\Sigma^{-1/2}` by eigendecomposition (forward only, float64)."""
    evals, evecs = np.linalg.eigh(cov)
    if evals[0] <= 1e-12 * max(evals[-1], 1.0):
        raise ValueError(
            f"the covariance of {name} is singular (smallest eigenvalue {evals[0]:.3g}); increase reg "
            "or remove constant / collinear features"
        )
    return (evecs / np.sqrt(evals)) @ evecs.T


class LinearCCA(BaseEstimator):
    r"""Linear CCA in closed form, regularised (Hotelling 1936; ridge as in Vinod 1976).

    Finds projections :math:`u_j, v_j` maximising :math:`\operatorname{corr}(X u_j, Y v_j)` subject to
    :math:`U^\top \Sigma_{11} U = V^\top \Sigma_{22} V = I`:

    .. math::

        \Sigma_{11}^{-1/2} \Sigma_{12} \Sigma_{22}^{-1/2} = A \operatorname{diag}(\rho) B^\top, \quad
        U = \Sigma_{11}^{-1/2} A_{:, :k}, \quad V = \Sigma_{22}^{-1/2} B_{:, :k},

    with :math:`\Sigma_{11} = \tfrac{1}{n-1} X_c^\top X_c + r I` (likewise :math:`\Sigma_{22}`) and
    :math:`\Sigma_{12} = \tfrac{1}{n-1} X_c^\top Y_c` on centred data. ``__init__`` only stores the options;
    ``fit`` validates them.

    Args:
        n_components: :math:`k`, the number of canonical pairs, ``1 <= k <= min(p, q)``.
        reg: :math:`r \geq 0` added to both covariances' diagonals.

    Attributes:
        x_weights_: ``(p, k)`` projections :math:`U` of ``X``.
        y_weights_: ``(q, k)`` projections :math:`V` of ``Y``.
        correlations_: ``(k,)`` canonical correlations :math:`\rho_1 \geq \dots \geq \rho_k`.
        means_: ``((p,), (q,))`` the column means of ``X`` and ``Y``.
        n_features_in_: ``p``.

    References:
        Hotelling, "Relations between two sets of variates", Biometrika 28, 1936.
        Vinod, "Canonical ridge and econometrics of joint production", J. Econometrics 4, 1976.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s = rng.normal(size=(500, 1))
        >>> X = np.hstack([s, rng.normal(size=(500, 2))])
        >>> Y = np.hstack([s + 0.1 * rng.normal(size=(500, 1)), rng.normal(size=(500, 1))])
        >>> cca = LinearCCA(n_components=1).fit(X, Y)
        >>> bool(cca.correlations_[0] > 0.99)
        True
        >>> cca.transform(X).shape
        (500, 1)
    """

    def __init__(self, n_components: int = 2, *, reg: float = 1e-4) -> None:
        self.n_components = n_components
        self.reg = reg

    def fit(self, X, Y) -> "LinearCCA":
        """Learn the canonical projections from paired samples.

        Args:
            X: ``(n, p)`` first view.
            Y: ``(n, q)`` second view, row ``i`` paired with ``X[i]``.

        Returns:
            ``self``.

        Raises:
            ValueError: on a bad ``n_components`` or ``reg``, non-2-D or non-finite input, different numbers of
                samples, ``n < 2``, or a singular covariance.
        """
        reg = check_non_negative("reg", self.reg)
        X, Y = _as_matrix("X", X), _as_matrix("Y", Y)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y must have the same number of samples, got shapes: {[X.shape, Y.shape]}")
        n = X.shape[0]
        if n < 2:
            raise ValueError(f"need n_samples >= 2 to estimate covariances, got {n}")
        k = _check_n_components(self.n_components, min(X.shape[1], Y.shape[1]), allow_none=False)

        mx, my = X.mean(axis=0), Y.mean(axis=0)
        Xc, Yc = X - mx, Y - my
        c11 = Xc.T @ Xc / (n - 1) + reg * np.eye(X.shape[1])
        c22 = Yc.T @ Yc / (n - 1) + reg * np.eye(Y.shape[1])
        c12 = Xc.T @ Yc / (n - 1)
        w1, w2 = _inverse_sqrt(c11, "X"), _inverse_sqrt(c22, "Y")
        a, rho, bt = np.linalg.svd(w1 @ c12 @ w2, full_matrices=False)

        self.x_weights_ = w1 @ a[:, :k]
        self.y_weights_ = w2 @ bt[:k].T
        self.correlations_ = rho[:k]
        self.means_ = (mx, my)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X, Y=None):
        """Project onto the canonical directions.

        Args:
            X: ``(m, p)`` first view.
            Y: ``(m, q)`` second view, or ``None``.

        Returns:
            ``(m, k)`` scores of ``X``, or the pair ``(X scores, Y scores)`` when ``Y`` is given.

        Raises:
            sklearn.exceptions.NotFittedError: before :meth:`fit` (a ``ValueError``).
            ValueError: on input of the wrong width or with NaN / infinity.
        """
        check_is_fitted(self, ["x_weights_", "y_weights_", "means_"])
        X = _as_matrix("X", X)
        if X.shape[1] != self.x_weights_.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features, but LinearCCA was fitted with {self.x_weights_.shape[0]}")
        x_scores = (X - self.means_[0]) @ self.x_weights_
        if Y is None:
            return x_scores
        Y = _as_matrix("Y", Y)
        if Y.shape[1] != self.y_weights_.shape[0]:
            raise ValueError(f"Y has {Y.shape[1]} features, but LinearCCA was fitted with {self.y_weights_.shape[0]}")
        return x_scores, (Y - self.means_[1]) @ self.y_weights_

    def fit_transform(self, X, Y):
        """:meth:`fit` then :meth:`transform` of both views: ``((n, k), (n, k))``."""
        return self.fit(X, Y).transform(X, Y)
