"""Refusing a data set that cannot fit in memory before anything is allocated.

A generated data set holds per-item arrays whose size the options decide (``n_items`` of Shapes with
spoken captions, ``n_samples`` x ``input_dim`` of FactorCL's synthetic data, ...). Allocating them
first and failing later means a ``MemoryError`` deep inside numpy or, worse, the kernel's OOM killer
ending the process with no message. :func:`check_fits_in_memory` compares an up-front estimate with the
memory the system can give (:func:`available_memory`) and raises one line naming the option as the
config file spells it (``data.options.n_items``).
"""

from __future__ import annotations

import os
from pathlib import Path

from contrastlab.errors import UserError

#: How the config file names a data set's options: ``data.options.<name>``.
OPTIONS_KEY = "data.options"

GIB = 2**30


def _meminfo_available(path: str = "/proc/meminfo") -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (``None`` where there is no such file or line)."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available(root: str = "/sys/fs/cgroup") -> int | None:
    """What a cgroup v2 memory limit leaves (``memory.max - memory.current``); ``None`` without a limit."""
    try:
        limit = Path(root, "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path(root, "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smaller of the kernel's ``MemAvailable`` and what a
    container's memory limit leaves; ``None`` where neither can be read (the check is then skipped).

    Example:
        >>> n = available_memory()
        >>> n is None or n >= 0
        True
    """
    found = [n for n in (_meminfo_available(), _cgroup_available()) if n is not None]
    return min(found) if found else None


def check_fits_in_memory(key: str, nbytes: int, *, value: object, items: int | None = None,
                         available: int | None = None) -> None:
    """Refuse, before allocating, a data set whose estimated size exceeds the memory available.

    Args:
        key: The option as the user wrote it, e.g. ``"data.options.n_items"`` (see :data:`OPTIONS_KEY`).
        nbytes: The estimate: items x bytes per item (the arrays the data set will hold).
        value: The option's value, quoted in the message.
        items: The number of items the estimate counts, quoted in the message (``None``: not quoted).
        available: Bytes available; by default :func:`available_memory` (no check when unknown).

    Raises:
        contrastlab.errors.UserError: ``"KEY: VALUE would need X GiB for N items; at most Y GiB is available"``.

    Example:
        >>> check_fits_in_memory("data.options.n_items", 2 * GIB, value=10, items=10, available=4 * GIB)
        >>> check_fits_in_memory("data.options.n_items", 8 * GIB, value=10, items=10, available=4 * GIB)
        Traceback (most recent call last):
        ...
        contrastlab.errors.UserError: data.options.n_items: 10 would need 8.0 GiB for 10 items; at most 4.0 GiB is available
    """
    free = available_memory() if available is None else available
    if free is None or nbytes <= free:
        return
    count = f" for {items} items" if items is not None else ""
    raise UserError(f"{key}: {value} would need {nbytes / GIB:.1f} GiB{count}; at most {free / GIB:.1f} GiB "
                    f"is available")


def option_key(name: str) -> str:
    """``"data.options.<name>"``: how messages name a data set's option ``name``."""
    return f"{OPTIONS_KEY}.{name}"


def training_memory(device: str = "cpu") -> int | None:
    """Bytes free where a run's weights, gradients and batches will live.

    Args:
        device: the config's ``device`` (``"auto"``, ``"cuda"`` or ``"cpu"``).

    Returns:
        On CUDA, the free memory of this process's GPU; else this process's share of the host's available
        memory (divided by ``LOCAL_WORLD_SIZE``: torchrun's processes on one machine share it); ``None`` when
        unknown.
    """
    import torch  # here: the data sets use this module without torch

    if device in ("cuda", "auto") and torch.cuda.is_available():
        try:  # this process's own GPU (torchrun's LOCAL_RANK), not the current device, which is still GPU 0
            index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        except ValueError:
            index = 0
        return int(torch.cuda.mem_get_info(index)[0])
    return host_share()


def host_share() -> int | None:
    """This process's share of the host's available memory: :func:`available_memory` divided by
    ``LOCAL_WORLD_SIZE`` (torchrun's processes on one machine share it); ``None`` when unknown."""
    free = available_memory()
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return None if free is None else free // local
