"""Plausibility checks on input values and sizes, before anything is written.

Each check returns ``None`` when the input is fine, else a short phrase saying
what is wrong; the caller adds the file, channel or manifest line. Limits:

- voxel sizes between ``VOXEL_UM_RANGE`` (0.01 to 100 um): beyond that range
  lies a unit mistake (nm or m for um), not a microscope;
- after resampling, at least ``MIN_AXIS_VOXELS`` voxels on every axis: the
  F-net of the paper (depth 4) halves each axis four times, so a thinner field
  has nothing left at its bottleneck;
- at most ``MAX_FIELD_VOXELS`` voxels per field after resampling: ingest holds a
  field (a few float32 copies) in a worker's memory;
- image values finite and not constant: Otsu's threshold, the foreground mask
  and the normalisation are meaningless on a constant channel;
- ground-truth masks integer-valued and non-negative;
- the type of an image channel one a microscope writes (:func:`dtype_problem`): unsigned
  or signed integers or floats. Refused, naming file and channel: ``bool`` (a mask or
  a threshold, not an image: resampling and Otsu turned 20 % True into a constant
  field), complex numbers, signed integers holding negative values (camera counts are
  never negative: background-subtracted data belong in float32), floats whose range
  ``max - min`` is not finite in float64 or exceeds float32 (statistics and the network
  run in float32). Nothing is converted silently.
"""

from __future__ import annotations

import math

import numpy as np

VOXEL_UM_RANGE = (0.01, 100.0)
MIN_AXIS_VOXELS = 16  # 2**4: the paper's F-net depth
MAX_FIELD_VOXELS = 2**31


def voxel_size_problem(voxel_size) -> str | None:
    """Voxel size (z, y, x) in um outside the plausible range, or not three numbers."""
    try:
        vals = [float(v) for v in voxel_size]
    except (TypeError, ValueError):
        return f"voxel size {voxel_size!r} is not three numbers"
    lo, hi = VOXEL_UM_RANGE
    if len(vals) != 3 or not all(math.isfinite(v) and lo <= v <= hi for v in vals):
        return (f"voxel size {tuple(vals)} um is outside the plausible range {lo}-{hi} um "
                "(a unit mistake?)")
    return None


def field_shape_problem(shape) -> str | None:
    """A (resampled) field shape too thin for the network or too large for a worker."""
    from .dims import spatial_shape

    shape = tuple(int(n) for n in shape)
    if min(spatial_shape(shape)) < MIN_AXIS_VOXELS:  # a 2D field: y and x only
        return (f"gives a field of {shape} voxels: fewer than {MIN_AXIS_VOXELS} on an axis "
                "(the network halves each axis 4 times)")
    if math.prod(shape) > MAX_FIELD_VOXELS:
        return (f"gives a field of {shape} voxels ({math.prod(shape) / 1e9:.3g} G): more than "
                f"{MAX_FIELD_VOXELS / 1e9:.3g} G voxels, beyond what a worker holds; check the "
                "voxel size")
    return None


def dtype_problem(x: np.ndarray) -> str | None:
    """An image whose type cannot be a microscope image (see the module docstring)."""
    dt = x.dtype
    if dt == np.bool_:
        return ("has dtype bool (a mask or a thresholded image, not a microscope image): give "
                "the image itself (uint8, uint16 or float32); a label image goes in path_mask")
    if np.issubdtype(dt, np.complexfloating):
        return f"has dtype {dt} (complex numbers), not a microscope image"
    if not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
        return f"has dtype {dt}, not a numeric image"
    if x.size and np.issubdtype(dt, np.signedinteger) and x.min() < 0:
        return (f"has dtype {dt} with negative values (down to {x.min().item()}): camera counts "
                "are never negative; save background-subtracted data as float32")
    if x.size and np.issubdtype(dt, np.floating) and dt.itemsize > 4:  # float32 always fits
        finite = x[np.isfinite(x)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            limit = float(np.finfo(np.float32).max)
            if not np.isfinite(hi - lo) or max(abs(lo), abs(hi)) > limit:
                return (f"has values from {lo:g} to {hi:g}, beyond the float32 range the "
                        "statistics and the network use")
    return None


def values_problem(x: np.ndarray) -> str | None:
    """A type that cannot be an image (:func:`dtype_problem`), non-finite voxels, or a
    constant volume."""
    if x.size == 0:
        return "is empty"
    problem = dtype_problem(x)
    if problem:
        return problem
    if np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.complexfloating):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            first = np.unravel_index(int(np.argmin(np.isfinite(x))), x.shape)
            return (f"has {bad} non-finite voxel(s) (NaN or inf), the first at ZYX "
                    f"{tuple(int(i) for i in first)}")
    lo, hi = x.min(), x.max()
    if lo == hi:
        return f"is constant (every voxel is {lo.item()}): no foreground can be found"
    return None


def mask_problem(mask: np.ndarray) -> str | None:
    """A ground-truth mask that is not a label image (non-integer or negative values)."""
    if np.issubdtype(mask.dtype, np.bool_):
        return None
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.isfinite(mask)):
            return "has non-finite values; a mask must hold integer labels"
        if not np.array_equal(mask, np.round(mask)):
            return (f"holds non-integer values ({mask.dtype}); a mask must hold integer "
                    "labels (0 = background)")
    elif not np.issubdtype(mask.dtype, np.integer):
        return f"has dtype {mask.dtype}; a mask must hold integer labels"
    if mask.size and mask.min() < 0:
        return "holds negative values; labels are 0 (background) or positive"
    return None
