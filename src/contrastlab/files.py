"""Writing files so that a crash never leaves half of one: every file contrastlab writes goes here.

A reader (or the next run, after a power cut) sees either the old file or the whole new one, never
a truncated mix: the bytes go to ``<name>.tmp`` beside the target, are flushed and ``fsync``-ed,
and the temporary file is renamed over the target, which POSIX makes atomic.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (a rename is durable only once its directory is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    r"""Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OSError: when the file cannot be written (a full disk, a missing folder); ``<name>.tmp`` is removed
            first, and ``path`` is left as it was.

    Example:
        >>> import tempfile, os
        >>> atomic_write_bytes(os.path.join(tempfile.mkdtemp(), "a.bin"), b"\x00\x01").stat().st_size
        2
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: leave no half-written file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
