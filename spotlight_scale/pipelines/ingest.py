"""Ingest: raw TIFF z-stacks -> OME-Zarr HCS plates with statistics and patch indices.

One Dask graph over all fields: each task reads one field's TIFFs, resamples
them to isotropic voxels, computes per-channel statistics (chunked Otsu) and
the foreground patch index, writes the field and, last, its completion marker.
Memory per worker is therefore a few fields, never the screen. A re-run skips
fields whose marker carries the same settings fingerprint; an interrupted run
(even ``kill -9``) resumes, because a field without a marker is rewritten from
scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io.manifest import ManifestRow, read_manifest
from ..io.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    """Settings that define what a stored field is (recorded in ``spotlight.json``)."""

    isotropic_um: float | None = 0.29  # None: keep the raw voxel grid (--no-resample)
    chunks: tuple[int, int, int] = (32, 128, 128)
    patch: tuple[int, int, int] = (32, 64, 64)
    patch_stride: tuple[int, int, int] = (8, 16, 16)
    min_fraction: float = 0.001
    ngff: str = "0.5"

    def validate(self) -> None:
        if self.isotropic_um is not None and self.isotropic_um <= 0:
            raise ValueError(f"--isotropic must be positive, got {self.isotropic_um}")
        if not 0 <= self.min_fraction <= 1:
            raise ValueError(f"--min-foreground must be in [0, 1], got {self.min_fraction}")
        for name in ("chunks", "patch", "patch_stride"):
            v = getattr(self, name)
            if len(v) != 3 or min(v) < 1:
                raise ValueError(f"{name} must be three positive integers Z,Y,X, got {v}")
        if self.ngff not in ("0.4", "0.5"):
            raise ValueError(f"--ngff must be 0.4 or 0.5, got {self.ngff}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _fingerprint(settings: IngestSettings, source: dict[str, Any]) -> str:
    payload = json.dumps({"settings": settings.as_dict(), "source": source}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def ingest_field(store_root: str, row: ManifestRow, settings: IngestSettings) -> dict[str, Any]:
    """Ingest one field (runs on a worker). Returns a small summary dict."""
    from ..core.patches import foreground_patch_origins
    from ..core.resample import resample
    from ..core.stats import channel_statistics
    from ..io.fields import write_field
    from ..io.tiff import read_volume

    store = Store(store_root)
    source = row.source()
    fp = _fingerprint(settings, source)
    signal, _ = read_volume(row.path_signal, row.channel_signal)
    target, _ = read_volume(row.path_target, row.channel_target)
    mask = read_volume(row.path_mask)[0] if row.path_mask is not None else None
    for name, arr in (("target", target), ("mask", mask)):
        if arr is not None and arr.shape != signal.shape:
            raise ValueError(f"line {row.line}: {name} shape {arr.shape} != signal shape "
                             f"{signal.shape} ({row.path_signal})")
    voxel = tuple(row.voxel_size)
    if settings.isotropic_um is not None:
        signal = resample(signal, voxel, settings.isotropic_um, order=3)
        target = resample(target, voxel, settings.isotropic_um, order=3)
        if mask is not None:
            mask = resample(mask, voxel, settings.isotropic_um, order=0)
        voxel = (settings.isotropic_um,) * 3
    if signal.dtype != target.dtype:
        target = target.astype(np.result_type(signal.dtype, target.dtype))
        signal = signal.astype(target.dtype)
    if mask is not None and not np.issubdtype(mask.dtype, np.integer):
        mask = mask.astype(np.uint32)
    stats = {"signal": channel_statistics(signal, block_shape=settings.chunks),
             "target": channel_statistics(target, block_shape=settings.chunks)}
    fg = target >= stats["target"]["otsu"]
    patch = tuple(min(p, n) for p, n in zip(settings.patch, target.shape))
    if patch != tuple(settings.patch):
        log.warning("field %s (%s): shape %s smaller than the patch %s; index uses %s",
                    row.key, row.path_signal, target.shape, settings.patch, patch)
    origins, fracs = foreground_patch_origins(fg, patch, settings.patch_stride,
                                              settings.min_fraction)
    nbytes = write_field(
        store, row.key, signal=signal, target=target, mask=mask, voxel_size=voxel,
        chunks=settings.chunks, split=row.split, stats=stats, source=source,
        patch_index=(origins, fracs),
        patch_settings={"patch_shape": patch, "stride": settings.patch_stride,
                        "min_fraction": settings.min_fraction},
        fingerprint=fp, marker_info={"n_patches": int(len(origins))})
    return {"field": row.key.id, "raw_bytes": row.nbytes, "stored_bytes": nbytes,
            "n_patches": int(len(origins)), "shape": list(signal.shape)}


def ingest(manifest: str | Path, store_root: str | Path, settings: IngestSettings | None = None,
           *, voxel_size=None, cluster: str = "local", workers: int | None = 2,
           cluster_config: str | None = None, overwrite: bool = False,
           on_error: str = "fail", progress_stream=sys.stderr) -> dict[str, Any]:
    """Ingest every field of ``manifest`` into the store at ``store_root``.

    Parameters
    ----------
    manifest : path
        The manifest CSV (validated completely before anything is written).
    store_root : path
        The store directory (created if absent).
    settings : IngestSettings
        Resampling, chunking and patch-index settings.
    voxel_size : (z, y, x), optional
        Fallback voxel size in um for TIFFs without metadata or columns.
    cluster, workers, cluster_config :
        Where to run (see :func:`spotlight_scale.cluster.open_client`).
    overwrite : bool
        Redo every field (and accept new settings on an existing store).
    on_error : {"fail", "skip"}
        ``skip`` ingests valid rows and writes ``tables/failures.parquet``.

    Returns
    -------
    dict
        Counts: ``done``, ``skipped``, ``failed``, ``raw_bytes``, ``seconds``.
    """
    import time

    import pandas as pd

    from ..cluster import open_client
    from ..io.fields import finalize_store
    from ..io.tables import write_table
    from ..progress import Progress

    settings = settings or IngestSettings()
    settings.validate()
    rows, failures = read_manifest(manifest, default_voxel_size=voxel_size, on_error=on_error)
    store_root = Path(store_root)
    store = Store(store_root, create=True, ngff=settings.ngff, settings=settings.as_dict())
    old = store.settings
    if old and old != settings.as_dict():
        diff = sorted(k for k in set(old) | set(settings.as_dict())
                      if old.get(k) != settings.as_dict().get(k))
        if not overwrite:
            raise ValueError(
                f"{store_root}: the store was ingested with different settings "
                f"({', '.join(f'{k}: {old.get(k)} -> {settings.as_dict().get(k)}' for k in diff)}); "
                "use --overwrite to re-ingest everything with the new settings")
        if old.get("ngff") != settings.ngff and store.fields():
            raise ValueError(f"{store_root}: cannot change the NGFF version of an existing store "
                             f"({old.get('ngff')} -> {settings.ngff}); ingest into a new store")
        from ..io.atomic import atomic_write_json

        store.manifest["settings"] = settings.as_dict()
        atomic_write_json(store_root / "spotlight.json", store.manifest)

    todo: list[ManifestRow] = []
    skipped = 0
    for row in rows:
        marker = store.is_done("ingest", row.key)
        if marker and not overwrite and marker.get("fingerprint") == _fingerprint(settings,
                                                                                 row.source()):
            skipped += 1
            continue
        if marker:
            store.clear_done("ingest", row.key)
        todo.append(row)
    log.info("ingest: %d fields to do, %d already done, %d invalid rows", len(todo), skipped,
             len(failures))

    t0 = time.perf_counter()
    raw_bytes = 0
    done = 0
    if todo:
        from distributed import as_completed

        from ..io.fields import open_well_group

        for row in todo:  # create plate/row/well groups once, before workers race for them
            open_well_group(store, row.key)

        progress = Progress(len(todo), "fields", desc="ingest",
                            stream=progress_stream)
        by_future = {}
        with open_client(cluster, workers=workers, cluster_config=cluster_config) as client:
            futures = []
            for row in todo:
                fut = client.submit(ingest_field, str(store_root), row, settings,
                                    key=f"ingest-{row.key.id}-{_fingerprint(settings, row.source())}",
                                    retries=1 if on_error == "skip" else 0, pure=False)
                by_future[fut] = row
                futures.append(fut)
            try:
                for fut in as_completed(futures):
                    row = by_future[fut]
                    try:
                        res = fut.result()
                    except Exception as exc:
                        failures.append({"line": row.line, "file": str(row.path_signal),
                                         "error": f"line {row.line}: {type(exc).__name__}: {exc}"})
                        if on_error == "fail":
                            for other in futures:
                                other.cancel()
                            raise RuntimeError(
                                f"ingest failed on {row.key} (manifest line {row.line}, "
                                f"{row.path_signal}): {exc}; fields already done are kept "
                                "(re-run to resume, or --on-error skip)") from exc
                        progress.update(1)
                        continue
                    raw_bytes += res["raw_bytes"]
                    done += 1
                    progress.update(1, nbytes=res["raw_bytes"])
            finally:
                progress.close()
                if store.fields():
                    finalize_store(store)
    elif store.fields():
        finalize_store(store)
    if failures:
        df = pd.DataFrame(failures)
        write_table(df, store.table_path("failures"), "failures")
        log.warning("ingest: %d row(s) failed; see %s", len(failures), store.table_path("failures"))
    elif store.table_path("failures").exists() and on_error == "skip":
        store.table_path("failures").unlink()
    return {"done": done, "skipped": skipped, "failed": len(failures), "raw_bytes": raw_bytes,
            "seconds": time.perf_counter() - t0, "store": str(store_root)}
