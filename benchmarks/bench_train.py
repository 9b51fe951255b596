"""Training data path: the cached training set vs the store-backed sampler, and model consumption.

    python benchmarks/bench_train.py [--repeats 3] [--device cpu|cuda] [--threads 2] [--protocol]

1. Patches/s of 32x64x64 (the paper's patch, batch 24, foreground sampling, Spotlight
   normalisation) from the cached set (fields in device memory, crops there) against the
   store-backed sampler (zarr reads in 2 DataLoader workers), on the same store in one run;
   goal for the cached path: >= 1,300 patches/s (what a GPU at ~55 it/s of batch 24 consumes).
2. Patches/s one training step of a small F-net consumes on this CPU, against the
   store-backed sampler at 16x32x32 (the sampler should not be the bottleneck: >= 5x).
3. With ``--device cuda`` and ``--protocol``: it/s of the paper's protocol (F-net depth 4 / 32
   channels, batch 24, 32x64x64, bf16 autocast) fed by the cached set on the GPU, against the
   ~185 it/s compute bound of an 800 TFLOP/s card (issue 16).
(Inference is measured by bench_predict.py.)
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import make_screen, timed  # noqa: E402


def rate(batches, n_batches: int, batch: int, sync=lambda: None) -> float:
    """Patches/s drawing ``n_batches`` from the iterable ``batches`` (the first one untimed)."""
    it = iter(batches)
    next(it)
    sync()
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    sync()
    return n_batches * batch / (time.perf_counter() - t0)


def train_rate(model, loss_fn, batches, *, warmup: int, iterations: int, autocast,
               sync=lambda: None, lr: float = 1e-3) -> tuple[float, float]:
    """It/s of the trainer's step (Adam with the paper's betas, ``autocast`` around forward and
    loss, the loss in float32) on ``batches`` of (signal, target, mask), ``warmup`` steps
    untimed; returns (it/s, the last loss)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))

    def step():
        sig, tgt, mask = next(batches)
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn(model(sig).float(), tgt, mask)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iterations):
        loss = step()
    sync()
    return iterations / (time.perf_counter() - t0), float(loss.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (model steps)")
    ap.add_argument("--protocol", action="store_true",
                    help="also time training at the paper's protocol (a GPU job)")
    args = ap.parse_args()

    from spotlight_scale.core.losses import get_loss
    from spotlight_scale.io.store import Store
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
    from spotlight_scale.train.cached import CachedPatchSet
    from spotlight_scale.train.sampler import PatchDataset, make_loader

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    tmp = Path(tempfile.mkdtemp())
    man = make_screen(tmp / "raw", 4, shape=(32, 256, 256))
    patch, batch = (32, 64, 64), 24
    ingest(man, tmp / "store", IngestSettings(isotropic_um=None, patch=patch), workers=2,
           progress_stream=None)
    store = Store(tmp / "store")
    keys = store.fields()
    kw = dict(mode="foreground", norm="spotlight", seed=0)
    loop = dict(batch_size=batch, rank=0, world=1, start_iteration=0)

    t0 = time.perf_counter()
    cached = CachedPatchSet(store, keys, patch, device=dev, **kw)
    sync()
    load_s = time.perf_counter() - t0
    ds = PatchDataset(store, keys, patch, **kw)
    store_rates, cached_rates = [], []
    for r in range(args.repeats):  # interleaved, so machine noise hits both alike
        n_store = 15
        loader = make_loader(ds, num_workers=2, iterations=n_store + 1, **loop)
        store_rates.append(rate(loader, n_store, batch))
        n_cached = 100
        cached_rates.append(rate(cached.batches(iterations=n_cached + 1, **loop), n_cached, batch,
                                 sync))
    s, c = statistics.median(store_rates), statistics.median(cached_rates)
    print(f"store-backed sampler: {s:.0f} patches/s of {patch} (DataLoader, 2 workers; "
          f"runs {[round(x) for x in store_rates]})")
    print(f"cached set on {dev}: {c:.0f} patches/s (batches built on one intra-op thread; "
          f"runs {[round(x) for x in cached_rates]}); loading {len(keys)} fields "
          f"({cached.nbytes / 2**20:.0f} MiB) took {load_s:.2f} s")
    print(f"ratio cached/store = {c / s:.1f}x; goal >= 1300 patches/s: "
          f"{'met' if c >= 1300 else 'NOT met'}")

    small = (16, 32, 32)
    ingest(man, tmp / "store16", IngestSettings(isotropic_um=None, patch=small), workers=2,
           progress_stream=None)
    ds16 = PatchDataset(Store(tmp / "store16"), keys, small, **kw)
    b16 = 8
    sampler_rate = rate(make_loader(ds16, num_workers=2, batch_size=b16, rank=0, world=1,
                                    start_iteration=0, iterations=61), 60, b16)
    model = FNet(depth=3, channels=8)
    opt = torch.optim.Adam(model.parameters())
    loss_fn = get_loss("spotlight")
    x = torch.randn(b16, 1, *small)

    def step():
        opt.zero_grad()
        loss_fn(model(x), x, x > 0).backward()
        opt.step()
    step()
    t_step, _ = timed(step, 10)
    model_rate = b16 / t_step
    print(f"store-backed sampler at {small}: {sampler_rate:.0f} patches/s; one training step "
          f"of F-net depth 3 / 8 ch, batch {b16}: {model_rate:.1f} patches/s; ratio "
          f"{sampler_rate / model_rate:.1f}x (goal >= 5x)")

    if args.protocol:
        model = FNet(depth=4, channels=32).to(dev)
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
        its, _ = train_rate(model, loss_fn, cached.batches(iterations=10**9, **loop),
                            warmup=5, iterations=50 if dev.type == "cuda" else 2,
                            autocast=autocast, sync=sync)
        print(f"paper protocol on {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}): "
              f"{its:.2f} it/s (batch 24 of {patch}, bf16 autocast on GPU) = {its / 185:.2f} of "
              "the 185 it/s compute bound")

    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
