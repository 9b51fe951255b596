"""Profiling throughput vs a plain regionprops loop; cost of each feature group;
segmentation seconds per field.

    python benchmarks/bench_profile_segment.py

1. nuclei/s of `profile` (default groups: sizeshape, intensity, shape3d) with 1 and 2 Dask
   workers against an in-memory loop of skimage.measure.regionprops_table (with solidity)
   + marching cubes per nucleus over the same fields (goals: >= 1x with 1 worker, >= 1.7x
   with 2).
2. seconds per nucleus of each feature group alone (core.features.nucleus_features, in
   memory, one process, the same fields), and of the default set.
3. watershed segmentation seconds per field (CPU; cucim on a GPU when present).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import local_cluster, make_screen, peak_rss_mb, reset_peak_rss, timed  # noqa: E402


def peak_memory(fields: int) -> float:
    """Peak RSS (MB) of a profile worker for a screen of ``fields`` fields."""

    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.pipelines.profile import profile

    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", fields, shape=(32, 256, 256), seed=1)
    ingest(man, tmp / "store", IngestSettings(isotropic_um=None), workers=2, progress_stream=None)
    lc, c = local_cluster(1)
    with lc, c:
        c.run(reset_peak_rss)
        profile(tmp / "store", labels="gt", out=tmp / "p", cluster=lc.scheduler_address,
                progress_stream=None)
        peak = max(c.run(peak_rss_mb).values())
    shutil.rmtree(tmp)
    return peak


def main():
    from skimage.measure import marching_cubes, mesh_surface_area, regionprops_table

    from spotlight_scale.core.segment import watershed_nuclei
    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.pipelines.profile import profile

    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", 8, shape=(32, 256, 256))
    ingest(man, tmp / "store", IngestSettings(isotropic_um=None), workers=2, progress_stream=None)
    store = Store(tmp / "store")
    keys = store.fields()
    fields = [(store.read_named(k, "labels:gt"), store.read(k, "target")) for k in keys]
    n_nuclei = sum(len(np.unique(lab)) - 1 for lab, _ in fields)

    def baseline():
        for lab, img in fields:
            props = regionprops_table(lab.astype(np.int32), img, spacing=(0.29,) * 3,
                                      properties=("label", "area", "bbox", "centroid",
                                                  "intensity_mean", "image", "solidity"))
            for obj in props["image"]:
                v, f, _, _ = marching_cubes(np.pad(obj.astype(np.float32), 1), 0.5,
                                            spacing=(0.29,) * 3)
                mesh_surface_area(v, f)
    t_base, _ = timed(baseline, 3)

    from spotlight_scale.core.features import DEFAULT_GROUPS, FEATURE_GROUPS, nucleus_features

    def groups_alone(groups):
        for lab, img in fields:
            nucleus_features(lab, img, (0.29,) * 3, groups=groups, intensity_scale=65535.0)

    per_group = {}
    for name, groups in [*[(g, (g,)) for g in FEATURE_GROUPS],
                         ("default (" + "+".join(DEFAULT_GROUPS) + ")", DEFAULT_GROUPS)]:
        groups_alone(groups)  # warm: imports, column names
        per_group[name] = timed(lambda: groups_alone(groups), 3)[0] / n_nuclei

    rates, peaks = {}, {}
    for w in (1, 2):
        # the cluster is started once per worker count: start-up is a per-command cost
        lc, c = local_cluster(w)
        with lc, c:
            c.run(reset_peak_rss)
            t, _ = timed(lambda: profile(store.root, labels="gt", out=tmp / f"p{w}",
                                         cluster=lc.scheduler_address, overwrite=True,
                                         progress_stream=None), 3)
            peaks[w] = max(c.run(peak_rss_mb).values())
        rates[w] = n_nuclei / t
    base = n_nuclei / t_base
    print(f"{n_nuclei} nuclei in {len(keys)} fields")
    print(f"baseline loop: {base:.1f} nuclei/s; profile 1 worker: {rates[1]:.1f} ({rates[1] / base:.2f}x);"
          f" 2 workers: {rates[2]:.1f} ({rates[2] / base:.2f}x)")
    print(f"baseline loop: {1e3 / base:.2f} ms per nucleus")
    for name, sec in per_group.items():
        print(f"feature group {name}: {1e3 * sec:.2f} ms per nucleus ({sec * base:.2f}x the baseline"
              " loop's time)")
    times = []
    for key, (_, img) in zip(keys, fields):
        t0 = time.perf_counter()
        watershed_nuclei(img, voxel_size=store.voxel_size(key))
        times.append(time.perf_counter() - t0)
    print(f"peak worker RSS: {peaks[1]:.0f} MB (1 worker), {peaks[2]:.0f} MB (2 workers)")
    print(f"watershed: median {np.median(times):.2f} s per field of {fields[0][1].shape} (CPU)")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
    for n in (4, 16):
        print(f"peak profile worker RSS with {n} fields: {peak_memory(n):.0f} MB")
