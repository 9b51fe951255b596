"""Writing OME-Zarr (NGFF 0.4 / 0.5) images, labels and HCS plate metadata.

Thin wrappers over ``ome_zarr.writer`` that fix what every stage needs the
same way: CZYX / ZYX axes in micrometres, a pyramid that halves z as well as
y and x, channel names in ``omero`` metadata, and a NGFF 0.5 ``labels`` group
that carries its ``version`` (ome-zarr-py 0.18 omits it, and the independent
validator ``ome-zarr-models`` rightly rejects that).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Pyramid levels stop when the smallest of y/x would fall below this.
MIN_LEVEL_XY = 32
MAX_LEVELS = 5


def pyramid_shapes(shape_zyx: Sequence[int], max_levels: int = MAX_LEVELS) -> list[tuple[int, ...]]:
    """Shapes of a pyramid that halves every axis (ceil) while y/x stay >= MIN_LEVEL_XY."""
    shapes = [tuple(int(s) for s in shape_zyx)]
    while len(shapes) < max_levels:
        nxt = tuple(max(1, -(-s // 2)) for s in shapes[-1])
        if min(nxt[1:]) < MIN_LEVEL_XY:
            break
        shapes.append(nxt)
    return shapes


def downsample_mean(x: np.ndarray) -> np.ndarray:
    """Halve every axis of a ZYX array by 2x2x2 block mean (edge blocks averaged over what exists).

    Integer inputs are rounded back to their dtype.
    """
    from skimage.measure import block_reduce

    out = block_reduce(x.astype(np.float32, copy=False), (2, 2, 2), np.mean)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(x.dtype)
    return out.astype(x.dtype, copy=False)


def downsample_nearest(labels: np.ndarray) -> np.ndarray:
    """Halve every axis of a label image by taking every second voxel (labels stay labels)."""
    return np.ascontiguousarray(labels[::2, ::2, ::2])


def _axes(channel: bool) -> list[dict]:
    space = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    return ([{"name": "c", "type": "channel"}] if channel else []) + space


def _transforms(voxel_size, n_levels: int, channel: bool) -> list[list[dict]]:
    out = []
    for level in range(n_levels):
        scale = [float(v) * 2**level for v in voxel_size]
        out.append([{"type": "scale", "scale": ([1.0] if channel else []) + scale}])
    return out


def omero_metadata(names: Sequence[str], windows: Sequence[tuple[float, float]] | None,
                   dtype, fmt) -> dict:
    """``omero`` block naming the channels, with display windows (e.g. p0.1-p99.9)."""
    colors = {"signal": "FFFFFF", "target": "0000FF", "prediction": "00FFFF"}
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(np.dtype(dtype))
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = -1e30, 1e30
    chans = []
    for i, name in enumerate(names):
        start, end = windows[i] if windows else (lo, hi)
        chans.append({
            "label": name, "color": colors.get(name, "FFFFFF"), "active": True,
            "window": {"start": float(start), "end": float(end), "min": lo, "max": hi},
        })
    return {"channels": chans, "version": fmt.version}


def write_image_czyx(group, levels: Sequence[np.ndarray], *, voxel_size, channel_names,
                     chunks_zyx, fmt, windows=None, name: str = "image") -> None:
    """Write a CZYX multiscale image (``levels[i]`` is level i, all channels).

    ``levels`` may hold numpy or dask arrays; chunks are ``(1, *chunks_zyx)``
    clipped to each level's shape.
    """
    from ome_zarr.writer import write_multiscale

    storage = [{"chunks": (1, *[min(c, s) for c, s in zip(chunks_zyx, lv.shape[1:])])}
               for lv in levels]
    write_multiscale(
        list(levels), group, fmt=fmt, axes=_axes(True),
        coordinate_transformations=_transforms(voxel_size, len(levels), True),
        storage_options=storage, name=name,
        omero=omero_metadata(channel_names, windows, levels[0].dtype, fmt),
    )


def write_labels_zyx(image_group, name: str, levels: Sequence[np.ndarray], *, voxel_size,
                     chunks_zyx, fmt) -> None:
    """Write ZYX labels as NGFF ``labels/<name>`` of ``image_group`` (replacing one of that name)."""
    from ome_zarr.writer import write_multiscale_labels

    if "labels" in image_group and name in image_group["labels"]:
        del image_group["labels"][name]
    storage = [{"chunks": tuple(min(c, s) for c, s in zip(chunks_zyx, lv.shape))} for lv in levels]
    write_multiscale_labels(
        list(levels), image_group, name=name, fmt=fmt, axes=_axes(False),
        coordinate_transformations=_transforms(voxel_size, len(levels), False),
        storage_options=storage,
    )
    _fix_labels_group(image_group["labels"], fmt)


def _fix_labels_group(labels_group, fmt) -> None:
    """Give a NGFF 0.5 ``labels`` group its ``version`` (ome-zarr-py 0.18 leaves it out)."""
    attrs = labels_group.attrs.asdict()
    if fmt.version == "0.5":
        ome = dict(attrs.get("ome", {}))
        if ome.get("version") != "0.5":
            ome["version"] = "0.5"
            labels_group.attrs["ome"] = ome


def write_plate(plate_group, *, name: str, wells: dict[str, list[int]], fmt) -> None:
    """(Re)write HCS plate + well metadata for ``wells`` = {"B03": [0, 1], ...}.

    Called after fields are written, listing only fields that exist, so a
    reader never meets a plate that points at a missing field.
    """
    from ome_zarr.writer import write_plate_metadata, write_well_metadata

    from .store import parse_well

    parsed = {w: parse_well(w) for w in wells}
    rows = sorted({r for r, _ in parsed.values()}, key=lambda r: (len(r), r))
    cols = sorted({c for _, c in parsed.values()}, key=int)
    well_paths = [f"{r}/{c}" for w, (r, c) in sorted(parsed.items())]
    field_count = max((len(f) for f in wells.values()), default=0)
    write_plate_metadata(plate_group, rows, cols, well_paths, fmt=fmt, name=name,
                         field_count=field_count or None)
    for w, (r, c) in parsed.items():
        well_group = plate_group.require_group(r).require_group(c)
        write_well_metadata(well_group, [str(f) for f in sorted(wells[w])], fmt=fmt)
