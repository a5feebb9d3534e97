r"""Monitors during training: held-out kNN accuracy, an online linear probe, RankMe, alignment and
uniformity, and a collapse warning.

Every ``log.every`` steps the loop logs the batch's alignment and uniformity (:func:`batch_geometry`, through
:mod:`contrastlab.evaluation.geometry`, the one implementation). At *monitor steps* (``monitor.every``, and always
the last step; by default about 20 over the run, spaced so that they cost at most about 5 % of the training time,
none for a run too short to afford one: :func:`monitor_every`) :class:`Monitors` measures, on the main process only:

* **kNN accuracy** of a fixed, seeded subset of held-out items (the data set's other split) against a bank
  of as many training items, on backbone features of the deterministic evaluation views (what ``contrastlab
  eval`` reads), through :func:`~contrastlab.evaluation.knn.knn_classify`;
* the held-out accuracy of an **online linear probe** trained at every step, with its own optimiser, on the
  detached features of the training batch (:class:`OnlineProbe`; its accuracy on the training batches since the
  previous row is on every log row, ``probe_train_acc``);
* **RankMe** of the held-out features (:func:`~contrastlab.evaluation.geometry.effective_rank` with
  :math:`\varepsilon = 10^{-7}`);
* SimSiam's **collapse** measure on the batch's embeddings (:func:`embedding_std`): below
  :data:`COLLAPSE_STD` the row's ``collapse`` is 1, and the first time one line is printed.

The model is put in eval mode for the measurement and every module's mode is restored after it; nothing the
monitors do draws from the random streams the training uses (the global generators are forked around a
measurement, the probe has its own seeded generator), so a run's weights are the same, bit for bit, with
monitors on or off. No collective operation runs inside a monitor: under DDP the other processes never
wait on it beyond the next step's gradient exchange.

References:
    Wu, Xiong, Yu & Lin, "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018
    (the weighted kNN monitor).
    Garrido, Balestriero, Najman & LeCun, "RankMe: Assessing the Downstream Performance of Pretrained
    Self-Supervised Representations by Their Rank", ICML 2023.
    Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, section 4.1 and figure 2 (the
    standard deviation of the l2-normalised output as the sign of collapse).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastlab.data.base import Batch, Dataset, to_device
from contrastlab.data.loading import LoaderOptions, is_stream, ordered_batches
from contrastlab.errors import UserError, one_line
from contrastlab.evaluation.features import concat_towers, encode_towers
from contrastlab.evaluation.geometry import alignment, effective_rank, uniformity
from contrastlab.evaluation.knn import knn_classify
from contrastlab.evaluation.selection import cat_batches, slice_batch
from contrastlab.outputs import Outputs
from contrastlab.training.checkpoint import flatten_optimizer, unflatten_optimizer
from contrastlab.training.config import MonitorConfig

#: :math:`\varepsilon` of RankMe (Garrido et al. 2023).
RANKME_EPS = 1e-7
#: ``emb_std`` below this marks a collapse: the embeddings spread over about 1 % or less of the dimensions a
#: uniform spread would fill (SimSiam's collapsed runs reach 0; a spread over k of D dimensions gives sqrt(k / D)).
COLLAPSE_STD = 0.1
#: Held-out measurements over a run when ``monitor.every`` is automatic.
AUTO_MEASUREMENTS = 20
#: The share of training time the automatic cadence allows each measurement (items encoded against items trained).
AUTO_BUDGET = 0.05
#: Checkpoint tensors of the monitors start with this.
PREFIX = "monitor."


def monitor_every(cfg: MonitorConfig, *, total: int, batch_size: int, views: int, log_every: int,
                  probe_head: bool = False) -> int:
    r"""The steps between held-out measurements: ``monitor.every``, or when it is null an automatic cadence.

    A training step reads ``B`` items and encodes ``B × V`` inputs forward and backward (about three forward
    passes); the monitors read ``2 × items`` items once (bank and queries) and each measurement encodes them forward
    (``3 × items`` inputs while the probe reads head embeddings). The automatic cadence keeps both within
    :data:`AUTO_BUDGET` (5 %):

    * a run that trains on fewer than ``2 × items / 0.05`` items (:math:`T B`) gets no monitors at all (0): reading
      and measuring the held-out items once would cost more;
    * otherwise :data:`AUTO_MEASUREMENTS` measurements over the run, fewer when one would cost more than 5 % of the
      steps between two:

      .. math:: \text{every} = \Big\lceil \max\Big(\frac{T}{20},\ \frac{E}{0.05 \cdot 3 B V}\Big) \Big\rceil

      (:math:`E` inputs encoded per measurement), rounded up to a multiple of ``log_every`` (monitor rows are
      log rows).

    Args:
        cfg: the ``monitor`` section.
        total: the run's steps ``T``.
        batch_size: the global batch ``B``.
        views: the views per item ``V``.
        log_every: ``log.every``.

    Returns:
        Steps between measurements; 0 when the monitors are off.

    Example:
        >>> monitor_every(MonitorConfig(), total=2000, batch_size=256, views=2, log_every=10)
        100
        >>> monitor_every(MonitorConfig(), total=50, batch_size=64, views=2, log_every=10)  # too short
        0
        >>> monitor_every(MonitorConfig(every=5), total=50, batch_size=64, views=2, log_every=10)
        5
    """
    if cfg.every is not None:
        return cfg.every
    if total * batch_size * AUTO_BUDGET < 2 * cfg.items:
        return 0
    encoded = (3 if probe_head else 2) * cfg.items
    floor = encoded / (AUTO_BUDGET * 3 * batch_size * max(1, views))
    every = max(1, math.ceil(max(total / AUTO_MEASUREMENTS, floor)))
    return -(-every // log_every) * log_every


def monitor_due(step: int, every: int, total: int) -> bool:
    """Whether ``step`` (steps done) is a monitor step: a multiple of ``every``, or the last step.

    Example:
        >>> [s for s in range(1, 26) if monitor_due(s, 10, 25)]
        [10, 20, 25]
    """
    return every > 0 and (step % every == 0 or step == total)


def batch_geometry(embeddings: Mapping[str, Tensor]) -> dict[str, float]:
    r"""Alignment of the first two views' embeddings and uniformity of the first's, for the log rows.

    Through :func:`~contrastlab.evaluation.geometry.alignment` and
    :func:`~contrastlab.evaluation.geometry.uniformity` (Wang & Isola; rows normalised, :math:`\alpha = t = 2`).

    Args:
        embeddings: view name -> ``(N, D)`` embeddings, in view order.

    Returns:
        ``{"align": ..., "uniform": ...}``; ``nan`` where undefined (one view, fewer than two rows,
        non-finite values).

    Example:
        >>> z = torch.eye(3)
        >>> {k: round(v, 4) for k, v in batch_geometry({"a": z, "b": z}).items()}
        {'align': 0.0, 'uniform': -4.0}
    """
    z = list(embeddings.values())
    out = {"align": float("nan"), "uniform": float("nan")}
    if not z:
        return out
    try:
        if len(z) > 1:
            out["align"] = alignment(z[0], z[1])
        if z[0].shape[0] >= 2:
            out["uniform"] = uniformity(z[0])
    except ValueError:  # non-finite embeddings: the loss check names the step
        pass
    return out


def embedding_std(z: Tensor) -> float:
    r"""SimSiam's collapse measure: the standard deviation of each dimension of the l2-normalised embeddings,
    averaged over the dimensions and scaled by :math:`\sqrt D`.

    .. math:: s = \sqrt{D}\,\frac1D \sum_{d=1}^{D} \operatorname{std}_i\Big(\frac{z_{id}}{\lVert z_i \rVert_2}\Big)

    A direction spread uniformly over the sphere has a standard deviation of :math:`1/\sqrt D` in every
    dimension, so :math:`s \approx 1`; embeddings collapsed to one point give 0, and a spread over only
    :math:`k` of :math:`D` dimensions about :math:`\sqrt{k/D}`.

    References:
        Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, figure 2.

    Args:
        z: ``(N, D)`` embeddings.

    Returns:
        :math:`s`, or ``nan`` for fewer than two rows.

    Example:
        >>> embedding_std(torch.ones(8, 4))
        0.0
        >>> round(embedding_std(torch.cat([torch.eye(4), -torch.eye(4)])), 4)
        1.0
    """
    z = z.detach().float()
    if z.ndim != 2 or z.shape[0] < 2:
        return float("nan")
    unit = F.normalize(z, dim=1)
    return float(unit.std(dim=0, unbiased=False).mean() * math.sqrt(z.shape[1]))


class OnlineProbe(nn.Module):
    r"""A linear classifier trained alongside the encoder on its detached features (an online linear probe).

    The features are standardised by a batch norm without learned scale or shift (its running statistics
    serve the held-out items), then mapped to class logits; every :meth:`step` is one Adam step on the
    cross-entropy of one batch. The gradient never reaches the encoder. The weights start from the probe's
    own seeded generator: building or training it draws nothing from torch's global random state.

    Args:
        in_dim: the feature width ``F``.
        num_classes: the classes ``C``.
        lr: Adam's learning rate.
        seed: seeds the initial weights.
        device: where the probe lives (the training device).

    Example:
        >>> probe = OnlineProbe(4, 2, lr=0.05, seed=0)
        >>> x = torch.randn(64, 4); y = (x[:, 0] > 0).long()
        >>> for _ in range(50):
        ...     probe.step(x, y)
        >>> probe.accuracy(x, y) > 0.9
        True
    """

    def __init__(self, in_dim: int, num_classes: int, *, lr: float, seed: int,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim, affine=False)
        with torch.random.fork_rng(devices=[]):  # nn.Linear draws its initial weights from the global generator
            self.linear = nn.Linear(in_dim, num_classes)
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's own initial range
        with torch.no_grad():
            self.linear.weight.copy_(torch.empty(num_classes, in_dim).uniform_(-bound, bound, generator=generator))
            self.linear.bias.copy_(torch.empty(num_classes).uniform_(-bound, bound, generator=generator))
        self.register_buffer("correct", torch.zeros((), dtype=torch.long))  # since the last train_accuracy()
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.to(device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(N, C)`` of features ``(N, F)``."""
        return self.linear(self.norm(x))

    def step(self, x: Tensor, y: Tensor) -> None:
        """One optimiser step on features ``(N, F)`` (detached here) and labels ``(N,)``; counts the batch's
        correct predictions (made before the step) without reading them on the host."""
        if x.shape[0] < 2:  # batch norm needs two rows
            return
        self.train()
        with torch.enable_grad():
            logits = self(x.detach().float())
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        self.optimizer.step()
        self.correct += (logits.detach().argmax(dim=1) == y).sum()
        self.seen += y.shape[0]

    def train_accuracy(self) -> float:
        """The accuracy on the training batches since the last call (``nan`` for none); starts a new count."""
        seen = int(self.seen)
        value = int(self.correct) / seen if seen else float("nan")
        self.correct.zero_()
        self.seen.zero_()
        return value

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """The accuracy on features ``(N, F)`` with labels ``(N,)`` (eval mode: the running statistics)."""
        self.eval()
        device = self.linear.weight.device
        pred = self(x.to(device).float()).argmax(dim=1)
        return float((pred == y.to(device)).float().mean())

    def state_tensors(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Weights, statistics, counts and the optimiser state as tensors and plain data (for a checkpoint)."""
        tensors = {f"probe.{k}": v for k, v in self.state_dict().items()}
        opt_tensors, opt_plain = flatten_optimizer(self.optimizer.state_dict())
        tensors.update({f"probe_{k}": v for k, v in opt_tensors.items()})
        return tensors, {"optimizer": opt_plain}

    def load_state_tensors(self, tensors: Mapping[str, Tensor], plain: Mapping[str, Any]) -> None:
        """Restore :meth:`state_tensors`.

        Raises:
            ValueError: tensors or optimiser state that do not fit this probe.
        """
        own = {k.removeprefix("probe."): v for k, v in tensors.items() if k.startswith("probe.")}
        self.load_state_dict(own)
        opt = {k.removeprefix("probe_"): v for k, v in tensors.items() if k.startswith("probe_optimizer.")}
        self.optimizer.load_state_dict(unflatten_optimizer(opt, plain["optimizer"]))


class _ViewSubset:
    """The run's view generator showing only some of its views: what a monitor encodes."""

    def __init__(self, views, names: Sequence[str]) -> None:
        self.views, self.view_names = views, tuple(names)
        self.view_modalities = {v: views.view_modalities[v] for v in self.view_names}

    def eval_views(self, batch: Batch) -> dict[str, Tensor]:
        shown = self.views.eval_views(batch)
        return {v: shown[v] for v in self.view_names}


def feature_views(model, views) -> tuple[str, ...]:
    """The views whose towers give a run's features: the first view of every tower whose views are made from the
    same data as the first view (``view_sources``, else the view's modality; the rule of
    :func:`contrastlab.evaluation.pipeline.tower_sources`): CMC's L and ab towers are concatenated; an image
    tower is never joined with a caption tower.

    Example:
        >>> from types import SimpleNamespace
        >>> views = SimpleNamespace(view_names=("L", "ab", "text"), view_modalities={"L": "image", "ab": "image", "text": "text"})
        >>> feature_views(SimpleNamespace(view_towers={"L": "L", "ab": "ab", "text": "text"}), views)
        ('L', 'ab')
    """
    source = getattr(views, "view_sources", None) or views.view_modalities  # the data a view is made from
    modality = source[views.view_names[0]]
    chosen: dict[str, str] = {}
    for v in views.view_names:
        if source[v] == modality:
            chosen.setdefault(model.view_towers[v], v)
    return tuple(chosen.values())


def _read(dataset, indices: Tensor | None, *, limit: int | None, batch_size: int) -> list[Batch]:
    """Items of ``dataset`` read once, in order, as CPU batches (images as the source gives them)."""
    with closing(ordered_batches(dataset, indices, batch_size=batch_size, options=LoaderOptions(num_workers=0),
                                 limit=limit)) as batches:
        return [b for b in batches]


def _labels(batches: Sequence[Batch]) -> Tensor | None:
    if not batches or any(b.labels is None for b in batches):
        return None
    return torch.cat([b.labels for b in batches]).cpu()


class HeldOut:
    """The fixed items the monitors measure: a bank of training items and held-out queries, with their labels.

    Args:
        bank: CPU batches of training items (empty when nothing needs a bank).
        queries: CPU batches of held-out items.
        note: where the queries come from, when it is worth saying (no test split).
    """

    def __init__(self, bank: list[Batch], queries: list[Batch], *, note: str | None = None) -> None:
        self.bank, self.queries, self.note = bank, queries, note
        self.bank_labels, self.query_labels = _labels(bank), _labels(queries)

    @classmethod
    def build(cls, train: Dataset, held_out: Dataset | None, *, items: int, seed: int, batch_size: int,
              bank: bool = True) -> "HeldOut":
        """A seeded subset of at most ``items`` items of ``held_out`` and, with ``bank``, as many of ``train``.

        Without a held-out data set the queries are training items outside the bank (said in :attr:`note`).
        Streams are read in order: their first items.

        Args:
            train: the training data set.
            held_out: the other split, or ``None``.
            items: the subset size of each.
            seed: seeds the subsets.
            batch_size: items per batch held.
            bank: also hold training items for the kNN bank.

        Returns:
            The :class:`HeldOut`.
        """
        generator = torch.Generator().manual_seed(seed)
        want = items if bank else 0
        if held_out is not None:
            queries = cls._subset(held_out, items, generator, batch_size)
            return cls(cls._subset(train, want, generator, batch_size) if want else [], queries)
        note = "the held-out queries are training items outside the kNN bank (the data set has no other split here)"
        if is_stream(train):
            both = _read(train, None, limit=want + items, batch_size=batch_size)
            flat = cat_batches(both)
            n = len(flat)
            cut = min(want, n // 2)
            return cls(_chunks(slice_batch(flat, slice(0, cut)), batch_size) if cut else [],
                       _chunks(slice_batch(flat, slice(cut, n)), batch_size), note=note)
        n = len(train)
        order = torch.randperm(n, generator=generator)
        cut = min(want, n // 2)
        chosen_bank = order[:cut].sort().values
        chosen_queries = order[cut:cut + items].sort().values
        return cls(_read(train, chosen_bank, limit=None, batch_size=batch_size) if cut else [],
                   _read(train, chosen_queries, limit=None, batch_size=batch_size), note=note)

    @staticmethod
    def _subset(dataset, count: int, generator: torch.Generator, batch_size: int) -> list[Batch]:
        if count <= 0:
            return []
        if is_stream(dataset):
            return _read(dataset, None, limit=count, batch_size=batch_size)
        n = len(dataset)
        chosen = torch.randperm(n, generator=generator)[:count].sort().values
        return _read(dataset, chosen, limit=None, batch_size=batch_size)


def _chunks(batch: Batch, size: int) -> list[Batch]:
    return [slice_batch(batch, slice(s, s + size)) for s in range(0, len(batch), size)]


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block; afterwards every submodule's own mode is back as it was.

    Example:
        >>> net = nn.Sequential(nn.Dropout(), nn.Dropout().eval())
        >>> with evaluating(net):
        ...     net.training
        False
        >>> [m.training for m in net.modules()]
        [True, True, False]
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def check_monitor(cfg: MonitorConfig, dataset: Dataset) -> None:
    """Refuse what the monitors cannot do with this data, before anything is written.

    Raises:
        ValueError: ``monitor.probe: true`` on data without labels, naming the key.
    """
    _check_probe(cfg, getattr(dataset, "num_classes", None), f"data set {getattr(dataset, 'name', '?')!r}")


def _check_probe(cfg: MonitorConfig, num_classes: int | None, what: str) -> None:
    if cfg.probe and num_classes is None:
        raise ValueError(f"monitor.probe: the online probe needs labels, and {what} has none (set monitor.probe to "
                         f"null or false)")


class Monitors:
    r"""The monitors of one run, on its main process (see the module docstring).

    Args:
        cfg: the ``monitor`` section.
        every: steps between measurements (:func:`monitor_every`, > 0).
        total: the run's steps (the last is always measured).
        model: the :class:`~contrastlab.encoders.model.MultiViewModel` being trained.
        views: the run's view generator.
        held_out: the items measured (:class:`HeldOut`).
        num_classes: the data's classes, or ``None`` without labels.
        device: the training device.
        seed: seeds the probe.
        stage: where the probe reads the training batch: ``"backbone"`` (``Outputs.features``), or ``"head"`` for
            steps that keep no backbone features (autoencoders; the held-out items are then encoded once more,
            after the head, for the probe).

    Raises:
        ValueError: ``monitor.probe: true`` on data without labels.
    """

    def __init__(self, cfg: MonitorConfig, *, every: int, total: int, model: nn.Module, views, held_out: HeldOut,
                 num_classes: int | None, device: torch.device, seed: int, stage: str = "backbone") -> None:
        _check_probe(cfg, num_classes, "the data")
        self.cfg, self.every, self.total = cfg, every, total
        self.model, self.views, self.held_out, self.device = model, views, held_out, device
        self.notes: list[str] = []
        self.warned = False
        self.labelled = num_classes is not None and held_out.query_labels is not None
        self.features = _ViewSubset(views, feature_views(model, views))
        self.stage = stage
        first = views.view_names[0]
        self.probe_views = self.features.view_names if self.stage == "backbone" else (first,)
        self.probe: OnlineProbe | None = None
        if (cfg.probe is None or cfg.probe) and self.labelled:
            towers = [model.towers[model.view_towers[v]] for v in self.probe_views]
            width = sum(t.feature_dim for t in towers) if self.stage == "backbone" else towers[0].out_dim
            self.probe = OnlineProbe(width, num_classes, lr=cfg.probe_lr, seed=seed, device=device)
        if not self.labelled:
            self.notes.append("contrastlab: monitors: the data set has no labels, so kNN accuracy and the online "
                              "probe are skipped (RankMe, emb_std and the collapse warning are still logged)")
        elif held_out.note:
            self.notes.append(f"contrastlab: monitors: {held_out.note}")

    @classmethod
    def for_run(cls, cfg: MonitorConfig, *, every: int, total: int, model: nn.Module, views, train: Dataset,
                held_out: Callable[[], Dataset] | None, device: torch.device, seed: int, batch_size: int,
                stage: str = "backbone") -> "Monitors":
        """Build the monitors of a run: hold its measured items (read once) and its probe.

        Args:
            cfg: the ``monitor`` section.
            every: steps between measurements.
            total: the run's steps.
            model: the model being trained.
            views: the run's view generator.
            train: the training data set.
            held_out: builds the other split, or ``None`` when there is none (data given from Python); a split
                that fails to build is replaced by training items, with a note.
            device: the training device.
            seed: seeds the subsets and the probe.
            batch_size: items per batch encoded.
            stage: where the probe reads the training batch (see :class:`Monitors`).

        Returns:
            The :class:`Monitors`.

        Raises:
            ValueError: ``monitor.probe: true`` on data without labels.
        """
        labelled = getattr(train, "num_classes", None) is not None
        other, failed = None, None
        with torch.random.fork_rng(devices=[]):  # a DataLoader draws its base seed from the global generator
            if held_out is not None:
                try:
                    other = held_out()
                except (ValueError, UserError, OSError) as err:
                    failed = f"the held-out split could not be built ({one_line(err)})"
            items = HeldOut.build(train, other, items=cfg.items, seed=seed, batch_size=batch_size, bank=labelled)
        if failed:
            items.note = f"{failed}; {items.note}"
        return cls(cfg, every=every, total=total, model=model, views=views, held_out=items,
                   num_classes=getattr(train, "num_classes", None), device=device, seed=seed, stage=stage)

    def due(self, step: int) -> bool:
        """Whether ``step`` (steps done) is a monitor step."""
        return monitor_due(step, self.every, self.total)

    def take_notes(self) -> list[str]:
        """The lines to print since the last call (a skipped monitor, the collapse warning)."""
        notes, self.notes = self.notes, []
        return notes

    def _probe_input(self, out: Outputs) -> Tensor | None:
        if self.stage == "backbone":
            parts = getattr(out, "features", {}) or {}
            if not all(v in parts for v in self.probe_views):
                return None
            return torch.cat([parts[v].detach().float().flatten(1) for v in self.probe_views], dim=1)
        z = out.embeddings.get(self.probe_views[0])
        return None if z is None else z.detach().float()

    def after_step(self, out: Outputs, labels: Tensor | None) -> None:
        """Train the probe one step on this step's detached features (call after the optimiser step)."""
        if self.probe is None or labels is None:
            return
        x = self._probe_input(out)
        if x is not None and x.shape[0] == labels.shape[0]:
            self.probe.step(x, labels.to(x.device, torch.long))

    def _encode(self, batches: Sequence[Batch], views, stage: str) -> Tensor:
        return torch.cat([concat_towers(encode_towers(self.model, views, to_device(b, self.device), stage=stage))
                          for b in batches])

    def row(self, step: int, out: Outputs) -> dict[str, float]:
        """The monitor columns of the log row at ``step``: the probe's training accuracy, and at monitor steps
        every held-out measurement (:meth:`measure`)."""
        values: dict[str, float] = {}
        if self.probe is not None:
            values["probe_train_acc"] = self.probe.train_accuracy()
        if self.due(step):
            values.update(self.measure(step, out))
        return values

    def measure(self, step: int, out: Outputs) -> dict[str, float]:
        """The held-out measurements at ``step``, from the model as it is and this step's outputs.

        Returns:
            ``knn_acc``, ``probe_acc`` (with labels), ``rankme``, ``emb_std`` and ``collapse`` (0 or 1).
        """
        values: dict[str, float] = {}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), evaluating(self.model):
            queries = self._encode(self.held_out.queries, self.features, "backbone")
            if self.labelled:
                bank = self._encode(self.held_out.bank, self.features, "backbone")
                finite = bool(torch.isfinite(bank).all() and torch.isfinite(queries).all())
                values["knn_acc"] = knn_classify(
                    bank, self.held_out.bank_labels, queries, self.held_out.query_labels, k=self.cfg.knn_k,
                    temperature=self.cfg.knn_temperature, backend="torch") if finite else float("nan")
            if self.probe is not None:
                x = queries if self.stage == "backbone" else self._encode(
                    self.held_out.queries, _ViewSubset(self.views, self.probe_views), "head")
                values["probe_acc"] = self.probe.accuracy(x, self.held_out.query_labels)
        values["rankme"] = _rankme(queries)
        first = next(iter(out.embeddings.values()), None)
        values["emb_std"] = float("nan") if first is None else embedding_std(first)
        collapsed = values["emb_std"] < COLLAPSE_STD
        values["collapse"] = int(collapsed)
        if collapsed and not self.warned:
            self.warned = True
            self.notes.append(
                f"contrastlab: warning: the embeddings look collapsed at step {step}: emb_std (the per-dimension std "
                f"of the l2-normalised embeddings x sqrt(D), Chen & He 2021) is {values['emb_std']:.3g} < "
                f"{COLLAPSE_STD} (about 1 when spread), RankMe {values['rankme']:.3g}; try a lower optim.lr, a higher "
                f"temperature, stronger views, a larger batch, or a predictor with stop-gradient (BYOL, SimSiam)")
        return values

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The monitors' state for a checkpoint: tensors (prefixed ``monitor.``) and plain data."""
        tensors: dict[str, Tensor] = {}
        plain: dict[str, Any] = {"warned": self.warned}
        if self.probe is not None:
            probe_tensors, probe_plain = self.probe.state_tensors()
            tensors = {PREFIX + k: v for k, v in probe_tensors.items()}
            plain["probe"] = probe_plain
        return tensors, plain

    def load_state(self, tensors: Mapping[str, Tensor], plain: Any, *, source: str) -> None:
        """Restore :meth:`state` from a checkpoint. One without monitor state (written with monitors off) leaves
        the monitors fresh; a probe state that does not fit (the probe reads other features than when the
        checkpoint was written) is dropped with a note, and the probe starts afresh: the encoder's resume is
        exact either way."""
        if not isinstance(plain, Mapping):
            return
        self.warned = bool(plain.get("warned", False))
        own = {k.removeprefix(PREFIX): v for k, v in tensors.items() if k.startswith(PREFIX)}
        if self.probe is None or "probe" not in plain:
            return
        fresh = {k: v.clone() for k, v in self.probe.state_dict().items()}
        try:
            self.probe.load_state_tensors(own, plain["probe"])
        except (KeyError, ValueError, RuntimeError, TypeError) as err:
            self.probe.load_state_dict(fresh)
            self.probe.optimizer.state.clear()
            self.notes.append(f"contrastlab: monitors: the online-probe state in {source} does not fit this run "
                              f"({one_line(err)}); the probe starts afresh")


def _rankme(x: Tensor) -> float:
    """RankMe of features ``(N, F)``; 0 for an all-zero matrix (rank 0), ``nan`` for non-finite features."""
    if not torch.isfinite(x).all():
        return float("nan")
    if not bool(x.any()):
        return 0.0
    return effective_rank(x, eps=RANKME_EPS)
