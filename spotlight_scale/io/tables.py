"""Parquet tables with versioned schemas (key-value metadata in every file).

Every table spotlight-scale writes carries ``spotlight_scale.table`` and
``spotlight_scale.schema_version`` in its Parquet metadata; :func:`read_table`
refuses a file whose table name or version it does not know, except an older
version it has a reader for (:data:`UPGRADES`).

Keys: every table names a field by the same columns, :data:`FIELD_KEYS` (the
``Metadata_`` convention of CellProfiler and pycytominer): ``Metadata_Plate``,
``Metadata_Well`` (``B03``) and ``Metadata_Site`` (the field number); tables about
objects add ``Metadata_ObjectNumber``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..versioning import TABLE_SCHEMAS, VersionError, check_version, parquet_metadata
from .atomic import atomic_write

log = logging.getLogger(__name__)

PLATE, WELL, SITE, OBJECT = ("Metadata_Plate", "Metadata_Well", "Metadata_Site",
                             "Metadata_ObjectNumber")
#: The columns that name a field in every table.
FIELD_KEYS = (PLATE, WELL, SITE)

#: Readers of older schema versions: ``(table, version) -> column renames`` that make it
#: the current version (version 1 of these tables keyed fields by plate/well/field).
UPGRADES = {
    ("fields", 1): {"plate": PLATE, "well": WELL, "field": SITE, "row": "Metadata_Row",
                    "column": "Metadata_Column"},
    ("metrics", 1): {"plate": PLATE, "well": WELL, "field": SITE},
}


def key_columns(key) -> dict:
    """``{Metadata_Plate, Metadata_Well, Metadata_Site}`` of a :class:`FieldKey`."""
    return {PLATE: key.plate, WELL: key.well, SITE: key.field}


def table_metadata(path: str | Path) -> dict[str, str]:
    """The ``spotlight_scale.*`` key-value metadata of a Parquet file."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"spotlight_scale.")}


def write_table(df: pd.DataFrame, path: str | Path, table: str, *, schema: pa.Schema | None = None,
                **extra) -> None:
    """Write ``df`` atomically as Parquet with the table's schema version (and ``schema``'s
    column types and field metadata, when given)."""
    tab = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    meta = dict(tab.schema.metadata or {})
    meta.update(parquet_metadata(table, **extra))
    tab = tab.replace_schema_metadata(meta)
    atomic_write(Path(path), lambda p: pq.write_table(tab, p))


def _renames(path, table: str) -> dict | None:
    """Check a file's table name and schema version; the renames that upgrade an older
    version with a reader (None: current version)."""
    meta = table_metadata(path)
    found = meta.get("spotlight_scale.table")
    if found != table:
        raise VersionError(f"{path}: expected a '{table}' table, found {found!r}")
    version = meta.get("spotlight_scale.schema_version")
    renames = UPGRADES.get((table, int(version))) if str(version).isdigit() else None
    if renames is None:
        check_version(f"'{table}' table schema", version, TABLE_SCHEMAS[table], str(path))
    else:
        log.info("%s: '%s' table schema version %s read as version %d", path, table, version,
                 TABLE_SCHEMAS[table])
    return renames


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read a table, checking its name and schema version (older versions with a reader in
    :data:`UPGRADES` are converted to the current one)."""
    renames = _renames(path, table)
    df = pq.read_table(path).to_pandas()
    return df.rename(columns=renames) if renames else df


def read_tables(paths, table: str) -> pd.DataFrame:
    """Concatenate the rows of several files of one table (each checked as by
    :func:`read_table`), converting to pandas once."""
    parts = []
    for path in paths:
        renames = _renames(path, table)
        tab = pq.read_table(path)
        parts.append(tab.rename_columns([renames.get(c, c) for c in tab.column_names])
                     if renames else tab)
    return pa.concat_tables(parts, promote_options="permissive").to_pandas()


def write_patch_index(path: str | Path, origins: np.ndarray, fg_fraction: np.ndarray, *,
                      patch_shape, stride, min_fraction: float, threshold: float,
                      field_id: str) -> None:
    """Write one field's foreground patch index (int32 origins, float32 fractions)."""
    origins = np.asarray(origins, dtype=np.int32).reshape(-1, 3)
    df = pd.DataFrame({
        "z": origins[:, 0], "y": origins[:, 1], "x": origins[:, 2],
        "fg_fraction": np.asarray(fg_fraction, dtype=np.float32),
    })
    write_table(df, path, "patches", patch_shape=list(map(int, patch_shape)),
                stride=list(map(int, stride)), min_fraction=float(min_fraction),
                threshold=float(threshold), field=field_id)


def read_patch_index(path: str | Path):
    """Read a field's patch index as a :class:`~spotlight_scale.io.store.PatchIndex`."""
    from .store import PatchIndex

    df = read_table(path, "patches")
    meta = table_metadata(path)
    return PatchIndex(
        origins=df[["z", "y", "x"]].to_numpy(np.int32),
        fg_fraction=df["fg_fraction"].to_numpy(np.float32),
        patch_shape=tuple(json.loads(meta["spotlight_scale.patch_shape"])),
        stride=tuple(json.loads(meta["spotlight_scale.stride"])),
        min_fraction=float(json.loads(meta["spotlight_scale.min_fraction"])),
        threshold=float(json.loads(meta["spotlight_scale.threshold"])),
    )
