r"""FactorCL: keep task-relevant shared and unique information, each with a lower bound, and remove the rest
with an upper bound.

Task-relevant information of two modalities splits into a shared part and one unique part per modality
(Liang et al. 2023, Section 3.1):

.. math::
    S = I(X_1; X_2; Y) = I(X_1; X_2) - I(X_1; X_2 \mid Y), \qquad
    U_i = I(X_i; Y \mid X_{-i}) = I(X_i; Y) - S .

**Layout.** Each modality's tower ends in one embedding :math:`z_m \in \mathbb R^{D}`; its first ``shared_dim``
coordinates are the shared code :math:`Z_{S_m}`, the rest the unique code :math:`Z_{U_m}` (the layout of
:func:`~contrastlab.objectives.fission.split_code`). The run's ordinary head
embedding is therefore FactorCL's representation, and ``[z_1; z_2]`` the concatenation a probe reads.

**Estimators.** For a batch of pairs :math:`(a_i, b_i)`, a critic :math:`f` (an MLP on the concatenation
:math:`[a; b]`, :class:`ConcatCritic`) and candidate sets :math:`C_i` (every item, or for a bound conditioned on
the label the items of the same class, so that negatives come from :math:`p(b \mid y)`):

.. math::
    \hat I_{\text{NCE}} = \frac1N \sum_i \Big[ f(a_i, b_i) - \log \frac{1}{|C_i|} \sum_{j \in C_i} e^{f(a_i, b_j)} \Big],
    \qquad
    \hat I_{\text{NCE-CLUB}} = \frac1N \sum_i f^\ast(a_i, b_i) - \frac1N \sum_i \frac{1}{|C_i|} \sum_{j \in C_i} f^\ast(a_i, b_j),

the InfoNCE lower bound (:func:`infonce_bound`) and the NCE-CLUB upper bound (:func:`nce_club_bound`), whose
critic :math:`f^\ast` is the one that maximises the InfoNCE bound. A conditional critic also reads the condition
(:math:`f(a, b, y)`, the one-hot label concatenated to :math:`a`).

**FactorCL-SUP** (:class:`FactorCLSup`, reads ``embeddings`` and ``labels``) maximises

.. math::
    \mathcal L_S = \hat I_{\text{NCE}}(Z_{S_1}; Z_{S_2}) - \hat I_{\text{NCE-CLUB}}(Z_{S_1}; Z_{S_2} \mid Y), \qquad
    \mathcal L_U = \sum_{i=1}^{2} \hat I_{\text{NCE}}(Z_{U_i}; Y) - \hat I_{\text{NCE-CLUB}}(Z_{U_1}; Z_{U_2})
                   + \hat I_{\text{NCE}}(Z_{U_1}; Z_{U_2} \mid Y),

and the loss is :math:`-(\mathcal L_S + \mathcal L_U) - \mathcal F`, where :math:`\mathcal F` is the InfoNCE bound
of the two NCE-CLUB critics on *detached* codes. The NCE-CLUB values use the critics' weights detached, so their
gradient reaches only the encoders; :math:`\mathcal F` trains only those critics. One backward pass and one
optimiser therefore do what FactorCL does with an encoder step and a separate critic step.

**FactorCL-SSL** (:class:`FactorCLSSL`, reads ``embeddings``) replaces the label by augmented copies
:math:`X_i'` of each modality (views from :class:`~contrastlab.views.vectors.ModalityAugmentViews`):
:math:`I(X_i; Y) \to I(X_i; X_i')`, and conditioning on :math:`Y` becomes conditioning on :math:`(X_1', X_2')`,
estimated with critics that read the concatenations :math:`[z_1; z_1']` and :math:`[z_2; z_2']` (in-batch
negatives).

What comes from where. From the paper: the decomposition of :math:`S` and :math:`U_i`, the InfoNCE and NCE-CLUB
estimators and their conditional forms (negatives drawn given the label), the signs (lower bounds of what to keep,
upper bounds of what to remove), the augmentation surrogate of SSL. From the authors' synthetic code (read, not
copied): concatenation critics (an MLP on :math:`[a; b]`, 512 wide), the one-hot label and the concatenated
augmentations as the critics' condition, each cross-modal unique term counted once, Adam at :math:`10^{-4}`.
Our own choices: the shared / unique split of one embedding (the authors' code instead applies a separate
projection MLP to a single embedding for every term and probes the embedding before them), the conditional
InfoNCE with same-class negatives also for fitting the conditional NCE-CLUB critic (the authors' code fits it
with negatives from every class), the one-pass update above, and the NCE-CLUB critic of SSL reading the
augmented copies (the authors' code passes the clean codes twice there).

Cost: every critic scores all :math:`N^2` pairs, :math:`O(N^2 \cdot h \cdot (1 + h \cdot \ell))` per critic for
width :math:`h` and :math:`\ell` hidden-to-hidden layers, and keeps :math:`N^2 h` activations per layer for the
backward pass: the paper's critics (:math:`h = 512`, :math:`\ell = 1`) at :math:`N = 256` need a GPU; on a CPU use a
narrow critic (``critic_hidden=64, critic_layers=0``).

References:
    Liang, Deng, Ma, Zou, Morency & Salakhutdinov, "Factorized Contrastive Learning: Going Beyond Multi-view
    Redundancy", NeurIPS 2023, arXiv:2306.05268.
    van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", arXiv:1807.03748
    (InfoNCE). Cheng, Hao, Dai, Liu, Gan & Carin, "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
    Information", ICML 2020.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.fission import split_code
from contrastlab.outputs import Outputs

__all__ = ["ConcatCritic", "FactorCLSSL", "FactorCLSup", "SPECS", "infonce_bound", "nce_club_bound", "same_class"]


def _check_scores(scores: Tensor, mask: Tensor | None) -> None:
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1] or scores.shape[0] < 1:
        raise ValueError(f"scores must be a square (N, N) matrix of critic values f(a_i, b_j), got shape "
                         f"{tuple(scores.shape)}")
    if mask is not None:
        if mask.shape != scores.shape or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of the scores' shape {tuple(scores.shape)}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.diagonal().all()):
            raise ValueError("mask must hold every positive pair (its diagonal must be all true)")


def same_class(labels: Tensor) -> Tensor:
    r"""The (N, N) bool mask :math:`C_{ij} = [y_i = y_j]`: the candidates of a bound conditioned on the label.

    Example:
        >>> same_class(torch.tensor([0, 1, 0])).int().tolist()
        [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    """
    return labels[:, None] == labels[None, :]


def infonce_bound(scores: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""The InfoNCE lower bound on mutual information from a matrix of critic values.

    .. math:: \hat I_{\text{NCE}} = \frac1N \sum_i \Big[ s_{ii} - \operatorname{logsumexp}_{j \in C_i} s_{ij}
              + \log |C_i| \Big]

    With every item a candidate (``mask=None``) this is :math:`\log N` minus the InfoNCE loss, and at most
    :math:`\log N`.

    Args:
        scores: ``(N, N)`` critic values :math:`s_{ij} = f(a_i, b_j)`; the diagonal holds the positive pairs.
        mask: optional ``(N, N)`` bool candidate sets :math:`C_i` (row :math:`i`), holding the diagonal
            (e.g. :func:`same_class` for a bound conditioned on the label).

    Returns:
        The 0-dim estimate, in nats.

    Raises:
        ValueError: for scores that are not square or a mask that does not fit them.

    Example:
        >>> s = torch.eye(4) * 50.0  # a critic that tells every pair apart
        >>> round(float(infonce_bound(s)), 4), round(math.log(4), 4)
        (1.3863, 1.3863)
    """
    _check_scores(scores, mask)
    if mask is None:
        return (scores.diagonal() - scores.logsumexp(dim=1)).mean() + math.log(scores.shape[0])
    kept = scores.masked_fill(~mask, float("-inf"))
    sizes = mask.sum(dim=1).to(scores.dtype)
    return (scores.diagonal() - kept.logsumexp(dim=1) + sizes.log()).mean()


def nce_club_bound(scores: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""The NCE-CLUB upper bound on mutual information: CLUB with the InfoNCE critic as its log-density ratio.

    .. math:: \hat I_{\text{NCE-CLUB}} = \frac1N \sum_i s_{ii} - \frac1N \sum_i \frac{1}{|C_i|} \sum_{j \in C_i} s_{ij}

    (joint pairs minus independent pairs; the independent ones include :math:`j = i`, as in CLUB's estimator).

    Args:
        scores: ``(N, N)`` values :math:`s_{ij} = f^\ast(a_i, b_j)` of a critic trained by :func:`infonce_bound`.
        mask: optional ``(N, N)`` bool candidate sets (see :func:`infonce_bound`).

    Returns:
        The 0-dim estimate, in nats.

    Raises:
        ValueError: for scores that are not square or a mask that does not fit them.

    Example:
        >>> float(nce_club_bound(torch.tensor([[2.0, 0.0], [0.0, 2.0]])))
        1.0
    """
    _check_scores(scores, mask)
    if mask is None:
        return scores.diagonal().mean() - scores.mean()
    independent = torch.where(mask, scores, torch.zeros_like(scores)).sum(dim=1) / mask.sum(dim=1).to(scores.dtype)
    return (scores.diagonal() - independent).mean()


class ConcatCritic(nn.Module):
    r"""A critic :math:`f(a, b) = \mathrm{MLP}([a; b])` scored on every pair of two batches.

    The MLP is ``Linear(a_dim + b_dim, hidden)``, ReLU, then ``layers`` times ``Linear(hidden, hidden)``, ReLU,
    then ``Linear(hidden, 1)``. The first layer is applied to :math:`a` and :math:`b` separately and summed
    (:math:`W [a; b] = W_a a + W_b b`), so the :math:`N \times M` pairs cost no concatenated copies.

    Args:
        a_dim: width of :math:`a`.
        b_dim: width of :math:`b`.
        hidden: width of the hidden layers.
        layers: hidden-to-hidden layers (0: one hidden layer).

    Raises:
        ValueError: for a width or depth that is not a positive (non-negative for ``layers``) int.

    Example:
        >>> critic = ConcatCritic(3, 2, hidden=8)
        >>> critic(torch.randn(4, 3), torch.randn(5, 2)).shape
        torch.Size([4, 5])
    """

    def __init__(self, a_dim: int, b_dim: int, *, hidden: int = 512, layers: int = 1) -> None:
        super().__init__()
        for name, value, low in (("a_dim", a_dim, 1), ("b_dim", b_dim, 1), ("hidden", hidden, 1), ("layers", layers, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.a_dim, self.b_dim = a_dim, b_dim
        self.first = nn.Linear(a_dim + b_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 1)

    def forward(self, a: Tensor, b: Tensor, *, frozen: bool = False) -> Tensor:
        r"""Scores of every pair, :math:`s_{ij} = f(a_i, b_j)`.

        Args:
            a: ``(N, a_dim)``.
            b: ``(M, b_dim)``.
            frozen: use the weights detached: the scores' gradient reaches ``a`` and ``b`` but not the critic.

        Returns:
            ``(N, M)`` scores.

        Raises:
            ValueError: for inputs of the wrong width.
        """
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != self.a_dim or b.shape[1] != self.b_dim:
            raise ValueError(f"the critic takes a (N, {self.a_dim}) and b (M, {self.b_dim}), got shapes "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")

        def params(layer: nn.Linear) -> tuple[Tensor, Tensor]:
            return (layer.weight.detach(), layer.bias.detach()) if frozen else (layer.weight, layer.bias)

        w, bias = params(self.first)
        # In-place ReLUs: the (N, M, hidden) sums are used once, and on a CPU allocation dominates their cost.
        h = (F.linear(a, w[:, :self.a_dim], bias)[:, None, :] + F.linear(b, w[:, self.a_dim:])[None, :, :]).relu_()
        for layer in self.hidden:
            h = F.linear(h, *params(layer)).relu_()
        return F.linear(h, *params(self.out)).squeeze(-1)

    def extra_repr(self) -> str:
        return f"a_dim={self.a_dim}, b_dim={self.b_dim}"


def _check_dims(dim: int, shared_dim: int | None) -> tuple[int, int]:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ValueError(f"dim must be an int >= 2 (a shared and a unique code), got {dim!r}")
    shared = dim // 2 if shared_dim is None else shared_dim
    if isinstance(shared, bool) or not isinstance(shared, int) or not 1 <= shared < dim:
        raise ValueError(f"shared_dim must be an int in [1, {dim - 1}] (dim={dim}), got {shared_dim!r}")
    return shared, dim - shared


def _modality_views(out: Outputs, name: str, per_modality: int) -> list[list[str]]:
    """The views of the first two modalities, grouped by modality in view order; ``per_modality`` views each."""
    groups: dict[str, list[str]] = {}
    for v in out.view_names:
        groups.setdefault(out.modalities.get(v, v), []).append(v)
    chosen = list(groups.values())[:2]
    if len(groups) < 2 or any(len(g) < per_modality for g in chosen):
        need = "a view of each of two modalities" if per_modality == 1 else \
            f"{per_modality} views (clean, augmented) of each of two modalities"
        raise ValueError(f"{name} needs {need}, got views {list(out.view_names)} of modalities {dict(out.modalities)}")
    return chosen


class _FactorCL(nn.Module):
    """The terms both variants share; a subclass says what the codes are conditioned on and what ``Y`` is."""

    name = "factorcl"
    # Critics: shared_nce I(S1;S2); shared_club I(S1;S2|C); unique_target[i] I(Ui;Y); unique_club I(U1;U2);
    # unique_cond_nce I(U1;U2|C). Built by the subclass, which knows the widths of the condition and of Y.

    def _setup(self, dim: int, shared_dim: int | None, hidden: int, layers: int) -> tuple[int, int]:
        self.dim = dim
        self.shared_dim, self.unique_dim = _check_dims(dim, shared_dim)
        self.critic_hidden, self.critic_layers = hidden, layers
        return self.shared_dim, self.unique_dim

    def _critic(self, a_dim: int, b_dim: int) -> ConcatCritic:
        return ConcatCritic(a_dim, b_dim, hidden=self.critic_hidden, layers=self.critic_layers)

    def _split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"{self.name} was built for embeddings of width {self.dim} (model.dim), got shape "
                             f"{tuple(z.shape)}")
        return split_code(z, self.shared_dim)

    def _read(self, out: Outputs) -> dict:
        """``{"z": (z1, z2), ...}``: the two modalities' embeddings and what the subclass conditions on."""
        raise NotImplementedError

    def _condition(self, c1: Tensor, c2: Tensor, ctx: dict, part: str) -> tuple[Tensor, Tensor, Tensor | None]:
        """The inputs of a conditional critic for codes ``c1``, ``c2`` (part ``"shared"`` or ``"unique"``)."""
        raise NotImplementedError

    def _target_scores(self, u: Tensor, i: int, ctx: dict) -> Tensor:
        """The (N, N) critic values whose InfoNCE bound stands for :math:`I(U_i; Y)`."""
        raise NotImplementedError

    def bounds(self, out: Outputs) -> dict[str, Tensor]:
        r"""Every estimate the loss is made of, by name (0-dim tensors, nats).

        ``C`` is the condition (``Y``, or the augmented copies in SSL), ``T`` the target (``Y``, or the modality's
        own augmented copy); ``fit ...`` are the InfoNCE bounds that train the NCE-CLUB critics on detached codes.
        """
        ctx = self._read(out)
        s1, u1 = self._split(ctx["z"][0])
        s2, u2 = self._split(ctx["z"][1])
        b: dict[str, Tensor] = {"I_nce(S1;S2)": infonce_bound(self.shared_nce(s1, s2))}
        a, c, mask = self._condition(s1, s2, ctx, "shared")
        b["I_nce_club(S1;S2|C)"] = nce_club_bound(self.shared_club(a, c, frozen=True), mask=mask)
        b["fit I_nce(S1;S2|C)"] = infonce_bound(self.shared_club(a.detach(), c.detach()), mask=mask)
        for i, u in enumerate((u1, u2)):
            b[f"I_nce(U{i + 1};T)"] = infonce_bound(self._target_scores(u, i, ctx))
        b["I_nce_club(U1;U2)"] = nce_club_bound(self.unique_club(u1, u2, frozen=True))
        b["fit I_nce(U1;U2)"] = infonce_bound(self.unique_club(u1.detach(), u2.detach()))
        a, c, mask = self._condition(u1, u2, ctx, "unique")
        b["I_nce(U1;U2|C)"] = infonce_bound(self.unique_cond_nce(a, c), mask=mask)
        return b

    def forward(self, out: Outputs) -> Tensor:
        """The loss: minus (the shared objective + the unique objective + the NCE-CLUB critics' fit)."""
        b = self.bounds(out)
        shared = b["I_nce(S1;S2)"] - b["I_nce_club(S1;S2|C)"]
        unique = b["I_nce(U1;T)"] + b["I_nce(U2;T)"] - b["I_nce_club(U1;U2)"] + b["I_nce(U1;U2|C)"]
        fit = b["fit I_nce(S1;S2|C)"] + b["fit I_nce(U1;U2)"]
        return -(shared + unique + fit)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, shared_dim={self.shared_dim}, critic_hidden={self.critic_hidden}, " \
               f"critic_layers={self.critic_layers}"


class FactorCLSup(_FactorCL):
    r"""FactorCL-SUP: the label is the task (see the module docstring for the loss).

    Reads ``embeddings`` (the first view of each of two modalities) and ``labels``.

    Args:
        num_classes: :math:`K \ge 2`, classes of the label (one-hot for the critics).
        dim: :math:`D`, the embedding width of each modality (model.dim).
        shared_dim: coordinates of the shared code, in [1, D - 1] (default D // 2); the rest are the unique code.
        critic_hidden: width of every critic's hidden layers (the paper's 512).
        critic_layers: hidden-to-hidden layers of every critic (the paper's 1).

    Raises:
        ValueError: for a bad option; when called, for outputs without labels or two modalities, or embeddings
            that are not ``dim`` wide.

    Example:
        >>> loss = FactorCLSup(2, 8, critic_hidden=16)
        >>> z = {"x1": torch.randn(6, 8), "x2": torch.randn(6, 8)}
        >>> out = Outputs(z, ("x1", "x2"), {"x1": "x1", "x2": "x2"}, labels=torch.tensor([0, 1, 0, 1, 1, 0]))
        >>> loss(out).shape
        torch.Size([])
    """

    name = "factorcl_sup"

    def __init__(self, num_classes: int, dim: int, *, shared_dim: int | None = None, critic_hidden: int = 512,
                 critic_layers: int = 1) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        ds, du = self._setup(dim, shared_dim, critic_hidden, critic_layers)
        k = num_classes
        self.shared_nce = self._critic(ds, ds)
        self.shared_club = self._critic(ds + k, ds)
        self.unique_target = nn.ModuleList(self._critic(du, k) for _ in range(2))
        self.unique_club = self._critic(du, du)
        self.unique_cond_nce = self._critic(du + k, du)

    def _read(self, out: Outputs) -> dict:
        (v1, *_), (v2, *_) = _modality_views(out, self.name, 1)
        z1, z2 = out.embeddings[v1], out.embeddings[v2]
        y = out.labels
        if y is None:
            raise ValueError(f"{self.name} needs labels, and this batch has none")
        if y.shape != (z1.shape[0],) or (y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes)):
            raise ValueError(f"{self.name} needs labels of shape ({z1.shape[0]},) in [0, {self.num_classes}), got "
                             f"shape {tuple(y.shape)} and values {y[:8].tolist()}")
        onehot = F.one_hot(y.long(), self.num_classes).to(z1.dtype)
        return {"z": (z1, z2), "y": onehot, "labels": y.long(), "mask": same_class(y)}

    def _condition(self, c1, c2, ctx, part):
        return torch.cat([c1, ctx["y"]], dim=1), c2, ctx["mask"]

    def _target_scores(self, u, i, ctx):
        # f(u_i, y_j) takes K values per row: score u against each class once, then look up the columns
        # (the same values and gradients as scoring all N x N pairs, at N x K the cost).
        classes = torch.eye(self.num_classes, dtype=u.dtype, device=u.device)
        return self.unique_target[i](u, classes)[:, ctx["labels"]]


class FactorCLSSL(_FactorCL):
    r"""FactorCL-SSL: augmented copies stand in for the label (see the module docstring for the loss).

    Reads ``embeddings``: per modality the first view is the clean one and the second its augmented copy (the
    ``modality_augment`` views ``x1, x2, x1_aug, x2_aug``).

    Args:
        dim: :math:`D`, the embedding width of each modality (model.dim).
        shared_dim: coordinates of the shared code, in [1, D - 1] (default D // 2); the rest are the unique code.
        critic_hidden: width of every critic's hidden layers (the paper's 512).
        critic_layers: hidden-to-hidden layers of every critic (the paper's 1).

    Raises:
        ValueError: for a bad option; when called, for outputs without two views of each of two modalities, or
            embeddings that are not ``dim`` wide.

    Example:
        >>> loss = FactorCLSSL(8, critic_hidden=16)
        >>> views = ("x1", "x2", "x1_aug", "x2_aug")
        >>> out = Outputs({v: torch.randn(6, 8) for v in views}, views, {v: v[:2] for v in views})
        >>> loss(out).shape
        torch.Size([])
    """

    name = "factorcl_ssl"

    def __init__(self, dim: int, *, shared_dim: int | None = None, critic_hidden: int = 512,
                 critic_layers: int = 1) -> None:
        super().__init__()
        ds, du = self._setup(dim, shared_dim, critic_hidden, critic_layers)
        self.shared_nce = self._critic(ds, ds)
        self.shared_club = self._critic(2 * ds, 2 * ds)
        self.unique_target = nn.ModuleList(self._critic(du, du) for _ in range(2))
        self.unique_club = self._critic(du, du)
        self.unique_cond_nce = self._critic(2 * du, 2 * du)

    def _read(self, out: Outputs) -> dict:
        (v1, a1, *_), (v2, a2, *_) = _modality_views(out, self.name, 2)
        e = out.embeddings
        return {"z": (e[v1], e[v2]), "aug": (e[a1], e[a2])}

    def _condition(self, c1, c2, ctx, part):
        k = 0 if part == "shared" else 1
        (a1, a2) = (self._split(z)[k] for z in ctx["aug"])
        return torch.cat([c1, a1], dim=1), torch.cat([c2, a2], dim=1), None

    def _target_scores(self, u, i, ctx):
        return self.unique_target[i](u, self._split(ctx["aug"][i])[1])


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="factorcl_sup", factory=FactorCLSup, kind="method", min_modalities=2,
        formula="-[I_nce(S1;S2) - I_club(S1;S2|Y)] - [sum_i I_nce(Ui;Y) - I_club(U1;U2) + I_nce(U1;U2|Y)]"
                " - critic fit; z = [S | U] per modality",
        reference="Liang et al. 2023 (FactorCL), NeurIPS, arXiv:2306.05268",
        reads=frozenset({"embeddings", "labels"}), model={"normalize": "none"},
    ),
    ObjectiveSpec(
        name="factorcl_ssl", factory=FactorCLSSL, kind="method", min_modalities=2,
        formula="factorcl_sup with Y replaced by augmented copies: I(Xi;Xi'), conditioning on [z; z']",
        reference="Liang et al. 2023 (FactorCL), NeurIPS, arXiv:2306.05268",
        reads=frozenset({"embeddings"}), model={"normalize": "none"},
    ),
]
