"""What a run writes while it trains: ``metrics.csv``, TensorBoard events, a progress bar."""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from contrastlab.files import atomic_write_text
from contrastlab.training.distributed import all_reduce_mean

#: The columns the training monitors fill (:mod:`contrastlab.training.monitors`): ``probe_train_acc`` on every
#: row while the online probe runs (its accuracy on the training batches since the previous row), the others only
#: on the rows of monitor steps: ``knn_acc`` (held-out kNN accuracy), ``probe_acc`` (the probe's held-out
#: accuracy), ``rankme`` (RankMe of the held-out features), ``emb_std`` (SimSiam's per-dimension std of the
#: l2-normalised embeddings, times sqrt(D): about 1 when spread, 0 when collapsed) and ``collapse`` (0 or 1).
#: A cell a row does not fill is left empty.
MONITOR_COLUMNS = ("probe_train_acc", "knn_acc", "probe_acc", "rankme", "emb_std", "collapse")

#: The columns of ``metrics.csv``, in order. ``norm`` is the mean L2 norm of the embeddings the objective
#: saw (1 on the sphere; it grows without bound when an unconstrained loss can fall by scaling up);
#: ``items_per_s`` counts items (each gives one image per view); ``view_fraction`` is the share of step
#: time spent fetching items and producing their views; ``data_wait`` the mean seconds per step the
#: training process waited for its batch (loading that the workers did not hide); ``skipped`` the
#: unreadable items replaced so far (``data.on_error: skip``); then the :data:`MONITOR_COLUMNS`;
#: ``elapsed_s`` (wall-clock seconds of training, monitors included; ``items_per_s`` leaves them out) comes last.
COLUMNS = ("step", "epoch", "loss", "lr", "align", "uniform", "norm", "items_per_s", "view_fraction", "data_wait",
           "skipped", *MONITOR_COLUMNS, "elapsed_s")


def _row_text(row: Mapping[str, float]) -> str:
    buf = io.StringIO()
    cells = [_fmt(row.get(c, float("nan")), empty=c in MONITOR_COLUMNS) for c in COLUMNS]
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def _fmt(value: float, *, empty: bool = False) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "" if empty else "nan"
    return f"{value:.6g}"


#: The columns every ``metrics.csv`` has, whichever version of contrastlab wrote it.
REQUIRED_COLUMNS = ("step", "epoch", "loss")


def _cell(value: str, column: str) -> float:
    """One cell as a float: an empty monitor cell is ``nan``; ``nan`` and ``inf`` are values (a diverged loss)."""
    if value == "" and column in MONITOR_COLUMNS:
        return float("nan")
    try:
        number = float(value)
    except ValueError:  # text, or an empty cell of a column every row fills
        raise ValueError("is not a number") from None
    if column in ("step", "epoch") and not (math.isfinite(number) and number == int(number) and number >= 0):
        raise ValueError("is not a whole number >= 0")
    return number


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a ``metrics.csv`` as dicts of floats (``step`` and ``epoch`` as ints), checked.

    A torn last line (a run killed mid-write: too few cells, an empty or unreadable cell) is skipped. Empty
    cells of the :data:`MONITOR_COLUMNS` (rows that are not monitor steps) read as ``nan``; ``nan`` and
    ``inf`` are read as they are (a loss that diverged is part of the record). Anything else a run never
    writes is an error naming the file, the line and the value.

    Raises:
        contrastlab.errors.UserError: the file is not UTF-8 text or not CSV (a cell past the csv module's
            size limit, a NUL byte), has no header or lacks one of :data:`REQUIRED_COLUMNS`, or a line other
            than the last has the wrong number of cells, a cell that is not a number, or a step or epoch that
            is not a whole number.
        OSError: the file cannot be read.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "metrics.csv"
        >>> log = MetricsLog(p); log.write({"step": 10, "epoch": 0, "loss": 1.5}); log.close()
        >>> read_metrics(p)[0]["loss"]
        1.5
    """
    from contrastlab.errors import UserError

    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(enumerate(csv.reader(f), 1))  # (line number, cells); no cell spans lines in our files
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}); it is not a metrics.csv written by "
                        "contrastlab train") from None
    except csv.Error as err:
        raise UserError(f"{path} is not a readable CSV file ({err})") from None
    if not lines or not any(cell.strip() for cell in lines[0][1]):
        raise UserError(f"{path} has no header row (expected {','.join(COLUMNS[:3])},...)")
    header = [cell.strip() for cell in lines[0][1]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise UserError(f"{path} has no column {missing[0]!r} (its header is {_clip(','.join(header))!r})")
    body = [(number, values) for number, values in lines[1:] if values]  # blank lines carry nothing
    rows = []
    for i, (number, values) in enumerate(body):
        last = i == len(body) - 1
        try:
            if len(values) != len(header):
                raise ValueError(f"has {len(values)} cells, the header {len(header)}")
            row = {}
            for column, value in zip(header, values):
                try:
                    row[column] = _cell(value.strip(), column)
                except ValueError as err:
                    raise ValueError(f"column {column!r}: {_clip(value)!r} {err}") from None
        except ValueError as err:
            if last:  # a torn line: the run was killed while writing it
                continue
            raise UserError(f"{path} line {number}: {err}") from None
        row["step"], row["epoch"] = int(row["step"]), int(row["epoch"])
        rows.append(row)
    return rows


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class MetricsLog:
    """Appends one CSV row per logging step, flushed at once so a killed run loses at most a line.

    Args:
        path: the ``metrics.csv`` to write.
        resume_step: when resuming, rows after this step (written after the checkpoint the run
            resumes from) are dropped first, atomically, so the file never shows a step twice.
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        if resume_step is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            atomic_write_text(self.path, ",".join(COLUMNS) + "\n" + "".join(_row_text(r) for r in kept))
        elif not self.path.is_file() or resume_step is None:
            atomic_write_text(self.path, ",".join(COLUMNS) + "\n")
        self._file = open(self.path, "a", encoding="utf-8", newline="")

    def write(self, row: Mapping[str, float]) -> None:
        """Append a row (missing columns are ``nan``) in one write, then flush."""
        self._file.write(_row_text(row))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoard:
    """Scalars to TensorBoard event files under ``run_dir/tensorboard`` (nothing if unavailable).

    Args:
        directory: where the event files go.
        resume_step: events after this step from an interrupted run are purged.
    """

    def __init__(self, directory: str | Path, *, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            self.writer = None
            return
        self.writer = SummaryWriter(str(directory), purge_step=None if resume_step is None else resume_step + 1)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in scalars.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar over the run's steps showing loss, learning rate, throughput, alignment, uniformity, norm and
    the latest monitor values (``knn=``, ``probe=``, ``rank=``), which stay shown until the next measurement."""

    #: Monitor columns shown on the bar, with their short names.
    SHOWN = {"knn_acc": "knn", "probe_acc": "probe", "rankme": "rank"}

    def __init__(self, *, total: int, initial: int, enabled: bool) -> None:
        self.bar = None
        self.latest: dict[str, str] = {}
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=0.5, file=sys.stderr)

    def update(self, steps: int, row: Mapping[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(steps)
        if row is not None:
            for column, short in self.SHOWN.items():
                value = row.get(column, float("nan"))
                if value == value:
                    self.latest[short] = f"{value:.3g}" if column == "rankme" else f"{value:.2f}"
            self.bar.set_postfix(
                loss=f"{row['loss']:.4f}",
                lr=f"{row['lr']:.2e}",
                img_s=f"{row['items_per_s']:.0f}",
                wait=f"{1000 * row.get('data_wait', float('nan')):.0f}ms",
                align=f"{row['align']:.3f}",
                unif=f"{row['uniform']:.3f}",
                norm=f"{row.get('norm', float('nan')):.3g}",
                **self.latest,
                refresh=False,
            )

    def note(self, text: str) -> None:
        """Print one line to stderr above the bar (or plainly when there is no bar)."""
        if self.bar is None:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Window:
    """Sums over one logging (or checkpoint) interval, kept on the device so steps never wait for the host."""

    def __init__(self, device: torch.device) -> None:
        self.losses = torch.zeros((), dtype=torch.float64, device=device)
        self.bad = torch.full((), -1, dtype=torch.long, device=device)  # the first step with a non-finite loss
        self.t_views, self.t_total, self.t_data, self.steps = 0.0, 0.0, 0.0, 0

    def add(self, loss: torch.Tensor, step: int, t_views: float, t_total: float, t_data: float = 0.0) -> None:
        self.losses += loss.to(torch.float64)
        self.bad = torch.where((self.bad < 0) & ~torch.isfinite(loss), step, self.bad)
        self.t_views += t_views
        self.t_total += t_total
        self.t_data += t_data
        self.steps += 1

    def first_bad(self, reduce: bool) -> int | None:
        bad = self.bad.clone()
        if reduce:  # every process must stop together
            bad = torch.where(bad < 0, torch.iinfo(torch.long).max, bad)
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MIN)
            bad = torch.where(bad == torch.iinfo(torch.long).max, -1, bad)
        value = int(bad)
        return None if value < 0 else value

    def loss(self, reduce: bool) -> float:
        mean = self.losses / max(1, self.steps)
        return all_reduce_mean(mean) if reduce else float(mean)

    def items_per_s(self, batch_size: int) -> float:
        return self.steps * batch_size / self.t_total if self.t_total > 0 else float("nan")

    def data_wait(self) -> float:
        """Mean seconds per step spent waiting for a batch."""
        return self.t_data / self.steps if self.steps else float("nan")

    def view_fraction(self) -> float:
        return self.t_views / self.t_total if self.t_total > 0 else float("nan")
