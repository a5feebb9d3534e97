r"""Canonical correlation analysis: a closed-form linear estimator and the deep CCA objective.

Both rest on the same quantity. For two views with covariances :math:`\Sigma_{11}, \Sigma_{22}` (regularised by
:math:`r I`) and cross-covariance :math:`\Sigma_{12}`, the canonical correlations are the singular values of the
whitened cross-covariance

.. math::

    T = \Sigma_{11}^{-1/2} \Sigma_{12} \Sigma_{22}^{-1/2}.

Any square root works in place of :math:`\Sigma^{1/2}`: with the Cholesky factor :math:`\Sigma = L L^\top`,
:math:`L^{-1} = Q \Sigma^{-1/2}` for an orthogonal :math:`Q`, so :math:`L_1^{-1} \Sigma_{12} L_2^{-\top}` has the
same singular values. :func:`dcca_loss` uses it because the eigendecomposition's backward divides by eigenvalue
gaps :math:`1/(\lambda_i - \lambda_j)` (infinite for whitened or duplicated views) and Cholesky's does not.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from contrastlab.objectives._checks import check_embeddings, check_non_negative, check_positive
from contrastlab.objectives._reduction import check_batch_reduction
from contrastlab.objectives._spec import ObjectiveSpec

__all__ = ["SPECS", "DCCALoss", "LinearCCA", "dcca_loss"]


def _check_n_components(n_components: int | None, limit: int | None, *, allow_none: bool) -> int | None:
    """An integer in ``[1, limit]`` (no upper bound when ``limit`` is None); ``None`` means ``limit``."""
    if n_components is None and allow_none:
        return limit
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {n_components!r}")
    if limit is not None and n_components > limit:
        raise ValueError(f"n_components must be <= min(D1, D2) = {limit}, got {n_components}")
    return int(n_components)


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


def _cholesky(cov: Tensor, name: str, reg: float) -> Tensor:
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError(
            f"the regularised covariance of {name} is not positive definite (reg={reg}); "
            "its embeddings contain NaN / infinity or reg is too small for their scale"
        )
    return factor


def dcca_loss(
    z1: Tensor, z2: Tensor, *, n_components: int | None = None, reg: float = 1e-3, reduction: str = "mean"
) -> Tensor:
    r"""Deep CCA objective: minus the sum of the top-:math:`k` canonical correlations of two batches.

    With centred batches :math:`\bar H_1 \in \mathbb{R}^{N \times D_1}`, :math:`\bar H_2 \in \mathbb{R}^{N \times D_2}`:

    .. math::

        \Sigma_{11} = \tfrac{1}{N-1} \bar H_1^\top \bar H_1 + r I, \quad
        \Sigma_{22} = \tfrac{1}{N-1} \bar H_2^\top \bar H_2 + r I, \quad
        \Sigma_{12} = \tfrac{1}{N-1} \bar H_1^\top \bar H_2,

    .. math::

        \mathcal{L} = -\sum_{j=1}^{k} \sigma_j\big(\Sigma_{11}^{-1/2} \Sigma_{12} \Sigma_{22}^{-1/2}\big),

    which for :math:`k = \min(D_1, D_2)` is minus the trace norm of Andrew et al. The whitening uses Cholesky
    factors and the singular values come from ``torch.linalg.svdvals``, whose backward is
    :math:`U_{:, :k} V_{:, :k}^\top` with no :math:`1/(\sigma_i^2 - \sigma_j^2)` terms, so gradients stay finite
    when the views are identical or linearly related (all correlations near 1) or collapsed. The linear algebra
    runs in float64 (the matrices are only :math:`D \times D`); the loss has the inputs' dtype.

    The correlations are statistics of the whole batch; there are no per-sample losses, so only
    ``reduction="mean"`` is accepted. CCA is invariant to an invertible linear map of each view, so there is
    no ``normalize`` option either.

    Args:
        z1: ``(N, D1)`` first view's embeddings.
        z2: ``(N, D2)`` second view's embeddings, row ``i`` paired with ``z1[i]``.
        n_components: :math:`k`, or ``None`` for all :math:`\min(D_1, D_2)`.
        reg: :math:`r > 0` added to both covariances' diagonals.
        reduction: ``"mean"`` only (``"sum"`` and ``"none"`` raise).

    Returns:
        The 0-dim loss, in :math:`[-k, 0]`.

    Raises:
        ValueError: if ``reg <= 0``, ``reduction`` is not ``"mean"``, ``n_components`` is not in
            ``[1, min(D1, D2)]``, the batches are not 2-D floating point with the same ``N``, or ``N < 2``.

    References:
        Andrew, Arora, Bilmes, Livescu, "Deep Canonical Correlation Analysis", ICML 2013.

    Example:
        >>> h = torch.randn(64, 4)
        >>> round(dcca_loss(h, 2 * h + 1, reg=1e-6).item(), 3)  # perfectly correlated: k = 4 correlations of 1
        -4.0
    """
    reg = check_positive("reg", reg)
    check_batch_reduction("dcca_loss", reduction)
    check_embeddings("z1", z1)
    check_embeddings("z2", z2)
    if z1.shape[0] != z2.shape[0]:
        raise ValueError(
            f"z1 and z2 must have the same batch size N, got shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"batch size must be >= 2 to estimate covariances, got {n}")
    k = _check_n_components(n_components, min(z1.shape[1], z2.shape[1]), allow_none=True)

    work = torch.promote_types(z1.dtype, torch.float64)
    h1, h2 = z1.to(work), z2.to(work)
    h1 = h1 - h1.mean(dim=0)
    h2 = h2 - h2.mean(dim=0)
    c11 = h1.T @ h1 / (n - 1) + reg * torch.eye(h1.shape[1], dtype=work, device=h1.device)
    c22 = h2.T @ h2 / (n - 1) + reg * torch.eye(h2.shape[1], dtype=work, device=h2.device)
    c12 = h1.T @ h2 / (n - 1)
    l1, l2 = _cholesky(c11, "z1", reg), _cholesky(c22, "z2", reg)
    t = torch.linalg.solve_triangular(l1, c12, upper=False)  # L1^{-1} S12
    t = torch.linalg.solve_triangular(l2, t.T, upper=False).T  # L1^{-1} S12 L2^{-T}
    correlations = torch.linalg.svdvals(t)
    return (-correlations[:k].sum()).to(torch.promote_types(z1.dtype, z2.dtype))


class DCCALoss(nn.Module):
    r"""Module form of :func:`dcca_loss`: ``loss(z1 (N, D1), z2 (N, D2))``.

    Args:
        n_components: :math:`k`, or ``None`` for all :math:`\min(D_1, D_2)`.
        reg: :math:`r > 0`.
        reduction: ``"mean"`` only (a batch statistic).

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> DCCALoss(n_components=2)(torch.randn(32, 4), torch.randn(32, 3)).shape
        torch.Size([])
    """

    def __init__(self, *, n_components: int | None = None, reg: float = 1e-3, reduction: str = "mean") -> None:
        super().__init__()
        # the upper bound min(D1, D2) is only known from the batch
        self.n_components = _check_n_components(n_components, None, allow_none=True)
        self.reg = check_positive("reg", reg)
        self.reduction = check_batch_reduction("dcca_loss", reduction)

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return dcca_loss(z1, z2, n_components=self.n_components, reg=self.reg)

    def extra_repr(self) -> str:
        return f"n_components={self.n_components}, reg={self.reg}"


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="dcca",
        factory=DCCALoss,
        kind="cca",
        formula="-sum_{j<=k} sigma_j(S11^{-1/2} S12 S22^{-1/2}), S11 = cov(H1) + rI, S22 = cov(H2) + rI",
        reference="Andrew et al. 2013, Deep Canonical Correlation Analysis, ICML",
        uses_negatives=True,  # no negatives, but it needs a batch of >= 2 (in practice >> D) to estimate covariances
    ),
]
