"""The ``evaluate`` stage: pixel, segmentation and feature metrics of predictions.

For every field of a split (default ``test``) on which every named prediction is
done, one Dask task reads the target, the predictions and the label images and
computes, per model (each prediction, plus ``target`` as the reference row):

- **pixel level**, whole field and foreground (``target >= otsu``, Otsu from the
  store's statistics): PSNR and SSIM with the target's range as data range
  (predictions are already rescaled into it by ``predict``; foreground SSIM in
  cubic's definition, windows wholly inside the foreground), MicroMS3IM
  (``cubic``; foreground: on the foreground's bounding box), single-image FRC
  (the XY slice with the most target foreground; foreground FRC: that slice
  weighted by the soft foreground mask) and FSC (the volume: XY and Z) resolutions
  in um via ``cubic`` (miplib's conventions, ``bin_delta`` 5; ``nan`` = not
  resolved at this sampling), and the two-image FRC of prediction against target
  on that slice (the finest period the prediction reproduces: a noise-free
  prediction has no independent noise between checkerboard halves, so its
  single-image FRC is usually not resolved). The FRC curves are kept for the
  report;
- **background**: the fraction of the target's background (``target < otsu``) the
  prediction puts below Otsu, and its spread there: s.d. of the prediction over the
  target's background / the target's foreground mean (``bg_spread``);
- **segmentation level**: average precision at IoU 0.50..0.95 of each model's
  labels against the ground truth (``labels:gt``), with
  :mod:`spotlight_scale.core.matching`; and, where labels named ``<LABELS>-model``
  exist (``segment --foreground model``: the model's own foreground threshold instead
  of Otsu recomputed on the prediction), their AP (``ap50_model``, ``ap_mean_model``). Objects touching the XY border of the field
  (cut by the field of view) are dropped from *both* sides first, as the
  segmentation recipe drops its own (:func:`spotlight_scale.core.segment.clear_xy_border`);
- **post-thresholding sweep** (paper Fig. 3b): PSNR of each prediction with the
  intensities below ``T`` set to 0 (what ``segment --threshold T`` segments), and
  the AP of labels segmented from it, found by name: ``<LABELS>-t<T>``;
- the IoU >= 0.5 matches between the target's labels and each prediction's
  labels, used in the driver for the **feature level**: cosine distance between
  target and prediction profiles (``profile`` datasets) per matched nucleus and
  per well.

**2D fields** (one z plane; :mod:`spotlight_scale.core.dims`) are decided once per
field: the images are squeezed to their YX plane, so SSIM uses 2D windows and MicroMS3IM
and FRC are computed on the plane; the FSC needs a volume and is ``nan`` (the report
says "n/a (2D)"); the labels keep their stored (1, Y, X) shape for the AP. The table's
``planar`` column says which fields were 2D.

Outputs in ``REPORT_DIR``: ``metrics.parquet`` (table ``metrics``: one row per
field and model), ``summary.json`` (per-model means, per-well feature distances,
intensity histograms, the sweep), ``slices.npz`` (slices shown in the report),
then the report itself (:func:`spotlight_scale.report.write_report`). Per-field
results are cached under ``REPORT_DIR/_fields`` with a fingerprint of the
settings and of the input markers, so a re-run only computes what changed
(``overwrite=True`` recomputes all).

Which labels belong to which image (documented in the CLI): ``labels`` maps a
prediction name to its labels name; a prediction without an entry uses
``seg-<NAME>`` when ``segment`` wrote labels of that name; the target's labels
default to ``seg-target`` likewise. Profiles: ``profiles`` maps ``target`` and
prediction names to ``profile`` output directories; a single directory means
``DIR/target`` and ``DIR/<NAME>``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..io.store import FieldKey, Store, StoreError, canonical_well, check_name
from ..io.tables import OBJECT, PLATE, SITE, WELL, key_columns

log = logging.getLogger(__name__)

#: IoU thresholds of the AP (the cellpose / stardist convention).
AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
AP_COLUMNS = tuple(f"ap{int(round(t * 100))}" for t in AP_THRESHOLDS)
#: IoU at which target and prediction nuclei are matched for feature distances.
MATCH_IOU = 0.5
#: Intensity histogram bins (target range over the evaluated fields).
HIST_BINS = 128
TARGET = "target"
SUMMARY_FORMAT = "spotlight-scale-evaluation"
SUMMARY_VERSION = 1
#: Metric columns of the ``metrics`` table, in report order.
#: ``fsc_um`` is the XY resolution of the FSC, ``fsc_z_um`` its Z resolution.
PIXEL_METRICS = ("psnr", "psnr_fg", "ssim", "ssim_fg", "micro_ms3im", "micro_ms3im_fg",
                 "frc_um", "frc_fg_um", "fsc_um", "fsc_z_um", "frc_vs_target_um",
                 "bg_below_otsu", "bg_spread")
#: Resolution columns: NaN means "not resolved at this sampling".
RESOLUTION_METRICS = ("frc_um", "frc_fg_um", "fsc_um", "fsc_z_um", "frc_vs_target_um")
#: How objects cut by the field of view are treated in the AP (both sides alike).
AP_BORDER_RULE = ("objects touching the XY border of the field are dropped from the ground "
                  "truth and from the segmentation before matching, as the watershed recipe "
                  "drops its own")
#: ``*_model``: the AP of the labels segmented at the model's own foreground threshold
#: (``segment --foreground model``), found by name: ``<LABELS>-model``.
#: ``ap_mean_50_90``: the mean over IoU 0.5-0.9, the paper's range (``ap_mean``: 0.5-0.95).
SEG_METRICS = ("ap_mean", "ap_mean_50_90", *AP_COLUMNS, "n_gt", "n_pred", "ap50_model",
               "ap_mean_model", "ap_mean_50_90_model")
#: How many of :data:`AP_THRESHOLDS` lie in the paper's range, IoU 0.5-0.9.
N_AP_50_90 = sum(t <= 0.9 for t in AP_THRESHOLDS)
#: Suffix of the labels segmented at the model's threshold (``<LABELS>-model``).
MODEL_LABELS_SUFFIX = "-model"
FEATURE_METRICS = ("n_matched", "cosine_nuclei_median")
#: Profile feature names that say *where* a nucleus is, not what it looks like:
#: left out of the cosine distance (matched nuclei share them by construction).
_LOCATION = re.compile(r"(location|centroid|center|bbox|boundingbox|bounding_box)", re.I)
#: Also left out: cp_measure's raw, central and normalised moments and the inertia tensor's
#: entries (185 of its 208 size/shape columns). They depend on position and orientation,
#: and after min-max scaling they would outweigh the morphology the paper's profile is
#: about (regionprops and mesh features: size, shape, intensity).
_MOMENTS = re.compile(r"_(SpatialMoment|CentralMoment|NormalizedMoment|HuMoment|InertiaTensor)_")


# =========================================================================== plan
def threshold_label_name(labels: str, threshold: float) -> str:
    """Labels name of ``labels`` re-segmented after post-thresholding at ``threshold``."""
    return f"{labels}-t{threshold:g}"


def model_label_name(labels: str) -> str:
    """Labels name of ``labels``' image segmented at its model's foreground threshold."""
    return f"{labels}{MODEL_LABELS_SUFFIX}"


def _discover_thresholds(labels: str, segment_names: Sequence[str]) -> list[float]:
    pat = re.compile(rf"^{re.escape(labels)}-t([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$")
    out = []
    for name in segment_names:
        m = pat.match(name)
        if m:
            out.append(float(m.group(1)))
    return sorted(set(out))


def parse_mapping(values: Sequence[str] | Mapping[str, str] | None, what: str,
                  names: Sequence[str]) -> dict[str, str]:
    """``["fnet=seg-fnet", ...]`` -> dict; a lone value without ``=`` needs one name."""
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(k): str(v) for k, v in values.items()}
    out = {}
    for v in values:
        key, sep, val = str(v).partition("=")
        if not sep:
            if len(names) != 1:
                raise ValueError(f"--{what} {v!r}: with several predictions use NAME={what.upper()}")
            key, val = names[0], key
        out[key.strip()] = val.strip()
    return out


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_plan(store: Store, predictions: Sequence[str], *, gt_labels: str = "gt",
               labels: Mapping[str, str] | None = None, target_labels: str | None = None,
               split: str = "test", bin_delta: float = 5,
               sweep: Sequence[float] | None = None) -> dict[str, Any]:
    """Resolve names, fields, thresholds and histogram bins (no pixel work)."""
    predictions = [check_name(p, "prediction name") for p in predictions]
    if not predictions:
        raise ValueError("evaluate needs at least one --prediction NAME")
    if TARGET in predictions:
        raise ValueError(f"a prediction may not be called {TARGET!r} (reserved for the target row)")
    if len(set(predictions)) != len(predictions):
        raise ValueError(f"prediction names repeat: {predictions}")
    done_pred = set(store.done_names("predict"))
    missing = [p for p in predictions if p not in done_pred]
    if missing:
        raise StoreError(f"{store.root}: no prediction named {missing} (have {sorted(done_pred)}); "
                         "run `spotlight-scale predict STORE RUN --name NAME` first")
    fields = store.fields(split)
    if not fields:
        raise StoreError(f"{store.root}: no ingested fields in split {split!r}")
    keep = [k for k in fields if all(store.is_done("predict", k, p) for p in predictions)]
    if len(keep) < len(fields):
        log.warning("%d of %d %s fields lack a prediction and are left out",
                    len(fields) - len(keep), len(fields), split)
    if not keep:
        raise StoreError(f"{store.root}: no {split} field has all predictions {predictions}")
    for p in predictions:
        _check_one_model(store, p, keep)

    seg_names = store.done_names("segment")
    labels = dict(labels or {})
    unknown = set(labels) - set(predictions)
    if unknown:
        raise ValueError(f"--labels given for {sorted(unknown)}, which are not among the "
                         f"predictions {predictions}")
    for p in predictions:
        if p not in labels and f"seg-{p}" in seg_names:
            labels[p] = f"seg-{p}"
    for p, name in labels.items():
        check_name(name, "labels name")
        if name not in seg_names:
            raise StoreError(f"{store.root}: no labels named {name!r} for prediction {p!r} "
                             f"(segment wrote {seg_names}); run `spotlight-scale segment`")
    if target_labels is None and "seg-target" in seg_names:
        target_labels = "seg-target"
    if target_labels is not None and target_labels not in seg_names:
        raise StoreError(f"{store.root}: no target labels named {target_labels!r} "
                         f"(segment wrote {seg_names})")

    # labels segmented at the model's own threshold: <labels>-model, by convention; they
    # must say so in their markers (segment --foreground model)
    model_labels = {}
    for p in predictions:
        name = model_label_name(labels[p]) if p in labels else None
        if name is None or name not in seg_names:
            continue
        for k in keep:
            mark = store.is_done("segment", k, name) or {}
            if mark and mark.get("foreground") != "model":
                raise StoreError(f"{store.root}: labels {name!r} of field {k} were segmented "
                                 f"with foreground {mark.get('foreground', 'otsu')!r}, not at "
                                 f"the model's threshold; evaluate reads <LABELS>-model as the "
                                 "labels of `segment --foreground model`: rename them or "
                                 "segment again with --foreground model")
        model_labels[p] = name

    # sweep thresholds: given, or found as <labels>-t<T> label names
    # (every prediction is scored at every threshold: PSNR always, AP where labels exist)
    found = {float(t) for t in (sweep or ())}
    for p in predictions:
        if p in labels:
            found |= set(_discover_thresholds(labels[p], seg_names))
    thresholds = {p: sorted(found) for p in predictions}
    if not found:
        # no re-segmented labels and no --sweep: PSNR-only sweep between the
        # background (median p0.1) and the foreground threshold (median Otsu)
        lo = float(np.median([store.stats(k, "target")["p0_1"] for k in keep]))
        hi = float(np.median([store.stats(k, "target")["otsu"] for k in keep]))
        default = [float(f"{v:.4g}") for v in np.linspace(lo, hi, 5)]
        thresholds = {p: default for p in predictions}

    tmin = min(store.stats(k, "target")["min"] for k in keep)
    tmax = max(store.stats(k, "target")["max"] for k in keep)
    if not tmax > tmin:
        tmax = tmin + 1.0
    plan = {
        "store": str(store.root), "split": split, "predictions": predictions,
        "fields": [k.id for k in keep], "gt_labels": gt_labels, "labels": labels,
        "model_labels": model_labels,
        "target_labels": target_labels, "bin_delta": float(bin_delta),
        "thresholds": thresholds, "ap_thresholds": list(AP_THRESHOLDS),
        "hist_edges": np.linspace(tmin, tmax, HIST_BINS + 1).tolist(),
        "otsu_median": float(np.median([store.stats(k, "target")["otsu"] for k in keep])),
    }
    return plan


def _check_one_model(store: Store, name: str, keys) -> None:
    """A prediction is scored as one model: refuse one whose fields were predicted by several
    (a store written before prediction names were claimed by one model)."""
    models: dict[str, list] = {}
    for k in keys:
        marker = store.is_done("predict", k, name) or {}
        models.setdefault(str(marker.get("model_sha256")), []).append(
            (k, marker.get("model_path")))
    if len(models) > 1:
        desc = "; ".join(f"{v[0][1]} (sha256 {sha[:12]}...) for {len(v)} field(s), e.g. {v[0][0]}"
                         for sha, v in models.items())
        raise ValueError(f"prediction {name!r} holds fields of {len(models)} models ({desc}): "
                         "it cannot be scored as one model; re-run `spotlight-scale predict "
                         f"{store.root} MODEL --name {name} --split all --overwrite` with one "
                         "model")


def _input_markers(store: Store, key: FieldKey, plan) -> dict:
    """Markers of every input of ``key``: their change invalidates the cached result."""
    out = {"ingest": store.is_done("ingest", key)}
    for p in plan["predictions"]:
        out[f"predict/{p}"] = store.is_done("predict", key, p)
    names = (list(plan["labels"].values()) + list(plan.get("model_labels", {}).values())
             + [plan["target_labels"]])
    for p, ts in plan["thresholds"].items():
        if p in plan["labels"]:
            names += [threshold_label_name(plan["labels"][p], t) for t in ts]
    for n in names:
        if n:
            out[f"segment/{n}"] = store.is_done("segment", key, n)
    return out


# =========================================================================== per field
def _ap(gt: np.ndarray, pred: np.ndarray, thresholds) -> np.ndarray:
    """AP at each IoU threshold, via :mod:`spotlight_scale.core.matching`, border-cut
    objects dropped from both label images (:data:`AP_BORDER_RULE`)."""
    from ..core import matching
    from ..core.segment import clear_xy_border

    res = matching.average_precision(clear_xy_border(gt), clear_xy_border(pred), thresholds)
    if isinstance(res, Mapping):
        res = res["ap"]
    return np.asarray(res, dtype=np.float64).reshape(len(thresholds))


def _match(a: np.ndarray, b: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one IoU matches (label ids of ``a``, label ids of ``b``)."""
    from ..core import matching

    pairs = matching.match_labels(a, b, iou)
    ia, ib = pairs
    return np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)


def _nobj(lab: np.ndarray) -> int:
    return int(np.unique(lab[lab > 0]).size)


def _safe(fn, *args, **kwargs) -> float:
    try:
        return float(fn(*args, **kwargs))
    except ValueError as exc:  # too small for a window / split: not a failure of the field
        log.debug("metric %s skipped: %s", getattr(fn, "__name__", fn), exc)
        return float("nan")


def _micro_both(target, pred, fg) -> tuple[float, float]:
    from ..core import metrics as M

    try:
        return M.micro_ms3im_both(target, pred, fg)
    except ValueError as exc:
        log.debug("MicroMS3IM skipped: %s", exc)
        return float("nan"), float("nan")


def _read_labels(store: Store, key: FieldKey, name: str | None, gt: bool = False):
    if name is None:
        return None
    if not gt and not store.is_done("segment", key, name):
        log.warning("field %s: labels %r not done; its segmentation metrics are NaN", key, name)
        return None
    try:
        return store.read_named(key, f"labels:{name}")
    except StoreError as exc:
        if gt:
            log.warning("field %s: %s; AP is NaN", key, exc)
            return None
        raise


def _hist(x: np.ndarray, edges: np.ndarray) -> list[int]:
    """Histogram with values outside the edges counted in the end bins."""
    clipped = np.clip(x.ravel(), edges[0], edges[-1])
    return np.histogram(clipped, bins=edges)[0].astype(np.int64).tolist()


def evaluate_field(store_root: str, field_id: str, plan: dict) -> dict:
    """All per-field metrics of one field (a Dask task; plain data in and out).

    Returns
    -------
    dict
        ``rows`` (one per model), ``sweep`` rows, ``hist`` counts per image,
        ``matches`` (target label ids, prediction label ids) per prediction.
    """
    from ..core import metrics as M

    from ..core import dims

    store = Store(store_root)
    key = FieldKey.from_id(field_id)
    meta = store.field_meta(key)
    otsu = float(store.stats(key, "target")["otsu"])
    stored = store.read(key, "target")
    # 2D or 3D, decided once for the field (core.dims): a 2D field's images are scored as
    # YX planes (2D SSIM windows, MicroSSIM and FRC on the plane; FSC needs a volume: NaN);
    # labels stay as stored (1, Y, X), which the AP and the border rule treat alike
    planar = dims.is_planar(stored.shape)
    vy, vx = dims.spatial_spacing(stored.shape, store.voxel_size(key))[-2:]
    target = dims.squeeze_plane(stored).astype(np.float64)
    fg = target >= otsu
    rng = float(target.max() - target.min())
    z_show = 0 if planar else int(np.argmax(fg.sum(axis=(1, 2))))
    plane = (lambda img: img) if planar else (lambda img: img[z_show])
    bd = plan["bin_delta"]
    thr = plan["ap_thresholds"]
    edges = np.asarray(plan["hist_edges"])
    gt = _read_labels(store, key, plan["gt_labels"], gt=True) if meta.get("has_gt", True) else None
    tlab = _read_labels(store, key, plan["target_labels"])
    base = {**key_columns(key), "split": meta.get("split", ""), "planar": bool(planar)}

    fg_weight = M.soft_mask(plane(fg))
    curves: dict[str, dict] = {}

    def frc(name, img, img2=None, key="frc"):
        try:
            f, c, r = M.fourier_correlation(img, img2, bin_delta=bd, spacing=(vy, vx))
        except ValueError as exc:
            log.debug("FRC skipped: %s", exc)
            return float("nan")
        curves.setdefault(name, {})[key] = {"freq": f.tolist(), "corr": c.tolist()}
        return r

    def fsc(img):
        if planar:  # a Fourier *shell* correlation is not defined for a single plane
            return float("nan"), float("nan")
        try:
            return M.fsc_resolution(img, bin_delta=bd, spacing=store.voxel_size(key))
        except ValueError as exc:
            log.debug("FSC skipped: %s", exc)
            return float("nan"), float("nan")

    def resolution(name, img):
        fsc_xy, fsc_z = fsc(img)
        return {"frc_um": frc(name, plane(img)),
                "frc_fg_um": frc(name, plane(img) * fg_weight, key="frc_fg"),
                "fsc_um": fsc_xy, "fsc_z_um": fsc_z}

    def ap(lab):
        a = _ap(gt, lab, thr)
        return a, float(np.mean(a))

    def seg(lab, model_lab=None):
        from ..core.segment import clear_xy_border

        out = {c: float("nan") for c in (*AP_COLUMNS, "ap_mean", "ap_mean_50_90", "ap50_model",
                                         "ap_mean_model", "ap_mean_50_90_model")}
        out["n_gt"] = _nobj(clear_xy_border(gt)) if gt is not None else 0
        out["n_pred"] = _nobj(clear_xy_border(lab)) if lab is not None else 0
        if gt is not None and lab is not None:
            a, out["ap_mean"] = ap(lab)
            out["ap_mean_50_90"] = float(np.mean(a[:N_AP_50_90]))
            out.update({c: float(v) for c, v in zip(AP_COLUMNS, a)})
        if gt is not None and model_lab is not None:
            a, out["ap_mean_model"] = ap(model_lab)
            out["ap50_model"] = float(a[0])
            out["ap_mean_50_90_model"] = float(np.mean(a[:N_AP_50_90]))
        return out

    rows = [{**base, "model": TARGET, "labels": plan["target_labels"] or "",
             **{m: float("nan") for m in PIXEL_METRICS}, **resolution(TARGET, target),
             **seg(tlab), "n_matched": 0, "cosine_nuclei_median": float("nan")}]
    hist = {TARGET: _hist(target, edges)}
    sweep, matches = [], {}
    for name in plan["predictions"]:
        pred = dims.squeeze_plane(store.read_named(key, f"prediction:{name}")).astype(np.float64)
        if pred.shape != target.shape:
            raise StoreError(f"field {key}: prediction {name!r} {pred.shape} and target "
                             f"{target.shape} differ in shape")
        labels_name = plan["labels"].get(name)
        plab = _read_labels(store, key, labels_name)
        mlab = _read_labels(store, key, plan.get("model_labels", {}).get(name))
        row = {**base, "model": name, "labels": labels_name or "",
               "psnr": M.psnr(target, pred, data_range=rng),
               "psnr_fg": M.psnr_foreground(target, pred, fg, data_range=rng),
               "bg_below_otsu": M.background_below(pred, fg, otsu),
               "bg_spread": M.background_spread(target, pred, fg),
               "ssim": _safe(M.ssim, target, pred, data_range=rng),
               "ssim_fg": _safe(M.ssim_foreground, target, pred, fg, data_range=rng),
               **dict(zip(("micro_ms3im", "micro_ms3im_fg"), _micro_both(target, pred, fg))),
               **resolution(name, pred),
               "frc_vs_target_um": frc(name, plane(pred), plane(target), key="vs_target"),
               **seg(plab, mlab),
               "n_matched": 0, "cosine_nuclei_median": float("nan")}
        if tlab is not None and plab is not None:
            ia, ib = _match(tlab, plab, MATCH_IOU)
            matches[name] = [ia.tolist(), ib.tolist()]
            row["n_matched"] = int(ia.size)
        rows.append(row)
        hist[name] = _hist(pred, edges)
        for t in plan["thresholds"].get(name, []):
            cut = M.threshold_below(pred, t)
            srow = {**base, "model": name, "threshold": float(t),
                    "psnr": M.psnr(target, cut, data_range=rng),
                    "ap50": float("nan"), "ap_mean": float("nan")}
            if labels_name is not None and gt is not None:
                tname = threshold_label_name(labels_name, t)
                if store.is_done("segment", key, tname):
                    a, srow["ap_mean"] = ap(store.read_named(key, f"labels:{tname}"))
                    srow["ap50"] = float(a[0])
            sweep.append(srow)
    return {"field": field_id, "rows": rows, "sweep": sweep, "hist": hist, "matches": matches,
            "curves": curves}


# =========================================================================== features
def _feature_columns(a, b) -> list[str]:
    import pandas as pd

    cols = []
    for c in a.columns:
        if (c.startswith("Nuclei_") and c in b.columns and not _LOCATION.search(c)
                and not _MOMENTS.search(c)
                and pd.api.types.is_numeric_dtype(a[c]) and pd.api.types.is_numeric_dtype(b[c])):
            cols.append(c)
    return cols


def read_profiles(path: str | Path, fields: Sequence[str]):
    """Nucleus profiles of ``path`` (a ``profile`` directory) restricted to ``fields``.

    Keys as every table names them (``Metadata_Plate``, ``Metadata_Well`` canonical,
    ``Metadata_Site``, ``Metadata_ObjectNumber``); target and prediction profiles share
    their column names (intensities are named by the stain, :mod:`spotlight_scale.io.profiles`).
    """
    from ..io import profiles as io_profiles

    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no profiles; run `spotlight-scale profile ... --out {path}`")
    df = io_profiles.read_profiles(path, [FieldKey.from_id(f) for f in fields])
    missing = [c for c in io_profiles.KEYS if c not in df.columns]
    if missing:
        raise StoreError(f"{path}: profile table lacks key columns {missing}")
    df = df.copy()
    df[PLATE] = df[PLATE].astype(str)
    df[WELL] = df[WELL].astype(str).map(canonical_well)
    df[SITE] = df[SITE].astype(int)
    df[OBJECT] = df[OBJECT].astype(int)
    ids = df[PLATE] + "/" + df[WELL] + "/" + df[SITE].astype(str)
    return df[ids.isin(set(fields))].reset_index(drop=True)


def feature_distances(target_profiles, pred_profiles, matches: Mapping[str, Sequence]):
    """Cosine distances between target and prediction profiles.

    Features: the ``Nuclei_*`` columns both tables share, minus location, moment and
    inertia-tensor-entry features (the eigenvalues stay),
    min-max scaled by the target nuclei's range (``cubic``'s ``feature_ranges``
    convention) so no unit dominates.

    Parameters
    ----------
    target_profiles, pred_profiles : DataFrame
        Output of :func:`read_profiles`.
    matches : mapping
        ``field id -> (target label ids, prediction label ids)``, one-to-one.

    Returns
    -------
    per_field : dict
        ``field id -> (n matched with profiles, median cosine distance)``.
    per_well : list of dict
        ``plate, well, n_target, n_pred, cosine_distance`` between the well medians.
    features : list of str
    """
    import pandas as pd

    from ..core.metrics import cosine_distance, cosine_distances, minmax_scale

    feats = _feature_columns(target_profiles, pred_profiles)
    if not feats or target_profiles.empty or pred_profiles.empty:
        return {}, [], feats
    T = target_profiles[feats].to_numpy(np.float64)
    lo, hi = np.nanmin(T, axis=0), np.nanmax(T, axis=0)
    keys = [PLATE, WELL, SITE, OBJECT]

    def scaled(df, X):  # keys + scaled features, built at once (hundreds of columns)
        return pd.concat([df[keys].reset_index(drop=True),
                          pd.DataFrame(minmax_scale(X, lo, hi), columns=feats)], axis=1)

    ts = scaled(target_profiles, T)
    ps = scaled(pred_profiles, pred_profiles[feats].to_numpy(np.float64))
    tidx = ts.set_index(keys)
    pidx = ps.set_index(keys)
    per_field = {}
    for fid, (ia, ib) in matches.items():
        k = FieldKey.from_id(fid)
        ta = [(k.plate, k.well, k.field, int(i)) for i in ia]
        pb = [(k.plate, k.well, k.field, int(i)) for i in ib]
        ok = [j for j in range(len(ta)) if ta[j] in tidx.index and pb[j] in pidx.index]
        if not ok:
            per_field[fid] = (0, float("nan"))
            continue
        d = cosine_distances(tidx.loc[[ta[j] for j in ok], feats].to_numpy(),
                             pidx.loc[[pb[j] for j in ok], feats].to_numpy())
        per_field[fid] = (len(ok), float(np.nanmedian(d)) if np.isfinite(d).any() else float("nan"))
    per_well = []
    for (plate, well), tg in ts.groupby([PLATE, WELL], sort=True):
        pg = ps[(ps[PLATE] == plate) & (ps[WELL] == well)]
        dist = (cosine_distance(np.nanmedian(tg[feats].to_numpy(), axis=0),
                                np.nanmedian(pg[feats].to_numpy(), axis=0))
                if len(pg) else float("nan"))
        per_well.append({"plate": plate, "well": well, "n_target": int(len(tg)),
                         "n_pred": int(len(pg)), "cosine_distance": dist})
    return per_field, per_well, feats


def resolve_profiles(profiles, predictions: Sequence[str]) -> dict[str, Path]:
    """``DIR`` -> ``{target: DIR/target, NAME: DIR/NAME}``; or an explicit mapping."""
    if profiles is None:
        return {}
    if isinstance(profiles, (str, Path)):
        root = Path(profiles)
        return {n: root / n for n in (TARGET, *predictions)}
    if isinstance(profiles, Mapping):
        return {str(k): Path(v) for k, v in profiles.items()}
    items = list(profiles)
    if len(items) == 1 and "=" not in str(items[0]):
        return resolve_profiles(str(items[0]), predictions)
    out = {}
    for v in items:
        key, sep, val = str(v).partition("=")
        if not sep:
            raise ValueError(f"--profiles {v!r}: give one DIR, or NAME=DIR pairs "
                             f"(NAME: target or a prediction)")
        out[key.strip()] = Path(val.strip())
    return out


# =========================================================================== driver
def _summarise(df, models: Sequence[str]) -> dict:
    out = {}
    for m in models:
        sub = df[df["model"] == m]
        stats = {}
        for c in (*PIXEL_METRICS, *SEG_METRICS, *FEATURE_METRICS):
            v = sub[c].to_numpy(np.float64)
            n_nan = int(np.isnan(v).sum())
            v = v[np.isfinite(v)]
            stats[c] = ({"mean": float(v.mean()), "std": float(v.std()),
                         "median": float(np.median(v)), "n": int(v.size)}
                        if v.size else {"mean": None, "std": None, "median": None, "n": 0})
            stats[c]["n_nan"] = n_nan
        out[m] = stats
    return out


def _mean_curves(ordered: Sequence[dict], models: Sequence[str]) -> dict:
    """Mean FRC curve per model and kind over fields, on the first field's frequency axis."""
    out: dict[str, dict] = {}
    for m in models:
        for kind in ("frc", "frc_fg", "vs_target"):
            got = [res.get("curves", {}).get(m, {}).get(kind) for res in ordered]
            got = [g for g in got if g and g["freq"]]
            if not got:
                continue
            f0 = np.asarray(got[0]["freq"])
            corr = [np.interp(f0, np.asarray(g["freq"]), np.asarray(g["corr"])) for g in got]
            out.setdefault(m, {})[kind] = {"freq": f0.tolist(),
                                           "corr": np.mean(corr, axis=0).tolist(),
                                           "n_fields": len(got)}
    return out


def _ms3im_scales(store: Store, plan: dict) -> int:
    """MS-SSIM scales MicroMS3IM used on the evaluated fields' XY slices."""
    from ..core.metrics import ms3im_scales

    shape = store.image(FieldKey.from_id(plan["fields"][0])).shape
    return ms3im_scales(shape[-2:])


def _finite_or_none(obj):
    """Replace NaN/inf floats by None, recursively (summary.json stays strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _save_slices(store: Store, plan: dict, path: Path) -> None:
    """XY and XZ slices of the first evaluated field (signal, target, predictions, labels);
    a 2D field has its plane only (no XZ)."""
    from ..core.dims import is_planar

    key = FieldKey.from_id(plan["fields"][0])
    otsu = store.stats(key, "target")["otsu"]
    target = store.read(key, "target")
    planar = is_planar(target.shape)
    fg = target >= otsu
    z = int(np.argmax(fg.sum(axis=(1, 2))))
    y = int(np.argmax(fg[z].sum(axis=1)))
    arrays: dict[str, np.ndarray] = {}

    def put(name, vol):
        arrays[f"{name}__xy"] = np.asarray(vol[z])
        if not planar:
            arrays[f"{name}__xz"] = np.asarray(vol[:, y, :])

    put("image__signal", store.read(key, "signal"))
    put(f"image__{TARGET}", target)
    for p in plan["predictions"]:
        put(f"image__{p}", store.read_named(key, f"prediction:{p}"))
    label_of = {TARGET: plan["target_labels"], **plan["labels"]}
    for model, name in label_of.items():
        if name and store.is_done("segment", key, name):
            put(f"labels__{model}", store.read_named(key, f"labels:{name}"))
    if plan["gt_labels"]:
        try:
            put("labels__gt", store.read_named(key, f"labels:{plan['gt_labels']}"))
        except StoreError:
            pass
    meta = {"field": key.id, "z": z, "y": y, "voxel_size_um": list(store.voxel_size(key)),
            "otsu": float(otsu), "planar": bool(planar)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)


def evaluate(store: str | Path | Store, predictions: Sequence[str], *, out: str | Path,
             gt_labels: str = "gt", labels: Mapping[str, str] | None = None,
             target_labels: str | None = None, profiles=None, split: str = "test",
             bin_delta: float = 5, sweep: Sequence[float] | None = None,
             cluster: str = "local", workers: int | None = None,
             cluster_config: str | None = None, overwrite: bool = False,
             report: bool = True) -> dict:
    """Evaluate predictions of a store; write the metrics table, summary and report.

    Parameters
    ----------
    store : path or Store
    predictions : sequence of str
        Prediction names (``predict --name``).
    out : path
        Report directory (created).
    gt_labels : str
        Ground-truth labels name (``labels:gt``).
    labels : mapping, optional
        Prediction name -> labels name; default ``seg-<NAME>`` when it exists.
    target_labels : str, optional
        Labels segmented from the real target; default ``seg-target`` when it exists.
    profiles : path or mapping, optional
        ``profile`` outputs: one directory holding ``target/`` and ``<NAME>/``, or a
        mapping ``{"target": DIR, NAME: DIR}``. Without it no feature metrics.
    split : str
        Fields to evaluate (``all`` for every field).
    bin_delta : float
        FRC/FSC ring width (the paper: 5).
    sweep : sequence of float, optional
        Post-thresholding intensities (raw target units) for the sweep, added to those
        found as ``<LABELS>-t<T>`` labels.
    cluster, workers, cluster_config
        Dask cluster (see :func:`spotlight_scale.cluster.open_client`).
    overwrite : bool
        Recompute fields whose cached results are still valid.
    report : bool
        Render ``report.md`` and its figures.

    Returns
    -------
    dict
        The summary written to ``summary.json``.
    """
    import pandas as pd

    from ..io.atomic import atomic_write_json
    from ..io.tables import write_table

    store = store if isinstance(store, Store) else Store(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = build_plan(store, predictions, gt_labels=gt_labels, labels=labels,
                      target_labels=target_labels, split=split, bin_delta=bin_delta,
                      sweep=sweep)
    prof_paths = resolve_profiles(profiles, plan["predictions"])
    plan_fp = _fingerprint({k: v for k, v in plan.items() if k != "fields"})

    results: dict[str, dict] = {}
    todo = []
    cache = out / "_fields"
    for fid in plan["fields"]:
        key = FieldKey.from_id(fid)
        path = cache / key.plate / key.well / f"{key.field}.json"
        fp = _fingerprint([plan_fp, _input_markers(store, key, plan)])
        if path.exists() and not overwrite:
            try:
                cached = json.loads(path.read_text())
                if cached.get("fingerprint") == fp:
                    results[fid] = cached["result"]
                    continue
            except (json.JSONDecodeError, KeyError):
                pass  # a damaged cache entry is recomputed
        todo.append((fid, path, fp))

    if todo:
        from .fieldrun import run_fields

        def keep(item, res):  # cache each field's result as it arrives
            fid, path, fp = item
            atomic_write_json(path, {"fingerprint": fp, "result": res})
            results[fid] = res

        run_fields(todo, lambda client, item: client.submit(
                       evaluate_field, str(store.root), item[0], plan, pure=False),
                   stage="evaluate", desc="evaluate", on_error="fail", cluster=cluster,
                   workers=workers, cluster_config=cluster_config, progress_stream=sys.stderr,
                   describe=lambda item: item[0], on_result=keep)

    ordered = [results[f] for f in plan["fields"]]
    df = pd.DataFrame([r for res in ordered for r in res["rows"]])

    # ---- feature level
    wells: list[dict] = []
    features: dict[str, list[str]] = {}
    if prof_paths:
        if TARGET not in prof_paths:
            raise ValueError("--profiles needs the target's profiles (target=DIR)")
        tprof = read_profiles(prof_paths[TARGET], plan["fields"])
        for name in plan["predictions"]:
            if name not in prof_paths:
                log.warning("no profiles for prediction %r: no feature distances", name)
                continue
            pprof = read_profiles(prof_paths[name], plan["fields"])
            matches = {res["field"]: res["matches"][name] for res in ordered
                       if name in res["matches"]}
            per_field, per_well, feats = feature_distances(tprof, pprof, matches)
            features[name] = feats
            for fid, (n, d) in per_field.items():
                k = FieldKey.from_id(fid)
                sel = (df["model"] == name) & np.logical_and.reduce(
                    [df[c] == v for c, v in key_columns(k).items()])
                df.loc[sel, "n_matched"] = n
                df.loc[sel, "cosine_nuclei_median"] = d
            wells += [{"model": name, **w} for w in per_well]

    for c in (SITE, "n_gt", "n_pred", "n_matched"):
        df[c] = df[c].astype(np.int64)
    df["planar"] = df["planar"].astype(bool)
    from ..io.platemap import annotate, stored

    df = annotate(df, stored(store))  # the screen's plate map columns, after the keys
    write_table(df, out / "metrics.parquet", "metrics", predictions=plan["predictions"],
                split=split, store=str(store.root))

    models = [TARGET, *plan["predictions"]]
    sweep_rows = [r for res in ordered for r in res["sweep"]]
    sweep_summary = []
    if sweep_rows:
        sdf = pd.DataFrame(sweep_rows)
        for (model, t), g in sdf.groupby(["model", "threshold"], sort=True):
            entry = {"model": model, "threshold": float(t), "n_fields": int(len(g))}
            for c in ("psnr", "ap50", "ap_mean"):
                v = g[c].to_numpy(np.float64)
                v = v[np.isfinite(v)]
                entry[c] = float(v.mean()) if v.size else None
            sweep_summary.append(entry)
    hist = {m: np.sum([res["hist"][m] for res in ordered], axis=0).tolist() for m in models}
    curves = _mean_curves(ordered, models)
    summary = {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
        "store": str(store.root), "split": split, "predictions": plan["predictions"],
        "fields": plan["fields"], "n_fields": len(plan["fields"]),
        "gt_labels": gt_labels, "labels": plan["labels"],
        "model_labels": plan["model_labels"], "target_labels": plan["target_labels"],
        "profiles": {k: str(v) for k, v in prof_paths.items()}, "features": features,
        "settings": {"bin_delta": plan["bin_delta"], "ap_thresholds": list(AP_THRESHOLDS),
                     "match_iou": MATCH_IOU, "frc_threshold": 1 / 7,
                     "ap_border": AP_BORDER_RULE, "ms3im_scales": _ms3im_scales(store, plan),
                     "resolution_metrics": list(RESOLUTION_METRICS),
                     # 2D fields (one z plane): FSC is not defined there (NaN)
                     "n_planar": int(df.loc[df["model"] == TARGET, "planar"].sum())},
        "frc_curves": curves,
        "models": _summarise(df, models),
        "wells": wells,
        "histograms": {"edges": plan["hist_edges"], "counts": hist,
                       "target_otsu_median": plan["otsu_median"]},
        "sweep": sweep_summary,
    }
    summary = _finite_or_none(summary)
    _save_slices(store, plan, out / "slices.npz")
    atomic_write_json(out / "summary.json", summary)
    log.info("evaluate: %d fields, report data in %s", len(plan["fields"]), out)
    if report:
        from ..report import write_report

        write_report(out)
    return summary
