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
