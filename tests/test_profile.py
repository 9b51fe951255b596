"""Features against hand-built shapes and cp_measure itself; the profile stage's Parquet layout
read by pandas, pyarrow and DuckDB; pycytominer on a profile without glue."""

import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.core.features import (FEATURE_GROUPS, feature_columns, feature_unit,
                                           nucleus_features)

SP = (0.4, 0.2, 0.2)


def ellipsoid(semi_um, shape=(40, 80, 80), spacing=SP):
    z, y, x = np.indices(shape)
    c = [(n - 1) / 2 for n in shape]
    d = sum(((g - ci) * s / r) ** 2 for g, ci, s, r in zip((z, y, x), c, spacing, semi_um))
    return (d <= 1).astype(np.int32)


def test_sphere_and_ellipsoid_mesh_shape_features():
    r = 6.0
    lab = ellipsoid((r, r, r))
    f = nucleus_features(lab, np.ones(lab.shape), SP).iloc[0]
    assert f["AreaShape_Volume"] == lab.sum()  # CellProfiler: voxels
    assert f["AreaShape_Volume"] * np.prod(SP) == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    assert f["Shape3D_MeshVolume"] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    # marching cubes follows the voxel staircase: on this anisotropic grid (0.4 um in z)
    # it overestimates a sphere's area by 10-15 %, never underestimates it
    assert 4 * np.pi * r**2 < f["Shape3D_SurfaceArea"] < 1.15 * 4 * np.pi * r**2
    assert 0.85 < f["Shape3D_Sphericity"] <= 1.0
    assert f["Shape3D_Elongation"] == pytest.approx(1, abs=0.02)
    assert f["Shape3D_Flatness"] == pytest.approx(1, abs=0.02)
    # a solid ellipsoid's coordinate covariance has eigenvalues a^2/5: sqrt ratios b/a, c/a
    lab = ellipsoid((3.0, 6.0, 4.5))
    f = nucleus_features(lab, np.ones(lab.shape), SP).iloc[0]
    assert f["Shape3D_Elongation"] == pytest.approx(4.5 / 6, rel=0.02)
    assert f["Shape3D_Flatness"] == pytest.approx(3 / 6, rel=0.02)
    assert f["Shape3D_MeshVolume"] == pytest.approx(4 / 3 * np.pi * 3 * 6 * 4.5, rel=0.03)


def test_box_and_l_shape_positions_and_intensities():
    from skimage.measure import regionprops

    lab = np.zeros((10, 20, 30), np.int32)
    lab[2:6, 3:13, 5:25] = 7                 # a 4x10x20 voxel box, label 7
    lab[6:8, 0:4, 0:4] = 3                   # an L: 2x4x4 block + 2x4x2 arm, label 3
    lab[6:8, 4:8, 0:2] = 3
    img = np.arange(lab.size, dtype=np.float32).reshape(lab.shape)
    f = nucleus_features(lab, img, SP, intensity_scale=1000.0).set_index("ObjectNumber")
    assert list(f.index) == [3, 7]
    assert f.loc[7, "AreaShape_Volume"] == 800
    assert f.loc[7, "AreaShape_Extent"] == 1 and f.loc[7, "AreaShape_Solidity"] == 1
    # positions in voxel index coordinates, X the last axis, under Location_
    assert [f.loc[7, f"Location_Center_{a}"] for a in "ZYX"] == pytest.approx([3.5, 7.5, 14.5])
    assert [f.loc[7, f"Location_BoundingBoxMinimum_{a}"] for a in "ZYX"] == [2, 3, 5]
    assert not any(c.startswith("AreaShape_") and re.search("Center|BoundingBoxM", c)
                   for c in f.columns)
    assert f.loc[3, "AreaShape_Extent"] == pytest.approx(48 / 64)  # 48 voxels in a 2x8x4 box
    assert f.loc[3, "AreaShape_Solidity"] == pytest.approx(
        {r.label: r.solidity for r in regionprops(lab)}[3])
    v = img[lab == 7] / 1000.0
    assert f.loc[7, "Intensity_MeanIntensity_target"] == pytest.approx(v.mean())
    assert f.loc[7, "Intensity_IntegratedIntensity_target"] == pytest.approx(v.sum())
    assert f.loc[7, "Intensity_StdIntensity_target"] == pytest.approx(v.std())
    assert f.loc[7, "Intensity_MaxIntensity_target"] == pytest.approx(v.max())
    assert f.loc[7, "Location_MaxIntensity_X_target"] == 24


def test_cp_measure_values_under_cellprofiler_names_and_labels_kept():
    """Every cp_measure feature arrives unchanged under its CellProfiler name, on gapped
    labels (relabelled once by us, by cp_measure's own sanitising in the reference)."""
    from cp_measure.bulk import get_core_measurements_3d

    from spotlight_scale.core.synth import PRESETS, synth_field

    # v1: the smaller nuclei of the simulator before calibration, >= 3 of them in this field
    f = synth_field((16, 64, 64), (0.29, 0.29, 0.29), np.random.default_rng(1), PRESETS["v1"])
    lab = f["mask"].astype(np.int32) * 3  # labels 3, 6, 9, ...
    img = f["target"]
    ours = nucleus_features(lab, img, (0.29,) * 3, image_name="prediction:a-1",
                            groups=FEATURE_GROUPS, intensity_scale=65535.0)
    ids = np.unique(lab[lab > 0])
    assert ours["ObjectNumber"].tolist() == ids.tolist() and len(ids) >= 3
    px = img.astype(np.float32) / np.float32(65535)
    ref = {}
    for group, fn in get_core_measurements_3d(legacy=True).items():
        pixels = np.clip(px, 0, 1) if group == "texture" else px
        for name, vals in fn(lab, pixels).items():
            ref[(group, name)] = np.asarray(vals, np.float64)
    checked = 0
    for (group, name), vals in ref.items():
        if group == "sizeshape":
            col = (f"Location_{name}" if re.match(r"(Center|BoundingBox(Min|Max)imum)_", name)
                   else f"AreaShape_{name}")
        elif group == "texture":
            feat, _, rest = name.partition("_")
            col = f"Texture_{feat}_prediction_a_1_{rest}"
        else:
            col = f"{name}_prediction_a_1"
        if re.match(r"AreaShape_NormalizedMoment_(0_0_0|0_0_1|0_1_0|1_0_0)$", col):
            assert col not in ours and np.isnan(vals).all()  # undefined: left out
            continue
        np.testing.assert_allclose(ours[col].to_numpy(), vals, rtol=1e-12, equal_nan=True,
                                   err_msg=col)
        checked += 1
    assert checked == len(ours.columns) - 1 - 5  # all but ObjectNumber and the 5 Shape3D
    # one object measured alone gives the same row as in the crowd
    alone = np.where(lab == ids[1], lab, 0)
    solo = nucleus_features(alone, img, (0.29,) * 3, intensity_scale=65535.0).iloc[0]
    row = ours.iloc[1]
    for col in ("AreaShape_Volume", "AreaShape_Solidity", "Shape3D_MeshVolume",
                "Location_Center_X"):
        assert solo[col] == pytest.approx(row[col], rel=1e-12)
    assert solo["Intensity_MeanIntensity_target"] == pytest.approx(
        row["Intensity_MeanIntensity_prediction_a_1"], rel=1e-6)


def test_objects_measured_in_their_box_give_cp_measures_values_in_field_coordinates():
    """The local groups measure the box around the objects (one voxel beyond them counts for
    the surface mesh and the edge pixels): on a field with background on every side, and
    objects touching the field's faces, every value -- positions included -- is cp_measure's
    on the whole field."""
    from cp_measure.core import measureobjectintensity, measureobjectsizeshape

    from spotlight_scale.core.synth import synth_field

    f = synth_field((16, 64, 64), (0.29, 0.29, 0.29), np.random.default_rng(2))
    for pad in (((5, 3), (7, 2), (9, 4)), ((0, 6), (0, 0), (11, 0))):
        lab = np.pad(f["mask"].astype(np.int32) * 2, pad)  # labels 2, 4, ...
        img = np.pad(f["target"], pad)
        ours = nucleus_features(lab, img, (0.29,) * 3, groups=("sizeshape", "intensity"),
                                intensity_scale=65535.0)
        from skimage.segmentation import relabel_sequential

        seq = relabel_sequential(lab)[0]
        px = img.astype(np.float32) / np.float32(65535)
        ref = {f"AreaShape_{k}": v for k, v in
               measureobjectsizeshape.get_sizeshape(seq, px, spacing=(1.0,) * 3).items()}
        ref |= {f"{k}_target": v for k, v in
                measureobjectintensity.get_intensity(seq, px, legacy=True).items()}
        checked = 0
        for name, vals in ref.items():
            col = re.sub(r"^AreaShape_(?=(Center|BoundingBox(Min|Max)imum)_)", "Location_", name)
            if col not in ours:
                assert re.match(r"AreaShape_NormalizedMoment_", col), col
                continue
            np.testing.assert_allclose(ours[col].to_numpy(), np.asarray(vals, np.float64),
                                       rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=col)
            checked += 1
        assert checked >= 200
        assert ours["Location_BoundingBoxMinimum_X"].min() >= pad[2][0]


def test_empty_labels_give_named_zero_rows_and_every_column_has_a_unit():
    f = nucleus_features(np.zeros((4, 5, 6), int), np.zeros((4, 5, 6)), SP)
    assert list(f.columns) == feature_columns() and len(f) == 0
    assert f["ObjectNumber"].dtype == np.int64
    cols = feature_columns(FEATURE_GROUPS, "target")
    assert len(cols) == len(set(cols)) > 400
    units = {c: feature_unit(f"Nuclei_{c}")[0] for c in cols[1:]}  # after ObjectNumber
    assert units["Shape3D_MeshVolume"] == "um^3" and units["AreaShape_Volume"] == "voxel^3"
    assert units["Location_Center_X"] == "voxel" and units["Texture_Contrast_target_3_00_256"] == "1"
    with pytest.raises(ValueError, match="unknown feature group"):
        nucleus_features(np.zeros((4, 5, 6), int), np.zeros((4, 5, 6)), SP, groups=["nope"])


@pytest.fixture
def profiled(make_store, tmp_path):
    store = make_store()
    out = tmp_path / "prof"
    args = ["profile", str(store.root), "--labels", "gt", "--out", str(out), "--workers", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    expect = {}
    for k in store.fields():
        n = len(np.unique(store.read_named(k, "labels:gt"))) - 1
        expect[k.well] = expect.get(k.well, 0) + n
    return store, out, args, expect


def test_profile_layout_read_by_pandas_pyarrow_duckdb(profiled, tmp_path):
    import duckdb
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    store, out, args, expect = profiled
    n = sum(expect.values())
    df = pd.read_parquet(out / "nuclei")
    assert len(df) == n
    assert df.groupby("Metadata_Well").size().to_dict() == expect
    assert list(df.columns[:4]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                                    "Metadata_ObjectNumber"]
    assert df["Metadata_Plate"].dtype != "category" and df["Metadata_Site"].dtype == np.int64
    assert ds.dataset(out / "nuclei").to_table().num_rows == n
    con = duckdb.connect()
    got = con.execute(
        f"SELECT Metadata_Well AS w, count(*) AS n FROM read_parquet('{out}/nuclei/**/*.parquet',"
        " hive_partitioning=true) GROUP BY 1 ORDER BY 1").df()
    assert dict(zip(got["w"], got["n"])) == expect
    wells = pd.read_parquet(out / "_wells")
    assert dict(zip(wells["Metadata_Well"], wells["Metadata_Object_Count"])) == expect
    assert con.execute(f"SELECT sum(Metadata_Object_Count) FROM read_parquet("
                       f"'{out}/_wells/*.parquet', hive_partitioning=true)").fetchone()[0] == n
    # units travel with the data
    schema = pq.read_schema(next((out / "nuclei").rglob("*.parquet")))
    assert schema.field("Nuclei_Shape3D_MeshVolume").metadata[b"unit"] == b"um^3"
    assert schema.field("Nuclei_AreaShape_Volume").metadata[b"unit"] == b"voxel^3"
    assert pq.read_schema(out / "_wells" / "wells.parquet").field(
        "Nuclei_Shape3D_SurfaceArea").metadata[b"unit"] == b"um^2"
    # the nuclei are the ground truth's: labels and volumes match the store
    key = store.fields()[0]
    lab = store.read_named(key, "labels:gt")
    one = df[(df["Metadata_Well"] == key.well) & (df["Metadata_Site"] == key.field)]
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    assert one["Metadata_ObjectNumber"].tolist() == ids.tolist()
    assert one["Nuclei_AreaShape_Volume"].tolist() == counts.tolist()
    # re-run skips; unknown labels named
    runner = CliRunner()
    assert "already done" in runner.invoke(cli, args).output
    r = runner.invoke(cli, ["profile", str(store.root), "--labels", "nope", "--out", str(out)])
    assert r.exit_code != 0 and "no labels 'nope'" in r.output


def test_pycytominer_without_glue(profiled, tmp_path):
    """Positions, object numbers and sites are metadata: pycytominer infers morphology
    only, and its per-well aggregate is our wells table."""
    from pycytominer import aggregate, feature_select, normalize
    from pycytominer.cyto_utils import infer_cp_features

    from spotlight_scale.io.profiles import well_strata

    store, out, _, expect = profiled
    df = pd.read_parquet(out / "nuclei")
    feats = infer_cp_features(df)
    meta = infer_cp_features(df, metadata=True)
    assert feats == [c for c in df.columns if c.startswith("Nuclei_")]
    assert sorted(feats + meta) == sorted(df.columns)  # every column is one or the other
    assert not [c for c in feats if "Location" in c or "ObjectNumber" in c or "Site" in c]
    assert {"Metadata_Site", "Metadata_ObjectNumber", "Metadata_Nuclei_Location_Center_X",
            "Metadata_Nuclei_Location_MaxIntensity_X_DNA"} <= set(meta)
    assert df["Metadata_Source"].unique().tolist() == ["target"]
    assert df["Metadata_Labels"].unique().tolist() == ["gt"]
    strata = well_strata(df.columns)
    assert strata == ["Metadata_Plate", "Metadata_Well", "Metadata_Source", "Metadata_Labels"]
    agg = aggregate(df, strata=strata, features="infer", operation="median",
                    compute_object_count=True)
    assert dict(zip(agg["Metadata_Well"], agg["Metadata_Object_Count"])) == expect
    wells = pd.read_parquet(out / "_wells")
    pd.testing.assert_frame_equal(agg[wells.columns].reset_index(drop=True), wells,
                                  check_dtype=False)  # our wells table is pycytominer's
    norm = normalize(df, features="infer", method="standardize")
    assert len(norm) == len(df)
    assert abs(norm["Nuclei_AreaShape_Volume"].mean()) < 1e-6
    assert norm["Nuclei_AreaShape_Volume"].std(ddof=0) == pytest.approx(1, rel=1e-6)
    pd.testing.assert_frame_equal(norm[meta], df[meta])  # positions untouched
    sel = feature_select(norm, features="infer",
                         operation=["variance_threshold", "drop_na_columns",
                                    "correlation_threshold"])
    assert [c for c in sel.columns if c.startswith("Metadata_")] == meta and len(sel) == len(df)
    kept = [c for c in sel.columns if c.startswith("Nuclei_")]
    assert 0 < len(kept) < len(feats)
    assert "Nuclei_AreaShape_EulerNumber" not in kept  # constant (1) for solid nuclei


def add_prediction(store, key, name, volume):
    """A prediction written as `predict` writes it (an HCS plate under predictions/)."""
    import zarr

    from spotlight_scale.io.omezarr import write_image_czyx

    plate = zarr.open_group(str(store.plate_path(key.plate, prediction=name)), mode="a",
                            zarr_format=store.zarr_format)
    group = plate.require_group(key.row).require_group(key.column).require_group(str(key.field))
    write_image_czyx(group, [volume[None].astype(np.float32)], voxel_size=store.voxel_size(key),
                     channel_names=["prediction"], chunks_zyx=(8, 32, 32),
                     fmt=store.ngff_format())
    store.mark_done("predict", key, {"fingerprint": "test"}, name=name)


PLATEMAP = "plate,well,Treatment,dose\nP1,B03,DMSO,0\nP1,C04,drug,1.5\nP1,D05,drug,3\n"


@pytest.fixture
def screen(make_store, tmp_path):
    """Target and prediction profiles of one screen, annotated by `profile --platemap`."""
    store = make_store()
    rng = np.random.default_rng(5)
    for k in store.fields():
        t = store.read(k, "target").astype(np.float64)
        add_prediction(store, k, "fnet", t * 0.8 + rng.normal(0, 20, t.shape) + 50)
    pm = tmp_path / "platemap.csv"
    pm.write_text(PLATEMAP)
    prof = tmp_path / "profiles"
    for image, name in (("target", "target"), ("prediction:fnet", "fnet")):
        r = CliRunner().invoke(cli, ["profile", str(store.root), "--labels", "gt", "--image",
                                     image, "--out", str(prof / name), "--platemap", str(pm),
                                     "--workers", "1"])
        assert r.exit_code == 0, r.output
    n = sum(len(np.unique(store.read_named(k, "labels:gt"))) - 1 for k in store.fields())
    return store, prof, pm, n


def test_platemap_reaches_every_row_and_sources_stack(screen):
    """The issue's 'done when': one DuckDB read of both sources' nuclei without
    union_by_name, the plate map on every row, a Metadata_ column naming the source; polars
    and pandas read the same rows; a read of profiles/ finds nuclei only."""
    import duckdb
    import polars as pl
    import pyarrow.parquet as pq

    store, prof, _, n = screen
    con = duckdb.connect()
    glob = f"{prof}/*/nuclei/**/*.parquet"
    df = con.execute(f"SELECT * FROM read_parquet('{glob}')").df()
    assert len(df) == 2 * n
    assert df.groupby("Metadata_Source").size().to_dict() == {"prediction:fnet": n, "target": n}
    treat = {"B03": "DMSO", "C04": "drug"}
    assert df["Metadata_Treatment"].notna().all() and df["Metadata_dose"].notna().all()
    assert (df["Metadata_Treatment"] == df["Metadata_Well"].map(treat)).all()
    assert (df["Metadata_dose"] == df["Metadata_Well"].map({"B03": 0.0, "C04": 1.5})).all()
    # the same columns, in the same order, whatever image was measured
    parts = sorted(prof.glob("*/nuclei/*/*/*.parquet"))
    schemas = {pq.read_schema(p).remove_metadata() for p in parts}
    assert len(parts) == 8 and len(schemas) == 1
    cols = list(df.columns)
    assert cols[:8] == ["Metadata_Plate", "Metadata_Well", "Metadata_Site",
                        "Metadata_ObjectNumber", "Metadata_Source", "Metadata_Labels",
                        "Metadata_Treatment", "Metadata_dose"]
    assert "Nuclei_Intensity_MeanIntensity_DNA" in cols
    assert not [c for c in cols if "target" in c or "prediction" in c or "fnet" in c]
    # intensities differ by source (the prediction is dimmer), shapes do not (same labels)
    key = ["Metadata_Well", "Metadata_Site", "Metadata_ObjectNumber"]
    t = df[df["Metadata_Source"] == "target"].set_index(key).sort_index()
    p = df[df["Metadata_Source"] == "prediction:fnet"].set_index(key).sort_index()
    np.testing.assert_array_equal(t["Nuclei_AreaShape_Volume"], p["Nuclei_AreaShape_Volume"])
    assert (p["Nuclei_Intensity_MeanIntensity_DNA"] < t["Nuclei_Intensity_MeanIntensity_DNA"]).all()
    # polars and pandas: the same rows with one read
    pl_df = pl.read_parquet(glob)
    assert pl_df.columns == cols and pl_df.height == 2 * n
    pd_df = pd.read_parquet(prof)
    assert list(pd_df.columns) == cols and len(pd_df) == 2 * n  # no wells rows mixed in
    # the per-well tables carry the plate map too; a glob over everything is refused
    wells = pd.read_parquet(prof / "fnet" / "_wells" / "wells.parquet")
    assert dict(zip(wells["Metadata_Well"], wells["Metadata_Treatment"])) == treat
    assert wells["Metadata_Source"].unique().tolist() == ["prediction:fnet"]
    with pytest.raises(duckdb.Error, match="schema mismatch"):
        con.execute(f"SELECT * FROM read_parquet('{prof}/**/*.parquet')").df()


def test_pycytominer_normalises_the_stacked_table_to_dmso(screen):
    """normalize to the DMSO wells, feature_select and aggregate on the stacked table of
    two sources, no glue; standardisation checked against the DMSO rows by hand."""
    from pycytominer import aggregate, feature_select, normalize

    from spotlight_scale.io.profiles import well_strata

    _, prof, _, n = screen
    df = pd.read_parquet(prof)
    norm = normalize(df, features="infer", samples="Metadata_Treatment == 'DMSO'",
                     method="standardize")
    assert len(norm) == len(df)
    ctrl = df[df["Metadata_Treatment"] == "DMSO"]
    for c in ("Nuclei_AreaShape_Volume", "Nuclei_Intensity_MeanIntensity_DNA"):
        mu, sd = ctrl[c].mean(), ctrl[c].std(ddof=0)
        np.testing.assert_allclose(norm[c], (df[c] - mu) / sd, rtol=1e-6, atol=1e-9)
        dmso = norm.loc[df["Metadata_Treatment"] == "DMSO", c]
        assert abs(dmso.mean()) < 1e-9 and dmso.std(ddof=0) == pytest.approx(1, rel=1e-6)
    sel = feature_select(norm, features="infer",
                         operation=["variance_threshold", "drop_na_columns",
                                    "correlation_threshold"])
    assert len(sel) == len(df) and "Metadata_Treatment" in sel.columns
    agg = aggregate(sel, strata=well_strata(sel.columns), features="infer",
                    operation="median", compute_object_count=True)
    assert len(agg) == 4  # 2 sources x 2 wells
    assert sorted(zip(agg["Metadata_Source"], agg["Metadata_Treatment"])) == [
        ("prediction:fnet", "DMSO"), ("prediction:fnet", "drug"), ("target", "DMSO"),
        ("target", "drug")]
    assert agg["Metadata_Object_Count"].sum() == 2 * n


def test_platemap_errors_name_the_wells(make_store, tmp_path, caplog):
    from spotlight_scale.io.platemap import PlateMapError, load, read_platemap

    store = make_store()
    keys = store.fields()

    def write(text):
        path = tmp_path / "pm.csv"
        path.write_text(text)
        return path

    pm = read_platemap(write("well_position,Metadata_Treatment\nB3,DMSO\nC04,x\n"))
    assert list(pm.columns) == ["Metadata_Well", "Metadata_Treatment"]
    assert pm["Metadata_Well"].tolist() == ["B03", "C04"]
    with caplog.at_level("WARNING"):
        got = load(write("well,treatment\nB03,DMSO\nC04,x\nH12,y\n"), keys)
    assert got["Metadata_Plate"].tolist() == ["P1"] * 3  # one plate: the map's plate
    assert "Metadata_treatment" in got.columns and "P1/H12" in caplog.text
    with pytest.raises(PlateMapError, match=r"well B03 is listed 2 times \(lines 2, 4\)"):
        read_platemap(write("well,t\nB03,a\nC04,b\nB3,c\n"))
    with pytest.raises(PlateMapError, match=r"not in the plate map: P1/C04"):
        load(write("well,t\nB03,a\n"), keys)
    with pytest.raises(PlateMapError, match=r"line 3: bad well name 'Z99'"):
        read_platemap(write("well,t\nB03,a\nZ99,b\n"))
    with pytest.raises(PlateMapError, match=r"no well column"):
        read_platemap(write("plate,t\nP1,a\n"))
    with pytest.raises(PlateMapError, match=r"'Site' would become 'Metadata_Site'"):
        read_platemap(write("well,Site\nB03,a\n"))
    from spotlight_scale.io.store import FieldKey

    two = [*keys, FieldKey("P2", "B03", 0)]
    with pytest.raises(PlateMapError, match=r"no plate column.*2 plates \(P1, P2\)"):
        load(write("well,t\nB03,a\nC04,b\n"), two)
    # the CLI names the file and writes nothing
    out = tmp_path / "prof"
    r = CliRunner().invoke(cli, ["profile", str(store.root), "--labels", "gt", "--out", str(out),
                                 "--platemap", str(write("well,t\nB03,a\n"))])
    assert r.exit_code != 0 and "pm.csv" in r.output and "P1/C04" in r.output
    assert not (out / "nuclei").exists()


def test_ingest_keeps_the_platemap_and_stain_for_every_table(tmp_path):
    """ingest --platemap --stain: fields.parquet annotated; a later profile without
    --platemap annotates its rows from the store and names intensities by the stain;
    profile --platemap replaces it for that run (and redoes the annotated fields)."""
    from test_ingest import make_raw

    from spotlight_scale.io.store import Store
    from spotlight_scale.io.tables import read_table

    man = make_raw(tmp_path / "raw", n=3)  # wells B02 (2 fields), B03
    pm = tmp_path / "pm.csv"
    pm.write_text("well,Treatment\nB02,DMSO\n")
    store_dir = tmp_path / "store"
    args = ["ingest", str(man), str(store_dir), "--chunks", "8,32,32", "--patch", "8,16,16",
            "--workers", "1", "--stain", "Hoechst"]
    r = CliRunner().invoke(cli, [*args, "--platemap", str(pm)])
    assert r.exit_code != 0 and "P1/B03" in r.output and not store_dir.exists()
    pm.write_text("well,Treatment\nB02,DMSO\nB03,drug\n")
    r = CliRunner().invoke(cli, [*args, "--platemap", str(pm)])
    assert r.exit_code == 0, r.output
    store = Store(store_dir)
    fields = store.fields_table()
    assert dict(zip(fields["Metadata_Well"], fields["Metadata_Treatment"])) == {
        "B02": "DMSO", "B03": "drug"}
    assert read_table(store.table_path("platemap"), "platemap").shape == (2, 3)
    out = tmp_path / "prof"
    prof = ["profile", str(store_dir), "--labels", "gt", "--out", str(out), "--workers", "1"]
    r = CliRunner().invoke(cli, prof)
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out)
    assert (df["Metadata_Treatment"] == df["Metadata_Well"].map(
        {"B02": "DMSO", "B03": "drug"})).all() and len(df) > 0
    assert "Nuclei_Intensity_MeanIntensity_Hoechst" in df.columns
    other = tmp_path / "other.csv"
    other.write_text("well,Treatment,Batch\nB02,a,1\nB03,b,2\n")
    r = CliRunner().invoke(cli, [*prof, "--platemap", str(other)])
    assert r.exit_code == 0 and "3 field(s)" in r.output, r.output
    df = pd.read_parquet(out)
    assert set(df["Metadata_Treatment"]) == {"a", "b"} and "Metadata_Batch" in df.columns
    assert len(df) == len(pd.read_parquet(out / "nuclei"))


def test_profile_layout_1_is_refused_with_the_command_then_replaced(profiled, tmp_path):
    from spotlight_scale.io.profiles import read_profiles
    from spotlight_scale.io.tables import write_table
    from spotlight_scale.versioning import VersionError

    store, _, _, expect = profiled
    old = tmp_path / "old"
    part = old / "Metadata_Plate=P1" / "Metadata_Well=B03" / "field-0.parquet"
    part.parent.mkdir(parents=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {b"spotlight_scale.table": b"nuclei", b"spotlight_scale.schema_version": b"1",
            b"spotlight_scale.labels": b"gt", b"spotlight_scale.image": b"target"}
    tab = pa.table({"Metadata_Plate": ["P1"], "Nuclei_AreaShape_Volume": [1.0]})
    pq.write_table(tab.replace_schema_metadata(meta), part)
    write_table(pd.DataFrame({"Metadata_Plate": ["P1"]}), old / "wells.parquet", "failures")
    with pytest.raises(VersionError, match=r"layout version 1.*--labels gt --image target"):
        read_profiles(old)
    args = ["profile", str(store.root), "--labels", "gt", "--out", str(old), "--workers", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "layout version 1" in r.output and "--overwrite" in r.output
    assert part.exists()  # nothing lost without --overwrite
    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not part.exists() and not (old / "wells.parquet").exists()
    assert len(read_profiles(old)) == sum(expect.values())


# --- 2D fields (one z plane): cp_measure's 2D measurements plus our Shape2D columns ----------

SP2 = (5.0, 0.3, 0.15)  # a 2D field: its z size is meaningless; anisotropic pixels on purpose


def ellipse2d(semi_um, shape=(1, 80, 120), spacing=SP2, centre=None):
    y, x = np.indices(shape[1:])
    c = centre or [(n - 1) / 2 for n in shape[1:]]
    d = sum(((g - ci) * s / r) ** 2 for g, ci, s, r in zip((y, x), c, spacing[1:], semi_um))
    return (d <= 1).astype(np.int32)[None]


def test_2d_shape_features_in_micrometres():
    a, b = 8.0, 5.0
    lab = ellipse2d((a, b))
    f = nucleus_features(lab, np.ones(lab.shape), SP2).iloc[0]
    assert lab.shape == (1, 80, 120)
    assert f["AreaShape_Area"] == lab.sum()  # CellProfiler: pixels
    assert f["Shape2D_Area"] == pytest.approx(lab.sum() * 0.3 * 0.15)
    assert f["Shape2D_Area"] == pytest.approx(np.pi * a * b, rel=0.02)
    # Ramanujan's ellipse perimeter. The contour follows the pixel staircase, cutting its
    # corners at 45 degrees: like the 3D mesh it overestimates a smooth outline (here by 7 %,
    # the known bias of 8-connected boundary lengths), never underestimates it
    h = ((a - b) / (a + b)) ** 2
    ramanujan = np.pi * (a + b) * (1 + 3 * h / (10 + np.sqrt(4 - 3 * h)))
    assert ramanujan < f["Shape2D_Perimeter"] < 1.1 * ramanujan
    assert f["Shape2D_EquivalentDiameter"] == pytest.approx(2 * np.sqrt(a * b), rel=0.01)
    assert f["Shape2D_Elongation"] == pytest.approx(b / a, rel=0.02)
    # the physical columns follow the pixel size; CellProfiler's (pixels) do not
    g = nucleus_features(lab, np.ones(lab.shape), (5.0, 0.6, 0.3)).iloc[0]
    assert g["Shape2D_Area"] == pytest.approx(4 * f["Shape2D_Area"])
    assert g["Shape2D_Perimeter"] == pytest.approx(2 * f["Shape2D_Perimeter"])
    assert g["AreaShape_Perimeter"] == f["AreaShape_Perimeter"]
    assert not any(c.startswith("Shape3D_") or c.endswith("_Z") and "Center" in c
                   for c in nucleus_features(lab, np.ones(lab.shape), SP2).columns)


def test_2d_cp_measure_values_under_cellprofiler_names():
    """Every cp_measure 2D feature (its 2D core getters: sizeshape + Feret + Zernike as
    CellProfiler's 2D MeasureObjectSizeShape, intensity, texture, granularity) arrives
    unchanged under its CellProfiler name, on gapped labels of a (1, Y, X) field."""
    from cp_measure.bulk import get_core_measurements

    rng = np.random.default_rng(3)
    lab = np.zeros((1, 80, 120), np.int32)
    for i, (c, semi) in enumerate([((20, 25), (4.0, 2.5)), ((50, 40), (3.0, 3.0)),
                                   ((30, 90), (5.0, 2.0)), ((62, 95), (2.5, 4.5))]):
        lab[ellipse2d(semi, centre=c) > 0] = 4 * (i + 1)  # labels 4, 8, 12, 16
    lab[0, 45:55, 30:34] = 0  # a notch: not every object is convex
    img = rng.integers(0, 4000, lab.shape).astype(np.uint16) + (lab > 0) * 20000
    ours = nucleus_features(lab, img, SP2, image_name="prediction:a-1", groups=FEATURE_GROUPS,
                            intensity_scale=65535.0)
    ids = np.unique(lab[lab > 0])
    assert ours["ObjectNumber"].tolist() == ids.tolist() == [4, 8, 12, 16]
    px = img[0].astype(np.float32) / np.float32(65535)
    ref = {}
    for group, fn in get_core_measurements(legacy=True).items():
        if group.startswith("radial"):  # MeasureObjectIntensityDistribution: not measured
            continue
        pixels = np.clip(px, 0, 1) if group == "texture" else px
        for name, vals in fn(lab[0], pixels).items():
            ref[(group, name)] = np.asarray(vals, np.float64)
    checked = 0
    for (group, name), vals in ref.items():
        if group in ("sizeshape", "feret", "zernike"):
            col = (f"Location_{name}" if re.match(r"(Center|BoundingBox(Min|Max)imum)_", name)
                   else f"AreaShape_{name}")
        elif group == "texture":
            feat, _, rest = name.partition("_")
            col = f"Texture_{feat}_prediction_a_1_{rest}"
        else:
            col = f"{name}_prediction_a_1"
        if re.match(r"AreaShape_NormalizedMoment_(0_0|0_1|1_0)$", col):
            assert col not in ours and np.isnan(vals).all()  # undefined: left out
            continue
        np.testing.assert_allclose(ours[col].to_numpy(), vals, rtol=1e-12, equal_nan=True,
                                   err_msg=col)
        checked += 1
    assert checked == len(ours.columns) - 1 - 4  # all but ObjectNumber and the 4 Shape2D
    for col in ("AreaShape_Area", "AreaShape_Perimeter", "AreaShape_Eccentricity",
                "AreaShape_MaxFeretDiameter", "AreaShape_Zernike_2_2", "Location_Center_Y",
                "Intensity_MeanIntensity_prediction_a_1"):
        assert col in ours.columns
    # the same field given as (Y, X) gives the same table
    pd.testing.assert_frame_equal(ours, nucleus_features(
        lab[0], img[0], SP2, image_name="prediction:a-1", groups=FEATURE_GROUPS,
        intensity_scale=65535.0))


def test_2d_empty_labels_give_named_zero_rows_and_every_column_has_a_unit():
    f = nucleus_features(np.zeros((1, 5, 6), int), np.zeros((1, 5, 6)), SP2)
    assert list(f.columns) == feature_columns(planar=True) and len(f) == 0
    assert f["ObjectNumber"].dtype == np.int64
    assert {"AreaShape_Area", "AreaShape_Perimeter", "Shape2D_Area"} <= set(f.columns)
    assert not {"AreaShape_Volume", "Shape3D_MeshVolume", "Location_Center_Z"} & set(f.columns)
    cols = feature_columns(FEATURE_GROUPS, "target", planar=True)
    assert len(cols) == len(set(cols)) > 150
    units = {c: feature_unit(f"Nuclei_{c}", planar=True)[0] for c in cols[1:]}
    assert units["Shape2D_Area"] == "um^2" and units["Shape2D_Perimeter"] == "um"
    assert units["Shape2D_EquivalentDiameter"] == "um"
    assert units["AreaShape_Area"] == units["AreaShape_ConvexArea"] == "pixel^2"
    assert units["AreaShape_Perimeter"] == "pixel" and units["Location_Center_X"] == "pixel"
    assert units["AreaShape_Orientation"] == "degree"
    assert feature_unit("Nuclei_AreaShape_ConvexArea")[0] == "voxel^3"  # 3D: voxels


def test_profile_stage_on_2d_fields(make_store, tmp_path):
    """A store of 2D fields (one z plane): 2D columns, their units in the Parquet metadata,
    the same object numbers and pixel counts as the labels."""
    import pyarrow.parquet as pq

    store = make_store(fields=(("P1", "B03", 0, "test"), ("P1", "C04", 0, "test")),
                       shape=(1, 48, 48), patch=(1, 16, 16), stride=(1, 8, 8), chunks=(1, 32, 32))
    out = tmp_path / "prof"
    r = CliRunner().invoke(cli, ["profile", str(store.root), "--labels", "gt", "--out", str(out),
                                 "--workers", "1"])
    assert r.exit_code == 0, r.output
    df = pd.read_parquet(out / "nuclei")
    key = store.fields()[0]
    lab = store.read_named(key, "labels:gt")
    assert lab.shape == (1, 48, 48)
    one = df[(df["Metadata_Well"] == key.well) & (df["Metadata_Site"] == key.field)]
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    assert len(ids) and one["Metadata_ObjectNumber"].tolist() == ids.tolist()
    assert one["Nuclei_AreaShape_Area"].tolist() == counts.tolist()
    px = np.prod(store.voxel_size(key)[1:])
    np.testing.assert_allclose(one["Nuclei_Shape2D_Area"], counts * px)
    assert not [c for c in df.columns if "Shape3D" in c or "Volume" in c]
    schema = pq.read_schema(next((out / "nuclei").rglob("*.parquet")))
    assert schema.field("Nuclei_Shape2D_Area").metadata[b"unit"] == b"um^2"
    assert schema.field("Nuclei_AreaShape_ConvexArea").metadata[b"unit"] == b"pixel^2"
    assert pq.read_schema(out / "_wells" / "wells.parquet").field(
        "Nuclei_Shape2D_Perimeter").metadata[b"unit"] == b"um"


def test_profile_layout_2_is_refused_with_the_command_then_replaced(profiled, tmp_path):
    """Layout 2 (image-named intensities, nuclei schema 1, wells/ beside nuclei/): a read
    names the layout and the command; --overwrite replaces it."""
    import shutil

    import pyarrow.parquet as pq

    from spotlight_scale.io.profiles import read_profiles
    from spotlight_scale.versioning import VersionError

    store, out, args, expect = profiled
    old = tmp_path / "old2"
    shutil.copytree(out, old)
    (old / "_wells").rename(old / "wells")
    for part in (old / "nuclei").rglob("*.parquet"):
        tab = pq.read_table(part)
        meta = dict(tab.schema.metadata)
        meta[b"spotlight_scale.schema_version"] = b"1"
        pq.write_table(tab.replace_schema_metadata(meta), part)
    with pytest.raises(VersionError, match=r"layout version 2.*--labels gt --image target"):
        read_profiles(old)
    args = ["profile", str(store.root), "--labels", "gt", "--out", str(old), "--workers", "1"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "layout version 2" in r.output and "--overwrite" in r.output
    assert (old / "wells").exists()  # nothing lost without --overwrite
    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (old / "wells").exists() and (old / "_wells" / "wells.parquet").exists()
    assert len(read_profiles(old)) == sum(expect.values())


def test_readme_profiles_snippet_runs(make_store, tmp_path, monkeypatch):
    """The README's Profiles section, as written: its `spotlight-scale profile` lines run
    through the CLI, then its Python blocks run on what they wrote."""
    import shlex
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("\n## Profiles\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    commands = [line for lang, code in blocks if lang == "bash" for line in code.splitlines()
                if line.startswith("spotlight-scale profile")]
    python = [code for lang, code in blocks if lang == "python"]
    assert len(commands) == 2 and len(python) == 2
    store = make_store()  # tmp_path/store: P1/B03/0, P1/B03/1, P1/C04/0, P1/C04/1
    rng = np.random.default_rng(2)
    for k in store.fields():
        t = store.read(k, "target").astype(np.float64)
        add_prediction(store, k, "fnet", t + rng.normal(0, 20, t.shape))
    (tmp_path / "platemap.csv").write_text("well,Treatment\nB03,DMSO\nC04,drug\n")
    monkeypatch.chdir(tmp_path)
    for cmd in commands:
        r = CliRunner().invoke(cli, [*shlex.split(cmd)[1:], "--workers", "1"])
        assert r.exit_code == 0, (cmd, r.output)
    ns: dict = {}
    for code in python:
        exec(compile(code, "README.md", "exec"), ns)
    nuclei, per_well = ns["nuclei"], ns["per_well"]
    assert set(nuclei["Metadata_Source"]) == {"target", "prediction:fnet"}
    assert nuclei["Metadata_Treatment"].notna().all()
    assert len(ns["same"]) == len(nuclei) and len(per_well) == 4
    assert list(ns["X"].columns) == [c for c in nuclei.columns if c.startswith("Nuclei_")]
    assert ns["img"].dims == ("c", "z", "y", "x") and ns["gt"].dims == ("z", "y", "x")
