"""`benchmark --tiny` runs every stage end to end and writes every report file."""

import json

import pandas as pd
from click.testing import CliRunner

from spotlight_scale.cli import cli


def test_benchmark_tiny_end_to_end(tmp_path):
    r = CliRunner().invoke(cli, ["benchmark", str(tmp_path), "--tiny", "--seed", "1"])
    assert r.exit_code == 0, r.output
    rep = tmp_path / "report"
    for f in ("report.md", "summary.json", "metrics.parquet", "benchmark.json",
              "histograms.png", "metrics.png", "slices.png", "sweep.png"):
        assert (rep / f).exists() and (rep / f).stat().st_size > 0, f
    df = pd.read_parquet(rep / "metrics.parquet")
    assert {"fnet", "spotlight"} <= set(df["model"])
    meta = json.loads((rep / "benchmark.json").read_text())
    assert meta["budget"] == "tiny" and set(meta["seconds"]) >= {"ingest", "evaluate"}
    text = (rep / "report.md").read_text()
    assert "fnet" in text and "spotlight" in text
    for run in ("fnet", "spotlight"):
        assert (tmp_path / "runs" / run / "model.pt").exists()
