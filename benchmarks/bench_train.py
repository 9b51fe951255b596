"""Sampler throughput vs model consumption.

    python benchmarks/bench_train.py

Patches/s the store-backed sampler delivers through a DataLoader (2 workers) against
patches/s a training step of a small F-net consumes on this CPU (goal: >= 5x).
(Inference is measured by bench_predict.py.)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import make_screen, timed  # noqa: E402


def main():
    from spotlight_scale.core.losses import get_loss
    from spotlight_scale.io.store import Store
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest
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

    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
