"""`benchmark --tiny` runs every stage end to end and writes every report file; the
aggregation over seeds against numpy."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from spotlight_scale.cli import cli


def test_benchmark_tiny_end_to_end(tmp_path):
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--seeds", "1",
                                 "--spotlight-option", "lambda_ramp=2",
                                 "--fnet-option", "init=torch"])
    assert r.exit_code == 0, r.output
    assert "Spotlight mean AP" in r.output  # the criteria verdicts are printed
    seeds = (tmp_path / "report.md").read_text()
    assert "| spotlight |" in seeds and "## Criteria" in seeds
    assert len(pd.read_parquet(tmp_path / "seeds.parquet")) == 3  # target, fnet, spotlight
    tmp_path = tmp_path / "seed-1"
    rep = tmp_path / "report"
    for f in ("report.md", "summary.json", "metrics.parquet", "benchmark.json",
              "histograms.png", "metrics.png", "slices.png", "sweep.png"):
        assert (rep / f).exists() and (rep / f).stat().st_size > 0, f
    df = pd.read_parquet(rep / "metrics.parquet")
    assert {"fnet", "spotlight"} <= set(df["model"])
    # AP both ways: Otsu recomputed on the prediction, and the model's own threshold
    preds = df[df["model"].isin(["fnet", "spotlight"])]
    assert preds["ap50"].notna().all() and preds["ap50_model"].notna().all()
    assert preds["bg_spread"].notna().all()
    meta = json.loads((rep / "benchmark.json").read_text())
    assert meta["budget"] == "tiny" and set(meta["seconds"]) >= {"ingest", "evaluate"}
    text = (rep / "report.md").read_text()
    assert "fnet" in text and "spotlight" in text
    for run in ("fnet", "spotlight"):
        assert (tmp_path / "runs" / run / "model.pt").exists()
    # the Spotlight-only option reached the Spotlight model and only it
    from spotlight_scale.models.io import load_model_file

    assert meta["spotlight_options"] == {"lambda_ramp": 2}
    settings = {run: load_model_file(tmp_path / "runs" / run / "model.pt")[1]["loss_settings"]
                for run in ("fnet", "spotlight")}
    assert settings["spotlight"]["lambda_ramp"] == 2 and "lambda_ramp" not in settings["fnet"]
    assert settings["spotlight"]["dice_denominator"] == "squared"
    # the F-net-only option reached F-net and only it; the screen is the default preset's
    import yaml

    assert meta["fnet_options"] == {"init": "torch"} and meta["synth_preset"] == "calibrated"
    inits = {run: yaml.safe_load((tmp_path / "runs" / run / "config.yaml").read_text())["init"]
             for run in ("fnet", "spotlight")}
    assert inits == {"fnet": "torch", "spotlight": "fnet"}


def test_benchmark_refuses_an_unknown_spotlight_option(tmp_path):
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--spotlight-option",
                                 "lambda_rmp=2"])
    assert r.exit_code != 0 and "lambda_rmp" in r.output


def test_benchmark_refuses_a_bad_fnet_option_or_preset(tmp_path):
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--fnet-option",
                                 "init=pytorch"])
    assert r.exit_code != 0 and "init" in r.output and "pytorch" in r.output
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--fnet-option",
                                 "inti=torch"])
    assert r.exit_code != 0 and "inti" in r.output and "--fnet-option" in r.output
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--preset", "v9"])
    assert r.exit_code != 0 and "v9" in r.output
    assert not (tmp_path / "raw").exists()  # refused before anything ran


def _metrics_table(path, values):
    """A metrics table with two fields per model, every AP column equal to ``ap``."""
    from spotlight_scale.io.tables import write_table
    from spotlight_scale.pipelines.benchmark import SEED_METRICS

    rows = []
    for model, (ap, bg, pfg) in values.items():
        for field, shift in ((0, -0.1), (1, 0.1)):
            row = {"model": model, "field": field}
            row.update({c: 1.0 for c, _ in SEED_METRICS})
            row.update({f"ap{t}": ap + shift for t in range(50, 100, 5)})
            row.update(ap50=ap + shift, bg_below_otsu=bg + shift / 10, psnr_fg=pfg + shift)
            rows.append(row)
    path.mkdir(parents=True)
    write_table(pd.DataFrame(rows), path / "metrics.parquet", "metrics")
    return path


def test_seed_aggregation_and_criteria(tmp_path):
    import numpy as np

    from spotlight_scale.pipelines.benchmark import aggregate_seeds, seed_table

    seeds = {0: {"fnet": (0.30, 0.99, 14.0), "spotlight": (0.40, 0.95, 13.5)},
             1: {"fnet": (0.20, 0.98, 15.0), "spotlight": (0.22, 0.80, 13.0)}}
    reports = {s: _metrics_table(tmp_path / f"seed-{s}", v) for s, v in seeds.items()}
    table = seed_table(reports)
    assert len(table) == 4 and set(table["model"]) == {"fnet", "spotlight"}
    agg = aggregate_seeds(table)
    sp = agg["models"]["spotlight"]
    assert sp["ap_mean_50_90"]["mean"] == pytest.approx(np.mean([0.40, 0.22]))
    assert sp["ap_mean_50_90"]["std"] == pytest.approx(np.std([0.40, 0.22], ddof=1))
    assert sp["bg_below_otsu"]["mean"] == pytest.approx(np.mean([0.95, 0.80]))
    verdict = {v["metric"]: v for v in agg["criteria"]}
    assert verdict["ap_mean_50_90"]["value"] == pytest.approx(0.31 - 0.25)
    assert verdict["ap_mean_50_90"]["met"]  # +0.06 >= +0.05
    assert not verdict["bg_below_otsu"]["met"]  # 0.875 < 0.9
    assert verdict["psnr_fg"]["value"] == pytest.approx(13.25 - 14.5)
    assert not verdict["psnr_fg"]["met"]  # -1.25 dB
