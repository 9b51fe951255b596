"""Write one field into a store (image pyramid, labels, attributes, patch index, marker).

This is the single writer used by ``ingest`` (and by test fixtures that build
small stores); the order of writes is what makes ingest resumable: arrays and
attributes first, the patch index next, the completion marker last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..versioning import STORE_LAYOUT_VERSION
from .omezarr import downsample_mean, downsample_nearest, pyramid_shapes, write_image_tree
from .store import ATTRS_KEY, CHANNELS, FieldKey, Store
from .tables import write_patch_index


def build_pyramid(volume: np.ndarray, n_levels: int, labels: bool = False) -> list[np.ndarray]:
    """Levels 0..n-1 of a ZYX volume, each halving z, y and x."""
    levels = [volume]
    for _ in range(n_levels - 1):
        levels.append(downsample_nearest(levels[-1]) if labels else downsample_mean(levels[-1]))
    return levels


def drop_damaged_group_metadata(plate_dir) -> list[str]:
    """Delete metadata files of a plate, its rows and wells that do not parse (a truncated
    ``zarr.json``), so that the group is created afresh; they hold only the HCS plate and
    well metadata, which every stage that adds fields rewrites at its end
    (:func:`finalize_store`). Field groups are left alone (they are data: the stage that
    wrote them redoes them). Returns the files deleted."""
    import logging
    from pathlib import Path

    from .verify import METADATA_FILES, bad_metadata, bad_metadata_file

    plate_dir = Path(plate_dir)
    dropped = []
    groups = [plate_dir, *[p for p in plate_dir.glob("*") if p.is_dir()],
              *[p for p in plate_dir.glob("*/*") if p.is_dir()]]
    for group in groups:
        if bad_metadata(group) is None:  # the common case: one parse per file
            continue
        for name in METADATA_FILES:
            path = group / name
            if path.is_file() and bad_metadata_file(path):
                path.unlink()
                dropped.append(str(path))
                logging.getLogger(__name__).warning(
                    "%s did not parse: replaced (the plate's metadata is rewritten at the "
                    "end of this run)", path)
    return dropped


def open_well_group(store: Store, key: FieldKey, attempts: int = 5,
                    prediction: str | None = None):
    """Open (creating if needed) the well group of ``key``.

    Several workers may create the same plate, row or well group at once; zarr
    then reports the group as already existing to the losers of the race, who
    simply open it again.
    """
    import time

    import zarr
    from zarr.errors import ContainsGroupError

    well = store.plate_path(key.plate, prediction) / key.row / key.column
    try:  # the usual case (ingest creates the wells first): one metadata read
        return zarr.open_group(str(well), mode="r+", zarr_format=store.zarr_format)
    except Exception:  # absent, damaged metadata, a race: the careful way below
        pass
    for attempt in range(attempts):
        try:
            plate = zarr.open_group(str(store.plate_path(key.plate, prediction)), mode="a",
                                    zarr_format=store.zarr_format)
            return plate.require_group(key.row).require_group(key.column)
        except (ContainsGroupError, FileExistsError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
        except ValueError:  # JSONDecodeError: damaged plate, row or well metadata
            if not drop_damaged_group_metadata(store.plate_path(key.plate, prediction)):
                raise


def create_well_groups(store: Store, keys, prediction: str | None = None) -> None:
    """Create the plate, row and well groups of ``keys`` whose metadata file is absent (a
    stage does this before its workers start), writing the documents directly
    (:func:`~spotlight_scale.io.omezarr.write_nodes`); an existing group is left as it is,
    also one whose metadata no longer parses: :func:`finalize_store` rebuilds those at the
    end of the run."""
    from zarr.core.group import GroupMetadata

    from .omezarr import write_nodes

    meta = "zarr.json" if store.zarr_format == 3 else ".zgroup"
    missing: dict[Path, dict[str, GroupMetadata]] = {}
    for key in keys:
        root = store.plate_path(key.plate, prediction)
        for path in ("", key.row, f"{key.row}/{key.column}"):
            if not (root / path / meta).exists():
                missing.setdefault(root, {})[path] = GroupMetadata(zarr_format=store.zarr_format)
    for root, nodes in missing.items():
        write_nodes(root, nodes, groups_exist_ok=True)


def remove_field_folder(path) -> None:
    """Delete a field's folder from the file system: zarr's own ``del`` parses the field's
    metadata first, and fails on the damaged metadata a rewrite is meant to replace."""
    import shutil
    from pathlib import Path

    if Path(path).exists():
        shutil.rmtree(path)


def write_field(store: Store, key: FieldKey, *, signal: np.ndarray, target: np.ndarray,
                mask: np.ndarray | None, voxel_size: Sequence[float], chunks: Sequence[int],
                split: str, stats: dict[str, dict[str, float]], source: dict[str, Any],
                patch_index: tuple[np.ndarray, np.ndarray] | None = None,
                patch_settings: dict[str, Any] | None = None,
                fingerprint: str = "", marker_info: dict[str, Any] | None = None) -> int:
    """Write a field's arrays, attributes and patch index, then its completion marker.

    Parameters
    ----------
    signal, target : ndarray (Z, Y, X)
        Same shape and dtype (after resampling).
    mask : ndarray (Z, Y, X) of int, optional
        Ground-truth labels, written as NGFF ``labels/gt``.
    stats : dict
        ``{"signal": {...}, "target": {...}}`` from :mod:`spotlight_scale.core.stats`.
    patch_index : (origins, fractions), optional
        Foreground patch index (see :mod:`spotlight_scale.core.patches`), with
        ``patch_settings = {"patch_shape", "stride", "min_fraction"}``.

    Returns
    -------
    int
        Bytes of image data written at level 0 (for throughput reporting).
    """
    if signal.shape != target.shape:
        raise ValueError(f"field {key}: signal {signal.shape} and target {target.shape} differ")
    if signal.dtype != target.dtype:
        target = target.astype(signal.dtype)
    fmt = store.ngff_format()
    shapes = pyramid_shapes(signal.shape)
    czyx = np.stack([signal, target])
    levels = [czyx]
    for _ in range(len(shapes) - 1):
        prev = levels[-1]
        levels.append(np.stack([downsample_mean(prev[0]), downsample_mean(prev[1])]))

    if mask is not None and mask.shape != signal.shape:
        raise ValueError(f"field {key}: mask {mask.shape} and images {signal.shape} differ")
    labels = None
    if mask is not None:
        from ..core.features import label_properties

        labels = {"gt": (build_pyramid(mask, len(levels), labels=True),
                         label_properties(mask, target, voxel_size))}
    create_well_groups(store, [key])  # usually none to create: the stage made them first
    remove_field_folder(store.field_url(key))  # a partial or damaged field of an earlier run
    windows = [(stats[c]["p0_1"], stats[c]["p99_9"]) for c in CHANNELS] if stats else None
    write_image_tree(store.field_url(key), levels, voxel_size=voxel_size,
                     channel_names=CHANNELS, chunks_zyx=chunks, fmt=fmt, windows=windows,
                     labels=labels, attributes={ATTRS_KEY: {
                         "layout_version": STORE_LAYOUT_VERSION,
                         "plate": key.plate, "well": key.well, "field": key.field,
                         "split": split, "shape_zyx": [int(s) for s in signal.shape],
                         "voxel_size_um": [float(v) for v in voxel_size],
                         "dtype": str(signal.dtype),
                         "stats": stats, "source": source, "has_gt": mask is not None,
                         # equal to the marker's, which is written after everything else
                         "fingerprint": fingerprint}})
    if patch_index is not None:
        settings = patch_settings or {}
        write_patch_index(store.patch_index_path(key), patch_index[0], patch_index[1],
                          patch_shape=settings["patch_shape"], stride=settings["stride"],
                          min_fraction=settings["min_fraction"],
                          threshold=stats["target"]["otsu"], field_id=key.id)
    from .verify import record

    stored = record(store.field_url(key),
                    store.patch_index_path(key) if patch_index is not None else None)
    store.mark_done("ingest", key, {"split": split, "fingerprint": fingerprint,
                                    "stored": stored, **(marker_info or {})})
    return int(czyx.nbytes)


def finalize_store(store: Store) -> None:
    """Rewrite HCS plate/well metadata and ``tables/fields.parquet`` from the done fields.

    Run after a stage that adds fields: readers then see exactly the fields
    that are complete (an interrupted field is never listed).
    """
    import zarr

    from .omezarr import write_plate
    from .tables import write_table

    keys = store.fields()
    by_plate: dict[str, dict[str, list[int]]] = {}
    for key in keys:
        by_plate.setdefault(key.plate, {}).setdefault(key.well, []).append(key.field)
    for plate, wells in by_plate.items():
        drop_damaged_group_metadata(store.plate_path(plate))
        group = zarr.open_group(str(store.plate_path(plate)), mode="a",
                                zarr_format=store.zarr_format)
        write_plate(group, name=plate, wells=wells, fmt=store.ngff_format())
    from .platemap import annotate, stored

    write_table(annotate(fields_frame(store, keys), stored(store)), store.table_path("fields"),
                "fields")


def fields_frame(store: Store, keys: Sequence[FieldKey]):
    """One row per field: keys (:data:`~spotlight_scale.io.tables.FIELD_KEYS`, row, column),
    split, shape, voxel size and per-channel statistics."""
    import pandas as pd

    from .tables import key_columns

    rows = []
    for key in keys:
        meta = store.field_meta(key)
        row = {**key_columns(key), "Metadata_Row": key.row, "Metadata_Column": key.column,
               "split": meta["split"],
               "path": str(store.field_url(key).relative_to(store.root))}
        for axis, n, v in zip("zyx", meta["shape_zyx"], meta["voxel_size_um"]):
            row[f"shape_{axis}"] = int(n)
            row[f"voxel_{axis}_um"] = float(v)
        for channel, st in meta["stats"].items():
            for name, value in st.items():
                row[f"{channel}_{name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)
