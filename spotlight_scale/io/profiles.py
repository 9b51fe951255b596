"""Nucleus profiles as Parquet datasets that pandas, pyarrow, polars, DuckDB and pycytominer
read as they are, and that stack across sources (profile layout 3: tables ``nuclei`` and
``wells``, schema version 2).

Layout of a profile directory (``spotlight-scale profile ... --out OUT``)::

    OUT/
      nuclei/<PLATE>/<WELL>/<SITE>.parquet   one file per field, one row per nucleus
      _wells/wells.parquet                   per-well medians and Metadata_Object_Count
      _failures.parquet                      fields that failed under --on-error skip
      _done/<PLATE>/<WELL>/<SITE>.json       completion markers (written last)

Only the nuclei are data to a directory reader: pyarrow and pandas skip ``_``-prefixed
entries (the Hive and Spark convention), so ``pd.read_parquet("OUT")`` or a read of a
folder of profile directories returns nuclei rows only, never nuclei and wells rows
mixed; the per-well table is read by its path. Every file stores its keys and no
directory is named ``key=value``: a file read alone is complete. So::

    pd.read_parquet("profiles")                                   # every source's nuclei
    polars.read_parquet("profiles/*/nuclei/**/*.parquet")
    SELECT * FROM read_parquet('profiles/*/nuclei/**/*.parquet')  -- DuckDB
    pd.read_parquet("profiles/target/_wells/wells.parquet")

Columns (pycytominer's and CellProfiler's conventions), the same for every source:
``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site`` (the field),
``Metadata_ObjectNumber`` (the nucleus' label value in ``labels/<NAME>``),
``Metadata_Source`` (the measured image: ``target``, ``prediction:NAME`` or ``signal``),
``Metadata_Labels`` (the labels name), the plate map's columns
(:mod:`spotlight_scale.io.platemap`), positions ``Metadata_Nuclei_Location_*`` (metadata,
not morphology), then the features ``Nuclei_<feature>`` (see
:mod:`spotlight_scale.core.features`) with intensities named by the stain (``..._DNA``:
the target's stain, for the target and its predictions alike). Every feature and position
column carries its ``unit`` and ``description`` in the Parquet field metadata, every file
the table's schema version, the labels, image, stain and intensity scale it was measured
with. So the nuclei of several sources share one schema, column order included, and one
DuckDB, polars or pandas read stacks them without ``union_by_name``.

Profile directories of older layouts are refused with the command that re-makes them
(``profile ... --overwrite``): layout 1 (``Metadata_Plate=<P>/...`` and ``wells.parquet``,
29 home-made features) and layout 2 (``nuclei/`` of schema 1, with image-named
intensities, and ``wells/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..versioning import TABLE_SCHEMAS, VersionError
from .platemap import LABELS, SOURCE, metadata_columns
from .tables import FIELD_KEYS, OBJECT, PLATE, SITE, WELL, key_columns, table_metadata

OBJECT_NAME = "Nuclei"
#: Profile directory layout (1: hive-style, 2: nuclei/ + wells/ with image-named columns).
LAYOUT = 3
KEYS = [*FIELD_KEYS, OBJECT]
COUNT = "Metadata_Object_Count"  # pycytominer's aggregate(compute_object_count=True) name
#: Prefix of the position columns: metadata by pycytominer's convention, not features.
LOCATION = f"Metadata_{OBJECT_NAME}_Location_"


def nuclei_dir(root) -> Path:
    return Path(root) / "nuclei"


def wells_path(root) -> Path:
    return Path(root) / "_wells" / "wells.parquet"


def failures_path(root) -> Path:
    return Path(root) / "_failures.parquet"


def part_path(root, key) -> Path:
    """The nuclei file of field ``key``."""
    return nuclei_dir(root) / key.plate / key.well / f"{key.field}.parquet"


def duckdb_glob(root) -> str:
    return str(nuclei_dir(root) / "**" / "*.parquet")


def source_name(image: str) -> str:
    """``Metadata_Source`` of a profile of ``image`` (``target``, ``prediction:NAME``)."""
    return str(image)


def _old_layout(root: Path) -> tuple[int, list[Path], dict]:
    """``(layout, paths to remove, a file's metadata)`` of an older profile directory
    (layout 0: none found)."""
    one = [p for p in [root / "wells.parquet", *sorted(root.glob("Metadata_Plate=*"))]
           if p.exists()]
    if one:
        meta = next((table_metadata(p) for p in
                     root.glob("Metadata_Plate=*/Metadata_Well=*/*.parquet")), {})
        return 1, one, meta
    part = next(iter(sorted(nuclei_dir(root).glob("*/*/*.parquet"))), None)
    meta = table_metadata(part) if part is not None else {}
    old = part is not None and meta.get("spotlight_scale.schema_version") == "1"
    if old or (root / "wells").is_dir() or (root / "failures.parquet").exists():
        paths = [p for p in (nuclei_dir(root), root / "wells", root / "failures.parquet")
                 if p.exists()]
        return 2, paths, meta
    return 0, [], meta


def check_layout(root) -> None:
    """Raise :class:`VersionError` (with the command that re-makes it) for a profile
    directory of an older layout."""
    root = Path(root)
    layout, old, meta = _old_layout(root)
    if not layout:
        return
    labels = meta.get("spotlight_scale.labels", "LABELS")
    image = meta.get("spotlight_scale.image", "IMAGE")
    what = ("Metadata_Plate=*/... and wells.parquet" if layout == 1 else
            "nuclei/ with image-named intensity columns, and wells/")
    raise VersionError(
        f"{root}: profiles in layout version {layout} ({what}, schema "
        f"{meta.get('spotlight_scale.schema_version', 1)}); spotlight-scale reads layout "
        f"{LAYOUT} (schema {TABLE_SCHEMAS['nuclei']}) only: re-run `spotlight-scale profile "
        f"STORE --labels {labels} --image {image} --out {root} --overwrite`")


def remove_old_layout(root) -> None:
    """Delete an older profile directory's tables and markers (``profile --overwrite``)."""
    root = Path(root)
    layout, old, _ = _old_layout(root)
    if layout and (root / "_done").exists():
        shutil.rmtree(root / "_done")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def nuclei_frame(features: pd.DataFrame, key, *, source: str, labels: str,
                 platemap: pd.DataFrame | None = None) -> pd.DataFrame:
    """The nuclei table of field ``key`` from :func:`~spotlight_scale.core.features.
    nucleus_features` output (measured with the stain as its image name): keys, source,
    labels, the plate map's columns, positions as ``Metadata_Nuclei_Location_*``, then
    ``Nuclei_<feature>``."""
    from ..core.features import OBJECT_COLUMN
    from .platemap import annotate

    def name(c):
        if c == OBJECT_COLUMN:
            return OBJECT
        return f"Metadata_{OBJECT_NAME}_{c}" if c.startswith("Location_") else f"{OBJECT_NAME}_{c}"

    df = features.rename(columns=name)
    order = [OBJECT, *[c for c in df.columns if c.startswith(LOCATION)],
             *[c for c in df.columns if c.startswith(f"{OBJECT_NAME}_")]]
    df = df[order]
    n = len(df)
    fixed = {**key_columns(key), OBJECT: None, SOURCE: source, LABELS: labels}
    for i, (col, value) in enumerate(fixed.items()):
        if col != OBJECT:
            df.insert(i, col, pd.Series([value] * n, dtype=type(value), index=df.index))
    return annotate(df, platemap, at=len(fixed))


def arrow_types(platemap: pd.DataFrame | None) -> dict:
    """Arrow types of a plate map's columns (one type per column for every file)."""
    import pyarrow as pa

    cols = metadata_columns(platemap)
    if not cols:
        return {}
    sch = pa.Schema.from_pandas(platemap[cols], preserve_index=False)
    return {c: (pa.string() if sch.field(c).type == pa.null() else sch.field(c).type)
            for c in cols}


def schema(columns: Iterable[str], types: dict | None = None, planar: bool = False):
    """Arrow schema of a profile table: string and int64 keys, ``types`` for the plate map's
    columns (:func:`arrow_types`), float64 positions and features with their unit and
    description as field metadata (of a 2D field's features when ``planar``)."""
    import pyarrow as pa

    from ..core.features import feature_unit

    types = types or {}
    fields = []
    for c in columns:
        if c in (PLATE, WELL, SOURCE, LABELS):
            fields.append(pa.field(c, pa.string()))
        elif c in types:
            fields.append(pa.field(c, types[c]))
        elif c in (SITE, OBJECT, COUNT):
            fields.append(pa.field(c, pa.int64()))
        else:
            unit, text = feature_unit(c.removeprefix("Metadata_"), planar=planar)
            fields.append(pa.field(c, pa.float64(), metadata={"unit": unit,
                                                               "description": text}))
    return pa.schema(fields)


def read_profiles(root, keys: Iterable | None = None) -> pd.DataFrame:
    """Nucleus rows of a profile directory, of every field or of the :class:`FieldKey`\\ s in
    ``keys`` (schema versions checked; an older layout raises :class:`VersionError`)."""
    from .tables import read_tables

    root = Path(root)
    check_layout(root)
    if keys is None:
        parts = sorted(nuclei_dir(root).glob("*/*/*.parquet"))
    else:
        parts = [p for p in (part_path(root, k) for k in keys) if p.exists()]
    if not parts:
        return pd.DataFrame(columns=KEYS)
    return read_tables(parts, "nuclei")


def well_strata(columns: Iterable[str]) -> list[str]:
    """The metadata columns that are constant in a well: plate, well, source, labels and
    the plate map's (all ``Metadata_`` columns but site, object number and positions)."""
    return [c for c in columns if c.startswith("Metadata_") and c not in (SITE, OBJECT, COUNT)
            and not c.startswith(LOCATION)]


def aggregate_wells(df: pd.DataFrame) -> pd.DataFrame:
    """Per-well median of every ``Nuclei_`` feature and ``Metadata_Object_Count``: the same
    table as pycytominer's ``aggregate(strata=well_strata(df.columns), operation="median",
    compute_object_count=True)``."""
    strata = well_strata(df.columns)
    feats = [c for c in df.columns if c.startswith(f"{OBJECT_NAME}_")]
    if df.empty:
        return pd.DataFrame({**{c: df[c] for c in strata},
                             COUNT: pd.Series(dtype="int64"),
                             **{c: pd.Series(dtype=float) for c in feats}})
    g = df.groupby(strata, sort=True, dropna=False)
    out = g[feats].median().reset_index()
    out.insert(len(strata), COUNT, g[OBJECT].count().to_numpy().astype("int64"))
    return out
