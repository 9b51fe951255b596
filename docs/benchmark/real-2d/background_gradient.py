"""Where Spotlight's background sits relative to the loss's gradients (issue 20's mechanism).

For each Spotlight snapshot of the real-2D benchmark, the network's raw output x (the
target's normalised units: (target - Otsu) / std, so the Otsu threshold is x = 0) on each
test frame, over the pixels of the *target's* background (target < its Otsu threshold):

- ``share_no_gradient``: the fraction at x <= -1, where neither term of the loss acts:
  the masked MSE is 0 there (background) and the Dice probability clamp((sigma_k(x)+1)/2, 0, 1)
  is clamped to 0 (sigma_k(-1) = -1), so its derivative is exactly 0;
- ``share_weak``: the fraction at -1 < x < 0 whose Dice-probability slope is below 1 % of its
  slope at the threshold (sigma_k saturates long before -1 at k = -0.95);
- quantiles of x there, the same of the target itself, and of F-net's snapshot (normalised by its own mean/std,
  shifted so that the target's Otsu level is 0: comparable, not what F-net was trained on).

    python docs/benchmark/real-2d/background_gradient.py WORKDIR > background_gradient.json

Written by hand (no library computes this); it reads the store and model files only.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from spotlight_scale.core.losses import soft_foreground
from spotlight_scale.core.normalize import foreground_threshold, normalize
from spotlight_scale.io.store import Store
from spotlight_scale.models.io import load_model_file


def slope(x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    soft_foreground(x, probability="shifted").sum().backward()
    return x.grad


def main(work: Path) -> None:
    store = Store(work / "store")
    test = store.fields("test")
    ref = float(slope(torch.zeros(1)))
    out = []
    bg = np.concatenate([  # the target itself, in the same units (what F-net's MSE aims at)
        ((t - st["otsu"]) / st["std"])[t < st["otsu"]]
        for t, st in ((store.read(k, "target").astype(np.float32), store.stats(k, "target"))
                      for k in test)])
    out.append({"model": "target", "x_q05": float(np.quantile(bg, 0.05)),
                "x_median": float(np.median(bg)), "x_q95": float(np.quantile(bg, 0.95)),
                "x_std": float(bg.std())})
    for model_name in ("spotlight", "fnet-torch", "spotlight-mse-all"):
        for seed in (0, 1, 2):
            for it in (1000, 3000, 10000, 20000):
                path = work / "work" / "runs" / model_name / f"seed-{seed}" / f"model-{it}.pt"
                if not path.exists():
                    continue
                model, meta = load_model_file(path)
                mode = meta["normalization"]
                xs = []
                for key in test:
                    sig = store.read(key, "signal").astype(np.float32)
                    tgt = store.read(key, "target").astype(np.float32)
                    y = sig.shape[-2] // 8 * 8  # the 2D F-net needs sides divisible by 2^depth
                    s = normalize(sig[..., :y, :], store.stats(key, "signal"), mode, "signal")
                    t = tgt[..., :y, :]
                    tstats = store.stats(key, "target")
                    with torch.no_grad():
                        x = model(torch.from_numpy(s)[None]).numpy()[0]
                    x = x - foreground_threshold(tstats, mode)  # Otsu level at 0
                    xs.append(x[t < tstats["otsu"]])
                bg = np.concatenate(xs)
                g = slope(torch.from_numpy(bg)).numpy()
                out.append({
                    "model": model_name, "seed": seed, "iterations": it,
                    "share_no_gradient": float(np.mean(bg <= -1)),
                    "share_weak": float(np.mean((bg > -1) & (bg < 0) & (g < 0.01 * ref))),
                    "share_above_threshold": float(np.mean(bg >= 0)),
                    "x_q05": float(np.quantile(bg, 0.05)), "x_median": float(np.median(bg)),
                    "x_q95": float(np.quantile(bg, 0.95)), "x_std": float(bg.std()),
                })
                print(json.dumps(out[-1]), file=sys.stderr)
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
