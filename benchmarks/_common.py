"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats=3):
    """Median wall time of ``fn()`` over ``repeats`` runs (and the last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def make_screen(root: Path, n: int, shape=(32, 256, 256), seed=0) -> Path:
    """A synthetic screen at isotropic 0.29 um (so ingest needs no resampling)."""
    from spotlight_scale.pipelines.synth import synth_screen

    return synth_screen(root, plate="B", wells=max(1, n // 2), fields=min(n, 2), shape=shape,
                        voxel_size=(0.29, 0.29, 0.29), seed=seed)


def raw_bytes(manifest: Path) -> int:
    import csv

    rows = list(csv.DictReader(open(manifest)))
    return sum((manifest.parent / r[c]).stat().st_size for r in rows
               for c in ("path_signal", "path_target"))
