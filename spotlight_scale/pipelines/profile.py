"""Profile: per-nucleus morphology and intensity features of every field, as Parquet.

Each field is one task on a Dask worker: read its labels and image, compute
:func:`spotlight_scale.core.features.nucleus_features` with the store's voxel
size, write one Parquet part (atomically) then a marker. Memory per worker is
one field. At the end the per-well table is rewritten from all parts.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_json
from ..io.profiles import aggregate_wells, part_path, read_profiles
from ..io.store import FieldKey, Store, StoreError
from ..io.tables import write_table


def _marker(out: Path, key: FieldKey) -> Path:
    return out / "_done" / key.plate / key.well / f"{key.field}.json"


def profile_field(store_root: str, key: FieldKey, labels: str, image: str, out: str,
                  fingerprint: str) -> dict[str, Any]:
    from ..core.features import nucleus_features

    store = Store(store_root)
    if labels not in store.labels_names(key):
        raise StoreError(f"field {key} has no labels {labels!r}; run `spotlight-scale segment "
                         f"... --name {labels}`")
    lab = store.read_named(key, f"labels:{labels}")
    img = store.read_named(key, image)
    if lab.shape != img.shape:
        raise StoreError(f"field {key}: labels {lab.shape} and image {img.shape} differ in shape")
    df = nucleus_features(lab, img, store.voxel_size(key))
    df = df.rename(columns={c: f"Nuclei_{c}" for c in df.columns if c != "label"})
    df = df.rename(columns={"label": "Metadata_Label"})
    df.insert(0, "Metadata_Field", key.field)
    df.insert(0, "Metadata_Well", key.well)
    df.insert(0, "Metadata_Plate", key.plate)
    write_table(df, part_path(Path(out), key.plate, key.well, key.field), "nuclei",
                labels=labels, image=image, store=str(store.root))
    atomic_write_json(_marker(Path(out), key), {"fingerprint": fingerprint, "rows": len(df)})
    return {"field": key.id, "rows": len(df)}


def profile(store_root, *, labels: str, image: str = "target", out, split: str = "all",
            cluster: str = "local", workers: int | None = None, cluster_config=None,
            overwrite: bool = False, progress_stream=sys.stderr) -> dict[str, Any]:
    """Profile every selected field; returns counts (``done``, ``skipped``, ``rows``)."""
    from ..cluster import open_client
    from ..progress import Progress, sum_as_completed
    from .predict import select_fields

    store = Store(store_root)
    out = Path(out)
    keys = select_fields(store, split)
    missing = [k for k in keys if not store.is_done("segment", k, name=labels)
               and labels not in store.labels_names(k)]
    if missing:
        raise StoreError(f"{store.root}: no labels {labels!r} for {len(missing)} field(s), e.g. "
                         f"{missing[0]}; run `spotlight-scale segment ... --name {labels}`")
    fp = hashlib.sha256(json.dumps({"labels": labels, "image": image,
                                    "store": str(store.root.resolve())}).encode()).hexdigest()[:16]
    todo, skipped = [], 0
    for key in keys:
        m = _marker(out, key)
        if m.exists() and not overwrite:
            if json.loads(m.read_text()).get("fingerprint") != fp:
                raise ValueError(f"{out}: field {key} was profiled from other labels/image; "
                                 "use another --out or --overwrite")
            skipped += 1
            continue
        todo.append(key)
    rows = 0
    if todo:
        progress = Progress(len(todo), "fields", desc=f"profile {labels}", stream=progress_stream)
        with open_client(cluster, workers=workers, cluster_config=cluster_config) as client:
            futs = [client.submit(profile_field, str(store.root), k, labels, image, str(out), fp,
                                  pure=False, key=f"profile-{labels}-{k.id}-{fp}") for k in todo]
            rows = sum_as_completed(futs, progress, "rows", "nuclei")
    write_table(aggregate_wells(read_profiles(out)), out / "wells.parquet", "wells")
    return {"done": len(todo), "skipped": skipped, "rows": rows, "out": str(out)}
