"""The one error type users see, and how other errors are told to them in one line.

A :class:`UserError` is a mistake in what the user asked for (a bad option, a missing file, a
malformed config). The command line prints its message on one line and exits with status 2, with
no traceback. Library code raises ``ValueError`` for bad arguments; the command line treats those
the same way, and an ``OSError`` (a file that cannot be read or written) too, through
:func:`os_error_message`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


def one_line(message: object) -> str:
    """Fold a message onto one line (errors from deep inside libraries can span several).

    Example:
        >>> one_line("size mismatch:\\n\\tweight (8, 16)")
        'size mismatch: weight (8, 16)'
    """
    text = " ".join(str(message).split())
    return text if text else "unknown error"


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing path among ``path`` and its parents, when it is not a folder."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def os_error_message(err: OSError) -> str:
    """An operating-system error as one line that names the path(s) and the reason.

    Args:
        err: the error, e.g. the ``NotADirectoryError`` of creating ``file.txt/run``.

    Returns:
        ``"cannot use 'PATH': REASON"`` (``'A' -> 'B'`` for errors with two paths, such as a rename;
        the file in the way when a folder cannot be made because a file holds its name);
        the message itself for an error raised with a message of its own.

    Example:
        >>> os_error_message(PermissionError(13, "Permission denied", "/root/run"))
        "cannot use '/root/run': Permission denied"
        >>> os_error_message(FileNotFoundError("config file not found: a.yaml"))
        'config file not found: a.yaml'
    """
    if err.strerror is None:  # raised with a message of its own, e.g. FileNotFoundError("config file not found: x")
        return one_line(err)
    paths = [str(p) for p in (err.filename, err.filename2) if p is not None]
    if not paths:
        return one_line(err.strerror)
    if err.errno in (errno.ENOTDIR, errno.EEXIST):  # e.g. creating a folder where a file is
        blocker = _file_in_the_way(Path(paths[0]))
        if blocker is not None:
            return one_line(f"cannot use {paths[0]!r}: {str(blocker)!r} is a file, not a folder")
    return one_line(f"cannot use {' -> '.join(repr(p) for p in paths)}: {err.strerror}")


def check_can_create(path: str | os.PathLike, what: str) -> None:
    """Refuse, before any work is done, a path that cannot be created: a file in the way of a folder
    on its path, or a parent folder that is not writable.

    Args:
        path: the file or folder to be created (it may exist already).
        what: what it is, for the message (``"output directory"``).

    Raises:
        UserError: naming the path and the obstacle.

    Example:
        >>> import tempfile
        >>> check_can_create(Path(tempfile.mkdtemp()) / "runs" / "a", "output directory")
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise UserError(f"cannot create {what} {path}: {existing} is a file, not a folder")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {what} {path}: {folder} is not writable")


def did_you_mean(name: str, known) -> str:
    """The hint after an unknown name: the closest known one, else the list of known names.

    Example:
        >>> did_you_mean("nt_xnet", ["nt_xent", "clip"]), did_you_mean("zzz", ["b", "a"])
        ("; did you mean 'nt_xent'?", '; known: a, b')
    """
    import difflib

    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(map(str, known)))}"


def check_flags(factory, options: dict, what: str) -> None:
    """Refuse a non-boolean value for an option ``factory`` declares ``bool``.

    YAML gives ``batch_norm: maybe`` as the string ``"maybe"``, which Python would treat as true without
    a word; every registry checks its options with this before building.

    Raises:
        ValueError: naming ``what``, the option and the value.

    Example:
        >>> def f(*, normalize: bool = True): ...
        >>> check_flags(f, {"normalize": "maybe"}, "objective 'x'")
        Traceback (most recent call last):
        ValueError: objective 'x': option 'normalize' must be true or false, got 'maybe'
    """
    import inspect
    import typing

    try:
        hints = typing.get_type_hints(factory.__init__ if inspect.isclass(factory) else factory)
    except Exception:  # noqa: BLE001 - hints that do not resolve: nothing to check
        return
    for key, value in options.items():
        if hints.get(key) is bool and not isinstance(value, bool):
            raise ValueError(f"{what}: option {key!r} must be true or false, got {value!r}")
