"""Training losses: ``mse`` (the F-net baseline) and ``spotlight`` (Kalinin et al. 2025).

Spotlight loss::

    L = lam * masked_mse(pred, target, M) + (1 - lam) * dice(p(pred), M)

with ``M`` the foreground mask (target >= Otsu, see :mod:`spotlight_scale.core.normalize`),
``lam = 0.5`` and the normalised tunable sigmoid (k = -0.95)::

    sigma_k(x) = (x - k x) / (k - 2 k |x| + 1)

**What the paper leaves open, and the defaults.** The paper does not say how
``sigma_k`` becomes a probability for Dice, which Dice denominator is used, over
what the terms are averaged, or what the masked MSE is divided by. The defaults
follow the authors' own code (``WMSEDiceLoss`` in alxndrkalinin/pytorch_fnet,
commit 4c89860; read, not copied):

- ``p = clamp((sigma_k(x) + 1) / 2, 0, 1)`` (``probability="shifted"``): the
  threshold x = 0 maps to p = 0.5, where the mask switches; the clamp only cuts
  sigma_k's 2.6 % overshoot (it saturates at +-1.95/1.9). VisCy's
  ``clamp(sigma_k(x), 0, 1)`` is ``probability="clamp"``.
- V-Net Dice ``1 - (2 sum(p m) + eps) / (sum(p^2) + sum(m^2) + eps)``
  (``dice_denominator="squared"``; Sorensen ``sum(p) + sum(m)`` is ``"linear"``),
  eps = 1e-6, so an empty mask with an empty prediction scores 0.
- masked MSE ``sum(M (pred - target)^2) / N`` over all N voxels
  (``mse_denominator="all"``; ``"foreground"`` divides by ``|M|`` instead, 0 when M
  is empty).
- both terms over the whole batch (``reduction="batch"``; ``"patch"``: per patch,
  then averaged).

Which of these choices decides whether background ends below the threshold was
settled by runs, not by argument: see ``docs/benchmark/README.md``. In short, with
Sorensen Dice and foreground-normalised MSE (the loss this project shipped first)
the network's common mode is pushed into sigma_k's saturation within a few
iterations, where Dice has no gradient left, and it stays there; V-Net Dice has a
restoring force towards p ~ sqrt(|M|/N) and the all-voxel MSE is ~11x weaker on
these screens.

Beyond the paper (off by default): ``lambda_ramp`` in the train config raises the
MSE weight from 0 to ``lam`` over the first iterations.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch

K_DEFAULT = -0.95
LAMBDA_DEFAULT = 0.5
EPS_DEFAULT = 1e-6


def tunable_sigmoid(x: torch.Tensor, k: float = K_DEFAULT) -> torch.Tensor:
    """The normalised tunable sigmoid ``(x - kx) / (k - 2k|x| + 1)``."""
    if not -1 < k < 0:
        raise ValueError(f"k must be in (-1, 0) for a bounded sigmoid, got {k}")
    return (x - k * x) / (k - 2 * k * x.abs() + 1)


#: How ``sigma_k`` becomes the foreground probability of the Dice term (the paper is silent).
PROBABILITIES = ("clamp", "shifted")
#: Over what the two terms are averaged (the paper is silent).
REDUCTIONS = ("batch", "patch")
#: The Dice denominator: Sorensen ``sum(p) + sum(m)`` or V-Net ``sum(p^2) + sum(m^2)``.
DICE_DENOMINATORS = ("linear", "squared")
#: What the masked squared error is divided by: the foreground voxels or all voxels.
MSE_DENOMINATORS = ("foreground", "all")
#: Where the squared error is taken: over the foreground mask (the paper) or over every voxel
#: (beyond the paper: an ablation that gives the background the F-net's MSE back).
MSE_REGIONS = ("foreground", "all")


def soft_foreground(x: torch.Tensor, k: float = K_DEFAULT, probability: str = "shifted"
                    ) -> torch.Tensor:
    """Foreground probability used by Dice.

    ``"clamp"``: ``clamp(sigma_k(x), 0, 1)`` (VisCy's SpotlightLoss): 0 at and below the
    threshold, rising steeply to ~0.8 at x = 0.1. ``"shifted"``: ``clamp((sigma_k(x) + 1) / 2,
    0, 1)``: 0.5 at the threshold.
    """
    s = tunable_sigmoid(x, k)
    if probability == "clamp":
        return s.clamp(0, 1)
    if probability == "shifted":
        return ((s + 1) / 2).clamp(0, 1)
    raise ValueError(f"unknown Dice probability mapping {probability!r}; expected one of "
                     f"{PROBABILITIES}")


def _sum(x: torch.Tensor, per_patch: bool) -> torch.Tensor:
    return x.flatten(1).sum(1) if per_patch else x.sum()


def dice_loss(prob: torch.Tensor, mask: torch.Tensor, eps: float = EPS_DEFAULT, *,
              reduction: str = "batch", denominator: str = "linear") -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum(p m) + eps) / (D + eps)``.

    ``denominator="linear"``: ``D = sum(p) + sum(m)`` (Sorensen); ``"squared"``:
    ``D = sum(p^2) + sum(m^2)`` (V-Net, Milletari et al. 2016). ``reduction="batch"`` sums
    over the whole batch; ``"patch"`` computes one Dice per patch (first axis) and averages.
    """
    _check(reduction, REDUCTIONS, "loss reduction")
    _check(denominator, DICE_DENOMINATORS, "Dice denominator")
    per = reduction == "patch"
    m = mask.to(prob.dtype)
    inter = _sum(prob * m, per)
    den = (_sum(prob, per) + _sum(m, per) if denominator == "linear"
           else _sum(prob * prob, per) + _sum(m, per))
    return (1 - (2 * inter + eps) / (den + eps)).mean()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *,
               reduction: str = "batch", denominator: str = "foreground") -> torch.Tensor:
    """Squared error summed over the voxels where ``mask`` is true, divided by the number of
    those voxels (``denominator="foreground"``, 0 if there are none) or by the number of all
    voxels (``"all"``: ``mean(mask * (pred - target)^2)``).

    ``reduction="batch"`` pools the whole batch; ``"patch"`` averages per-patch values (with
    the foreground denominator, over the patches that have foreground).
    """
    _check(reduction, REDUCTIONS, "loss reduction")
    _check(denominator, MSE_DENOMINATORS, "masked MSE denominator")
    per = reduction == "patch"
    m = mask.to(pred.dtype)
    sse = _sum((pred - target) ** 2 * m, per)
    if denominator == "all":
        return (sse / (m[0].numel() if per else m.numel())).mean()
    count = _sum(m, per)
    each = torch.where(count > 0, sse / count.clamp_min(1), sse * 0)
    if not per:
        return each
    has = (count > 0).to(pred.dtype)
    return (each * has).sum() / has.sum().clamp_min(1)


def _check(value: str, allowed: tuple, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {allowed}")


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
             ) -> torch.Tensor:
    """Plain MSE over every voxel (the F-net baseline); ``mask`` is ignored."""
    return torch.mean((pred - target) ** 2)


def spotlight_loss(pred, target, mask, *, lam: float = LAMBDA_DEFAULT, k: float = K_DEFAULT,
                   eps: float = EPS_DEFAULT, probability: str = "shifted",
                   reduction: str = "batch", dice_denominator: str = "squared",
                   mse_denominator: str = "all", mse_region: str = "foreground") -> torch.Tensor:
    """``lam * masked_mse + (1 - lam) * dice(soft_foreground(pred), mask)``.

    ``mse_region="all"`` takes the squared error over every voxel instead of the mask (not
    the paper's loss: plain MSE beside the Dice term).
    """
    if not 0 <= lam <= 1:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    _check(mse_region, MSE_REGIONS, "MSE region")
    where = mask if mse_region == "foreground" else torch.ones_like(mask)
    return lam * masked_mse(pred, target, where, reduction=reduction,
                            denominator=mse_denominator) + (1 - lam) * dice_loss(
        soft_foreground(pred, k, probability), mask, eps, reduction=reduction,
        denominator=dice_denominator)


def get_loss(name: str, **kw) -> Callable:
    """``mse`` or ``spotlight`` (keywords of :func:`spotlight_loss`) as ``f(pred, target, mask)``."""
    if name == "mse":
        return mse_loss
    if name == "spotlight":
        return partial(spotlight_loss, **kw)
    raise ValueError(f"unknown loss {name!r}; expected 'mse' or 'spotlight'")
