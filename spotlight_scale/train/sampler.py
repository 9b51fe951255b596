"""Patch sampling from the store, with one RNG per sample index.

Sample ``i`` of a run is drawn with ``numpy.random.default_rng([seed, salt, i])``:

- the stream does not depend on DataLoader workers or prefetching;
- DDP ranks take disjoint index ranges of each global batch, so every rank
  draws different patches, and one process with the same global batch draws
  exactly the union of the ranks' patches;
- resuming at iteration ``t`` restarts at index ``t * batch_size`` and
  reproduces the uninterrupted stream, with no RNG state to checkpoint.

Modes: ``uniform`` (F-net: a training field uniformly, then an origin
uniformly inside it) and ``foreground`` (Spotlight: an origin from the field's
foreground patch origins, so every patch holds at least ``min_fraction``
foreground). The origins come from the index ingest wrote when it was built for
the training patch; for any other patch they are computed at train start from
the target with the index's stride and ``min_fraction`` (the index is a cache,
not a constraint). Only the chunks a patch touches are read.

Two readers draw the same stream (:func:`draw`): :class:`PatchDataset` reads
each patch from the store (DataLoader workers), and
:class:`spotlight_scale.train.cached.CachedPatchSet` crops patches from fields
held in device memory.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..core.normalize import foreground_mask, normalize
from ..io.store import FieldKey, Store
from .preempt import ignore_stop_signals

log = logging.getLogger(__name__)

TRAIN_SALT = 1
VAL_SALT = 2


@dataclass
class FieldInfo:
    key: FieldKey
    shape: tuple[int, int, int]
    signal_stats: dict
    target_stats: dict
    origins: np.ndarray | None  # foreground patch origins, None in uniform mode


@dataclass(frozen=True)
class Draw:
    """What sample ``i`` of a stream is: a field, a ZYX region and an XY augmentation."""

    field: int  # index into the field list
    region: tuple[slice, slice, slice]
    rot90: int = 0  # quarter turns in the YX plane (numpy's rot90 over axes 1, 2)
    flip: bool = False  # then reverse X


def draw(fields: list[FieldInfo], patch, seed: int, salt: int, i: int,
         augment: bool = False) -> Draw:
    """Sample ``i`` of the stream ``(seed, salt)``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, salt, int(i)])
    fi = int(rng.integers(len(fields)))
    f = fields[fi]
    if f.origins is not None:
        origin = f.origins[int(rng.integers(len(f.origins)))]
    else:
        origin = [int(rng.integers(0, n - p + 1)) for n, p in zip(f.shape, patch)]
    region = tuple(slice(int(o), int(o) + p) for o, p in zip(origin, patch))
    if not augment:
        return Draw(fi, region)
    k = int(rng.integers(4)) if patch[1] == patch[2] else 2 * int(rng.integers(2))
    return Draw(fi, region, k, bool(rng.integers(2)))


def field_origins(store: Store, key: FieldKey, patch, target: np.ndarray | None = None
                  ) -> np.ndarray:
    """Foreground patch origins of ``key`` for ``patch``.

    The index ingest wrote when it was built for ``patch``; otherwise computed
    from the target (``target``, or read from the store) with the index's
    foreground rule: same ``min_fraction``, same stride clipped to the patch.
    """
    from ..core.patches import foreground_patch_origins

    idx = store.patch_index(key)
    patch = tuple(int(p) for p in patch)
    if tuple(idx.patch_shape) == patch:
        return idx.origins
    stride = tuple(min(int(s), p) for s, p in zip(idx.stride, patch))
    if target is None:
        target = store.read(key, "target")
    otsu = store.stats(key, "target")["otsu"]
    origins, _ = foreground_patch_origins(target >= otsu, patch, stride, idx.min_fraction)
    log.info("field %s: %d foreground origins for patch %s (stride %s; ingest indexed %s)",
             key, len(origins), patch, stride, tuple(idx.patch_shape))
    return origins


def field_info(store: Store, key: FieldKey, patch, mode: str,
               target: np.ndarray | None = None) -> FieldInfo | None:
    """Shape, statistics and (foreground mode) patch origins of ``key``.

    ``None`` (with a warning) for a field without a foreground patch. ``target``:
    the field's target volume when it is already in memory, so that computing
    origins for a patch ingest did not index does not read it again.
    """
    if mode not in ("uniform", "foreground"):
        raise ValueError(f"unknown sampling mode {mode!r}")
    patch = tuple(int(p) for p in patch)
    shape = tuple(store.field_meta(key)["shape_zyx"])
    if any(p > n for p, n in zip(patch, shape)):
        raise ValueError(f"patch {patch} is larger than field {key} {shape}; "
                         "use a smaller --patch")
    origins = None
    if mode == "foreground":
        origins = field_origins(store, key, patch, target)
        if len(origins) == 0:
            warnings.warn(f"field {key} has no foreground patch; skipped", stacklevel=2)
            return None
    return FieldInfo(key, shape, store.stats(key, "signal"), store.stats(key, "target"), origins)


def check_fields(fields: list, mode: str) -> list[FieldInfo]:
    """``fields`` without the skipped ones; an error when none is left."""
    fields = [f for f in fields if f is not None]
    if not fields:
        raise ValueError("no field with foreground patches to sample from"
                         if mode == "foreground" else "no fields to sample from")
    return fields


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset: index ``i`` -> the ``i``-th random patch of the run, read from the store.

    Parameters
    ----------
    store : Store
    keys : list of FieldKey
        Fields to sample from.
    patch : (z, y, x)
    mode : {"uniform", "foreground"}
    norm : {"fnet", "spotlight"}
    seed, salt : int
        The stream; ``salt`` separates training and validation streams.
    augment : bool
        Random flips in Y and X and 90-degree rotations in XY.
    """

    def __init__(self, store: Store, keys, patch, *, mode: str, norm: str, seed: int,
                 salt: int = TRAIN_SALT, augment: bool = False):
        self.store, self.patch = store, tuple(int(p) for p in patch)
        self.mode, self.norm, self.seed, self.salt, self.augment = mode, norm, seed, salt, augment
        self.fields = check_fields([field_info(store, k, self.patch, mode) for k in keys], mode)

    def __len__(self) -> int:  # effectively unbounded; indices come from the sampler
        return 2**62

    def __getitem__(self, i: int):
        d = draw(self.fields, self.patch, self.seed, self.salt, i, self.augment)
        f = self.fields[d.field]
        sig = normalize(self.store.read(f.key, "signal", d.region).astype(np.float32),
                        f.signal_stats, self.norm, "signal")
        tgt = normalize(self.store.read(f.key, "target", d.region).astype(np.float32),
                        f.target_stats, self.norm, "target")
        mask = foreground_mask(tgt, f.target_stats, self.norm)
        if self.augment:
            arrs = []
            for a in (sig, tgt, mask):
                a = np.rot90(a, d.rot90, axes=(1, 2))
                arrs.append(np.ascontiguousarray(a[:, :, ::-1] if d.flip else a))
            sig, tgt, mask = arrs
        return (torch.from_numpy(np.ascontiguousarray(sig))[None],
                torch.from_numpy(np.ascontiguousarray(tgt))[None],
                torch.from_numpy(np.ascontiguousarray(mask))[None])


class IndexSampler(torch.utils.data.Sampler):
    """Indices of this rank's share of each global batch, from ``start_iteration`` on."""

    def __init__(self, batch_size: int, rank: int, world: int, start_iteration: int,
                 iterations: int):
        self.b, self.rank, self.world = batch_size, rank, world
        self.local = batch_size // world
        self.start, self.stop = start_iteration, iterations

    def __iter__(self):
        for it in range(self.start, self.stop):
            base = it * self.b + self.rank * self.local
            yield from range(base, base + self.local)

    def __len__(self):
        return (self.stop - self.start) * self.local


def make_loader(dataset: PatchDataset, *, batch_size: int, rank: int, world: int,
                start_iteration: int, iterations: int, num_workers: int):
    """A DataLoader yielding this rank's local batches in iteration order."""
    sampler = IndexSampler(batch_size, rank, world, start_iteration, iterations)
    kw = {"num_workers": num_workers}
    if num_workers:
        kw.update(prefetch_factor=4, persistent_workers=False, worker_init_fn=ignore_stop_signals)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                                       **kw)
