"""HTML tables for the report: summary, invariance and decodability, retrieval, comparisons, metrics, configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

#: Sections of an encoder's metrics, in the order the metrics table shows them.
SECTIONS: tuple[str, ...] = ("classification", "clustering", "geometry", "information", "decodability", "retrieval",
                              "cca")

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
    "candidates": "candidates", "score": "score", "chance": "chance",
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


def _decodable_cell(entry: Mapping[str, Any] | None) -> str:
    """"0.900 acc (0.200)": a factor's decodability and its chance level; bold when well above chance."""
    if not isinstance(entry, Mapping) or entry.get("score") is None:
        return "<td>–</td>"
    score, chance = entry.get("score"), entry.get("chance")
    what = "R²" if entry.get("kind") == "r2" else "acc"
    strong = (isinstance(score, (int, float)) and isinstance(chance, (int, float)) and chance < 1
              and (score - chance) / (1 - chance) >= 0.5)
    return f'<td{" class=decodable" if strong else ""}>{fmt(score)} <small>{what}</small> ({fmt(chance)})</td>'


def invariance_table(reports: Mapping[str, Mapping[str, Mapping[str, Any]]],
                     decodability: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> str:
    """Per factor and encoder row: distance score, label, k-NN purity (chance) and, side by side, decodability.

    Args:
        reports: row name → invariance report (factor → measures); a row may have none (``{}``).
        decodability: row name → factor → ``{"kind", "score", "chance"}`` (a linear read-out of the factor).

    Returns:
        An HTML ``<table>``.

    Example:
        >>> html = invariance_table({"head": {"colour": {"score": 0.05, "label": "invariant"}}},
        ...                         {"head": {"colour": {"kind": "accuracy", "score": 0.9, "chance": 0.2}}})
        >>> 'class="invariant">invariant<' in html, "<th>decodable (chance)</th>" in html
        (True, True)
    """
    decodability = decodability or {}
    encoders = list(dict.fromkeys([*reports, *decodability]))
    with_report = any(reports.get(e) for e in encoders)
    with_decoding = any(decodability.get(e) for e in encoders)
    factors = list(dict.fromkeys(f for e in encoders for r in (reports.get(e) or {}, decodability.get(e) or {})
                                 for f in r))
    heads = (["score", "label", "purity (chance)"] if with_report else []) + (
        ["decodable (chance)"] if with_decoding else [])
    head1 = "".join(f'<th colspan="{len(heads)}">{escape(e)}</th>' for e in encoders)
    head2 = "".join(f"<th>{h}</th>" for h in heads) * len(encoders)
    rows = [f'<tr><th class="key" rowspan="2">factor</th>{head1}</tr>', f"<tr>{head2}</tr>"]
    for factor in factors:
        cells = []
        members: Any = [factor]
        for e in encoders:
            if with_report:
                r = (reports.get(e) or {}).get(factor)
                if isinstance(r, Mapping):
                    label = escape(str(r.get("label", "")))
                    members = r.get("factors", members)
                    cells.append(f"<td>{fmt(r.get('score'))}</td><td class=\"{label}\">{label}</td>"
                                 f"<td>{fmt(r.get('purity'))} ({fmt(r.get('chance'))})</td>")
                else:
                    cells.append("<td>–</td><td>–</td><td>–</td>")
            if with_decoding:
                cells.append(_decodable_cell((decodability.get(e) or {}).get(factor)))
        members = [str(m) for m in members] if isinstance(members, (list, tuple)) else [factor]
        name = escape(factor) + (f" <small>({escape(', '.join(members))})</small>" if members != [factor] else "")
        rows.append(f'<tr><td class="key">{name}</td>{"".join(cells)}</tr>')
    return '<div class="scroll"><table class="invariance">' + "".join(rows) + "</table></div>"


def summary_table(rows: Sequence[Mapping[str, Any]], *, with_run: bool = False) -> str:
    """One line per encoder row: probe, k-NN, alignment, uniformity, effective rank, and what to make of it.

    Args:
        rows: per row ``{"run", "row", "metrics" (the row's measures), "flags": [(css class, text)]}``; a
            ``baseline`` row is drawn muted, a flagged one (``loses``, ``collapsed``, ``best``) marked.
        with_run: add a first column with the run's name (several runs side by side).

    Returns:
        An HTML ``<table>``.

    Example:
        >>> html = summary_table([{"run": "a", "row": "raw", "metrics": {"kind": "baseline", "dim": 4}, "flags": []}])
        >>> '<tr class="baseline">' in html
        True
    """
    columns = (("classification", "probe_test_accuracy", "linear probe<br><small>test accuracy</small>"),
               ("classification", "knn5_accuracy", "5-NN<br><small>accuracy</small>"),
               ("classification", "knn200_accuracy", "200-NN<br><small>accuracy</small>"),
               ("geometry", "alignment", "alignment<br><small>lower: closer pairs</small>"),
               ("geometry", "uniformity", "uniformity<br><small>lower: more spread</small>"),
               ("geometry", "effective_rank", "effective rank"))
    head = ("<th class=key>run</th>" if with_run else "") + "<th class=key>row</th><th>kind</th><th>width</th>" + \
        "".join(f"<th>{h}</th>" for _, _, h in columns) + "<th class=key>what to make of it</th>"
    out = [f"<tr>{head}</tr>"]
    for entry in rows:
        m = entry["metrics"]
        kind = str(m.get("kind", ""))
        flags = list(entry.get("flags", ()))
        classes = [c for c, _ in flags] + (["baseline"] if kind == "baseline" else [])
        cells = "".join(f"<td>{fmt(_section(m, s).get(k))}</td>" for s, k, _ in columns)
        note = "; ".join(f'<span class="flag {escape(c)}">{escape(text)}</span>' for c, text in flags)
        attr = f' class="{" ".join(escape(c) for c in dict.fromkeys(classes))}"' if classes else ""
        first = f'<td class="key">{escape(str(entry.get("run", "")))}</td>' if with_run else ""
        out.append(f'<tr{attr}>{first}<td class="key">{escape(str(entry["row"]))}</td><td>{escape(kind)}</td>'
                   f'<td>{fmt(m.get("dim"))}</td>{cells}<td class="key">{note}</td></tr>')
    return '<div class="scroll"><table class="rows">' + "".join(out) + "</table></div>"


def _section(metrics: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = metrics.get(name)
    return value if isinstance(value, Mapping) else {}


def retrieval_table(rows: Mapping[str, Mapping[str, Any]], *, kinds: Mapping[str, str | None],
                    flags: Mapping[str, str] | None = None) -> str:
    """Cross-modal retrieval: one line per (row, direction) with recall@1/5/10, median rank and chance.

    Args:
        rows: row name → direction (``"image->caption"``) → ``{"R@1", "R@5", "R@10",
            "median_rank", "candidates"}``.
        kinds: row name → ``trained`` / ``baseline`` (baselines are drawn muted).
        flags: row name → a warning shown next to its lines (a trained row that loses to a baseline).

    Returns:
        An HTML ``<table>``.

    Example:
        >>> html = retrieval_table({"head": {"image->caption": {"R@1": 0.5, "candidates": 100}}},
        ...                        kinds={"head": "trained"})
        >>> "<td>0.0100</td>" in html  # chance recall@1 among 100 candidates
        True
    """
    flags = flags or {}
    out = ["<tr><th class=key>row</th><th>kind</th><th class=key>direction</th><th>recall@1</th><th>recall@5</th>"
           "<th>recall@10</th><th>median rank</th><th>candidates</th><th>chance recall@1</th>"
           "<th class=key>what to make of it</th></tr>"]
    for row, directions in rows.items():
        kind = kinds.get(row) or ""
        for direction, v in directions.items():
            v = v if isinstance(v, Mapping) else {}
            n = v.get("candidates")
            chance = 1 / n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
            flag = f'<span class="flag loses">{escape(flags[row])}</span>' if row in flags else ""
            attr = ' class="baseline"' if kind == "baseline" else ' class="loses"' if row in flags else ""
            out.append(f'<tr{attr}><td class="key">{escape(row)}</td><td>{escape(str(kind))}</td>'
                       f'<td class="key">{escape(str(direction))}</td>'
                       + "".join(f"<td>{fmt(v.get(k))}</td>" for k in ("R@1", "R@5", "R@10",
                                                                         "median_rank", "candidates"))
                       + f'<td>{fmt(chance)}</td><td class="key">{flag}</td></tr>')
    return '<div class="scroll"><table class="retrieval">' + "".join(out) + "</table></div>"


def cca_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Canonical correlations between towers: one line per (row, tower pair), mean and leading correlations.

    Args:
        rows: row name → ``"image|caption"`` → ``{"mean", "top": [...]}``.

    Returns:
        An HTML ``<table>``.

    Example:
        >>> "0.5000" in cca_table({"head": {"image|caption": {"mean": 0.5, "top": [0.9, 0.7]}}})
        True
    """
    out = ["<tr><th class=key>row</th><th class=key>towers</th><th>mean correlation</th>"
           "<th class=key>leading correlations</th></tr>"]
    for row, pairs in rows.items():
        for pair, v in pairs.items():
            v = v if isinstance(v, Mapping) else {}
            out.append(f'<tr><td class="key">{escape(row)}</td><td class="key">{escape(str(pair).replace("|", " | "))}'
                       f'</td><td>{fmt(v.get("mean"))}</td><td class="key">{fmt(v.get("top"))}</td></tr>')
    return '<div class="scroll"><table class="cca">' + "".join(out) + "</table></div>"


def comparison_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """How alike two rows' representations are: linear CKA, mutual k-NN (against chance), SVCCA.

    Args:
        entries: ``{"a", "b", "cka", "cka_biased", "mutual_knn", "mutual_knn_chance", "svcca", "svcca_dims",
            "items"}`` per compared pair.

    Returns:
        An HTML ``<table>``.

    Example:
        >>> "head" in comparison_table([{"a": "head", "b": "backbone", "cka": 0.8}])
        True
    """
    out = ["<tr><th class=key>a</th><th class=key>b</th><th>linear CKA</th><th>CKA (biased)</th>"
           "<th>mutual k-NN (chance)</th><th>SVCCA (dims)</th><th>items</th></tr>"]
    for e in entries:
        dims = e.get("svcca_dims")
        dims = f" ({fmt(dims[0])} × {fmt(dims[1])})" if isinstance(dims, (list, tuple)) and len(dims) == 2 else ""
        out.append(f'<tr><td class="key">{escape(str(e.get("a")))}</td><td class="key">{escape(str(e.get("b")))}</td>'
                   f'<td>{fmt(e.get("cka"))}</td><td>{fmt(e.get("cka_biased"))}</td>'
                   f'<td>{fmt(e.get("mutual_knn"))} ({fmt(e.get("mutual_knn_chance"))})</td>'
                   f'<td>{fmt(e.get("svcca"))}{dims}</td><td>{fmt(e.get("items"))}</td></tr>')
    return '<div class="scroll"><table class="comparison">' + "".join(out) + "</table></div>"


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
