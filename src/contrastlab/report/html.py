"""One self-contained HTML page for one or several evaluated runs.

The page needs nothing but itself: figures are embedded as base64 PNG data URIs, the style sheet
is inline, and there is no script and no external request. Each run must have been evaluated first
(``contrastlab eval RUN_DIR`` writes ``RUN_DIR/eval/metrics.json`` and the figures).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from string import Template

from contrastlab import __version__
from contrastlab.errors import UserError
from contrastlab.files import atomic_write_text
from contrastlab.plots import alignment_uniformity_scatter, png_bytes
from contrastlab.report.tables import SECTIONS, config_table, invariance_table, metrics_table

#: Figure names in the order the page shows them, with captions.
FIGURE_CAPTIONS: dict[str, str] = {
    "curves": "Training curves from metrics.csv.",
    "invariance": "Invariance report: distance score (0 = invariant, 1 = as far as a new item; dashed lines at the "
                  "label thresholds) and k-NN purity against chance (black ticks), for the trained encoder and the "
                  "baselines.",
    "neighbours_head_train": "Nearest neighbours of the head features on the training split.",
    "neighbours_head_test": "Nearest neighbours of the head features on the test split.",
    "neighbours_backbone_train": "Nearest neighbours of the backbone features on the training split.",
    "neighbours_backbone_test": "Nearest neighbours of the backbone features on the test split.",
    "hypersphere_head": "Head features on the circle, with the density of angles per class (Wang & Isola, Fig. 3).",
    "hypersphere_backbone": "Backbone features on the circle, with the density of angles per class.",
    "tsne_head": "t-SNE of the head features of test items.",
    "tsne_backbone": "t-SNE of the backbone features of test items.",
}


@dataclass
class EvaluatedRun:
    """One run's evaluation as the report reads it."""

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


def _shape_problem(metrics: object) -> str | None:
    """What in a parsed ``metrics.json`` differs from the shape ``contrastlab eval`` writes, or ``None``.

    Only what the report reads is checked: the top level and ``encoders`` are mappings, ``run``,
    ``items`` and ``figures`` are mappings when present, ``run.config`` is a mapping or null, item
    counts are integers, every encoder and each of its sections is a mapping, the plotted geometry
    and accuracy are finite numbers, and ``figures`` maps names to file names.
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
    config = metrics.get("run", {}).get("config")
    if config is not None and not isinstance(config, Mapping):
        return f"'run.config' must be a mapping, got {_short(config)}"
    for split, count in metrics.get("items", {}).items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            return f"'items.{split}' must be a count of items, got {_short(count)}"
    for key in ("selection", "skipped"):  # rendered as text: names to notes
        value = metrics.get(key, {})
        if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            return f"'{key}' must map names to notes (strings), got {_short(value)}"
    for name, enc in metrics["encoders"].items():
        if not isinstance(enc, Mapping):
            return f"encoder '{name}' must be a mapping of measures, got {_short(enc)}"
        for section in (*SECTIONS, "invariance"):
            if section in enc and not isinstance(enc[section], Mapping):
                return f"'encoders.{name}.{section}' must be a mapping, got {_short(enc[section])}"
        for factor, report in enc.get("invariance", {}).items():
            if not isinstance(report, Mapping):
                return f"'encoders.{name}.invariance.{factor}' must be a mapping, got {_short(report)}"
            members = report.get("factors", [factor])
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                return (f"'encoders.{name}.invariance.{factor}.factors' must be a list of factor names, "
                        f"got {_short(members)}")
        for section, key in (("geometry", "alignment"), ("geometry", "uniformity"),
                             ("classification", "probe_test_accuracy")):
            value = enc.get(section, {}).get(key)
            if value is not None and not _is_number(value):
                return f"'encoders.{name}.{section}.{key}' must be a finite number, got {_short(value)}"
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


def load_evaluated(run_dir: str | Path) -> EvaluatedRun:
    """Read ``RUN_DIR/eval/metrics.json``.

    Args:
        run_dir: a run folder evaluated by ``contrastlab eval``.

    Returns:
        An :class:`EvaluatedRun` named after the folder.

    Raises:
        UserError: when the run folder or its evaluation is missing, the JSON is unreadable or not
            shaped like an evaluation, or a figure lies outside ``eval/`` or is not a PNG file.

    Example:
        >>> load_evaluated("runs/shapes-simclr").metrics["encoders"]["head"]["kind"]  # doctest: +SKIP
        'trained'
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    path = run_dir / "eval" / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist: run `contrastlab eval {run_dir}` first")
    try:
        metrics = json.loads(path.read_text())
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError, too many digits, too deep
        raise UserError(f"{path} is not valid JSON ({err})") from None
    problem = _shape_problem(metrics)
    if problem is not None:
        raise UserError(f"{path} is not an evaluation written by contrastlab eval: {problem}")
    figures = _figure_files(path, metrics.get("figures", {}))
    return EvaluatedRun(name=run_dir.resolve().name, eval_dir=path.parent, metrics=metrics, figures=figures)


def _unique_names(runs: list[EvaluatedRun]) -> None:
    seen: dict[str, int] = {}
    for run in runs:
        base = run.name
        seen[base] = seen.get(base, 0) + 1
        if seen[base] > 1:
            run.name = f"{base} ({seen[base]})"


def _selection(selection: Mapping[str, str]) -> str:
    """How the evaluated items were chosen, e.g. " (test: first 500 in stream order)"."""
    return f" ({escape('; '.join(f'{k}: {v}' for k, v in selection.items()))})" if selection else ""


def _skipped(skipped: Mapping[str, str]) -> str:
    """One note per reason measures were skipped: "skipped linear_probe, knn: the data set has no labels"."""
    reasons: dict[str, list[str]] = {}
    for measure, reason in skipped.items():
        reasons.setdefault(reason, []).append(measure)
    return "".join(f"<br><span class=note>skipped {escape(', '.join(names))}: {escape(reason)}</span>"
                   for reason, names in reasons.items())


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _figure(data: bytes | None, alt: str, caption: str) -> str:
    body = _img(data, alt) if data is not None else '<div class="missing">not available for this run</div>'
    return f"<figure>{body}<figcaption>{escape(caption)}</figcaption></figure>"


def _scatter(runs: list[EvaluatedRun]) -> str:
    names, align, unif, acc = [], [], [], []
    for run in runs:
        for enc_name, enc in run.metrics["encoders"].items():
            geometry = enc.get("geometry", {})
            if geometry.get("alignment") is None or geometry.get("uniformity") is None:
                continue
            names.append(enc_name if len(runs) == 1 else f"{run.name}/{enc_name}")
            align.append(geometry["alignment"])
            unif.append(geometry["uniformity"])
            acc.append(enc.get("classification", {}).get("probe_test_accuracy"))
    if not names:
        return ""
    fig = alignment_uniformity_scatter(names, align, unif, acc, title="Alignment and uniformity on held-out pairs")
    colour = ("coloured by linear-probe test accuracy (Wang &amp; Isola, Fig. 7)" if any(a is not None for a in acc)
              else "drawn grey: without labels there is no probe accuracy to colour them by")
    return ("<h2>Alignment and uniformity</h2><p class=note>Each point is an encoder on held-out positive pairs, "
            f"{colour}: lower left is aligned and uniform.</p>" + f'<div class="figrow" style="grid-template-columns: minmax(0, 640px)">'
            f'{_figure(png_bytes(fig), "alignment-uniformity scatter", "Alignment against uniformity.")}</div>')


def _figures(runs: list[EvaluatedRun]) -> str:
    names = list(dict.fromkeys(n for run in runs for n in run.figures))
    order = [n for n in FIGURE_CAPTIONS if n in names] + [n for n in names if n not in FIGURE_CAPTIONS]
    if not order:
        return ""
    parts = ["<h2>Figures</h2>"]
    for name in order:
        cells = []
        for run in runs:
            path = run.figures.get(name)  # resolved inside eval/ by load_evaluated
            data = path.read_bytes() if path is not None and path.is_file() else None
            caption = FIGURE_CAPTIONS.get(name, name) + (f" — {run.name}" if len(runs) > 1 else "")
            cells.append(_figure(data, f"{name} ({run.name})", caption))
        parts.append(f"<h3>{escape(name)}</h3>")
        parts.append(f'<div class="figrow" style="grid-template-columns: repeat({len(runs)}, minmax(0, 1fr))">'
                     + "".join(cells) + "</div>")
    return "".join(parts)


def build_report(run_dirs: list[str | Path], *, title: str | None = None, preamble: str = "") -> str:
    """The HTML page for the evaluated runs, side by side in the order given.

    Args:
        run_dirs: one or more run folders, each evaluated by ``contrastlab eval``.
        title: the page title (default names the runs).
        preamble: trusted HTML shown first (a recipe's comparison of its runs).

    Returns:
        The HTML text.

    Raises:
        UserError: when no run is given or a run has no evaluation.

    Example:
        >>> html = build_report(["runs/a", "runs/b"])  # doctest: +SKIP
        >>> html.startswith("<!DOCTYPE html>")  # doctest: +SKIP
        True
    """
    if not run_dirs:
        raise UserError("name at least one run directory")
    runs = [load_evaluated(d) for d in run_dirs]
    _unique_names(runs)
    title = title or "contrastlab report: " + ", ".join(r.name for r in runs)
    body = [preamble, "<h2>Runs</h2><ul>"] if preamble else ["<h2>Runs</h2><ul>"]
    for run in runs:
        info, items = run.metrics.get("run", {}), run.metrics.get("items", {})
        body.append(f"<li><b>{escape(run.name)}</b>: objective <code>{escape(str(info.get('objective')))}</code>, "
                    f"data <code>{escape(str(info.get('dataset')))}</code>, "
                    f"{escape(str(items.get('train', '?')))} train / {escape(str(items.get('test', '?')))} test "
                    f"items evaluated{_selection(run.metrics.get('selection', {}))}, "
                    f"<code>{escape(str(info.get('run_dir')))}</code>{_skipped(run.metrics.get('skipped', {}))}</li>")
    body.append("</ul>")
    body.append("<h2>Metrics</h2><p class=note>Features of the frozen encoder after the head and from the backbone, "
                "next to two baselines: the raw inputs and the same architecture randomly initialised. "
                "Accuracies are on the test split; geometry is on test items.</p>")
    body.append(metrics_table([(run.name, enc, m) for run in runs for enc, m in run.metrics["encoders"].items()]))
    for run in runs:
        reports = {e: m["invariance"] for e, m in run.metrics["encoders"].items() if m.get("invariance")}
        if reports:
            body.append(f"<h2>Invariance — {escape(run.name)}</h2><p class=note>Score: mean embedding distance when "
                        "only that factor changes ÷ mean distance to a random other item (invariant below 0.3, "
                        "sensitive from 0.5). Purity: fraction of each item's 5 nearest neighbours sharing its value "
                        "(continuous factors in quartile bins), with the chance level in brackets.</p>")
            body.append(invariance_table(reports))
    body.append(_scatter(runs))
    body.append(_figures(runs))
    body.append("<h2>Configuration</h2>")
    body.append(config_table({run.name: run.metrics.get("run", {}).get("config") or {} for run in runs}))
    template = Template(resources.files("contrastlab.report").joinpath("template.html").read_text())
    style = resources.files("contrastlab.report").joinpath("style.css").read_text()
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    return template.substitute(title=escape(title), style=style, version=__version__, body="\n".join(body),
                               subtitle=escape(f"{len(runs)} run(s), generated {stamp} by contrastlab {__version__}"))


def write_report(run_dirs: list[str | Path], out: str | Path, *, title: str | None = None) -> Path:
    """Build the report (see :func:`build_report`) and write it to ``out``, creating its folder.

    Args:
        run_dirs: one or more evaluated run folders.
        out: the HTML file to write.
        title: the page title.

    Returns:
        ``out``.

    Raises:
        UserError: when no run is given or a run has no evaluation.

    Example:
        >>> write_report(["runs/a", "runs/b"], "report.html")  # doctest: +SKIP
        PosixPath('report.html')
    """
    out = Path(out)
    html = build_report(run_dirs, title=title)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, html)
