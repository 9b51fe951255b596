"""Cluster kinds beyond ``local``: ``cuda`` (dask-cuda) and ``slurm`` (dask-jobqueue).

Only :mod:`spotlight_scale.cluster` (and the job-script renderer) calls this
module. The ``slurm`` kind is built from a profile YAML (``--cluster-config``):
four keys of ours (``jobs``, ``adaptive_min``, ``adaptive_max``,
``gpus_per_job``) and any keyword of dask-jobqueue's ``SLURMCluster``
(``queue``, ``account``, ``cores``, ``memory``, ``walltime``,
``job_extra_directives`` for ``--qos``/``--constraint``/``--gres``/``--exclusive``,
``job_script_prologue``, ``worker_extra_args``, ...), passed through unchanged.
Where neither the profile nor the site's dask configuration
(``~/.config/dask/jobqueue.yaml``, key ``jobqueue.slurm.*``) sets ``cores``,
``processes``, ``memory`` or ``walltime``, ours apply (:data:`DEFAULTS`). Tested against a real
single-node SLURM (tests/test_slurm.py).

GPU jobs (``gpus_per_job: N``) run ``python -m dask_cuda.cli``, which starts one
worker per GPU the job sees, each pinned to its own device; the job's cores and
memory are split among them.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field, fields
from typing import Any

#: our values for SLURMCluster keywords the profile and the site's dask config leave unset
#: (one worker process per job: a field's inference needs the job's memory, ~5 GB for
#: 64x256x256 at full F-net size)
DEFAULTS = {"cores": 4, "processes": 1, "memory": "16GB", "walltime": "01:00:00"}
#: the worker command of GPU jobs: one dask-cuda worker per visible GPU
CUDA_WORKER = "dask_cuda.cli"
#: job directives that already request GPUs (then ``gpus_per_job`` adds none)
_GPU_DIRECTIVES = ("--gpus", "--gres=gpu", "--gres gpu", "-G", "--gpus-per-node",
                   "--gpus-per-task")
#: SLURMCluster / Job parameters that are not profile keys (internal, or deprecated aliases)
_NOT_PROFILE_KEYS = {"self", "scheduler", "name", "loop", "asynchronous", "job_cls", "n_workers",
                     "config_name", "base_class_kwargs", "job_kwargs", "extra", "env_extra",
                     "job_extra", "header_skip", "project"}

from .errors import SetupError


@dataclass
class SlurmProfile:
    """A ``--cluster-config`` profile for ``--cluster slurm`` (see the module docstring)."""

    jobs: int = 2  # fixed number of worker jobs (unless adaptive_max > 0)
    adaptive_min: int = 0
    adaptive_max: int = 0  # > 0: scale adaptively between adaptive_min and adaptive_max jobs
    gpus_per_job: int = 0  # > 0: one dask-cuda worker per GPU in each job
    cluster: dict = field(default_factory=dict)  # dask-jobqueue SLURMCluster keywords


def slurm_keywords() -> set[str]:
    """Every keyword dask-jobqueue's ``SLURMCluster`` accepts (its cluster and job classes)."""
    from dask_jobqueue.core import Job, JobQueueCluster
    from dask_jobqueue.slurm import SLURMCluster, SLURMJob

    names: set[str] = set()
    for fn in (SLURMCluster.__init__, JobQueueCluster.__init__, SLURMJob.__init__, Job.__init__):
        names |= {p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names - _NOT_PROFILE_KEYS


def load_slurm_profile(data: dict[str, Any] | None, source: str = "profile") -> SlurmProfile:
    """A :class:`SlurmProfile` from a mapping; a key that is neither ours nor a SLURMCluster
    keyword is an error naming it and ``source``."""
    from .config import ConfigError, config_from_mapping

    data = dict(data or {})
    ours = {f.name for f in fields(SlurmProfile)} - {"cluster"}
    known = slurm_keywords()
    unknown = sorted(k for k in data if k not in ours and k not in known)
    if unknown:
        hint = " (SLURM's partition is 'queue')" if "partition" in unknown else ""
        raise ConfigError(
            f"{source}: unknown cluster profile key(s) {', '.join(map(repr, unknown))}{hint}; "
            f"known keys: {', '.join(sorted(ours))}, and the dask-jobqueue SLURMCluster "
            f"keywords {', '.join(sorted(known))}")
    prof = config_from_mapping(SlurmProfile, {k: v for k, v in data.items() if k in ours}, source)
    prof.cluster = {k: v for k, v in data.items() if k not in ours}
    for key in ("jobs", "adaptive_min", "adaptive_max", "gpus_per_job"):
        if getattr(prof, key) < 0:
            raise ConfigError(f"{source}: key '{key}' must be >= 0, got {getattr(prof, key)}")
    return prof


def _site_value(key: str):
    """``jobqueue.slurm.<key>`` from the site's dask config when it differs from
    dask-jobqueue's packaged default, else ``None``."""
    import dask
    import dask_jobqueue  # noqa: F401 (registers the packaged defaults)

    name = f"jobqueue.slurm.{key.replace('_', '-')}"
    value = dask.config.get(name, None)
    packaged = dask.config.get(name, None, config=dask.config.merge(*dask.config.defaults))
    return None if value == packaged else value


def slurm_cluster_kwargs(prof: SlurmProfile) -> dict[str, Any]:
    """The ``SLURMCluster`` keywords of ``prof``: the profile's, our defaults where neither the
    profile nor the site's config sets a key, the worker environment, and GPU workers."""
    from .cluster import WORKER_ENV

    kw = dict(prof.cluster)
    for key, value in DEFAULTS.items():
        if key not in kw and _site_value(key) is None:
            kw[key] = value
    # job_script_prologue / job_extra_directives given here replace the site's: extend those
    prologue = kw.get("job_script_prologue", _site_value("job_script_prologue")) or []
    kw["job_script_prologue"] = [f"export {k}={v}" for k, v in WORKER_ENV.items()] + \
        list(prologue)
    directives = list(kw.get("job_extra_directives", _site_value("job_extra_directives")) or [])
    if prof.gpus_per_job:
        if not any(d.strip().startswith(_GPU_DIRECTIVES) for d in directives):
            directives.append(f"--gpus={prof.gpus_per_job}")
        kw.setdefault("worker_command", CUDA_WORKER)
        if kw["worker_command"] == CUDA_WORKER:
            # dask-jobqueue splits cores and memory over `processes` workers per job and
            # expects that many: dask-cuda starts one per GPU
            kw["processes"] = prof.gpus_per_job
    kw["job_extra_directives"] = directives
    return kw


def slurm_cluster(prof: SlurmProfile):
    """A dask-jobqueue ``SLURMCluster`` (no jobs yet) from a profile.

    The job script exports :data:`spotlight_scale.cluster.WORKER_ENV` before the
    profile's prologue (which may override them); the nanny passes the job's
    environment on to the worker it spawns.
    """
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(**slurm_cluster_kwargs(prof))


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
        from .config import load_yaml

        prof = load_slurm_profile(load_yaml(cluster_config), str(cluster_config)) \
            if cluster_config else SlurmProfile()
        cluster = slurm_cluster(prof)
        with cluster:
            if prof.adaptive_max:
                cluster.adapt(minimum_jobs=prof.adaptive_min, maximum_jobs=prof.adaptive_max)
            else:
                cluster.scale(jobs=workers or prof.jobs)
            yield cluster
        return
    raise ValueError(f"unknown cluster kind {kind!r}")


__all__ = ["DEFAULTS", "SlurmProfile", "load_slurm_profile", "open_cluster", "slurm_cluster",
           "slurm_cluster_kwargs", "slurm_keywords"]
