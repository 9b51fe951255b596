"""F-net: the U-Net of Ounkomol et al. 2018 (AllenCellModeling/pytorch_fnet ``fnet_nn_3d``
and, for single-plane fields, its 2D twin ``fnet_nn_2d``).

Architecture (depth ``d``, base channels ``c``; the paper's default d=4, c=32):

- level 0 maps ``in_channels -> c``; level ``i`` works at ``c * 2**i`` channels,
  so depth 4 gives 1 -> 32 -> 64 -> 128 -> 256 -> 512;
- every level: two [Conv3d 3x3x3, padding 1 -> BatchNorm3d -> ReLU];
- down: Conv3d kernel 2, stride 2 -> BatchNorm3d -> ReLU (channels unchanged),
  then the next level doubles the channels in its first convolution;
- up: ConvTranspose3d kernel 2, stride 2 (channels halve) -> BatchNorm3d -> ReLU,
  concatenated with the skip connection, then the level's second pair of convs
  (2n -> n, n -> n);
- output: Conv3d 3x3x3, padding 1, to ``out_channels``; no norm, no ReLU.

Spatial sizes must be divisible by ``2**depth`` (:attr:`FNet.divisor`).

``spatial_dims=2`` builds the same network from Conv2d / BatchNorm2d /
ConvTranspose2d (the reference implementation's 2D F-net). It takes (B, C, Y, X)
batches and also the stores' (B, C, 1, Y, X) single-plane batches, returned in the
shape they came in, so the sampler, cache, tiler and trainer need not know the
difference (:mod:`spotlight_scale.core.dims`).

Initialisation (``init="fnet"``, the default) is the reference implementation's
(pytorch_fnet ``fnet_model._weights_init``, applied by its ``Model`` by default):
every convolution and transposed convolution weight ~ N(0, 0.02), BatchNorm weight
~ N(1, 0.02) and bias 0; convolution biases keep PyTorch's default. ``init="torch"``
keeps PyTorch's defaults everywhere (what this project used before).
"""

from __future__ import annotations

import torch
from torch import nn


#: Weight initialisations: the reference implementation's, or PyTorch's defaults.
INITS = ("fnet", "torch")


#: Spatial dimensionalities: 3 (z-stacks, the paper) or 2 (single planes).
SPATIAL_DIMS = (2, 3)

_LAYERS = {3: (nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d),
           2: (nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d)}


def _fnet_init(m: nn.Module) -> None:
    """pytorch_fnet's ``_weights_init`` (DCGAN-style), module by module."""
    if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _double_conv(cin: int, cout: int, dims: int = 3) -> nn.Sequential:
    conv, norm, _ = _LAYERS[dims]
    return nn.Sequential(
        conv(cin, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True),
    )


class FNet(nn.Module):
    """U-Net for label-free prediction (F-net), 3D or 2D.

    Parameters
    ----------
    depth : int
        Number of down/up-sampling steps (4 in the paper).
    channels : int
        Channels of the first level (32 in the paper); doubled at every level.
    in_channels, out_channels : int
        Input and output channels (1 and 1: transmitted light -> Hoechst).
    spatial_dims : {3, 2}
        3 for z-stacks, 2 for single planes.
    """

    def __init__(self, depth: int = 4, channels: int = 32, in_channels: int = 1,
                 out_channels: int = 1, init: str = "fnet", spatial_dims: int = 3):
        super().__init__()
        if depth < 0 or channels < 1:
            raise ValueError(f"depth must be >= 0 and channels >= 1, got {depth}, {channels}")
        if init not in INITS:
            raise ValueError(f"unknown F-net initialisation {init!r}; expected one of {INITS}")
        if spatial_dims not in SPATIAL_DIMS:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = int(spatial_dims)
        conv, norm, up = _LAYERS[self.spatial_dims]
        self.depth, self.channels = int(depth), int(channels)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        widths = [channels * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            self.encoders.append(_double_conv(cin, w, self.spatial_dims))
            if i < depth:
                self.downs.append(nn.Sequential(conv(w, w, 2, stride=2),
                                                norm(w), nn.ReLU(inplace=True)))
                self.ups.append(nn.Sequential(up(2 * w, w, 2, stride=2),
                                              norm(w), nn.ReLU(inplace=True)))
                self.decoders.append(_double_conv(2 * w, w, self.spatial_dims))
            cin = w
        self.head = conv(widths[0], out_channels, 3, padding=1)
        if init == "fnet":
            self.apply(_fnet_init)

    @property
    def divisor(self) -> int:
        """Spatial sizes must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def config(self) -> dict:
        return {"depth": self.depth, "channels": self.channels,
                "in_channels": self.in_channels, "out_channels": self.out_channels,
                "spatial_dims": self.spatial_dims}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planes = self.spatial_dims == 2 and x.ndim == 5
        if planes:  # a batch of single-plane fields (B, C, 1, Y, X)
            if x.shape[2] != 1:
                raise ValueError(f"a 2D F-net takes (B, C, Y, X) or (B, C, 1, Y, X) batches, "
                                 f"got {tuple(x.shape)} (a z-stack needs a 3D F-net)")
            return self.forward(x[:, :, 0])[:, :, None]
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"a {self.spatial_dims}D F-net takes "
                             f"{self.spatial_dims + 2}-D batches, got {tuple(x.shape)}")
        bad = [s for s in x.shape[2:] if s % self.divisor]
        if bad:
            raise ValueError(f"F-net of depth {self.depth} needs spatial sizes divisible by "
                             f"{self.divisor}, got {tuple(x.shape[2:])}")
        skips = []
        for i in range(self.depth):
            x = self.encoders[i](x)
            skips.append(x)
            x = self.downs[i](x)
        x = self.encoders[self.depth](x)
        for i in reversed(range(self.depth)):
            x = self.ups[i](x)
            x = self.decoders[i](torch.cat([skips[i], x], dim=1))
        return self.head(x)
