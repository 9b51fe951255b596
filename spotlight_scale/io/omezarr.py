"""Writing OME-Zarr (NGFF 0.4 / 0.5) images, labels and HCS plate metadata.

Arrays are written with zarr directly and the metadata through ``ome_zarr.writer``
(its own array writers build dask graphs, which inside a Dask worker would ship the
data through the scheduler). What every stage needs is fixed here the
same way: CZYX / ZYX axes in micrometres, a pyramid that halves z as well as
y and x, channel names in ``omero`` metadata, and a NGFF 0.5 ``labels`` group
that carries its ``version`` (ome-zarr-py 0.18 omits it, and the independent
validator ``ome-zarr-models`` rightly rejects that).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..core.dims import is_planar

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


def _block_sums_small_int(x: np.ndarray) -> np.ndarray:
    """float32 sums of the 2x2x2 blocks of an 8- or 16-bit integer ZYX array (a trailing
    half block of an odd length summed over what exists), by pairwise adds along each axis
    in int32. A block sum is below 2^24, so it is exact in float32 in any order: the same
    values as ``block_reduce(x.astype(float32), (2, 2, 2), np.sum)``, about 4x faster."""
    acc = x.astype(np.int32)
    for ax in range(3):
        n = acc.shape[ax]
        even = [slice(None)] * 3
        even[ax] = slice(0, n - n % 2, 2)
        odd = list(even)
        odd[ax] = slice(1, n, 2)
        pairs = acc[tuple(even)] + acc[tuple(odd)]
        if n % 2:  # the last element alone
            last = [slice(None)] * 3
            last[ax] = slice(n - 1, n)
            pairs = np.concatenate([pairs, acc[tuple(last)]], axis=ax)
        acc = pairs
    return acc.astype(np.float32)


def downsample_mean(x: np.ndarray) -> np.ndarray:
    """Halve every axis of a ZYX array by 2x2x2 block mean (edge blocks averaged over what exists).

    Integer inputs are rounded back to their dtype.
    """
    if np.issubdtype(x.dtype, np.integer) and x.dtype.itemsize <= 2:
        sums = _block_sums_small_int(x)
    else:
        from skimage.measure import block_reduce

        sums = block_reduce(x.astype(np.float32, copy=False), (2, 2, 2), np.sum)
    # voxels per block: 2 along an axis except a trailing half block of an odd length
    counts = [np.full(-(-n // 2), 2, np.float32) for n in x.shape]
    for c, n in zip(counts, x.shape):
        if n % 2:
            c[-1] = 1
    out = sums / (counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :])
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


def _transforms(voxel_size, n_levels: int, channel: bool, planar: bool = False
                ) -> list[list[dict]]:
    out = []
    for level in range(n_levels):
        # a single plane (2D field) keeps one z plane at every level: its z scale stays
        scale = [float(v) * (1 if planar and axis == 0 else 2**level)
                 for axis, v in enumerate(voxel_size)]
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


def _compressors(dtype, zarr_format: int):
    """Float images (predictions): Blosc zstd level 1 with byte shuffle, 2.4x faster to write
    than zarr's default zstd and smaller on float32 (benchmarks/README.md); others: zarr's
    default."""
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return "auto"
    if zarr_format == 2:
        from numcodecs import Blosc

        return [Blosc(cname="zstd", clevel=1, shuffle=Blosc.SHUFFLE)]
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


#: Every chunk assigned is stored, also one equal to the fill value: an absent chunk then
#: means lost data, which reads refuse (:mod:`spotlight_scale.io.chunks`).
_ARRAY_CONFIG = {"write_empty_chunks": True}


def _level_nodes(prefix: str, shapes, dtype, lead, chunks_zyx, fmt) -> dict:
    """``{prefix + "s0": metadata, ...}``: the zarr metadata :func:`_create_levels` gives
    these levels (made once per kind of field, in memory, by that function itself)."""
    return {prefix + path: md for path, md in
            _cached_level_metadata(tuple(map(tuple, shapes)), np.dtype(dtype).str, tuple(lead),
                                   tuple(chunks_zyx), fmt.zarr_format).items()}


@functools.lru_cache(maxsize=64)
def _cached_level_metadata(shapes, dtype: str, lead, chunks_zyx, zarr_format: int) -> dict:
    import zarr
    from zarr.storage import MemoryStore

    group = zarr.open_group(MemoryStore(), mode="w", zarr_format=zarr_format)
    arrays = _create_levels(group, shapes, np.dtype(dtype), lead, chunks_zyx, zarr_format)
    return {path: arr.metadata for path, arr in zip(_level_paths(len(shapes)), arrays)}


def write_nodes(root, nodes: dict, *, groups_exist_ok: bool = False) -> dict:
    """Write the zarr metadata ``nodes`` (``{path: GroupMetadata | ArrayMetadata}``, paths
    relative to the local folder ``root``) as zarr's own documents (``zarr.json``, or
    ``.zgroup``/``.zarray`` + ``.zattrs``), one plain file each, and return the arrays
    (``{path: zarr.Array}``, storing every chunk: :data:`_ARRAY_CONFIG`) without reading
    anything back.

    Each document is created exclusively: one that exists already is an error, or, with
    ``groups_exist_ok``, left as it is where it belongs to a group (another process made
    the same well group). Why not ``zarr.create_hierarchy``, which writes the same
    documents: it writes them as concurrent tasks and, when one fails (a full disk), leaves
    the others' errors unretrieved, which asyncio then prints as tracebacks (zarr 3.1.6);
    here the first error is raised and nothing else is left running.
    """
    from pathlib import Path

    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.group import GroupMetadata
    from zarr.storage import LocalStore, StorePath

    root = Path(root)
    store = LocalStore(str(root))
    arrays = {}
    for path, md in nodes.items():
        folder = root / path if path else root
        folder.mkdir(parents=True, exist_ok=True)
        is_group = isinstance(md, GroupMetadata)
        for name, buf in md.to_buffer_dict(default_buffer_prototype()).items():
            try:
                with open(folder / name, "xb") as fh:
                    fh.write(buf.to_bytes())
            except FileExistsError:
                if not (is_group and groups_exist_ok):
                    raise
        if not is_group:
            arrays[path] = zarr.Array(zarr.AsyncArray(metadata=md, store_path=StorePath(
                store, path), config=_ARRAY_CONFIG))
    return arrays


def _level_paths(n: int) -> list[str]:
    """Names of a pyramid's ``n`` level arrays."""
    return [f"s{level}" for level in range(n)]


def _create_levels(group, shapes, dtype, lead: tuple[int, ...], chunks_zyx,
                   zarr_format: int) -> list:
    """Empty arrays ``s0, s1, ...`` of ``(*lead, *shape)`` for each ZYX level shape, which
    store every chunk assigned (:data:`_ARRAY_CONFIG`)."""
    kwargs = {}
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = (["c"] if lead else []) + ["z", "y", "x"]
    arrays = []
    for path, shape in zip(_level_paths(len(shapes)), shapes):
        chunks = (*[1] * len(lead), *[max(1, min(c, s)) for c, s in zip(chunks_zyx, shape)])
        arrays.append(group.create_array(path, shape=(*lead, *shape), chunks=chunks,
                                         dtype=dtype, fill_value=0,
                                         compressors=_compressors(dtype, zarr_format),
                                         overwrite=True,
                                         config=_ARRAY_CONFIG, **kwargs))
    return arrays


def _datasets(voxel_size, n_levels: int, channel: bool, planar: bool = False) -> list[dict]:
    return [{"path": p, "coordinateTransformations": t}
            for p, t in zip(_level_paths(n_levels), _transforms(voxel_size, n_levels, channel,
                                                                planar))]


def create_image_czyx(group, shape_zyx: Sequence[int], dtype, *, voxel_size, channel_names,
                      chunks_zyx, fmt, windows=None, name: str = "image",
                      n_levels: int | None = None) -> list:
    """Create an empty CZYX multiscale image (``s0, s1, ...``) with its NGFF metadata.

    Arrays are created with zarr directly (chunks ``(1, *chunks_zyx)`` clipped to
    each level, the codec of :func:`_compressors`, ``dimension_names`` on zarr v3) and the
    ``multiscales`` and ``omero`` metadata are written through ome-zarr-py. The
    levels follow :func:`pyramid_shapes`. Returns the arrays, level 0 first; fill
    them by assignment (:func:`fill_pyramid` computes levels >= 1 from level 0).
    (ome-zarr-py's own writers go through a dask graph; inside a Dask worker that
    graph, data included, would travel through the scheduler.)
    """
    shapes = pyramid_shapes(shape_zyx)[:n_levels]
    arrays = _create_levels(group, shapes, dtype, (len(channel_names),), chunks_zyx,
                            fmt.zarr_format)
    _image_metadata(group, shape_zyx, dtype, len(shapes), voxel_size=voxel_size,
                    channel_names=channel_names, fmt=fmt, windows=windows, name=name)
    return arrays


def _image_metadata(group, shape_zyx, dtype, n_levels: int, *, voxel_size, channel_names, fmt,
                    windows, name: str) -> None:
    """The NGFF ``multiscales`` and ``omero`` metadata of a CZYX image, through ome-zarr-py."""
    from ome_zarr.writer import write_multiscales_metadata

    write_multiscales_metadata(group, datasets=_datasets(voxel_size, n_levels, True,
                                                         is_planar(shape_zyx)),
                               fmt=fmt, axes=_axes(True), name=name,
                               metadata={"omero": omero_metadata(channel_names, windows, dtype,
                                                                 fmt)})


def fill_pyramid(arrays: Sequence, *, labels: bool = False) -> None:
    """Compute levels 1.. of a CZYX or ZYX pyramid from level 0, one output chunk at a time.

    Each output chunk reads the 2x larger region of the level above (memory: a
    chunk, never the level) and writes whole chunks: the same values as
    :func:`downsample_mean` (or :func:`downsample_nearest` for ``labels``) of the
    whole level.
    """
    import itertools

    down = downsample_nearest if labels else downsample_mean
    for src, dst in zip(arrays[:-1], arrays[1:]):
        lead = src.ndim - 3
        grid = [range(0, n, c) for n, c in zip(dst.shape[lead:], dst.chunks[lead:])]
        for c in itertools.product(*(range(n) for n in dst.shape[:lead])):
            for origin in itertools.product(*grid):
                out = tuple(slice(o, min(o + k, n)) for o, k, n in
                            zip(origin, dst.chunks[lead:], dst.shape[lead:]))
                inp = tuple(slice(2 * s.start, min(2 * s.stop, n))
                            for s, n in zip(out, src.shape[lead:]))
                dst[(*c, *out)] = down(np.asarray(src[(*c, *inp)]))


def write_image_czyx(group, levels: Sequence[np.ndarray], *, voxel_size, channel_names,
                     chunks_zyx, fmt, windows=None, name: str = "image") -> None:
    """Write a CZYX multiscale image held in memory (``levels[i]`` is level i, all channels).

    Chunks are ``(1, *chunks_zyx)`` clipped to each level's shape; see
    :func:`create_image_czyx`.
    """
    arrays = create_image_czyx(group, levels[0].shape[1:], levels[0].dtype,
                               voxel_size=voxel_size, channel_names=channel_names,
                               chunks_zyx=chunks_zyx, fmt=fmt, windows=windows, name=name,
                               n_levels=len(levels))
    for arr, level in zip(arrays, levels):
        if tuple(arr.shape) != tuple(level.shape):
            raise ValueError(f"level of shape {level.shape} where {arr.shape} was expected")
        arr[...] = np.asarray(level)


def label_colors(values) -> list[dict]:
    """NGFF ``colors`` for label ``values``: a fixed, well-spread hue per value (golden-ratio
    steps, so neighbouring labels differ), opaque; background 0 is left to the viewer."""
    import colorsys

    out = []
    for v in values:
        if int(v) == 0:
            continue
        r, g, b = colorsys.hsv_to_rgb((int(v) * 0.618033988749895) % 1.0, 0.75, 1.0)
        out.append({"label-value": int(v), "rgba": [round(255 * r), round(255 * g),
                                                    round(255 * b), 255]})
    return out


def create_labels_zyx(image_group, name: str, shapes: Sequence[Sequence[int]], dtype, *,
                      voxel_size, chunks_zyx, fmt, values,
                      properties: Sequence[dict] | None = None) -> list:
    """Create empty ZYX labels ``labels/<name>`` of ``image_group`` (``s0, s1, ...`` of
    ``shapes``) with their NGFF metadata; returns the arrays, level 0 first.

    Arrays are created with zarr directly, the ``multiscales`` and ``image-label``
    metadata written through ome-zarr-py (see :func:`create_image_czyx`). ``image-label``
    names its ``source.image`` (the image group, ``../../``), a color per label value in
    ``values`` (:func:`label_colors`) and ``properties``: one dict per label value with
    ``label-value`` and a few per-nucleus features that viewers show (napari does).
    """
    group = image_group.require_group("labels").require_group(name)
    arrays = _create_levels(group, shapes, dtype, (), chunks_zyx, fmt.zarr_format)
    _labels_metadata(image_group, name, shapes, voxel_size=voxel_size, fmt=fmt, values=values,
                     properties=properties)
    return arrays


def _labels_metadata(image_group, name: str, shapes, *, voxel_size, fmt, values,
                     properties) -> None:
    """The NGFF ``multiscales`` and ``image-label`` metadata of ``labels/<name>`` and the
    ``labels`` group's list, through ome-zarr-py."""
    from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

    group = image_group.require_group("labels").require_group(name)
    write_multiscales_metadata(group, datasets=_datasets(voxel_size, len(shapes), False,
                                                         is_planar(shapes[0])),
                               fmt=fmt, axes=_axes(False), name=name)
    write_label_metadata(image_group["labels"], name, fmt=fmt, colors=label_colors(values),
                         properties=list(properties) if properties is not None else None,
                         source={"image": "../../"})
    _fix_labels_group(image_group["labels"], fmt)


def _label_values(levels, properties) -> list:
    if properties is not None:
        return [p["label-value"] for p in properties]
    return np.unique(np.asarray(levels[0])).tolist()


def write_labels_zyx(image_group, name: str, levels: Sequence[np.ndarray], *, voxel_size,
                     chunks_zyx, fmt, properties: Sequence[dict] | None = None) -> None:
    """Write ZYX labels as NGFF ``labels/<name>`` of ``image_group`` (replacing one of that
    name): :func:`create_labels_zyx`, then the levels' data."""
    delete_labels(image_group, name)
    arrays = create_labels_zyx(image_group, name, [tuple(lv.shape) for lv in levels],
                               levels[0].dtype, voxel_size=voxel_size, chunks_zyx=chunks_zyx,
                               fmt=fmt, values=_label_values(levels, properties),
                               properties=properties)
    for arr, level in zip(arrays, levels):
        arr[...] = np.asarray(level)


def write_image_tree(path, levels: Sequence[np.ndarray], *, voxel_size, channel_names,
                     chunks_zyx, fmt, windows=None, name: str = "image",
                     labels: dict[str, tuple[Sequence[np.ndarray], Sequence[dict] | None]]
                     | None = None, attributes: dict | None = None) -> None:
    """Write a whole new image group at ``path``: the CZYX pyramid ``levels`` (as
    :func:`write_image_czyx`), its ``labels`` (``{name: (levels, properties)}``, as
    :func:`write_labels_zyx`) and extra group ``attributes``, its ~10 metadata documents
    written as plain files.

    The metadata are first made in memory by the functions that write an image or labels
    into an existing group (:func:`create_image_czyx`, :func:`create_labels_zyx`) use: the
    NGFF attributes through ome-zarr-py, the arrays' zarr metadata by
    :func:`_create_levels` (once per kind of field), so they are the same documents, and
    :func:`write_nodes` writes them: one file each, where creating the nodes one by one
    through zarr costs several file operations each. ``path`` must not hold a zarr node.
    """
    import zarr
    from zarr.storage import MemoryStore

    tree = zarr.open_group(MemoryStore(), mode="w", zarr_format=fmt.zarr_format)
    image = levels[0]
    _image_metadata(tree, image.shape[1:], image.dtype, len(levels), voxel_size=voxel_size,
                    channel_names=channel_names, fmt=fmt, windows=windows, name=name)
    nodes = _level_nodes("", [lv.shape[1:] for lv in levels], image.dtype, image.shape[:1],
                         chunks_zyx, fmt)
    data = dict(zip(nodes, levels))
    for label, (lv, properties) in (labels or {}).items():
        shapes = [tuple(x.shape) for x in lv]
        _labels_metadata(tree, label, shapes, voxel_size=voxel_size, fmt=fmt,
                         values=_label_values(lv, properties), properties=properties)
        arrays = _level_nodes(f"labels/{label}/", shapes, lv[0].dtype, (), chunks_zyx, fmt)
        nodes.update(arrays)
        data.update(zip(arrays, lv))
    if attributes:
        tree.attrs.update(attributes)
    nodes.update({"": tree.metadata,  # and the groups (the arrays are not in the tree)
                  **{p: g.metadata for p, g in tree.members(max_depth=None)}})
    created = write_nodes(path, nodes)
    for p, level in data.items():
        arr = created[p]
        if tuple(arr.shape) != tuple(level.shape):
            raise ValueError(f"level of shape {level.shape} where {arr.shape} was expected")
        arr[...] = np.asarray(level)


def delete_labels(image_group, name: str) -> None:
    """Remove ``labels/<name>`` of ``image_group`` and its entry in the labels list."""
    if "labels" not in image_group or name not in image_group["labels"]:
        return
    labels = image_group["labels"]
    del labels[name]
    attrs = labels.attrs.asdict()
    if "ome" in attrs:
        ome = dict(attrs["ome"])
        ome["labels"] = [n for n in ome.get("labels", []) if n != name]
        labels.attrs["ome"] = ome
    else:
        labels.attrs["labels"] = [n for n in attrs.get("labels", []) if n != name]


def _fix_labels_group(labels_group, fmt) -> None:
    """Give a NGFF 0.5 ``labels`` group its ``version`` (ome-zarr-py 0.18 leaves it out), and
    list each label image once (ome-zarr-py appends the name again when one is rewritten)."""
    attrs = labels_group.attrs.asdict()
    if fmt.version == "0.5":
        ome = dict(attrs.get("ome", {}))
        ome["version"] = "0.5"
        ome["labels"] = list(dict.fromkeys(ome.get("labels", [])))
        labels_group.attrs["ome"] = ome
    else:
        labels_group.attrs["labels"] = list(dict.fromkeys(attrs.get("labels", [])))


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
