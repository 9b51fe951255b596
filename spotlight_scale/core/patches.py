"""Foreground patch index: which training patches hold enough foreground.

Spotlight keeps a training patch only when at least ``min_fraction`` (0.1 %)
of its voxels are foreground (target >= Otsu). Candidate origins lie on a
stride grid along each axis, ``0, s, 2s, ...`` up to ``n - p``, plus the last
valid origin ``n - p`` so the far edge is covered. The foreground fraction of
every candidate is computed at once from a 3D summed-area table, so the cost is
one cumulative sum over the volume, independent of the number of patches.
"""

from __future__ import annotations

import numpy as np


def patch_grid(shape, patch, stride) -> list[np.ndarray]:
    """Candidate origins along each axis (see module docstring)."""
    axes = []
    for name, n, p, s in zip("zyx", shape, patch, stride):
        if p > n:
            raise ValueError(f"patch size {p} along {name} is larger than the field ({n})")
        if s < 1:
            raise ValueError(f"patch stride along {name} must be >= 1, got {s}")
        o = np.arange(0, n - p + 1, s)
        if o[-1] != n - p:
            o = np.append(o, n - p)
        axes.append(o.astype(np.int64))
    return axes


def foreground_patch_origins(fg: np.ndarray, patch, stride, min_fraction: float = 0.001
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Origins (N, 3) int32 and foreground fractions (N,) float32 of qualifying patches.

    Parameters
    ----------
    fg : bool ndarray (Z, Y, X)
        Foreground mask (target >= Otsu threshold).
    patch, stride : tuple of 3 ints
        Patch shape and grid stride (ZYX).
    min_fraction : float
        Keep patches with ``fraction >= min_fraction``.
    """
    if fg.ndim != 3:
        raise ValueError(f"expected a 3D mask, got shape {fg.shape}")
    gz, gy, gx = patch_grid(fg.shape, patch, stride)
    # int32 holds counts of up to 2**31 voxels (a 1290^3 volume); int64 beyond that
    dt = np.int32 if fg.size < 2**31 else np.int64
    sat = np.zeros(tuple(n + 1 for n in fg.shape), dtype=dt)
    np.cumsum(fg, axis=0, dtype=dt, out=sat[1:, 1:, 1:])
    np.cumsum(sat[1:, 1:, 1:], axis=1, out=sat[1:, 1:, 1:])
    np.cumsum(sat[1:, 1:, 1:], axis=2, out=sat[1:, 1:, 1:])
    pz, py, px = (int(p) for p in patch)
    z0, y0, x0 = np.ix_(gz, gy, gx)
    z1, y1, x1 = z0 + pz, y0 + py, x0 + px
    total = (sat[z1, y1, x1] - sat[z0, y1, x1] - sat[z1, y0, x1] - sat[z1, y1, x0]
             + sat[z0, y0, x1] + sat[z0, y1, x0] + sat[z1, y0, x0] - sat[z0, y0, x0])
    frac = total / float(pz * py * px)
    keep = np.nonzero(frac >= min_fraction)
    origins = np.stack([gz[keep[0]], gy[keep[1]], gx[keep[2]]], axis=1).astype(np.int32)
    return origins.reshape(-1, 3), frac[keep].astype(np.float32)
