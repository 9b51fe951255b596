"""TIFF z-stacks and single planes in and out: voxel size from ImageJ or OME metadata,
channel and time point selection, ImageJ-compatible writing."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# tifffile logs what it finds wrong with a file ("invalid page offset") and reads on;
# spotlight-scale collects those messages while it opens a file (open_tiff) and reports
# them as errors naming the file, instead of letting them reach the terminal
_TIFF_LOG = logging.getLogger("tifffile")
_TIFF_LOG.propagate = False


class TiffError(ValueError):
    """A TIFF could not be read as a z-stack; the message names the file."""


def write_imagej(path: str | Path, volume: np.ndarray, voxel_size: Sequence[float], *,
                 compression: str | None = None, planar: bool = False) -> None:
    """Write a ZYX (or CZYX) array as an ImageJ hyperstack carrying its voxel size in um;
    with ``planar``, a 2D image: YX (or CYX), no z axis and no z spacing.

    ImageJ stores z spacing as ``spacing`` and x/y as resolution (pixels per um);
    ``voxel_size`` is (z, y, x), (y, x) also when ``planar``.
    float64 and int64 are not ImageJ types: they are written as float32 / int32.
    """
    import tifffile

    arr = np.asarray(volume)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    elif arr.dtype in (np.int64, np.uint64, np.uint32):
        if arr.size and arr.max() > np.iinfo(np.int32).max:
            raise ValueError(f"{path}: labels exceed int32, not representable in ImageJ TIFF")
        arr = arr.astype(np.int32 if arr.dtype != np.uint32 else np.float32)
    if planar:
        axes = {2: "YX", 3: "CYX"}.get(arr.ndim)
        if axes is None:
            raise ValueError(f"{path}: expected a 2D image (YX or CYX), got {arr.shape}")
    else:
        axes = "ZYX" if arr.ndim == 3 else "CZYX" if arr.ndim == 4 else None
        if axes is None:
            raise ValueError(f"{path}: expected a 3D (ZYX) or 4D (CZYX) array, got {arr.shape}")
    if axes == "CZYX":
        arr = np.moveaxis(arr, 0, 1)  # ImageJ order is TZCYX
        axes = "ZCYX"
    y, x = (float(v) for v in tuple(voxel_size)[-2:])
    metadata = {"unit": "um", "axes": axes}
    if not planar:
        metadata["spacing"] = float(tuple(voxel_size)[0])
    tifffile.imwrite(
        str(path), arr, imagej=True, resolution=(1.0 / x, 1.0 / y),
        metadata=metadata, compression=compression,
    )


@contextlib.contextmanager
def open_tiff(path: str | Path) -> Iterator:
    """``tifffile.TiffFile`` of ``path``, checked for truncation (:func:`check_complete`);
    a structural problem tifffile only logs raises ``ValueError``."""
    import tifffile

    collect = _Collect()
    _TIFF_LOG.addHandler(collect)
    try:
        with tifffile.TiffFile(str(path)) as tif:
            if _contiguous_imagej_complete(tif) and not collect.messages:
                yield tif
                return
        walk_pages(path, collect)
        with tifffile.TiffFile(str(path)) as tif:
            yield tif
    finally:
        _TIFF_LOG.removeHandler(collect)


def walk_pages(path: str | Path, collect: "_Collect | None" = None) -> None:
    """Check every page of ``path``: raise ``ValueError`` for what tifffile logs on the way
    (a damaged IFD chain) and for a file that ends before its data (:func:`check_complete`).

    The pages are walked as tifffile's light frames (the IFD chain and each page's data
    offsets; 4x cheaper than parsing every tag of every page), on a handle of their own:
    tifffile detects the series differently on a handle whose pages are frames.
    """
    import tifffile

    own = collect is None
    collect = collect or _Collect()
    if own:
        _TIFF_LOG.addHandler(collect)
    try:
        with tifffile.TiffFile(str(path)) as tif:
            if len(tif.pages):
                tif.pages.useframes = True
                tif.pages.set_keyframe(0)
            list(tif.pages)
            if collect.messages:
                raise ValueError(f"damaged or truncated (tifffile: {collect.messages[0]})")
            check_complete(tif)
    finally:
        if own:
            _TIFF_LOG.removeHandler(collect)


def _contiguous_imagej_complete(tif) -> bool:
    """True when ``tif`` is an uncompressed ImageJ stack that tifffile reads as one block of
    all the images its header announces, the file holds that block, and its chain of page
    headers (IFDs) is whole: what :func:`walk_pages` checks, at a tenth of
    its cost (the usual microscope export, and the files `synth` writes). False: check the
    long way."""
    n_images = int((tif.imagej_metadata or {}).get("images", 0) or 0) if tif.is_imagej else 0
    if n_images < 1 or len(tif.series) != 1:
        return False
    series, first = tif.series[0], tif.pages.first
    if (series.dataoffset is None or first.compression != 1 or not first.dataoffsets
            or int(series.size) != n_images * int(first.size)):
        return False
    size = tif.filehandle.size
    return (int(first.dataoffsets[0]) + n_images * int(first.nbytes) <= size
            and _ifd_count(tif) >= n_images)


def _ifd_count(tif) -> int:
    """Number of IFDs in the file's chain, following each one's link to the next without
    parsing its tags; -1 when a link points outside the file, into a loop, or an IFD ends
    past the end of the file (an interrupted copy keeps its first IFD, not the last)."""
    import struct

    fmt, fh, size = tif.tiff, tif.filehandle, tif.filehandle.size
    offset, seen = int(tif.pages.first.offset), set()
    while offset:
        if offset in seen or offset + fmt.tagnosize > size:
            return -1
        seen.add(offset)
        fh.seek(offset)
        (n_tags,) = struct.unpack(fmt.byteorder + fmt.tagnoformat[-1],
                                  fh.read(fmt.tagnosize))
        link = offset + fmt.tagnosize + n_tags * fmt.tagsize
        if link + fmt.offsetsize > size:
            return -1
        fh.seek(link)
        (offset,) = struct.unpack(fmt.byteorder + fmt.offsetformat[-1],
                                  fh.read(fmt.offsetsize))
    return len(seen)


def check_complete(tif) -> None:
    """Raise ``ValueError`` when the file ends before the image data its header promises.

    A truncated file (an interrupted copy) keeps its header; tifffile then parses
    fewer pages, or reads a contiguous ImageJ stack past the end of the file.
    """
    size = tif.filehandle.size
    pages = list(tif.pages)
    need = 0
    for page in pages:
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            need = max(need, int(offset) + int(count))
    first = pages[0] if pages else None
    n_images = int((tif.imagej_metadata or {}).get("images", 0) or 0)
    if first is not None and n_images > 1 and first.compression == 1 and first.dataoffsets:
        # an uncompressed ImageJ stack is one contiguous block after the first page's data
        need = max(need, int(first.dataoffsets[0]) + n_images * int(first.nbytes))
    if need > size:
        raise ValueError(f"truncated: the file has {size} bytes but its image data needs "
                         f"{need} (an interrupted copy?)")
    expected = n_images
    if not n_images and first is not None and first.size:
        expected = int(np.prod(tif.series[0].shape)) // int(first.size)
    if expected > len(pages) and (first is None or first.compression != 1 or not n_images):
        raise ValueError(f"truncated: the header announces {expected} images, the file "
                         f"holds {len(pages)}")


def read_volume(path: str | Path, channel: int | None = None, t: int | None = None, *,
                scene: int = 0) -> tuple[np.ndarray, tuple[float | None, float, float] | None]:
    """Read a z-stack as ZYX (a single plane as 1YX) and its voxel size (um) from ImageJ or
    OME metadata, if any (z is None when the file gives only the pixel size).

    Parameters
    ----------
    channel : int, optional
        Channel to take from a multi-channel file (required when there is more than one).
    t : int, optional
        Time point to take from a file with a time axis (required when there is more than one).
    scene : int
        The series (an OME-TIFF's image) to read; the first by default.
    """
    path = Path(path)
    try:
        with open_tiff(path) as tif:
            if not 0 <= scene < len(tif.series):
                raise ValueError(f"scene {scene} out of range (the file has "
                                 f"{len(tif.series)} series)")
            series = tif.series[scene]
            axes = series.axes.upper()
            data = series.asarray()
            voxel = _voxel_size(tif, series, scene)
    except FileNotFoundError:
        raise TiffError(f"{path}: file not found") from None
    except ValueError as exc:
        raise TiffError(f"{path}: {exc}") from None
    except Exception as exc:  # tifffile raises many kinds on corrupt files
        raise TiffError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    axes = canonical_axes(axes, data.shape)
    try:
        take, order, _ = select_axes(axes, data.shape, channel, t)
    except ValueError as exc:
        raise TiffError(f"{path}: {exc}") from None
    data = data[tuple(take.get(a, slice(None)) for a in axes)]
    kept = [a for a in axes if a not in take]
    data = np.transpose(data, [kept.index(a) for a in order])
    return (data[None] if order == "YX" else data), voxel


def canonical_axes(axes: str, shape) -> str:
    """tifffile's axis letters, upper case, with a plain multi-page TIFF's unnamed page axis
    (Q or I, more than one page) named Z."""
    axes = axes.upper()
    if "Z" not in axes:
        for generic in "QI":
            if generic in axes and int(shape[axes.index(generic)]) > 1:
                return axes.replace(generic, "Z", 1)
    return axes


def select_axes(axes: str, shape, channel: int | None = None, t: int | None = None
                ) -> tuple[dict[str, int], str, tuple[int, int, int]]:
    """How a file's ``axes`` (tifffile's letters) become a field: ``(take, order, zyx)``.

    ``take`` maps each axis that is indexed away (channel, time point, singleton
    axes) to its index; ``order`` is ``"ZYX"`` or ``"YX"`` (a single plane, stored
    with one z plane: :mod:`spotlight_scale.core.dims`); ``zyx`` the field's shape.
    A plain multi-page TIFF's unnamed page axis (Q or I) counts as Z. Raises
    ``ValueError`` saying which column (``channel_*``, ``t``) is missing or wrong.
    """
    axes = canonical_axes(axes, shape)
    shape = [int(n) for n in shape]
    dims = dict(zip(axes, shape))
    take: dict[str, int] = {}
    for ax, col, value in (("C", "channel_signal/channel_target", channel), ("T", "t", t)):
        n = dims.get(ax, 1)
        if value is None and n > 1:
            what = "channels" if ax == "C" else "time points"
            raise ValueError(f"has {n} {what}; set the manifest column {col}")
        v = 0 if value is None else int(value)
        if not 0 <= v < n:
            what = "channel" if ax == "C" else "time point"
            raise ValueError(f"{what} {v} out of range (file has {n})")
        if ax in dims:
            take[ax] = v
    for ax, n in dims.items():
        if ax not in "ZYX" and ax not in take:
            if n > 1:
                raise ValueError(f"expected a z-stack (ZYX) or a single plane (YX), got shape "
                                 f"{tuple(shape)} with axes {axes!r} (axis {ax} has {n} entries)")
            take[ax] = 0
    if not {"Y", "X"} <= set(dims):
        raise ValueError(f"expected a z-stack (ZYX) or a single plane (YX), got shape "
                         f"{tuple(shape)} with axes {axes!r}")
    if "Z" in dims and dims["Z"] > 1:
        return take, "ZYX", (dims["Z"], dims["Y"], dims["X"])
    if "Z" in dims:
        take["Z"] = 0
    return take, "YX", (1, dims["Y"], dims["X"])


def ome_images(tif) -> list | None:
    """The ``Image`` elements of an OME-TIFF's metadata, in order (None: not OME or unparsable)."""
    import xml.etree.ElementTree as ET

    if not tif.is_ome:
        return None
    try:
        root = ET.fromstring(tif.ome_metadata)
    except (ET.ParseError, TypeError, ValueError):
        return None
    return [el for el in root if el.tag.rsplit("}", 1)[-1] == "Image"]


def _voxel_size(tif, series, index: int = 0) -> tuple[float | None, float, float] | None:
    """Voxel size (um) of series ``index`` from ImageJ or OME metadata (OME units
    converted; None when absent or in a unit that is not a length)."""
    ij = tif.imagej_metadata
    page = tif.pages[0]
    # ImageJ: z spacing as "spacing", y/x as resolution; a single plane has no spacing, and
    # its resolution counts only with a length unit (else it is the TIFF default of 1/inch)
    unit = str((ij or {}).get("unit", "")).replace("\\u00B5", "u").replace("\u00b5", "u")
    if ij and ("spacing" in ij or unit in ("um", "micron", "microns")):
        try:
            xres = page.tags["XResolution"].value
            yres = page.tags["YResolution"].value
            x = xres[1] / xres[0]
            y = yres[1] / yres[0]
            z = float(ij["spacing"]) if "spacing" in ij else None
            return (z, float(y), float(x))
        except (KeyError, ZeroDivisionError):
            return None
    images = ome_images(tif)
    if images:
        from .images import to_um

        if index >= len(images):
            return None
        pixels = next((el for el in images[index] if el.tag.endswith("Pixels")), None)
        if pixels is None:
            return None
        try:
            vals = [to_um(pixels.get(f"PhysicalSize{a}"), pixels.get(f"PhysicalSize{a}Unit"))
                    for a in "ZYX"]
        except ValueError:
            return None
        if all(v is not None for v in vals[1:]):
            # a single plane often has no PhysicalSizeZ: z is None then
            return tuple(vals)
    return None
