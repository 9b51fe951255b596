"""Profile: per-nucleus features of every field (CellProfiler's via cp_measure, plus mesh
shape features), as Parquet datasets (:mod:`spotlight_scale.io.profiles`).

Each field is one task on a Dask worker: read its labels and image, compute
:func:`spotlight_scale.core.features.nucleus_features` with the store's voxel size and the
store's intensity scale (integer images measured as value / dtype maximum, as CellProfiler
loads them; a prediction, rescaled into the target's range, with the target's), write one
Parquet file (atomically) then a marker. Memory per worker is one field. At the end
the per-well table is rewritten from all fields.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core.features import DEFAULT_GROUPS, check_groups, feature_columns, image_token
from ..io import profiles as P
from ..io.atomic import atomic_write_json
from ..io.store import FieldKey, Store, StoreError
from ..io.tables import write_table
from ..versioning import TABLE_SCHEMAS


def _marker(out: Path, key: FieldKey) -> Path:
    return out / "_done" / key.plate / key.well / f"{key.field}.json"


def intensity_scale(store: Store, key: FieldKey) -> float:
    """The stored images' dtype maximum for integer stores (65535 for uint16), else 1."""
    dtype = np.dtype(store.field_meta(key).get("dtype", "float32"))
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def profile_field(store_root: str, key: FieldKey, labels: str, image: str, out: str,
                  fingerprint: str, groups: Sequence[str] = DEFAULT_GROUPS) -> dict[str, Any]:
    """Measure the nuclei of one field and write its Parquet file, then its marker."""
    from ..core.features import nucleus_features

    store = Store(store_root)
    if not store.has_labels(key, labels):
        raise StoreError(f"field {key} has no labels {labels!r}; run `spotlight-scale segment "
                         f"... --name {labels}`")
    lab = store.read_named(key, f"labels:{labels}")
    img = store.read_named(key, image)
    if lab.shape != img.shape:
        raise StoreError(f"field {key}: labels {lab.shape} and image {img.shape} differ in shape")
    scale = intensity_scale(store, key)
    feats = nucleus_features(lab, img, store.voxel_size(key), image_name=image, groups=groups,
                             intensity_scale=scale)
    df = P.nuclei_frame(feats, key)
    write_table(df, P.part_path(Path(out), key), "nuclei", schema=P.schema(df.columns),
                labels=labels, image=image, image_name=image_token(image),
                groups=list(groups), intensity_scale=scale, store=str(store.root),
                voxel_size_um=list(store.voxel_size(key)))
    atomic_write_json(_marker(Path(out), key), {"fingerprint": fingerprint, "rows": len(df)})
    return {"field": key.id, "rows": len(df)}


def write_wells(out: Path, groups: Sequence[str], image: str) -> None:
    """Rewrite ``wells/wells.parquet`` from every nuclei file of ``out``."""
    wells = P.aggregate_wells(P.read_profiles(out))
    if wells.empty:  # no nuclei anywhere: still every column, with its unit
        cols = [f"{P.OBJECT_NAME}_{c}" for c in feature_columns(groups, image)[1:]]
        wells = P.aggregate_wells(wells.reindex(columns=[*P.KEYS, *cols]))
    write_table(wells, P.wells_path(out), "wells", schema=P.schema(wells.columns),
                image=image, image_name=image_token(image), groups=list(groups))


def profile(store_root, *, labels: str, image: str = "target", out, split: str = "all",
            texture: bool = False, granularity: bool = False, cluster: str = "local",
            workers: int | None = None, cluster_config=None, overwrite: bool = False,
            progress_stream=sys.stderr) -> dict[str, Any]:
    """Profile every selected field; returns counts (``done``, ``skipped``, ``rows``).

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
        Re-measure every field (and replace a layout-1 directory).
    """
    from ..cluster import open_client
    from ..progress import Progress, sum_as_completed
    from .predict import select_fields

    store = Store(store_root)
    out = Path(out)
    groups = check_groups([*DEFAULT_GROUPS, *(["texture"] if texture else []),
                           *(["granularity"] if granularity else [])])
    if overwrite:
        P.remove_old_layout(out)
    P.check_layout(out)
    keys = select_fields(store, split)
    missing = [k for k in keys if not store.has_labels(k, labels)]
    if missing:
        raise StoreError(f"{store.root}: no labels {labels!r} for {len(missing)} field(s), e.g. "
                         f"{missing[0]}; run `spotlight-scale segment ... --name {labels}`")
    fp = hashlib.sha256(json.dumps({"labels": labels, "image": image, "groups": list(groups),
                                    "schema": TABLE_SCHEMAS["nuclei"],
                                    "store": str(store.root.resolve())}).encode()).hexdigest()[:16]
    todo, skipped = [], 0
    for key in keys:
        m = _marker(out, key)
        if m.exists() and not overwrite:
            if json.loads(m.read_text()).get("fingerprint") != fp:
                raise ValueError(f"{out}: field {key} was profiled with other labels, image or "
                                 "feature groups; use another --out or --overwrite")
            skipped += 1
            continue
        todo.append(key)
    rows = 0
    if todo:
        progress = Progress(len(todo), "fields", desc=f"profile {labels}", stream=progress_stream)
        with open_client(cluster, workers=workers, cluster_config=cluster_config) as client:
            futs = [client.submit(profile_field, str(store.root), k, labels, image, str(out), fp,
                                  groups, pure=False, key=f"profile-{labels}-{k.id}-{fp}")
                    for k in todo]
            rows = sum_as_completed(futs, progress, "rows", "nuclei")
    write_wells(out, groups, image)
    return {"done": len(todo), "skipped": skipped, "rows": rows, "out": str(out)}
