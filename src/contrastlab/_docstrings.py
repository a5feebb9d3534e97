r"""Google-style docstrings read for what they say about parameters: :func:`parse_args_section`, :func:`plain`.

Used by :mod:`contrastlab.catalog` (``contrastlab list``), which takes an entry's summary and the
description of each option from its factory's docstring.
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*")
_ITEM = re.compile(r"(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?:\([^)]*\))?\s*:(?:\s+(?P<text>.*))?")


def parse_args_section(doc: str) -> dict[str, str]:
    """The ``Args:`` section of a Google-style docstring: parameter name -> its description on one line.

    Continuation lines are joined, ``name (type):`` is understood, ``a, b: text`` describes both,
    ``**options`` is keyed ``options``, and reST markup (````x````, ``:func:`~a.b``) is dropped.

    Example:
        >>> parse_args_section('''Sum.
        ...
        ... Args:
        ...     x (int): The ``first``
        ...         number.
        ...     y, z: Others, see :func:`~pkg.mod.f`.
        ...
        ... Returns:
        ...     The sum.''')
        {'x': 'The first number.', 'y': 'Others, see f.', 'z': 'Others, see f.'}
    """
    lines = doc.expandtabs().splitlines()
    out: dict[str, str] = {}
    for start, line in enumerate(lines):
        if not _SECTION.fullmatch(line.strip()):
            continue
        header = _indent(line)
        item_indent = None
        names: list[str] = []
        for body in lines[start + 1:]:
            if not body.strip():
                continue
            indent = _indent(body)
            if indent <= header:
                break
            item = _ITEM.fullmatch(body.strip())
            if item and (item_indent is None or indent <= item_indent):
                item_indent = indent
                names = [n.strip().lstrip("*") for n in item["names"].split(",")]
                for n in names:
                    out[n] = item["text"] or ""
            else:
                for n in names:
                    out[n] = f"{out[n]} {body.strip()}".strip()
    return {name: plain(text) for name, text in out.items()}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def plain(text: str) -> str:
    """reST on one plain line: ``:role:`~a.b.C``` -> ``C``, ````x```` -> ``x``.

    Example:
        >>> plain("See :func:`~pkg.mod.f`   and ``x``.")
        'See f and x.'
    """
    text = re.sub(r":[\w:]+:`~([^`]+)`", lambda m: m[1].rsplit(".", 1)[-1], text)
    text = re.sub(r":[\w:]+:`([^`]+)`", r"\1", text)
    return " ".join(text.replace("``", "").split())
