"""Profiling throughput vs a plain regionprops loop; cost of each feature group;
segmentation seconds per field.

    python benchmarks/bench_profile_segment.py --rate-only --repeats 3   # issue 24's ratio
    python benchmarks/bench_profile_segment.py                           # everything

1. Issue 24's protocol, in one run: a screen of 12 synthetic fields of 24x256x256 raw
   voxels (0.87 x 0.29 x 0.29 um; `ingest` resamples them to isotropic 0.29 um), `segment`
   of the target (labels ``seg``); then, interleaved, ``--repeats`` rounds of
   (a) the plain loop: in memory, one process, over every field: ``regionprops_table``
       with area, bbox, centroid, axis lengths, solidity, extent, intensity mean/max/min,
       plus a marching-cubes surface per nucleus;
   (b) ``spotlight-scale profile --workers 2`` (the command, default features) over every
       field, and over the test split only: its *marginal* rate is
       (nuclei of all - nuclei of test) / (time of all - time of test), so the command's
       start-up (imports, cluster) cancels.
   Printed: median nuclei/s of each, and the ratio profile / plain loop (goal >= 1.5x);
   also CPU seconds per nucleus of each (process time of the loop; rusage of the command
   and its workers, marginal as above) and ``workers`` x their ratio: the wall ratio where
   each worker has a core. On a machine shared with other sessions Linux's autogroup
   scheduler gives one session (this script, the command and its workers together) one
   share of the CPUs, so there the wall ratio cannot show the second worker.
2. seconds per nucleus of each feature group alone (core.features.nucleus_features, in
   memory, one process, the same fields), and of the default set; `profile` through the
   pipeline function with 1 and 2 workers (cluster started outside the timed region).
3. watershed segmentation seconds per field (CPU; cucim on a GPU when present).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
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


def plain_loop(fields) -> None:
    """The issue's baseline: regionprops_table + a marching-cubes surface per nucleus."""
    from skimage.measure import marching_cubes, mesh_surface_area, regionprops_table

    for lab, img, spacing in fields:
        props = regionprops_table(
            lab.astype(np.int32), img, spacing=spacing,
            properties=("label", "area", "bbox", "centroid", "axis_major_length",
                        "axis_minor_length", "solidity", "extent", "intensity_mean",
                        "intensity_max", "intensity_min", "image"))
        for obj in props["image"]:
            v, f, _, _ = marching_cubes(np.pad(obj.astype(np.float32), 1), 0.5, spacing=spacing)
            mesh_surface_area(v, f)


def rate_vs_plain_loop(repeats: int, workers: int = 2, fields: int = 12,
                       shape=(24, 256, 256), store_path: str | None = None,
                       preset: str | None = None) -> dict:
    """Issue 24's measurement (module docstring, 1): medians over ``repeats`` interleaved
    rounds; returns the figures it prints. ``store_path``: an existing store with labels
    ``seg`` to use instead of building the screen (its profiles go to a temporary folder);
    ``preset``: the simulator's parameter set (``v1``: the screen issue 24 was measured on,
    before the calibration of issue 21; default: today's calibrated simulator)."""
    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.pipelines.segment import segment
    from spotlight_scale.core.synth import PRESETS, SynthParams
    from spotlight_scale.pipelines.synth import synth_screen

    tmp = Path(tempfile.mkdtemp())
    try:
        if store_path is None:
            man = synth_screen(tmp / "raw", plate="B", wells=max(1, fields // 2),
                               fields=min(fields, 2), shape=shape, seed=0,
                               params=PRESETS[preset] if preset else SynthParams())
            ingest(man, tmp / "store", IngestSettings(), workers=2, progress_stream=None)
            segment(tmp / "store", image="target", name="seg", workers=2, progress_stream=None)
        store = Store(store_path or tmp / "store")
        keys, test = store.fields(), store.fields("test")
        data = [(store.read_named(k, "labels:seg"), store.read(k, "target"), store.voxel_size(k))
                for k in keys]
        count = {k: len(np.unique(lab)) - 1 for k, (lab, _, _) in zip(keys, data)}
        n_all, n_test = sum(count.values()), sum(count[k] for k in test)
        print(f"screen: {len(keys)} fields of {data[0][0].shape} (raw {shape}), {n_all} nuclei; "
              f"test split: {len(test)} fields, {n_test} nuclei", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}

        def children_cpu() -> float:
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            return ru.ru_utime + ru.ru_stime

        def cli(split: str) -> tuple[float, float]:
            """Wall and CPU seconds (the command, its scheduler and workers) of one run."""
            cmd = [sys.executable, "-m", "spotlight_scale", "profile", str(store.root),
                   "--labels", "seg", "--out", str(tmp / f"prof-{split}"), "--split", split,
                   "--workers", str(workers), "--overwrite", "-q"]
            c0, t0 = children_cpu(), time.perf_counter()
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            return time.perf_counter() - t0, children_cpu() - c0

        plain_loop(data[:1])  # warm: imports
        rounds = []
        for r in range(repeats):
            load = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            plain_loop(data)
            t_base, c_base = time.perf_counter() - t0, time.process_time() - c0
            (t_all, c_all), (t_test, c_test) = cli("all"), cli("test")
            marginal = (n_all - n_test) / (t_all - t_test)
            # CPU cost per nucleus: the plain loop's, and profile's marginal one (workers,
            # scheduler and command together); with a core per worker, `workers` x the
            # nuclei per CPU-second is the rate the command reaches
            cpu_ratio = workers * (n_all - n_test) / (c_all - c_test) / (n_all / c_base)
            rounds.append({"base": n_all / t_base, "profile": marginal,
                           "ratio": marginal / (n_all / t_base), "load": load,
                           "t_all": t_all, "t_test": t_test,
                           "ms_base": 1e3 * c_base / n_all,
                           "ms_profile": 1e3 * (c_all - c_test) / (n_all - n_test),
                           "cpu_ratio": cpu_ratio})
            print(f"round {r + 1}: plain loop {n_all / t_base:.1f} nuclei/s ({t_base:.1f} s, "
                  f"{rounds[-1]['ms_base']:.1f} CPU ms/nucleus); profile --workers {workers}: "
                  f"all {t_all:.1f} s, test {t_test:.1f} s, marginal {marginal:.1f} nuclei/s "
                  f"({rounds[-1]['ms_profile']:.1f} CPU ms/nucleus); wall ratio "
                  f"{rounds[-1]['ratio']:.2f}x, CPU ratio x{workers} {cpu_ratio:.2f}x "
                  f"(load {load:.1f})", flush=True)
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"median of {repeats}: plain loop {med['base']:.1f} nuclei/s, profile --workers "
              f"{workers} marginal {med['profile']:.1f} nuclei/s, wall ratio {med['ratio']:.2f}x "
              f"(goal >= 1.5x); CPU per nucleus: plain loop {med['ms_base']:.1f} ms, profile "
              f"{med['ms_profile']:.1f} ms (marginal), {workers} workers with a core each: "
              f"{med['cpu_ratio']:.2f}x; load average {min(r['load'] for r in rounds):.1f}-"
              f"{max(r['load'] for r in rounds):.1f}")
        return med
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate-only", action="store_true",
                    help="only issue 24's profile vs plain loop ratio (1.)")
    ap.add_argument("--store", help="reuse a store with labels 'seg' for 1. (else built)")
    ap.add_argument("--preset", help="simulator preset of the built screen (v1: issue 24's "
                    "screen; default: the calibrated simulator)")
    args = ap.parse_args()
    rate_vs_plain_loop(args.repeats, args.workers, store_path=args.store, preset=args.preset)
    if args.rate_only:
        sys.exit(0)
    main()
    for n in (4, 16):
        print(f"peak profile worker RSS with {n} fields: {peak_memory(n):.0f} MB")
