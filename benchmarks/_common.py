"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def timed(fn, repeats=3):
    """Median wall time of ``fn()`` over ``repeats`` runs (and the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def make_screen(root: Path, n: int, shape=(32, 256, 256), seed=0) -> Path:
    """A synthetic screen at isotropic 0.29 um (so ingest needs no resampling), drawn with
    the ``v1`` preset: the screens of the figures in README.md (issue 21 changed the default)."""
    from spotlight_scale.core.synth import PRESETS
    from spotlight_scale.pipelines.synth import synth_screen

    return synth_screen(root, plate="B", wells=max(1, n // 2), fields=min(n, 2), shape=shape,
                        voxel_size=(0.29, 0.29, 0.29), seed=seed, params=PRESETS["v1"])


def raw_bytes(manifest: Path) -> int:
    import csv

    rows = list(csv.DictReader(open(manifest)))
    return sum((manifest.parent / r[c]).stat().st_size for r in rows
               for c in ("path_signal", "path_target"))


def local_cluster(workers: int = 1):
    """A LocalCluster (one thread per worker) with the worker environment that
    ``--cluster local`` gives (:func:`spotlight_scale.cluster.worker_environ`), and its client."""
    from distributed import Client, LocalCluster

    from spotlight_scale.cluster import worker_environ

    with worker_environ():
        lc = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None)
    return lc, Client(lc)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``; Linux >= 4.0). ``ru_maxrss`` cannot be
    reset, and a spawned Dask worker inherits its parent's across ``execve``: run this in
    the workers (``client.run``) before the work to measure."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_rss_mb() -> float:
    """Peak RSS (MB) of this process since start or the last :func:`reset_peak_rss`."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
