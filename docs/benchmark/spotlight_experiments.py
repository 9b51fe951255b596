"""Which choice decides whether Spotlight works? Train loss variants on one store, score them.

    python docs/benchmark/spotlight_experiments.py STORE OUT --variant fnet --variant clamp \
        [--seed 0] [--evals 100,200,400] [--threads 1]

STORE is any ingested store (``make demo`` -> ``demo/store``, or the quick benchmark's
``WORK/store``). Each variant is trained through the project's own trainer
(:func:`spotlight_scale.train.trainer.run_training`, the quick benchmark's network: depth 3,
8 channels, batch 8, 16x32x32 patches, Adam 1e-3 (0.5, 0.999)), stopped at every
``--evals`` iteration (resumed from its checkpoint, which reproduces the uninterrupted run)
and scored on the store's test fields, predicted whole:

- ``bg_below``: fraction of the target's background voxels (target < Otsu) that the
  prediction puts below the Otsu threshold (in the model's own normalisation of the field);
- ``fg_above``: the same for foreground voxels above it;
- ``psnr``, ``psnr_fg``: after mapping the prediction back to raw units with the field's own
  statistics (the inverse of the training normalisation);
- ``bg_spread``: std of the prediction over background / its mean over foreground (raw);
- ``ap50``, ``ap_mean``: the project's watershed recipe on the prediction against the true
  nuclei, AP at IoU 0.5 and averaged over 0.5:0.05:0.9; true nuclei cut by the XY border are
  dropped from both sides, as ``evaluate`` does; the nucleus diameter is estimated on the
  target, as ``segment`` does (``ap_target`` is the recipe on the target itself).

Rows are appended to ``OUT/curves.csv`` (one per variant, seed, iteration); a row that is
already there is not recomputed, so an interrupted run continues.

Variants are defined in ``VARIANTS`` below: a name, the train-config keys it changes, and,
for the two candidates that are not config keys of the project (the normalising std and the
foreground tail), a patch applied in this process only.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path

import numpy as np
import torch

from spotlight_scale.core import losses
from spotlight_scale.core.matching import average_precision
from spotlight_scale.core.metrics import psnr, psnr_foreground
from spotlight_scale.core.normalize import foreground_threshold, normalize, offset
from spotlight_scale.core.segment import (WatershedConfig, clear_xy_border, estimate_diameter,
                                          watershed_nuclei)
from spotlight_scale.io.store import Store
from spotlight_scale.models.io import load_model_file
from spotlight_scale.train.config import TrainConfig
from spotlight_scale.train.trainer import run_training

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.91, 0.05), 2))
COLUMNS = ["variant", "seed", "iteration", "train_loss", "bg_below", "fg_above", "psnr",
           "psnr_fg", "bg_spread", "ap50", "ap_mean", "n_pred", "n_true", "ap_target",
           "seconds"]


@contextlib.contextmanager
def foreground_std():
    """Normalise the target by the std of its foreground voxels instead of the whole field."""
    orig = Store.stats
    cache: dict = {}

    def stats(self, key, channel):
        s = orig(self, key, channel)
        if channel == "target":
            if (str(self.root), key) not in cache:
                t = self.read(key, "target").astype(np.float64)
                cache[(str(self.root), key)] = float(t[t >= s["otsu"]].std())
            s["std"] = cache[(str(self.root), key)]
        return s

    Store.stats = stats
    try:
        yield
    finally:
        Store.stats = orig


@contextlib.contextmanager
def tail_clip(limit: float = 3.0):
    """Masked MSE against the target clipped at ``limit`` std above Otsu (caps the tail)."""
    orig = losses.masked_mse

    def clipped(pred, target, mask, **kw):
        return orig(pred, target.clamp(max=limit), mask, **kw)

    losses.masked_mse = clipped
    try:
        yield
    finally:
        losses.masked_mse = orig


BASE = dict(depth=3, channels=8, patch=(16, 32, 32), batch_size=8, num_workers=1, init="fnet")
#: the Spotlight loss as shipped before this study (the paper's formula with our earlier reading
#: of its silent choices)
V1 = dict(loss="spotlight", dice_probability="shifted", loss_reduction="batch",
          dice_denominator="linear", mse_denominator="foreground")
#: the authors' code (alxndrkalinin/pytorch_fnet, fnet/losses.py, WMSEDiceLoss):
#: p = (sigma + 1) / 2, V-Net Dice over the batch, masked squared error averaged over all voxels
AUTHORS = dict(V1, dice_denominator="squared", mse_denominator="all")
VARIANTS = {
    "fnet": (dict(loss="mse"), None),
    "v1": (V1, None),
    "v1-torch-init": (dict(V1, init="torch"), None),
    "clamp": (dict(V1, dice_probability="clamp"), None),
    "per-patch": (dict(V1, loss_reduction="patch"), None),
    "fg-std": (V1, foreground_std),
    "tail-clip": (V1, tail_clip),
    "vnet-dice": (dict(V1, dice_denominator="squared"), None),
    "mse-all": (dict(V1, mse_denominator="all"), None),
    "authors": (AUTHORS, None),
    "authors-torch-init": (dict(AUTHORS, init="torch"), None),
    "authors-clamp": (dict(AUTHORS, dice_probability="clamp"), None),
    "authors-patch": (dict(AUTHORS, loss_reduction="patch"), None),
    "dice-only": (dict(V1, lam=0.0), None),
}


def _forward(model, x: np.ndarray) -> np.ndarray:
    d = model.divisor
    pad = [(0, (-n) % d) for n in x.shape]
    xp = np.pad(x, pad, mode="reflect")
    with torch.no_grad():
        y = model(torch.from_numpy(xp)[None, None]).numpy()[0, 0]
    return y[tuple(slice(0, n) for n in x.shape)]


def score(store: Store, model_path: Path, fields, cache: dict) -> dict[str, float]:
    """Score the model on ``fields`` (whole fields, one forward each)."""
    model, meta = load_model_file(model_path)
    model.eval()
    mode = meta["normalization"]
    acc: dict[str, list] = {k: [] for k in ("bg_below", "fg_above", "psnr", "psnr_fg",
                                            "bg_spread", "ap50", "ap_mean", "n_pred", "n_true",
                                            "ap_target")}
    for key in fields:
        ss, ts = store.stats(key, "signal"), store.stats(key, "target")
        sig = normalize(store.read(key, "signal").astype(np.float32), ss, "fnet", "signal")
        target = store.read(key, "target").astype(np.float64)
        pred = _forward(model, sig).astype(np.float64)
        fg = target >= ts["otsu"]
        thr = foreground_threshold(ts, mode)
        raw = pred * ts["std"] + offset(ts, mode, "target")
        voxel = store.voxel_size(key)
        if key not in cache:
            # as `segment` does: the diameter is measured on the target, whatever is segmented
            cfg = WatershedConfig(diameter_um=estimate_diameter(target, voxel_size=voxel))
            true = clear_xy_border(store.read_named(key, "labels:gt").astype(np.uint32))
            ap_t = average_precision(true, watershed_nuclei(target, cfg, voxel_size=voxel),
                                     THRESHOLDS)
            cache[key] = (true, ap_t, cfg)
        true, ap_t, cfg = cache[key]
        lab = clear_xy_border(watershed_nuclei(raw, cfg, voxel_size=voxel))
        ap = average_precision(true, lab, THRESHOLDS)
        acc["bg_below"].append(float((pred[~fg] < thr).mean()))
        acc["fg_above"].append(float((pred[fg] >= thr).mean()))
        acc["psnr"].append(psnr(target, raw))
        acc["psnr_fg"].append(psnr_foreground(target, raw, fg))
        acc["bg_spread"].append(float(raw[~fg].std() / raw[fg].mean()))
        acc["ap50"].append(float(ap[0]))
        acc["ap_mean"].append(float(ap.mean()))
        acc["n_pred"].append(int(lab.max()))
        acc["n_true"].append(int(len(np.unique(true)) - 1))
        acc["ap_target"].append(float(ap_t.mean()))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _done(path: Path) -> set:
    if not path.exists():
        return set()
    with open(path, newline="") as fh:
        return {(r["variant"], int(r["seed"]), int(r["iteration"])) for r in csv.DictReader(fh)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--variant", action="append", required=True, choices=sorted(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evals", default="100,200,400")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "curves.csv"
    done = _done(table)
    store = Store(args.store)
    fields = store.fields("test")
    evals = sorted(int(v) for v in args.evals.split(","))
    cache: dict = {}
    for name in args.variant:
        keys, patch = VARIANTS[name]
        run = out / f"{name}-s{args.seed}"
        with (patch() if patch else contextlib.nullcontext()):
            for i, n in enumerate(evals):
                if (name, args.seed, n) in done:
                    continue
                t0 = time.perf_counter()
                # fixed intervals: a later call with more --evals resumes the same run
                cfg = TrainConfig(**{**BASE, **keys}, iterations=n, seed=args.seed,
                                  val_interval=10**7, checkpoint_interval=100)
                resume = i > 0 and (run / "checkpoints" / "latest.pt").exists()
                if not resume and run.exists():
                    import shutil
                    shutil.rmtree(run)
                run_training(store.root, run, cfg, resume=resume, progress_stream=None)
                with open(run / "loss.csv", newline="") as fh:
                    rows = list(csv.DictReader(fh))
                train_loss = float(np.mean([float(r["train_loss"]) for r in rows[-20:]]))
                row = {"variant": name, "seed": args.seed, "iteration": n,
                       "train_loss": train_loss, **score(store, run / "model.pt", fields, cache),
                       "seconds": round(time.perf_counter() - t0, 1)}
                new = not table.exists()
                with open(table, "a", newline="") as fh:
                    w = csv.DictWriter(fh, COLUMNS)
                    if new:
                        w.writeheader()
                    w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v)
                                for k, v in row.items()})
                print(" ".join(f"{k}={row[k]:.3f}" if isinstance(row[k], float) else
                               f"{k}={row[k]}" for k in COLUMNS), flush=True)


if __name__ == "__main__":
    main()
