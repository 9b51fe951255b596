"""Ingest throughput against a naive loop and the codec bound; statistics pass vs threshold_otsu.

    python benchmarks/bench_ingest.py [--fields 8] [--repeats 3]

(a) spotlight-scale ingest, 2 local workers, --no-resample (MB/s of raw signal+target input)
(b) naive: one process, tifffile.imread + ome_zarr.writer.write_image per field
(c) codec bound: the same arrays written straight through zarr with the same compressor
Wall ratios and CPU-time ratios (CPU seconds per MB of each; on a machine shared with
other sessions Linux's autogroup scheduler gives this whole session one share of the
CPUs, so wall times there cannot show what two workers add).
(d) statistics pass per field (Otsu + stats + patch index, chunked) vs one
    skimage threshold_otsu over the in-memory target; peak RSS of a worker for two screen sizes.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import (local_cluster, make_screen, peak_rss_mb, raw_bytes,  # noqa: E402
                     reset_peak_rss, timed)


def naive(manifest: Path, out: Path):
    import tifffile
    import zarr
    from ome_zarr.writer import write_image

    rows = list(csv.DictReader(open(manifest)))
    for i, r in enumerate(rows):
        s = tifffile.imread(manifest.parent / r["path_signal"])
        t = tifffile.imread(manifest.parent / r["path_target"])
        g = zarr.open_group(str(out / f"f{i}.zarr"), mode="w")
        write_image(np.stack([s, t]), g, axes="czyx", scale_factors=[{"z": 2, "y": 2, "x": 2}],
                    storage_options={"chunks": (1, 32, 128, 128)})


def codec_bound(manifest: Path, out: Path):
    import tifffile
    import zarr

    rows = list(csv.DictReader(open(manifest)))
    arrays = [np.stack([tifffile.imread(manifest.parent / r["path_signal"]),
                        tifffile.imread(manifest.parent / r["path_target"])]) for r in rows]

    def write():
        for i, a in enumerate(arrays):
            z = zarr.create_array(str(out / f"c{i}.zarr"), shape=a.shape, dtype=a.dtype,
                                  chunks=(1, 32, 128, 128), overwrite=True)
            z[:] = a
    return write


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fields", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", args.fields)
    mb = raw_bytes(man) / 1e6
    settings = IngestSettings(isotropic_um=None, patch=(32, 64, 64))

    import time

    t0 = time.perf_counter()
    lc, client = local_cluster(2)  # as `--cluster local --workers 2` starts it
    t_start = time.perf_counter() - t0

    def run_ingest():
        ingest(man, tmp / "store", settings, cluster=lc.scheduler_address, progress_stream=None)

    def measure(fn, out, workers=False):
        """(wall s, CPU s) of ``fn()`` into a fresh ``out`` (deleting the last run's output is
        not timed). CPU: this process (all its threads; with a LocalCluster also the
        scheduler) plus, with ``workers``, every worker process."""
        shutil.rmtree(tmp / out, ignore_errors=True)
        w0 = sum(client.run(time.process_time).values()) if workers else 0.0
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall, c = time.perf_counter() - t0, time.process_time() - c0
        return wall, c + (sum(client.run(time.process_time).values()) - w0 if workers else 0.0)

    def run_naive():
        naive(man, tmp / "naive")
    codec = codec_bound(man, tmp / "codec")
    run_ingest()  # warm caches and worker imports once
    # the three side by side in each round, so that a slower or faster spell of this shared
    # machine meets all of them: the ratios are taken per round, then their median
    rounds = []
    for _ in range(args.repeats):
        rounds.append({"ingest": measure(run_ingest, "store", workers=True),
                       "naive": measure(run_naive, "naive"),
                       "codec": measure(codec, "codec")})
    client.close()
    lc.close()

    def med(f):
        return statistics.median(f(r) for r in rounds)

    def spread(f):
        vals = [f(r) for r in rounds]
        return f"{min(vals):.2f}-{max(vals):.2f}"

    def rate(name):
        return mb / med(lambda r: r[name][0])

    def ratio(name):  # wall ratio of one round: ingest's speed over ``name``'s
        return lambda r: r[name][0] / r["ingest"][0]

    def cpu_ratio(name):
        return lambda r: r[name][1] / r["ingest"][1]

    def cpu_ms(name):
        return med(lambda r: r[name][1]) / mb * 1e3
    print(f"raw input {mb:.1f} MB in {args.fields} fields, {args.repeats} rounds (medians)")
    print(f"ingest (2 workers, stats + patch index + pyramid + labels): {rate('ingest'):.1f} MB/s"
          f" (a LocalCluster start costs {t_start:.1f} s once per command on top)")
    print(f"naive loop (imread + write_image):                        {rate('naive'):.1f} MB/s")
    print(f"codec bound (zarr writes of the same arrays, level 0):     {rate('codec'):.1f} MB/s")
    print(f"ratio ingest/naive = {med(ratio('naive')):.2f}x (rounds {spread(ratio('naive'))}), "
          f"ingest/codec = {med(ratio('codec')):.2f}x (rounds {spread(ratio('codec'))}) "
          f"(wall; load average {os.getloadavg()[0]:.1f})")
    print(f"CPU seconds per MB: ingest {cpu_ms('ingest'):.1f} ms (workers + client), naive "
          f"{cpu_ms('naive'):.1f} ms, codec bound {cpu_ms('codec'):.1f} ms; with 2 cores "
          f"used by each: ingest/naive = {med(cpu_ratio('naive')):.2f}x, ingest/codec = "
          f"{med(cpu_ratio('codec')):.2f}x")

    # statistics pass vs threshold_otsu
    from skimage.filters import threshold_otsu

    from spotlight_scale.core.patches import foreground_patch_origins
    from spotlight_scale.core.stats import channel_statistics
    from spotlight_scale.io.tiff import read_volume

    row = next(csv.DictReader(open(man)))
    tgt, _ = read_volume(man.parent / row["path_target"])
    sig, _ = read_volume(man.parent / row["path_signal"])

    def stats_target():
        st = channel_statistics(tgt, block_shape=(32, 128, 128))
        foreground_patch_origins(tgt >= st["otsu"], (32, 64, 64), (8, 16, 16))

    def stats_field():  # what ingest computes per field: both channels + the index
        channel_statistics(sig, block_shape=(32, 128, 128))
        stats_target()
    t_stats, _ = timed(stats_target, 7)
    t_otsu, _ = timed(lambda: threshold_otsu(tgt), 7)
    t_field, _ = timed(stats_field, 7)
    t_otsu2, _ = timed(lambda: (threshold_otsu(sig), threshold_otsu(tgt)), 7)
    print(f"statistics pass on {tgt.shape} {tgt.dtype}: target stats + patch index "
          f"{t_stats * 1e3:.1f} ms vs threshold_otsu {t_otsu * 1e3:.1f} ms: speed ratio "
          f"{t_otsu / t_stats:.2f}; per field (signal + target + index) {t_field * 1e3:.1f} ms "
          f"vs threshold_otsu on both {t_otsu2 * 1e3:.1f} ms: {t_otsu2 / t_field:.2f} (goal >= 0.8)")
    shutil.rmtree(tmp)


def peak_memory(fields: int) -> float:
    """Peak RSS (MB) of ingest's worker processes for a screen of ``fields`` fields."""
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", fields)
    lc, c = local_cluster(2)
    with lc, c:
        c.run(reset_peak_rss)
        ingest(man, tmp / "store", IngestSettings(isotropic_um=None), cluster=lc.scheduler_address,
               progress_stream=None)
        peaks = c.run(peak_rss_mb)
    shutil.rmtree(tmp)
    return max(peaks.values())


if __name__ == "__main__":
    main()
    for n in (4, 16):
        print(f"peak worker RSS with {n} fields: {peak_memory(n):.0f} MB")
