"""The one error type users see.

A :class:`UserError` is a mistake in what the user asked for (a bad option, a missing file, a
malformed config). The command line prints its message on one line and exits with status 2, with
no traceback. Library code raises ``ValueError`` for bad arguments; the command line treats those
the same way.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


def one_line(message: object) -> str:
    """Fold a message onto one line (errors from deep inside libraries can span several)."""
    text = " ".join(str(message).split())
    return text if text else "unknown error"
