"""Run directories: which folders are ours, who is using one, and replacing one without losing it.

* **Ownership.** Every run directory contrastlab creates holds a marker file, :data:`MARKER`, written
  before anything else. ``--overwrite`` only ever replaces a folder with that marker; a folder that merely
  holds a ``config.yaml`` (a project, a folder of recipes) is never deleted.
* **The lock.** A process that writes into a run (``train``, ``resume``, ``eval``, ``analyze``, ``report``)
  holds an exclusive ``flock`` on the directory itself (:func:`hold`). The kernel releases it when the
  process ends, however it ends, and nothing is written for it. A second process is refused in one line.
* **Replacement.** ``train --overwrite`` writes the new run beside the old one, in a hidden sibling
  ``.NAME.new-PID`` (:class:`Replacement`), and swaps the two only when the new run has written its first
  checkpoint: on Linux with one ``renameat2(RENAME_EXCHANGE)`` call, so that the path always names a whole
  run. Until then the old run is untouched; a new run that fails (a diverging loss, Ctrl-C, a full disk)
  removes its sibling and leaves the old run as it was. A sibling left by a killed process (SIGKILL, power
  cut) is removed by the next ``train`` of the same path once no process holds it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from contrastlab.errors import UserError
from contrastlab.files import atomic_write_text, fsync_dir

MARKER = ".contrastlab-run"
_STAGING, _RETIRED = ".new-", ".old-"
_HELD: dict[str, int] = {}  # run directory -> the thread holding it (a nested hold by that thread is a no-op)


def mark(run_dir: str | Path, *, kind: str = "run") -> Path:
    """Write the marker that makes ``run_dir`` a contrastlab run directory.

    Args:
        run_dir: an existing folder.
        kind: what the folder holds (``"run"``).

    Returns:
        The marker's path.
    """
    stamp = {"contrastlab": kind, "format": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return atomic_write_text(Path(run_dir) / MARKER, json.dumps(stamp) + "\n")


def is_marked(path: str | Path) -> bool:
    """Whether ``path`` is a folder contrastlab made for a run (it holds :data:`MARKER`).

    Example:
        >>> is_marked("/")
        False
    """
    return (Path(path) / MARKER).is_file()


def _flock(path: Path) -> int | None:
    """An exclusive, non-blocking lock on the folder ``path``: its file descriptor, or ``None`` when
    another process holds it (``-1`` on platforms without ``flock``: no locking)."""
    try:
        import fcntl
    except ImportError:  # no flock on this platform: run unguarded
        return -1
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        os.close(fd)


@contextmanager
def hold(run_dir: str | Path, *, create: bool = False, advice: str = "wait for it to finish") -> Iterator[None]:
    """Hold the exclusive lock on a run directory for the duration of a ``with`` block.

    Args:
        run_dir: the run directory.
        create: make the folder first when it does not exist (a new run); otherwise a missing folder
            is not locked (the command reading it says what is missing).
        advice: what to tell the user who meets a busy run.

    Raises:
        UserError: another process holds the lock.
    """
    run_dir = Path(run_dir)
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
    key, me = os.path.realpath(run_dir), threading.get_ident()
    if not run_dir.is_dir() or _HELD.get(key) == me:  # nothing to lock, or this thread holds it already (CLI, then train())
        yield
        return
    fd = _flock(run_dir)  # another thread's hold is another open file: it conflicts like another process's
    if fd is None:
        raise UserError(f"run directory {run_dir} is in use by another contrastlab process; {advice}")
    _HELD[key] = me
    try:
        yield
    finally:
        _HELD.pop(key, None)
        _release(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); ``False`` where the
    system or file system cannot, and the caller falls back to two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _siblings(target: Path) -> list[Path]:
    prefix = f".{target.name}"
    try:
        return [p for p in target.parent.iterdir()
                if p.name.startswith(prefix + _STAGING) or p.name.startswith(prefix + _RETIRED)]
    except OSError:
        return []


def sweep(target: str | Path) -> list[Path]:
    """Remove what killed replacements of ``target`` left beside it: marked hidden siblings no process holds.

    Returns:
        The folders removed.
    """
    removed = []
    for path in _siblings(Path(target)):
        if not (path.is_dir() and not path.is_symlink() and is_marked(path)):
            continue
        fd = _flock(path)
        if fd is None:  # a live replacement
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            _release(fd)
        removed.append(path)
    return removed


class Replacement:
    """A new run written beside an old one and swapped in once it has its first checkpoint.

    Args:
        target: the run directory to replace (it must hold :data:`MARKER`).

    Attributes:
        target: the path users name.
        staging: where the new run is written until :meth:`commit` (a hidden sibling of ``target``).

    Example:
        >>> import tempfile
        >>> old = Path(tempfile.mkdtemp()) / "run"; old.mkdir(); _ = mark(old); _ = (old / "x").write_text("old")
        >>> r = Replacement(old); _ = (r.begin() / "x").write_text("new")
        >>> (old / "x").read_text()
        'old'
        >>> r.commit(); (old / "x").read_text(), r.staging.exists()
        ('new', False)
        >>> r.close()
    """

    def __init__(self, target: str | Path) -> None:
        self.target = Path(target)
        self.staging = self.target.parent / f".{self.target.name}{_STAGING}{os.getpid()}"
        self.committed = False
        self._fd: int | None = None

    def begin(self) -> Path:
        """Create and lock the staging folder (with its marker); returns it."""
        sweep(self.target)
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir()
        self._fd = _flock(self.staging)
        mark(self.staging)
        return self.staging

    def commit(self) -> None:
        """Put the new run at ``target`` and delete the old one. Idempotent."""
        if self.committed:
            return
        # Ctrl-C and SIGTERM wait until the swap is done: between two renames the path would name nothing
        mask = getattr(signal, "pthread_sigmask", None)  # POSIX
        blocked = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if mask else None
        try:
            self._swap()
        finally:
            if mask:
                mask(signal.SIG_SETMASK, blocked)

    def _swap(self) -> None:
        if _exchange(self.staging, self.target):
            retired = self.staging  # the old run now lives at the staging path
        else:
            retired = self.target.parent / f".{self.target.name}{_RETIRED}{os.getpid()}"
            os.replace(self.target, retired)
            try:
                os.replace(self.staging, self.target)
            except BaseException:  # put the old run back: the path must never be left empty
                os.replace(retired, self.target)
                raise
        fsync_dir(self.target.parent)
        self.committed = True
        shutil.rmtree(retired, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staging folder of a new run that never reached its first checkpoint."""
        if not self.committed:
            shutil.rmtree(self.staging, ignore_errors=True)
        self.close()

    def close(self) -> None:
        """Release the lock on the new run (held since :meth:`begin`)."""
        _release(self._fd)
        self._fd = None


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds at least one checkpoint folder (``checkpoints/step-*``)."""
    folder = Path(run_dir) / "checkpoints"
    return folder.is_dir() and any(p.name.startswith("step-") and p.is_dir() for p in folder.iterdir())


def check_new_run_dir(run_dir: str | Path, *, overwrite: bool) -> bool:
    """Check that a new run may be written at ``run_dir``, before any work is done.

    An empty or missing folder is fine. A folder with files is only ever replaced with ``overwrite``,
    and only when contrastlab made it (it holds :data:`MARKER`): never a folder that merely holds a
    ``config.yaml``, the current folder, or a symbolic link.

    Returns:
        Whether an existing run will be replaced (:class:`Replacement`).

    Raises:
        UserError: naming the folder and what to do.
    """
    run_dir = Path(run_dir)
    if run_dir.is_symlink() and overwrite:
        raise UserError(f"--overwrite refuses to replace {run_dir}: it is a symbolic link; name the folder itself")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"output {run_dir} exists and is not a directory")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False
    marked = is_marked(run_dir)
    if not overwrite:
        if marked and not has_checkpoint(run_dir):
            raise UserError(f"output directory {run_dir} holds a run that stopped before its first checkpoint; "
                            "pass --overwrite to start it again")
        raise UserError(f"output directory {run_dir} already exists; pass --overwrite to replace it or use resume")
    if not marked:
        raise UserError(f"--overwrite refuses to replace {run_dir}: it is not a run directory contrastlab made "
                        f"(no {MARKER} marker); delete it yourself or choose another --out")
    here = Path.cwd().resolve()
    if run_dir.resolve() == here or run_dir.resolve() in here.parents:
        raise UserError(f"--overwrite refuses to replace {run_dir}: it is the current folder or holds it; "
                        "run the command from another folder")
    return True
