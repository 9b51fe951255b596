"""Nucleus profiles as a Parquet dataset that DuckDB, pandas and pycytominer read.

Layout of a profile directory::

    PROFILES_DIR/
      Metadata_Plate=<P>/Metadata_Well=<W>/field-<F>.parquet   one file per field (table 'nuclei')
      wells.parquet                                            per-well medians + counts ('wells')
      _done/<P>/<W>/<F>.json                                   completion markers (written last)

Columns: keys ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Field``,
``Metadata_Label`` (pycytominer's ``Metadata_`` convention; the plate/well/field/
label of the store) and features ``Nuclei_AreaShape_*``, ``Nuclei_Intensity_*``
(CellProfiler-style names). Every file carries the schema version in its
Parquet metadata. DuckDB::

    SELECT Metadata_Well, count(*) FROM
      read_parquet('PROFILES_DIR/Metadata_Plate=*/**/*.parquet', hive_partitioning=true)
    GROUP BY 1
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .tables import read_table

KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Field", "Metadata_Label"]


def part_path(root: Path, plate: str, well: str, field: int) -> Path:
    return Path(root) / f"Metadata_Plate={plate}" / f"Metadata_Well={well}" / f"field-{field}.parquet"


def duckdb_glob(root) -> str:
    return str(Path(root) / "Metadata_Plate=*" / "**" / "*.parquet")


def read_profiles(root) -> pd.DataFrame:
    """All nucleus rows of a profile directory (versions checked)."""
    root = Path(root)
    parts = sorted(root.glob("Metadata_Plate=*/Metadata_Well=*/*.parquet"))
    frames = [read_table(p, "nuclei") for p in parts]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=KEYS)
    return pd.concat(frames, ignore_index=True)


def aggregate_wells(df: pd.DataFrame) -> pd.DataFrame:
    """Per-well median of every feature and ``Metadata_Count`` (nuclei per well)."""
    feats = [c for c in df.columns if c.startswith("Nuclei_")]
    if df.empty:
        return pd.DataFrame(columns=["Metadata_Plate", "Metadata_Well", "Metadata_Count", *feats])
    g = df.groupby(["Metadata_Plate", "Metadata_Well"], sort=True)
    out = g[feats].median().reset_index()
    out.insert(2, "Metadata_Count", g.size().to_numpy())
    return out
