"""Ingest: raw TIFF z-stacks -> OME-Zarr HCS plates with statistics and patch indices.

One Dask graph over all fields: each task reads one field's TIFFs, checks their
values, resamples them to isotropic voxels, computes per-channel statistics
(chunked Otsu) and the foreground patch index, writes the field and, last, its
completion marker. Memory per worker is therefore a few fields, never the
screen. An interrupted run (even ``kill -9``) resumes, because a field without
a marker is rewritten from scratch. One ingest at a time writes a store (its
lock, :mod:`spotlight_scale.io.lock`).

Identity by content. A field is its key (plate, well, field); what was
ingested into it is recorded by its *content fingerprint*: SHA-256 of every
input file's bytes, with the settings that shape the stored arrays (ingest
settings, channels, voxel size), not the manifest line or the file path. On a
re-run a row whose files have the size, mtime and path recorded in its marker
is skipped at once (``make``'s rule); any other row goes to a worker, which
hashes its files and

- skips it when the fingerprint is unchanged (rows reordered, files moved or
  reached by another path; the marker's file record and split are refreshed);
- otherwise re-ingests it and invalidates exactly what was made from the old
  field: its labels, predictions and their markers (profiles notice through
  their input stamps), and says so.

Hashing costs about 2.5 % of ingest time per field (``benchmarks/bench_integrity.py``);
a head/tail hash would be cheaper but misses an edit inside a file of the same size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io.manifest import ManifestRow, read_manifest
from ..io.store import Store
from . import take_shard

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
        from ..core.validate import voxel_size_problem

        if self.isotropic_um is not None and voxel_size_problem([self.isotropic_um] * 3):
            raise ValueError(f"--isotropic {self.isotropic_um}: "
                             f"{voxel_size_problem([self.isotropic_um] * 3)}")
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


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files(row: ManifestRow) -> dict[str, Path]:
    files = {"signal": row.path_signal, "target": row.path_target}
    if row.path_mask is not None:
        files["mask"] = row.path_mask
    return files


def _params(settings: IngestSettings, row: ManifestRow) -> dict[str, Any]:
    """What, besides the files' bytes, decides the stored arrays of a row."""
    out = {"settings": settings.as_dict(), "voxel_size_um": [float(v) for v in row.voxel_size],
           "channel_signal": row.channel_signal, "channel_target": row.channel_target}
    # only when set, so that the fingerprints of fields ingested before these columns hold
    out.update({k: getattr(row, k) for k in ("channel_mask", "t", "scene")
                if getattr(row, k, None) is not None})
    return out


def field_grid(settings: IngestSettings, shape, voxel_size) -> dict[str, Any]:
    """How a field of raw ``shape`` and ``voxel_size`` is stored: ``isotropic_um`` (None:
    kept on its grid), ``chunks``, ``patch`` and ``patch_stride`` (all Z,Y,X).

    z-stacks follow the settings (the paper: isotropic 0.29 um voxels). A 2D field
    (one z plane, :mod:`spotlight_scale.core.dims`) keeps its pixel grid, the
    microscope's sampling (resampling a plane to 0.29 um would only interpolate); a
    plane with non-square pixels is resampled to its finer pixel size. Its chunks,
    patch and stride are one plane deep.
    """
    from ..core.dims import is_planar

    if not is_planar(shape):
        return {"isotropic_um": settings.isotropic_um, "chunks": tuple(settings.chunks),
                "patch": tuple(settings.patch), "patch_stride": tuple(settings.patch_stride)}
    vy, vx = (float(v) for v in voxel_size[1:])
    square = abs(vy - vx) <= 1e-3 * max(vy, vx)
    return {"isotropic_um": None if square or settings.isotropic_um is None else min(vy, vx),
            "chunks": (1, *settings.chunks[1:]), "patch": (1, *settings.patch[1:]),
            "patch_stride": (1, *settings.patch_stride[1:])}


def _file_record(row: ManifestRow) -> dict[str, list]:
    """``{role: [resolved path, size, mtime_ns]}``: the quick "unchanged" test of a re-run."""
    out = {}
    for role, path in _files(row).items():
        st = os.stat(path)
        out[role] = [os.path.realpath(path), st.st_size, st.st_mtime_ns]
    return out


def content_fingerprint(params: dict[str, Any], digests: dict[str, str]) -> str:
    """The field's identity of content: settings + the SHA-256 of each input file."""
    payload = json.dumps({"params": params, "files": digests}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _intact(store: Store, key, fingerprint: str) -> bool:
    """The field's arrays were written to the end by the ingest that made ``fingerprint``,
    and are still there (:func:`field_damage`)."""
    return field_damage(store, key, fingerprint) is None


def field_damage(store: Store, key, fingerprint: str | None = None) -> str | None:
    """Why the done field ``key`` no longer holds what its ingest wrote (a chunk, an array,
    the patch index missing or truncated, metadata that does not parse: see
    :mod:`spotlight_scale.io.verify`), or ``None`` if it is intact."""
    from ..io.store import StoreError
    from ..io.verify import damage

    marker = store.is_done("ingest", key) or {}
    problem = damage(store.field_url(key), marker.get("stored"), store.patch_index_path(key))
    if problem:
        return problem
    try:
        if store.field_meta(key).get("fingerprint") != (fingerprint or marker.get("fingerprint")):
            return f"{store.field_url(key)}: written by another ingest than its marker's"
    except (StoreError, KeyError, FileNotFoundError, ValueError) as exc:
        return str(exc)
    if not store.patch_index_path(key).is_file():
        return f"{store.patch_index_path(key)} (the patch index) is missing"
    return None


def _quick_unchanged(store: Store, row: ManifestRow, settings: IngestSettings) -> bool:
    """True when the row's files, settings and split are those recorded in its marker."""
    marker = store.is_done("ingest", row.key)
    return bool(marker and marker.get("params") == _params(settings, row)
                and marker.get("files") == _file_record(row) and marker.get("split") == row.split
                and _intact(store, row.key, marker.get("fingerprint")))


def _input_problem(row: ManifestRow, role: str, arr: np.ndarray) -> str | None:
    from ..core.validate import mask_problem, values_problem

    problem = mask_problem(arr) if role == "mask" else values_problem(arr)
    if problem is None:
        return None
    channel = getattr(row, f"channel_{role}", None)
    chan = f", channel {channel}" if channel is not None else ""
    return f"{role} {_files(row)[role]}{chan} {problem}"


def _refresh(store: Store, row: ManifestRow, marker: dict, settings: IngestSettings) -> None:
    """Same content: record the files' new path/mtime and the row's split."""
    if marker.get("split") != row.split:
        from ..io.store import ATTRS_KEY

        group = store.open_field(row.key, mode="a")
        meta = dict(group.attrs[ATTRS_KEY])
        meta["split"] = row.split
        group.attrs[ATTRS_KEY] = meta
    store.mark_done("ingest", row.key, {**{k: v for k, v in marker.items()
                                           if k not in ("layout_version", "stage", "field")},
                                        "split": row.split, "files": _file_record(row),
                                        "params": _params(settings, row)})


def ingest_field(store_root: str, row: ManifestRow, settings: IngestSettings,
                 overwrite: bool = False, manifest: str | None = None) -> dict[str, Any]:
    """Ingest one field (runs on a worker). Returns a small summary dict.

    ``status`` is ``"unchanged"`` (same content fingerprint, nothing rewritten),
    ``"new"`` or ``"changed"`` (the field had other content: ``removed`` lists
    the labels and predictions made from it, now gone), ``"repaired"`` (same
    content, but the stored field was damaged: ``damage`` says how) or
    ``"rewritten"`` (``overwrite``).
    """
    from ..core.patches import foreground_patch_origins
    from ..core.resample import resample
    from ..core.stats import channel_statistics
    from ..io.fields import write_field
    from ..io.images import read_image

    store = Store(store_root)
    params = _params(settings, row)
    digests = {r: file_digest(p) for r, p in _files(row).items()}
    fp = content_fingerprint(params, digests)
    marker = store.is_done("ingest", row.key)
    summary = {"field": row.key.id, "raw_bytes": row.nbytes, "removed": {}}
    damaged = field_damage(store, row.key, fp) if marker else None
    if marker and marker.get("fingerprint") == fp and damaged is None and not overwrite:
        _refresh(store, row, marker, settings)
        return {**summary, "status": "unchanged", "stored_bytes": 0, "n_patches": 0}

    # read and check everything before touching the store: a bad input keeps the old field
    signal, _ = read_image(row.path_signal, row.channel_signal, row.t, row.scene)
    target, _ = read_image(row.path_target, row.channel_target, row.t, row.scene)
    mask = (read_image(row.path_mask, row.channel_mask, row.t, row.scene)[0]
            if row.path_mask is not None else None)
    for name, arr in (("target", target), ("mask", mask)):
        if arr is not None and arr.shape != signal.shape:
            raise ValueError(f"line {row.line}: {name} shape {arr.shape} != signal shape "
                             f"{signal.shape} ({row.path_signal})")
    for role, arr in (("signal", signal), ("target", target), ("mask", mask)):
        problem = _input_problem(row, role, arr) if arr is not None else None
        if problem:
            raise ValueError(f"line {row.line}: {problem}")
    voxel = tuple(row.voxel_size)
    grid = field_grid(settings, signal.shape, voxel)
    iso = grid["isotropic_um"]
    if iso is not None:
        signal = resample(signal, voxel, iso, order=3)
        target = resample(target, voxel, iso, order=3)
        if mask is not None:
            mask = resample(mask, voxel, iso, order=0)
        voxel = (voxel[0] if signal.shape[0] == 1 else iso, iso, iso)
    if signal.dtype != target.dtype:
        target = target.astype(np.result_type(signal.dtype, target.dtype))
        signal = signal.astype(target.dtype)
    if mask is not None and not np.issubdtype(mask.dtype, np.integer):
        mask = mask.astype(np.uint32)  # integer-valued (checked above)
    stats = {"signal": channel_statistics(signal, block_shape=grid["chunks"]),
             "target": channel_statistics(target, block_shape=grid["chunks"])}
    fg = target >= stats["target"]["otsu"]
    patch = tuple(min(p, n) for p, n in zip(grid["patch"], target.shape))
    if patch != tuple(grid["patch"]):
        log.warning("field %s (%s): shape %s smaller than the patch %s; index uses %s",
                    row.key, row.path_signal, target.shape, grid["patch"], patch)
    origins, fracs = foreground_patch_origins(fg, patch, grid["patch_stride"],
                                              settings.min_fraction)

    # what was made from the old field goes first (its labels go with the field group)
    old_fp = (marker or {}).get("fingerprint")
    if marker or store.field_url(row.key).exists():
        summary["removed"] = store.clear_derived(row.key, predictions=old_fp != fp)
        store.clear_done("ingest", row.key)
    source = {**row.source(), "sha256": digests}
    nbytes = write_field(
        store, row.key, signal=signal, target=target, mask=mask, voxel_size=voxel,
        chunks=grid["chunks"], split=row.split, stats=stats, source=source,
        patch_index=(origins, fracs),
        patch_settings={"patch_shape": patch, "stride": grid["patch_stride"],
                        "min_fraction": settings.min_fraction},
        fingerprint=fp, marker_info={"n_patches": int(len(origins)), "params": params,
                                     "files": _file_record(row), "manifest": manifest})
    status = ("new" if not marker else "changed" if old_fp != fp else
              "rewritten" if overwrite else "repaired")
    return {**summary, "status": status, "damage": damaged, "stored_bytes": nbytes,
            "n_patches": int(len(origins)), "shape": list(signal.shape)}


def _failed_file(row: ManifestRow, exc: BaseException) -> str:
    """The input file a failure is about: the one its message names (the target or mask
    when that was the bad one), else the signal file."""
    text = str(exc)
    for path in (row.path_target, row.path_mask, row.path_signal):
        if path is not None and str(path) in text:
            return str(path)
    return str(row.path_signal)


def _check_rows(rows: list[ManifestRow], settings: IngestSettings, failures: list[dict],
                on_error: str) -> list[ManifestRow]:
    """Drop (``skip``) or refuse (``fail``) rows whose resampled field is implausible."""
    from ..core.resample import isotropic_shape
    from ..core.validate import field_shape_problem
    from ..io.manifest import ManifestError

    good = []
    for row in rows:
        iso = field_grid(settings, row.shape, row.voxel_size)["isotropic_um"]
        shape = (isotropic_shape(row.shape, row.voxel_size, iso)
                 if iso is not None else tuple(row.shape))
        problem = field_shape_problem(shape)
        if problem:
            how = (f"resampling {tuple(row.shape)} voxels of {tuple(row.voxel_size)} um to "
                   f"{iso} um" if iso is not None
                   else f"the raw grid {tuple(row.shape)}")
            failures.append({"line": row.line, "file": str(row.path_signal),
                             "error": f"line {row.line}: {how} {problem} ({row.path_signal})"})
        else:
            good.append(row)
    if failures and on_error == "fail":
        raise ManifestError([f["error"] for f in sorted(failures, key=lambda f: f["line"])])
    return good


def _check_target(store_root: Path) -> None:
    """Refuse to turn a folder that holds other things into a store."""
    from ..io.lock import is_lock_file
    from ..io.store import STORE_MANIFEST

    if store_root.exists() and not store_root.is_dir():
        raise ValueError(f"{store_root}: exists and is not a directory")
    if store_root.is_dir() and not (store_root / STORE_MANIFEST).exists():
        # lock files: another job-array task may be creating this store right now
        entries = sorted(p.name for p in store_root.iterdir() if not is_lock_file(p.name))
        if entries:
            raise ValueError(
                f"{store_root}: this folder is not a spotlight-scale store (no {STORE_MANIFEST}) "
                f"and is not empty ({len(entries)} entries, e.g. {entries[0]!r}); ingest into a "
                "new or empty folder")


def ingest(manifest: str | Path, store_root: str | Path, settings: IngestSettings | None = None,
           *, voxel_size=None, platemap=None, stain: str | None = None,
           cluster: str = "local", workers: int | None = 2,
           cluster_config: str | None = None, overwrite: bool = False,
           on_error: str = "fail", shard: tuple[int, int] | None = None,
           progress_stream=sys.stderr) -> dict[str, Any]:
    """Ingest every field of ``manifest`` into the store at ``store_root``.

    Parameters
    ----------
    manifest : path
        The manifest CSV (validated completely before anything is written).
    store_root : path
        The store directory (created if absent; an existing folder must be a store or empty).
    settings : IngestSettings
        Resampling, chunking and patch-index settings.
    voxel_size : (z, y, x), optional
        Fallback voxel size in um for TIFFs without metadata or columns.
    platemap : path, optional
        Plate map CSV kept in the store (:mod:`spotlight_scale.io.platemap`).
    stain : str, optional
        The target's stain, naming the profiles' intensity columns (default ``DNA``).
    cluster, workers, cluster_config :
        Where to run (see :func:`spotlight_scale.cluster.open_client`).
    overwrite : bool
        Redo every field (and accept new settings on an existing store).
    on_error : {"fail", "skip"}
        ``skip`` ingests valid rows and writes ``tables/failures.parquet``.
    shard : (i, n), optional
        Only rows ``i, i + n, ...`` of the manifest (a job-array task); the fields
        table, plate metadata and failures table are left to an unsharded run
        (see :func:`spotlight_scale.pipelines.take_shard`).

    Returns
    -------
    dict
        Counts: ``done`` (fields written), ``skipped`` (unchanged), ``failed``,
        ``changed`` (field ids re-ingested with other content, with what was removed),
        ``raw_bytes``, ``seconds``.
    """
    import time

    import pandas as pd

    from ..core.validate import voxel_size_problem
    from ..io import platemap as annotations
    from ..io.fields import finalize_store
    from ..io.lock import exclusive
    from ..io.tables import write_table
    from .fieldrun import FieldError, check_on_error, run_fields

    settings = settings or IngestSettings()
    settings.validate()
    check_on_error(on_error)
    if voxel_size is not None and voxel_size_problem(voxel_size):
        raise ValueError(f"--voxel-size {','.join(map(str, voxel_size))}: "
                         f"{voxel_size_problem(voxel_size)}")
    rows, failures = read_manifest(manifest, default_voxel_size=voxel_size, on_error=on_error)
    screen = annotations.prepare(platemap, [r.key for r in rows], stain)
    rows = take_shard(_check_rows(rows, settings, failures, on_error), shard)
    finalize = finalize_store if shard is None else (lambda store: None)
    store_root = Path(store_root)
    _check_target(store_root)
    with exclusive(store_root, "ingest", shard=shard):
        from ..io.store import rebuild_store_manifest

        rebuild_store_manifest(store_root, settings.as_dict(), settings.ngff)
        store = Store(store_root, create=True, ngff=settings.ngff, settings=settings.as_dict())
        _accept_settings(store, settings, overwrite)
        annotations.record(store, screen)

        todo: list[ManifestRow] = []
        skipped = 0
        for row in rows:
            if not overwrite and _quick_unchanged(store, row, settings):
                skipped += 1
            else:
                todo.append(row)
        log.info("ingest: %d fields to check or write, %d unchanged, %d invalid rows", len(todo),
                 skipped, len(failures))

        t0 = time.perf_counter()
        raw_bytes, done, changed = 0, 0, {}
        if todo:
            from ..io.fields import create_well_groups

            # create plate/row/well groups before the workers race for them
            create_well_groups(store, [r.key for r in todo])

            def record(row, exc):
                from ..errors import describe

                return {"line": row.line, "file": _failed_file(row, exc),
                        "error": f"line {row.line}: {describe(exc)}"}

            results, task_failures = run_fields(
                todo, lambda client, row: client.submit(
                    ingest_field, str(store_root), row, settings, overwrite,
                    str(Path(manifest).resolve()), key=f"ingest-{row.key.id}-{row.line}",
                    retries=1 if on_error == "skip" else 0, pure=False),
                stage="ingest", desc="ingest", on_error=on_error, cluster=cluster,
                workers=workers, cluster_config=cluster_config, progress_stream=progress_stream,
                describe=lambda r: f"{r.key} (manifest line {r.line}, {r.path_signal})",
                record=record, error=FieldError, nbytes="raw_bytes",
                on_failure=(lambda: store.fields() and finalize(store),
                            "rewriting the plate metadata and fields table"))
            if store.fields():
                finalize(store)
            failures += task_failures
            for row, res in results:
                if res["status"] == "unchanged":
                    skipped += 1
                    continue
                done += 1
                raw_bytes += res["raw_bytes"]
                if res["status"] == "changed" or res["removed"] or res["status"] == "repaired":
                    if res["status"] == "changed" or res["removed"]:
                        changed[res["field"]] = res["removed"]
                    made = "; ".join(f"{stage} {', '.join(names)}"
                                     for stage, names in res["removed"].items())
                    log.warning("ingest: field %s %s: re-ingested%s", res["field"],
                                {"changed": "has new input content",
                                 "rewritten": "rewritten (--overwrite)",
                                 "repaired": f"was damaged ({res.get('damage')})"}.get(
                                    res["status"], "was incomplete"),
                                f"; removed what was made from it ({made}): re-run those "
                                "stages" if made else "")
        elif store.fields():
            finalize(store)
        if failures and shard is None:  # the whole manifest's table: by an unsharded run
            write_table(pd.DataFrame(failures), store.table_path("failures"), "failures")
            log.warning("ingest: %d row(s) failed; see %s", len(failures),
                        store.table_path("failures"))
        elif failures:
            log.warning("ingest: %d row(s) of this shard failed (the run without --shard "
                        "lists them)", len(failures))
        elif store.table_path("failures").exists() and shard is None:
            store.table_path("failures").unlink()
    return {"done": done, "skipped": skipped, "failed": len(failures), "raw_bytes": raw_bytes,
            "changed": changed, "seconds": time.perf_counter() - t0, "store": str(store_root)}


def _accept_settings(store: Store, settings: IngestSettings, overwrite: bool) -> None:
    """A store keeps its ingest settings; other settings need ``--overwrite``."""
    old = store.settings
    new = settings.as_dict()
    if not old or old == new:
        return
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if not overwrite:
        raise ValueError(
            f"{store.root}: the store was ingested with different settings "
            f"({', '.join(f'{k}: {old.get(k)} -> {new.get(k)}' for k in diff)}); "
            "use --overwrite to re-ingest everything with the new settings")
    if old.get("ngff") != settings.ngff and store.fields():
        raise ValueError(f"{store.root}: cannot change the NGFF version of an existing store "
                         f"({old.get('ngff')} -> {settings.ngff}); ingest into a new store")
    from ..io.atomic import atomic_write_json
    from ..io.store import STORE_MANIFEST

    store.manifest["settings"] = new
    atomic_write_json(store.root / STORE_MANIFEST, store.manifest)
