"""How the Spotlight loss moves the network's outputs in the first iterations.

    python docs/benchmark/loss_dynamics.py STORE VARIANT STEPS [SEED]

Trains the quick benchmark's network (F-net depth 3, 8 channels, batch 8, 16x32x32
foreground patches, Adam 1e-3 (0.5, 0.999)) in this process with one loss variant of
``spotlight_experiments.VARIANTS`` (plus ``-ramp100``: the same with ``lambda_ramp`` 100,
beyond the paper) and prints, every 10 iterations, each term of the loss and the outputs on
the training batch in normalised units (Otsu threshold = 0): background and foreground
means, the fraction of background below 0 and of foreground at or above it, and the output
layer's bias. SEED seeds the weights (the patch stream is fixed). This is the experiment
behind the mechanism in ``docs/benchmark/README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from spotlight_experiments import VARIANTS  # noqa: E402

from spotlight_scale.core import losses as L  # noqa: E402
from spotlight_scale.io.store import Store  # noqa: E402
from spotlight_scale.models.fnet import FNet  # noqa: E402
from spotlight_scale.train.config import TrainConfig  # noqa: E402
from spotlight_scale.train.sampler import PatchDataset  # noqa: E402


def main(store_path: str, variant: str, steps: int, seed: int = 0) -> None:
    torch.set_num_threads(1)
    ramp = 100 if variant.endswith("-ramp100") else 0
    keys, patch_ctx = VARIANTS[variant.removesuffix("-ramp100")]
    if patch_ctx is not None:
        raise SystemExit(f"{variant}: variants that patch the store or loss run in "
                         "spotlight_experiments.py only")
    cfg = TrainConfig(**{**dict(depth=3, channels=8, patch=(16, 32, 32), batch_size=8,
                                init="fnet"), **keys}, lambda_ramp=ramp)
    store = Store(store_path)
    ds = PatchDataset(store, store.fields("train"), cfg.patch, mode="foreground",
                      norm="spotlight", seed=0, salt=1)
    torch.manual_seed(seed)
    net = FNet(cfg.depth, cfg.channels, init=cfg.init)
    opt = torch.optim.Adam(net.parameters(), cfg.lr, betas=(cfg.beta1, cfg.beta2))
    b = cfg.batch_size
    for it in range(steps):
        sig, tgt, m = (torch.stack(t) for t in zip(*[ds[it * b + j] for j in range(b)]))
        out = net(sig)
        if cfg.loss == "mse":
            mse, dice, lam = L.mse_loss(out, tgt), torch.tensor(0.0), 1.0
        else:
            lam = cfg.lam_at(it + 1)
            mse = L.masked_mse(out, tgt, m, reduction=cfg.loss_reduction,
                               denominator=cfg.mse_denominator)
            dice = L.dice_loss(L.soft_foreground(out, cfg.k, cfg.dice_probability), m,
                               cfg.eps, reduction=cfg.loss_reduction,
                               denominator=cfg.dice_denominator)
        loss = lam * mse + (1 - lam) * dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 10 == 0 or it == steps - 1:
            o = out.detach()
            print(f"{it:4d} mse {mse.item():.3f} dice {dice.item():.3f} bg {o[~m].mean():+.2f} "
                  f"fg {o[m].mean():+.2f} bg<0 {(o[~m] < 0).float().mean():.2f} "
                  f"fg>=0 {(o[m] >= 0).float().mean():.2f} "
                  f"headbias {net.head.bias.item():+.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
