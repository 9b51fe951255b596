"""The one place that turns an expected failure into an ``Error:`` line (no traceback).

Every command runs inside :func:`user_errors`: the package's named errors and
bad-input ``ValueError``\\ s print their message, file errors (read-only output,
full disk, missing directory) name the file and what to do. Anything else is a
bug and keeps its traceback. With ``-vv`` the traceback of a mapped error is
logged too.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from typing import Iterator

import click

log = logging.getLogger("spotlight_scale.cli")


def expected_errors() -> tuple[type[BaseException], ...]:
    from ..errors import SetupError
    from ..io.lock import LockError
    from ..io.store import StoreError
    from ..models.io import ModelFileError
    from ..pipelines.fieldrun import FieldError
    from ..versioning import VersionError

    # ValueError covers ManifestError, ConfigError, TiffError and bad settings
    return (StoreError, VersionError, LockError, FieldError, ModelFileError, SetupError,
            ValueError)


def user_message(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, ``None`` for anything else."""
    from ..errors import os_error_message

    if isinstance(exc, OSError):
        return os_error_message(exc)
    if isinstance(exc, expected_errors()):
        return str(exc)
    return None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Re-raise expected failures as :class:`click.ClickException` (``Error: ...``, exit 1)."""
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise
    except Exception as exc:
        msg = user_message(exc)
        if msg is None:
            raise
        log.debug("traceback of the error below", exc_info=True)
        raise click.ClickException(msg) from None


KEPT = ("what was done is kept (a field is marked done only once it is complete; the field "
        "that was being written is redone) and the lock is released; re-run the same command "
        "to resume")
#: what an interruption keeps, for commands where :data:`KEPT` is not the story
KEPT_BY = {
    "train": "the last checkpoint (RUN_DIR/checkpoints/latest.pt) is kept; continue with the "
             "same command and --resume auto",
    "synth": "the files written so far are kept; re-run the same command",
}


@contextlib.contextmanager
def interrupts(ctx: click.Context | None = None) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into one ``Error:`` line saying what was kept, and exit
    128 + the signal number (143, 130) after the command's cleanup has run (the stores'
    locks are released by that cleanup). ``ctx``: the group's context, which names the
    command that ran."""
    import threading

    from ..errors import RECEIVED, Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        RECEIVED.append(signum)
        for s in (signal.SIGTERM, signal.SIGINT):  # one interruption: let the cleanup run
            signal.signal(s, signal.SIG_IGN)
        if not logging.getLogger("spotlight_scale").isEnabledFor(logging.DEBUG):
            # stopping the workers now makes Dask log errors (nannies, lost comms) that
            # say nothing the interruption does not
            logging.getLogger("distributed").setLevel(logging.CRITICAL + 1)
        raise Interrupted(signum)

    def report(signum: int):
        kept = KEPT_BY.get(getattr(ctx, "invoked_subcommand", None) or "", KEPT)
        click.echo(f"Error: interrupted ({signal.Signals(signum).name}): {kept}", err=True)
        sys.exit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    RECEIVED.clear()
    try:
        yield
        if RECEIVED:  # swallowed on the way (and the command went on to the end)
            report(RECEIVED[0])
    except (Interrupted, KeyboardInterrupt) as exc:
        report(exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT))
    finally:
        RECEIVED.clear()
        for s, h in old.items():
            signal.signal(s, h)
