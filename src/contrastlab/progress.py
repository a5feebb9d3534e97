"""Progress bars for work over items (packing, checking, feature extraction, speech synthesis): one rule for
all of them. A bar shows on stderr when it is a terminal, and never when the caller switches it off or the
environment sets ``CONTRASTLAB_NO_PROGRESS`` (as ``--no-progress`` and the recipe runner do)."""

from __future__ import annotations

import os
import sys


def progress_off() -> bool:
    """True when ``CONTRASTLAB_NO_PROGRESS`` is set."""
    return bool(os.environ.get("CONTRASTLAB_NO_PROGRESS"))


def item_bar(total: int | None, desc: str, *, enabled: bool = True, unit: str = "item"):
    """A tqdm bar over ``total`` items on stderr (on a terminal only; none when ``enabled`` is false or under
    ``CONTRASTLAB_NO_PROGRESS``).

    Example:
        >>> with item_bar(3, "demo", enabled=False) as bar:
        ...     bar.update(3)
    """
    from tqdm.auto import tqdm

    off = True if not enabled or progress_off() else None  # None: tqdm shows it only on a terminal
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, mininterval=0.5, file=sys.stderr, disable=off)
