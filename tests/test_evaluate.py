"""The evaluate pipeline end to end on a small store with fabricated predictions and labels."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from spotlight_scale.core import metrics as M
from spotlight_scale.core.segment import clear_xy_border

matching = pytest.importorskip("spotlight_scale.core.matching",
                               reason="segmentation matching not available yet")

FIELDS = (("P1", "B03", 0, "test"), ("P1", "B03", 1, "test"), ("P1", "C04", 0, "test"),
          ("P1", "C04", 1, "train"))
THRESH = 300.0


def add_prediction(store, key, name, volume):
    import zarr

    from spotlight_scale.io.omezarr import write_image_czyx

    plate = zarr.open_group(str(store.plate_path(key.plate, prediction=name)), mode="a",
                            zarr_format=store.zarr_format)
    group = plate.require_group(key.row).require_group(key.column).require_group(str(key.field))
    write_image_czyx(group, [volume[None].astype(np.float32)], voxel_size=store.voxel_size(key),
                     channel_names=["prediction"], chunks_zyx=(8, 32, 32),
                     fmt=store.ngff_format())
    store.mark_done("predict", key, {"fingerprint": "test"}, name=name)


def add_labels(store, key, name, labels):
    from spotlight_scale.io.omezarr import write_labels_zyx

    write_labels_zyx(store.open_field(key, mode="a"), name, [labels.astype(np.uint32)],
                     voxel_size=store.voxel_size(key), chunks_zyx=(8, 32, 32),
                     fmt=store.ngff_format())
    store.mark_done("segment", key, {"fingerprint": "test"}, name=name)


def drop_label(labels, which):
    out = labels.copy()
    out[out == which] = 0
    return out


def profiles_of(store, keys, image_of, labels_name):
    """A tiny stand-in for `profile`: volume, mean intensity and location per nucleus
    (the same column names for every source, as the profile stage writes them)."""
    rows = []
    for key in keys:
        lab = store.read_named(key, f"labels:{labels_name}")
        img = image_of(key)
        ids = np.unique(lab[lab > 0])
        vol = ndi.sum_labels(np.ones_like(lab), lab, ids)
        mean = ndi.mean(img, lab, ids)
        mx = ndi.maximum(img, lab, ids)
        cx = [c[2] for c in ndi.center_of_mass(np.ones_like(lab), lab, ids)]
        for i, v, m, x, c in zip(ids, vol, mean, mx, cx):
            rows.append({"Metadata_Plate": key.plate, "Metadata_Well": key.well,
                         "Metadata_Site": key.field, "Metadata_ObjectNumber": int(i),
                         "Nuclei_AreaShape_Volume": float(v),
                         "Nuclei_Intensity_MeanIntensity": float(m),
                         "Nuclei_Intensity_MaxIntensity": float(x),
                         "Nuclei_Location_Center_X": float(c),
                         # raw moments and tensor entries: orientation and position, not form
                         "Nuclei_AreaShape_CentralMoment_0_1_2": float(c * v),
                         "Nuclei_AreaShape_InertiaTensor_0_1": float(c - v)})
    return pd.DataFrame(rows)


def write_profiles(df, path, image):
    """Write the dataset the way the profile stage lays it out (versioned files, the
    measured image in Metadata_Source and the file metadata)."""
    from spotlight_scale.io.profiles import part_path
    from spotlight_scale.io.store import FieldKey
    from spotlight_scale.io.tables import write_table

    df = df.copy()
    df.insert(4, "Metadata_Source", image)
    for (plate, well, site), part in df.groupby(["Metadata_Plate", "Metadata_Well",
                                                 "Metadata_Site"]):
        write_table(part.reset_index(drop=True), part_path(path, FieldKey(plate, well, site)),
                    "nuclei", image=image, stain="DNA")


@pytest.fixture
def eval_store(make_store, tmp_path):
    store = make_store(fields=FIELDS, shape=(16, 48, 48), n_blobs=6, seed=3)
    rng = np.random.default_rng(0)
    test_keys = store.fields("test")
    for key in store.fields():
        target = store.read(key, "target").astype(np.float64)
        gt = store.read_named(key, "labels:gt")
        ids = np.unique(gt[gt > 0])
        # "good": target + noise; "blurry": a smoothed, dimmer target (F-net-like haze)
        add_prediction(store, key, "good", target + rng.normal(0, 15, target.shape))
        add_prediction(store, key, "blurry", ndi.gaussian_filter(target, 2.0) * 0.9 + 20)
        add_labels(store, key, "seg-target", gt)
        add_labels(store, key, "seg-good", drop_label(gt, ids[0]))
        add_labels(store, key, "seg-blurry", drop_label(drop_label(gt, ids[0]), ids[1]))
        add_labels(store, key, f"seg-blurry-t{THRESH:g}", drop_label(gt, ids[1]))
    prof = tmp_path / "profiles"
    read = {"target": lambda k: store.read(k, "target"),
            "good": lambda k: store.read_named(k, "prediction:good"),
            "blurry": lambda k: store.read_named(k, "prediction:blurry")}
    labels = {"target": "seg-target", "good": "seg-good", "blurry": "seg-blurry"}
    frames = {m: profiles_of(store, test_keys, read[m], labels[m]) for m in read}
    for m, df in frames.items():
        write_profiles(df, prof / m, m if m == "target" else f"prediction:{m}")
    return store, prof, frames


def test_evaluate_writes_every_report_file_with_consistent_numbers(eval_store, tmp_path):
    from spotlight_scale.io.tables import read_table
    from spotlight_scale.pipelines.evaluate import AP_THRESHOLDS, evaluate

    store, prof, frames = eval_store
    out = tmp_path / "report"
    summary = evaluate(store, ["good", "blurry"], out=out, profiles=prof, workers=1)

    for name in ("report.md", "histograms.png", "metrics.png", "slices.png", "sweep.png",
                 "frc.png", "metrics.parquet", "summary.json", "slices.npz"):
        assert (out / name).stat().st_size > 0, name
    df = read_table(out / "metrics.parquet", "metrics")
    test_keys = store.fields("test")
    assert len(df) == len(test_keys) * 3
    assert set(df["model"]) == {"target", "good", "blurry"}
    def no_nan(const):
        raise AssertionError(f"summary.json is not strict JSON: {const}")

    assert summary == json.loads((out / "summary.json").read_text(), parse_constant=no_nan)

    for key in test_keys:
        target = store.read(key, "target").astype(np.float64)
        fg = target >= store.stats(key, "target")["otsu"]
        gt = store.read_named(key, "labels:gt")
        sel = ((df["Metadata_Plate"] == key.plate) & (df["Metadata_Well"] == key.well)
               & (df["Metadata_Site"] == key.field))
        for name in ("good", "blurry"):
            pred = store.read_named(key, f"prediction:{name}").astype(np.float64)
            row = df[sel & (df["model"] == name)].iloc[0]
            assert row["psnr"] == pytest.approx(M.psnr(target, pred))
            assert row["psnr_fg"] == pytest.approx(M.psnr_foreground(target, pred, fg))
            assert row["ssim"] == pytest.approx(M.ssim(target, pred))
            assert row["ssim_fg"] == pytest.approx(M.ssim_foreground(target, pred, fg),
                                                   nan_ok=True)
            assert row["micro_ms3im"] == pytest.approx(M.micro_ms3im(target, pred))
            assert row["micro_ms3im_fg"] == pytest.approx(
                M.micro_ms3im_foreground(target, pred, fg), nan_ok=True)
            vz, vy, vx = store.voxel_size(key)
            z = int(np.argmax(fg.sum(axis=(1, 2))))
            assert row["frc_um"] == pytest.approx(or_nan(M.frc_resolution, pred[z], spacing=(vy, vx)),
                                                  nan_ok=True)
            assert row["frc_fg_um"] == pytest.approx(
                or_nan(M.frc_resolution, pred[z] * M.soft_mask(fg[z]), spacing=(vy, vx)), nan_ok=True)
            assert row["frc_vs_target_um"] == pytest.approx(
                or_nan(M.frc_resolution, pred[z], target[z], spacing=(vy, vx)), nan_ok=True)
            lab = store.read_named(key, f"labels:seg-{name}")
            # border-cut objects dropped from both sides alike
            ap = np.asarray(_ap(clear_xy_border(gt), clear_xy_border(lab), AP_THRESHOLDS))
            assert row["ap50"] == pytest.approx(ap[0])
            assert row["ap_mean"] == pytest.approx(ap.mean())
            assert row["n_pred"] == len(np.unique(clear_xy_border(lab))) - 1
            assert row["n_gt"] == len(np.unique(clear_xy_border(gt))) - 1
        trow = df[sel & (df["model"] == "target")].iloc[0]
        assert np.isnan(trow["psnr"])
        assert trow["ap50"] == pytest.approx(1.0)  # seg-target is the ground truth itself

    # the fabricated models are ordered the way they were built
    good = summary["models"]["good"]
    blurry = summary["models"]["blurry"]
    assert good["psnr"]["mean"] > blurry["psnr"]["mean"]
    assert good["ap50"]["mean"] > blurry["ap50"]["mean"]
    # summary means are the table's means
    for model in ("target", "good", "blurry"):
        for metric in ("psnr", "ssim", "ap50", "frc_um", "cosine_nuclei_median"):
            v = df.loc[df["model"] == model, metric].to_numpy(np.float64)
            v = v[np.isfinite(v)]
            got = summary["models"][model][metric]["mean"]
            assert (got is None and v.size == 0) or got == pytest.approx(v.mean())

    # report table shows the summary numbers
    md = (out / "report.md").read_text()
    for name in ("good", "blurry"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {name} |"))
        s = summary["models"][name]
        assert f"{s['psnr']['mean']:.2f} +- {s['psnr']['std']:.2f}" in line
        assert f"{s['ap50']['mean']:.3f}" in line
    for fig in ("metrics.png", "slices.png", "histograms.png", "sweep.png", "frc.png"):
        assert f"]({fig})" in md
    # the FRC curves behind frc.png, with a frequency axis in cycles/um up to Nyquist; the
    # 48-px slices are too small for a single-image curve at bin_delta 5 (3 rings): none
    vy = store.voxel_size(test_keys[0])[1]
    for model in ("good", "blurry"):
        c = summary["frc_curves"][model]["vs_target"]
        assert len(c["freq"]) == len(c["corr"]) >= 4 and np.all(np.diff(c["freq"]) > 0)
        assert c["freq"][-1] == pytest.approx(1 / (2 * vy), rel=0.15)
        assert "frc" not in summary["frc_curves"][model]
    assert "border" in summary["settings"]["ap_border"]
    # a resolution no field could measure reads "not resolved", never a number
    for model in ("target", "good", "blurry"):
        for metric in ("frc_um", "fsc_um"):
            st = summary["models"][model][metric]
            if st["n"] == 0:
                line = next(ln for ln in md.splitlines() if ln.startswith(f"| {model} |"))
                assert "not resolved" in line

    # feature level by hand: matched nuclei (IoU) -> min-max scaled features -> cosine
    feats = ["Nuclei_AreaShape_Volume", "Nuclei_Intensity_MaxIntensity",
             "Nuclei_Intensity_MeanIntensity"]
    # location, moment and tensor-entry features left out
    assert sorted(summary["features"]["good"]) == feats
    t = frames["target"].set_index(["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                    "Metadata_ObjectNumber"])
    p = frames["good"].set_index(t.index.names)
    lo, hi = t[feats].min().to_numpy(), t[feats].max().to_numpy()
    key = test_keys[0]
    ia, ib = _match(store.read_named(key, "labels:seg-target"),
                    store.read_named(key, "labels:seg-good"))
    d = [M.cosine_distance((t.loc[(key.plate, key.well, key.field, a), feats].to_numpy() - lo)
                           / (hi - lo),
                           (p.loc[(key.plate, key.well, key.field, b), feats].to_numpy() - lo)
                           / (hi - lo)) for a, b in zip(ia, ib)]
    row = df[(df["model"] == "good") & (df["Metadata_Plate"] == key.plate)
             & (df["Metadata_Well"] == key.well) & (df["Metadata_Site"] == key.field)].iloc[0]
    assert row["n_matched"] == len(ia) > 0
    assert row["cosine_nuclei_median"] == pytest.approx(np.median(d))
    wells = {(w["model"], w["well"]): w for w in summary["wells"]}
    assert set(wells) == {(m, w) for m in ("good", "blurry") for w in ("B03", "C04")}
    tw = (t.xs("B03", level="Metadata_Well")[feats].to_numpy() - lo) / (hi - lo)
    pw = (p.xs("B03", level="Metadata_Well")[feats].to_numpy() - lo) / (hi - lo)
    assert wells[("good", "B03")]["cosine_distance"] == pytest.approx(
        M.cosine_distance(np.median(tw, axis=0), np.median(pw, axis=0)))

    # sweep: PSNR of the thresholded prediction; AP from the <labels>-t<T> labels
    sweep = {(r["model"], r["threshold"]): r for r in summary["sweep"]}
    assert set(sweep) == {("blurry", THRESH), ("good", THRESH)}
    assert sweep[("good", THRESH)]["ap50"] is None  # no seg-good-t300 labels: PSNR only
    psnrs, aps = [], []
    for key in test_keys:
        target = store.read(key, "target").astype(np.float64)
        pred = store.read_named(key, "prediction:blurry")
        psnrs.append(M.psnr(target, M.threshold_below(pred, THRESH)))
        aps.append(_ap(clear_xy_border(store.read_named(key, "labels:gt")),
                       clear_xy_border(store.read_named(key, f"labels:seg-blurry-t{THRESH:g}")),
                       AP_THRESHOLDS)[0])
    assert sweep[("blurry", THRESH)]["psnr"] == pytest.approx(np.mean(psnrs))
    assert sweep[("blurry", THRESH)]["ap50"] == pytest.approx(np.mean(aps))

    # histograms: every voxel of the evaluated fields counted once per image
    n_vox = sum(np.prod(store.read(k, "target").shape) for k in test_keys)
    for m, counts in summary["histograms"]["counts"].items():
        assert sum(counts) == n_vox, m


def test_evaluate_errors_name_what_is_missing(eval_store, tmp_path):
    from spotlight_scale.io.store import StoreError
    from spotlight_scale.pipelines.evaluate import evaluate

    store, _, _ = eval_store
    with pytest.raises(StoreError, match="no prediction named \\['nope'\\]"):
        evaluate(store, ["nope"], out=tmp_path / "x")
    with pytest.raises(StoreError, match="no labels named 'seg-x'"):
        evaluate(store, ["good"], labels={"good": "seg-x"}, out=tmp_path / "x")
    with pytest.raises(StoreError, match="no ingested fields in split 'holdout'"):
        evaluate(store, ["good"], split="holdout", out=tmp_path / "x")


def test_evaluate_cli_then_cache_then_overwrite(eval_store, tmp_path, monkeypatch):
    """One real CLI run; a re-run reuses every cached field; --overwrite recomputes."""
    from click.testing import CliRunner

    from spotlight_scale.cli import cli
    from spotlight_scale.pipelines import evaluate as ev

    store, prof, _ = eval_store
    out = tmp_path / "cli-report"
    res = CliRunner().invoke(cli, ["evaluate", str(store.root), "--prediction", "good",
                                   "--labels", "good=seg-good",
                                   "--profiles", f"target={prof / 'target'}",
                                   "--profiles", f"good={prof / 'good'}", "--sweep", "250,400",
                                   "--out", str(out), "--workers", "1", "--no-report"])
    assert res.exit_code == 0, res.output
    assert "summary.json" in res.output and not (out / "report.md").exists()
    first = json.loads((out / "summary.json").read_text())
    assert sorted(r["threshold"] for r in first["sweep"]) == [250.0, 400.0]
    assert re.search(r"^good: psnr [0-9.]+, ssim [0-9.]+, ap50 [0-9.]+$", res.output, re.M)
    assert len(list((out / "_fields").rglob("*.json"))) == len(store.fields("test"))

    def boom(*a, **k):
        raise AssertionError("a cached field was recomputed")

    monkeypatch.setattr(ev, "evaluate_field", boom)
    kwargs = dict(labels={"good": "seg-good"}, profiles={"target": prof / "target",
                                                         "good": prof / "good"},
                  sweep=[250, 400], out=out, workers=1, report=False)
    # the store's plate map (ingest --platemap) reaches the metrics table, no field redone
    from spotlight_scale.io import platemap as PM
    from spotlight_scale.io.tables import read_table

    pm = tmp_path / "pm.csv"
    pm.write_text("well,Treatment\nB03,DMSO\nC04,drug\n")
    PM.save(store, PM.load(pm, store.fields()))
    second = ev.evaluate(store, ["good"], **kwargs)
    assert second["models"] == first["models"] and second["wells"] == first["wells"]
    metrics = read_table(out / "metrics.parquet", "metrics")
    assert sorted(metrics.columns[:4]) == ["Metadata_Plate", "Metadata_Site",
                                           "Metadata_Treatment", "Metadata_Well"]
    assert (metrics["Metadata_Treatment"]
            == metrics["Metadata_Well"].map({"B03": "DMSO", "C04": "drug"})).all()
    with pytest.raises(Exception, match="recomputed"):
        ev.evaluate(store, ["good"], overwrite=True, **kwargs)
    # a changed input (the prediction's marker) invalidates only that field's cache
    key = store.fields("test")[0]
    store.mark_done("predict", key, {"fingerprint": "changed"}, name="good")
    with pytest.raises(Exception, match="recomputed"):
        ev.evaluate(store, ["good"], **kwargs)

    bad = CliRunner().invoke(cli, ["evaluate", str(store.root), "--prediction", "nope",
                                   "--out", str(out)])
    assert bad.exit_code != 0 and "no prediction named" in bad.output


def or_nan(fn, *args, **kwargs):
    """``fn(...)``, or NaN where the image is too small for it (as evaluate records)."""
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return float("nan")


# independent of the pipeline: direct calls into the matching module
def _ap(gt, pred, thresholds):
    res = matching.average_precision(gt, pred, thresholds)
    if isinstance(res, dict):
        res = res["ap"]
    return np.asarray(res, dtype=np.float64)


def _match(a, b):
    ia, ib = matching.match_labels(a, b, 0.5)
    return np.asarray(ia), np.asarray(ib)


# --------------------------------------------------------------------------- 2D fields
def planar_store(root, rng, n_fields=2):
    """A store of 2D fields (one z plane, CZYX with Z = 1, the core.dims convention):
    disk nuclei on a dim background, written through the real store writer."""
    from conftest import reference_patch_index, reference_stats

    from spotlight_scale.io.fields import finalize_store, write_field
    from spotlight_scale.io.store import FieldKey, Store

    shape = (1, 96, 112)
    store = Store(root, create=True, ngff="0.5",
                  settings={"patch": [1, 16, 16], "patch_stride": [1, 8, 8], "min_fraction": 0.001})
    y, x = np.indices(shape[1:])
    for field in range(n_fields):
        gt = np.zeros(shape, np.uint32)
        centres = [(22, 24), (22, 60), (26, 90), (66, 30), (70, 66), (64, 92)]
        for i, (cy, cx) in enumerate(centres):
            cy, cx = cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)
            gt[0][(y - cy) ** 2 + (x - cx) ** 2 <= 9 ** 2] = i + 1
        target = (100 + 800 * (gt > 0) + rng.normal(0, 20, shape)).clip(0).astype(np.uint16)
        signal = (1000 + 150 * (gt > 0) + rng.normal(0, 30, shape)).clip(0).astype(np.uint16)
        stats = {"signal": reference_stats(signal), "target": reference_stats(target)}
        index = reference_patch_index(target >= stats["target"]["otsu"], (1, 16, 16), (1, 8, 8),
                                      0.001)
        write_field(store, FieldKey("P1", "B03", field), signal=signal, target=target, mask=gt,
                    voxel_size=(0.65, 0.65, 0.65), chunks=(1, 48, 56), split="test",
                    stats=stats, source={"synthetic": True}, patch_index=index,
                    patch_settings={"patch_shape": (1, 16, 16), "stride": (1, 8, 8),
                                    "min_fraction": 0.001})
    finalize_store(store)
    return store


def test_evaluate_2d_fields_scores_the_plane(tmp_path):
    """A 2D screen: every pixel metric is the metric of the YX plane (2D SSIM window,
    MicroMS3IM and FRC on the plane), FSC is NaN and the report says it is not defined in
    2D; AP on the (1, Y, X) labels; background spread by its definition."""
    from spotlight_scale.core.dims import is_planar, squeeze_plane
    from spotlight_scale.io.tables import read_table
    from spotlight_scale.pipelines.evaluate import AP_THRESHOLDS, evaluate

    rng = np.random.default_rng(5)
    store = planar_store(tmp_path / "store", rng)
    keys = store.fields("test")
    for key in keys:
        target = store.read(key, "target").astype(np.float64)
        assert is_planar(target.shape)
        gt = store.read_named(key, "labels:gt")
        ids = np.unique(gt[gt > 0])
        add_prediction(store, key, "good", target + rng.normal(0, 15, target.shape))
        hazy = ndi.gaussian_filter(target[0], 2.0) * 0.8 + ndi.gaussian_filter(
            rng.normal(0, 60, target.shape[1:]), 4) + 150
        add_prediction(store, key, "hazy", hazy[None])
        add_labels(store, key, "seg-target", gt)
        add_labels(store, key, "seg-good", drop_label(gt, ids[0]))
        add_labels(store, key, "seg-hazy", drop_label(drop_label(gt, ids[0]), ids[1]))

    out = tmp_path / "report"
    summary = evaluate(store, ["good", "hazy"], out=out, workers=1)
    df = read_table(out / "metrics.parquet", "metrics")
    assert df["planar"].all() and summary["settings"]["n_planar"] == len(keys)
    assert summary["settings"]["ms3im_scales"] == M.ms3im_scales((96, 112)) == 4  # 2**3 * 11 <= 96
    for key in keys:
        t = squeeze_plane(store.read(key, "target")).astype(np.float64)
        otsu = store.stats(key, "target")["otsu"]
        fg = t >= otsu
        gt = store.read_named(key, "labels:gt")
        sel = (df["Metadata_Site"] == key.field)
        for name in ("good", "hazy"):
            p = squeeze_plane(store.read_named(key, f"prediction:{name}")).astype(np.float64)
            assert p.ndim == 2
            row = df[sel & (df["model"] == name)].iloc[0]
            assert row["psnr"] == pytest.approx(M.psnr(t, p))
            assert row["psnr_fg"] == pytest.approx(M.psnr_foreground(t, p, fg))
            assert row["ssim"] == pytest.approx(M.ssim(t, p)) and np.isfinite(row["ssim"])
            assert row["ssim_fg"] == pytest.approx(M.ssim_foreground(t, p, fg), nan_ok=True)
            assert row["micro_ms3im"] == pytest.approx(M.micro_ms3im(t, p))
            assert row["micro_ms3im_fg"] == pytest.approx(M.micro_ms3im_foreground(t, p, fg))
            assert row["frc_um"] == pytest.approx(or_nan(M.frc_resolution, p, spacing=0.65),
                                                  nan_ok=True)
            assert row["frc_fg_um"] == pytest.approx(
                or_nan(M.frc_resolution, p * M.soft_mask(fg), spacing=0.65), nan_ok=True)
            assert row["frc_vs_target_um"] == pytest.approx(
                or_nan(M.frc_resolution, p, t, spacing=0.65), nan_ok=True)
            assert np.isnan(row["fsc_um"]) and np.isnan(row["fsc_z_um"])
            assert row["bg_below_otsu"] == pytest.approx(np.mean(p[~fg] < otsu))
            assert row["bg_spread"] == pytest.approx(p[~fg].std() / t[fg].mean())
            lab = store.read_named(key, f"labels:seg-{name}")
            ap = _ap(clear_xy_border(gt), clear_xy_border(lab), AP_THRESHOLDS)
            assert row["ap50"] == pytest.approx(ap[0]) and row["ap_mean"] == pytest.approx(
                ap.mean())
            assert np.isnan(row["ap50_model"])  # no seg-<NAME>-model labels
        assert df[sel & (df["model"] == "target")].iloc[0]["ap50"] == pytest.approx(1.0)
    # the FRC curves were computed on the plane (a 3D call on a (1, Y, X) stack could not)
    for name in ("target", "good", "hazy"):
        c = summary["frc_curves"][name]["frc"]
        assert len(c["freq"]) >= 4 and c["freq"][-1] == pytest.approx(1 / (2 * 0.65), rel=0.15)
    assert summary["models"]["hazy"]["bg_spread"]["mean"] > summary["models"]["good"][
        "bg_spread"]["mean"]
    md = (out / "report.md").read_text()
    for name in ("target", "good", "hazy"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {name} |"))
        assert line.count("n/a (2D)") == 2  # FSC XY and Z: not defined, not "not resolved"
    assert "All fields are 2D" in md and "Background spread" in md
    with np.load(out / "slices.npz") as z:
        assert "image__target__xy" in z.files and not any(f.endswith("__xz") for f in z.files)
    assert (out / "slices.png").stat().st_size > 0
