"""The one place that knows clusters: ``local``, ``slurm``, ``cuda`` or an address.

Every distributed stage takes ``--cluster`` (and ``--cluster-config`` for a
profile YAML) and calls :func:`open_client`; no other module creates a Dask
cluster or client.

- ``local``: an embedded ``LocalCluster`` on 127.0.0.1 sized to the machine
  (``--workers N``, one thread per worker by default: our tasks are numpy/torch
  heavy and release the GIL poorly in places).
- ``slurm``: dask-jobqueue ``SLURMCluster`` from a profile (see deploy/).
- ``cuda``: dask-cuda ``LocalCUDACluster``, one worker per visible GPU.
- ``tcp://host:port`` (or any scheduler address): connect to a running cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

log = logging.getLogger(__name__)

CLUSTER_KINDS = ("local", "slurm", "cuda")

#: Environment of the worker processes we start (local, cuda, slurm). distributed's nanny
#: sets MALLOC_TRIM_THRESHOLD_=65536, which switches off glibc's dynamic mmap threshold:
#: every buffer over 128 KiB is then mmapped and page-faulted afresh, and an F-net forward
#: runs ~10 % slower in a worker than in a plain process (benchmarks/README.md, predict).
#: These are the values glibc's own dynamic thresholds settle at for large buffers.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


@contextlib.contextmanager
def worker_environ() -> Iterator[None]:
    """While workers spawn inside this block, give them :data:`WORKER_ENV`.

    The nanny takes the variables named in ``distributed.nanny.pre-spawn-environ``,
    preferring a value already in ``os.environ``; a nanny started earlier in this
    process leaves distributed's own values there. So both are set here, and the
    process environment is restored afterwards.
    """
    import dask

    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v
                              for k, v in WORKER_ENV.items()}):
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _DropComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


class _DropCancelled(logging.Filter):
    """A task the stage cancelled (``on_error="fail"`` stops the others) is not news:
    drop the worker's "Async instruction ... ended with CancelledError"."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("Async instruction")
                    and "CancelledError" in record.getMessage())


def _quiet_task_errors(client) -> None:
    from distributed import WorkerPlugin

    class QuietTaskErrors(WorkerPlugin):
        """Worker plugin: a failed task is reported once, by the stage, naming its field
        (:mod:`spotlight_scale.pipelines.fieldrun`), not also as the worker's "Compute
        Failed" log with a traceback on the user's terminal. Installed on the workers we
        start unless debug logging is on."""

        name = "spotlight-quiet-task-errors"

        def __init__(self, level: int | None = None):
            self.level = level

        def setup(self, worker) -> None:
            logging.getLogger("distributed.worker").addFilter(_DropComputeFailed())
            logging.getLogger("distributed.worker.state_machine").addFilter(_DropCancelled())
            if self.level is not None:
                logging.getLogger("distributed").setLevel(self.level)
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                # Ctrl-C reaches the whole process group: the command stops the workers
                # (and says so), not each worker with a KeyboardInterrupt traceback
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    if not logging.getLogger("spotlight_scale").isEnabledFor(logging.DEBUG):
        # on the workers not even Dask's errors: what fails there is a field's task, which
        # the stage reports naming the field (or a lost worker, which fails that task)
        level = _distributed_level()
        client.register_plugin(QuietTaskErrors(
            logging.CRITICAL if level == logging.ERROR else level))


def _distributed_level() -> int | None:
    """The level of Dask's own loggers: at default verbosity only its errors reach the user
    (not "Worker process still alive after 4.0 seconds, killing" when a stage stops its
    workers after a failure or an interruption); with -v its warnings too, with -vvv all."""
    ours = logging.getLogger("spotlight_scale")
    if ours.isEnabledFor(logging.DEBUG):
        return None
    return logging.WARNING if ours.isEnabledFor(logging.INFO) else logging.ERROR


def default_workers() -> int:
    """Workers for an embedded LocalCluster: one per core, at least one."""
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def open_client(cluster: str = "local", *, workers: int | None = None,
                threads_per_worker: int = 1, memory_limit: str | None = "auto",
                cluster_config: str | None = None) -> Iterator["distributed.Client"]:
    """Yield a ``distributed.Client`` for ``cluster``; close what we started on exit.

    Parameters
    ----------
    cluster : str
        ``local``, ``slurm``, ``cuda`` or a scheduler address.
    workers : int, optional
        Worker count (local, cuda: processes; slurm: jobs). Default: per kind.
    cluster_config : path, optional
        Cluster profile YAML (slurm, cuda); see ``deploy/cluster-profile.example.yaml``.
    """
    from distributed import Client

    if _distributed_level() is not None:
        # distributed configures its loggers at INFO on import; keep the console for progress
        logging.getLogger("distributed").setLevel(_distributed_level())
    if cluster == "local":
        from distributed import LocalCluster

        n = workers or default_workers()
        with worker_environ():  # dashboard ":0": None still binds 8787, warning when taken
            lc = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker,
                              host="127.0.0.1", dashboard_address=":0", processes=True,
                              memory_limit=memory_limit)
        client = Client(lc)
        try:
            log.info("local Dask cluster: %d workers x %d threads", n, threads_per_worker)
            _quiet_task_errors(client)
            yield client
        finally:
            # the work is done (or its error is on its way): a cluster slow to stop on a
            # loaded machine ("Worker process still alive after 4.0 seconds, killing",
            # TimeoutError) must not turn a finished stage into a failed one
            for part in (client, lc):
                try:
                    part.close()
                except Exception as exc:  # noqa: BLE001 - logged, the stage's outcome stands
                    log.debug("closing the local Dask cluster: %s: %s", type(exc).__name__, exc)
        return
    if cluster in ("slurm", "cuda"):
        from . import _cluster_backends

        with _cluster_backends.open_cluster(cluster, workers=workers,
                                            cluster_config=cluster_config) as cl, \
                Client(cl) as client:
            _quiet_task_errors(client)
            yield client
        return
    if "://" in cluster or ":" in cluster:
        with Client(cluster) as client:
            log.info("connected to Dask scheduler %s", cluster)
            yield client
        return
    raise ValueError(
        f"unknown --cluster {cluster!r}: expected local, slurm, cuda or a scheduler address "
        "such as tcp://host:8786"
    )
