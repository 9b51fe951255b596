"""Training configuration: the paper's protocol as defaults (F-net, Ounkomol et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.losses import (DICE_DENOMINATORS, MSE_DENOMINATORS, MSE_REGIONS, PROBABILITIES,
                           REDUCTIONS)
from ..models.fnet import INITS


#: The default training patch (Z, Y, X) of a store of z-stacks (the paper's) and of
#: single-plane fields (2D F-net).
DEFAULT_PATCH = {3: (32, 64, 64), 2: (1, 64, 64)}


def field_patch(patch, planar: bool) -> tuple[int, int, int]:
    """The Z,Y,X training patch for a store of single-plane (``planar``) or 3D fields.

    ``None`` gives :data:`DEFAULT_PATCH`; ``(Y, X)`` means ``(1, Y, X)``. A patch of
    several z planes on a 2D store, or of one plane on a store of z-stacks, is an error.
    """
    if patch is None:
        return DEFAULT_PATCH[2 if planar else 3]
    patch = tuple(int(p) for p in patch)
    if len(patch) == 2:
        patch = (1, *patch)
    if planar and patch[0] != 1:
        raise ValueError(f"config key 'patch' {patch}: the store holds 2D (single-plane) "
                         "fields; give the patch as Y,X (e.g. --patch 64,64)")
    if not planar and patch[0] == 1:
        raise ValueError(f"config key 'patch' {patch}: the store holds z-stacks, for which "
                         "the 3D F-net needs patches of several z planes (Z,Y,X)")
    return patch


@dataclass
class TrainConfig:
    """Every key can be set in ``--config FILE.yaml``; CLI flags override the file.

    Defaults are the published protocol: Adam (lr 1e-3, betas 0.5/0.999),
    batch 24, 32x64x64 patches (64x64 on a store of single-plane fields), 50 000 iterations, F-net depth 4 / 32 channels,
    Spotlight loss with lambda 0.5 and k -0.95. On a CPU use small settings.
    """

    loss: str = "spotlight"  # mse | spotlight
    normalization: str | None = None  # fnet | spotlight; None: follows the loss
    sampling: str | None = None  # uniform | foreground; None: follows the loss
    iterations: int = 50_000
    batch_size: int = 24  # global batch, split across DDP ranks
    micro_batch: int | None = None  # per forward pass (gradient accumulation); None: whole local batch
    # Z,Y,X for z-stacks; Y,X (or 1,Y,X) for single-plane (2D) stores; None: the default of
    # the store's kind (DEFAULT_PATCH), resolved by the trainer from the stored fields
    patch: tuple[int, ...] | None = None
    depth: int = 4
    channels: int = 32
    init: str = "fnet"  # fnet (the reference implementation's N(0, 0.02)) | torch (PyTorch's)
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    lam: float = 0.5
    k: float = -0.95
    eps: float = 1e-6
    dice_probability: str = "shifted"  # clamp | shifted: how sigma_k becomes p for Dice
    loss_reduction: str = "batch"  # batch | patch: over what both Spotlight terms average
    dice_denominator: str = "squared"  # linear | squared: sum(p)+sum(m) or sum(p^2)+sum(m^2)
    mse_denominator: str = "all"  # foreground | all: masked MSE divided by |M| or N
    # beyond the paper, off by default: the squared error over the foreground (the paper) or
    # over every voxel (an ablation: the background gets F-net's MSE back beside Dice)
    mse_region: str = "foreground"
    # beyond the paper, off by default: the MSE weight rises linearly from 0 to lam over the
    # first lambda_ramp iterations (Dice alone at the start)
    lambda_ramp: int = 0
    seed: int = 0
    device: str = "auto"  # cpu | cuda | auto
    augment: bool = False  # random XY flips and 90-degree rotations
    val_interval: int = 500
    val_batches: int = 4
    checkpoint_interval: int = 500
    num_workers: int = 2
    log_interval: int = 10
    # training data path (issue 16): fields cached on the device, or patches read from the store
    cache: str = "auto"  # auto: cache within the budget, else the store | on | off
    cache_memory_gb: float | None = None  # budget; None: half the free GPU memory / RAM

    @property
    def norm_mode(self) -> str:
        return self.normalization or ("spotlight" if self.loss == "spotlight" else "fnet")

    def loss_settings(self) -> dict:
        """What defines the training objective (recorded in the model file)."""
        out = {"loss": self.loss, "normalization": self.norm_mode, "sampling": self.sampling_mode}
        if self.loss == "spotlight":
            out.update(lam=self.lam, k=self.k, eps=self.eps,
                       dice_probability=self.dice_probability, loss_reduction=self.loss_reduction,
                       dice_denominator=self.dice_denominator,
                       mse_denominator=self.mse_denominator, lambda_ramp=self.lambda_ramp)
            if self.mse_region != "foreground":  # files of the paper's loss stay as they were
                out["mse_region"] = self.mse_region
        return out

    def spotlight_kwargs(self) -> dict:
        """This config's keywords of :func:`~spotlight_scale.core.losses.spotlight_loss`."""
        return dict(lam=self.lam, k=self.k, eps=self.eps, probability=self.dice_probability,
                    reduction=self.loss_reduction, dice_denominator=self.dice_denominator,
                    mse_denominator=self.mse_denominator, mse_region=self.mse_region)

    def lam_at(self, iteration: int) -> float:
        """The MSE weight at a (1-based) training iteration: ``lam``, ramped when asked."""
        if self.lambda_ramp <= 0:
            return self.lam
        return self.lam * min(1.0, (iteration - 1) / self.lambda_ramp)

    @property
    def sampling_mode(self) -> str:
        return self.sampling or ("foreground" if self.loss == "spotlight" else "uniform")

    def validate(self) -> None:
        checks = [
            (self.loss in ("mse", "spotlight"), "loss", "mse or spotlight"),
            (self.normalization in (None, "fnet", "spotlight"), "normalization", "fnet or spotlight"),
            (self.sampling in (None, "uniform", "foreground"), "sampling", "uniform or foreground"),
            (self.iterations >= 1, "iterations", ">= 1"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.micro_batch is None or self.micro_batch >= 1, "micro_batch", ">= 1"),
            (self.patch is None or (len(self.patch) in (2, 3) and min(self.patch) >= 1), "patch",
             "Z,Y,X or Y,X positive ints"),
            (self.depth >= 0 and self.channels >= 1, "depth/channels", "depth >= 0, channels >= 1"),
            (self.init in INITS, "init", " or ".join(INITS)),
            (self.lr > 0, "lr", "> 0"),
            (0 <= self.lam <= 1, "lam", "in [0, 1]"),
            (-1 < self.k < 0, "k", "in (-1, 0)"),
            (self.lambda_ramp >= 0, "lambda_ramp", ">= 0"),
            (self.dice_probability in PROBABILITIES, "dice_probability", " or ".join(PROBABILITIES)),
            (self.loss_reduction in REDUCTIONS, "loss_reduction", " or ".join(REDUCTIONS)),
            (self.dice_denominator in DICE_DENOMINATORS, "dice_denominator",
             " or ".join(DICE_DENOMINATORS)),
            (self.mse_denominator in MSE_DENOMINATORS, "mse_denominator",
             " or ".join(MSE_DENOMINATORS)),
            (self.mse_region in MSE_REGIONS, "mse_region", " or ".join(MSE_REGIONS)),
            (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
             "device", "cpu, cuda or auto"),
            (self.val_interval >= 1 and self.checkpoint_interval >= 1, "intervals", ">= 1"),
            (self.num_workers >= 0, "num_workers", ">= 0"),
            (self.cache in ("auto", "on", "off"), "cache", "auto, on or off"),
            (self.cache_memory_gb is None or self.cache_memory_gb > 0, "cache_memory_gb", "> 0"),
        ]
        for ok, key, what in checks:
            if not ok:
                raise ValueError(f"config key '{key}' must be {what}, got {getattr(self, key, None)!r}")
        patch = tuple(self.patch or DEFAULT_PATCH[3])
        sizes = patch if len(patch) == 2 else patch[1:] if patch[0] == 1 else patch  # plane: y, x
        bad = [p for p in sizes if p % 2**self.depth]
        if bad:
            raise ValueError(f"config key 'patch' {self.patch}: every size must be divisible by "
                             f"2**depth = {2**self.depth}")
