"""Sampler throughput vs model consumption; tiled inference overhead vs the bare forward.

    python benchmarks/bench_train_predict.py

1. Patches/s the store-backed sampler delivers through a DataLoader (2 workers) against
   patches/s a training step of a small F-net consumes on this CPU (goal: >= 5x).
2. voxels/s of `predict` over a plate (Dask, 1 worker, tiling, blending, zarr I/O) against
   the bare model forward over the same voxels in one process, both on one thread
   (goal: overhead <= 15 %).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import make_screen, timed  # noqa: E402


def main():
    from spotlight_scale.core.losses import get_loss
    from spotlight_scale.io.store import Store
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.models.io import save_model_file
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.pipelines.predict import predict
    from spotlight_scale.train.sampler import PatchDataset, make_loader

    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", 4, shape=(32, 192, 192))
    patch = (16, 32, 32)
    ingest(man, tmp / "store", IngestSettings(isotropic_um=None, patch=patch), workers=2,
           progress_stream=None)
    store = Store(tmp / "store")
    keys = store.fields()
    batch = 8
    ds = PatchDataset(store, keys, patch, mode="foreground", norm="spotlight", seed=0)
    n_it = 60
    loader = make_loader(ds, batch_size=batch, rank=0, world=1, start_iteration=0,
                         iterations=n_it, num_workers=2)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    sampler_rate = n_it * batch / (time.perf_counter() - t0)
    model = FNet(depth=3, channels=8)
    opt = torch.optim.Adam(model.parameters())
    loss_fn = get_loss("spotlight")
    x = torch.randn(batch, 1, *patch)

    def step():
        opt.zero_grad()
        loss_fn(model(x), x, x > 0).backward()
        opt.step()
    step()
    t_step, _ = timed(step, 10)
    model_rate = batch / t_step
    print(f"sampler: {sampler_rate:.0f} patches/s (DataLoader, 2 workers, reads from zarr)")
    print(f"model:   {model_rate:.1f} patches/s (F-net depth 3 / 8 ch, batch {batch}, {patch})")
    print(f"ratio sampler/model = {sampler_rate / model_rate:.1f}x (goal >= 5x)")

    # inference overhead
    run = tmp / "run"
    run.mkdir()
    torch.manual_seed(0)
    net = FNet(depth=3, channels=8).eval()
    save_model_file(run / "model.pt", net, normalization="spotlight",
                    target_range={"raw_min": 0, "raw_max": 1, "norm_min": 0, "norm_max": 1},
                    train_config={}, iteration=0, loss="spotlight")
    voxels = sum(int(np.prod(store.field_meta(k)["shape_zyx"])) for k in keys)
    from distributed import Client, LocalCluster

    from spotlight_scale.core.tiling import plan_tiles

    # one worker, one thread, started once (start-up is a per-command cost, not per voxel)
    lc = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None)
    client = Client(lc)
    # Dask workers run torch on one thread (distributed sets OMP_NUM_THREADS=1): same here
    torch.set_num_threads(1)
    vols = [torch.from_numpy(store.read(k, "signal").astype(np.float32))[None, None] for k in keys]

    def bare():
        with torch.no_grad():
            for v in vols:
                net(v)
    t_bare, _ = timed(bare, 3)
    shape = tuple(store.field_meta(keys[0])["shape_zyx"])
    # the predict defaults (sized for the full F-net on a GPU), then tiles fitted to the field
    for tile, overlap in (((32, 128, 128), (16, 32, 32)), ((40, 208, 208), (8, 32, 32))):
        def pipeline():
            predict(store.root, run, "bench", split="all", tile=tile, overlap=overlap,
                    cluster=lc.scheduler_address, overwrite=True, progress_stream=None)
        pipeline()
        t_pipe, _ = timed(pipeline, 3)
        _, t_eff, origins, _ = plan_tiles(shape, tile=tile, overlap=overlap, divisor=2 ** 3)
        tiled = int(np.prod(t_eff)) * int(np.prod([len(o) for o in origins])) * len(keys)
        print(f"predict --tile {tile} --overlap {overlap} on {len(keys)} fields of {shape}: "
              f"{voxels / t_pipe:.3g} voxel/s; bare forward (whole field, one pass): "
              f"{voxels / t_bare:.3g} voxel/s; overhead {100 * (t_pipe / t_bare - 1):.0f} % "
              f"(goal <= 15 %); the tiles cover {tiled / voxels:.2f}x the field voxels "
              f"(edge padding and overlap recomputed), so "
              f"{100 * (t_pipe / t_bare * voxels / tiled - 1):.0f} % per tiled voxel")
    client.close()
    lc.close()
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
