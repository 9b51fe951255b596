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
foreground patch index, written by ingest, so every patch holds at least
``min_fraction`` foreground). Only the chunks a patch touches are read.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..core.normalize import foreground_mask, normalize
from ..io.store import FieldKey, Store, StoreError

log = logging.getLogger(__name__)

TRAIN_SALT = 1
VAL_SALT = 2


@dataclass
class FieldInfo:
    key: FieldKey
    shape: tuple[int, int, int]
    signal_stats: dict
    target_stats: dict
    origins: np.ndarray | None  # foreground index (patch origins), None in uniform mode


class PatchDataset(torch.utils.data.Dataset):
    """Map-style dataset: index ``i`` -> the ``i``-th random patch of the run.

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
        if mode not in ("uniform", "foreground"):
            raise ValueError(f"unknown sampling mode {mode!r}")
        self.fields: list[FieldInfo] = []
        for key in keys:
            meta = store.field_meta(key)
            shape = tuple(meta["shape_zyx"])
            if any(p > n for p, n in zip(self.patch, shape)):
                raise ValueError(f"patch {self.patch} is larger than field {key} {shape}; "
                                 "use a smaller --patch")
            try:
                sstats, tstats = store.stats(key, "signal"), store.stats(key, "target")
            except StoreError as exc:
                raise StoreError(f"{exc}") from None
            origins = None
            if mode == "foreground":
                idx = store.patch_index(key)
                if tuple(idx.patch_shape) != self.patch:
                    raise ValueError(
                        f"the store's foreground patch index was built for patches "
                        f"{tuple(idx.patch_shape)}, not {self.patch}: train with --patch "
                        f"{','.join(map(str, idx.patch_shape))}, or re-run ingest with --patch "
                        f"{','.join(map(str, self.patch))} --overwrite")
                origins = idx.origins
                if len(origins) == 0:
                    warnings.warn(f"field {key} has no foreground patch; skipped", stacklevel=2)
                    continue
            self.fields.append(FieldInfo(key, shape, sstats, tstats, origins))
        if not self.fields:
            raise ValueError("no field with foreground patches to sample from"
                             if mode == "foreground" else "no fields to sample from")

    def __len__(self) -> int:  # effectively unbounded; indices come from the sampler
        return 2**62

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.salt, int(i)])
        f = self.fields[int(rng.integers(len(self.fields)))]
        if f.origins is not None:
            origin = f.origins[int(rng.integers(len(f.origins)))]
        else:
            origin = [int(rng.integers(0, n - p + 1)) for n, p in zip(f.shape, self.patch)]
        region = tuple(slice(int(o), int(o) + p) for o, p in zip(origin, self.patch))
        sig = normalize(self.store.read(f.key, "signal", region).astype(np.float32),
                        f.signal_stats, self.norm, "signal")
        tgt = normalize(self.store.read(f.key, "target", region).astype(np.float32),
                        f.target_stats, self.norm, "target")
        mask = foreground_mask(tgt, f.target_stats, self.norm)
        if self.augment:
            k = int(rng.integers(4)) if self.patch[1] == self.patch[2] else 2 * int(rng.integers(2))
            flip = bool(rng.integers(2))
            arrs = []
            for a in (sig, tgt, mask):
                a = np.rot90(a, k, axes=(1, 2))
                arrs.append(np.ascontiguousarray(a[:, :, ::-1] if flip else a))
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
        kw.update(prefetch_factor=4, persistent_workers=False)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size // world, sampler=sampler,
                                       **kw)
