"""Running one task per field: every stage waits, names failures and skips the same way.

A stage hands its fields to :func:`run_fields`, which opens the cluster, submits
one Dask task per field and collects them (:func:`collect`), advancing the
progress bar as fields finish and, when one fails,

- ``on_error="fail"``: cancels the rest and raises :class:`FieldError` naming the
  field (and its file or chunk, through the task's own message); fields already
  done keep their markers, so a re-run resumes;
- ``on_error="skip"``: records the failure and goes on; the stage then writes
  the failures with :func:`write_failures` (table ``field_failures``) and exits
  with the fields that did succeed marked done.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping

log = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")


class FieldError(RuntimeError):
    """A stage failed on one field; the message names it (done fields are kept)."""


def check_on_error(on_error: str) -> str:
    """``on_error`` itself if it is ``"fail"`` or ``"skip"``, else ``ValueError``."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    return on_error


def collect(futures: Mapping[Any, Hashable], *, stage: str, on_error: str, progress,
            describe: Callable[[Any], str] = str,
            record: Callable[[Any, BaseException], dict] | None = None,
            error: type[Exception] = FieldError,
            on_result: Callable[[Any, Any], str | None] | None = None,
            nbytes: str | None = None) -> tuple[list[tuple[Any, Any]], list[dict]]:
    """Wait for per-field ``futures`` (``{future: item}``) as they complete.

    Parameters
    ----------
    stage : str
        Stage name for messages (``"predict 'fnet'"``).
    on_error : {"fail", "skip"}
    progress : Progress
        Advanced by one per finished field (failed ones included); closed at the end.
    describe : callable
        ``item -> str`` naming the field in messages (default ``str``).
    record : callable, optional
        ``(item, exc) -> dict``: the failures-table row (default: plate/well/field/error).
    error : exception class
        Raised in ``fail`` mode (a :class:`FieldError` subclass).
    on_result : callable, optional
        ``(item, result) -> str``: text shown beside the progress (running totals).
    nbytes : str, optional
        Result key of the bytes a field processed (the progress shows MB/s).

    Returns
    -------
    results, failures
        ``[(item, result), ...]`` of the fields that succeeded, and failure rows.
    """
    from distributed import as_completed

    from ..errors import describe as describe_exc

    check_on_error(on_error)
    results, failures = [], []
    try:
        from ..errors import check_interrupted

        for fut in as_completed(list(futures)):
            check_interrupted()
            item = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:
                msg = describe_exc(exc)
                if on_error == "fail":
                    for other in futures:
                        other.cancel()
                    raise error(f"{stage} failed on field {describe(item)}: {msg}; fields "
                                "already done are kept (re-run to resume, or --on-error skip "
                                "to go on past failing fields)") from exc
                log.warning("%s: field %s failed: %s", stage, describe(item), msg)
                failures.append(record(item, exc) if record else
                                {**_key_columns(item), "error": f"{describe(item)}: {msg}"})
                progress.update(1)
                continue
            results.append((item, res))
            progress.update(1, nbytes=int(res[nbytes]) if nbytes else 0,
                            extra=(on_result(item, res) or "") if on_result else "")
    finally:
        progress.close()
    return results, failures


def run_fields(items, submit: Callable[[Any, Any], Any], *, stage: str, desc: str,
               on_error: str, cluster: str = "local", workers: int | None = None,
               cluster_config=None, progress_stream=None, total: tuple[str, str] | None = None,
               on_failure: tuple[Callable[[], Any], str] | None = None,
               **collect_kw) -> tuple[list[tuple[Any, Any]], list[dict]]:
    """Open the cluster, ``submit(client, item)`` each item, and :func:`collect` the results.

    Parameters
    ----------
    items : sequence
        The fields (keys, manifest rows) to run.
    submit : callable
        ``(client, item) -> future``.
    stage, on_error, **collect_kw
        As for :func:`collect`.
    desc, progress_stream
        Progress bar label and stream.
    cluster, workers, cluster_config
        Where to run (:func:`spotlight_scale.cluster.open_client`).
    total : (result key, noun), optional
        Show the running sum of ``result[key]`` beside the progress ("1234 nuclei").
    on_failure : (action, what), optional
        Run ``action`` (an index rewrite) before a failure propagates
        (:func:`after_failure`).
    """
    from ..cluster import open_client
    from ..progress import Progress

    progress = Progress(len(items), "fields", desc=desc, stream=progress_stream)
    if total is not None and "on_result" not in collect_kw:
        key, noun = total
        running = {"sum": 0}

        def on_result(item, res):
            running["sum"] += res[key]
            return f"{running['sum']} {noun}"

        collect_kw["on_result"] = on_result
    from ..errors import check_interrupted

    with open_client(cluster, workers=workers, cluster_config=cluster_config) as client:
        check_interrupted()  # a signal during the cluster's start may have been swallowed
        futures = {submit(client, item): item for item in items}
        try:
            return collect(futures, stage=stage, on_error=on_error, progress=progress,
                           **collect_kw)
        except BaseException as exc:
            from ..errors import Interrupted

            if isinstance(exc, (Interrupted, KeyboardInterrupt)):
                client.cancel(list(futures))  # the workers take no further field
            if on_failure is not None:
                after_failure(*on_failure)
            raise


def after_failure(action: Callable[[], Any], what: str) -> None:
    """Run ``action`` (an index rewrite) while a stage's error propagates; if it fails too
    (a full disk fails both), log that, and let the stage's error (naming the field) be
    the one reported."""
    from ..errors import describe

    try:
        action()
    except Exception as exc:
        log.warning("%s failed as well: %s", what, describe(exc))


def _key_columns(item) -> dict:
    return {"plate": item.plate, "well": item.well, "field": int(item.field)}


def write_failures(path: str | Path, failures: list[dict], stage: str,
                   name: str | None = None) -> None:
    """Write the failures of a ``skip`` run to ``path`` (table ``field_failures``); a run
    without failures removes an older table (its fields have since been done)."""
    import pandas as pd

    from ..io.tables import write_table

    path = Path(path)
    if not failures:
        path.unlink(missing_ok=True)
        return
    df = pd.DataFrame(failures)
    df.insert(0, "name", name or "")
    df.insert(0, "stage", stage)
    write_table(df, path, "field_failures")
    log.warning("%s: %d field(s) failed; see %s", stage, len(failures), path)
