"""Points of a scatter that fall on one another, drawn once with every run's name."""

from __future__ import annotations

from collections.abc import Mapping


def merge_coincident(points: Mapping[str, tuple], *, within: float = 0.05) -> dict[str, tuple]:
    r"""Runs whose (alignment, uniformity) lie within ``within`` of each other, as one labelled point.

    Collapsed encoders all sit at (0, 0); drawn separately their names would be written over each other.

    Args:
        points: run -> (alignment, uniformity, accuracy or None).
        within: the largest difference in both coordinates that still counts as the same point.

    Returns:
        label -> (mean alignment, mean uniformity, mean accuracy or None); a merged label names its runs one
        per line (``"a +\nb"``), so that it stays narrow.

    Example:
        >>> merge_coincident({"a": (0.0, -0.001, 0.4), "b": (0.5, -3.5, 0.7), "c": (0.001, -0.004, 0.5)})
        {'a +\nc': (0.0005, -0.0025, 0.45), 'b': (0.5, -3.5, 0.7)}
    """
    groups: list[list[str]] = []
    for name, (a, u, _) in points.items():
        home = next((g for g in groups if abs(points[g[0]][0] - a) <= within and abs(points[g[0]][1] - u) <= within),
                    None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {" +\n".join(g): tuple(mean(points[n][i] for n in g) for i in range(3)) for g in groups}
