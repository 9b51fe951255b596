"""Why Spotlight loses to F-net at CPU budgets: train loss variants on one store and look.

    python docs/benchmark/loss_diagnosis.py STORE WORKDIR [--iterations 400]

STORE is any ingested store (e.g. ``demo/store`` from ``make demo``). Trains the demo's
small F-net (depth 3, 8 channels, batch 8, 16x32x32, seed 0) with

- ``spotlight``: the Spotlight loss as shipped (lambda 0.5, k -0.95, p = clamp((s+1)/2));
- ``spotlight-noclamp``: the same with p = (s+1)/2 unclamped (the authors' fork);
- ``dice-only``: lambda = 0 (the Dice term alone);

then, on fixed validation patches drawn uniformly (so background is represented), prints
where the network puts background and foreground relative to the Otsu threshold (0 in the
spotlight normalisation), and, for the first model, the mean per-voxel gradient magnitude
of each loss term with respect to the prediction.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import spotlight_scale.core.losses as losses
from spotlight_scale.io.store import Store
from spotlight_scale.models.io import load_model_file
from spotlight_scale.train.config import TrainConfig
from spotlight_scale.train.sampler import PatchDataset
from spotlight_scale.train.trainer import _split_fields, run_training

SHIPPED = losses.soft_foreground


def _noclamp(x, k=losses.K_DEFAULT):
    return (losses.tunable_sigmoid(x, k) + 1) / 2


VARIANTS = {"spotlight": (0.5, SHIPPED), "spotlight-noclamp": (0.5, _noclamp),
            "dice-only": (0.0, SHIPPED)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("workdir")
    ap.add_argument("--iterations", type=int, default=400)
    args = ap.parse_args()
    store = Store(args.store)
    _, val = _split_fields(store)
    ds = PatchDataset(store, val, (16, 32, 32), mode="uniform", norm="spotlight", seed=5, salt=99)
    sig, tgt, mask = (torch.stack(t) for t in zip(*[ds[i] for i in range(64)]))
    bg = ~mask
    print(f"validation patches: {int(mask.sum())} foreground / {mask.numel()} voxels; "
          f"target mean background {float(tgt[bg].mean()):.2f}, foreground "
          f"{float(tgt[mask].mean()):.2f} (normalised, Otsu = 0)")
    print("| variant | background > 0 | background > 1 | background mean | foreground > 0 "
          "| foreground mean |")
    print("|---|---|---|---|---|---|")
    for name, (lam, soft) in VARIANTS.items():
        run = Path(args.workdir) / name
        losses.soft_foreground = soft  # spotlight_loss looks it up at call time
        try:
            if not (run / "model.pt").exists():
                cfg = TrainConfig(loss="spotlight", lam=lam, depth=3, channels=8,
                                  patch=(16, 32, 32), batch_size=8, iterations=args.iterations,
                                  val_interval=100, checkpoint_interval=100, num_workers=1,
                                  seed=0)
                run_training(args.store, run, cfg, progress_stream=None)
        finally:
            losses.soft_foreground = SHIPPED
        model, _ = load_model_file(run / "model.pt")
        with torch.no_grad():
            p = model(sig)
        print(f"| {name} | {float((p[bg] > 0).float().mean()):.2f} | "
              f"{float((p[bg] > 1).float().mean()):.2f} | {float(p[bg].mean()):.2f} | "
              f"{float((p[mask] > 0).float().mean()):.2f} | {float(p[mask].mean()):.2f} |")
        if name == "spotlight":
            x = p.clone().requires_grad_(True)
            g_mse, = torch.autograd.grad(losses.masked_mse(x, tgt, mask), x)
            g_dice, = torch.autograd.grad(losses.dice_loss(SHIPPED(x), mask), x)
            print(f"  gradients at this model's output (x 1e6): masked MSE on foreground "
                  f"{1e6 * float(g_mse[mask].abs().mean()):.2f}; Dice on foreground "
                  f"{1e6 * float(g_dice[mask].abs().mean()):.3f}, on background "
                  f"{1e6 * float(g_dice[bg].abs().mean()):.3f}")


if __name__ == "__main__":
    main()
