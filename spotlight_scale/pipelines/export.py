"""Export any stored image of a field as an ImageJ TIFF carrying its voxel size (for Fiji);
a 2D field (one z plane) as a YX image with its pixel size, no z axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core import dims
from ..io.store import FieldKey, Store, StoreError


def resolve_field(store: Store, well: str, field: int, plate: str | None = None) -> FieldKey:
    """The field key for ``well``/``field`` (``plate`` optional when the store has one plate)."""
    keys = store.fields()
    plates = sorted({k.plate for k in keys})
    if plate is None:
        if len(plates) != 1:
            raise StoreError(f"{store.root}: {len(plates)} plates ({', '.join(plates)}); "
                             "say which with --plate")
        plate = plates[0]
    key = FieldKey(plate, well, int(field))
    if key not in keys:
        raise StoreError(f"{store.root}: no field {key} (known: "
                         f"{', '.join(k.id for k in keys[:10])}{'...' if len(keys) > 10 else ''})")
    return key


def export(store_root, out: str | Path, *, well: str, field: int, image: str,
           plate: str | None = None) -> Path:
    """Write ``image`` (signal, target, prediction:NAME, labels:NAME) of one field to ``out``."""
    from ..io.tiff import write_imagej

    store = Store(store_root)
    key = resolve_field(store, well, field, plate)
    data = store.read_named(key, image)
    out = Path(out)
    if np.issubdtype(data.dtype, np.integer) and data.dtype.itemsize > 2 and data.size:
        if data.max() <= np.iinfo(np.uint16).max:
            data = data.astype(np.uint16)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    planar = dims.is_planar(data.shape)
    write_imagej(tmp, dims.squeeze_plane(data), dims.spatial_spacing(data.shape,
                                                                     store.voxel_size(key)),
                 planar=planar)
    tmp.replace(out)
    return out
