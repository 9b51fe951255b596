"""The Spotlight effect itself, not the arithmetic: a tiny F-net trained a few hundred steps.

A tiny synthetic volume (ellipsoidal nuclei; the signal carries them as a weak axial
modulation in noise), normalised by the project's own statistics (target: (x - otsu) / std),
a depth-2 / 4-channel F-net with the reference initialisation, 200 Adam steps of the
paper's settings on 8x16x16 patches. Scored on a second, held-out volume: the fraction of
the target's background voxels predicted below the Otsu threshold (0 after normalisation).

The shipped loss must put >= 90 % of the background below the threshold at every seed; the
loss this project shipped first (Sorensen Dice, MSE over the foreground voxels) must not,
whichever probability mapping it uses (docs/benchmark/README.md has the runs behind this).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotlight_scale.core import losses as L
from spotlight_scale.core.normalize import normalize
from spotlight_scale.core.stats import channel_statistics
from spotlight_scale.models.fnet import FNet
from spotlight_scale.train.config import TrainConfig

SEEDS = range(5)
STEPS = 200
BOUND = 0.90


def _volume(seed, shape=(16, 48, 48), n=10, radii=(3, 5, 5)):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    fg = np.zeros(shape, bool)
    for _ in range(n):
        c = [rng.integers(r, s - r) for s, r in zip(shape, radii)]
        fg |= sum(((g - ci) / r) ** 2 for g, ci, r in zip(grid, c, radii)) <= 1
    target = 100 + 800 * fg * (1 + 0.3 * rng.standard_normal(shape)) + rng.normal(0, 20, shape)
    signal = 1000 + 150 * fg * np.cos(grid[0] / 3.0) + rng.normal(0, 30, shape)
    t = torch.from_numpy(normalize(target, channel_statistics(target), "spotlight", "target"))
    s = torch.from_numpy(normalize(signal, channel_statistics(signal), "spotlight", "signal"))
    return s[None, None], t[None, None]


def _train_and_score(seed, changes, patch=(8, 16, 16), batch=4):
    cfg = TrainConfig()  # the paper's optimiser settings; init and loss as shipped
    loss_kw = {**cfg.spotlight_kwargs(), **changes}
    sig, tgt = _volume(seed)
    torch.manual_seed(seed)
    net = FNet(depth=2, channels=4, init=cfg.init)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        origin = [torch.randint(0, n - p + 1, (batch,), generator=gen)
                  for n, p in zip(tgt.shape[2:], patch)]
        crop = lambda a: torch.cat([a[..., z:z + patch[0], y:y + patch[1], x:x + patch[2]]
                                    for z, y, x in zip(*origin)])
        s, t = crop(sig), crop(tgt)
        loss = L.spotlight_loss(net(s), t, t >= 0, **loss_kw)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    sig, tgt = _volume(1000 + seed)
    with torch.no_grad():
        pred = net(sig)
    fg = tgt >= 0  # the target's Otsu threshold after normalisation
    return float((pred[~fg] < 0).float().mean()), float((pred[fg] >= 0).float().mean())


def test_shipped_spotlight_loss_puts_background_below_the_threshold():
    scores = [_train_and_score(s, {}) for s in SEEDS]
    below = [b for b, _ in scores]
    above = [a for _, a in scores]
    assert min(below) >= BOUND, f"background below threshold per seed: {below}"
    # and not by predicting everything below: the nuclei stay above
    assert min(above) >= 0.8, f"foreground above threshold per seed: {above}"


@pytest.mark.parametrize("probability", ["shifted", "clamp"])
def test_the_first_shipped_loss_does_not(probability):
    kw = dict(probability=probability, reduction="batch", dice_denominator="linear",
              mse_denominator="foreground")
    below = []
    for seed in SEEDS:  # the first seed below the bound settles it
        below.append(_train_and_score(seed, kw)[0])
        if below[-1] < BOUND:
            break
    assert min(below) < BOUND, f"background below threshold per seed: {below}"
