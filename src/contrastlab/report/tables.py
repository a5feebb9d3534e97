"""HTML tables for the report: metrics of every encoder, invariance, configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

#: Sections of an encoder's metrics, in the order the metrics table shows them.
SECTIONS: tuple[str, ...] = ("classification", "clustering", "geometry", "information", "retrieval", "cca")

#: Readable names for metric keys.
LABELS: dict[str, str] = {
    "probe_train_accuracy": "linear probe, train accuracy",
    "probe_test_accuracy": "linear probe, test accuracy",
    "knn5_accuracy": "5-NN accuracy (majority vote)",
    "knn200_accuracy": "200-NN accuracy (weighted, τ = 0.07)",
    "nmi": "k-means NMI", "ari": "k-means ARI", "n_clusters": "k-means clusters",
    "effective_rank": "effective rank", "alignment": "alignment (α = 2)", "uniformity": "uniformity (t = 2)",
    "pairs": "positive pairs", "info_nce": "InfoNCE on held-out pairs", "mi_lower_bound": "MI lower bound log k − L (nats)",
    "mi_k": "k (pairs per group)", "temperature": "temperature τ", "median_rank": "median rank", "mean_rank": "mean rank",
    "candidates": "candidates",
}


def fmt(value: Any) -> str:
    """A value as the tables show it: 4 decimals (4 significant digits when large), text HTML-escaped.

    Args:
        value: a number, text, a list or ``None``.

    Returns:
        The cell text.

    Example:
        >>> fmt(0.123456), fmt(12345.6), fmt(None), fmt("<b>")
        ('0.1235', '1.235e+04', '–', '&lt;b&gt;')
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
    return escape(str(value))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level with keys joined by `` · ``; leaves kept as they are.

    Args:
        tree: a nested mapping.
        prefix: prepended to every key.

    Returns:
        The flat mapping.

    Example:
        >>> flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3})
        {'a · b': 1, 'a · c · d': 2, 'e': 3}
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix} · {key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def _readable(key: str) -> str:
    return " · ".join(LABELS.get(part, part) for part in key.split(" · "))


def metrics_table(columns: Sequence[tuple[str, str, Mapping[str, Any]]]) -> str:
    """Metrics side by side: one column per (run, encoder), rows grouped by section.

    Args:
        columns: ``(run name, encoder name, encoder metrics)`` per column.

    Returns:
        An HTML ``<table>``.
    """
    runs: list[str] = list(dict.fromkeys(run for run, _, _ in columns))
    head1 = "".join(f'<th colspan="{sum(1 for r, _, _ in columns if r == run)}">{escape(run)}</th>' for run in runs)
    head2 = "".join(f"<th>{escape(enc)}<br><small>{escape(str(m.get('kind', '')))}</small></th>"
                    for _, enc, m in columns)
    rows = [f'<tr><th class="key" rowspan="2">metric</th>{head1}</tr>', f"<tr>{head2}</tr>"]
    dims = "".join(f"<td>{fmt(m.get('dim'))}</td>" for _, _, m in columns)
    rows.append(f'<tr><td class="key">feature width</td>{dims}</tr>')
    for section in SECTIONS:
        flat = [flatten(m.get(section, {})) for _, _, m in columns]
        keys = list(dict.fromkeys(k for f in flat for k in f if not isinstance(f[k], (list, tuple))))
        if not keys:
            continue
        rows.append(f'<tr class="group"><td colspan="{len(columns) + 1}">{escape(section)}</td></tr>')
        for key in keys:
            cells = "".join(f"<td>{fmt(f.get(key))}</td>" for f in flat)
            rows.append(f'<tr><td class="key">{escape(_readable(key))}</td>{cells}</tr>')
    return '<div class="scroll"><table class="metrics">' + "".join(rows) + "</table></div>"


def invariance_table(reports: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """Per factor and encoder: distance score, k-NN purity (chance) and the label.

    Args:
        reports: encoder name → invariance report (factor → measures).

    Returns:
        An HTML ``<table>``.
    """
    encoders = list(reports)
    factors = list(dict.fromkeys(f for r in reports.values() for f in r))
    head1 = "".join(f'<th colspan="3">{escape(e)}</th>' for e in encoders)
    head2 = "<th>score</th><th>purity (chance)</th><th>label</th>" * len(encoders)
    rows = [f'<tr><th class="key" rowspan="2">factor</th>{head1}</tr>', f"<tr>{head2}</tr>"]
    for factor in factors:
        cells = []
        for e in encoders:
            r = reports[e].get(factor)
            if r is None:
                cells.append("<td>–</td><td>–</td><td>–</td>")
                continue
            label = escape(str(r.get("label", "")))
            cells.append(f"<td>{fmt(r.get('score'))}</td><td>{fmt(r.get('purity'))} ({fmt(r.get('chance'))})</td>"
                         f'<td class="{label}">{label}</td>')
        members = reports[encoders[0]].get(factor, {}).get("factors", [factor])
        name = escape(factor) + (f" <small>({escape(', '.join(members))})</small>" if list(members) != [factor] else "")
        rows.append(f'<tr><td class="key">{name}</td>{"".join(cells)}</tr>')
    return '<div class="scroll"><table class="invariance">' + "".join(rows) + "</table></div>"


def config_table(configs: Mapping[str, Mapping[str, Any]]) -> str:
    """Configurations side by side as dotted keys; rows where runs differ are highlighted.

    Args:
        configs: run name → configuration (a nested dict).

    Returns:
        An HTML ``<table>``.
    """
    runs = list(configs)
    flat = {run: {k.replace(" · ", "."): v for k, v in flatten(cfg or {}).items()} for run, cfg in configs.items()}
    keys = sorted(dict.fromkeys(k for f in flat.values() for k in f))
    head = "".join(f"<th>{escape(r)}</th>" for r in runs)
    rows = [f'<tr><th class="key">key</th>{head}</tr>']
    for key in keys:
        values = [flat[r].get(key) for r in runs]
        differs = len(runs) > 1 and len({repr(v) for v in values}) > 1
        cells = "".join(f'<td class="key">{fmt(v)}</td>' for v in values)
        rows.append(f'<tr{" class=diff" if differs else ""}><td class="key">{escape(key)}</td>{cells}</tr>')
    return '<div class="scroll"><table class="config">' + "".join(rows) + "</table></div>"
