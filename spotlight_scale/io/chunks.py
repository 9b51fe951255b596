"""Reads that cannot lie: a missing or corrupt zarr chunk is an error naming the field.

zarr returns the fill value for a chunk that is absent, so a chunk file lost
to a failed copy, a full disk or a stray ``rm`` reads as zeros and passes for
data. spotlight-scale therefore writes *every* chunk of every array it creates,
including chunks equal to the fill value (``write_empty_chunks``, see
``_create_levels`` in :mod:`spotlight_scale.io.omezarr`), so that inside an array's
extent an absent chunk can only mean lost data. Every read through the
:class:`~spotlight_scale.io.store.Store` goes through :class:`VerifiedArray`,
which checks that the chunk files a region touches exist before reading it,
and turns a decoding failure (a corrupt chunk) into an error that names the
field, the array and the chunk file. The check costs one ``stat`` per chunk
read (measured in ``benchmarks/bench_integrity.py``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from .store import StoreError


class ChunkError(StoreError):
    """A chunk inside an array's extent is missing or cannot be decoded."""


def _region(selection, shape) -> tuple[slice, ...]:
    """Basic-indexing ``selection`` as one slice per axis (ints become length-1 slices)."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    if any(s is Ellipsis for s in selection):
        i = selection.index(Ellipsis)
        selection = (*selection[:i], *[slice(None)] * (len(shape) - len(selection) + 1),
                     *selection[i + 1:])
    selection = (*selection, *[slice(None)] * (len(shape) - len(selection)))
    out = []
    for s, n in zip(selection, shape):
        if isinstance(s, (int, np.integer)):
            i = int(s) + n if s < 0 else int(s)
            out.append(slice(i, i + 1))
        elif isinstance(s, slice):
            start, stop, _ = s.indices(n)
            out.append(slice(start, max(start, stop)))
        else:  # fancy indexing: check the whole axis
            out.append(slice(0, n))
    return tuple(out)


def chunk_coords(region: tuple[slice, ...], chunks) -> list[tuple[int, ...]]:
    """Grid coordinates of the chunks a region overlaps."""
    ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, chunks)]
    return list(itertools.product(*ranges))


def _chunk_dir(arr) -> Path | None:
    from zarr.storage import LocalStore

    if not isinstance(arr.store, LocalStore):
        return None  # only local stores are verified (spotlight-scale opens nothing else)
    return Path(arr.store.root) / arr.path


class VerifiedArray:
    """A read-only view of a zarr array whose reads refuse missing or corrupt chunks.

    Indexing (basic: ints, slices, ``...``) reads like the zarr array. Other
    attributes (``shape``, ``dtype``, ``chunks``, ``attrs``...) are the array's.

    Parameters
    ----------
    array : zarr.Array
    what : str
        What the array is, for messages (``"field P1/B03/0, s0"``).
    hint : str or callable
        What to run to rebuild it (``"re-run ingest"``), or a function returning it.
    """

    def __init__(self, array, what: str, hint: str = ""):
        self._array, self._what, self._hint = array, what, hint

    def __getattr__(self, name):
        return getattr(self._array, name)

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out.astype(dtype) if dtype is not None else out

    def _path(self, coords) -> str:
        base = _chunk_dir(self._array)
        key = self._array.metadata.encode_chunk_key(coords)
        return str(base / key) if base is not None else f"{self._array.path}/{key}"

    def missing(self, region: tuple[slice, ...] | None = None) -> list[str]:
        """Paths of absent chunk files in ``region`` (default: the whole array)."""
        base = _chunk_dir(self._array)
        if base is None:
            return []
        region = region or tuple(slice(0, n) for n in self._array.shape)
        enc = self._array.metadata.encode_chunk_key
        return [str(base / enc(c)) for c in chunk_coords(region, self._array.chunks)
                if not (base / enc(c)).is_file()]

    def __getitem__(self, selection) -> np.ndarray:
        region = _region(selection, self._array.shape)
        lost = self.missing(region)
        if lost:
            more = f" and {len(lost) - 1} more" if len(lost) > 1 else ""
            raise ChunkError(f"{self._what}: chunk {lost[0]}{more} is missing: that data is "
                             f"lost (zarr would read it as zeros){self._suffix()}")
        try:
            return np.asarray(self._array[selection])
        except Exception as exc:
            bad = self._find_corrupt(region)
            where = f"chunk {bad}" if bad else f"a chunk of {self._array.path}"
            raise ChunkError(f"{self._what}: {where} cannot be read ({type(exc).__name__}: "
                             f"{exc}){self._suffix()}") from None

    def _find_corrupt(self, region) -> str | None:
        for coords in chunk_coords(region, self._array.chunks):
            box = tuple(slice(i * c, min((i + 1) * c, n))
                        for i, c, n in zip(coords, self._array.chunks, self._array.shape))
            try:
                self._array[box]
            except Exception:
                return self._path(coords)
        return None

    def _suffix(self) -> str:
        hint = self._hint() if callable(self._hint) else self._hint  # built when it is needed
        return f"; {hint}" if hint else ""
