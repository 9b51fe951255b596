"""Fields as labelled arrays: any NGFF image of a store (a field, a prediction, a labels
image) opened as an ``xarray.DataArray`` with coordinates in micrometres.

``xr.open_zarr(field)`` cannot do this by itself: a multiscale group holds one array per
pyramid level, all with the dimension names ``c, z, y, x`` the NGFF spec asks for, so
xarray's reading of the group as one Dataset fails on their different sizes ("conflicting
sizes for dimension 'z'"). :func:`open_field` reads one level with its NGFF metadata::

    from spotlight_scale.io.views import open_field
    da = open_field("store/P1.zarr/B/03/0")              # (c, z, y, x), lazy (dask)
    da.sel(c="target").sel(z=2.0, method="nearest")      # a plane 2 um deep
    open_field("store/P1.zarr/B/03/0/labels/gt")         # (z, y, x) labels
    open_field("store/predictions/fnet/P1.zarr/B/03/0", level=1)
"""

from __future__ import annotations

from pathlib import Path


def _ngff(attrs: dict) -> dict:
    """The NGFF attributes of a group, NGFF 0.5 (under ``ome``) or 0.4 (top level)."""
    return attrs.get("ome", attrs)


def open_field(path: str | Path, level: int = 0):
    """One pyramid level of an NGFF multiscale image as a lazy ``xarray.DataArray``.

    Parameters
    ----------
    path : path
        An NGFF image group: a field of a plate (``STORE/P1.zarr/B/03/0``), of a
        prediction plate, or a labels image (``.../labels/gt``).
    level : int
        Pyramid level (0: full resolution).

    Returns
    -------
    xarray.DataArray
        Dimensions named by the NGFF axes; spatial coordinates in the axes' units
        (micrometres in spotlight-scale stores: scale and translation of the level
        applied, a voxel's coordinate is its centre); channel coordinates the ``omero``
        labels; ``attrs``: ``units`` per axis, ``name``, ``level``, ``path``.
    """
    import dask.array as da
    import numpy as np
    import xarray as xr
    import zarr

    group = zarr.open_group(str(path), mode="r")
    meta = _ngff(group.attrs.asdict())
    if "multiscales" not in meta:
        raise ValueError(f"{path}: not an NGFF image (no multiscales metadata)")
    ms = meta["multiscales"][0]
    if not 0 <= level < len(ms["datasets"]):
        raise ValueError(f"{path}: no pyramid level {level} (levels 0-{len(ms['datasets']) - 1})")
    ds = ms["datasets"][level]
    arr = da.from_zarr(group[ds["path"]])
    axes = [a if isinstance(a, dict) else {"name": a} for a in ms["axes"]]
    names = [a["name"] for a in axes]
    scale = np.ones(len(names))
    shift = np.zeros(len(names))
    for t in [*ms.get("coordinateTransformations", []), *ds.get("coordinateTransformations", [])]:
        if t.get("type") == "scale":
            scale = scale * np.asarray(t["scale"], float)
        elif t.get("type") == "translation":
            shift = shift + np.asarray(t["translation"], float)
    coords = {}
    for i, a in enumerate(axes):
        if a.get("type") == "space":
            coords[a["name"]] = shift[i] + scale[i] * np.arange(arr.shape[i])
        elif a.get("type") == "channel" and "omero" in meta:
            labels = [c.get("label", str(j)) for j, c in enumerate(meta["omero"]["channels"])]
            if len(labels) == arr.shape[i]:
                coords[a["name"]] = labels
    return xr.DataArray(arr, dims=names, coords=coords, name=ms.get("name"),
                        attrs={"units": {a["name"]: a.get("unit") for a in axes if "unit" in a},
                               "level": level, "path": str(path)})
