"""Profile: per-nucleus features of every field (CellProfiler's via cp_measure, plus mesh
shape features), as Parquet datasets (:mod:`spotlight_scale.io.profiles`). A 2D field
(one z plane) is measured in 2D (:mod:`spotlight_scale.core.features`).

Each field is one task on a Dask worker: read its labels and image, compute
:func:`spotlight_scale.core.features.nucleus_features` with the store's voxel size and the
store's intensity scale (integer images measured as value / dtype maximum, as CellProfiler
loads them; a prediction, rescaled into the target's range, with the target's), write one
Parquet file (atomically) then a marker (with the stamps of the labels and image it
was made from: a field whose inputs changed since is profiled again). Memory per
worker is one field. At the end the per-well table is rewritten from all fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core import dims
from ..core.features import DEFAULT_GROUPS, check_groups
from ..io import platemap as PM
from ..io import profiles as P
from ..io.atomic import atomic_write_json
from ..io.store import FieldKey, Store, StoreError
from ..io.tables import write_table
from ..versioning import TABLE_SCHEMAS

log = logging.getLogger(__name__)


def _marker(out: Path, key: FieldKey) -> Path:
    return out / "_done" / key.plate / key.well / f"{key.field}.json"


def _inputs(store: Store, key: FieldKey, labels: str, image: str) -> list:
    """Stamps of the labels and image a field's profile is made from."""
    return [store.input_stamp(key, f"labels:{labels}"), store.input_stamp(key, image)]


def _profile_damage(out: Path, key: FieldKey, marker_path: Path) -> str | None:
    """Why a profiled field's marker cannot be trusted: it does not parse, or the field's
    Parquet file is gone or has another size than was written."""
    try:
        marker = json.loads(marker_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return f"{marker_path} does not parse"
    part = P.part_path(Path(out), key)
    if not part.is_file():
        return f"{part} is missing"
    if "bytes" in marker and part.stat().st_size != marker["bytes"]:
        return f"{part} has {part.stat().st_size} bytes, {marker['bytes']} were written"
    return None


def _read_labels(store: Store, key: FieldKey, labels: str) -> np.ndarray:
    """Labels ``labels`` of ``key``, refusing labels a ``segment`` run is (re)writing: their
    chunks are then absent because they are not written yet, not because they were lost."""
    from ..io.chunks import ChunkError

    def busy() -> StoreError:
        return StoreError(f"labels {labels!r} of field {key} are not complete: a `segment "
                          f"--name {labels}` is writing them (or was interrupted); re-run "
                          "profile once segment has finished")

    marker = store.is_done("segment", key, name=labels) if labels != "gt" else True
    if not marker:
        raise busy()
    try:
        return store.read_named(key, f"labels:{labels}")
    except ChunkError:
        if labels != "gt" and store.is_done("segment", key, name=labels) != marker:
            raise busy() from None
        raise


def intensity_scale(store: Store, key: FieldKey) -> float:
    """The stored images' dtype maximum for integer stores (65535 for uint16), else 1."""
    dtype = np.dtype(store.field_meta(key).get("dtype", "float32"))
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def profile_field(store_root: str, key: FieldKey, labels: str, image: str, out: str,
                  fingerprint: str, groups: Sequence[str] = DEFAULT_GROUPS,
                  platemap=None) -> dict[str, Any]:
    """Measure the nuclei of one field and write its Parquet file, then its marker.
    ``platemap``: the resolved plate map whose columns the rows get (or None)."""
    from ..core.features import nucleus_features

    store = Store(store_root)
    stain = PM.image_stain(store, image)
    inputs = _inputs(store, key, labels, image)
    if not store.has_labels(key, labels):
        raise StoreError(f"field {key} has no labels {labels!r}; run `spotlight-scale segment "
                         f"... --name {labels}`")
    lab = _read_labels(store, key, labels)
    img = store.read_named(key, image)
    if lab.shape != img.shape:
        raise StoreError(f"field {key}: labels {lab.shape} and image {img.shape} differ in shape")
    scale = intensity_scale(store, key)
    feats = nucleus_features(lab, img, store.voxel_size(key), image_name=stain, groups=groups,
                             intensity_scale=scale)
    df = P.nuclei_frame(feats, key, source=P.source_name(image), labels=labels,
                        platemap=platemap)
    write_table(df, P.part_path(Path(out), key), "nuclei",
                schema=P.schema(df.columns, P.arrow_types(platemap),
                                planar=dims.is_planar(lab.shape)),
                labels=labels, image=image, stain=stain, groups=list(groups),
                intensity_scale=scale, store=str(store.root),
                voxel_size_um=list(store.voxel_size(key)))
    atomic_write_json(_marker(Path(out), key), {"fingerprint": fingerprint, "rows": len(df),
                                                "inputs": inputs,
                                                "platemap": _digest(platemap),
                                                "bytes": P.part_path(Path(out), key).stat().st_size})
    return {"field": key.id, "rows": len(df)}


def _digest(platemap) -> str | None:
    """Content digest of a plate map (markers: a field annotated otherwise is redone)."""
    if platemap is None:
        return None
    return hashlib.sha256(platemap.to_json(orient="split").encode()).hexdigest()[:16]


def write_wells(out: Path, groups: Sequence[str], image: str, stain: str, labels: str,
                platemap=None, planar: bool = False) -> None:
    """Rewrite ``_wells/wells.parquet`` from every nuclei file of ``out`` (of 2D fields when
    ``planar``)."""
    nuclei = P.read_profiles(out)
    if nuclei.empty:  # no nuclei anywhere: still every column, with its unit
        from ..core.features import nucleus_features

        empty = (1, 1, 1) if planar else (2, 1, 1)  # one plane: a 2D field's columns
        feats = nucleus_features(np.zeros(empty, np.int32), np.zeros(empty),
                                 (1.0, 1.0, 1.0), image_name=stain, groups=groups)
        nuclei = P.nuclei_frame(feats, FieldKey("P", "A01", 0), source=P.source_name(image),
                                labels=labels, platemap=platemap)
    wells = P.aggregate_wells(nuclei)
    write_table(wells, P.wells_path(out), "wells",
                schema=P.schema(wells.columns, P.arrow_types(platemap), planar),
                image=image, stain=stain, labels=labels, groups=list(groups))


def profile(store_root, *, labels: str, image: str = "target", out, split: str = "all",
            texture: bool = False, granularity: bool = False, cluster: str = "local",
            workers: int | None = None, cluster_config=None, overwrite: bool = False,
            on_error: str = "fail", shard: tuple[int, int] | None = None, platemap=None,
            progress_stream=sys.stderr) -> dict[str, Any]:
    """Profile every selected field; returns counts (``done``, ``skipped``, ``failed``,
    ``rows``). The output directory is locked while this runs.

    Parameters
    ----------
    labels : str
        Labels name (``segment --name``).
    image : str
        Intensity image: ``target``, ``signal`` or ``prediction:NAME``.
    out : path
        Profile directory (layout in :mod:`spotlight_scale.io.profiles`).
    texture, granularity : bool
        Add the Haralick texture and granularity groups (they cost more).
    overwrite : bool
        Re-measure every field (and replace a directory of an older layout).
    on_error : {"fail", "skip"}
        ``skip`` goes on past failing fields and lists them in ``OUT/_failures.parquet``.
    platemap : path, optional
        Plate map CSV for this run (:mod:`spotlight_scale.io.platemap`); default: the
        store's (``ingest --platemap``), if any. Fields annotated with another plate map
        are profiled again.
    shard : (i, n), optional
        Only fields ``i, i + n, ...`` (a job-array task); the well table and the
        failures table are left to an unsharded run.
    """
    from ..io.lock import exclusive
    from . import take_shard
    from .fieldrun import check_on_error, run_fields, write_failures
    from .predict import select_fields

    check_on_error(on_error)
    store = Store(store_root)
    out = Path(out)
    groups = check_groups([*DEFAULT_GROUPS, *(["texture"] if texture else []),
                           *(["granularity"] if granularity else [])])
    if overwrite:
        P.remove_old_layout(out)
    P.check_layout(out)
    keys = take_shard(select_fields(store, split), shard)
    if platemap is not None:
        pm = PM.load(platemap, store.fields())
    else:
        pm = PM.stored(store)
        pm = None if pm is None else PM.resolve(pm, store.fields(),
                                                  str(store.table_path(PM.TABLE)))
    stain = PM.image_stain(store, image)
    annotation = _digest(pm)
    missing = [k for k in keys if not store.has_labels(k, labels)]
    if missing:
        raise StoreError(f"{store.root}: no labels {labels!r} for {len(missing)} field(s), e.g. "
                         f"{missing[0]}; run `spotlight-scale segment ... --name {labels}`")
    fp = hashlib.sha256(json.dumps({"labels": labels, "image": image, "groups": list(groups),
                                    "stain": stain,
                                    "schema": TABLE_SCHEMAS["nuclei"],
                                    "store": str(store.root.resolve())}).encode()).hexdigest()[:16]
    rows = 0
    failures: list[dict] = []
    with exclusive(out, f"profile {labels}", shard=shard):
        todo, skipped = [], 0
        for key in keys:
            m = _marker(out, key)
            damaged = _profile_damage(out, key, m) if m.exists() else None
            if damaged:
                log.warning("profile %s: field %s: %s; profiling it again", labels, key, damaged)
                m.unlink()
            if m.exists() and not overwrite:
                marker = json.loads(m.read_text())
                if marker.get("fingerprint") != fp:
                    raise ValueError(f"{out}: field {key} was profiled with other labels, image, "
                                     "stain or feature groups; use another --out or --overwrite")
                same_inputs = marker.get("inputs") == _inputs(store, key, labels, image)
                if same_inputs and marker.get("platemap") == annotation:
                    skipped += 1
                    continue
                if same_inputs:
                    log.info("profile %s: field %s was annotated with another plate map; "
                             "profiling it again", labels, key)
                else:
                    log.warning("profile %s: labels or image of field %s changed since it "
                                "was profiled; profiling it again", labels, key)
            if m.exists():  # redone: until then the field is not profiled
                m.unlink()
                P.part_path(out, key).unlink(missing_ok=True)
            todo.append(key)
        if todo:
            results, failures = run_fields(
                todo, lambda client, k: client.submit(
                    profile_field, str(store.root), k, labels, image, str(out), fp, groups,
                    pm, pure=False, key=f"profile-{labels}-{k.id}-{fp}"),
                stage=f"profile {labels!r}", desc=f"profile {labels}", on_error=on_error,
                cluster=cluster, workers=workers, cluster_config=cluster_config,
                progress_stream=progress_stream, total=("rows", "nuclei"))
            rows = sum(res["rows"] for _, res in results)
        if shard is None:  # also after a job array, whose tasks leave this to this run
            write_failures(P.failures_path(out), failures, "profile", labels)
            write_wells(out, groups, image, stain, labels, pm, planar=bool(keys) and
                        dims.is_planar(store.image(keys[0]).shape))
    return {"done": len(todo) - len(failures), "skipped": skipped, "failed": len(failures),
            "rows": rows, "out": str(out)}
