"""Benchmark: F-net (MSE) against Spotlight on one synthetic screen, end to end.

synth -> ingest -> train ``mse`` and ``spotlight`` with the same budget and seed
-> predict the test fields -> segment target and both predictions (and the
predictions post-thresholded at a few intensities) -> profile -> evaluate ->
one comparison table and report. All stages share one Dask cluster.

Budgets:

- ``tiny``: for CI (a minute or two);
- ``quick``: this 2-core CPU in well under 15 minutes;
- ``full``: the paper's protocol (F-net depth 4 / 32 channels, batch 24,
  32x64x64 patches, 50 000 iterations) for a GPU.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Budget:
    wells: int
    fields: int
    shape: tuple[int, int, int]
    iterations: int
    batch_size: int
    patch: tuple[int, int, int]
    depth: int
    channels: int
    tile: tuple[int, int, int]
    overlap: tuple[int, int, int]
    device: str = "cpu"
    thresholds: tuple[float, ...] = (0.5, 1.0, 1.5)  # x the mean target Otsu threshold
    train_extra: dict = field(default_factory=dict)


BUDGETS = {
    "tiny": Budget(wells=2, fields=2, shape=(12, 64, 64), iterations=20, batch_size=2,
                   patch=(16, 32, 32), depth=2, channels=4, tile=(16, 64, 64),
                   overlap=(8, 16, 16), thresholds=(1.0,)),
    "quick": Budget(wells=3, fields=3, shape=(16, 128, 128), iterations=400, batch_size=8,
                    patch=(16, 32, 32), depth=3, channels=8, tile=(64, 256, 256),
                    overlap=(16, 32, 32)),
    "full": Budget(wells=4, fields=6, shape=(32, 256, 256), iterations=50_000, batch_size=24,
                   patch=(32, 64, 64), depth=4, channels=32, tile=(96, 256, 256),
                   overlap=(16, 32, 32), device="cuda"),
}


def run_benchmark(workdir, *, budget: str = "quick", seed: int = 0, workers: int = 2,
                  iterations: int | None = None, progress_stream=sys.stderr) -> dict[str, Any]:
    """Run every stage into ``workdir``; returns the summary (also in ``report/``)."""
    from distributed import Client, LocalCluster

    from ..io.store import Store
    from ..train.config import TrainConfig
    from .evaluate import evaluate
    from .ingest import IngestSettings, ingest
    from .predict import predict
    from .profile import profile
    from .segment import segment
    from .synth import synth_screen
    from .train import train

    b = BUDGETS[budget]
    if iterations is not None:
        b = replace(b, iterations=iterations)
    w = Path(workdir)
    w.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name):
        timings[name] = time.perf_counter()
        print(f"== {name}", file=progress_stream, flush=True)

    def done(name):
        timings[name] = round(time.perf_counter() - timings[name], 2)

    step("synth")
    manifest = synth_screen(w / "raw", plate="BENCH", wells=b.wells, fields=b.fields,
                            shape=b.shape, test_fraction=0.34, val_fraction=0.12, seed=seed)
    done("synth")
    with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc):
        addr = lc.scheduler_address
        step("ingest")
        ingest(manifest, w / "store", IngestSettings(patch=b.patch,
                                                     patch_stride=tuple(p // 4 for p in b.patch)),
               cluster=addr, progress_stream=progress_stream)
        done("ingest")
        store = Store(w / "store")
        models = {"fnet": "mse", "spotlight": "spotlight"}
        for name, loss in models.items():
            step(f"train {name}")
            cfg = TrainConfig(loss=loss, iterations=b.iterations, batch_size=b.batch_size,
                              patch=b.patch, depth=b.depth, channels=b.channels, seed=seed,
                              device=b.device, val_interval=max(b.iterations // 10, 1),
                              checkpoint_interval=max(b.iterations // 5, 1),
                              num_workers=1 if b.device == "cpu" else 4, **b.train_extra)
            train(store.root, w / "runs" / name, cfg, overwrite=True,
                  progress_stream=progress_stream)
            done(f"train {name}")
        step("predict")
        for name in models:
            predict(store.root, w / "runs" / name, name, split="test", tile=b.tile,
                    overlap=b.overlap, cluster=addr, device=b.device, overwrite=True,
                    progress_stream=progress_stream)
        done("predict")
        step("segment")
        segment(store.root, image="target", name="seg-target", split="test", cluster=addr,
                overwrite=True, progress_stream=progress_stream)
        otsu = sum(store.stats(k, "target")["otsu"] for k in store.fields("test")) / len(
            store.fields("test"))
        for name in models:
            segment(store.root, image=f"prediction:{name}", name=f"seg-{name}", split="test",
                    cluster=addr, overwrite=True, progress_stream=progress_stream)
            for f in b.thresholds:
                t = round(f * otsu, 1)
                segment(store.root, image=f"prediction:{name}", name=f"seg-{name}-t{t:g}",
                        threshold=t, split="test", cluster=addr, overwrite=True,
                        progress_stream=progress_stream)
        done("segment")
        step("profile")
        for name, image in [("target", "target"), ("fnet", "prediction:fnet"),
                            ("spotlight", "prediction:spotlight")]:
            profile(store.root, labels=f"seg-{name}", image=image, out=w / "profiles" / name,
                    split="test", cluster=addr, overwrite=True, progress_stream=progress_stream)
        done("profile")
        step("evaluate")
        summary = evaluate(store, list(models), out=w / "report", profiles=w / "profiles",
                           split="test", cluster=addr, overwrite=True)
        done("evaluate")
    meta = {"budget": budget, "seed": seed, "workers": workers, "iterations": b.iterations,
            "settings": {k: v for k, v in b.__dict__.items()}, "seconds": timings}
    (w / "report" / "benchmark.json").write_text(json.dumps(meta, indent=2, default=list))
    return {"summary": summary, "meta": meta, "report": str(w / "report" / "report.md")}
