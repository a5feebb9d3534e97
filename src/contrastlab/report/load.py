"""Reading an evaluation for the report: ``metrics.json`` found, parsed and checked, its figures resolved.

``metrics.json`` is untrusted input (a file anyone can edit or send): everything the report reads is checked
for its shape, every figure must be a PNG file inside the evaluation's folder, and any problem is one
:class:`~contrastlab.errors.UserError` naming the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contrastlab.errors import UserError
from contrastlab.report.tables import SECTIONS


@dataclass
class EvaluatedRun:
    """One evaluation as the report reads it.

    Attributes:
        name: the name shown on the page (the run's folder).
        eval_dir: the folder holding ``metrics.json`` and the figures.
        metrics: the parsed, checked ``metrics.json``.
        figures: figure name → its resolved PNG file inside ``eval_dir``.
    """

    name: str
    eval_dir: Path
    metrics: dict
    #: Figure name → the resolved PNG file inside ``eval_dir`` (checked by :func:`load_evaluated`).
    figures: dict[str, Path] = field(default_factory=dict)


#: Deepest nesting of mappings and lists accepted in ``metrics.json`` (a real one is about 6 deep).
_MAX_DEPTH = 64


def _depth_problem(tree: object) -> str | None:
    """Why ``tree`` nests too deeply for the report's recursive readers, or ``None``; walks without recursion."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return f"values nest more than {_MAX_DEPTH} levels deep"
        if isinstance(node, Mapping):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return None


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _is_number(value: object) -> bool:
    """A JSON number that is a finite float (not NaN, not infinite, not an integer too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits
        return False


def _is_text_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _mapping_of_mappings(value: object, where: str) -> str | None:
    if not isinstance(value, Mapping):
        return f"'{where}' must be a mapping, got {_short(value)}"
    for key, item in value.items():
        if not isinstance(item, Mapping):
            return f"'{where}.{key}' must be a mapping, got {_short(item)}"
    return None


def _encoder_problem(name: str, enc: object) -> str | None:
    """What in one encoder row differs from what the report reads, or ``None``."""
    if not isinstance(enc, Mapping):
        return f"encoder '{name}' must be a mapping of measures, got {_short(enc)}"
    for section in (*SECTIONS, "invariance"):
        if section in enc and not isinstance(enc[section], Mapping):
            return f"'encoders.{name}.{section}' must be a mapping, got {_short(enc[section])}"
    for key in ("kind", "tower"):
        if enc.get(key) is not None and not isinstance(enc[key], str):
            return f"'encoders.{name}.{key}' must be text, got {_short(enc[key])}"
    for section in ("invariance", "decodability"):
        if (problem := _mapping_of_mappings(enc.get(section, {}), f"encoders.{name}.{section}")) is not None:
            return problem
        for factor, report in enc.get(section, {}).items():
            members = report.get("factors", [factor])
            if not _is_text_list(members):
                return (f"'encoders.{name}.{section}.{factor}.factors' must be a list of factor names, "
                        f"got {_short(members)}")
    for section, key in (("geometry", "alignment"), ("geometry", "uniformity"),
                         ("classification", "probe_test_accuracy")):
        value = enc.get(section, {}).get(key)
        if value is not None and not _is_number(value):
            return f"'encoders.{name}.{section}.{key}' must be a finite number, got {_short(value)}"
    return None


def _new_sections_problem(metrics: Mapping) -> str | None:
    """What in ``cross_modal``, ``comparison`` and ``verdict`` differs from what the report reads, or ``None``."""
    cross = metrics.get("cross_modal", {})
    if (problem := _mapping_of_mappings(cross, "cross_modal")) is not None:
        return problem
    for row, entry in cross.items():
        for key in ("retrieval", "cca"):
            if key in entry and (problem := _mapping_of_mappings(entry[key], f"cross_modal.{row}.{key}")):
                return problem
        if "geometry" in entry and not isinstance(entry["geometry"], Mapping):
            return f"'cross_modal.{row}.geometry' must be a mapping, got {_short(entry['geometry'])}"
        if "towers" in entry and not _is_text_list(entry["towers"]):
            return f"'cross_modal.{row}.towers' must be a list of tower names, got {_short(entry['towers'])}"
    comparison = metrics.get("comparison", [])
    if not isinstance(comparison, list) or not all(isinstance(c, Mapping) for c in comparison):
        return f"'comparison' must be a list of mappings, got {_short(comparison)}"
    if "verdict" in metrics:
        v = metrics["verdict"]
        if not (isinstance(v, Mapping) and isinstance(v.get("headline"), str) and _is_text_list(v.get("warnings", []))
                and _is_text_list(v.get("notes", [])) and (v.get("best") is None or isinstance(v["best"], str))):
            return ("'verdict' must be {\"headline\": text, \"best\": text or null, \"warnings\": [text], "
                    f"\"notes\": [text]}}, got {_short(v)}")
    return None


def _shape_problem(metrics: object) -> str | None:
    """What in a parsed ``metrics.json`` differs from the shape ``contrastlab eval`` writes, or ``None``.

    Only what the report reads is checked: the top level and ``encoders`` are mappings, ``run``,
    ``items`` and ``figures`` are mappings when present, ``run.config`` is a mapping or null, class names
    are text, item counts are integers, every encoder and each of its sections is a mapping, the plotted
    geometry and accuracy are finite numbers, ``cross_modal``, ``comparison`` and ``verdict`` have their
    shapes, and ``figures`` maps names to file names.
    """
    if not isinstance(metrics, Mapping):
        return f"the file must hold a mapping, got {_short(metrics)}"
    if (problem := _depth_problem(metrics)) is not None:
        return problem
    if not isinstance(metrics.get("encoders"), Mapping):
        return f"'encoders' must map encoder names to their measures, got {_short(metrics.get('encoders'))}"
    for key in ("run", "items"):
        if key in metrics and not isinstance(metrics[key], Mapping):
            return f"'{key}' must be a mapping, got {_short(metrics[key])}"
    info = metrics.get("run", {})
    if info.get("config") is not None and not isinstance(info["config"], Mapping):
        return f"'run.config' must be a mapping, got {_short(info['config'])}"
    if "class_names" in info and not _is_text_list(info["class_names"]):
        return f"'run.class_names' must be a list of names, got {_short(info['class_names'])}"
    for split, count in metrics.get("items", {}).items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return f"'items.{split}' must be a count of items, got {_short(count)}"
    for key in ("selection", "skipped"):  # rendered as text: names to notes
        value = metrics.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return f"'{key}' must map names to notes (strings), got {_short(value)}"
    for name, enc in metrics["encoders"].items():
        if (problem := _encoder_problem(name, enc)) is not None:
            return problem
    if (problem := _new_sections_problem(metrics)) is not None:
        return problem
    figures = metrics.get("figures", {})
    if not isinstance(figures, Mapping) or not all(isinstance(f, str) for f in figures.values()):
        return f"'figures' must map names to PNG files, got {_short(figures)}"
    return None


def _figure_files(metrics_path: Path, figures: Mapping[str, str]) -> dict[str, Path]:
    """Each figure's file, resolved (symlinks followed); it must lie inside the ``eval/`` folder and end in ``.png``.

    Raises:
        UserError: naming the metrics file, the figure and its path, for any other file.
    """
    eval_dir = metrics_path.parent
    try:
        root = eval_dir.resolve()
        resolved = {name: (eval_dir / file).resolve() for name, file in figures.items()}
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise UserError(f"{metrics_path}: cannot resolve a figure path ({err})") from None
    for name, path in resolved.items():
        if not path.is_relative_to(root) or path == root or path.suffix.lower() != ".png":
            raise UserError(f"{metrics_path}: figure '{name}' must be a PNG file inside {eval_dir}, "
                            f"got {figures[name]!r}")
    return resolved


def _metrics_path(path: Path) -> Path:
    """The ``metrics.json`` that ``path`` names: the file itself, ``path/metrics.json`` or ``path/eval/metrics.json``."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path} does not exist")
    for candidate in (path / "metrics.json", path / "eval" / "metrics.json"):
        if candidate.is_file():
            return candidate
    raise UserError(f"{path / 'eval' / 'metrics.json'} does not exist: run `contrastlab eval {path}` first "
                    f"(or name the folder that `contrastlab analyze` wrote)")


def load_evaluated(path: str | Path) -> EvaluatedRun:
    """Read an evaluation: a run folder (``RUN/eval/metrics.json``), a folder holding ``metrics.json`` (what
    ``contrastlab analyze`` writes), or the ``metrics.json`` file itself.

    Args:
        path: the run folder, the evaluation's folder or its ``metrics.json``.

    Returns:
        An :class:`EvaluatedRun` named after the run's folder (the folder above ``eval/``).

    Raises:
        UserError: when the path or its evaluation is missing, the JSON is unreadable or not shaped like an
            evaluation, or a figure lies outside the evaluation's folder or is not a PNG file.

    Example:
        >>> load_evaluated("runs/shapes-simclr").metrics["encoders"]["head"]["kind"]  # doctest: +SKIP
        'trained'
    """
    given = Path(path)
    metrics_path = _metrics_path(given)
    try:
        metrics = json.loads(metrics_path.read_text())
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, too many digits, too deep
        raise UserError(f"{metrics_path} is not valid JSON ({err})") from None
    except OSError as err:
        raise UserError(f"{metrics_path} cannot be read ({err.strerror or err})") from None
    problem = _shape_problem(metrics)
    if problem is not None:
        raise UserError(f"{metrics_path} is not an evaluation written by contrastlab eval: {problem}")
    figures = _figure_files(metrics_path, metrics.get("figures", {}))
    folder = metrics_path.parent.resolve()
    name = folder.parent.name if folder.name == "eval" and folder.parent.name else folder.name
    return EvaluatedRun(name=name or str(given), eval_dir=metrics_path.parent, metrics=metrics, figures=figures)
