"""Resampling to isotropic voxels (the paper resamples to 0.29 um, cubic).

Images use cubic spline interpolation (order 3) and are clipped and rounded back
to their integer dtype; label images use nearest neighbour (order 0), which
creates no new label ids.
"""

from __future__ import annotations

import numpy as np


def isotropic_shape(shape, voxel_size, target_um: float) -> tuple[int, int, int]:
    """``round(shape * voxel / target)`` per axis (at least 1); a single plane (z = 1, a 2D
    field) stays one plane and is resampled in y and x only."""
    out = tuple(max(1, int(round(n * v / target_um))) for n, v in zip(shape, voxel_size))
    return (1, *out[1:]) if int(shape[0]) == 1 else out


def resample(x: np.ndarray, voxel_size, target_um: float, *, order: int) -> np.ndarray:
    """Resample a ZYX volume from ``voxel_size`` (um) to isotropic ``target_um`` voxels."""
    from scipy import ndimage

    out_shape = isotropic_shape(x.shape, voxel_size, target_um)
    if out_shape == tuple(x.shape):
        return x
    zoom = [o / n for o, n in zip(out_shape, x.shape)]
    if order == 0:
        out = ndimage.zoom(x, zoom, order=0, mode="nearest", grid_mode=True)
    else:
        out = ndimage.zoom(x.astype(np.float32), zoom, order=order, mode="reflect",
                           grid_mode=True)
    if out.shape != out_shape:  # guard against rounding inside zoom
        out = out[tuple(slice(0, s) for s in out_shape)]
    if np.issubdtype(x.dtype, np.integer) and order != 0:
        info = np.iinfo(x.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(x.dtype, copy=False)
