"""Tiled, blended inference of volumes of any size.

A field is reflect-padded by ``margin`` voxels on every side (so edge voxels
see image context rather than the network's zero padding) and at the far end
up to a multiple of the network divisor ``2**depth``. Tiles of ``tile`` voxels
(multiples of the divisor) step by ``tile - overlap`` (also a multiple of the
divisor, which keeps every tile on the network's downsampling grid), the last
tile flush with the far end. Each tile's output is weighted by a separable
window that is

- 0 within ``margin`` voxels of a tile face that lies inside the padded volume
  (where the tile's own zero padding corrupts the output),
- a raised-cosine ramp from there over the rest of the overlap,
- 1 in the centre and up to faces that coincide with the padded volume's faces;

weights are summed and the blend is divided by them, then the padding is cropped,
so the output has exactly the field's shape. When ``margin`` is at least the
network's receptive-field radius, the tiled result equals one forward pass over
the whole padded volume (to float tolerance): the property the tests check.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def _axis_origins(n: int, tile: int, step: int) -> list[int]:
    if n <= tile:
        return [0]
    o = list(range(0, n - tile + 1, step))
    if o[-1] != n - tile:
        o.append(n - tile)
    return o


def axis_window(tile: int, overlap: int, margin: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1D blending weights of one tile along one axis (see module docstring)."""
    w = np.ones(tile, dtype=np.float64)
    ramp_len = max(overlap - 2 * margin, 1)
    t = np.arange(ramp_len)
    ramp = 0.5 * (1 - np.cos(np.pi * (t + 0.5) / ramp_len))
    if not at_start:
        w[:margin] = 0
        w[margin:margin + ramp_len] = np.minimum(w[margin:margin + ramp_len], ramp[: tile - margin])
    if not at_end:
        w[tile - margin:] = 0
        seg = slice(tile - margin - ramp_len, tile - margin)
        w[seg] = np.minimum(w[seg], ramp[::-1][: len(w[seg])])
    return w


def plan_tiles(shape: Sequence[int], *, tile: Sequence[int], overlap: Sequence[int],
               divisor: int, margin: Sequence[int] | None = None):
    """Padding and tile origins for ``shape``.

    Returns
    -------
    pad : list of (before, after) per axis
    tile : tuple, clipped to the padded shape
    origins : list of 3 lists of origins (in padded coordinates)
    margin : tuple
    """
    tile = [int(t) for t in tile]
    overlap = [int(o) for o in overlap]
    margin = [o // 4 for o in overlap] if margin is None else [int(m) for m in margin]
    for name, t, o, m in zip("zyx", tile, overlap, margin):
        if t % divisor:
            raise ValueError(f"tile size {t} along {name} must be a multiple of {divisor}")
        if (t - o) % divisor or t - o < divisor:
            raise ValueError(f"tile - overlap along {name} ({t} - {o}) must be a positive "
                             f"multiple of {divisor}")
        if o < 2 * m:
            raise ValueError(f"overlap {o} along {name} must be at least twice the margin {m}")
    pad, origins, tiles = [], [], []
    for n, t, o, m in zip(shape, tile, overlap, margin):
        before = m
        total = n + 2 * m
        padded = max(total, t)
        padded = -(-padded // divisor) * divisor
        t_eff = min(t, padded)
        pad.append((before, padded - n - before))
        tiles.append(t_eff)
        origins.append(_axis_origins(padded, t_eff, t - o))
    return pad, tuple(tiles), origins, tuple(margin)


def pad_volume(volume: np.ndarray, pad) -> np.ndarray:
    """Reflect padding (symmetric when the volume is thinner than the pad)."""
    mode = "reflect" if all(b < n and a < n for (b, a), n in zip(pad, volume.shape)) else "symmetric"
    return np.pad(volume, pad, mode=mode)


def predict_tiled(volume: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], *,
                  tile: Sequence[int], overlap: Sequence[int], divisor: int,
                  margin: Sequence[int] | None = None, batch_size: int = 1) -> np.ndarray:
    """Predict ``volume`` (ZYX) tile by tile with ``forward`` and blend.

    Parameters
    ----------
    volume : ndarray (Z, Y, X), float32
    forward : callable
        Maps a batch ``(B, Z, Y, X)`` float32 array to an array of the same shape.
    tile, overlap : (z, y, x)
        Tile size (multiples of ``divisor``) and overlap between neighbours.
    divisor : int
        The network's size divisor (``2**depth``).
    margin : (z, y, x), optional
        Zero-weight border of interior tile faces (default ``overlap // 4``).
    batch_size : int
        Tiles per forward call.

    Returns
    -------
    ndarray (Z, Y, X) float32, the volume's shape.
    """
    pad, tile_eff, origins, margin = plan_tiles(volume.shape, tile=tile, overlap=overlap,
                                                divisor=divisor, margin=margin)
    padded = pad_volume(volume.astype(np.float32, copy=False), pad)
    out = np.zeros(padded.shape, np.float64)
    wsum = np.zeros(padded.shape, np.float64)
    windows = [[axis_window(t, o, m, i == 0, i == len(orig) - 1) for i in range(len(orig))]
               for t, o, m, orig in zip(tile_eff, overlap, margin, origins)]
    jobs = [(i, j, k) for i in range(len(origins[0])) for j in range(len(origins[1]))
            for k in range(len(origins[2]))]
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        regions = [tuple(slice(origins[a][idx], origins[a][idx] + tile_eff[a])
                         for a, idx in enumerate(job)) for job in batch]
        preds = forward(np.stack([padded[r] for r in regions]))
        for job, region, pred in zip(batch, regions, preds):
            w = (windows[0][job[0]][:, None, None] * windows[1][job[1]][None, :, None]
                 * windows[2][job[2]][None, None, :])
            out[region] += pred * w
            wsum[region] += w
    if np.any(wsum == 0):
        raise AssertionError("tiling left voxels without weight (overlap/margin inconsistent)")
    res = out / wsum
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pad, volume.shape))
    return res[crop].astype(np.float32)
