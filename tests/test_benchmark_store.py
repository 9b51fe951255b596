"""``benchmark --store``: learning curves of F-net and Spotlight on any store (issue 20)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import pearsonr

from spotlight_scale.cli import cli
from spotlight_scale.pipelines import benchmark_store as B


def test_plan_is_breadth_first_and_one_seed_models_run_once():
    jobs = B.plan_jobs(["fnet-torch", "spotlight", "fnet"], [0, 1], [10, 30], one_seed=["fnet"])
    assert jobs == [(10, 0, "fnet-torch"), (10, 0, "spotlight"), (10, 0, "fnet"),
                    (10, 1, "fnet-torch"), (10, 1, "spotlight"),
                    (30, 0, "fnet-torch"), (30, 0, "spotlight"), (30, 0, "fnet"),
                    (30, 1, "fnet-torch"), (30, 1, "spotlight")]
    with pytest.raises(ValueError, match="unknown benchmark model"):
        B.plan_jobs(["unet"], [0], [10])
    with pytest.raises(ValueError, match="increasing"):
        B.plan_jobs(["fnet"], [0], [30, 10])


def test_pearson_r_equals_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1, 20, 30))
    b = 0.5 * a + rng.normal(size=a.shape)
    assert B.pearson_r(a, b) == pytest.approx(pearsonr(a.ravel(), b.ravel()).statistic, abs=1e-12)


def test_model_variants_are_the_documented_losses():
    cfg = {m: B.train_config(m, 0, 10) for m in B.MODELS}
    assert cfg["fnet"].loss == "mse" and cfg["fnet"].init == "fnet"
    assert cfg["fnet-torch"].loss == "mse" and cfg["fnet-torch"].init == "torch"
    assert cfg["spotlight"].loss == "spotlight"
    assert (cfg["spotlight"].dice_probability, cfg["spotlight"].dice_denominator,
            cfg["spotlight"].mse_denominator) == ("shifted", "squared", "all")  # the default
    c = cfg["spotlight-clamp"]
    assert (c.dice_probability, c.dice_denominator, c.mse_denominator) == (
        "clamp", "linear", "foreground")
    a = cfg["spotlight-mse-all"]  # the ablation: the shipped loss, MSE over every pixel
    assert a.mse_region == "all" and cfg["spotlight"].mse_region == "foreground"
    assert a.spotlight_kwargs() == {**cfg["spotlight"].spotlight_kwargs(), "mse_region": "all"}
    assert a.loss_settings()["mse_region"] == "all"
    assert "mse_region" not in cfg["spotlight"].loss_settings()  # paper-loss files unchanged
    assert all(c.patch == (64, 64) and c.depth == 3 and c.channels == 16 and c.batch_size == 8
               for c in cfg.values())


def test_store_benchmark_end_to_end_resumes(make_store, tmp_path):
    """Two variants, one seed, snapshots at 3 and 6 iterations of one run each, scored on the
    test fields; the snapshot at 6 equals a straight 6-iteration run's model; a re-run
    trains and scores nothing again."""
    import torch

    from spotlight_scale.io.tables import read_table
    from spotlight_scale.models.io import load_model_file
    from spotlight_scale.pipelines.train import train

    store = make_store(shape=(1, 64, 64), n_blobs=8, patch=(1, 16, 16), stride=(1, 8, 8),
                       chunks=(1, 32, 32), voxel_size=(0.5, 0.5, 0.5))
    args = ["benchmark", str(tmp_path / "w"), "--store", str(store.root), "--models",
            "fnet-torch,spotlight", "--one-seed", "", "--seeds", "0", "--checkpoints", "3,6",
            "--workers", "1", "--set", "depth=2", "--set", "channels=4", "--set",
            "patch=[16, 16]", "--set", "batch_size=4"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    w = tmp_path / "w"
    table = read_table(w / "curves.parquet", "benchmark_curves")
    n_test = len(store.fields("test"))
    assert len(table) == 2 * 2 * n_test
    assert set(zip(table["model"], table["iteration"])) == {
        ("fnet-torch", 3), ("fnet-torch", 6), ("spotlight", 3), ("spotlight", 6)}
    ft = table[table["model"] == "fnet-torch"]  # PyTorch's init: a non-constant output
    for col in ("pearson_r", "ap_mean_50_90", "ap_mean_50_90_model", "psnr_fg", "bg_spread"):
        assert col in table and np.isfinite(ft[col]).all(), col
    # Pearson r of a stored row, recomputed independently
    row = ft.iloc[0]
    key = next(k for k in store.fields("test") if k.field == row["Metadata_Site"])
    name = B.prediction_name(row["model"], row["seed"], row["iteration"])
    ref = pearsonr(store.read_named(key, f"prediction:{name}").ravel(),
                   store.read(key, "target").ravel().astype(float)).statistic
    assert row["pearson_r"] == pytest.approx(ref, abs=1e-9)
    report = (w / "report.md").read_text()
    assert "| spotlight | 6 | 1 |" in report and "| 6 | **fnet-torch** (stronger) | 1 |" in report
    assert (w / "curves.png").stat().st_size > 0
    # one run, two snapshots: the one at 6 is what a straight 6-iteration run makes
    cfg = B.train_config("spotlight", 0, 6, {"depth": 2, "channels": 4, "patch": (16, 16),
                                             "batch_size": 4})
    train(store.root, tmp_path / "straight", cfg)
    a, _ = load_model_file(B.snapshot_path(w, "spotlight", 0, 6))
    b, _ = load_model_file(tmp_path / "straight" / "model.pt")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    # resumable: nothing is trained or scored again
    before = {p: p.stat().st_mtime_ns for p in (w / "runs").rglob("model-*.pt")}
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert {p: p.stat().st_mtime_ns for p in (w / "runs").rglob("model-*.pt")} == before
    assert "== train" not in res.output and "== score" not in res.output
    assert len(read_table(w / "curves.parquet", "benchmark_curves")) == len(table)
