"""`predict` over a plate against the bare model forward; worker memory against field size.

    python benchmarks/bench_predict.py [--quick] [--device cuda]
    python benchmarks/bench_predict.py --memory-only --memory-sizes 256,512,1024,2048

1. voxels/s of `spotlight-scale predict` (pipelines.predict: one Dask worker with one
   thread, reading the signal from the store, tiling, blending, rescaling, writing the
   prediction pyramid and markers) against the bare model forward over the same fields,
   each whole field in one pass, in one process on one torch thread (goal: overhead
   <= 15 %). Two plates: fields that fit the default tile, and fields that need tiling
   (there the overlap is computed twice, reported as the recomputation factor).
2. Peak resident memory of the predict worker for fields of 32xSxS, S in --memory-sizes
   (default 256 and 1024; goal: bounded by a few tiles, not by the field).

F-net depth 3 / 8 channels on the CPU (a CPU-sized model; the ratio, not the rate, is the
result); with ``--device cuda`` the paper's F-net (depth 4, 32 channels) on one GPU, bf16
autocast on both sides, the fields already on the GPU for the bare forward. The cluster is
started once per plate outside the timed region.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import local_cluster, make_screen, peak_rss_mb, reset_peak_rss, timed  # noqa: E402

TILE, OVERLAP = (64, 256, 256), (16, 32, 32)  # the CLI defaults


def _store(root: Path, n: int, shape, seed=0):
    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    man = make_screen(root / "raw", n, shape=shape, seed=seed)
    ingest(man, root / "store", IngestSettings(isotropic_um=None), workers=2,
           progress_stream=None)
    return Store(root / "store")


def _model_file(path: Path, device: str = "cpu", model: dict | None = None):
    """An untrained F-net saved as ``path/model.pt``; ``model``: FNet keywords (default:
    depth 3 / 8 channels on the CPU, the paper's depth 4 / 32 channels on a GPU)."""
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.models.io import save_model_file

    torch.manual_seed(0)
    if model is None:
        model = dict(depth=3, channels=8) if device == "cpu" else {}
    net = FNet(**model).eval()
    path.mkdir(parents=True, exist_ok=True)
    save_model_file(path / "model.pt", net, normalization="spotlight",
                    target_range={"raw_min": 0, "raw_max": 1, "norm_min": 0, "norm_max": 1},
                    train_config={}, iteration=0, loss="spotlight")
    return net.to(device)


def throughput(tmp: Path, label: str, n: int, shape, repeats: int, device: str = "cpu", *,
               store=None, model: dict | None = None, tile=TILE, overlap=OVERLAP) -> dict:
    """Predict vs bare forward (see the module docstring); prints one line and returns the
    figures. ``store``: an ingested store to use instead of building ``n`` fields of ``shape``;
    ``model``: FNet keywords (see :func:`_model_file`)."""
    from spotlight_scale.pipelines.predict import predict

    if store is None:
        store = _store(tmp / label, n, shape)
    net = _model_file(tmp / label / "run", device, model)
    keys = store.fields()
    torch.set_num_threads(1)  # Dask workers run torch on one thread (OMP_NUM_THREADS=1)
    vols = [torch.from_numpy(store.read(k, "signal").astype(np.float32))[None, None].to(device)
            for k in keys]
    voxels = sum(v.numel() for v in vols)
    cuda = device == "cuda"

    def bare():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            for v in vols:
                net(v)
        if cuda:
            torch.cuda.synchronize()

    lc, client = local_cluster(1)
    out = {}

    def pipeline():
        out.update(predict(store.root, tmp / label / "run", "bench", split="all", tile=tile,
                           overlap=overlap, cluster=lc.scheduler_address, overwrite=True,
                           device=device, progress_stream=None))

    try:
        pipeline()  # warm: the worker loads the model once and keeps it
        bare()
        t_pipe, t_bare = [], []
        for _ in range(repeats):  # interleaved, so drift on a noisy machine hits both
            t_bare.append(timed(bare, 1)[0])
            t_pipe.append(timed(pipeline, 1)[0])
        worker_gpu = (max(client.run(torch.cuda.max_memory_allocated).values()) / 2**20
                      if cuda else None)
    finally:
        client.close()
        lc.close()
    tb, tp = float(np.median(t_bare)), float(np.median(t_pipe))
    recompute = out["computed_voxels"] / out["voxels"]
    print(f"[{label}] {device}: {len(keys)} fields, --tile {tuple(tile)} "
          f"--overlap {tuple(overlap)}: predict {voxels / tp:.3g} voxel/s, bare forward {voxels / tb:.3g} voxel/s "
          f"(medians of {repeats}); overhead {100 * (tp / tb - 1):.1f} % (goal <= 15 %); "
          f"tiles compute {recompute:.3f}x the field voxels, so "
          f"{100 * (tp / tb / recompute - 1):.1f} % per computed voxel")
    return {"fields": len(keys), "voxels": voxels, "voxels_s_predict": voxels / tp,
            "voxels_s_bare": voxels / tb, "overhead_pct": 100 * (tp / tb - 1),
            "recompute": recompute, "repeats": repeats, "worker_peak_gpu_mb": worker_gpu}


def _worker_peak(tmp: Path, label: str, shape, device: str = "cpu"):
    from spotlight_scale.pipelines.predict import predict

    store = _store(tmp / label, 1, shape, seed=1)
    _model_file(tmp / label / "run", device)
    lc, client = local_cluster(1)
    try:
        client.run(reset_peak_rss)
        before = list(client.run(peak_rss_mb).values())[0]
        predict(store.root, tmp / label / "run", "bench", split="all", tile=TILE,
                overlap=OVERLAP, cluster=lc.scheduler_address, device=device,
                progress_stream=None)
        after = list(client.run(peak_rss_mb).values())[0]
    finally:
        client.close()
        lc.close()
    field_mb = np.prod(shape) * 4 / 2**20
    print(f"[memory] field {tuple(shape)} ({field_mb:.0f} MB as float32): predict worker peak "
          f"RSS {after:.0f} MB (the worker at rest before it: {before:.0f} MB)")
    return after


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller fields")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--memory-sizes", default="256,1024",
                    help="y = x sizes of the fields for the memory part (z is 32)")
    ap.add_argument("--memory-only", action="store_true", help="skip the throughput part")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    dev = args.device
    try:
        repeats = 1 if args.quick else 3
        if not args.memory_only:
            throughput(tmp, "fits-one-tile", 4 if args.quick else 6, (32, 256, 256), repeats,
                       dev)
            throughput(tmp, "tiled", 2, (32, 448, 448) if args.quick else (32, 640, 640),
                       repeats, dev)
        sizes = [int(v) for v in args.memory_sizes.split(",")]
        peaks = [_worker_peak(tmp, f"mem-{n}", (32, n, n), dev) for n in sizes]
        print(f"[memory] {(sizes[-1] / sizes[0]) ** 2:.0f}x the field voxels -> "
              f"{peaks[-1] / peaks[0]:.2f}x the worker peak")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
