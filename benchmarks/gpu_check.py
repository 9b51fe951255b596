"""The GPU check (issue 24): every GPU figure the project lacks, in one time-boxed run.

    bash benchmarks/gpu_check.sh OUTDIR            # on a machine with a CUDA GPU (< 8 min, one H100)
    bash benchmarks/gpu_check.sh --dry-run OUTDIR  # the same script on the CPU at tiny sizes (CI)

Writes ``OUTDIR/gpu_check.json`` and ``OUTDIR/gpu_check.md`` (one row per part) and each
part's output under ``OUTDIR/logs/``. Parts, in the order they run (each in its own
process with its own time limit, so a crash, a hang or an out-of-memory error is recorded
and the rest still run; a part whose dependency is missing is recorded as skipped, with
the reason):

- ``train_protocol``  it/s of the trainer's step at the paper's protocol (F-net depth 4 /
  32 channels, ~23 M parameters, batch 24 of 32x64x64, Spotlight loss, Adam), fed by the
  cached training set on the GPU: fp32 (TF32 off), TF32, bf16 autocast, bf16 autocast with
  ``cudnn.benchmark``.
- ``train_trainer``   it/s of the real training loop (``run_training``: cached data path, bf16
  autocast, loss read back every step) at the same protocol, from its loss log.
- ``cached_sampler``  patches/s of the cached training set on the GPU vs the same on the CPU.
- ``predict``         voxels/s of the predict pipeline (one Dask worker on the GPU: store
  reads, tiling, blending, writes) vs the bare bf16 forward over the same fields.
- ``train_2d``        it/s of the 2D F-net (batch 8 of 256x256), where the 2D path exists.
- ``dask_cuda``       a dask-cuda worker (``--cluster cuda``) running one predict on a store
  made by ``spotlight-scale synth`` + ``ingest``.
- ``pytest_gpu``      ``pytest -m gpu``: pass / fail / skip counts.
- ``train_compile``   ``torch.compile`` of the F-net (inductor) vs eager, bf16: compile time
  and it/s, so whether it pays.

Peak GPU memory (``torch.cuda.max_memory_allocated``) is recorded per part (and per
variant, and for Dask workers from the workers); peak RSS of each part's process too.
Timings: fixed iteration counts, warm-up excluded, ``torch.cuda.synchronize`` around the
timed region. ``--dry-run`` forces the CPU and tiny sizes: the figures then say nothing
about any GPU; the run only proves the script works.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import inspect
import json
import os
import platform
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

SCHEMA = "spotlight-scale-gpu-check/1"
STATUSES = ("ok", "skipped", "error")

#: Sizes of the full check (one GPU) and of the dry run (CPU, CI).
SIZES = {
    "gpu": dict(depth=4, channels=32, patch=(32, 64, 64), batch=24, warmup=5, iterations=30,
                fields=4, field_shape=(32, 512, 512), cached_batches=100,
                trainer_iterations=40, trainer_warmup=10,
                tile=(64, 256, 256), overlap=(16, 32, 32), predict_repeats=2,
                batch_2d=8, shape_2d=(256, 256), small_shape=(32, 128, 128),
                compile_iterations=30),
    "dry": dict(depth=1, channels=4, patch=(8, 16, 16), batch=2, warmup=1, iterations=2,
                fields=4, field_shape=(16, 64, 64), cached_batches=5,
                trainer_iterations=4, trainer_warmup=1,
                tile=(16, 32, 32), overlap=(4, 8, 8), predict_repeats=1,
                batch_2d=2, shape_2d=(32, 32), small_shape=(16, 32, 32),
                compile_iterations=2),
}
#: Time limit of each part's process (s) on a GPU; the dry run uses DRY_LIMIT_S for each
#: (generous: on a loaded 2-core CI machine the dry run's parts are slow, and a dry run that
#: ran out of time would prove nothing). The run as a whole also stops starting parts at
#: --budget-s (default GPU_BUDGET_S, or DRY_BUDGET_S).
LIMIT_S = {"setup": 90, "train_protocol": 100, "train_trainer": 60, "cached_sampler": 40, "predict": 90,
           "train_2d": 40, "dask_cuda": 90, "pytest_gpu": 120, "train_compile": 150}
DRY_LIMIT_S = 300
GPU_BUDGET_S, DRY_BUDGET_S = 420.0, 900.0
#: What a dense F-net step at the paper's protocol would reach at ~800 TFLOP/s (issue 16).
COMPUTE_BOUND_IT_S = 185


class Skip(Exception):
    """A part cannot run here (a missing dependency, no GPU, no 2D path): not a failure."""


# ---------------------------------------------------------------------------------------------
# helpers used inside the parts (each part runs in its own process)
# ---------------------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def _sync(ctx):
    torch = _torch()
    return torch.cuda.synchronize if ctx["device"] == "cuda" else (lambda: None)


def _reset_gpu_peak(ctx) -> None:
    torch = _torch()
    if ctx["device"] == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _gpu_peak_mb(ctx):
    torch = _torch()
    if ctx["device"] != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _bf16(ctx):
    torch = _torch()
    return torch.autocast(ctx["device"], dtype=torch.bfloat16)


def _store(ctx):
    from spotlight_scale.io.store import Store

    if not ctx.get("store"):
        raise RuntimeError("the shared store was not built (see the setup entry)")
    return Store(ctx["store"])


def _loss():
    from spotlight_scale.core.losses import get_loss
    from spotlight_scale.train.config import TrainConfig

    return get_loss("spotlight", **TrainConfig().spotlight_kwargs())  # the trainer's loss


def _fnet(S, **kw):
    from spotlight_scale.models.fnet import FNet

    return FNet(depth=S["depth"], channels=S["channels"], **kw)


def _cached(ctx, device, keys=None):
    from spotlight_scale.train.cached import CachedPatchSet

    store = _store(ctx)
    keys = keys if keys is not None else store.fields("train")
    return CachedPatchSet(store, keys, ctx["S"]["patch"], mode="foreground", norm="spotlight",
                          seed=0, device=device)


def _params(n: int) -> str:
    return f"{n / 1e6:.1f} M params" if n >= 10**6 else f"{n:,} params"


def _partial(ctx, metrics: dict) -> None:
    """Save what a part has measured so far: if it is then killed at its time limit, the
    report keeps these figures (with the timeout as the reason)."""
    path = ctx.get("result_path")
    if path:
        Path(path).write_text(json.dumps({"name": ctx["part"], "status": "error",
                                          "reason": "did not finish", "summary": "",
                                          "metrics": metrics}, default=str))


def _loop(S):
    return dict(batch_size=S["batch"], rank=0, world=1, start_iteration=0)


# ---------------------------------------------------------------------------------------------
# the parts: each returns (metrics, summary) or raises Skip
# ---------------------------------------------------------------------------------------------

def part_train_protocol(ctx):
    """The trainer's step at the paper's protocol, four numeric settings, one process."""
    torch = _torch()
    from bench_train import train_rate

    S, dev, sync = ctx["S"], ctx["device"], _sync(ctx)
    cached = _cached(ctx, dev)
    loss_fn = _loss()
    variants = {
        "fp32": dict(tf32=False, bf16=False, cudnn_benchmark=False),
        "tf32": dict(tf32=True, bf16=False, cudnn_benchmark=False),
        "bf16": dict(tf32=True, bf16=True, cudnn_benchmark=False),
        "bf16_cudnn_benchmark": dict(tf32=True, bf16=True, cudnn_benchmark=True),
    }
    out, params = {}, None
    for name, v in variants.items():
        torch.backends.cuda.matmul.allow_tf32 = v["tf32"]
        torch.backends.cudnn.allow_tf32 = v["tf32"]
        torch.backends.cudnn.benchmark = v["cudnn_benchmark"]
        torch.manual_seed(0)
        model = _fnet(S).to(dev)
        params = sum(p.numel() for p in model.parameters())
        _reset_gpu_peak(ctx)
        its, loss = train_rate(model, loss_fn, cached.batches(iterations=10**9, **_loop(S)),
                               warmup=S["warmup"], iterations=S["iterations"],
                               autocast=_bf16(ctx) if v["bf16"] else nullcontext(), sync=sync)
        out[name] = {"it_s": its, "loss": loss, "peak_gpu_mb": _gpu_peak_mb(ctx), **v}
        del model
        _partial(ctx, {"variants": out})
    torch.backends.cudnn.benchmark = False
    best = max(out, key=lambda k: out[k]["it_s"])
    metrics = {"params": params, "batch": S["batch"], "patch": list(S["patch"]),
               "iterations": S["iterations"], "warmup": S["warmup"], "variants": out,
               "best": best, "compute_bound_it_s": COMPUTE_BOUND_IT_S}
    summary = "; ".join(f"{k} {v['it_s']:.2f} it/s" for k, v in out.items())
    return metrics, f"{summary} ({_params(params)}, batch {S['batch']})"


def part_train_trainer(ctx):
    """The real training loop for N iterations; it/s from its own loss log."""
    from spotlight_scale.train.config import TrainConfig
    from spotlight_scale.train.trainer import read_loss_log, run_training

    S, dev = ctx["S"], ctx["device"]
    n, w = S["trainer_iterations"], S["trainer_warmup"]
    cfg = TrainConfig(iterations=n, batch_size=S["batch"], patch=tuple(S["patch"]),
                      depth=S["depth"], channels=S["channels"], device=dev, cache="on",
                      val_interval=10**6, val_batches=1, checkpoint_interval=10**6, seed=0)
    run = Path(ctx["work"]) / "trainer-run"
    _reset_gpu_peak(ctx)
    model = run_training(ctx["store"], run, cfg, progress_stream=None)
    peak = _gpu_peak_mb(ctx)
    import csv

    with open(run / "loss.csv", newline="") as fh:
        secs = {int(r["iteration"]): float(r["seconds"]) for r in csv.DictReader(fh)}
    # the loop reads the loss back every step (float(loss)), so these stamps are synchronous
    its = (n - w) / (secs[n] - secs[w])
    losses = read_loss_log(run)
    metrics = {"it_s": its, "iterations": n, "warmup": w, "data_path": "cached",
               "autocast": "bf16" if dev == "cuda" else "none",
               "final_loss": losses[-1]["train_loss"], "model_file": model is not None,
               "peak_gpu_mb": peak}
    return metrics, f"{its:.2f} it/s (run_training, iterations {w + 1}-{n}, cached, " \
                    f"{metrics['autocast']} autocast)"


def part_cached_sampler(ctx):
    """Patches/s of the cached training set on the device vs on the CPU, one process."""
    import statistics

    from bench_train import rate

    S, dev = ctx["S"], ctx["device"]
    n = S["cached_batches"]
    rates = {}
    for where in dict.fromkeys([dev, "cpu"]):
        sync = _sync(ctx) if where == "cuda" else (lambda: None)
        _reset_gpu_peak(ctx)
        t0 = time.perf_counter()
        cached = _cached(ctx, where)
        sync()
        load_s = time.perf_counter() - t0
        runs = [rate(cached.batches(iterations=n + 1, **_loop(S)), n, S["batch"], sync)
                for _ in range(3)]
        rates[where] = {"patches_s": statistics.median(runs), "runs": runs, "load_s": load_s,
                        "cached_mib": cached.nbytes / 2**20,
                        "peak_gpu_mb": _gpu_peak_mb(ctx) if where == "cuda" else None}
        del cached
    metrics = {"patches_s_device": rates[dev]["patches_s"], "patches_s_cpu": rates["cpu"]["patches_s"],
               "ratio_device_cpu": rates[dev]["patches_s"] / rates["cpu"]["patches_s"],
               "batch": S["batch"], "patch": list(S["patch"]), "by_device": rates,
               "goal_patches_s": 1300}
    if dev == "cpu":
        return metrics, (f"{metrics['patches_s_cpu']:.0f} patches/s on the CPU (no GPU to "
                         "compare with)")
    return metrics, (f"{metrics['patches_s_device']:.0f} patches/s on the GPU vs "
                     f"{metrics['patches_s_cpu']:.0f} on the CPU "
                     f"({metrics['ratio_device_cpu']:.1f}x; goal >= 1300)")


def part_predict(ctx):
    """The predict pipeline (one Dask worker on the device) vs the bare forward."""
    from bench_predict import throughput

    S, dev = ctx["S"], ctx["device"]
    _reset_gpu_peak(ctx)
    r = throughput(Path(ctx["work"]), "predict", 0, None, S["predict_repeats"], dev,
                   store=_store(ctx), model=dict(depth=S["depth"], channels=S["channels"]),
                   tile=S["tile"], overlap=S["overlap"])
    r.update(field_shape=list(S["field_shape"]), tile=list(S["tile"]),
             overlap=list(S["overlap"]), main_peak_gpu_mb=_gpu_peak_mb(ctx),
             autocast="bf16" if dev == "cuda" else "none")
    return r, (f"predict {r['voxels_s_predict']:.3g} voxel/s vs bare forward "
               f"{r['voxels_s_bare']:.3g} (overhead {r['overhead_pct']:.1f} %; "
               f"{r['fields']} fields of {tuple(S['field_shape'])})")


def part_train_2d(ctx):
    """The 2D F-net's training step (batch 8 of 256x256 on a GPU), where the 2D path exists."""
    torch = _torch()
    from spotlight_scale.models.fnet import FNet

    if "spatial_dims" not in inspect.signature(FNet).parameters:
        raise Skip("no 2D F-net in this version (FNet has no spatial_dims)")
    from bench_train import train_rate

    S, dev = ctx["S"], ctx["device"]
    b, shape = S["batch_2d"], tuple(S["shape_2d"])
    g = torch.Generator().manual_seed(0)
    n_batches = 4  # a few distinct synthetic batches, cycled (the data path is not measured)
    data = []
    for _ in range(n_batches):
        tgt = torch.randn(b, 1, *shape, generator=g)
        sig = tgt + 0.5 * torch.randn(b, 1, *shape, generator=g)
        data.append((sig.to(dev), tgt.to(dev), (tgt > 0.5).to(dev)))

    def cycle():
        i = 0
        while True:
            yield data[i % n_batches]
            i += 1
    torch.manual_seed(0)
    model = _fnet(S, spatial_dims=2).to(dev)
    _reset_gpu_peak(ctx)
    bf16 = dev == "cuda"
    its, loss = train_rate(model, _loss(), cycle(), warmup=S["warmup"],
                           iterations=S["iterations"],
                           autocast=_bf16(ctx) if bf16 else nullcontext(), sync=_sync(ctx))
    metrics = {"it_s": its, "batch": b, "shape": list(shape), "loss": loss,
               "params": sum(p.numel() for p in model.parameters()),
               "autocast": "bf16" if bf16 else "none", "peak_gpu_mb": _gpu_peak_mb(ctx)}
    return metrics, f"{its:.2f} it/s (batch {b} of 1x{shape[0]}x{shape[1]})"


def _cli(*args, cwd):
    """``spotlight-scale ARGS`` through this interpreter (no PATH lookup)."""
    subprocess.run([sys.executable, "-m", "spotlight_scale", *map(str, args)], check=True,
                   cwd=cwd)


def part_dask_cuda(ctx):
    """One predict on a dask-cuda worker, on a store made with the CLI (synth + ingest)."""
    torch = _torch()
    from bench_predict import _model_file

    from spotlight_scale.cluster import open_client
    from spotlight_scale.pipelines.predict import predict

    S, dev = ctx["S"], ctx["device"]
    missing = None
    if importlib.util.find_spec("dask_cuda") is None:
        missing = "dask-cuda is not installed (pip install -e '.[gpu-cu12]' or '.[gpu-cu13]')"
    elif dev != "cuda":
        missing = "the dry run uses no GPU, and LocalCUDACluster needs one"
    if missing and not ctx["dry"]:
        raise Skip(missing)
    work = Path(ctx["work"]) / "dask-cuda"
    shape = ",".join(map(str, S["small_shape"]))
    # the dry run cannot start a dask-cuda worker: it runs the same steps on a LocalCluster,
    # so everything around the worker is exercised, and records the part as skipped
    kind = "local" if missing else "cuda"
    stages = {}
    t0 = time.perf_counter()
    with open_client(kind, workers=1 if kind == "local" else None) as client:
        stages["cluster_start_s"] = time.perf_counter() - t0
        address = client.scheduler.address
        workers = len(client.scheduler_info()["workers"])
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        t0 = time.perf_counter()
        _cli("synth", work / "raw", "--plate", "G", "--wells", 1, "--fields", 2, "--shape",
             shape, "--voxel-size", "0.29,0.29,0.29", "--seed", 3, "-q", cwd=work.parent)
        stages["synth_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _cli("ingest", work / "raw" / "manifest.csv", work / "store", "--no-resample",
             "--cluster", address, "--patch", ",".join(map(str, S["patch"])), "-q",
             cwd=work.parent)
        stages["ingest_s"] = time.perf_counter() - t0
        _model_file(work / "run", dev, dict(depth=S["depth"], channels=S["channels"]))
        res = predict(work / "store", work / "run", "daskcuda", split="all", tile=S["tile"],
                      overlap=S["overlap"], cluster=address, device=dev, progress_stream=None)
        peaks = (list(client.run(torch.cuda.max_memory_allocated).values()) if dev == "cuda"
                 else [])
    start_s = stages["cluster_start_s"]
    if res["done"] < 1 or res["failed"]:
        raise RuntimeError(f"predict on the {kind} cluster: {res}")
    metrics = {"cluster": kind, "workers": workers, "cuda_visible_devices": sorted(
        str(v) for v in seen.values()), **stages, "done": res["done"],
        "voxels": res["voxels"], "seconds": res["seconds"],
        "voxels_s": res["voxels"] / res["seconds"],
        "worker_peak_gpu_mb": max(peaks) / 2**20 if peaks else None}
    if missing:
        metrics["stand_in"] = "LocalCluster"
        raise Skip(f"{missing}; the same predict ran on a LocalCluster instead", metrics)
    return metrics, (f"{workers} dask-cuda worker(s), started in {start_s:.1f} s; predict of "
                     f"{res['done']} fields: {metrics['voxels_s']:.3g} voxel/s")


def part_pytest_gpu(ctx):
    """``pytest -m gpu`` over the test suite; counts from its JUnit XML."""
    import xml.etree.ElementTree as ET

    if importlib.util.find_spec("pytest") is None:
        raise Skip("pytest is not installed in this environment (pip install -e '.[dev]')")
    xml = Path(ctx["out"]) / "pytest_gpu.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    # only the files that use the marker are collected (collecting the whole suite imports
    # every stage's dependencies for nothing); -m gpu then selects within them
    files = sorted(str(f.relative_to(REPO)) for f in (REPO / "tests").glob("test_*.py")
                   if "mark.gpu" in f.read_text())
    if not files:
        raise RuntimeError("no test file under tests/ uses the gpu marker")
    # its own --basetemp: a nested session must not rotate away the temporary directories
    # of a pytest session that runs this script (tests/test_gpu_check.py)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", *files, "-p", "no:cacheprovider",
           f"--junitxml={xml}", f"--basetemp={Path(ctx['work']) / 'pytest-gpu'}"]
    t0 = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    seconds = time.perf_counter() - t0
    if not xml.exists():
        raise RuntimeError(f"pytest exited {rc} without writing {xml}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    root = ET.parse(xml).getroot()
    for suite in root.iter("testsuite"):
        for k in counts:
            counts[k] += int(suite.get(k, 0))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    metrics = {"files": files, "passed": passed, "failed": counts["failures"], "errors": counts["errors"],
               "skipped": counts["skipped"], "collected": counts["tests"], "returncode": rc,
               "seconds": seconds}
    if counts["tests"] == 0:
        raise RuntimeError("pytest -m gpu selected no tests")
    text = (f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
            f"{counts['skipped']} skipped of {counts['tests']}")
    if rc != 0 or counts["failures"] or counts["errors"]:
        raise PartFailed(text, metrics)
    if ctx["device"] != "cuda" and counts["skipped"] == counts["tests"]:
        raise Skip(f"no GPU (dry run): {text}", metrics)
    return metrics, text


def part_train_compile(ctx):
    """torch.compile of the F-net vs eager (bf16 autocast), in one process."""
    torch = _torch()
    from bench_train import train_rate

    S, dev, sync = ctx["S"], ctx["device"], _sync(ctx)
    if ctx["dry"]:
        # inductor on a CPU compiles C++ for minutes; the dry run traces with dynamo only
        backend = "eager"
    else:
        if importlib.util.find_spec("triton") is None:
            raise Skip("no triton: torch.compile's inductor backend cannot build GPU kernels")
        backend = "inductor"
    cached = _cached(ctx, dev)
    loss_fn = _loss()
    autocast = _bf16(ctx) if dev == "cuda" else nullcontext()
    res = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        torch._dynamo.reset()
        model = _fnet(S).to(dev)
        run = torch.compile(model, backend=backend) if name == "compiled" else model
        batches = cached.batches(iterations=10**9, **_loop(S))
        _reset_gpu_peak(ctx)
        t0 = time.perf_counter()
        # the first steps compile (forward and backward); timed apart as the compile cost
        train_rate(run, loss_fn, batches, warmup=0, iterations=2, autocast=autocast, sync=sync)
        first_s = time.perf_counter() - t0
        its, loss = train_rate(run, loss_fn, batches, warmup=S["warmup"],
                               iterations=S["compile_iterations"], autocast=autocast, sync=sync)
        res[name] = {"it_s": its, "first_two_steps_s": first_s, "loss": loss,
                     "peak_gpu_mb": _gpu_peak_mb(ctx)}
        del run, model
        # kept if the compile then runs past the part's time limit
        _partial(ctx, {"backend": backend, "variants": res})
    speedup = res["compiled"]["it_s"] / res["eager"]["it_s"]
    # "pays": faster by 5 % or more, and the compile cost is won back within the paper's
    # 50 000 iterations
    extra = res["compiled"]["first_two_steps_s"] - res["eager"]["first_two_steps_s"]
    saved_per_it = 1 / res["eager"]["it_s"] - 1 / res["compiled"]["it_s"]
    breakeven = extra / saved_per_it if saved_per_it > 0 else None
    pays = bool(speedup >= 1.05 and breakeven is not None and breakeven < 50_000)
    if ctx["dry"]:
        metrics = {"backend": backend, "speedup": speedup, "pays": None, "compile_s": extra,
                   "it_s_eager": res["eager"]["it_s"], "it_s_compiled": res["compiled"]["it_s"],
                   "autocast": "none", "variants": res}
        return metrics, (f"torch.compile (backend {backend}) traced and trained: "
                         f"{res['compiled']['it_s']:.2f} it/s vs eager {res['eager']['it_s']:.2f} "
                         "(dry run: no speed claim)")
    metrics = {"backend": backend, "speedup": speedup, "pays": pays,
               "compile_s": extra, "breakeven_iterations": breakeven,
               "it_s_eager": res["eager"]["it_s"], "it_s_compiled": res["compiled"]["it_s"],
               "autocast": "bf16" if dev == "cuda" else "none", "variants": res}
    return metrics, (f"compiled ({backend}) {res['compiled']['it_s']:.2f} it/s vs eager "
                     f"{res['eager']['it_s']:.2f} ({speedup:.2f}x; compile {extra:.0f} s): "
                     f"{'pays' if pays else 'does not pay'}")


def build_store(work: Path, S: dict, workers: int) -> Path:
    """The shared synthetic screen, ingested with the training patch's foreground index."""
    from _common import make_screen

    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    man = make_screen(work / "raw", S["fields"], shape=tuple(S["field_shape"]))
    ingest(man, work / "store", IngestSettings(isotropic_um=None, patch=tuple(S["patch"])),
           workers=workers, progress_stream=None)
    return work / "store"


def part_setup(ctx):
    """The shared store (run first, in its own process and time limit like the parts)."""
    S = ctx["S"]
    store = build_store(Path(ctx["work"]) / "shared", S,
                        1 if ctx["dry"] else min(4, os.cpu_count() or 1))
    return {"store": str(store), "fields": S["fields"], "field_shape": list(S["field_shape"])}, \
        f"{S['fields']} fields of {tuple(S['field_shape'])}, patch index {tuple(S['patch'])}"


class PartFailed(Exception):
    """The part ran and measured, but what it checks failed (e.g. a GPU test)."""


PARTS = {
    "train_protocol": part_train_protocol,
    "train_trainer": part_train_trainer,
    "cached_sampler": part_cached_sampler,
    "predict": part_predict,
    "train_2d": part_train_2d,
    "dask_cuda": part_dask_cuda,
    "pytest_gpu": part_pytest_gpu,
    "train_compile": part_train_compile,
}
RUNNABLE = {"setup": part_setup, **PARTS}
NEEDS_STORE = {"train_protocol", "train_trainer", "cached_sampler", "predict", "train_compile"}


def _rss_mb():
    from _common import peak_rss_mb

    try:
        return peak_rss_mb()
    except (OSError, RuntimeError):
        return None


def run_child(name: str, ctx_path: Path, result_path: Path) -> int:
    """Run one part in this process and write its result (never raises)."""
    ctx = json.loads(ctx_path.read_text())
    ctx["S"] = {k: tuple(v) if isinstance(v, list) else v for k, v in ctx["S"].items()}
    ctx.update(part=name, result_path=str(result_path))
    res = {"name": name, "status": "error", "reason": None, "summary": "", "metrics": {}}
    try:
        if name in os.environ.get("GPU_CHECK_FAIL", "").split(","):  # for the script's own test
            raise RuntimeError("failure injected by GPU_CHECK_FAIL")
        torch = _torch()
        if ctx["device"] == "cuda":
            torch.cuda.reset_peak_memory_stats()
        metrics, summary = RUNNABLE[name](ctx)
        res.update(status="ok", metrics=metrics, summary=summary)
    except Skip as e:
        res.update(status="skipped", reason=str(e.args[0]),
                   metrics=e.args[1] if len(e.args) > 1 else {})
    except PartFailed as e:
        res.update(status="error", reason=str(e.args[0]), metrics=e.args[1])
    except BaseException as e:  # noqa: BLE001 - recorded, the next part still runs
        traceback.print_exc()
        res.update(status="error", reason=f"{type(e).__name__}: {e}"[:500])
    try:
        res["peak_gpu_mb"] = _gpu_peak_mb(ctx) if ctx["device"] == "cuda" else None
    except Exception:  # noqa: BLE001 - a broken CUDA context must not lose the result
        res["peak_gpu_mb"] = None
    res["peak_rss_mb"] = _rss_mb()
    result_path.write_text(json.dumps(res, default=str))
    return 0


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------

def _version(mod: str):
    if importlib.util.find_spec(mod) is None:
        return None
    try:
        from importlib.metadata import version

        return version({"dask_cuda": "dask-cuda", "cupy": "cupy"}.get(mod, mod))
    except Exception:  # noqa: BLE001 - cupy ships as cupy-cuda12x etc.
        return "installed"


def environment(device: str) -> dict:
    torch = _torch()
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cudnn": None, "device": device,
           "gpu": None, "gpu_capability": None, "gpu_memory_gib": None,
           "cpu_count": os.cpu_count(), "host": platform.node()}
    for mod in ("numpy", "dask", "distributed", "zarr", "dask_cuda", "cupy", "triton", "pytest"):
        env[mod] = _version(mod)
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_capability=f"{p.major}.{p.minor}",
                   gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    if device == "cuda" and shutil.which("nvidia-smi"):
        try:
            env["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,"
                 "clocks.max.sm", "--format=csv,noheader"], capture_output=True, text=True,
                timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            env["nvidia_smi"] = None
    try:
        env["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["commit"] = None
    return env


def check_gpu() -> str | None:
    """None when torch can use a CUDA GPU; else the one line that says why not."""
    torch = _torch()
    if torch.version.cuda is None:
        return (f"gpu_check: torch {torch.__version__} in {sys.prefix} is a CPU-only build: "
                "install a CUDA torch wheel into this environment first (benchmarks/README.md), "
                "or pass --dry-run")
    if not torch.cuda.is_available():
        return (f"gpu_check: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU "
                "(torch.cuda.is_available() is False): check the driver and "
                "CUDA_VISIBLE_DEVICES, or pass --dry-run")
    return None




def _children_cpu_s() -> float:
    """CPU seconds of this process's finished children and their waited-for descendants (the
    part's process, its Dask workers, the nested pytest)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_part(name, ctx_path, out: Path, limit_s: float) -> dict:
    res_path = out / "logs" / f"{name}.result.json"
    log_path = out / "logs" / f"{name}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--ctx", str(ctx_path),
           "--result", str(res_path)]
    res_path.unlink(missing_ok=True)  # never read a result left by an earlier run in OUTDIR
    t0 = time.perf_counter()
    cpu0 = _children_cpu_s()
    with open(log_path, "w") as log:
        # its own session: on a timeout the whole group (Dask workers, pytest) is ended
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = time.perf_counter() - t0
    cpu_s = _children_cpu_s() - cpu0
    if res_path.exists():
        res = json.loads(res_path.read_text())
        partial = res.get("reason") == "did not finish"
        if partial and rc is None:  # killed after saving a partial result
            res["reason"] = (f"timed out after {limit_s:.0f} s (the figures measured before "
                             "are kept)")
        elif partial:  # died after saving a partial result
            res["reason"] = (f"part process exited {rc} before finishing (see "
                             f"{log_path.name}; the figures measured before are kept)")
        elif rc is None:  # the result was complete; the process hung on its way out
            res["note"] = f"the part's process was killed at {limit_s:.0f} s after its result"
    elif rc is None:
        res = {"name": name, "status": "error", "reason": f"timed out after {limit_s:.0f} s",
               "metrics": {}}
    else:
        res = {"name": name, "status": "error",
               "reason": f"part process exited {rc} without a result (see {log_path.name})",
               "metrics": {}}
    res.setdefault("summary", "")
    res.setdefault("peak_gpu_mb", None)
    res.setdefault("peak_rss_mb", None)
    res.update(seconds=round(seconds, 2), cpu_s=round(cpu_s, 2), limit_s=limit_s,
               log=f"logs/{log_path.name}")
    return res


def _fmt(x, digits=0):
    return "" if x is None else f"{x:.{digits}f}"


def markdown(report: dict) -> str:
    env = report["environment"]
    if report["dry_run"]:
        title = ("GPU check -- **CPU dry run** (tiny sizes: proves the script runs; "
                 "no figure here is a GPU figure)")
        where = f"CPU, {env['cpu_count']} cores, torch {env['torch']}"
    else:
        title = "GPU check"
        where = (f"{env['gpu']} ({env['gpu_memory_gib']} GiB, sm {env['gpu_capability']}), "
                 f"torch {env['torch']} / CUDA {env['torch_cuda']} / cuDNN {env['cudnn']}, "
                 f"{env['cpu_count']} CPU cores")
    lines = [f"### {title}", "",
             f"{report['started_utc']}, commit {env.get('commit')}, {where}; "
             f"total {report['total_seconds']:.0f} s of a {report['budget_s']:.0f} s budget "
             f"({report['cpu_seconds']:.0f} CPU-seconds). "
             f"`bash benchmarks/gpu_check.sh {'--dry-run ' if report['dry_run'] else ''}OUTDIR`",
             "",
             "| part | status | result | peak GPU MiB | peak RSS MiB | s | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for p in [dict(report["setup"], name="setup (synth + ingest)"), *report["parts"]]:
        text = p["summary"] if p["status"] == "ok" else (p["reason"] or "")
        text = text.replace("|", "/").replace("\n", " ")
        lines.append(f"| {p['name']} | {p['status']} | {text} | {_fmt(p.get('peak_gpu_mb'))} | "
                     f"{_fmt(p.get('peak_rss_mb'))} | {_fmt(p['seconds'], 1)} | "
                     f"{_fmt(p.get('cpu_s'), 1)} |")
    if not report.get("complete"):
        lines.append("")
        lines.append("**Incomplete**: written while the run was going on (it was killed, or "
                     "is still running); the parts listed are those done.")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", nargs="?", type=Path)
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny sizes: check that the script works (CI)")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help=f"comma-separated subset of: {', '.join(PARTS)}")
    ap.add_argument("--budget-s", type=float, default=None,
                    help=f"stop starting parts after this many seconds (default "
                         f"{GPU_BUDGET_S:.0f} on a GPU, {DRY_BUDGET_S:.0f} dry)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ctx", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.child, args.ctx, args.result)
    if args.outdir is None:
        ap.error("OUTDIR is required")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        ap.error(f"unknown part(s) {', '.join(unknown)}; expected some of {', '.join(PARTS)}")
    t_start = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    dry = args.dry_run
    if not dry:
        problem = check_gpu()
        if problem:
            print(problem, file=sys.stderr)
            return 3
    device = "cpu" if dry else "cuda"
    budget = args.budget_s or (DRY_BUDGET_S if dry else GPU_BUDGET_S)
    S = SIZES["dry" if dry else "gpu"]
    out = args.outdir.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    env = environment(device)
    print(f"gpu_check: {'DRY RUN on the CPU' if dry else env['gpu']}; parts {', '.join(parts)}; "
          f"budget {budget:.0f} s; output {out}", flush=True)
    report = {"schema": SCHEMA, "dry_run": dry, "started_utc": started, "budget_s": budget,
              "environment": env, "sizes": S, "parts": []}
    ctx = {"device": device, "dry": dry, "S": S, "store": None, "work": str(work),
           "out": str(out)}
    ctx_path = work / "ctx.json"

    def write(final: bool = False):
        """The report so far: written after every part, so that a run killed from outside
        still leaves the figures measured before."""
        import resource

        report["complete"] = final
        report["total_seconds"] = round(time.perf_counter() - t_start, 2)
        me = resource.getrusage(resource.RUSAGE_SELF)
        report["cpu_seconds"] = round(me.ru_utime + me.ru_stime + _children_cpu_s(), 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(markdown(report))

    try:
        if any(p in NEEDS_STORE for p in parts):
            ctx_path.write_text(json.dumps(ctx))
            setup = _run_part("setup", ctx_path, out,
                              min(DRY_LIMIT_S if dry else LIMIT_S["setup"], budget))
            ctx["store"] = setup["metrics"].get("store") if setup["status"] == "ok" else None
        else:
            setup = {"name": "setup", "status": "skipped", "summary": "", "metrics": {},
                     "reason": "no selected part needs the shared store", "seconds": 0.0}
        report["setup"] = setup
        print(f"  setup: {setup['status']} ({setup['seconds']:.1f} s) "
              f"{setup['summary'] if setup['status'] == 'ok' else setup['reason']}", flush=True)
        store = ctx["store"]
        ctx_path.write_text(json.dumps(ctx))
        write()
        for name in parts:
            left = budget - (time.perf_counter() - t_start)
            if left < 10:
                res = {"name": name, "status": "skipped", "summary": "", "metrics": {},
                       "reason": f"the run's budget of {budget:.0f} s was spent before this part",
                       "peak_gpu_mb": None, "peak_rss_mb": None, "seconds": 0.0}
            elif name in NEEDS_STORE and store is None:
                res = {"name": name, "status": "error", "summary": "", "metrics": {},
                       "reason": "the shared store could not be built (see setup)",
                       "peak_gpu_mb": None, "peak_rss_mb": None, "seconds": 0.0}
            else:
                limit = min(DRY_LIMIT_S if dry else LIMIT_S[name], left)
                res = _run_part(name, ctx_path, out, limit)
            report["parts"].append(res)
            print(f"  {name}: {res['status']} ({res['seconds']:.1f} s) "
                  f"{res['summary'] if res['status'] == 'ok' else res['reason']}", flush=True)
            write()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write(final=True)
    n_err = sum(p["status"] == "error" for p in report["parts"]) + (setup["status"] == "error")
    print(f"gpu_check: {report['total_seconds']:.0f} s; {n_err} error(s); wrote "
          f"{out / 'gpu_check.json'} and {out / 'gpu_check.md'}", flush=True)
    return 1 if n_err else 0


if __name__ == "__main__":
    sys.exit(main())
