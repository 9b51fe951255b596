"""Per-nucleus 3D morphology and intensity features, in physical units.

From a ZYX label image, an intensity image and the voxel size (um):

- ``Volume`` (um^3): voxel count x voxel volume;
- ``SurfaceArea`` (um^2) and ``MeshVolume`` (um^3): marching cubes (level 0.5 of
  the object's padded binary crop, with the voxel spacing), ``mesh_surface_area``
  and the absolute signed volume of the closed mesh;
- ``Sphericity``: pi^(1/3) (6 V)^(2/3) / A, with the mesh volume and area (1 for a sphere);
- ``EquivalentDiameter`` (um): diameter of the sphere of the same volume;
- ``BoundingBoxMin/Max{Z,Y,X}`` and ``Centroid{Z,Y,X}`` (um);
- ``MajorAxisLength``, ``MinorAxisLength``, ``IntermediateAxisLength`` (um):
  4 sqrt(eigenvalue) of the inertia (covariance) tensor in physical coordinates,
  i.e. the full axis lengths of the ellipsoid with the same second moments;
- ``Elongation`` = intermediate / major, ``Flatness`` = minor / major;
- ``Extent``: volume / bounding-box volume;
- ``Solidity``: voxel count / voxel count of the rasterised convex hull, the same
  number as scikit-image's ``solidity`` (same hull: the object's voxels offset by
  +-0.5 along each axis, same inside test with tolerance 1e-10), but counted row by
  row from each facet's bound along x instead of testing every voxel of the bounding
  box against every facet (:func:`convex_hull_voxel_count`; 10-50x faster);
- intensity ``Mean``, ``Std``, ``Min``, ``Max``, ``Integrated`` (sum x voxel volume),
  ``Q25``, ``Median``, ``Q75``.

scikit-image's ``regionprops_table(..., spacing=...)`` provides the bounding box,
centroid, extent, inertia eigenvalues and intensity extrema; marching
cubes gives the surface. An empty label image returns the same columns with no rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SHAPE_FEATURES = ["Volume", "MeshVolume", "SurfaceArea", "Sphericity", "EquivalentDiameter",
                  "BoundingBoxMinZ", "BoundingBoxMinY", "BoundingBoxMinX", "BoundingBoxMaxZ",
                  "BoundingBoxMaxY", "BoundingBoxMaxX", "CentroidZ", "CentroidY", "CentroidX",
                  "MajorAxisLength", "IntermediateAxisLength", "MinorAxisLength", "Elongation",
                  "Flatness", "Extent", "Solidity"]
INTENSITY_FEATURES = ["Mean", "Std", "Min", "Max", "Integrated", "Q25", "Median", "Q75"]
FEATURE_COLUMNS = ["label"] + [f"AreaShape_{f}" for f in SHAPE_FEATURES] + [
    f"Intensity_{f}" for f in INTENSITY_FEATURES]


_HULL_TOL = 1e-10  # scikit-image's convex_hull_image tolerance


def convex_hull_voxel_count(obj: np.ndarray) -> int:
    """Voxels of the grid of ``obj`` (3D bool) inside the convex hull of its voxels.

    Equals ``skimage.morphology.convex_hull_image(obj).sum()``: the hull of the
    object's voxel coordinates offset by +-0.5 along each axis, a voxel inside when
    ``n . p + b < 1e-10`` for every facet. Per (z, y) row the facets bound x to an
    interval; its end points are re-checked with the exact per-facet test.
    """
    from scipy.spatial import ConvexHull, QhullError

    coords = np.argwhere(obj).astype(np.float64)
    if len(coords) == 0:
        return 0
    try:
        hull0 = ConvexHull(coords)
        coords = hull0.points[hull0.vertices]
    except QhullError:  # flat object: every voxel is on the hull's plane
        pass
    offsets = np.concatenate([np.eye(3) * 0.5, -np.eye(3) * 0.5])
    pts = np.unique((coords[:, None, :] + offsets).reshape(-1, 3), axis=0)
    try:
        eq = ConvexHull(pts).equations  # (F, 4): n_z, n_y, n_x, b
    except QhullError:
        return int(obj.sum())
    nz_, ny_, nx_, b = eq.T
    zz, yy = np.meshgrid(np.arange(obj.shape[0]), np.arange(obj.shape[1]), indexing="ij")
    rows3 = np.stack([zz.ravel(), yy.ravel(), np.ones(zz.size)], axis=1).astype(np.float64)
    # facet f bounds x on row (z, y): n_x x < tol - n_z z - n_y y - b
    pos, neg, zero = nx_ > 0, nx_ < 0, nx_ == 0

    def bounds(sel):  # (tol - n_z z - n_y y - b) / n_x for the facets in sel, per row
        m = np.stack([-nz_[sel], -ny_[sel], _HULL_TOL - b[sel]]) / nx_[sel]
        return rows3 @ m

    hi = bounds(pos).min(axis=1) if pos.any() else np.full(len(rows3), np.inf)
    lo = bounds(neg).max(axis=1) if neg.any() else np.full(len(rows3), -np.inf)
    ok = np.ones(len(rows3), bool)
    if zero.any():
        ok = np.all(rows3 @ np.stack([nz_[zero], ny_[zero], b[zero]]) < _HULL_TOL, axis=1)
    x_last = obj.shape[2] - 1
    lo_i = np.clip(np.ceil(lo - 1e-6), 0, x_last + 1).astype(np.int64)
    hi_i = np.clip(np.floor(hi + 1e-6), -1, x_last).astype(np.int64)
    rows = np.nonzero(ok & (lo_i <= hi_i))[0]
    lo_r, hi_r = lo_i[rows], hi_i[rows]
    # the 1e-6 slack may admit an end point that the exact per-facet test (the one
    # scikit-image uses) rejects: re-test end points that lie that close to a bound
    for ends, bound, step in ((lo_r, lo[rows], 1), (hi_r, hi[rows], -1)):
        near = np.nonzero(np.abs(ends - bound) < 1e-5)[0]
        if len(near):
            p = rows3[rows[near]].copy()
            p = np.concatenate([p[:, :2], ends[near, None].astype(np.float64)], axis=1)
            inside = np.all(p @ eq[:, :3].T + eq[:, 3] < _HULL_TOL, axis=1)
            ends[near[~inside]] += step
    return int(np.clip(hi_r - lo_r + 1, 0, None).sum())


def _mesh(obj: np.ndarray, spacing) -> tuple[float, float]:
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(obj.astype(np.float32), 1)
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=tuple(spacing))
    area = float(mesh_surface_area(verts, faces))
    a, b, c = (verts[faces[:, i]] for i in range(3))
    volume = abs(float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)
    return area, volume


def nucleus_features(labels: np.ndarray, intensity: np.ndarray, spacing) -> pd.DataFrame:
    """One row per object of ``labels`` with the columns :data:`FEATURE_COLUMNS`."""
    from skimage.measure import regionprops_table

    if labels.shape != intensity.shape:
        raise ValueError(f"labels {labels.shape} and image {intensity.shape} differ in shape")
    spacing = tuple(float(s) for s in spacing)
    if not labels.any():
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "label" else np.float64)
                             for c in FEATURE_COLUMNS})
    props = regionprops_table(
        labels.astype(np.int32), intensity_image=intensity.astype(np.float32), spacing=spacing,
        properties=("label", "area", "bbox", "centroid", "extent",
                    "inertia_tensor_eigvals", "image", "intensity_min", "intensity_max"))
    vox = float(np.prod(spacing))
    rows = []
    flat_lab = labels.ravel()
    order = np.argsort(flat_lab, kind="stable")
    sorted_lab = flat_lab[order]
    vals = intensity.ravel()[order].astype(np.float64)
    bounds = np.searchsorted(sorted_lab, props["label"]), np.searchsorted(sorted_lab,
                                                                          props["label"],
                                                                          side="right")
    for i, lab in enumerate(props["label"]):
        v = vals[bounds[0][i]:bounds[1][i]]
        volume = v.size * vox
        area, mesh_vol = _mesh(props["image"][i], spacing)
        eig = np.sort([props[f"inertia_tensor_eigvals-{k}"][i] for k in range(3)])[::-1]
        # inertia eigenvalues -> covariance eigenvalues of the object's coordinates
        s = eig.sum() / 2.0
        cov = np.clip([s - e for e in eig], 0, None)  # ascending for descending inertia
        axes = np.sort(4 * np.sqrt(cov))[::-1]
        major, inter, minor = axes
        bbox = [props[f"bbox-{k}"][i] for k in range(6)]
        rows.append({
            "label": int(lab), "AreaShape_Volume": volume, "AreaShape_MeshVolume": mesh_vol,
            "AreaShape_SurfaceArea": area,
            "AreaShape_Sphericity": (np.pi ** (1 / 3) * (6 * mesh_vol) ** (2 / 3)) / area
            if area > 0 else np.nan,
            "AreaShape_EquivalentDiameter": (6 * volume / np.pi) ** (1 / 3),
            **{f"AreaShape_BoundingBoxMin{a}": bbox[k] * spacing[k] for k, a in enumerate("ZYX")},
            **{f"AreaShape_BoundingBoxMax{a}": bbox[k + 3] * spacing[k]
               for k, a in enumerate("ZYX")},
            **{f"AreaShape_Centroid{a}": float(props[f"centroid-{k}"][i])
               for k, a in enumerate("ZYX")},
            "AreaShape_MajorAxisLength": major, "AreaShape_IntermediateAxisLength": inter,
            "AreaShape_MinorAxisLength": minor,
            "AreaShape_Elongation": inter / major if major > 0 else np.nan,
            "AreaShape_Flatness": minor / major if major > 0 else np.nan,
            "AreaShape_Extent": float(props["extent"][i]),
            "AreaShape_Solidity": v.size / max(convex_hull_voxel_count(props["image"][i]), 1),
            "Intensity_Mean": v.mean(), "Intensity_Std": v.std(), "Intensity_Min": v.min(),
            "Intensity_Max": v.max(), "Intensity_Integrated": v.sum() * vox,
            "Intensity_Q25": np.quantile(v, 0.25), "Intensity_Median": np.quantile(v, 0.5),
            "Intensity_Q75": np.quantile(v, 0.75),
        })
    return pd.DataFrame(rows, columns=FEATURE_COLUMNS)
