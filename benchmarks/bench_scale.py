"""The scale run: a screen several times a worker's memory, end to end, at two sizes.

    nice -n 10 python benchmarks/bench_scale.py --sizes-gb 3,6 --worker-memory 1.5GiB
    python benchmarks/bench_scale.py --sizes-gb 0.05,0.1        # smoke run

For each screen size: a screen whose raw TIFFs (signal + target + mask) total that many
GB (16 distinct synthetic fields of 32x256x256 at 0.29 um, copied to every field), then
ingest -> predict (a small F-net: depth 2, 4 channels, untrained, so prediction costs what
a small model costs) -> segment (watershed of the target) ->
profile (default feature groups) on one LocalCluster of ``--workers`` workers, each
limited to ``--worker-memory`` (distributed's memory_limit: a worker over 95 % is
restarted, so a stage that needed more would fail rather than pass unnoticed). Per
stage: wall time, fields/s, raw MB/s and the peak RSS of the workers (``VmHWM``, reset in
each worker before the stage), and CPU seconds (user + system, workers and client): on a
shared machine wall time follows the load of others, CPU time much less. Cost should grow
linearly with the screen (equal CPU seconds per field at both sizes) and worker memory
stay flat (equal peaks), since every task holds one field.

Writes ``--out`` (JSON) and prints a Markdown table. Screens and stores are removed
after each size (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import peak_rss_mb, reset_peak_rss  # noqa: E402

FIELDS_PER_WELL = 4
FIELDS_PER_PLATE = 240  # 60 wells (B02..G11) x 4 fields


def _distinct(args) -> Path:
    from spotlight_scale.pipelines.synth import synth_screen

    root, plate, n, shape, seed = args
    return synth_screen(root / plate, plate=plate, wells=max(1, n // FIELDS_PER_WELL),
                        fields=min(n, FIELDS_PER_WELL), shape=shape,
                        voxel_size=(0.29, 0.29, 0.29), seed=seed, test_fraction=0,
                        val_fraction=0)


def make_screen(root: Path, n_fields: int, shape, distinct: int = 16,
                procs: int = 2) -> tuple[Path, int]:
    """A screen of ``n_fields`` fields: ``distinct`` synthetic fields (in ``procs``
    processes) copied round-robin to every plate/well/field, so the setup costs a copy per
    field, not a simulation. Returns the manifest and the raw bytes of every TIFF."""
    from spotlight_scale.pipelines.synth import well_names

    per = -(-distinct // procs)
    jobs = [(root / "distinct", f"D{i}", per, shape, i) for i in range(procs)]
    with ProcessPoolExecutor(procs) as pool:
        manifests = list(pool.map(_distinct, jobs))
    sources = [(m.parent, r) for m in manifests for r in csv.DictReader(open(m))]
    wells = well_names(FIELDS_PER_PLATE // FIELDS_PER_WELL)
    rows = []
    for i in range(n_fields):
        folder, src = sources[i % len(sources)]
        row = {}
        for c in ("path_signal", "path_target", "path_mask"):
            dst = root / f"f{i:05d}_{c[5:]}.tif"
            shutil.copyfile(folder / src[c], dst)
            row[c] = dst.name
        j = i % FIELDS_PER_PLATE
        row.update(plate=f"S{i // FIELDS_PER_PLATE:03d}", well=wells[j // FIELDS_PER_WELL],
                   field=j % FIELDS_PER_WELL, split="train")
        rows.append(row)
    shutil.rmtree(root / "distinct")
    out = root / "manifest.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    nbytes = sum((root / r[c]).stat().st_size for r in rows
                 for c in ("path_signal", "path_target", "path_mask"))
    return out, nbytes


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (run in each worker too)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_size(work: Path, gb: float, shape, workers: int, memory: str, tile) -> dict:
    import numpy as np
    import torch
    from distributed import Client, LocalCluster

    from spotlight_scale.cluster import worker_environ
    from spotlight_scale.core.normalize import target_range
    from spotlight_scale.io.store import Store
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.models.io import save_model_file
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.pipelines.predict import predict
    from spotlight_scale.pipelines.profile import profile
    from spotlight_scale.pipelines.segment import segment

    per_field = 3 * 2 * int(np.prod(shape))  # signal, target, mask: uint16
    n = max(2, round(gb * 1e9 / per_field))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    man, raw = make_screen(work / "raw", n, shape)
    synth_s = time.perf_counter() - t0
    out = {"gb": gb, "fields": n, "raw_bytes": raw, "field_shape": list(shape),
           "workers": workers, "worker_memory": memory, "synth_s": synth_s, "stages": {}}
    with worker_environ():
        lc = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory,
                          host="127.0.0.1", dashboard_address=None)
    with lc, Client(lc) as client:
        addr = lc.scheduler_address
        store = work / "store"

        def stage(name, fn):
            client.run(reset_peak_rss)
            load0 = os.getloadavg()[0]
            cpu0 = sum(client.run(cpu_seconds).values()) + cpu_seconds()
            t = time.perf_counter()
            res = fn()
            wall = time.perf_counter() - t
            cpu = sum(client.run(cpu_seconds).values()) + cpu_seconds() - cpu0
            peaks = client.run(peak_rss_mb)
            alive = len(client.scheduler_info()["workers"])
            out["stages"][name] = {
                "wall_s": wall, "fields_per_s": n / wall, "raw_mb_per_s": raw / 1e6 / wall,
                "cpu_s": cpu, "cpu_s_per_field": cpu / n,
                "peak_worker_mb": max(peaks.values()), "workers_alive": alive,
                "load_1min_before_after": [load0, os.getloadavg()[0]],
                "result": {k: v for k, v in res.items() if isinstance(v, (int, float, str))}}
            print(f"  {name}: {wall:.1f} s, {n / wall:.3f} fields/s, {cpu / n:.2f} CPU s/field, "
                  f"peak worker "
                  f"{max(peaks.values()):.0f} MB, load {load0:.1f} -> {os.getloadavg()[0]:.1f}",
                  flush=True)

        stage("ingest", lambda: ingest(man, store, IngestSettings(isotropic_um=None),
                                       cluster=addr, progress_stream=None))
        st = Store(store)
        torch.manual_seed(0)
        rng = target_range([st.stats(k, "target") for k in st.fields("train")], "spotlight")
        model = save_model_file(work / "model.pt", FNet(depth=2, channels=4),
                                normalization="spotlight", target_range=rng, train_config={},
                                iteration=0, loss="spotlight")
        stage("predict", lambda: predict(store, model, "small", split="all", tile=tile,
                                         cluster=addr, progress_stream=None))
        stage("segment", lambda: segment(store, image="target", name="seg", cluster=addr,
                                         progress_stream=None))
        stage("profile", lambda: profile(store, labels="seg", image="target",
                                         out=work / "profiles", cluster=addr,
                                         progress_stream=None))
    out["store_bytes"] = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes-gb", default="3,6", help="Raw screen sizes (GB), comma-separated.")
    ap.add_argument("--field-shape", default="32,256,256")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-memory", default="1.5GiB")
    ap.add_argument("--tile", default="32,256,256", help="predict --tile")
    ap.add_argument("--workdir", default="bench-scale-work")
    ap.add_argument("--out", default="bench-scale.json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.field_shape.split(","))
    tile = tuple(int(s) for s in args.tile.split(","))
    results = []
    for gb in (float(s) for s in args.sizes_gb.split(",")):
        work = Path(args.workdir) / f"{gb:g}GB"
        print(f"screen of {gb:g} GB:", flush=True)
        try:
            results.append(run_size(work, gb, shape, args.workers, args.worker_memory, tile))
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        Path(args.out).write_text(json.dumps(results, indent=2))
    print("\n| screen (raw GB) | fields | stage | wall s | fields/s | raw MB/s | CPU s/field "
          "| peak worker MB | machine load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for name, s in r["stages"].items():
            print(f"| {r['raw_bytes'] / 1e9:.2f} | {r['fields']} | {name} | {s['wall_s']:.0f} | "
                  f"{s['fields_per_s']:.3f} | {s['raw_mb_per_s']:.1f} | "
                  f"{s['cpu_s_per_field']:.2f} | {s['peak_worker_mb']:.0f} | "
                  f"{' -> '.join(f'{v:.1f}' for v in s['load_1min_before_after'])} |")
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(f"\nratios {b['gb']:g} GB / {a['gb']:g} GB (screen x{b['raw_bytes'] / a['raw_bytes']:.2f}):")
        for name in a["stages"]:
            sa, sb = a["stages"][name], b["stages"][name]
            print(f"  {name}: wall x{sb['wall_s'] / sa['wall_s']:.2f}, CPU "
                  f"x{sb['cpu_s'] / sa['cpu_s']:.2f}, CPU per field "
                  f"x{sb['cpu_s_per_field'] / sa['cpu_s_per_field']:.2f}, peak memory "
                  f"x{sb['peak_worker_mb'] / sa['peak_worker_mb']:.2f}")


if __name__ == "__main__":
    main()
