"""Microscope image files in: the one place that opens them.

TIFF (``.tif``/``.tiff``, plain, ImageJ or OME, one or several series) is read by
tifffile (:mod:`spotlight_scale.io.tiff`): fast, checked for truncation, no other
dependency. Every other file (CZI, ND2, LIF, ...) is read by bioio and the format's
plugin, imported only then, so that a machine without them still reads TIFF; a
missing bioio or plugin gives one error naming the file and what to install
(:func:`missing_reader_message`). ``reader="bioio"`` reads a TIFF through bioio too
(its OME-TIFF or tifffile plugin).

A file holds scenes (OME-TIFF series, CZI/LIF scenes, ND2 positions), each with axes
among T, C, Z, Y, X. A field is one scene, one time point and one channel of a file:
:meth:`ImageHeader.select` says how (:func:`spotlight_scale.io.tiff.select_axes`), and
a YX image is a 2D field stored with one z plane (:mod:`spotlight_scale.core.dims`).
Scenes and channels are chosen by index or by name; voxel sizes (um) come from the
file's metadata (ImageJ or OME in a TIFF, the plugin's physical pixel sizes else).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
EXTRA = "microscopy"
#: the bioio plugin that reads each suffix (only those in the ``microscopy`` extra are tested)
PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif",
           ".zarr": "bioio-ome-zarr", ".tif": "bioio-ome-tiff", ".tiff": "bioio-ome-tiff",
           ".png": "bioio-imageio", ".jpg": "bioio-imageio", ".vsi": "bioio-bioformats",
           ".ims": "bioio-imaris", ".dv": "bioio-dv", ".sldy": "bioio-sldy"}
# OME length units -> um (OME's default unit is um)
_UM_PER_UNIT = {"µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0, "nm": 1e-3,
                "mm": 1e3, "cm": 1e4, "m": 1e6, "pm": 1e-6, "Å": 1e-4}

Value = int | str | None


class ImageError(ValueError):
    """A microscope file could not be read as asked; ``str()`` names the file,
    ``reason`` is the message without it."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def is_tiff(path: str | Path) -> bool:
    """True for a ``.tif``/``.tiff`` file (``.ome.tif`` included): read by tifffile."""
    return str(path).lower().endswith(TIFF_SUFFIXES)


def missing_reader_message(path: str | Path, detail: str = "") -> str:
    """What to install to read ``path`` when bioio or its plugin for the format is missing."""
    path = Path(path)
    suffix = path.suffix.lower()
    plugin = PLUGINS.get(suffix)
    what = f"{plugin} (the bioio plugin for {suffix} files)" if plugin else \
        f"the bioio plugin for {suffix or 'these'} files (see bioio's list of readers)"
    msg = (f"{path}: no installed reader for {suffix or 'this'} files"
           + (f" ({detail})" if detail else "")
           + f"; install the microscopy extra, pip install 'spotlight-scale[{EXTRA}]' "
           f"(bioio with its OME-TIFF and TIFF plugins), and {what}, or convert the file "
           "to OME-TIFF")
    return msg


def to_um(value, unit) -> float | None:
    """A length in OME ``unit`` (a string or an ome-types enum; None: um) as um,
    None for an unknown unit (pixel, reference frame) or a missing value."""
    if value is None:
        return None
    u = getattr(unit, "value", unit)
    factor = 1.0 if u in (None, "") else _UM_PER_UNIT.get(str(u))
    return None if factor is None else float(value) * factor


def _as_index(value: Value) -> Value:
    """A manifest value: None, an int, a string of digits (an index) or a name."""
    if value is None or isinstance(value, (int, np.integer)):
        return None if value is None else int(value)
    s = str(value).strip()
    if s == "":
        return None
    return int(s) if s.lstrip("-").isdigit() else s


def _listing(names) -> str:
    return ", ".join(f"{i} {n!r}" for i, n in enumerate(names))


def _by_name(value: str, aliases: list[tuple[str, ...]], what: str) -> int | None:
    """The index whose names hold ``value``: an exact match first, else a case-insensitive
    one; ``ValueError`` when several match, ``None`` when none does."""
    for same in (lambda n: n == value, lambda n: n.casefold() == value.casefold()):
        hits = [i for i, names in enumerate(aliases) if any(same(n) for n in names)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"{what} name {value!r} is ambiguous ({what}s {hits}); "
                             f"give the {what}'s index")
    return None


def pick_scene(scenes: list[tuple[str, ...]], value: Value) -> int:
    """Index of the scene ``value`` (an index, or a name among each scene's aliases:
    ``scenes[i]`` lists the names of scene i); ``ValueError`` lists the scenes."""
    value = _as_index(value)
    shown = [" / ".join(dict.fromkeys(a)) for a in scenes]
    if value is None:
        return 0
    if isinstance(value, int):
        if not 0 <= value < len(scenes):
            raise ValueError(f"scene {value} out of range: the file has {len(scenes)} "
                             f"scene(s): {_listing(shown)}")
        return value
    hit = _by_name(value, scenes, "scene")
    if hit is None:
        raise ValueError(f"no scene named {value!r}; the file's scenes: {_listing(shown)}")
    return hit


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says about one of its scenes (no pixel data read)."""

    path: Path
    reader: str  # "tifffile", or the bioio plugin's module (e.g. "bioio_czi")
    scenes: tuple[str, ...]  # the file's scenes (series), by name
    scene: int  # the scene described
    axes: str  # e.g. "TCZYX" (tifffile's or bioio's letters)
    shape: tuple[int, ...]
    dtype: Any
    channel_names: tuple[str, ...]  # empty when the file names no channels
    voxel_size: tuple[float | None, float, float] | None  # um; z None when not given

    @property
    def n_channels(self) -> int:
        return int(dict(zip(self.axes, self.shape)).get("C", 1))

    def channel_index(self, value: Value) -> int | None:
        """The index of channel ``value`` (an index or a channel name); ``ValueError``
        lists the file's channels."""
        value = _as_index(value)
        if value is None or isinstance(value, int):
            return value
        names = self.channel_names
        if not names:
            raise ValueError(f"no channel named {value!r}: the file names no channels "
                             f"(it has {self.n_channels}); give the channel's index "
                             f"0..{self.n_channels - 1}")
        hit = _by_name(value, [(n,) for n in names], "channel")
        if hit is None:
            raise ValueError(f"no channel named {value!r}; the file's channels: "
                             f"{_listing(names)}")
        return hit

    def select(self, channel: Value = None, t: int | None = None
               ) -> tuple[dict[str, int], str, tuple[int, int, int]]:
        """``(take, order, zyx)`` of :func:`spotlight_scale.io.tiff.select_axes` for a
        channel given by index or name."""
        from .tiff import select_axes

        c = self.channel_index(channel)
        try:
            return select_axes(self.axes, self.shape, c, t)
        except ValueError as exc:
            if self.channel_names and "channel" in str(exc):
                raise ValueError(f"{exc} (channels: {_listing(self.channel_names)})") from None
            raise

    def nbytes(self, zyx) -> int:
        return int(np.prod(zyx)) * np.dtype(self.dtype).itemsize


def read_header(path: str | Path, scene: Value = None, *, reader: str = "auto"
                ) -> ImageHeader:
    """The header of ``path``'s scene ``scene`` (index or name; default the first).

    ``reader``: ``"auto"`` (tifffile for TIFF, bioio else), ``"tifffile"`` or
    ``"bioio"``. Raises :class:`ImageError` (missing or unreadable file, truncated
    TIFF, unknown scene, no reader installed).
    """
    path = Path(path)
    if reader not in ("auto", "tifffile", "bioio"):
        raise ValueError(f"reader must be 'auto', 'tifffile' or 'bioio', got {reader!r}")
    if not path.exists():
        raise ImageError(path, "file not found")
    use_tiff = reader == "tifffile" or (reader == "auto" and is_tiff(path))
    try:
        return _tiff_header(path, scene) if use_tiff else _bioio_header(path, scene)
    except ImageError:
        raise
    except ValueError as exc:
        raise ImageError(path, str(exc)) from None


def read_image(path: str | Path, channel: Value = None, t: int | None = None,
               scene: Value = None, *, reader: str = "auto"
               ) -> tuple[np.ndarray, tuple[float | None, float, float] | None]:
    """Read one field of ``path`` as ZYX (a single plane as 1YX) and its voxel size (um,
    None when the file gives none; z None when it gives only the pixel size).

    ``channel`` and ``scene`` by index or name, ``t`` by index: each is required where
    the file has more than one (the first scene is the default).
    """
    path = Path(path)
    if reader == "auto" and is_tiff(path) and isinstance(_as_index(channel), (int, type(None))):
        from .tiff import TiffError, read_volume

        try:
            # the scene by index needs no header; a name is looked up first
            s = _as_index(scene)
            if isinstance(s, str):
                s = read_header(path, s).scene
            return read_volume(path, _as_index(channel), t, scene=s or 0)
        except TiffError as exc:
            raise ImageError(path, str(exc).removeprefix(f"{path}: ")) from None
    head = read_header(path, scene, reader=reader)
    try:
        take, order, _ = head.select(channel, t)
    except ValueError as exc:
        raise ImageError(path, str(exc)) from None
    if head.reader == "tifffile":
        from .tiff import read_volume

        return read_volume(path, take.get("C"), take.get("T"), scene=head.scene)
    img = _bioio_open(path)
    try:
        img.set_scene(head.scene)
        data = np.asarray(img.get_image_data(order, **take))
    except Exception as exc:  # plugins raise many kinds on damaged files
        raise ImageError(path, f"not readable by bioio ({type(exc).__name__}: {exc})") from None
    return (data[None] if order == "YX" else data), head.voxel_size


# --------------------------------------------------------------------------- TIFF


def _tiff_header(path: Path, scene: Value) -> ImageHeader:
    from .tiff import _voxel_size, ome_images, open_tiff

    try:
        with open_tiff(path) as tif:
            images = ome_images(tif)
            series = list(tif.series)
            aligned = images is not None and len(images) == len(series)
            aliases = _series_aliases(images if aligned else None, series)
            idx = pick_scene(aliases, scene)
            s = series[idx]
            channels: tuple[str, ...] = ()
            if aligned:
                pixels = next((el for el in images[idx] if el.tag.endswith("Pixels")), None)
                if pixels is not None:
                    channels = tuple(el.get("Name") or "" for el in pixels
                                     if el.tag.endswith("Channel"))
            head = ImageHeader(
                path=path, reader="tifffile", scenes=tuple(a[0] for a in aliases), scene=idx,
                axes=s.axes.upper(), shape=tuple(int(n) for n in s.shape), dtype=s.dtype,
                channel_names=(), voxel_size=_voxel_size(tif, s, idx))
            n_c = head.n_channels
            if channels and len(channels) == n_c and all(channels):
                head = replace(head, channel_names=channels)
            # touch the first and last page: catches truncated files cheaply
            pages = tif.pages
            pages[0].asarray()
            if len(pages) > 1:
                pages[len(pages) - 1].asarray()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except ValueError as exc:
        if str(exc).startswith(("truncated", "damaged", "scene", "no scene")):
            raise
        raise ValueError(f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # tifffile raises many kinds on corrupt files
        raise ValueError(f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
    return head


def _series_aliases(images, series) -> list[tuple[str, ...]]:
    """The names of each series: its OME Image ID and Name (``images``: the OME images,
    one per series, or None), tifffile's series name; ``series i`` when it has none."""
    out = []
    for i, s in enumerate(series):
        names = [images[i].get("ID"), images[i].get("Name")] if images is not None else []
        names.append(s.name)
        out.append(tuple(dict.fromkeys(n for n in names if n)) or (f"series {i}",))
    return out


# --------------------------------------------------------------------------- bioio


def _bioio_open(path: Path):
    """``bioio.BioImage(path)``, or :class:`ImageError` saying what to install."""
    try:
        bioio = importlib.import_module("bioio")
    except ImportError as exc:
        raise ImageError(path, missing_reader_message(path, f"bioio is not installed: {exc}")
                         .removeprefix(f"{path}: ")) from None
    try:
        from bioio_base.exceptions import UnsupportedFileFormatError
    except ImportError:  # pragma: no cover - bioio always brings bioio_base
        UnsupportedFileFormatError = ()  # noqa: N806
    try:
        return bioio.BioImage(str(path))
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except UnsupportedFileFormatError:
        raise ImageError(path, missing_reader_message(path, "bioio has no plugin for it")
                         .removeprefix(f"{path}: ")) from None
    except ImportError as exc:
        raise ImageError(path, missing_reader_message(path, str(exc))
                         .removeprefix(f"{path}: ")) from None
    except Exception as exc:
        raise ImageError(path, f"not readable by bioio ({type(exc).__name__}: {exc})") from None


def _bioio_header(path: Path, scene: Value) -> ImageHeader:
    img = _bioio_open(path)
    try:
        scenes = tuple(str(s) for s in img.scenes)
        ome = _ome_model(img)
        aliases = [(s,) for s in scenes]
        if ome is not None and len(ome.images) == len(scenes):
            aliases = [(s,) + ((ome.images[i].name,) if ome.images[i].name else ())
                       for i, s in enumerate(scenes)]
        idx = pick_scene(aliases, scene)
        img.set_scene(idx)
        dims = img.dims
        axes = str(dims.order).upper()
        shape = tuple(int(n) for n in img.shape)
        names = tuple(str(c) for c in (img.channel_names or ()))
        pps = img.physical_pixel_sizes
        vals = [pps.Z, pps.Y, pps.X]
        if ome is not None and idx < len(ome.images):
            p = ome.images[idx].pixels
            vals = [to_um(v, getattr(p, f"physical_size_{a}_unit", None))
                    for v, a in zip(vals, "zyx")]
        vals = [None if v is None or not np.isfinite(float(v)) or float(v) <= 0 else float(v)
                for v in vals]
        voxel = None if vals[1] is None or vals[2] is None else tuple(vals)
        dtype = np.dtype(img.dtype)
        module = type(img.reader).__module__.split(".")[0]
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"not readable by bioio ({type(exc).__name__}: {exc})") from None
    n_c = dict(zip(axes, shape)).get("C", 1)
    return ImageHeader(path=path, reader=module, scenes=scenes, scene=idx, axes=axes,
                       shape=shape, dtype=dtype,
                       channel_names=names if len(names) == n_c and all(names) else (),
                       voxel_size=voxel)


def _ome_model(img):
    """The file's ome-types OME model when its plugin has one (OME-TIFF, OME-Zarr)."""
    try:
        meta = img.metadata  # bioio's ome_metadata would convert other formats: not asked
    except Exception:  # readers without metadata raise NotImplementedError & co
        return None
    return meta if type(meta).__name__ == "OME" and hasattr(meta, "images") else None
