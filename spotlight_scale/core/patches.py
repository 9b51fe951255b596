"""Foreground patch index: which training patches hold enough foreground.

Spotlight keeps a training patch only when at least ``min_fraction`` (0.1 %)
of its voxels are foreground (target >= Otsu). Candidate origins lie on a
stride grid along each axis, ``0, s, 2s, ...`` up to ``n - p``, plus the last
valid origin ``n - p`` so the far edge is covered. The foreground fraction of
every candidate is computed at once: the mask is first summed into the slabs
between consecutive patch starts/ends along each axis (one reduction pass over
the volume), and a summed-area table over that small array gives every patch's
count by inclusion-exclusion, so the cost is one pass over the volume,
independent of the number of patches.
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


def _segment_sums(a: np.ndarray, starts: np.ndarray, axis: int, dtype) -> np.ndarray:
    """Sums of ``a`` over ``[starts[i], starts[i+1])`` along ``axis`` (the last to the end).

    Like ``np.add.reduceat`` but a slab sum per segment, which numpy runs several
    times faster along the leading axis.
    """
    ends = np.append(starts[1:], a.shape[axis])
    moved = np.moveaxis(a, axis, 0)
    out = np.stack([moved[b:e].sum(axis=0, dtype=dtype) for b, e in zip(starts, ends)])
    return np.moveaxis(out, 0, axis)


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
    pz, py, px = (int(p) for p in patch)
    # int32 holds counts of up to 2**31 voxels (a 1290^3 volume); int64 beyond that
    dt = np.int32 if fg.size < 2**31 else np.int64
    # prefix sums are needed only at patch starts and ends along each axis: reduce the
    # mask to those slabs axis by axis (one pass over the volume), then a summed-area
    # table over the small reduced array
    red = fg.view(np.uint8) if fg.dtype == np.bool_ else fg
    where = []
    for axis, (g, p) in enumerate(zip((gz, gy, gx), (pz, py, px))):
        n = fg.shape[axis]
        cuts = np.unique(np.concatenate([[0], g, g + p]))
        starts = cuts[cuts < n]
        if len(starts) > max(n // 4, 1):  # dense grid (small stride): plain prefix sums
            starts = np.arange(n)
        else:
            red = _segment_sums(red, starts, axis, dt)
        red = np.cumsum(red, axis=axis, dtype=dt)
        pad = [(0, 0)] * 3
        pad[axis] = (1, 0)
        red = np.pad(red, pad)  # red[.., j, ..] = prefix sum at points[j]
        points = np.append(starts, n)
        where.append((np.searchsorted(points, g), np.searchsorted(points, g + p)))
    (z0, z1), (y0, y1), (x0, x1) = where
    z0, y0, x0 = np.ix_(z0, y0, x0)
    z1, y1, x1 = np.ix_(z1, y1, x1)
    sat = red
    total = (sat[z1, y1, x1] - sat[z0, y1, x1] - sat[z1, y0, x1] - sat[z1, y1, x0]
             + sat[z0, y0, x1] + sat[z0, y1, x0] + sat[z1, y0, x0] - sat[z0, y0, x0])
    frac = total / float(pz * py * px)
    keep = np.nonzero(frac >= min_fraction)
    origins = np.stack([gz[keep[0]], gy[keep[1]], gx[keep[2]]], axis=1).astype(np.int32)
    return origins.reshape(-1, 3), frac[keep].astype(np.float32)
