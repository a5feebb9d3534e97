r"""Supervised contrastive learning (SupCon) and cross-entropy as a dual-encoder contrastive loss.

Two ways labels enter a contrastive objective:

* :func:`supcon` treats every other view of the same class as a positive (Khosla et al. 2020). Without labels
  each item is its own class and the loss is SimCLR's NT-Xent.
* :func:`class_contrastive` contrasts each input with one embedding per *class*: a second "tower" that maps the
  one-hot class vector :math:`e_c` linearly to :math:`w_c = W^\top e_c`. The scores
  :math:`z_i^\top w_c + b_c` are exactly a linear classifier's logits, so this contrastive loss *is* softmax
  cross-entropy and its argmax *is* the classifier's prediction (worked answer 6 of the similarity-learning
  homework).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.objectives._checks import check_positive
from contrastlab.objectives._reduction import check_reduction, reduce
from contrastlab.objectives._spec import ObjectiveSpec
from contrastlab.objectives.similarity import SimilaritySpec, _repr_suffix, parse_similarity, resolve_similarity
from contrastlab.objectives.temperature import check_temperature

__all__ = ["SPECS", "ClassTowerContrastive", "SupCon", "class_contrastive", "class_logits", "supcon"]


def _check_labels(labels: Tensor, n: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be an integer tensor of shape (N,), got {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape (N,) = ({n},), got shape {tuple(labels.shape)}")
    if torch.is_floating_point(labels) or torch.is_complex(labels) or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    return labels


def _check_views_stack(embeddings: Tensor) -> Tensor:
    """``(N, V, D)`` floating embeddings; ``(N, D)`` is one view, ``(N, 1, D)``."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"embeddings must be a tensor of shape (N, D) or (N, V, D), got {type(embeddings).__name__}")
    if embeddings.dim() not in (2, 3):
        raise ValueError(
            f"embeddings must have shape (N, D) or (N, V, D) (views stacked on dim 1), got {tuple(embeddings.shape)}"
        )
    if not torch.is_floating_point(embeddings):
        raise ValueError(f"embeddings must be floating point, got dtype {embeddings.dtype}")
    return embeddings.unsqueeze(1) if embeddings.dim() == 2 else embeddings


def supcon(
    embeddings: Tensor,
    labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    similarity: SimilaritySpec | None = None,
) -> Tensor:
    r"""Supervised contrastive loss :math:`\mathcal{L}^{sup}_{out}` over all views of a batch.

    The :math:`N V` embeddings are the anchors :math:`I`; for anchor :math:`i`, :math:`A(i) = I \setminus \{i\}`
    and the positives :math:`P(i) = \{p \in A(i) : y_p = y_i\}`:

    .. math::

        \mathcal{L} = \frac{1}{|I'|} \sum_{i \in I'} \frac{-1}{|P(i)|} \sum_{p \in P(i)}
            \log \frac{\exp(z_i^\top z_p / \tau)}{\sum_{a \in A(i)} \exp(z_i^\top z_a / \tau)},

    where :math:`I' = \{i : |P(i)| > 0\}` (the paper sums over anchors; we average, which only rescales).
    :math:`z_i^\top z_a` is the cosine similarity with ``normalize=True``; ``similarity`` replaces it with
    another coordination function :math:`s(z_i, z_a)` (e.g. an RBF kernel).
    With ``labels=None`` item :math:`n` is its own class, so the positives of a view are the other views of the
    same item; for :math:`V = 2` this is NT-Xent (SimCLR) with :math:`2N - 1` candidates per anchor.
    ``supcon(embeddings (N, D), labels)`` is the one-view form pytorch-metric-learning's ``SupConLoss``
    takes: the positives are the other items of the class.

    Args:
        embeddings: ``(N, V, D)``, ``V`` views of each of ``N`` items, or ``(N, D)`` (one view).
        labels: ``(N,)`` integer class of each item, or ``None`` (each item its own class).
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor (a learnable temperature).
        normalize: project the embeddings onto the unit sphere first (cosine similarity).
        reduction: ``"mean"`` over the anchors in :math:`I'`, ``"sum"``, or ``"none"`` for every anchor's
            loss, shaped like the embeddings' leading dimensions (``(N, V)``, or ``(N,)`` for ``(N, D)``); an
            anchor without a positive has loss 0 there and is left out of ``"mean"`` (as ``ignore_index``
            in ``cross_entropy``).
        similarity: the coordination function :math:`s` (``None``: dot products after ``normalize``; a name
            such as ``"rbf"``, a mapping ``{"name": "rbf", "sigma": 0.5}`` or a callable), see
            :class:`~contrastlab.objectives.similarity.Similarity`; applied after ``normalize``.

    Returns:
        A 0-dim tensor, or ``(N, V)`` / ``(N,)`` with ``reduction="none"``.

    Raises:
        ValueError: if ``temperature <= 0``, ``embeddings`` is not ``(N, D)`` or ``(N, V, D)`` floating point,
            ``N < 2`` (no negatives), ``labels`` is not ``(N,)`` integer, ``reduction`` is unknown,
            ``similarity`` is not a similarity, or no anchor has a positive (one view and every class appears
            once).

    References:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, arXiv:2004.11362, eq. 2.
        Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
        ICML 2020, arXiv:2002.05709.

    Example:
        >>> z = torch.randn(8, 2, 16)
        >>> supcon(z, torch.tensor([0, 1, 0, 1, 2, 2, 3, 3])).shape
        torch.Size([])
    """
    temperature = check_temperature(temperature)
    check_reduction(reduction)
    sim = resolve_similarity(similarity)
    one_view = isinstance(embeddings, Tensor) and embeddings.dim() == 2
    features = _check_views_stack(embeddings)
    n, v, _ = features.shape
    if n < 2:
        raise ValueError(f"batch size must be >= 2 for in-batch negatives, got {n}")
    if labels is None:
        labels = torch.arange(n, device=features.device)
    else:
        labels = _check_labels(labels, n).to(features.device)

    z = features.reshape(n * v, -1)  # row i * V + view
    if normalize:
        z = F.normalize(z, dim=1)
    y = labels.repeat_interleave(v)
    self_mask = torch.eye(n * v, dtype=torch.bool, device=z.device)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        raise ValueError(f"no anchor has a positive: with V={v} view(s) some class must appear at least twice")

    logits = (sim.matrix(z, z) / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos_log_prob = torch.where(positives, log_prob, torch.zeros((), dtype=log_prob.dtype, device=z.device))
    if reduction == "mean":
        return (-pos_log_prob.sum(dim=1)[has_pos] / n_pos[has_pos]).mean()
    per_anchor = -pos_log_prob.sum(dim=1) / n_pos.clamp(min=1)  # 0 where there is no positive
    return reduce(per_anchor.reshape(n) if one_view else per_anchor.reshape(n, v), reduction)


def class_logits(
    z: Tensor, class_embeddings: Tensor, *, bias: Tensor | None = None, temperature: float | Tensor = 1.0
) -> Tensor:
    r"""Scores of every input against every class embedding: :math:`s_{ic} = (z_i^\top w_c + b_c) / \tau`.

    The bias is the dual encoder's score of the augmented vectors :math:`[z_i; 1]^\top [w_c; b_c]`, so it is
    still an inner product between the two towers' outputs.

    Args:
        z: ``(N, D)`` or ``(N, V, D)`` input-tower embeddings.
        class_embeddings: ``(C, D)`` class-tower outputs :math:`w_c = W^\top e_c`, one row per class.
        bias: ``(C,)`` per-class offsets, or ``None``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.

    Returns:
        ``(N, C)`` or ``(N, V, C)`` logits.

    Raises:
        ValueError: on a bad temperature or mismatched shapes.

    Example:
        >>> class_logits(torch.randn(4, 8), torch.randn(3, 8)).shape
        torch.Size([4, 3])
    """
    temperature = check_temperature(temperature)
    if not isinstance(z, Tensor) or z.dim() not in (2, 3) or not torch.is_floating_point(z):
        got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"z must be a floating tensor of shape (N, D) or (N, V, D), got {got}")
    if not isinstance(class_embeddings, Tensor) or class_embeddings.dim() != 2:
        got = class_embeddings.shape if isinstance(class_embeddings, Tensor) else type(class_embeddings).__name__
        got = tuple(got) if isinstance(got, torch.Size) else got
        raise ValueError(f"class_embeddings must have shape (C, D), got {got}")
    if class_embeddings.shape[1] != z.shape[-1]:
        raise ValueError(
            f"z and class_embeddings must share the dimension D, got z {tuple(z.shape)} and "
            f"class_embeddings {tuple(class_embeddings.shape)}"
        )
    scores = z @ class_embeddings.T
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.shape != (class_embeddings.shape[0],):
            got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
            raise ValueError(f"bias must have shape (C,) = ({class_embeddings.shape[0]},), got {got}")
        scores = scores + bias
    return scores / temperature


def class_contrastive(
    z: Tensor,
    labels: Tensor,
    class_embeddings: Tensor,
    *,
    bias: Tensor | None = None,
    temperature: float | Tensor = 1.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Contrast each input with all class embeddings; the positive is its own class.

    .. math::

        \mathcal{L} = \frac{1}{N} \sum_i -\log \frac{\exp\big((z_i^\top w_{y_i} + b_{y_i}) / \tau\big)}
            {\sum_{c=1}^{C} \exp\big((z_i^\top w_c + b_c) / \tau\big)}

    With the class tower :math:`f_2(c) = W^\top e_c` (a linear map of the one-hot vector, i.e. an embedding
    table) this is exactly softmax cross-entropy of the linear classifier :math:`g(x) = W z + b` at
    :math:`\tau = 1` (at other :math:`\tau`, of :math:`(W z + b)/\tau`), and :math:`\arg\max_c s_{ic}` is its
    prediction. With ``z`` of shape ``(N, V, D)`` every view is an input carrying its item's label.

    Args:
        z: ``(N, D)`` or ``(N, V, D)`` input-tower embeddings.
        labels: ``(N,)`` integer classes in ``[0, C)``.
        class_embeddings: ``(C, D)`` class-tower outputs.
        bias: ``(C,)`` per-class offsets, or ``None``.
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        reduction: ``"mean"`` over the ``N`` (or ``N V``) inputs, ``"sum"``, or ``"none"`` for each input's
            loss, ``(N,)`` (or ``(N, V)``).

    Returns:
        A 0-dim tensor, or ``(N,)`` / ``(N, V)`` with ``reduction="none"``.

    Raises:
        ValueError: on a bad temperature or ``reduction``, mismatched shapes, or a label outside ``[0, C)``.

    References:
        Similarity-learning homework, worked answer 6 (``reference/homework-similarity-learning-answers.md``).
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), 2021,
        arXiv:2103.00020 (class embeddings from a second tower used as a linear classifier).

    Example:
        >>> z, w = torch.randn(4, 8), torch.randn(3, 8)
        >>> y = torch.tensor([0, 2, 1, 0])
        >>> torch.allclose(class_contrastive(z, y, w), F.cross_entropy(z @ w.T, y))
        True
    """
    check_reduction(reduction)
    logits = class_logits(z, class_embeddings, bias=bias, temperature=temperature)
    labels = _check_labels(labels, z.shape[0]).to(z.device)
    num_classes = class_embeddings.shape[0]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0].item()
        raise ValueError(f"labels must lie in [0, {num_classes}), got label {bad}")
    shape = logits.shape[:-1]
    if logits.dim() == 3:
        labels = labels.repeat_interleave(logits.shape[1])
        logits = logits.reshape(-1, num_classes)
    loss = F.cross_entropy(logits, labels, reduction=reduction)
    return loss.reshape(shape) if reduction == "none" else loss


class SupCon(nn.Module):
    r"""Module form of :func:`supcon`: ``loss(embeddings (N, V, D) or (N, D), labels (N,) or None)``.

    ``forward(embeddings, labels=None, temperature=None, similarity=None)``: ``temperature`` overrides the
    stored one for this call (a model's :class:`~contrastlab.objectives.temperature.LearnableTemperature`),
    ``similarity`` the stored coordination function.

    Args:
        temperature: :math:`\tau > 0`, a float or a 0-dim tensor.
        normalize: cosine similarity.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per anchor, ``(N, V)`` or ``(N,)``).
        similarity: the coordination function (``None``: dot products after ``normalize``), see
            :func:`supcon`.

    Raises:
        ValueError: on a bad option (named in the message).

    Example:
        >>> SupCon(temperature=0.1)(torch.randn(6, 2, 8), torch.tensor([0, 0, 1, 1, 2, 2])).shape
        torch.Size([])
    """

    def __init__(
        self,
        *,
        temperature: float | Tensor = 0.1,
        normalize: bool = True,
        reduction: str = "mean",
        similarity: SimilaritySpec | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.normalize = bool(normalize)
        self.reduction = check_reduction(reduction)
        self.similarity = parse_similarity(similarity)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        temperature: float | Tensor | None = None,
        similarity: SimilaritySpec | None = None,
    ) -> Tensor:
        return supcon(
            embeddings,
            labels,
            temperature=self.temperature if temperature is None else temperature,
            normalize=self.normalize,
            reduction=self.reduction,
            similarity=self.similarity if similarity is None else similarity,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize={self.normalize}, reduction={self.reduction!r}"
            f"{_repr_suffix(self.similarity)}"
        )


class ClassTowerContrastive(nn.Module):
    r"""A dual encoder whose second tower embeds class labels; its contrastive loss is cross-entropy.

    The class tower is the linear map of the one-hot class vector :math:`f_2(c) = W^\top e_c`, stored as the
    ``(C, D)`` table :attr:`class_embeddings` (initialised like ``nn.Linear(D, C)``), with an optional
    per-class bias. The module owns these parameters, so the optimiser must include ``loss.parameters()``.

    Args:
        num_classes: :math:`C \geq 2`.
        dim: :math:`D \geq 1`, the input tower's embedding size.
        bias: learn the per-class offsets :math:`b_c`.
        temperature: :math:`\tau > 0` (fixed).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per input, ``(N,)`` or ``(N, V)``).

    Raises:
        ValueError: if ``num_classes < 2``, ``dim < 1``, ``temperature <= 0`` or ``reduction`` is unknown.

    Example:
        >>> head = ClassTowerContrastive(3, 8)
        >>> z = torch.randn(5, 8)
        >>> head(z, torch.tensor([0, 1, 2, 0, 1])).shape, head.predict(z).shape
        (torch.Size([]), torch.Size([5]))
    """

    def __init__(
        self, num_classes: int, dim: int, *, bias: bool = True, temperature: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        self.temperature = check_positive("temperature", temperature)
        self.reduction = check_reduction(reduction)
        bound = dim**-0.5
        self.class_embeddings = nn.Parameter(torch.empty(num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound)) if bias else None

    def class_tower(self, labels: Tensor) -> Tensor:
        """``(N,)`` labels to ``(N, D)`` class embeddings: the one-hot vectors times the table."""
        one_hot = F.one_hot(labels, self.class_embeddings.shape[0]).to(self.class_embeddings.dtype)
        return one_hot @ self.class_embeddings

    def logits(self, z: Tensor) -> Tensor:
        """``(N, D)`` or ``(N, V, D)`` inputs to ``(N, C)`` or ``(N, V, C)`` scores against every class."""
        return class_logits(z, self.class_embeddings, bias=self.bias, temperature=self.temperature)

    def predict(self, z: Tensor) -> Tensor:
        """The most similar class for each input: ``(N,)`` (or ``(N, V)``) integer labels."""
        return self.logits(z).argmax(dim=-1)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return class_contrastive(
            z, labels, self.class_embeddings, bias=self.bias, temperature=self.temperature, reduction=self.reduction
        )

    def extra_repr(self) -> str:
        c, d = self.class_embeddings.shape
        return (
            f"num_classes={c}, dim={d}, bias={self.bias is not None}, temperature={self.temperature}, "
            f"reduction={self.reduction!r}"
        )


SPECS: list[ObjectiveSpec] = [
    ObjectiveSpec(
        name="supcon",
        factory=SupCon,
        kind="supervised",
        formula=(
            "mean_i -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t),  "
            "z_i.z_a or options.similarity"
        ),
        reference="Khosla et al. 2020, Supervised Contrastive Learning, arXiv:2004.11362",
        uses_negatives=True,
    ),
    ObjectiveSpec(
        name="class_contrastive",
        factory=ClassTowerContrastive,
        kind="supervised",
        formula="-log exp((z_i.w_y + b_y)/t) / sum_c exp((z_i.w_c + b_c)/t), w_c = W^T e_c (= cross-entropy)",
        reference="Similarity-learning homework, worked answer 6; Radford et al. 2021 (CLIP), arXiv:2103.00020",
        uses_negatives=False,
    ),
]
