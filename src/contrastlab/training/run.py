"""Read a finished (or interrupted) run back: its config, its trained model, its data and views."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contrastlab.data.base import Dataset
from contrastlab.encoders.model import MultiViewModel
from contrastlab.errors import UserError
from contrastlab.plugins import require
from contrastlab.training._schema import parse_yaml
from contrastlab.training.build import build_components, check_given, make_dataset
from contrastlab.training.checkpoint import CheckpointManager, check_state_fits, checkpoint_step, read_checkpoint
from contrastlab.training.config import TrainConfig, config_from_dict
from contrastlab.training.loop import CONFIG_FILE, METRICS_FILE
from contrastlab.training.step import run_temperature
from contrastlab.views.base import ViewGenerator


def read_run_config(run_dir: str | Path) -> tuple[dict[str, Any], TrainConfig]:
    """The resolved config a run saved, as plain data and as a checked :class:`TrainConfig`.

    Raises:
        UserError: no run at ``run_dir``, a config that is not UTF-8 text, or a run trained with a
            plugin that is not loaded now (:func:`contrastlab.plugins.require`; checked before the config,
            whose names the plugin registers).
        ValueError: a config that no longer checks (e.g. edited by hand), naming the file.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    raw = parse_yaml(text, source=str(path))
    if isinstance(raw, dict):
        require(raw.get("plugins"), what=f"run {run_dir}")
    try:
        return raw, config_from_dict(raw)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def last_checkpoint(run_dir: str | Path, which: str = "last") -> Path:
    """The path of a run's ``"last"`` or ``"best"`` checkpoint, without creating anything.

    Raises:
        UserError: the run has no checkpoint (or its index names one that is gone).
    """
    checkpoints = Path(run_dir) / "checkpoints"
    path = CheckpointManager(checkpoints, keep_last=1).path(which) if checkpoints.is_dir() else None
    if path is None or not path.is_dir():
        raise UserError(f"run {run_dir} has no checkpoint yet")
    return path


class LoadedRun:
    """A trained run, ready for evaluation (what :func:`load_run` returns).

    Attributes:
        run_dir: the run directory.
        config: the resolved config as plain data (what ``config.yaml`` holds).
        model: the :class:`MultiViewModel` with the chosen weights, in eval mode, on the CPU.
        views: the run's view generator (``eval_views`` gives the deterministic views).
        objective: the objective's registry name.
        objective_kind: its calling convention (``"pairwise"``, ``"multiview"``, ...).
        objective_module: the objective module with its trained state (e.g. class embeddings).
        metrics_path: the run's ``metrics.csv``.
        checkpoint: the checkpoint the weights came from.
        step: the training step of that checkpoint.
        temperature: the temperature the run trained with (learned or fixed, as the checkpoint
            records it; ``None`` for objectives without one).
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        config: dict[str, Any],
        train_config: TrainConfig,
        model: MultiViewModel,
        views: ViewGenerator,
        objective_module: nn.Module,
        objective_kind: str,
        train_dataset: Dataset,
        checkpoint: Path,
        step: int,
        temperature: float | None = None,
    ) -> None:
        self.run_dir, self.config, self.model, self.views = run_dir, config, model, views
        self.objective, self.objective_kind, self.objective_module = train_config.objective.name, objective_kind, objective_module
        self.metrics_path = run_dir / METRICS_FILE
        self.checkpoint, self.step, self.temperature = checkpoint, step, temperature
        self._train_config = train_config
        self._datasets: dict[str, Dataset] = {train_config.data.split: train_dataset}

    def dataset(self, split: str) -> Dataset:
        """The run's data set for ``split`` (``"train"`` or ``"test"``), built once and cached.

        Raises:
            ValueError: an unknown split.
        """
        if split not in self._datasets:
            self._datasets[split] = make_dataset(self._train_config, split)
        return self._datasets[split]

    def __repr__(self) -> str:
        return f"LoadedRun({str(self.run_dir)!r}, objective={self.objective!r}, step={self.step})"


def load_run(run_dir: str | Path, *, which: str = "last", encoders: Mapping[str, nn.Module] | None = None) -> LoadedRun:
    """Load a run's config, data, views and model weights from its directory.

    Args:
        run_dir: the run directory written by ``contrastlab train``.
        which: ``"last"`` or ``"best"`` (lowest mean training loss between checkpoints) weights.
        encoders: for a run trained with your own towers (``train(..., encoders=...)``), the same
            modules again (their weights come from the checkpoint).

    Returns:
        A :class:`LoadedRun` whose model is on the CPU in eval mode.

    Raises:
        UserError: not a run directory, a run without checkpoints, an unreadable checkpoint, or
            weights that do not fit the model its config builds.
        ValueError: an unknown ``which``.

    Example:
        >>> run = load_run("runs/shapes-simclr")  # doctest: +SKIP
        >>> features = run.model.encode(run.views.eval_views(run.dataset("test").get(torch.arange(8))))  # doctest: +SKIP
    """
    if which not in ("last", "best"):
        raise ValueError(f"which must be 'last' or 'best', got {which!r}")
    run_dir = Path(run_dir)
    raw, cfg = read_run_config(run_dir)
    path = last_checkpoint(run_dir, which)
    ckpt = read_checkpoint(path)
    torch.manual_seed(cfg.seed)
    check_given(cfg.model.given, encoders, run_dir)
    comps = build_components(cfg, encoders=encoders)
    check_state_fits(ckpt.model, comps.model.state_dict(), what="model", source=path)
    comps.model.load_state_dict(ckpt.model)
    if ckpt.objective:
        check_state_fits(ckpt.objective, comps.objective.state_dict(), what="objective", source=path)
        comps.objective.load_state_dict(ckpt.objective)
    comps.model.eval()
    comps.objective.eval()
    return LoadedRun(
        run_dir=run_dir,
        config=raw,
        train_config=cfg,
        model=comps.model,
        views=comps.views,
        objective_module=comps.objective,
        objective_kind=comps.kind,
        train_dataset=comps.dataset,
        checkpoint=path,
        step=checkpoint_step(ckpt),
        temperature=_recorded_temperature(ckpt.meta.get("temperature"), comps),
    )


def _recorded_temperature(recorded, comps) -> float | None:
    """The checkpoint's temperature; for checkpoints written before it was recorded, the loaded model's
    learned one or the objective's fixed one (never a made-up default)."""
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and recorded > 0:
        return float(recorded)
    return run_temperature(comps.model, comps.objective)
