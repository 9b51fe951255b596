"""Features against hand-built shapes; the profile stage with DuckDB, pandas, pycytominer."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.core.features import FEATURE_COLUMNS, nucleus_features

SP = (0.4, 0.2, 0.2)


def sphere(r_um, shape=(40, 80, 80)):
    z, y, x = np.indices(shape)
    c = [(n - 1) / 2 for n in shape]
    d = sum(((g - ci) * s) ** 2 for g, ci, s in zip((z, y, x), c, SP))
    return (d <= r_um**2).astype(np.int32)


def test_sphere_volume_area_sphericity():
    r = 6.0
    lab = sphere(r)
    f = nucleus_features(lab, np.ones(lab.shape), SP).iloc[0]
    assert f["AreaShape_Volume"] == pytest.approx(lab.sum() * np.prod(SP))
    assert f["AreaShape_Volume"] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    assert f["AreaShape_MeshVolume"] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.03)
    # marching cubes follows the voxel staircase: on this anisotropic grid (0.4 um in z)
    # it overestimates a sphere's area by 10-15 %, never underestimates it
    area = f["AreaShape_SurfaceArea"]
    assert 4 * np.pi * r**2 < area < 1.15 * 4 * np.pi * r**2
    assert 0.85 < f["AreaShape_Sphericity"] <= 1.0
    assert f["AreaShape_EquivalentDiameter"] == pytest.approx(2 * r, rel=0.02)
    for a in ("Major", "Intermediate", "Minor"):  # 4 sqrt(r^2/5) for a solid sphere
        assert f[f"AreaShape_{a}AxisLength"] == pytest.approx(4 * r / np.sqrt(5), rel=0.03)


def test_box_and_l_shape():
    lab = np.zeros((10, 20, 30), np.int32)
    lab[2:6, 3:13, 5:25] = 1                 # a 4x10x20 voxel box
    lab[6:8, 0:4, 0:4] = 2                   # an L: 2x4x4 block + 2x4x2 arm
    lab[6:8, 4:8, 0:2] = 2
    img = np.arange(lab.size, dtype=np.float32).reshape(lab.shape)
    f = nucleus_features(lab, img, SP).set_index("label")
    assert f.loc[1, "AreaShape_Extent"] == 1 and f.loc[1, "AreaShape_Solidity"] == pytest.approx(1)
    assert [f.loc[1, f"AreaShape_BoundingBoxMin{a}"] for a in "ZYX"] == pytest.approx(
        [2 * 0.4, 3 * 0.2, 5 * 0.2])
    assert [f.loc[1, f"AreaShape_Centroid{a}"] for a in "ZYX"] == pytest.approx(
        [3.5 * 0.4, 7.5 * 0.2, 14.5 * 0.2])
    assert f.loc[2, "AreaShape_Extent"] == pytest.approx(48 / 64)  # 48 voxels in a 2x8x4 box
    assert f.loc[2, "AreaShape_Solidity"] < 1
    v = img[lab == 1]
    assert f.loc[1, "Intensity_Mean"] == pytest.approx(v.mean())
    assert f.loc[1, "Intensity_Integrated"] == pytest.approx(v.sum() * np.prod(SP))
    assert f.loc[1, "Intensity_Median"] == pytest.approx(np.median(v))


def test_hull_count_equals_scikit_image_convex_hull_image():
    import warnings

    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    from skimage.morphology import ball, convex_hull_image

    from spotlight_scale.core.features import convex_hull_voxel_count

    rng = np.random.default_rng(3)
    shapes = [ball(6), np.ones((3, 4, 5), bool), ball(4)[:, :, :5],
              np.pad(ball(3), 2)[::-1, :, ::2]]
    shapes += [rng.random(tuple(rng.integers(2, 14, 3))) < rng.uniform(0.05, 0.9)
               for _ in range(40)]
    shapes += [ndi.gaussian_filter(rng.random((18, 28, 28)), 3) > 0.5 for _ in range(10)]
    checked = 0
    for obj in shapes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = int(convex_hull_image(obj).sum())
        if ref == 0:  # scikit-image gives up on a flat hull
            continue
        assert convex_hull_voxel_count(obj) == ref, obj.shape
        checked += 1
    assert checked > 40
    # and the profile's solidity is scikit-image's
    lab = np.zeros((20, 30, 30), np.int32)
    lab[2:12, 3:20, 4:9] = 1
    lab[5:15, 10:25, 12:28] = 2
    lab[8:15, 20:25, 12:20] = 0
    f = nucleus_features(lab, lab.astype(np.float32), (0.5, 0.2, 0.2)).set_index("label")
    for r in regionprops(lab):
        assert f.loc[r.label, "AreaShape_Solidity"] == pytest.approx(r.solidity, rel=1e-12)


def test_empty_labels_give_named_zero_rows():
    f = nucleus_features(np.zeros((4, 5, 6), int), np.zeros((4, 5, 6)), SP)
    assert list(f.columns) == FEATURE_COLUMNS and len(f) == 0


def test_profile_stage_duckdb_pandas_pycytominer(make_store, tmp_path):
    import duckdb

    store = make_store()
    out = tmp_path / "prof"
    runner = CliRunner()
    args = ["profile", str(store.root), "--labels", "gt", "--out", str(out), "--workers", "1"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    expect = {}
    for k in store.fields():
        n = len(np.unique(store.read_named(k, "labels:gt"))) - 1
        expect[k.well] = expect.get(k.well, 0) + n
    got = duckdb.connect().execute(
        f"SELECT Metadata_Well AS w, count(*) AS n FROM read_parquet('{out}/Metadata_Plate=*/**/"
        "*.parquet', hive_partitioning=true) GROUP BY 1 ORDER BY 1").df()
    assert dict(zip(got["w"], got["n"])) == expect
    from spotlight_scale.io.profiles import read_profiles

    df = read_profiles(out)
    assert len(df) == sum(expect.values())
    wells = pd.read_parquet(out / "wells.parquet")
    assert dict(zip(wells["Metadata_Well"], wells["Metadata_Count"])) == expect
    from pycytominer import aggregate, normalize

    feats = [c for c in df.columns if c.startswith("Nuclei_")]
    agg = aggregate(df, strata=["Metadata_Plate", "Metadata_Well"], features=feats)
    assert len(agg) == 2
    norm = normalize(df, features=feats, meta_features=["Metadata_Plate", "Metadata_Well",
                                                        "Metadata_Field", "Metadata_Label"],
                     method="standardize")
    assert abs(norm["Nuclei_AreaShape_Volume"].mean()) < 1e-6
    assert "already done" in runner.invoke(cli, args).output
    r = runner.invoke(cli, ["profile", str(store.root), "--labels", "nope", "--out", str(out)])
    assert r.exit_code != 0 and "no labels 'nope'" in r.output
