"""TIFF z-stacks in and out: voxel size from ImageJ or OME metadata, ImageJ-compatible writing."""

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
            list(tif.pages)  # parse every page now, while the messages are collected
            if collect.messages:
                raise ValueError(f"damaged or truncated (tifffile: {collect.messages[0]})")
            check_complete(tif)
            yield tif
    finally:
        _TIFF_LOG.removeHandler(collect)


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


def read_volume(path: str | Path, channel: int | None = None
                ) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Read a z-stack as ZYX and its voxel size (um) from ImageJ or OME metadata, if any.

    Parameters
    ----------
    channel : int, optional
        Channel to take from a multi-channel stack (required when there is more than one).
    """
    path = Path(path)
    try:
        with open_tiff(path) as tif:
            series = tif.series[0]
            axes = series.axes.upper()
            data = series.asarray()
            voxel = _voxel_size(tif, series)
    except FileNotFoundError:
        raise TiffError(f"{path}: file not found") from None
    except ValueError as exc:
        raise TiffError(f"{path}: {exc}") from None
    except Exception as exc:  # tifffile raises many kinds on corrupt files
        raise TiffError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
    data = _to_zyx(data, axes, channel, path)
    return data, voxel


def _to_zyx(data: np.ndarray, axes: str, channel: int | None, path: Path) -> np.ndarray:
    # a plain multi-page TIFF has an unnamed page axis (Q or I): treat it as Z
    if "Z" not in axes:
        for generic in "QI":
            if generic in axes and data.shape[axes.index(generic)] > 1:
                axes = axes.replace(generic, "Z", 1)
                break
    # squeeze singleton non-spatial axes (T, S, Q...), keep C for selection
    for ax in list(axes):
        if ax not in "ZYXC" and data.shape[axes.index(ax)] == 1:
            data = np.take(data, 0, axis=axes.index(ax))
            axes = axes.replace(ax, "")
    if "C" in axes:
        n = data.shape[axes.index("C")]
        if channel is None and n > 1:
            raise TiffError(f"{path}: has {n} channels; set channel_signal/channel_target "
                            "in the manifest")
        c = 0 if channel is None else int(channel)
        if not 0 <= c < n:
            raise TiffError(f"{path}: channel {c} out of range (file has {n})")
        data = np.take(data, c, axis=axes.index("C"))
        axes = axes.replace("C", "")
    elif channel not in (None, 0):
        raise TiffError(f"{path}: single-channel file, but channel {channel} was requested")
    if axes == "YX" or data.ndim != 3 or set(axes) != set("ZYX"):
        raise TiffError(f"{path}: expected a 3D z-stack (ZYX), got shape {data.shape} "
                        f"with axes {axes!r}")
    return np.transpose(data, [axes.index(a) for a in "ZYX"])


def _voxel_size(tif, series) -> tuple[float, float, float] | None:
    ij = tif.imagej_metadata
    page = tif.pages[0]
    if ij and "spacing" in ij:
        try:
            xres = page.tags["XResolution"].value
            yres = page.tags["YResolution"].value
            x = xres[1] / xres[0]
            y = yres[1] / yres[0]
            return (float(ij["spacing"]), float(y), float(x))
        except (KeyError, ZeroDivisionError):
            return None
    if tif.is_ome:
        import xml.etree.ElementTree as ET

        try:
            root = ET.fromstring(tif.ome_metadata)
            pixels = next(el for el in root.iter() if el.tag.endswith("Pixels"))
            vals = [pixels.get(f"PhysicalSize{a}") for a in "ZYX"]
            if all(v is not None for v in vals):
                return tuple(float(v) for v in vals)
        except (ET.ParseError, StopIteration):
            return None
    return None
