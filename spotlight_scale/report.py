"""Render an evaluation directory as ``report.md`` with PNG figures (matplotlib, Agg).

Reads only what :func:`spotlight_scale.pipelines.evaluate.evaluate` wrote into the
report directory (``metrics.parquet``, ``summary.json``, ``slices.npz``), so a
report can be re-rendered without the store. Figures follow the paper
(Kalinin et al. 2025):

- ``histograms.png``: intensity histograms of the target and each prediction (Fig. 3a);
- ``metrics.png``: metric bars by model, mean +- s.d. over fields (Fig. 2b,d,f);
- ``slices.png``: XY and XZ slices of signal / target / predictions with the
  outlines of each image's segmentation (Fig. 2a,c);
- ``sweep.png``: AP and PSNR of predictions post-thresholded at a range of
  intensities (Fig. 3b);
- ``frc.png``: Fourier ring correlation curves (mean over fields) of the target and
  each prediction, single-image, on the foreground, and prediction vs target, with the
  1/7 threshold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FIGURES = ("histograms.png", "metrics.png", "slices.png", "sweep.png", "frc.png")
NOT_RESOLVED = "not resolved"

#: metric -> (axis label, better direction)
METRIC_LABELS = {
    "psnr": ("PSNR (dB)", "higher"),
    "psnr_fg": ("PSNR, foreground (dB)", "higher"),
    "ssim": ("SSIM", "higher"),
    "ssim_fg": ("SSIM, foreground", "higher"),
    "micro_ms3im": ("MicroMS3IM", "higher"),
    "micro_ms3im_fg": ("MicroMS3IM, foreground", "higher"),
    "frc_um": ("FRC resolution (um)", "lower"),
    "frc_fg_um": ("FRC resolution, foreground (um)", "lower"),
    "fsc_um": ("FSC resolution, XY (um)", "lower"),
    "fsc_z_um": ("FSC resolution, Z (um)", "lower"),
    "frc_vs_target_um": ("FRC vs target (um)", "lower"),
    "bg_below_otsu": ("Background below Otsu", "higher"),
    "bg_spread": ("Background spread (s.d. / fg mean)", "lower"),
    "ap50": ("AP @ IoU 0.5", "higher"),
    "ap_mean": ("AP, mean IoU 0.5-0.95", "higher"),
    "ap50_model": ("AP @ IoU 0.5, model threshold", "higher"),
    "ap_mean_model": ("AP, mean IoU 0.5-0.95, model threshold", "higher"),
    "cosine_nuclei_median": ("Cosine distance, nuclei", "lower"),
}
TABLE_METRICS = ("psnr", "psnr_fg", "ssim", "ssim_fg", "micro_ms3im", "micro_ms3im_fg",
                 "frc_um", "frc_fg_um", "fsc_um", "fsc_z_um", "frc_vs_target_um", "bg_below_otsu",
                 "bg_spread", "ap50", "ap_mean", "ap50_model", "ap_mean_model",
                 "cosine_nuclei_median")
#: Resolutions that need a volume: not defined on a 2D (single-plane) field.
VOLUME_ONLY = ("fsc_um", "fsc_z_um")
NOT_DEFINED_2D = "n/a (2D)"
RESOLUTIONS = ("frc_um", "frc_fg_um", "fsc_um", "fsc_z_um", "frc_vs_target_um")


def _colors(models):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    out = {}
    i = 0
    for m in models:
        if m == "target":
            out[m] = "0.25"
        else:
            out[m] = cmap(i % 10)
            i += 1
    return out


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "figure.dpi": 110})
    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, bbox_inches="tight")
    tmp.replace(path)


# --------------------------------------------------------------------------- figures
def plot_histograms(summary: dict, path: Path) -> None:
    """Intensity histograms of the target and each prediction (counts, log scale)."""
    plt = _plt()
    h = summary["histograms"]
    edges = np.asarray(h["edges"])
    centres = 0.5 * (edges[1:] + edges[:-1])
    models = ["target", *summary["predictions"]]
    colors = _colors(models)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for m in models:
        counts = np.asarray(h["counts"][m], dtype=float)
        frac = counts / max(counts.sum(), 1)
        ax.step(centres, np.where(frac > 0, frac, np.nan), where="mid", color=colors[m],
                lw=2.2 if m == "target" else 1.6, label=m)
    if h.get("target_otsu_median") is not None:
        ax.axvline(h["target_otsu_median"], color="0.5", ls="--", lw=1,
                   label="target Otsu (median)")
    ax.set_yscale("log")
    ax.set_xlabel("intensity (target units)")
    ax.set_ylabel("fraction of voxels")
    ax.set_title(f"Intensity distributions ({summary['n_fields']} {summary['split']} fields)")
    ax.legend(frameon=False, fontsize=9)
    _save(fig, path)
    plt.close(fig)


def plot_metric_bars(df, summary: dict, path: Path) -> None:
    """One panel per metric; bars by model, mean +- s.d. over fields, fields as dots."""
    plt = _plt()
    models = ["target", *summary["predictions"]]
    colors = _colors(models)
    metrics = [m for m in TABLE_METRICS
               if m in df.columns and np.isfinite(df[m].to_numpy(np.float64)).any()]
    ncol = 4
    nrow = max(1, -(-len(metrics) // ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.7 * nrow), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics):
        label, better = METRIC_LABELS[metric]
        xs, names = [], []
        for i, m in enumerate(models):
            v = df.loc[df["model"] == m, metric].to_numpy(np.float64)
            v = v[np.isfinite(v)]
            if not v.size:
                continue
            x = len(names)
            ax.bar(x, v.mean(), yerr=v.std() if v.size > 1 else None, color=colors[m],
                   alpha=0.85, capsize=3, width=0.7)
            jitter = np.linspace(-0.15, 0.15, v.size) if v.size > 1 else np.zeros(1)
            ax.plot(x + jitter, v, "o", ms=3, color="k", alpha=0.6)
            xs.append(x)
            names.append(m)
        ax.set_xticks(xs, names, rotation=20, ha="right")
        ax.set_title(f"{label}\n({better} is better)", fontsize=9.5)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Metrics by model (mean +- s.d. over fields; dots: fields)", y=1.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _outline(labels: np.ndarray) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    return find_boundaries(labels, mode="inner")


def plot_slices(slices: dict, summary: dict, path: Path) -> None:
    """XY and XZ slices of signal, target and predictions, each with its labels' outlines."""
    plt = _plt()
    meta = json.loads(str(slices["meta"]))
    vz, vy, vx = meta["voxel_size_um"]
    images = ["signal", "target", *summary["predictions"]]
    outline_of = {"signal": "gt", "target": "target", **{p: p for p in summary["predictions"]}}
    if "labels__target__xy" not in slices:
        outline_of["target"] = "gt"
    colors = _colors(["target", *summary["predictions"]])
    colors["gt"] = "yellow"
    xy0 = slices["image__target__xy"]
    planes = ("xy", "xz") if "image__target__xz" in slices else ("xy",)  # 2D: the plane only
    ratio = ((slices["image__target__xz"].shape[0] * vz) / (xy0.shape[0] * vy)
             if len(planes) == 2 else 0.0)
    fig, axes = plt.subplots(len(planes), len(images),
                             figsize=(2.9 * len(images), 2.9 * (1 + ratio)),
                             gridspec_kw={"height_ratios": [1, max(ratio, 0.15)][:len(planes)]},
                             squeeze=False)
    lo_t, hi_t = np.percentile(xy0, [0.5, 99.8])
    for col, name in enumerate(images):
        for row, plane in enumerate(planes):
            ax = axes[row, col]
            img = slices[f"image__{name}__{plane}"].astype(np.float64)
            if name == "signal":
                lo, hi = np.percentile(img, [0.5, 99.5])
            else:
                lo, hi = lo_t, hi_t  # target and predictions on one intensity scale
            aspect = 1.0 if plane == "xy" else vz / vx
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            lab_key = f"labels__{outline_of[name]}__{plane}"
            if lab_key in slices:
                edge = _outline(slices[lab_key])
                color = colors.get(outline_of[name], "yellow")
                overlay = np.zeros((*edge.shape, 4))
                overlay[edge] = plt.matplotlib.colors.to_rgba(color)
                ax.imshow(overlay, aspect=aspect, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                src = outline_of[name] if lab_key in slices else "none"
                ax.set_title(f"{name}\noutlines: {src}", fontsize=9.5)
            if col == 0:
                ax.set_ylabel(f"{plane.upper()} ({'z' if plane == 'xy' else 'y'}="
                              f"{meta['z'] if plane == 'xy' else meta['y']})")
    fig.suptitle(f"Field {meta['field']}", y=1.0)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_sweep(summary: dict, path: Path) -> None:
    """AP and PSNR of post-thresholded predictions against the threshold."""
    plt = _plt()
    rows = summary.get("sweep") or []
    models = summary["predictions"]
    colors = _colors(["target", *models])
    fig, (ax_ap, ax_psnr) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for m in models:
        sel = [r for r in rows if r["model"] == m]
        if not sel:
            continue
        t = np.array([r["threshold"] for r in sel])
        ap = np.array([np.nan if r["ap50"] is None else r["ap50"] for r in sel])
        ps = np.array([np.nan if r["psnr"] is None else r["psnr"] for r in sel])
        ax_ap.plot(t, ap, "o-", color=colors[m], label=m)
        ax_psnr.plot(t, ps, "o-", color=colors[m], label=m)
        base = summary["models"][m]
        if base["ap50"]["mean"] is not None:
            ax_ap.axhline(base["ap50"]["mean"], color=colors[m], ls=":", lw=1)
        if base["psnr"]["mean"] is not None:
            ax_psnr.axhline(base["psnr"]["mean"], color=colors[m], ls=":", lw=1)
    tgt = summary["models"].get("target", {}).get("ap50", {})
    if tgt.get("mean") is not None:
        ax_ap.axhline(tgt["mean"], color=colors["target"], ls="--", lw=1, label="target labels")
    if not any(r.get("ap50") is not None for r in rows):
        ax_ap.text(0.5, 0.5, "no re-segmented labels\n(<LABELS>-t<T>) found",
                   ha="center", va="center", transform=ax_ap.transAxes, color="0.4")
    ax_ap.set_title("AP @ IoU 0.5 after post-thresholding")
    ax_ap.set_xlabel("threshold (intensity; below -> 0)")
    ax_ap.set_ylabel("AP @ 0.5")
    ax_psnr.set_title("PSNR after post-thresholding")
    ax_psnr.set_xlabel("threshold (intensity; below -> 0)")
    ax_psnr.set_ylabel("PSNR (dB)")
    for ax in (ax_ap, ax_psnr):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8.5)
    fig.text(0.5, -0.04, "dotted: the unthresholded prediction", ha="center", fontsize=8.5)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_frc(summary: dict, path: Path) -> None:
    """FRC curves (mean over fields): single-image, foreground, prediction vs target."""
    plt = _plt()
    curves = summary.get("frc_curves") or {}
    models = ["target", *summary["predictions"]]
    colors = _colors(models)
    panels = (("frc", "single-image FRC"), ("frc_fg", "single-image FRC, foreground"),
              ("vs_target", "FRC, prediction vs target"))
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8), sharey=True)
    for ax, (kind, title) in zip(axes, panels):
        drawn = False
        for m in models:
            c = curves.get(m, {}).get(kind)
            if not c:
                continue
            ax.plot(c["freq"], c["corr"], color=colors[m], lw=2.0 if m == "target" else 1.6,
                    label=m)
            drawn = True
        ax.axhline(1 / 7, color="0.4", ls="--", lw=1, label="1/7")
        if not drawn:
            ax.text(0.5, 0.5, "no curve", ha="center", va="center", transform=ax.transAxes,
                    color="0.4")
        ax.set_title(title)
        ax.set_xlabel("spatial frequency (cycles/um)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=8.5)
    axes[0].set_ylabel("correlation")
    fig.text(0.5, -0.05, "XY slice with the most target foreground, mean over fields; "
             "a curve that stays above 1/7 is not resolved at this sampling", ha="center",
             fontsize=8.5)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- markdown
def _fmt(stat: dict, digits: int = 3, resolution: bool = False) -> str:
    if stat is None or stat.get("mean") is None:
        return NOT_RESOLVED if resolution and stat and stat.get("n_nan") else "-"
    text = (f"{stat['mean']:.{digits}f} +- {stat['std']:.{digits}f}" if stat["n"] > 1
            else f"{stat['mean']:.{digits}f}")
    if resolution and stat.get("n_nan"):
        text += f" ({stat['n_nan']} field(s) {NOT_RESOLVED})"
    return text


def _is_resolution(model: str, metric: str) -> bool:
    """A resolution measured on this row (the target has no FRC against itself)."""
    return metric in RESOLUTIONS and not (model == "target" and metric == "frc_vs_target_um")


def summary_table(summary: dict) -> str:
    """Markdown table: one row per model, mean +- s.d. over fields of each metric.

    A resolution that no field could measure reads "not resolved"; one that some
    fields could not measure says how many.
    """
    models = ["target", *summary["predictions"]]
    all_2d = _n_planar(summary) == summary.get("n_fields")

    def measured(mod, m):  # the metric applies to this row (a value, or "not resolved")
        stat = summary["models"][mod].get(m) or {}
        return bool(stat.get("n")) or (_is_resolution(mod, m) and bool(stat.get("n_nan")))

    def cell(mod, m):
        if all_2d and m in VOLUME_ONLY:  # a single plane has no shells: not "not resolved"
            return NOT_DEFINED_2D
        return _fmt(summary["models"][mod].get(m), 2 if m.startswith("psnr") else 3,
                    resolution=_is_resolution(mod, m))

    metrics = [m for m in TABLE_METRICS if any(measured(mod, m) for mod in models)]
    head = "| model | " + " | ".join(METRIC_LABELS[m][0] for m in metrics) + " |"
    sep = "|---|" + "---|" * len(metrics)
    lines = [head, sep]
    for mod in models:
        cells = [cell(mod, m) for m in metrics]
        lines.append(f"| {mod} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _n_planar(summary: dict) -> int:
    return int((summary.get("settings") or {}).get("n_planar") or 0)


def _dims_note(summary: dict) -> str:
    """What the report says about 2D fields (FSC not defined on a plane)."""
    n2, n = _n_planar(summary), summary.get("n_fields", 0)
    if not n2:
        return ""
    which = "All fields are" if n2 == n else f"{n2} of {n} fields are"
    return (f"{which} 2D (a single z plane): SSIM uses 2D windows, MicroMS3IM and FRC are "
            "computed on the plane, and the FSC (a Fourier *shell* correlation, which needs a "
            f"volume) is not defined: NaN, shown as \"{NOT_DEFINED_2D}\""
            + ("" if n2 == n else " when every field is 2D, else counted among the fields "
               f"\"{NOT_RESOLVED}\"") + ". ")


def _scales(summary: dict) -> str:
    n = summary["settings"].get("ms3im_scales")
    if n is None:
        return "the MS-SSIM scales that fit the slices"
    return (f"{n} MS-SSIM scale(s)" + ("" if n == 5 else
                                       " (the standard 5 need XY slices of 176 px or more; "
                                       "the first weights, renormalised)"))


def _model_labels(summary: dict) -> str:
    got = summary.get("model_labels") or {}
    return ", ".join(f"`{p}` -> `{n}`" for p, n in got.items()) or "none segmented"


def write_report(report_dir: str | Path) -> Path:
    """Render ``report.md`` and the figures of an evaluation directory; return its path."""
    from .io.tables import read_table

    d = Path(report_dir)
    summary = json.loads((d / "summary.json").read_text())
    if summary.get("format") != "spotlight-scale-evaluation":
        raise ValueError(f"{d / 'summary.json'}: not a spotlight-scale evaluation summary")
    df = read_table(d / "metrics.parquet", "metrics")
    with np.load(d / "slices.npz") as z:
        slices = {k: z[k] for k in z.files}
    plot_histograms(summary, d / "histograms.png")
    plot_metric_bars(df, summary, d / "metrics.png")
    plot_slices(slices, summary, d / "slices.png")
    plot_sweep(summary, d / "sweep.png")
    plot_frc(summary, d / "frc.png")

    preds = ", ".join(f"`{p}`" for p in summary["predictions"])
    labels = ", ".join(f"`{p}` -> `{n}`" for p, n in summary["labels"].items()) or "none"
    lines = [
        "# Virtual staining evaluation",
        "",
        f"Store `{summary['store']}`, split `{summary['split']}`: {summary['n_fields']} fields; "
        f"predictions {preds}.",
        f"Ground truth `labels:{summary['gt_labels']}`; target labels "
        f"`{summary['target_labels'] or 'none'}`; prediction labels: {labels}.",
        "",
        "## Summary (mean +- s.d. over fields)",
        "",
        summary_table(summary),
        "",
        "PSNR and SSIM use the target's intensity range (predictions are rescaled into it); "
        "the foreground is target >= Otsu; background below Otsu is the fraction of the "
        "target's background voxels that the prediction puts below the target's Otsu "
        "threshold (what the Spotlight loss aims for); background spread is the standard "
        "deviation of the prediction over the target's background divided by the target's "
        "foreground mean (a flat background scores 0 at any level). "
        + _dims_note(summary) +
        "Foreground SSIM averages only the SSIM windows "
        "wholly inside the foreground (cubic's definition). MicroMS3IM (cubic/microssim) "
        f"uses {_scales(summary)} on these "
        "slices; its foreground value is the same metric on the foreground's bounding box "
        "(neither library takes a mask). FRC (XY slice with most foreground; foreground: that "
        "slice weighted by the soft-edged foreground mask) and FSC (volume, XY and Z) "
        "resolutions are single-image, computed with cubic as miplib does (checkerboard "
        f"split, calibration, bin_delta {summary['settings']['bin_delta']:g}, threshold 1/7; "
        "lower is sharper). A curve that never falls below 1/7 has no measurable resolution: "
        f"\"{NOT_RESOLVED}\" (at this sampling), never a number; noise-free predictions "
        "usually are. FRC vs target is the two-image FRC of prediction and target on that "
        "slice. AP: IoU-matched against the ground truth, TP / (TP + FP + FN); "
        f"{summary['settings'].get('ap_border', 'border objects as segmented')}. AP is "
        "reported both ways where the labels exist: Otsu recomputed on the prediction (the "
        "recipe, labels `seg-<NAME>`), and at the model's own foreground threshold "
        "(`segment --foreground model`, labels `<LABELS>-model`; model threshold columns: "
        f"{_model_labels(summary)}). The `target` "
        "row scores the real target's own segmentation and resolution.",
        "",
    ]
    if summary.get("wells"):
        lines += ["## Feature profiles: cosine distance of well medians (target vs prediction)",
                  "", "| model | plate | well | nuclei (target) | nuclei (prediction) | "
                  "cosine distance |", "|---|---|---|---|---|---|"]
        for w in summary["wells"]:
            dist = "-" if w["cosine_distance"] is None or not np.isfinite(w["cosine_distance"]) \
                else f"{w['cosine_distance']:.4f}"
            lines.append(f"| {w['model']} | {w['plate']} | {w['well']} | {w['n_target']} | "
                         f"{w['n_pred']} | {dist} |")
        lines.append("")
    lines += [
        "## Figures",
        "",
        "Metric bars by model (Fig. 2b,d,f):", "", "![metrics](metrics.png)", "",
        "Slices with segmentation outlines (Fig. 2a,c):", "", "![slices](slices.png)", "",
        "Intensity histograms (Fig. 3a):", "", "![histograms](histograms.png)", "",
        "Post-thresholding sweep (Fig. 3b):", "", "![sweep](sweep.png)", "",
        "Fourier ring correlation curves:", "", "![frc](frc.png)", "",
        "Per-field values: `metrics.parquet` (table `metrics`); aggregates: `summary.json`.",
        "",
    ]
    out = d / "report.md"
    tmp = d / ".report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    log.info("report written to %s", out)
    return out
