"""Nucleus profiles as Parquet datasets that pandas, pyarrow, DuckDB and pycytominer read
as they are (profile layout 2: tables ``nuclei`` and ``wells``, schema version 2).

Layout of a profile directory (``spotlight-scale profile ... --out OUT``)::

    OUT/
      nuclei/<PLATE>/<WELL>/<SITE>.parquet   one file per field, one row per nucleus
      wells/wells.parquet                    per-well medians and Metadata_Object_Count
      _done/<PLATE>/<WELL>/<SITE>.json       completion markers (written last)

``nuclei/`` and ``wells/`` are datasets of their own. Every file stores its keys and no
directory is named ``key=value``: a file read alone is complete, and readers that
add hive partition columns find none to clash with the stored ones. So::

    pd.read_parquet("OUT/nuclei")                  # pandas (pyarrow engine)
    pyarrow.dataset.dataset("OUT/nuclei")          # pyarrow
    SELECT * FROM read_parquet('OUT/nuclei/**/*.parquet', hive_partitioning=true)  # DuckDB

Columns (pycytominer's and CellProfiler's conventions): ``Metadata_Plate``,
``Metadata_Well``, ``Metadata_Site`` (the field), ``Metadata_ObjectNumber`` (the nucleus'
label value in ``labels/<NAME>``), then ``Nuclei_<feature>`` (see
:mod:`spotlight_scale.core.features`); every feature column carries its ``unit`` and
``description`` in the Parquet field metadata, every file the table's schema version,
the labels, image and intensity scale it was measured with.

Profile directories of layout 1 (``Metadata_Plate=<P>/Metadata_Well=<W>/field-<F>.parquet``
with ``wells.parquet`` beside, 29 home-made features) are refused with the command that
re-makes them: their features have other definitions, so no reader converts them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..versioning import TABLE_SCHEMAS, VersionError
from .tables import FIELD_KEYS, OBJECT, PLATE, WELL, key_columns, table_metadata

OBJECT_NAME = "Nuclei"
KEYS = [*FIELD_KEYS, OBJECT]
COUNT = "Metadata_Object_Count"  # pycytominer's aggregate(compute_object_count=True) name


def nuclei_dir(root) -> Path:
    return Path(root) / "nuclei"


def wells_path(root) -> Path:
    return Path(root) / "wells" / "wells.parquet"


def part_path(root, key) -> Path:
    """The nuclei file of field ``key``."""
    return nuclei_dir(root) / key.plate / key.well / f"{key.field}.parquet"


def duckdb_glob(root) -> str:
    return str(nuclei_dir(root) / "**" / "*.parquet")


def _old_layout(root: Path) -> list[Path]:
    return [p for p in [root / "wells.parquet", *sorted(root.glob("Metadata_Plate=*"))]
            if p.exists()]


def check_layout(root) -> None:
    """Raise :class:`VersionError` (with the command that re-makes it) for a layout-1
    profile directory."""
    root = Path(root)
    old = _old_layout(root)
    if not old:
        return
    meta = {}
    for part in root.glob("Metadata_Plate=*/Metadata_Well=*/*.parquet"):
        meta = table_metadata(part)
        break
    labels = meta.get("spotlight_scale.labels", "LABELS")
    image = meta.get("spotlight_scale.image", "IMAGE")
    raise VersionError(
        f"{root}: profiles in layout version 1 (Metadata_Plate=*/... and wells.parquet, "
        f"schema {meta.get('spotlight_scale.schema_version', 1)}); spotlight-scale reads layout "
        f"{TABLE_SCHEMAS['nuclei']} only: re-run `spotlight-scale profile STORE --labels {labels}"
        f" --image {image} --out {root} --overwrite`")


def remove_old_layout(root) -> None:
    """Delete a layout-1 profile directory's tables and markers (``profile --overwrite``)."""
    root = Path(root)
    old = _old_layout(root)
    if old and (root / "_done").exists():
        shutil.rmtree(root / "_done")
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def nuclei_frame(features: pd.DataFrame, key) -> pd.DataFrame:
    """Keys + ``Nuclei_<feature>`` columns from :func:`~spotlight_scale.core.features.
    nucleus_features` output of field ``key``."""
    from ..core.features import OBJECT_COLUMN

    df = features.rename(columns={c: f"{OBJECT_NAME}_{c}" for c in features.columns
                                  if c != OBJECT_COLUMN})
    df = df.rename(columns={OBJECT_COLUMN: OBJECT})
    for i, (col, value) in enumerate(key_columns(key).items()):
        df.insert(i, col, pd.Series([value] * len(df), dtype=type(value), index=df.index))
    return df


def schema(columns: Iterable[str], planar: bool = False):
    """Arrow schema of a profile table: string/int64 keys, float64 features with their unit
    and description as field metadata (of a 2D field's features when ``planar``)."""
    import pyarrow as pa

    from ..core.features import feature_unit

    fields = []
    for c in columns:
        if c in (PLATE, WELL):
            fields.append(pa.field(c, pa.string()))
        elif c.startswith("Metadata_"):
            fields.append(pa.field(c, pa.int64()))
        else:
            unit, text = feature_unit(c, planar=planar)
            fields.append(pa.field(c, pa.float64(), metadata={"unit": unit,
                                                               "description": text}))
    return pa.schema(fields)


def read_profiles(root, keys: Iterable | None = None) -> pd.DataFrame:
    """Nucleus rows of a profile directory, of every field or of the :class:`FieldKey`\\ s in
    ``keys`` (schema versions checked; a layout-1 directory raises :class:`VersionError`)."""
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


def image_name(root) -> str | None:
    """The image token the profiles of ``root`` name in their columns (None when empty)."""
    for part in sorted(nuclei_dir(root).glob("*/*/*.parquet")):
        return table_metadata(part).get("spotlight_scale.image_name")
    return None


def generic_columns(columns: Iterable[str], image: str) -> dict[str, str]:
    """Renames that drop ``_<image>`` from intensity, location, texture and granularity
    columns, so profiles of one labels image measured on two images line up."""
    pat = re.compile(rf"_{re.escape(image)}(?=_|$)")
    return {c: pat.sub("", c, count=1) for c in columns if pat.search(c)}


def aggregate_wells(df: pd.DataFrame) -> pd.DataFrame:
    """Per-well median of every ``Nuclei_`` feature and ``Metadata_Object_Count``: the same
    table as pycytominer's ``aggregate(strata=[Metadata_Plate, Metadata_Well],
    operation="median", compute_object_count=True)``."""
    feats = [c for c in df.columns if c.startswith(f"{OBJECT_NAME}_")]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=str if c in (PLATE, WELL) else
                                          ("int64" if c == COUNT else float))
                             for c in [PLATE, WELL, COUNT, *feats]})
    g = df.groupby([PLATE, WELL], sort=True)
    out = g[feats].median().reset_index()
    out.insert(2, COUNT, g[OBJECT].count().to_numpy().astype("int64"))
    return out
