"""benchmarks/gpu_check.sh (issue 24): the GPU check's --dry-run runs every part on the CPU at
tiny sizes and writes the JSON and the markdown table, so the script cannot rot before the
day a GPU is lent. The run is real: a subprocess of the shell script, real store, real
trainer, real Dask cluster, a real nested ``pytest -m gpu``."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
PARTS = ["train_protocol", "train_trainer", "cached_sampler", "predict", "train_2d",
         "dask_cuda", "pytest_gpu", "train_compile"]


def _run(*args, timeout=1200, **env):
    env = dict(os.environ, PYTHON=sys.executable, **env)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    proc = _run("--dry-run", out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    return out, report, {p["name"]: p for p in report["parts"]}


@pytest.mark.slow
def test_dry_run_report_schema(dry_run):
    out, report, parts = dry_run
    assert report["schema"] == "spotlight-scale-gpu-check/1"
    assert report["dry_run"] is True
    env = report["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__
    assert report["setup"]["status"] == "ok" and report["complete"] is True
    assert 0 < report["total_seconds"] <= report["budget_s"]
    assert [p["name"] for p in report["parts"]] == PARTS
    for p in report["parts"]:
        assert p["status"] in ("ok", "skipped"), (p["name"], p["status"], p["reason"])
        if p["status"] == "ok":
            assert p["summary"], p["name"]
        else:
            assert p["reason"], p["name"]
        assert p["peak_gpu_mb"] is None  # the dry run never touches a GPU
        assert _positive(p["peak_rss_mb"]) and _positive(p["seconds"]), p["name"]
        assert (out / p["log"]).exists()


@pytest.mark.slow
def test_dry_run_figures(dry_run):
    from spotlight_scale.models.fnet import FNet

    _, report, parts = dry_run
    S = report["sizes"]
    tp = parts["train_protocol"]
    assert tp["status"] == "ok"
    m = tp["metrics"]
    params = sum(p.numel() for p in FNet(depth=S["depth"], channels=S["channels"]).parameters())
    assert m["params"] == params and m["batch"] == S["batch"]
    assert set(m["variants"]) == {"fp32", "tf32", "bf16", "bf16_cudnn_benchmark"}
    for v in m["variants"].values():
        assert _positive(v["it_s"]) and math.isfinite(v["loss"])

    tr = parts["train_trainer"]
    assert tr["status"] == "ok"
    assert _positive(tr["metrics"]["it_s"]) and tr["metrics"]["data_path"] == "cached"
    assert math.isfinite(tr["metrics"]["final_loss"]) and tr["metrics"]["model_file"]

    cs = parts["cached_sampler"]["metrics"]
    assert parts["cached_sampler"]["status"] == "ok"
    assert _positive(cs["patches_s_device"]) and _positive(cs["patches_s_cpu"])

    pr = parts["predict"]
    assert pr["status"] == "ok"
    assert pr["metrics"]["fields"] == S["fields"]
    assert _positive(pr["metrics"]["voxels_s_predict"]) and _positive(pr["metrics"]["voxels_s_bare"])
    assert pr["metrics"]["recompute"] >= 1
    assert pr["metrics"]["voxels"] == S["fields"] * math.prod(S["field_shape"])

    t2 = parts["train_2d"]
    if "spatial_dims" in inspect.signature(FNet).parameters:
        assert t2["status"] == "ok" and _positive(t2["metrics"]["it_s"])
    else:
        assert t2["status"] == "skipped" and "no 2D F-net" in t2["reason"]

    dc = parts["dask_cuda"]  # no GPU here: skipped, but the same predict ran on a LocalCluster
    assert dc["status"] == "skipped" and dc["metrics"]["stand_in"] == "LocalCluster"
    assert dc["metrics"]["done"] == 2 and _positive(dc["metrics"]["voxels_s"])

    pg = parts["pytest_gpu"]  # the gpu-marked tests exist and are skipped without CUDA
    assert pg["metrics"]["collected"] >= 1
    assert pg["metrics"]["failed"] == pg["metrics"]["errors"] == 0
    if not torch.cuda.is_available():  # (a dry run on a GPU machine runs them for real)
        assert pg["status"] == "skipped"
        assert pg["metrics"]["skipped"] == pg["metrics"]["collected"]

    tc = parts["train_compile"]
    assert tc["status"] == "ok" and tc["metrics"]["backend"] == "eager"
    assert _positive(tc["metrics"]["it_s_eager"]) and _positive(tc["metrics"]["it_s_compiled"])
    assert tc["metrics"]["pays"] is None  # no speed claim from a dry run


@pytest.mark.slow
def test_dry_run_markdown_table(dry_run):
    out, report, parts = dry_run
    md = (out / "gpu_check.md").read_text()
    assert "CPU dry run" in md and "no figure here is a GPU figure" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| part | status |")
    for name, p in parts.items():
        assert any(r.startswith(f"| {name} | {p['status']} |") for r in rows), name
    assert rows[1].startswith("| setup (synth + ingest) | ok |")
    assert "Incomplete" not in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the full check would run")
def test_cpu_only_torch_refused_in_one_line(tmp_path):
    proc = _run(tmp_path / "out", timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "gpu_check:" in lines[0]
    assert ("CPU-only build" in lines[0]) == (torch.version.cuda is None)
    assert not (tmp_path / "out" / "gpu_check.json").exists()


def test_unknown_part_is_refused(tmp_path):
    proc = _run("--dry-run", tmp_path, "--parts", "predict,warp_drive", timeout=120)
    assert proc.returncode == 2 and "warp_drive" in proc.stderr


def test_a_part_past_its_limit_is_recorded_and_killed(tmp_path):
    """The time box: a part still running at its limit is killed (its process group) and
    recorded as an error; the driver goes on."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    (tmp_path / "logs").mkdir()
    ctx = tmp_path / "ctx.json"
    ctx.write_text(json.dumps({"device": "cpu", "dry": True, "S": gpu_check.SIZES["dry"],
                               "store": None, "work": str(tmp_path), "out": str(tmp_path)}))
    res = gpu_check._run_part("pytest_gpu", ctx, tmp_path, limit_s=0.5)
    assert res["status"] == "error" and "timed out after" in res["reason"]
    assert res["seconds"] < 30


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path):
    proc = _run("--dry-run", tmp_path, "--parts", "train_2d,pytest_gpu",
                GPU_CHECK_FAIL="train_2d", timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == ["train_2d", "pytest_gpu"]
    assert parts["train_2d"]["status"] == "error"
    assert "GPU_CHECK_FAIL" in parts["train_2d"]["reason"]
    assert parts["pytest_gpu"]["status"] == "skipped"  # it ran after the failure
    assert parts["pytest_gpu"]["metrics"]["collected"] >= 1
    assert report["setup"]["status"] == "skipped"  # neither part needs the shared store
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| train_2d | error | RuntimeError: failure injected by GPU_CHECK_FAIL |" in md
