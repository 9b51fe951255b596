"""Tiled, blended inference of volumes of any size, streamed tile by tile.

**Plan** (:func:`plan_tiles`, per axis). A field of length ``N`` is padded at its
far end (reflect) to ``P``, the next multiple of the network divisor
``d = 2**depth``; nothing is cropped away, and the near end is not padded at
all, so a voxel on the field's face sees the same (zero-padded) context in a
tile as in one whole-volume pass. If ``P <= tile`` one tile covers the axis.
Otherwise tiles start every ``s = tile - overlap`` voxels (origins ``0, s, 2s,
...``, all on the network's downsampling grid); each is ``tile`` long except the
last, which stops at ``P`` (still a multiple of ``d``, and longer than the
overlap). Per axis that computes ``P + (n - 1) * overlap`` voxels: the overlap
and the divisor padding, nothing else.

**Blending.** A tile's weight along an axis is 0 within ``margin`` voxels of a
face it shares with a neighbour (there its own zero padding corrupts the
output), rises as a raised cosine over the rest of the overlap, and is 1
elsewhere, including on the field's faces. Neighbours' ramps are mirror images
over the same voxels; the blend divides by the summed weights. When ``margin``
is at least the network's receptive-field radius, the result equals one forward
pass over the whole padded volume (to float tolerance): the property the tests
check.

**Streaming** (:func:`predict_stream`). The plan cuts the padded volume into
boxes ``[i*s, (i+1)*s)`` per axis (the last one to ``P``). Box ``(i, j, k)``
receives contributions only from tiles ``(i', j', k') <= (i, j, k)``
componentwise, and tile ``(i, j, k)`` is the last of those in any raster order.
So as soon as a tile is predicted its own box is final and goes to ``write``;
what the tile contributes to later boxes (its overlap strips) is kept until
their own tile comes. The raster runs slowest along the field's longest axis,
so the strips held at any time are at most ``overlap`` thick across the two
shorter extents (plus a tile's faces): memory is the tiles in flight plus that,
and does not grow with the field's length.
``plan.chunks`` (the step, clipped to the field) makes every box a whole number
of zarr chunks, so each chunk of the output is written once, whole.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

#: numpy padding mode of the far end (``np.pad`` semantics, also for pads longer than N)
PAD_MODE = "reflect"

Region = tuple[slice, slice, slice]


def axis_window(tile: int, overlap: int, margin: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D blending weights of one tile along one axis (see module docstring), float32."""
    w = np.ones(tile, dtype=np.float32)
    ramp_len = max(overlap - 2 * margin, 1)
    t = np.arange(ramp_len)
    ramp = (0.5 * (1 - np.cos(np.pi * (t + 0.5) / ramp_len))).astype(np.float32)
    if not at_start:
        w[:margin] = 0
        seg = slice(margin, margin + ramp_len)
        w[seg] = np.minimum(w[seg], ramp[: len(w[seg])])
    if not at_end:
        w[tile - margin:] = 0
        seg = slice(max(tile - margin - ramp_len, 0), tile - margin)
        w[seg] = np.minimum(w[seg], ramp[::-1][-len(w[seg]):] if len(w[seg]) else ramp[:0])
    return w


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one field go (see module docstring). Coordinates are the field's
    own: the padding lies beyond ``shape`` at the far end, up to ``padded``."""

    shape: tuple[int, int, int]
    padded: tuple[int, int, int]
    tile: tuple[int, int, int]
    step: tuple[int, int, int]
    overlap: tuple[int, int, int]
    margin: tuple[int, int, int]
    counts: tuple[int, int, int]
    divisor: int

    @property
    def n_tiles(self) -> int:
        return int(np.prod(self.counts))

    @property
    def chunks(self) -> tuple[int, int, int]:
        """Chunk shape of the output that aligns every box with whole chunks."""
        return tuple(max(1, min(s, n)) for s, n in zip(self.step, self.shape))

    def tile_span(self, axis: int, i: int) -> tuple[int, int]:
        start = i * self.step[axis]
        return start, min(start + self.tile[axis], self.padded[axis])

    def box_span(self, axis: int, i: int) -> tuple[int, int]:
        start = i * self.step[axis]
        last = i == self.counts[axis] - 1
        return start, self.padded[axis] if last else start + self.step[axis]

    def window(self, axis: int, i: int) -> np.ndarray:
        lo, hi = self.tile_span(axis, i)
        return axis_window(hi - lo, self.overlap[axis], self.margin[axis], at_start=i == 0,
                           at_end=i == self.counts[axis] - 1)

    @property
    def order(self) -> tuple[int, int, int]:
        """Axes from slowest to fastest in the raster: longest axis first (ties: z, y, x)."""
        return tuple(sorted(range(3), key=lambda a: -self.shape[a]))

    def tiles(self) -> Iterator[tuple[int, int, int]]:
        """Tile indices ``(iz, iy, ix)`` in raster order along :attr:`order`."""
        for t in itertools.product(*(range(self.counts[a]) for a in self.order)):
            idx = [0, 0, 0]
            for a, i in zip(self.order, t):
                idx[a] = i
            yield tuple(idx)

    def tile_region(self, idx) -> Region:
        return tuple(slice(*self.tile_span(a, i)) for a, i in enumerate(idx))

    def tile_shape(self, idx) -> tuple[int, int, int]:
        return tuple(hi - lo for lo, hi in (self.tile_span(a, i) for a, i in enumerate(idx)))

    @property
    def computed_voxels(self) -> int:
        """Voxels the network computes over all tiles (>= the field's voxels)."""
        per_axis = [sum(np.diff(self.tile_span(a, i))[0] for i in range(c))
                    for a, c in enumerate(self.counts)]
        return int(np.prod(per_axis))

    @property
    def pad(self) -> list[tuple[int, int]]:
        """``np.pad`` widths that turn the field into the padded volume."""
        return [(0, p - n) for p, n in zip(self.padded, self.shape)]


def plan_tiles(shape: Sequence[int], *, tile: Sequence[int], overlap: Sequence[int],
               divisor: int | Sequence[int], margin: Sequence[int] | None = None) -> TilePlan:
    """The :class:`TilePlan` of a field of ``shape`` (see module docstring).

    Parameters
    ----------
    shape : (z, y, x)
        Field shape.
    tile : (z, y, x)
        Largest tile, multiples of ``divisor``.
    overlap : (z, y, x)
        Overlap between neighbouring tiles; ``tile - overlap`` must be a positive
        multiple of ``divisor``.
    divisor : int or (z, y, x)
        The network's size divisor (``2**depth``), per axis when a sequence (a 2D
        network on single-plane fields: ``(1, 2**depth, 2**depth)``).
    margin : (z, y, x), optional
        Zero-weight border at faces shared with a neighbour (default ``overlap // 4``);
        ``overlap >= 2 * margin``.
    """
    if len(shape) != 3 or len(tile) != 3 or len(overlap) != 3:
        raise ValueError("shape, tile and overlap must each have 3 values (z, y, x)")
    tile = [int(t) for t in tile]
    overlap = [int(o) for o in overlap]
    margin = [o // 4 for o in overlap] if margin is None else [int(m) for m in margin]
    divisors = ([int(divisor)] * 3 if isinstance(divisor, (int, np.integer))
                else [int(d) for d in divisor])
    if len(divisors) != 3 or min(divisors) < 1:
        raise ValueError(f"divisor must be >= 1 (one value or z, y, x), got {divisor}")
    for name, n, t, o, m, divisor in zip("zyx", shape, tile, overlap, margin, divisors):
        if n < 1:
            raise ValueError(f"field size along {name} is {n}: nothing to predict")
        if t < divisor or t % divisor:
            raise ValueError(f"tile size {t} along {name} must be a positive multiple of {divisor}")
        if o < 0 or m < 0:
            raise ValueError(f"overlap ({o}) and margin ({m}) along {name} must be >= 0")
        if (t - o) % divisor or t - o < divisor:
            raise ValueError(f"tile - overlap along {name} ({t} - {o}) must be a positive "
                             f"multiple of {divisor}")
        if o < 2 * m:
            raise ValueError(f"overlap {o} along {name} must be at least twice the margin {m}")
    padded, tiles, steps, counts = [], [], [], []
    for n, t, o, divisor in zip(shape, tile, overlap, divisors):
        p = -(-int(n) // divisor) * divisor
        s = t - o
        count = 1 if p <= t else 1 + -(-(p - t) // s)
        padded.append(p)
        tiles.append(min(t, p))
        steps.append(s)
        counts.append(count)
    return TilePlan(shape=tuple(int(n) for n in shape), padded=tuple(padded), tile=tuple(tiles),
                    step=tuple(steps), overlap=tuple(overlap), margin=tuple(margin),
                    counts=tuple(counts), divisor=max(divisors))


def pad_volume(volume: np.ndarray, pad) -> np.ndarray:
    """The padded volume a plan describes (``np.pad`` with :data:`PAD_MODE`)."""
    return np.pad(volume, pad, mode=PAD_MODE)


def read_padded(read: Callable[[Region], np.ndarray], plan: TilePlan, region: Region) -> np.ndarray:
    """Read ``region`` of the padded volume through ``read`` (field coordinates only).

    Voxels beyond the field are gathered from the field by the same index map as
    :func:`pad_volume`, so a tile equals the same slice of the padded volume.
    """
    src, gather = [], False
    for sl, n, p in zip(region, plan.shape, plan.padded):
        idx = np.arange(sl.start, sl.stop)
        if sl.stop > n:
            idx = np.pad(np.arange(n), (0, p - n), mode=PAD_MODE)[sl]
            gather = True
        src.append(idx)
    block = read(tuple(slice(int(i.min()), int(i.max()) + 1) for i in src))
    if not gather:
        return block
    return block[np.ix_(*[i - i.min() for i in src])]


def _outer(parts: Sequence[np.ndarray]) -> np.ndarray:
    """The 3D weight of separable per-axis weights ``(wz, wy, wx)``."""
    return parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]


def _boxes_touched(plan: TilePlan, axis: int, i: int) -> list[int]:
    _, stop = plan.tile_span(axis, i)
    out = [i]
    while out[-1] + 1 < plan.counts[axis] and plan.box_span(axis, out[-1] + 1)[0] < stop:
        out.append(out[-1] + 1)
    return out


def predict_stream(read: Callable[[Region], np.ndarray], forward: Callable[[np.ndarray], np.ndarray],
                   write: Callable[[Region, np.ndarray], None], plan: TilePlan, *,
                   batch_size: int = 1, threads: bool = True) -> dict[str, int]:
    """Predict a field tile by tile, handing each finished box to ``write``.

    Parameters
    ----------
    read : callable
        ``read(region)`` returns the field's float32 voxels in ``region`` (slices in
        field coordinates, always inside the field).
    forward : callable
        Maps a batch ``(B, Z, Y, X)`` float32 array to an array of the same shape.
    write : callable
        ``write(region, block)``: ``block`` (float32) is the final blended output of
        ``region`` (inside the field). Regions partition the field; each is a whole
        number of ``plan.chunks``-shaped chunks (or reaches the field's end).
    plan : TilePlan
    batch_size : int
        Tiles per forward call (tiles of equal shape, in raster order).
    threads : bool
        Read the next batch and write finished boxes in background threads while
        ``forward`` runs (at most one read and two writes in flight).

    Returns
    -------
    dict
        ``tiles``, ``computed_voxels``, ``max_tile_voxels`` (largest read),
        ``peak_pending_voxels`` (largest number of voxels held for later boxes), and
        seconds: ``forward_s`` (in ``forward``), ``read_wait_s`` / ``write_wait_s``
        (waiting for I/O that the threads did not hide) and ``total_s``.
    """
    batches: list[list[tuple[int, int, int]]] = []
    for idx in plan.tiles():
        if (batches and len(batches[-1]) < batch_size
                and plan.tile_shape(idx) == plan.tile_shape(batches[-1][0])):
            batches[-1].append(idx)
        else:
            batches.append([idx])
    windows = [[plan.window(a, i) for i in range(c)] for a, c in enumerate(plan.counts)]
    pending: dict[tuple[int, int, int], list] = {}
    stats = {"tiles": 0, "computed_voxels": 0, "max_tile_voxels": 0, "peak_pending_voxels": 0,
             "forward_s": 0.0, "read_wait_s": 0.0, "write_wait_s": 0.0, "total_s": 0.0}
    t_start = time.perf_counter()
    held = 0

    def load(batch):
        return np.stack([read_padded(read, plan, plan.tile_region(idx)) for idx in batch])

    reader = ThreadPoolExecutor(1, "tile-read") if threads else None
    writer = ThreadPoolExecutor(1, "tile-write") if threads else None
    writes: list = []
    try:
        nxt = reader.submit(load, batches[0]) if reader else None
        for b, batch in enumerate(batches):
            t0 = time.perf_counter()
            x = nxt.result() if reader else load(batch)
            if reader and b + 1 < len(batches):
                nxt = reader.submit(load, batches[b + 1])
            t1 = time.perf_counter()
            y = np.asarray(forward(x), dtype=np.float32)
            stats["forward_s"] += time.perf_counter() - t1
            stats["read_wait_s"] += t1 - t0
            if y.shape != x.shape:
                raise ValueError(f"forward returned shape {y.shape} for a batch of {x.shape}")
            stats["tiles"] += len(batch)
            stats["max_tile_voxels"] = max(stats["max_tile_voxels"], int(x[0].size))
            stats["computed_voxels"] += int(x.size)
            for idx, pred in zip(batch, y):
                w1 = [windows[a][i] for a, i in enumerate(idx)]
                spans = [plan.tile_span(a, i) for a, i in enumerate(idx)]
                wpred = pred * _outer(w1)
                own = None
                for box in itertools.product(*(_boxes_touched(plan, a, i)
                                               for a, i in enumerate(idx))):
                    bspan = [plan.box_span(a, j) for a, j in enumerate(box)]
                    glob = [(max(a0, b0), min(a1, b1)) for (a0, a1), (b0, b1) in zip(spans, bspan)]
                    loc = tuple(slice(g0 - a0, g1 - a0) for (g0, g1), (a0, _) in zip(glob, spans))
                    wparts = [w[sl] for w, sl in zip(w1, loc)]
                    if box == tuple(idx):
                        own = (bspan, loc, wparts)
                        continue
                    piece = (glob, wpred[loc].copy(), wparts)
                    pending.setdefault(box, []).append(piece)
                    held += piece[1].size
                stats["peak_pending_voxels"] = max(stats["peak_pending_voxels"], held)
                bspan, loc, wparts = own
                out = wpred[loc]
                wsum = _outer(wparts)
                for glob, part, pw in pending.pop(tuple(idx), []):
                    sub = tuple(slice(g0 - b0, g1 - b0) for (g0, g1), (b0, _) in zip(glob, bspan))
                    out[sub] += part
                    wsum[sub] += _outer(pw)
                    held -= part.size
                if not np.all(wsum > 0):
                    raise AssertionError("tiling left voxels without weight "
                                         "(overlap/margin inconsistent)")
                out /= wsum
                crop = tuple(slice(b0, min(b1, n)) for (b0, b1), n in zip(bspan, plan.shape))
                block = np.ascontiguousarray(out[tuple(slice(0, c.stop - c.start) for c in crop)])
                t0 = time.perf_counter()
                if writer:
                    writes.append(writer.submit(write, crop, block))
                    while len(writes) > 2:
                        writes.pop(0).result()
                else:
                    write(crop, block)
                stats["write_wait_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for fut in writes:
            fut.result()
        stats["write_wait_s"] += time.perf_counter() - t0
    finally:
        for ex in (reader, writer):
            if ex is not None:
                ex.shutdown(wait=True, cancel_futures=True)
    if pending:
        raise AssertionError(f"tiling left boxes unfinished: {sorted(pending)[:3]}")
    stats["total_s"] = time.perf_counter() - t_start
    return stats


def predict_tiled(volume: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], *,
                  tile: Sequence[int], overlap: Sequence[int], divisor: int,
                  margin: Sequence[int] | None = None, batch_size: int = 1) -> np.ndarray:
    """Predict an in-memory ``volume`` (ZYX) tile by tile with ``forward`` and blend.

    The in-memory form of :func:`predict_stream` (same plan, same blending).

    Returns
    -------
    ndarray (Z, Y, X) float32, the volume's shape.
    """
    plan = plan_tiles(volume.shape, tile=tile, overlap=overlap, divisor=divisor, margin=margin)
    vol = volume.astype(np.float32, copy=False)
    out = np.empty(vol.shape, np.float32)

    def write(region, block):
        out[region] = block

    predict_stream(lambda r: vol[r], forward, write, plan, batch_size=batch_size, threads=False)
    return out


def field_tiling(shape: Sequence[int], *, tile: Sequence[int], overlap: Sequence[int],
                 depth: int) -> tuple[tuple[int, int, int], tuple[int, int, int],
                                      tuple[int, int, int]]:
    """``(tile, overlap, divisor)`` for a field of ``shape`` and a network of ``depth``.

    A z-stack uses them as given with the divisor ``2**depth`` on every axis; a
    single-plane (2D) field is tiled in y and x only: tile z 1, no z overlap, z
    divisor 1 (:mod:`spotlight_scale.core.dims`).
    """
    from .dims import is_planar

    d = 2 ** int(depth)
    tile = tuple(int(t) for t in tile)
    overlap = tuple(int(o) for o in overlap)
    if is_planar(shape):
        return (1, *tile[1:]), (0, *overlap[1:]), (1, d, d)
    return tile, overlap, (d, d, d)
