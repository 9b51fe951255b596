"""Errors every layer may raise for an *expected* condition, and their one-line wording.

The CLI prints these (and the other named errors of the package: ``StoreError``,
``VersionError``, ``LockError``, ``FieldError``, ``ModelFileError``, and the
``ValueError`` family for bad input) as one ``Error:`` line, no traceback
(:mod:`spotlight_scale.cli.errors`).
"""

from __future__ import annotations

import errno


class Interrupted(BaseException):
    """SIGTERM (or SIGINT) arrived: unwinds the command like Ctrl-C, so that every ``finally``
    (the store's lock, the Dask cluster) runs (:func:`spotlight_scale.cli.errors.interrupts`)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: signals received by this process's command (set by the CLI's handler)
RECEIVED: list[int] = []


def check_interrupted() -> None:
    """Raise :class:`Interrupted` again if a signal arrived: code that catches everything
    (Dask's cluster start) may have swallowed the first one; stages call this between
    fields."""
    if RECEIVED:
        raise Interrupted(RECEIVED[0])


class SetupError(RuntimeError):
    """The machine lacks what was asked for: a GPU, an optional package, a scheduler."""


def os_error_message(exc: OSError) -> str:
    """One line for a failed file operation, naming the file and what to do."""
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on the device (or the quota is exceeded): free some space and re-run"
    elif code == errno.EROFS:
        what = "the file system is read-only; choose a writable location"
    elif code in (errno.EACCES, errno.EPERM):
        what = "permission denied"
    else:
        what = exc.strerror or str(exc)
    return f"{where}: {what}" if where else f"{what} ({exc})"


def describe(exc: BaseException) -> str:
    """``"Type: message"`` for a failure inside a task, file errors worded as above."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{type(exc).__name__}: {os_error_message(exc)}"
    return f"{type(exc).__name__}: {exc}"
