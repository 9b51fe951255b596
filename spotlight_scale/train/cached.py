"""A cached training set: normalised fields held in device memory, patches cropped there.

The store-backed :class:`~spotlight_scale.train.sampler.PatchDataset` reads every
patch from zarr in DataLoader workers (~70-150 patches/s of 32x64x64 on this
2-core machine, benchmarks/README.md); the paper's protocol on a GPU consumes
~1,300 patches/s. :class:`CachedPatchSet` reads each training field once,
normalises signal and target and computes the foreground mask with the very
functions the store-backed sampler applies to each patch
(:func:`~spotlight_scale.core.normalize.normalize`,
:func:`~spotlight_scale.core.normalize.foreground_mask`), and keeps the three
volumes on the training device (GPU memory when training there, RAM on a CPU):
9 bytes per voxel. A batch is then one slice copy per sample and volume on
that device, with no arithmetic: elementwise normalisation of the whole field
equals normalisation of the patch, bit for bit.

It draws exactly the stream of the store-backed sampler
(:func:`~spotlight_scale.train.sampler.draw`: same fields, origins and
augmentations for the same seed, salt and sample index), so resume, multi-rank
runs and a fallback to the store-backed sampler all see the same patches.

:func:`training_stream` picks the path: the cached set when it fits a memory
budget (by default half of the free GPU memory, or half of the available RAM
shared by the ranks of the node), the store-backed sampler otherwise.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os

import numpy as np
import torch

from ..core.normalize import foreground_mask, normalize
from ..errors import SetupError
from ..io.store import Store
from .sampler import (TRAIN_SALT, IndexSampler, PatchDataset, check_fields, draw, field_info,
                      make_loader)

log = logging.getLogger(__name__)

#: bytes per voxel of the cached set: float32 signal and target, bool mask
BYTES_PER_VOXEL = 4 + 4 + 1


def cache_nbytes(store: Store, keys) -> int:
    """Bytes the cached signal, target and mask of ``keys`` take."""
    return sum(BYTES_PER_VOXEL * int(np.prod(store.field_meta(k)["shape_zyx"])) for k in keys)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def cache_budget(device, memory_gb: float | None = None, local_ranks: int = 1) -> int:
    """The memory budget (bytes) of the cached set on ``device``.

    ``memory_gb`` when given; otherwise half of the free memory of the GPU, or
    half of the available RAM divided among the ``local_ranks`` ranks of this node
    (each rank caches its own copy). The other half is left to the model, its
    activations and the optimiser.
    """
    if memory_gb is not None:
        return int(memory_gb * 2**30)
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free) // 2
    return _available_ram() // 2 // max(1, local_ranks)


@contextlib.contextmanager
def _one_intra_op_thread():
    """Run torch CPU ops on one thread inside the block (restored after).

    A batch is 2 x 24 slice copies of 0.5 MB and a few elementwise passes: too
    small to split across OpenMP threads, and on a busy machine the threads'
    barriers made 2 threads 5-10x slower than 1 here (benchmarks/README.md).
    GPU kernels are not affected.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class CachedPatchSet:
    """Training fields in device memory; batch ``indices`` -> (signal, target, mask).

    Parameters are those of :class:`~spotlight_scale.train.sampler.PatchDataset`,
    plus ``device``. Loading reads each field once; foreground origins are
    computed from the loaded target when ingest's index was built for another
    patch (:func:`~spotlight_scale.train.sampler.field_origins`).
    """

    def __init__(self, store: Store, keys, patch, *, mode: str, norm: str, seed: int,
                 salt: int = TRAIN_SALT, augment: bool = False, device="cpu"):
        self.patch = tuple(int(p) for p in patch)
        self.norm, self.seed, self.salt, self.augment = norm, seed, salt, augment
        self.device = torch.device(device)
        infos, self.signal, self.target, self.mask = [], [], [], []
        for key in keys:
            tgt = store.read(key, "target")
            info = field_info(store, key, self.patch, mode, target=tgt)
            if info is None:
                continue
            infos.append(info)
            sig = normalize(store.read(key, "signal").astype(np.float32), info.signal_stats,
                            norm, "signal")
            tgt = normalize(tgt.astype(np.float32), info.target_stats, norm, "target")
            for vols, a in ((self.signal, sig), (self.target, tgt),
                            (self.mask, foreground_mask(tgt, info.target_stats, norm))):
                vols.append(torch.from_numpy(a).to(self.device))
        self.fields = check_fields(infos, mode)
        log.info("cached %d training fields on %s (%.1f MiB)", len(self.fields), self.device,
                 self.nbytes / 2**20)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.signal + self.target + self.mask)

    def empty_batch(self, n: int):
        """Output tensors for a batch of ``n`` (reusable with :meth:`batch`'s ``out``)."""
        shape = (n, 1, *self.patch)
        return (torch.empty(shape, dtype=torch.float32, device=self.device),
                torch.empty(shape, dtype=torch.float32, device=self.device),
                torch.empty(shape, dtype=torch.bool, device=self.device))

    def batch(self, indices, out=None):
        """Samples ``indices`` of the stream as (signal, target, mask), each (N, 1, Z, Y, X).

        ``out``: tensors from :meth:`empty_batch` to fill instead of allocating
        (on a CPU a fresh 12 MB allocation per batch, page faults included, costs
        more than the crops).
        """
        indices = list(indices)
        draws = [draw(self.fields, self.patch, self.seed, self.salt, i, self.augment)
                 for i in indices]
        sig, tgt, mask = out if out is not None else self.empty_batch(len(draws))
        with _one_intra_op_thread():
            self._fill(draws, sig, tgt, mask)
        return sig, tgt, mask

    def _fill(self, draws, sig, tgt, mask) -> None:
        for b, d in enumerate(draws):
            for vols, dst in ((self.signal, sig), (self.target, tgt), (self.mask, mask)):
                dst[b, 0].copy_(vols[d.field][d.region])
                if d.rot90 or d.flip:  # np.rot90(axes=(1, 2)), then X reversed (new tensors)
                    turned = torch.rot90(dst[b, 0], d.rot90, dims=(1, 2))
                    dst[b, 0].copy_(turned.flip(2) if d.flip else turned)

    def batches(self, *, batch_size: int, rank: int, world: int, start_iteration: int,
                iterations: int):
        """This rank's local batches from ``start_iteration`` on, in iteration order.

        The same indices as :func:`~spotlight_scale.train.sampler.make_loader`. The
        output tensors are reused: a batch is valid until the next one is drawn.
        """
        local = batch_size // world
        flat = iter(IndexSampler(batch_size, rank, world, start_iteration, iterations))
        out = self.empty_batch(local)
        for _ in range(start_iteration, iterations):
            yield self.batch(itertools.islice(flat, local), out=out)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def training_stream(store: Store, keys, cfg, *, device, rank: int, world: int,
                    local_ranks: int, start_iteration: int):
    """This rank's training batches: the cached set when it fits, else the store-backed sampler.

    ``cfg.cache``: ``auto`` (cache within the budget of :func:`cache_budget`, else
    fall back), ``on`` (cache or fail) or ``off`` (store-backed). Returns the
    iterable and the path taken (``"cached"`` or ``"store"``).
    """
    mode, norm = cfg.sampling_mode, cfg.norm_mode
    common = dict(mode=mode, norm=norm, seed=cfg.seed, salt=TRAIN_SALT, augment=cfg.augment)
    loop = dict(batch_size=cfg.batch_size, rank=rank, world=world,
                start_iteration=start_iteration, iterations=cfg.iterations)
    if cfg.cache != "off":
        need = cache_nbytes(store, keys)
        budget = cache_budget(device, cfg.cache_memory_gb, local_ranks)
        if need <= budget:
            cached = CachedPatchSet(store, keys, cfg.patch, device=device, **common)
            return cached.batches(**loop), "cached"
        what = (f"the training set needs {_size(need)} on {device}, over the cache budget of "
                f"{_size(budget)}")
        if cfg.cache == "on":
            raise SetupError(f"--cache on: {what}; raise --cache-memory-gb or use --cache auto")
        log.warning("%s: patches are read from the store instead (slower)", what)
    ds = PatchDataset(store, keys, cfg.patch, **common)
    return make_loader(ds, num_workers=cfg.num_workers, **loop), "store"
