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

import numpy as np

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
                  iterations: int | None = None, spotlight_options: dict | None = None,
                  fnet_options: dict | None = None, preset: str = "calibrated",
                  progress_stream=sys.stderr) -> dict[str, Any]:
    """Run every stage for one seed into ``workdir``; returns the summary (also in ``report/``).

    The seed draws the synthetic screen and seeds both trainings. ``spotlight_options`` /
    ``fnet_options``: train config keys for the Spotlight / F-net model only (e.g.
    ``{"lambda_ramp": 100}``, ``{"init": "torch"}``). ``preset``: the simulator's
    parameter set (:data:`spotlight_scale.core.synth.PRESETS`; ``v1`` for the screens of
    the runs before calibration).
    """
    from distributed import Client, LocalCluster

    from ..config import config_from_mapping, config_to_dict
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
    models = {"fnet": "mse", "spotlight": "spotlight"}
    configs = {name: TrainConfig(loss=loss, iterations=b.iterations, batch_size=b.batch_size,
                                 patch=b.patch, depth=b.depth, channels=b.channels, seed=seed,
                                 device=b.device, val_interval=max(b.iterations // 10, 1),
                                 checkpoint_interval=max(b.iterations // 5, 1),
                                 num_workers=1 if b.device == "cpu" else 4, **b.train_extra)
               for name, loss in models.items()}
    from ..core.synth import PRESETS

    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; choose from {', '.join(PRESETS)}")
    for name, options in (("spotlight", spotlight_options), ("fnet", fnet_options)):
        if options:  # refused before anything runs, naming the key
            configs[name] = config_from_mapping(
                TrainConfig, {**config_to_dict(configs[name]), **options}, f"--{name}-option")
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
                            shape=b.shape, test_fraction=0.34, val_fraction=0.12, seed=seed,
                            params=PRESETS[preset])
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
        for name, cfg in configs.items():
            step(f"train {name}")
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
            # the AP at the model's own threshold too (evaluate finds <LABELS>-model)
            segment(store.root, image=f"prediction:{name}", name=f"seg-{name}-model",
                    foreground="model", split="test", cluster=addr, overwrite=True,
                    progress_stream=progress_stream)
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
            "settings": {k: v for k, v in b.__dict__.items()},
            "spotlight_options": dict(spotlight_options or {}),
            "fnet_options": dict(fnet_options or {}), "synth_preset": preset, "seconds": timings}
    (w / "report" / "benchmark.json").write_text(json.dumps(meta, indent=2, default=list))
    return {"summary": summary, "meta": meta, "report": str(w / "report" / "report.md")}


# --------------------------------------------------------------------------- several seeds
#: The criteria of a working Spotlight effect (issue: "Spotlight must do what the paper says"),
#: checked on the means over seeds: (metric, model, comparison, bound, relative to F-net?).
CRITERIA = (
    ("ap_mean_50_90", "Spotlight mean AP (IoU 0.5-0.9) >= F-net's + 0.05", 0.05, True),
    ("bg_below_otsu", "Spotlight puts >= 90 % of background voxels below Otsu", 0.90, False),
    ("psnr_fg", "Spotlight foreground PSNR >= F-net's - 1 dB", -1.0, True),
)
#: Metrics of the seed table, in order: (column, label).
SEED_METRICS = (
    ("psnr", "PSNR (dB)"), ("psnr_fg", "PSNR fg (dB)"), ("ssim", "SSIM"),
    ("ssim_fg", "SSIM fg"), ("micro_ms3im", "MicroMS3IM"),
    ("bg_below_otsu", "background below Otsu"), ("bg_spread", "background spread"),
    ("ap50", "AP@0.5"), ("ap50_model", "AP@0.5, model threshold"),
    ("ap_mean_50_90", "AP, mean IoU 0.5-0.9"), ("n_pred", "nuclei found"),
    ("n_gt", "true nuclei"), ("cosine_nuclei_median", "cosine distance"),
)


def seed_table(reports: dict[int, Path]):
    """Per seed and model, each metric's mean over the seed's test fields (a DataFrame).

    ``ap_mean_50_90`` is the mean of AP at IoU 0.5, 0.55, ..., 0.9 (the paper's range).
    """
    import pandas as pd

    from ..io.tables import read_table

    rows = []
    for seed, rep in reports.items():
        df = read_table(Path(rep) / "metrics.parquet", "metrics")
        ap_cols = [f"ap{t}" for t in range(50, 91, 5)]
        df["ap_mean_50_90"] = df[ap_cols].mean(axis=1)
        for model, g in df.groupby("model", sort=False):
            row = {"seed": int(seed), "model": model, "n_fields": int(len(g))}
            for col, _ in SEED_METRICS:
                v = pd.to_numeric(g[col], errors="coerce").to_numpy(float)
                v = v[np.isfinite(v)]
                row[col] = float(v.mean()) if v.size else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def aggregate_seeds(table) -> dict[str, Any]:
    """Mean and s.d. over seeds of every metric per model, and the criteria verdicts."""
    stats: dict[str, dict] = {}
    for model, g in table.groupby("model", sort=False):
        stats[model] = {}
        for col, _ in SEED_METRICS:
            v = g[col].to_numpy(float)
            v = v[np.isfinite(v)]
            stats[model][col] = ({"mean": float(v.mean()), "std": float(v.std(ddof=1)) if
                                  v.size > 1 else 0.0, "n": int(v.size)} if v.size else
                                 {"mean": None, "std": None, "n": 0})
    verdicts = []
    for col, text, bound, relative in CRITERIA:
        sp = stats.get("spotlight", {}).get(col, {}).get("mean")
        fn = stats.get("fnet", {}).get(col, {}).get("mean")
        if sp is None or (relative and fn is None):
            value, met = None, False
        else:
            value = sp - fn if relative else sp
            met = bool(value >= bound)
        verdicts.append({"metric": col, "criterion": text, "value": value, "met": met})
    return {"models": stats, "criteria": verdicts}


def _fmt(entry) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    return f"{entry['mean']:.3f} +- {entry['std']:.3f}"


def write_seed_report(workdir: Path, budget: str, seeds, table, agg: dict,
                      reports: dict[int, Path]) -> Path:
    """``WORK/report.md``: the mean +- s.d. table over seeds and the criteria verdicts."""
    from ..io.atomic import atomic_write_json, atomic_write_text
    from ..io.tables import write_table

    workdir = Path(workdir)
    write_table(table, workdir / "seeds.parquet", "benchmark_seeds", budget=budget)
    atomic_write_json(workdir / "seeds.json", {"budget": budget, "seeds": list(seeds), **agg})
    head = "| model | " + " | ".join(label for _, label in SEED_METRICS) + " |"
    lines = [f"# F-net vs Spotlight over {len(seeds)} seeds ({budget} budget)", "",
             f"Seeds {', '.join(map(str, seeds))}; each seed draws its own synthetic screen and "
             "seeds both trainings. Values: mean +- s.d. over seeds of each seed's mean over its "
             "test fields.", "", head, "|---" * (len(SEED_METRICS) + 1) + "|"]
    for model, stats in agg["models"].items():
        lines.append(f"| {model} | " + " | ".join(_fmt(stats.get(c)) for c, _ in SEED_METRICS)
                     + " |")
    lines += ["", "## Criteria", "", "| criterion | value | met |", "|---|---|---|"]
    for v in agg["criteria"]:
        val = "-" if v["value"] is None else f"{v['value']:+.3f}"
        lines.append(f"| {v['criterion']} | {val} | {'yes' if v['met'] else 'NO'} |")
    lines += ["", "## Per seed", "", "| seed | model | " +
              " | ".join(label for _, label in SEED_METRICS) + " |",
              "|---|---" + "|---" * len(SEED_METRICS) + "|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['seed']} | {r['model']} | " + " | ".join(
            "-" if not np.isfinite(r[c]) else f"{r[c]:.3f}" for c, _ in SEED_METRICS) + " |")
    lines += ["", "Full reports: " + ", ".join(
        f"[seed {s}]({Path(p).relative_to(workdir)}/report.md)" for s, p in reports.items()), ""]
    path = workdir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def run_benchmark_seeds(workdir, *, budget: str = "quick", seeds=(0, 1, 2), workers: int = 2,
                        iterations: int | None = None, spotlight_options: dict | None = None,
                        fnet_options: dict | None = None, preset: str = "calibrated",
                        progress_stream=sys.stderr) -> dict[str, Any]:
    """:func:`run_benchmark` once per seed into ``WORK/seed-<S>/``, then ``WORK/report.md``.

    A seed whose ``report/summary.json`` exists is not run again (an interrupted run of
    several seeds continues where it stopped).
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must list distinct seeds, got {seeds}")
    w = Path(workdir)
    reports = {}
    for s in seeds:
        sub = w / f"seed-{s}"
        if not (sub / "report" / "summary.json").exists():
            print(f"== seed {s}", file=progress_stream, flush=True)
            run_benchmark(sub, budget=budget, seed=s, workers=workers, iterations=iterations,
                          spotlight_options=spotlight_options, fnet_options=fnet_options,
                          preset=preset, progress_stream=progress_stream)
        reports[s] = sub / "report"
    table = seed_table(reports)
    agg = aggregate_seeds(table)
    report = write_seed_report(w, budget, seeds, table, agg, reports)
    return {"table": table, "aggregate": agg, "report": str(report)}
