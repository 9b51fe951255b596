"""The one place that knows 2D from 3D.

A field is stored as CZYX whatever its dimensionality (the layout bioformats2raw and
most HCS writers use for widefield screens: a size-1 ``z``). A field with a single
z plane *is* a 2D field: every stage asks :func:`is_planar` of the field's shape
(or of an array), and picks its 2D or 3D variant from that answer once, not by
testing ``ndim`` in its own code.

For a 2D field the stored voxel size keeps three numbers (NGFF needs a ``z`` scale);
its z value is the manifest's ``voxel_z`` when given, else the y pixel size, and it
is never used in a measurement: :func:`spatial_spacing` drops it.
"""

from __future__ import annotations

from typing import Sequence


def is_planar(shape_zyx: Sequence[int]) -> bool:
    """True for a 2D field: a ZYX shape (or the last three axes of any shape) with one z plane."""
    shape = tuple(int(s) for s in shape_zyx)
    if len(shape) < 3:
        return len(shape) == 2
    return shape[-3] == 1


def spatial_ndim(shape_zyx: Sequence[int]) -> int:
    """2 for a single-plane field, else 3."""
    return 2 if is_planar(shape_zyx) else 3


def spatial_shape(shape_zyx: Sequence[int]) -> tuple[int, ...]:
    """(Y, X) of a 2D field, (Z, Y, X) of a 3D one."""
    shape = tuple(int(s) for s in shape_zyx)[-3:]
    return shape[1:] if is_planar(shape) else shape


def spatial_spacing(shape_zyx: Sequence[int], voxel_size_zyx: Sequence[float]) -> tuple[float, ...]:
    """The voxel (pixel) size along the field's spatial axes: (y, x) in 2D, (z, y, x) in 3D."""
    v = tuple(float(s) for s in voxel_size_zyx)[-3:]
    return v[1:] if is_planar(shape_zyx) else v


def squeeze_plane(array):
    """(..., 1, Y, X) -> (..., Y, X) for a 2D field; a 3D array is returned as it is."""
    return array[..., 0, :, :] if is_planar(array.shape) and array.ndim >= 3 else array


def expand_plane(array, planar: bool):
    """Inverse of :func:`squeeze_plane`: (..., Y, X) -> (..., 1, Y, X) when ``planar``."""
    return array[..., None, :, :] if planar else array
