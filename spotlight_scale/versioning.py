"""Versions of every artefact spotlight-scale writes.

Each artefact carries its version (zarr attributes, Parquet key-value metadata,
JSON files). Readers refuse a version they do not know, by name, instead of
guessing (the ome-zarr-py ``Format`` lesson).
"""

from __future__ import annotations

from . import __version__

#: Layout of a spotlight-scale store (directory structure, field attributes,
#: completion markers, patch index). Bumped on any incompatible change.
#: 2: every chunk written (absent = lost), content fingerprints and input stamps in markers.
STORE_LAYOUT_VERSION = 2

#: Parquet table schemas, by table name.
TABLE_SCHEMAS = {
    "fields": 2,  # one row per field: keys + per-channel statistics (2: Metadata_ keys)
    "failures": 1,  # ingest rows that failed with --on-error skip
    "field_failures": 1,  # fields that failed in predict/segment/profile with --on-error skip
    "patches": 1,  # foreground patch index, one file per field
    "nuclei": 2,  # per-nucleus profiles (2: stain-named intensities, Metadata_Source,
    #               Metadata_Labels, plate map columns, positions as Metadata_Nuclei_Location_*)
    "wells": 2,  # per-well aggregated profiles (2: as nuclei 2)
    "platemap": 1,  # the screen's plate map (ingest --platemap), keyed by plate and well
    "metrics": 2,  # per-field evaluation metrics (2: Metadata_ keys)
    "benchmark_seeds": 1,  # benchmark --seeds: per seed and model, metric means over fields
    "benchmark_curves": 1,  # benchmark --store: per field, model, seed and iteration
}

#: Model file format written by the trainer.
MODEL_FILE_VERSION = 1


class VersionError(RuntimeError):
    """An artefact was written by an unknown (newer or older) layout."""


def check_version(what: str, found, expected: int, where: str, hint: str = "") -> None:
    """Raise :class:`VersionError` unless ``found == expected``.

    Parameters
    ----------
    what : str
        Artefact name used in the message (e.g. ``"store layout"``).
    found : int or None
        Version read from the artefact.
    expected : int
        Version this build understands.
    where : str
        Path of the artefact, for the message.
    hint : str
        What to do about an older version (appended to the message).
    """
    if found is None:
        raise VersionError(
            f"{where}: no {what} version found; was it written by spotlight-scale?"
        )
    try:
        older = int(found) < int(expected)
    except (TypeError, ValueError):
        raise VersionError(f"{where}: {what} version {found!r} is not a version number") from None
    if int(found) != int(expected):
        todo = (f"; {hint}" if hint and older else
                "; it was written by a newer spotlight-scale: upgrade" if not older else "")
        raise VersionError(
            f"{where}: {what} version {found} is not supported by spotlight-scale "
            f"{__version__} (expects {expected}){todo}"
        )


def parquet_metadata(table: str, **extra) -> dict[bytes, bytes]:
    """Key-value metadata stamped into every Parquet file we write."""
    import json

    meta = {
        "spotlight_scale.table": table,
        "spotlight_scale.schema_version": str(TABLE_SCHEMAS[table]),
        "spotlight_scale.version": __version__,
    }
    for key, value in extra.items():
        meta[f"spotlight_scale.{key}"] = value if isinstance(value, str) else json.dumps(value)
    return {k.encode(): v.encode() for k, v in meta.items()}
