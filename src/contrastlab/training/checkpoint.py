"""Checkpoints that are safe to write, safe to read, and enough to resume exactly.

A checkpoint is a directory ``checkpoints/step-00001000/`` holding

* ``model.safetensors`` — the model's ``state_dict`` (and ``objective.safetensors`` when the
  objective has parameters of its own);
* ``state.safetensors`` — every other tensor: optimiser moments, random-generator states;
* ``state.json`` — everything else: step, epoch, the optimiser's hyper-parameters, the loss.

Nothing is pickled, so loading a checkpoint never runs code. Each file is written to a temporary
name, flushed and ``fsync``-ed; the directory is assembled under a temporary name and renamed into
place, so a crash leaves either the old set of checkpoints or the new one. ``checkpoints/index.json``
(also replaced atomically) names the last and the best checkpoint.

Reading is as careful: a file that is not safetensors or JSON (a pickle planted in its place, a
truncated write), an index that names anything but a ``step-NNNNNNNN`` folder beside it, or weights
that do not fit the model (:func:`check_state_fits`) are refused with a one-line error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from contrastlab.errors import UserError, one_line
from contrastlab.files import atomic_write_bytes, atomic_write_text, fsync_dir

INDEX = "index.json"
MODEL_FILE, OBJECTIVE_FILE = "model.safetensors", "objective.safetensors"
STATE_FILE, META_FILE = "state.safetensors", "state.json"
_NAME = re.compile(r"step-[0-9]{8}")


def _tensors_bytes(tensors: Mapping[str, Tensor]) -> bytes:
    return safetensors.torch.save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})


def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON state")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def flatten_optimizer(state: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimiser ``state_dict`` into tensors (for safetensors) and plain data (for JSON).

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        >>> tensors, plain = flatten_optimizer(opt.state_dict())
        >>> unflatten_optimizer(tensors, plain)["param_groups"][0]["lr"]
        0.1
    """
    tensors: dict[str, Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        plain_state[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{name}"] = value
            else:
                plain_state[str(index)][name] = _encode(value)
    return tensors, {"state": plain_state, "param_groups": _encode(state["param_groups"])}


def unflatten_optimizer(tensors: Mapping[str, Tensor], plain: Mapping[str, Any]) -> dict[str, Any]:
    """Rebuild an optimiser ``state_dict`` from :func:`flatten_optimizer`'s two halves."""
    state: dict[int, dict[str, Any]] = {int(i): _decode(v) for i, v in plain["state"].items()}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": _decode(plain["param_groups"])}


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    model: dict[str, Tensor]  #: the model's state_dict
    objective: dict[str, Tensor]  #: the objective's state_dict (empty for most objectives)
    tensors: dict[str, Tensor]  #: optimiser moments and generator states
    meta: dict[str, Any]  #: step, epoch, optimiser hyper-parameters, loss


def write_checkpoint(
    path: str | Path,
    *,
    model: Mapping[str, Tensor],
    objective: Mapping[str, Tensor] | None = None,
    tensors: Mapping[str, Tensor] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (assembled under ``<name>.tmp``, then renamed).

    An existing directory of the same name (left by a run that crashed after writing it and was
    resumed from an earlier one) is replaced.

    Returns:
        The checkpoint's path.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        atomic_write_bytes(tmp / MODEL_FILE, _tensors_bytes(model))
        if objective:
            atomic_write_bytes(tmp / OBJECTIVE_FILE, _tensors_bytes(objective))
        atomic_write_bytes(tmp / STATE_FILE, _tensors_bytes(tensors or {}))
        atomic_write_text(tmp / META_FILE, json.dumps(_encode(dict(meta or {})), indent=1, allow_nan=True))
    except BaseException:  # a full disk, Ctrl-C: no half-assembled checkpoint is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        discard(path)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def _read_tensors(file: Path) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load_file(file)
    except (OSError, safetensors.SafetensorError) as err:
        raise UserError(f"checkpoint file {file} is not a readable safetensors file ({one_line(err)})") from None


def _read_json(file: Path, what: str) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"{what} {file} is not valid JSON ({one_line(err)})") from None


def discard(path: str | Path) -> None:
    """Delete a checkpoint directory so that a crash midway never leaves a half-deleted checkpoint under
    its own name: it is renamed to ``<name>.discard.tmp`` (atomic) first, then removed. Leftover
    ``*.tmp`` entries are ignored by :meth:`CheckpointManager.names` and cleaned by the next save.
    """
    path = Path(path)
    doomed = path.with_name(path.name + ".discard.tmp")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint` (no unpickling).

    Raises:
        FileNotFoundError: a missing checkpoint or file inside it.
        UserError: a file that is not valid safetensors or JSON (truncated, or something else put in
            its place), naming the file.
    """
    path = Path(path)
    for name in (MODEL_FILE, STATE_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is missing {name}")
    model = _read_tensors(path / MODEL_FILE)
    objective = _read_tensors(path / OBJECTIVE_FILE) if (path / OBJECTIVE_FILE).is_file() else {}
    tensors = _read_tensors(path / STATE_FILE)
    meta = _read_json(path / META_FILE, "checkpoint file")
    if not isinstance(meta, dict):
        raise UserError(f"checkpoint file {path / META_FILE} must hold a JSON object, got {type(meta).__name__}")
    return Checkpoint(path=path, model=model, objective=objective, tensors=tensors, meta=_decode(meta))


def check_state_fits(saved: Mapping[str, Tensor], expected: Mapping[str, Tensor], *, what: str, source: str | Path) -> None:
    """Refuse saved weights that do not fit a module: other names, or other shapes for the same name.

    ``load_state_dict`` would fail too, with a multi-line ``RuntimeError``; this names the first
    difference on one line, before anything is loaded.

    Args:
        saved: the checkpoint's tensors (a ``state_dict``).
        expected: the module's ``state_dict()``.
        what: what the module is, for the message (``"model"``).
        source: where ``saved`` came from, for the message.

    Raises:
        UserError: naming the first mismatched tensor with both shapes, and how many are missing or extra.

    Example:
        >>> check_state_fits({"w": torch.zeros(2)}, {"w": torch.ones(2)}, what="model", source="ckpt")
        >>> check_state_fits({"w": torch.zeros(3)}, {"w": torch.ones(2)}, what="model", source="ckpt")
        Traceback (most recent call last):
        ...
        contrastlab.errors.UserError: checkpoint ckpt does not fit this model: 'w' is (3,) in the checkpoint but (2,) ...
    """
    problems = [
        f"{k!r} is {tuple(saved[k].shape)} in the checkpoint but {tuple(v.shape)} in the {what}"
        for k, v in expected.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ][:1]
    problems += [
        f"{k!r} is {str(saved[k].dtype).removeprefix('torch.')} in the checkpoint but "
        f"{str(v.dtype).removeprefix('torch.')} in the {what}"
        for k, v in expected.items()
        if k in saved and not problems and saved[k].dtype != v.dtype
    ][:1]
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing:
        problems.append(f"{len(missing)} tensor(s) of the {what} are missing (e.g. {missing[0]!r})")
    if extra:
        problems.append(f"{len(extra)} tensor(s) are not in the {what} (e.g. {extra[0]!r})")
    if problems:
        raise UserError(
            f"checkpoint {source} does not fit this {what}: {'; '.join(problems)} (a checkpoint of another architecture or config?)"
        )


def checkpoint_step(ckpt: Checkpoint) -> int:
    """The training step a checkpoint was written at, checked."""
    step = ckpt.meta.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UserError(f"checkpoint {ckpt.path} has no valid step in its state.json (got {step!r})")
    return step


def check_resumable(ckpt: Checkpoint, model: nn.Module, objective: nn.Module, *, world_size: int) -> None:
    """Refuse to resume from a checkpoint that does not fit the run as it is about to restart.

    Checks the weights against the freshly built model and objective, and that the checkpoint holds
    the step, the optimiser state and one random-generator state per process.

    Raises:
        UserError: naming the checkpoint and what does not fit.
    """
    check_state_fits(ckpt.model, model.state_dict(), what="model", source=ckpt.path)
    check_state_fits(ckpt.objective, objective.state_dict(), what="objective", source=ckpt.path)
    meta = ckpt.meta
    checkpoint_step(ckpt)
    saved_world = meta.get("world_size")
    if not isinstance(meta.get("optimizer"), dict) or not {"state", "param_groups"} <= set(meta["optimizer"]):
        raise UserError(f"checkpoint {ckpt.path} holds no optimiser state; it cannot be resumed exactly")
    if saved_world != world_size:
        raise UserError(
            f"this run was trained with {saved_world} process(es); resume it with the same number "
            f"(got {world_size}) so it continues exactly"
        )
    missing = [f"rng.{name}.{r}" for r in range(world_size) for name in ("views", "torch") if f"rng.{name}.{r}" not in ckpt.tensors]
    if missing:
        raise UserError(f"checkpoint {ckpt.path} lacks the random-generator state {missing[0]!r}; it cannot be resumed exactly")
    cpu_state = torch.get_rng_state()
    for key, state in ckpt.tensors.items():
        if key.startswith(("rng.views.", "rng.torch.")) and (state.dtype != torch.uint8 or state.shape != cpu_state.shape):
            raise UserError(f"checkpoint {ckpt.path}: the random-generator state {key!r} is {str(state.dtype).removeprefix('torch.')} "
                            f"{tuple(state.shape)}, not uint8 {tuple(cpu_state.shape)}; it cannot be resumed exactly")


def check_optimizer_fits(ckpt: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimiser state that does not fit the optimiser built for the run, before loading it.

    ``Optimizer.load_state_dict`` checks only the number of parameters per group; moments of another
    shape or dtype would fail (or broadcast silently) at the first step. This checks the groups, the
    parameters per group, the hyper-parameter names, and every tensor held per parameter (a scalar
    such as Adam's ``step``, or a tensor of the parameter's shape).

    Raises:
        UserError: naming the checkpoint and the first thing that does not fit.

    Example:
        >>> opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters())
        >>> opt.zero_grad(); sum(p.sum() for g in opt.param_groups for p in g["params"]).backward(); opt.step()
        >>> tensors, plain = flatten_optimizer(opt.state_dict())
        >>> check_optimizer_fits(Checkpoint(Path("c"), {}, {}, tensors, {"optimizer": plain}), opt)
        >>> tensors["optimizer.0.exp_avg"] = torch.zeros(3, 3)
        >>> check_optimizer_fits(Checkpoint(Path("c"), {}, {}, tensors, {"optimizer": plain}), opt)
        Traceback (most recent call last):
        ...
        contrastlab.errors.UserError: checkpoint c holds an optimiser state that does not fit this run: 'exp_avg' of parameter 0 is (3, 3), the parameter (1, 2)
    """
    where = f"checkpoint {ckpt.path} holds an optimiser state that does not fit this run"
    plain = ckpt.meta.get("optimizer")
    try:
        saved = unflatten_optimizer(ckpt.tensors, plain)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where} ({one_line(err)})") from None
    groups, state = saved["param_groups"], saved["state"]
    if not isinstance(groups, list) or len(groups) != len(optimizer.param_groups):
        raise UserError(f"{where}: {len(groups) if isinstance(groups, list) else groups!r} parameter group(s), "
                        f"the optimiser has {len(optimizer.param_groups)} (was optim.name or exclude_bias_and_norm changed?)")
    params = []
    for i, (group, mine) in enumerate(zip(groups, optimizer.param_groups)):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise UserError(f"{where}: parameter group {i} is not a group of parameters")
        if len(group["params"]) != len(mine["params"]):
            raise UserError(f"{where}: parameter group {i} has {len(group['params'])} parameters, the model "
                            f"{len(mine['params'])}")
        unknown = sorted(set(group) - set(mine) - {"params"})
        if unknown:
            raise UserError(f"{where}: group {i} has the option {unknown[0]!r}, which {type(optimizer).__name__} does not "
                            "know (was optim.name changed?)")
        params += list(zip(group["params"], mine["params"]))
    by_id = dict(params)
    for index, entries in state.items():
        if index not in by_id:
            raise UserError(f"{where}: state for parameter {index}, which no group holds")
        param = by_id[index]
        for name, value in entries.items():
            if not isinstance(value, Tensor):
                continue
            if value.dim() and tuple(value.shape) != tuple(param.shape):
                raise UserError(f"{where}: {name!r} of parameter {index} is {tuple(value.shape)}, the parameter "
                                f"{tuple(param.shape)}")
            if value.is_floating_point() != param.is_floating_point() and value.dim():
                raise UserError(f"{where}: {name!r} of parameter {index} is {str(value.dtype).removeprefix('torch.')}")


#: Keys of a run's config that may change between training and ``resume`` without changing what the
#: weights mean (how the run is logged, kept, fed or compiled), that need ``--force`` (the run goes on, but
#: no longer as it started: its length, which moves the learning-rate and momentum schedules, the optimiser's
#: settings, its precision, the data's location), and, by elimination, those that never may (model,
#: objective, views, data, seed, batch): the checkpoint's weights or random state would no longer mean the same.
FREE_KEYS = ("log", "threads", "device", "checkpoint", "out", "plugins", "tf32", "model.given", "model.compile",
             "model.channels_last", "data.num_workers", "data.prefetch", "data.pin_memory", "data.on_error",
             "monitor.every")
FORCE_KEYS = ("steps", "epochs", "optim.lr", "optim.weight_decay", "optim.grad_clip", "optim.momentum",
              "optim.nesterov", "optim.betas", "optim.trust_coefficient", "optim.exclude_bias_and_norm", "schedule",
              "precision", "monitor", "model.sync_batchnorm", "data.options.root", "data.options.path",
              "data.options.paths")


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):  # an empty mapping has no leaves: options: {} equals no options
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _written_by_hand(key: str) -> bool:
    """Whether a key can only be there because the user wrote it: an option, or a tower's name."""
    parts = key.split(".")
    return "options" in parts or (len(parts) >= 4 and parts[:2] == ["model", "encoders"] and parts[3] == "name")


def _as_lists(value: Any) -> Any:
    """Tuples as lists, so that a config read from YAML and one recorded in JSON compare equal."""
    if isinstance(value, (list, tuple)):
        return [_as_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_lists(v) for k, v in value.items()}
    return value


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def config_changes(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The keys whose values differ between the config a checkpoint was written with and the run's config now.

    Returns:
        ``(needs_force, never)``: changed keys that ``--force`` allows (:data:`FORCE_KEYS`), and changed
        keys that no resume may change; keys in :data:`FREE_KEYS` are left out.

    Example:
        >>> config_changes({"optim": {"lr": 0.1}, "seed": 0, "log": {"every": 1}},
        ...                {"optim": {"lr": 0.2}, "seed": 1, "log": {"every": 5}})
        (['optim.lr'], ['seed'])
    """
    a, b = _leaves(_as_lists(_decode(dict(recorded)))), _leaves(_as_lists(dict(current)))
    # A key on one side only is a key of another contrastlab version (its default applies) unless it is one of
    # the options a user writes (objective.options.temperature added by hand is a change).
    compared = (set(a) & set(b)) | {k for k in set(a) ^ set(b) if _written_by_hand(k)}
    changed = sorted(k for k in compared if a.get(k, "<unset>") != b.get(k, "<unset>") and not _under(k, FREE_KEYS))
    force = [k for k in changed if _under(k, FORCE_KEYS)]
    return force, [k for k in changed if k not in force]


def check_config_unchanged(ckpt: Checkpoint, current: Mapping[str, Any], *, config_path: str | Path, force: bool) -> list[str]:
    """Refuse to resume when the run's ``config.yaml`` was edited since the checkpoint was written.

    Checkpoints written before the config was recorded in them (``state.json``'s ``config``) pass.

    Args:
        ckpt: the checkpoint to resume from.
        current: the run's config now, as plain data (:func:`~contrastlab.training.config.config_to_dict`).
        config_path: the file, for the message.
        force: allow the changes listed in :data:`FORCE_KEYS`.

    Returns:
        The changed keys that ``force`` allowed (for a warning line).

    Raises:
        UserError: naming the first changed key, and whether ``--force`` would allow it.
    """
    recorded = ckpt.meta.get("config")
    if not isinstance(recorded, dict):
        return []
    needs_force, never = config_changes(recorded, current)
    if never:
        raise UserError(f"{config_path} was changed since checkpoint {ckpt.path} was written: {never[0]!r} "
                        f"({len(never)} key(s) in all) changes what the weights mean, so the run cannot resume; "
                        "train a new run with the new config")
    if needs_force and not force:
        raise UserError(f"{config_path} was changed since checkpoint {ckpt.path} was written: {needs_force[0]!r} "
                        f"({len(needs_force)} key(s) in all); pass --force to resume with the new value(s)")
    return needs_force


class CheckpointManager:
    r"""Keeps the last ``keep_last`` checkpoints of a run, plus the best one, and an index naming them.

    "Best" is the lowest ``loss`` passed to :meth:`save` (the mean training loss since the previous
    checkpoint); a non-finite loss is never best.

    Args:
        directory: where checkpoints live (``run_dir / "checkpoints"``).
        keep_last: how many of the most recent checkpoints to keep, ``>= 1``.
        keep_best: also keep the best checkpoint when it is older.

    Raises:
        ValueError: ``keep_last < 1``.

    Example:
        >>> import tempfile
        >>> manager = CheckpointManager(tempfile.mkdtemp(), keep_last=1)
        >>> _ = manager.save(10, model={"w": torch.ones(2)}, loss=1.0)
        >>> _ = manager.save(20, model={"w": torch.zeros(2)}, loss=2.0)
        >>> manager.index["last"], manager.index["best"], manager.names()
        ('step-00000020', 'step-00000010', ['step-00000010', 'step-00000020'])
    """

    def __init__(self, directory: str | Path, *, keep_last: int = 2, keep_best: bool = True) -> None:
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
        self.directory = Path(directory)
        self.keep_last, self.keep_best = keep_last, keep_best
        self.directory.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, Any] = {"last": None, "best": None, "best_loss": None}
        if (self.directory / INDEX).is_file():
            self.index.update(self._read_index(self.directory / INDEX))

    @staticmethod
    def _read_index(path: Path) -> dict[str, Any]:
        """The index, checked: it may only name checkpoint folders beside it (never ``../elsewhere``)."""
        index = _read_json(path, "checkpoint index")
        if not isinstance(index, dict):
            raise UserError(f"checkpoint index {path} must hold a JSON object, got {type(index).__name__}")
        for key in ("last", "best"):
            name = index.get(key)
            if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
                raise UserError(f"checkpoint index {path}: {key!r} must name a step-NNNNNNNN checkpoint, got {name!r}")
        best_loss = index.get("best_loss")
        if best_loss is not None and (isinstance(best_loss, bool) or not isinstance(best_loss, (int, float))):
            raise UserError(f"checkpoint index {path}: 'best_loss' must be a number, got {best_loss!r}")
        return {k: index.get(k) for k in ("last", "best", "best_loss")}

    @staticmethod
    def name(step: int) -> str:
        return f"step-{step:08d}"

    def names(self) -> list[str]:
        """The checkpoint directories on disk, oldest first."""
        return sorted(p.name for p in self.directory.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))

    def path(self, which: str = "last") -> Path | None:
        """The path of the ``"last"`` or ``"best"`` checkpoint, or ``None`` when there is none."""
        if which not in ("last", "best"):
            raise ValueError(f"which must be 'last' or 'best', got {which!r}")
        name = self.index.get(which) or (self.index.get("last") if which == "best" else None)
        return None if name is None else self.directory / name

    def save(self, step: int, *, model, objective=None, tensors=None, meta=None, loss: float | None = None) -> Path:
        """Write the checkpoint for ``step``, update the index, and delete the ones no longer kept."""
        name = self.name(step)
        path = write_checkpoint(self.directory / name, model=model, objective=objective, tensors=tensors, meta=meta)
        self.index["last"] = name
        finite = loss is not None and loss == loss and abs(loss) != float("inf")
        if finite and (self.index.get("best_loss") is None or loss < self.index["best_loss"]):
            self.index["best"], self.index["best_loss"] = name, float(loss)
        atomic_write_text(self.directory / INDEX, json.dumps(self.index, indent=1))
        self._prune()
        return path

    def _prune(self) -> None:
        names = self.names()
        keep = set(names[-self.keep_last :]) | {self.index["last"]}
        if self.keep_best and self.index.get("best"):
            keep.add(self.index["best"])
        for name in names:
            if name not in keep:
                discard(self.directory / name)
        for stale in self.directory.glob("*.tmp"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
