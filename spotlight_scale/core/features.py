"""Per-nucleus features, 3D and 2D: CellProfiler's measurements (through ``cp_measure``)
plus shape features in micrometres that neither CellProfiler nor scikit-image computes.

From a ZYX label image, an intensity image and the voxel size (um), one row per object
(``ObjectNumber`` = its label value), in feature groups (:data:`FEATURE_GROUPS`):

``sizeshape`` (cp_measure ``MeasureObjectSizeShape``, 3D)
    ``AreaShape_*``: Volume, SurfaceArea, Major/MinorAxisLength, EquivalentDiameter,
    Extent, Solidity, EulerNumber, BoundingBoxVolume, ConvexArea, FilledArea, spatial /
    central / normalised moments (less the normalised ones of order < 2, NaN by definition),
    inertia tensor and its eigenvalues -- in CellProfiler's
    units: voxels and voxel lengths (the x pixel; SurfaceArea with the relative voxel
    spacing, as CellProfiler passes it). ConvexArea and Solidity are cp_measure's with
    scikit-image's hull raster replaced by an equal, faster one (:mod:`.hull`); this group
    and ``shape3d`` measure the box around the objects, positions shifted back (the same
    values). Positions are renamed into ``Location_``:
    ``Location_Center_{X,Y,Z}`` (CellProfiler's ``AreaShape_Center_*``, the same value as
    its ``Location_Center_*``) and ``Location_BoundingBox{Minimum,Maximum}_{X,Y,Z}``.
``intensity`` (cp_measure ``MeasureObjectIntensity``)
    ``Intensity_<F>_<image>`` (Integrated, Mean, Std, Min, Max, quartiles, MAD, MassDisplacement,
    and the same over the object's edge) and ``Location_CenterMassIntensity_*_<image>``,
    ``Location_MaxIntensity_*_<image>``. Quartiles and MAD with CellProfiler's own
    percentile convention (``legacy=True``).
``shape3d`` (ours: none of the libraries has them)
    ``Shape3D_MeshVolume`` (um^3) and ``Shape3D_SurfaceArea`` (um^2): marching cubes at
    level 0.5 of the object's padded binary crop with the physical voxel spacing (a closed
    surface between object and background voxels; CellProfiler's ``SurfaceArea`` puts its
    surface through the outer neighbours, level 0, on an unpadded crop);
    ``Shape3D_Sphericity`` = pi^(1/3) (6 V)^(2/3) / A with that volume and area (1 for a
    sphere); ``Shape3D_Elongation`` = sqrt(l2 / l1) and ``Shape3D_Flatness`` = sqrt(l3 / l1),
    l1 >= l2 >= l3 the eigenvalues of the covariance of the object's voxel coordinates in
    micrometres (the PyRadiomics definitions; independent of the voxel anisotropy).
``texture`` (optional; cp_measure ``MeasureTexture``)
    ``Texture_<F>_<image>_3_<direction>_256``: 13 Haralick features in 13 directions at a
    distance of 3 voxels, image quantised to 256 grey levels over [0, 1].
``granularity`` (optional; cp_measure ``MeasureGranularity``)
    ``Granularity_<n>_<image>``, n = 1..16 (percent of signal removed per opening step).

A 2D field (a (1, Y, X) label image, :mod:`spotlight_scale.core.dims`) is measured on its
plane with cp_measure's 2D measurements, under CellProfiler's 2D names, in pixels:

``sizeshape`` (2D)
    ``AreaShape_*``: Area, Perimeter, PerimeterCrofton, FormFactor, Eccentricity,
    Orientation (degrees), Compactness, Major/MinorAxisLength, EquivalentDiameter,
    Maximum/Mean/MedianRadius, Extent, Solidity, EulerNumber, BoundingBoxArea, ConvexArea,
    FilledArea, spatial / central / normalised / Hu moments, inertia tensor, plus
    ``Min/MaxFeretDiameter`` and ``Zernike_<n>_<m>`` (CellProfiler's MeasureObjectSizeShape
    adds both in 2D); ``Location_Center_{X,Y}``, ``Location_BoundingBox*_{X,Y}``.
``intensity``, ``texture`` (4 directions), ``granularity``: as in 3D.
``shape2d`` (ours, in place of ``shape3d``, which is 3D only)
    ``Shape2D_Area`` (um^2: pixels times the pixel area), ``Shape2D_Perimeter`` (um: length
    of the marching-squares contour at level 0.5 of the object's padded crop with the
    physical pixel size, the 2D counterpart of the 3D mesh), ``Shape2D_EquivalentDiameter``
    (um, ``2 sqrt(Area / pi)``), ``Shape2D_Elongation`` = sqrt(l2 / l1) of the covariance
    of the pixel coordinates in um.

A group list may name ``shape3d`` or ``shape2d``: a field measures the one of its own
dimensionality (:func:`groups_for`).

Intensities are measured on ``image / intensity_scale`` (CellProfiler loads a 16-bit image
as value / 65535: pass 65535 to get its numbers); texture clips that to [0, 1].
An empty label image returns the same columns with no rows.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np
import pandas as pd

from . import dims

#: Feature groups, in column order; ``texture`` and ``granularity`` cost more and are opt-in.
FEATURE_GROUPS = ("sizeshape", "intensity", "shape3d", "shape2d", "texture", "granularity")
DEFAULT_GROUPS = ("sizeshape", "intensity", "shape3d")
OBJECT_COLUMN = "ObjectNumber"
#: Haralick texture: distance (voxels) and grey levels (CellProfiler's defaults).
TEXTURE_SCALE, TEXTURE_LEVELS = 3, 256

_POSITION = re.compile(r"^(Center|BoundingBox(Minimum|Maximum))_[XYZ]$")
#: normalised moments of order < 2 are undefined (NaN for every object): left out
_UNDEFINED = re.compile(r"^NormalizedMoment_(0_0_0|0_0_1|0_1_0|1_0_0|0_0|0_1|1_0)$")
#: our physical-unit shape group of a field of each dimensionality
_PHYSICAL_SHAPE = {True: "shape2d", False: "shape3d"}


def image_token(image: str) -> str:
    """The image name used in column names: ``target``, ``signal``, ``prediction_<NAME>``
    (CellProfiler image names are letters, digits and underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", str(image))


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """Validate feature group names; returns them in :data:`FEATURE_GROUPS` order."""
    unknown = sorted(set(groups) - set(FEATURE_GROUPS))
    if unknown:
        raise ValueError(f"unknown feature group(s) {unknown}; expected some of {FEATURE_GROUPS}")
    return tuple(g for g in FEATURE_GROUPS if g in groups)


def groups_for(groups: Sequence[str], planar: bool) -> tuple[str, ...]:
    """``groups`` as a field of that dimensionality measures them: ``shape3d`` and
    ``shape2d`` (our physical-unit shape group) both become the field's own."""
    own = _PHYSICAL_SHAPE[bool(planar)]
    return check_groups([own if g in _PHYSICAL_SHAPE.values() else g for g in groups])


def _cp_columns(group: str, raw: dict, image: str) -> dict[str, np.ndarray]:
    """cp_measure's output keys -> CellProfiler measurement names (without the object)."""
    out = {}
    for name, values in raw.items():
        if _UNDEFINED.match(name):
            continue
        if group == "sizeshape":
            col = f"Location_{name}" if _POSITION.match(name) else f"AreaShape_{name}"
        elif group == "intensity":  # Intensity_X / Location_X_Y -> ..._<image>
            col = f"{name}_{image}"
        elif group == "texture":  # Feature_scale_dir_levels -> Texture_Feature_<image>_...
            feat, _, rest = name.partition("_")
            col = f"Texture_{feat}_{image}_{rest}"
        else:  # granularity: Granularity_n -> Granularity_n_<image>
            col = f"{name}_{image}"
        out[col] = np.asarray(values, dtype=np.float64)
    return out


def _cp_group(group: str, labels: np.ndarray, pixels: np.ndarray, rel_spacing) -> dict:
    from cp_measure.core import (measuregranularity, measureobjectintensity,
                                 measureobjectsizeshape, measuretexture)

    # labels are already contiguous 1..N (nucleus_features relabels once for all groups);
    # YX labels get cp_measure's 2D measurements, ZYX its 3D ones
    if group == "sizeshape":
        if labels.ndim == 3:  # ConvexArea / Solidity: the same hull, rasterised by rows
            from .hull import fast_convex_hull

            with fast_convex_hull():
                return measureobjectsizeshape.get_sizeshape(labels, pixels, spacing=rel_spacing)
        out = measureobjectsizeshape.get_sizeshape(labels, pixels, spacing=rel_spacing)
        if labels.ndim == 2:  # CellProfiler's 2D MeasureObjectSizeShape: + Feret, Zernike
            out |= measureobjectsizeshape.get_feret(labels, pixels)
            out |= measureobjectsizeshape.get_zernike(labels, pixels)
        return out
    if group == "intensity":  # its edge map on the objects' box: the same array, cheaper
        from .boxed import boxed_find_boundaries

        with boxed_find_boundaries():
            return measureobjectintensity.get_intensity(labels, pixels, legacy=True)
    if group == "texture":
        return measuretexture.get_texture(labels, np.clip(pixels, 0, 1), scale=TEXTURE_SCALE,
                                          gray_levels=TEXTURE_LEVELS)
    return measuregranularity.get_granularity(labels, pixels)


def _mesh_area_volume(verts: np.ndarray, faces: np.ndarray) -> tuple[float, float]:
    """Area (``skimage.measure.mesh_surface_area``'s sum of |(a - b) x (a - c)| / 2) and
    enclosed volume (|sum of a . (b x c)| / 6: skimage orients the triangles inwards) of a
    closed triangle mesh, from one set of edge vectors."""
    a, b, c = (verts[faces[:, k]].T for k in range(3))  # (3, F) each
    u, v = a - b, a - c
    cx = u[1] * v[2] - u[2] * v[1]
    cy = u[2] * v[0] - u[0] * v[2]
    cz = u[0] * v[1] - u[1] * v[0]
    area = float(np.sqrt(cx * cx + cy * cy + cz * cz).sum()) / 2.0
    bxc = (b[1] * c[2] - b[2] * c[1], b[2] * c[0] - b[0] * c[2], b[0] * c[1] - b[1] * c[0])
    volume = abs(float((a[0] * bxc[0] + a[1] * bxc[1] + a[2] * bxc[2]).sum())) / 6.0
    return area, volume


def _shape3d(labels: np.ndarray, n: int, spacing) -> dict[str, np.ndarray]:
    """Mesh volume/area, sphericity, elongation, flatness of objects 1..n (ours)."""
    from scipy import ndimage as ndi
    from skimage.measure import marching_cubes

    cols = {c: np.full(n, np.nan) for c in ("Shape3D_MeshVolume", "Shape3D_SurfaceArea",
                                             "Shape3D_Sphericity", "Shape3D_Elongation",
                                             "Shape3D_Flatness")}
    sp = np.asarray(spacing, dtype=np.float64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is None:
            continue
        obj = labels[sl] == i + 1
        verts, faces, _, _ = marching_cubes(np.pad(obj, 1).astype(np.float32), 0.5,
                                            spacing=tuple(sp))
        area, volume = _mesh_area_volume(verts.astype(np.float64), faces)
        coords = np.argwhere(obj) * sp
        ev = (np.sort(np.linalg.eigvalsh(np.cov(coords, rowvar=False)))[::-1]
              if len(coords) > 1 else np.zeros(3))
        ev = np.clip(ev, 0, None)
        cols["Shape3D_MeshVolume"][i] = volume
        cols["Shape3D_SurfaceArea"][i] = area
        cols["Shape3D_Sphericity"][i] = (np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
                                         if area > 0 else np.nan)
        if ev[0] > 0:
            cols["Shape3D_Elongation"][i] = np.sqrt(ev[1] / ev[0])
            cols["Shape3D_Flatness"][i] = np.sqrt(ev[2] / ev[0])
    return cols


def _shape2d(labels: np.ndarray, n: int, spacing) -> dict[str, np.ndarray]:
    """Area, contour perimeter, equivalent diameter (um) and elongation of objects 1..n (ours)."""
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    cols = {c: np.full(n, np.nan) for c in ("Shape2D_Area", "Shape2D_Perimeter",
                                             "Shape2D_EquivalentDiameter", "Shape2D_Elongation")}
    sp = np.asarray(spacing, dtype=np.float64)
    for i, sl in enumerate(ndi.find_objects(labels, max_label=n)):
        if sl is None:
            continue
        obj = labels[sl] == i + 1
        area = float(obj.sum()) * float(np.prod(sp))
        # closed contours (the crop is padded), holes included, as CellProfiler's perimeter
        perimeter = sum(float(np.sqrt(((np.diff(c, axis=0) * sp) ** 2).sum(axis=1)).sum())
                        for c in find_contours(np.pad(obj, 1).astype(np.float32), 0.5))
        coords = np.argwhere(obj) * sp
        ev = (np.sort(np.linalg.eigvalsh(np.cov(coords, rowvar=False)))[::-1]
              if len(coords) > 1 else np.zeros(2))
        ev = np.clip(ev, 0, None)
        cols["Shape2D_Area"][i] = area
        cols["Shape2D_Perimeter"][i] = perimeter
        cols["Shape2D_EquivalentDiameter"][i] = 2 * np.sqrt(area / np.pi)
        if ev[0] > 0:
            cols["Shape2D_Elongation"][i] = np.sqrt(ev[1] / ev[0])
    return cols


def feature_columns(groups: Sequence[str] = DEFAULT_GROUPS, image_name: str = "target",
                    *, planar: bool = False) -> list[str]:
    """Column names :func:`nucleus_features` returns for ``groups`` and ``image_name``, for
    a 3D field or (``planar``) a 2D one.

    Found by measuring one small synthetic object (cp_measure names its outputs only
    when it computes them), so they are exactly the library's names.
    """
    return list(_feature_columns(groups_for(groups, planar), image_name, bool(planar)))


@functools.lru_cache(maxsize=16)
def _feature_columns(groups: tuple[str, ...], image_name: str, planar: bool
                     ) -> tuple[str, ...]:
    lab = np.zeros((10, 10) if planar else (10, 10, 10), np.int32)
    lab[(slice(2, 8),) * (lab.ndim - 1) + (slice(3, 7),)] = 1
    img = np.random.default_rng(0).uniform(0.1, 0.9, lab.shape)
    return tuple(_measure(lab, img, (1.0,) * lab.ndim, image_name=image_name,
                          groups=groups).columns)


#: groups whose values depend only on each object's voxels and their direct neighbours,
#: measured on the crop of the field around all objects (positions shifted back): the
#: same values to the last bits or so (rtol 1e-12, tested). Not cp_measure's intensity
#: group: its MassDisplacement (the distance between two centres in field coordinates,
#: one of them divided by a float32 sum) changes by ~1e-6 with the coordinates' origin.
_LOCAL_GROUPS = frozenset({"sizeshape", "shape3d", "shape2d"})
#: background kept around the objects' common bounding box (cp_measure's surface mesh
#: looks one voxel beyond an object)
_CROP_MARGIN = 2
#: position columns of the local groups, by the axis they count along (X = last)
_AXIS_COLUMN = re.compile(r"^(Location_Center|Location_BoundingBox(Minimum|Maximum)"
                          r"|Location_(CenterMassIntensity|MaxIntensity))_([XYZ])(_|$)")


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label values present, ascending; labels relabelled 1..N as int32), like
    ``np.unique`` + ``relabel_sequential`` but one counting pass when the values are small
    and no pass at all when they are already 1..N."""
    if labels.dtype == bool:
        labels = labels.astype(np.int32)
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) >= 0 and top <= 4 * labels.size + 1024:
        present = np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=top + 1) > 0
        present[0] = False
        ids = np.nonzero(present)[0].astype(np.int64)
        seq = labels.astype(np.int32, copy=False)
        if len(ids) and ids[-1] != len(ids):  # gaps: a lookup table
            lut = np.zeros(top + 1, np.int32)
            lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
            seq = lut[labels]
        return ids, seq
    from skimage.segmentation import relabel_sequential

    ids = np.unique(labels[labels > 0]).astype(np.int64)
    seq = relabel_sequential(labels.astype(np.int32, copy=False))[0] if len(ids) else labels
    return ids, seq.astype(np.int32, copy=False)


def _object_box(labels: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The common bounding box of all objects of a 3D label image, ``margin`` voxels wider
    (within the image); the whole image when it has no object."""
    yx = labels.any(axis=0)
    if not yx.any():
        return tuple(slice(0, n) for n in labels.shape)
    ys, xs = np.nonzero(yx.any(axis=1))[0], np.nonzero(yx.any(axis=0))[0]
    inner = labels[:, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
    zs = np.nonzero(inner.any(axis=(1, 2)))[0]
    return tuple(slice(max(int(lo) - margin, 0), min(int(hi) + 1 + margin, n))
                 for (lo, hi), n in zip(((zs[0], zs[-1]), (ys[0], ys[-1]), (xs[0], xs[-1])),
                                         labels.shape))


def _measure(labels, pixels, spacing, *, image_name: str, groups) -> pd.DataFrame:
    rel = tuple(float(s) / float(spacing[-1]) for s in spacing)  # CellProfiler: x pixel = 1
    name = image_token(image_name)
    # the local groups see only the box around the objects (whole-image passes such as
    # regionprops' label scan cost the box, not the field); every value is the same,
    # positions are shifted back to field coordinates. A 2D field (one plane) is measured
    # whole.
    box = (_object_box(labels, _CROP_MARGIN) if labels.ndim == 3
           else tuple(slice(0, n) for n in labels.shape))
    origin = [sl.start for sl in box]
    whole = not any(origin) and all(sl.stop == n for sl, n in zip(box, labels.shape))
    ids, seq_box = _sequential(labels[box])
    full_pixels, pixels_box = pixels, pixels[box]
    seq = None
    if not whole and any(g not in _LOCAL_GROUPS for g in groups):  # intensity, texture, ...
        seq = np.zeros(labels.shape, np.int32)
        seq[box] = seq_box
    elif whole:
        seq = seq_box
    cols = {OBJECT_COLUMN: ids}
    axis_of = {a: 2 - i for i, a in enumerate("XYZ")}
    for group in groups:
        local = group in _LOCAL_GROUPS
        lab_g, pix_g = (seq_box, pixels_box) if local else (seq, full_pixels)
        if group == "shape3d":
            out = _shape3d(lab_g, len(ids), spacing)
        elif group == "shape2d":
            out = _shape2d(lab_g, len(ids), spacing)
        else:
            out = _cp_columns(group, _cp_group(group, lab_g, pix_g, rel), name)
        if local and any(origin):
            for col in out:
                m = _AXIS_COLUMN.match(col)
                if m and origin[axis_of[m.group(4)]]:
                    out[col] = out[col] + origin[axis_of[m.group(4)]]
        cols.update(out)
    return pd.DataFrame(cols)


def nucleus_features(labels: np.ndarray, image: np.ndarray, spacing, *, image_name: str = "target",
                     groups: Sequence[str] = DEFAULT_GROUPS,
                     intensity_scale: float = 1.0) -> pd.DataFrame:
    """One row per object of ``labels``: ``ObjectNumber`` then the features of ``groups``.

    Parameters
    ----------
    labels : ndarray (Z, Y, X) of int
        Nuclei labels (0 = background); label values need not be contiguous. A (1, Y, X)
        (or (Y, X)) label image is a 2D field, measured in 2D (module docstring).
    image : ndarray (Z, Y, X)
        Intensity image, same shape.
    spacing : (z, y, x) float
        Voxel size in micrometres (a 2D field's z is not used).
    image_name : str
        Image named in intensity, texture and granularity columns (:func:`image_token`).
    groups : sequence of str
        Feature groups (:data:`FEATURE_GROUPS`; :func:`groups_for` the field).
    intensity_scale : float
        Intensities are measured on ``image / intensity_scale`` (65535 for 16-bit images
        gives CellProfiler's values).

    Returns
    -------
    DataFrame
        ``ObjectNumber`` (int64, the label value, ascending) and float64 features, the
        columns of :func:`feature_columns` (also with no rows for an empty label image).
    """
    check_groups(groups)
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    if len(spacing) != 3 or min(float(s) for s in spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive voxel sizes (um), got {spacing}")
    if not intensity_scale > 0:
        raise ValueError(f"intensity_scale must be > 0, got {intensity_scale}")
    planar = dims.is_planar(labels.shape)
    groups = groups_for(groups, planar)
    columns = feature_columns(groups, image_name, planar=planar)
    if not labels.any():
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == OBJECT_COLUMN else np.float64)
                             for c in columns})
    pixels = image.astype(np.float32) / np.float32(intensity_scale)
    df = _measure(dims.squeeze_plane(labels), dims.squeeze_plane(pixels),
                  dims.spatial_spacing(labels.shape, spacing), image_name=image_name,
                  groups=groups)
    return df[columns]


def label_properties(labels: np.ndarray, image: np.ndarray, spacing) -> list[dict]:
    """A few features per label for viewers: NGFF ``image-label`` ``properties``.

    One dict per label value > 0 (ascending): ``label-value``, ``voxels``,
    ``volume_um3`` (``area_um2`` for a 2D field, whose voxels are pixels) and
    ``mean_intensity`` (of ``image``, in its stored units). Label
    counting by ``bincount``: one pass, no per-object work (cheap beside segmentation).
    """
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ in shape")
    flat = labels.ravel()
    if flat.size == 0 or not flat.any():
        return []
    if flat.min() < 0:
        raise ValueError("labels must be non-negative")
    # only the labelled voxels (a nucleus field is mostly background): the same sums, each
    # label's voxels still added in scan order; selected by a boolean mask (np.nonzero of
    # the integer labels themselves takes 4x as long)
    where = flat != 0
    inside = flat[where]
    counts = np.bincount(inside, minlength=1)
    sums = np.bincount(inside, weights=image.ravel()[where].astype(np.float64), minlength=1)
    ids = np.nonzero(counts)[0]
    ids = ids[ids > 0]
    vox = float(np.prod(dims.spatial_spacing(labels.shape, spacing)))
    size = "area_um2" if dims.is_planar(labels.shape) else "volume_um3"
    return [{"label-value": int(i), "voxels": int(counts[i]),
             size: round(float(counts[i]) * vox, 4),
             "mean_intensity": round(float(sums[i] / counts[i]), 4)} for i in ids]


#: (pattern, unit, description) of the columns whose unit differs in a 2D field (CellProfiler's
#: 2D names), looked up before :data:`_UNITS`.
_UNITS_2D = [
    (r"^Location_(Center|BoundingBox(Minimum|Maximum))_[XY]$", "pixel",
     "position in pixel index coordinates of the field (X = last axis)"),
    (r"^Location_", "pixel", "position of an intensity landmark, pixel coordinates"),
    (r"^AreaShape_(Area|BoundingBoxArea|ConvexArea|FilledArea)$", "pixel^2", "pixel count"),
    (r"^AreaShape_(Perimeter|PerimeterCrofton|(Major|Minor)AxisLength|EquivalentDiameter|"
     r"(Min|Max)FeretDiameter|(Maximum|Mean|Median)Radius)$", "pixel", "length in pixels"),
    (r"^AreaShape_Orientation$", "degree", "angle of the major axis to the x axis"),
    (r"^AreaShape_(FormFactor|Eccentricity|Compactness|Zernike_|HuMoment_)", "1",
     "dimensionless"),
    (r"^AreaShape_(Spatial|Central)Moment_", "pixel^(i+j)",
     "moment of order i, j (sum over the pixels, coordinates in the bounding box)"),
    (r"^Intensity_IntegratedIntensity", "intensity*pixel",
     "sum of scaled intensities (CellProfiler's IntegratedIntensity)"),
    (r"^AreaShape_InertiaTensor", "pixel^2", "second moment of the pixel coordinates"),
    (r"^Shape2D_Area$", "um^2", "pixel count times the pixel area"),
    (r"^Shape2D_Perimeter$", "um", "length of the marching-squares contour (level 0.5)"),
    (r"^Shape2D_EquivalentDiameter$", "um", "diameter of the disc of the same area"),
    (r"^Shape2D_", "1", "dimensionless shape ratio"),
    (r"^Texture_", "1", "Haralick feature (256 grey levels, distance 3 pixels)"),
]

#: (pattern, unit, description) for every column, first match wins.
_UNITS = [
    (r"^ObjectNumber$", "1", "label value of the nucleus in the labels image"),
    (r"^Location_(Center|BoundingBox(Minimum|Maximum))_[XYZ]$", "voxel",
     "position in voxel index coordinates of the field (X = last axis)"),
    (r"^Location_", "voxel", "position of an intensity landmark, voxel coordinates"),
    (r"^AreaShape_(Volume|BoundingBoxVolume|ConvexArea|FilledArea)$", "voxel^3",
     "voxel count"),
    (r"^AreaShape_SurfaceArea$", "pixel^2",
     "marching-cubes area (level 0, x pixel = 1, relative z spacing), CellProfiler's"),
    (r"^AreaShape_(Major|Minor)AxisLength$|^AreaShape_EquivalentDiameter$", "pixel",
     "length in voxels (x pixel)"),
    (r"^AreaShape_(Extent|Solidity|EulerNumber)$|^AreaShape_NormalizedMoment_", "1",
     "dimensionless"),
    (r"^AreaShape_InertiaTensor", "pixel^2", "second moment of the voxel coordinates"),
    (r"^AreaShape_(Spatial|Central)Moment_", "pixel^(i+j+k)",
     "moment of order i, j, k (sum over the voxels, coordinates in the bounding box)"),
    (r"^Intensity_IntegratedIntensity", "intensity*voxel",
     "sum of scaled intensities (CellProfiler's IntegratedIntensity)"),
    (r"^Intensity_MassDisplacement", "pixel",
     "distance between the centres of mass of shape and intensity"),
    (r"^Intensity_", "intensity", "image / intensity_scale (0-1 for integer images)"),
    (r"^Shape3D_MeshVolume$", "um^3", "volume enclosed by the marching-cubes mesh"),
    (r"^Shape3D_SurfaceArea$", "um^2", "marching-cubes area (level 0.5, padded crop)"),
    (r"^Shape3D_", "1", "dimensionless shape ratio"),
    (r"^Texture_", "1", "Haralick feature (256 grey levels, distance 3 voxels)"),
    (r"^Granularity_", "percent", "signal removed at this opening step"),
]


def feature_unit(column: str, *, planar: bool = False) -> tuple[str, str]:
    """``(unit, description)`` of a :func:`nucleus_features` column (any object prefix) of a
    3D field or (``planar``) a 2D one: a few names (``AreaShape_ConvexArea``, the positions)
    are CellProfiler's in both, in voxels or in pixels."""
    name = re.sub(r"^[A-Z][A-Za-z]*_(?=(AreaShape|Intensity|Location|Shape[23]D|Texture|"
                  r"Granularity)_)", "", column)
    for pattern, unit, text in [*(_UNITS_2D if planar else []), *_UNITS]:
        if re.search(pattern, name):
            return unit, text
    raise KeyError(f"no unit known for column {column!r}")
