"""Cluster kinds beyond ``local``: ``cuda`` (dask-cuda) and ``slurm`` (dask-jobqueue).

Only :mod:`spotlight_scale.cluster` calls this module. The ``slurm`` kind is
built from a profile YAML (``--cluster-config``) and is tested against a real
single-node SLURM (tests/test_slurm.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .errors import SetupError


@dataclass
class SlurmProfile:
    """Keys of a ``--cluster-config`` profile for ``--cluster slurm``."""

    queue: str | None = None
    account: str | None = None
    cores: int = 4
    processes: int = 1
    memory: str = "16GB"
    walltime: str = "01:00:00"
    gpus_per_job: int = 0
    jobs: int = 2
    adaptive_min: int = 0
    adaptive_max: int = 0
    job_script_prologue: tuple[str, ...] = ()
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None


@contextlib.contextmanager
def open_cluster(kind: str, *, workers: int | None = None, cluster_config=None):
    if kind == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise SetupError("--cluster cuda needs dask-cuda: pip install "
                               "'spotlight-scale[gpu-cu12]' (or gpu-cu13)") from None
        from .cluster import worker_environ

        try:
            with worker_environ():
                cluster = LocalCUDACluster(n_workers=workers, dashboard_address=None)
        except Exception as exc:  # NVMLError_LibraryNotFound etc. on machines without GPUs
            raise SetupError(f"--cluster cuda: no usable GPU on this machine "
                               f"({type(exc).__name__}: {exc})") from None
        with cluster:
            yield cluster
        return
    if kind == "slurm":
        from .config import config_from_mapping, load_yaml

        prof = config_from_mapping(SlurmProfile, load_yaml(cluster_config), str(cluster_config)) \
            if cluster_config else SlurmProfile()
        cluster = slurm_cluster(prof)
        with cluster:
            if prof.adaptive_max:
                cluster.adapt(minimum=prof.adaptive_min, maximum=prof.adaptive_max)
            else:
                cluster.scale(jobs=workers or prof.jobs)
            yield cluster
        return
    raise ValueError(f"unknown cluster kind {kind!r}")


def slurm_cluster(prof: SlurmProfile):
    """A dask-jobqueue ``SLURMCluster`` (no jobs yet) from a profile.

    The job script exports :data:`spotlight_scale.cluster.WORKER_ENV` before the
    profile's prologue (which may override them); the nanny passes the job's
    environment on to the worker it spawns.
    """
    from dask_jobqueue import SLURMCluster

    from .cluster import WORKER_ENV

    extra = [f"--gpus={prof.gpus_per_job}"] if prof.gpus_per_job else []
    env = [f"export {k}={v}" for k, v in WORKER_ENV.items()]
    return SLURMCluster(
        queue=prof.queue, account=prof.account, cores=prof.cores, processes=prof.processes,
        memory=prof.memory, walltime=prof.walltime, interface=prof.interface,
        local_directory=prof.local_directory, log_directory=prof.log_directory,
        job_script_prologue=env + list(prof.job_script_prologue), job_extra_directives=extra,
        python=prof.python)


__all__ = ["SlurmProfile", "open_cluster", "slurm_cluster"]
