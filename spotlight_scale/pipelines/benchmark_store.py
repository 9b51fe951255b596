"""Benchmark on any store: F-net against Spotlight with learning curves, several seeds.

``spotlight-scale benchmark WORK --store STORE`` trains every model variant of
:data:`MODELS` once per seed on the store's training fields and keeps a snapshot of
each run at every budget of ``checkpoints`` (``WORK/runs/<model>/seed-<S>/model-<N>.pt``):
one run per seed, scored at several iterations, so a learning curve is one training,
not one per budget. Training goes breadth-first (every run to the first budget, then
every run to the next), so an interrupted benchmark has complete low budgets; it is
resumable at any point (a run continues from its last checkpoint, a snapshot that
exists is not trained again).

Scoring (:func:`score_snapshots`) predicts the test fields with each snapshot,
segments each prediction twice (Otsu recomputed on the prediction, and at the
model's own threshold, ``segment --threshold model``), and evaluates; the report
(:func:`write_curve_report`) gives mean +- s.d. over seeds per model and budget, and
compares Spotlight with the stronger F-net at each budget.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

#: Model variants: train config keys over the common settings.
MODELS: dict[str, dict[str, Any]] = {
    "fnet": {"loss": "mse", "init": "fnet"},  # F-net with the reference initialisation
    "fnet-torch": {"loss": "mse", "init": "torch"},  # F-net with PyTorch's initialisation
    "spotlight": {"loss": "spotlight"},  # the shipped default (the authors' loss)
    # the first loss this project shipped: clamp mapping, Sorensen Dice, foreground MSE
    "spotlight-clamp": {"loss": "spotlight", "dice_probability": "clamp",
                        "dice_denominator": "linear", "mse_denominator": "foreground"},
    # an ablation beyond the paper: the shipped loss with the MSE over every pixel, so the
    # background is held by the F-net's term (does Dice still help once it is?)
    "spotlight-mse-all": {"loss": "spotlight", "mse_region": "all"},
}

#: Common training settings of the store benchmark (a 2D F-net small enough for a CPU:
#: depth 3, 16 channels, 64x64 patches, batch 8; Adam at the paper's settings).
COMMON = {"depth": 3, "channels": 16, "patch": (64, 64), "batch_size": 8, "device": "cpu",
          "num_workers": 0, "val_interval": 1000, "checkpoint_interval": 500}


def snapshot_path(workdir: Path, model: str, seed: int, iteration: int) -> Path:
    return Path(workdir) / "runs" / model / f"seed-{seed}" / f"model-{iteration}.pt"


def plan_jobs(models: Sequence[str], seeds: Sequence[int], checkpoints: Sequence[int],
              one_seed: Sequence[str] = ()) -> list[tuple[int, int, str]]:
    """``(iteration, seed, model)`` in the order they are trained: breadth-first over
    budgets; models in ``one_seed`` run with the first seed only."""
    unknown = [m for m in list(models) + list(one_seed) if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown benchmark model(s) {', '.join(unknown)}; known: "
                         f"{', '.join(MODELS)}")
    if sorted(set(checkpoints)) != list(checkpoints) or min(checkpoints) < 1:
        raise ValueError(f"--checkpoints must be increasing positive iterations, got "
                         f"{list(checkpoints)}")
    jobs = []
    for n in checkpoints:
        for s in seeds:
            for m in models:
                if m in one_seed and s != seeds[0]:
                    continue
                jobs.append((int(n), int(s), m))
    return jobs


def train_config(model: str, seed: int, iteration: int, common: dict | None = None):
    from ..config import config_from_mapping
    from ..train.config import TrainConfig

    data = {**COMMON, **(common or {}), **MODELS[model], "seed": int(seed),
            "iterations": int(iteration)}
    return config_from_mapping(TrainConfig, data, f"benchmark model {model!r}")


def train_snapshots(store, workdir, *, models: Sequence[str], seeds: Sequence[int],
                    checkpoints: Sequence[int], one_seed: Sequence[str] = (),
                    common: dict | None = None, progress_stream=sys.stderr) -> list[Path]:
    """Train every (model, seed) run to every budget, keeping a snapshot at each; returns
    the snapshots in training order (existing ones are kept, not trained again)."""
    from ..train.checkpoint import latest_path, load_checkpoint
    from .train import train

    out = []
    for n, s, m in plan_jobs(models, seeds, checkpoints, one_seed):
        snap = snapshot_path(workdir, m, s, n)
        out.append(snap)
        if snap.exists():
            continue
        run = snap.parent
        resume = latest_path(run).exists()
        if resume:
            at = int(load_checkpoint(run)["iteration"])
            if at > n:
                raise RuntimeError(f"{run}: its checkpoint is at iteration {at}, past the budget "
                                   f"{n} whose snapshot is missing; remove the run to redo it")
        print(f"== train {m} seed {s} to {n} iterations", file=progress_stream, flush=True)
        train(store, run, train_config(m, s, n, common), resume=resume, overwrite=not resume,
              progress_stream=progress_stream)
        tmp = snap.with_suffix(".tmp")
        shutil.copyfile(run / "model.pt", tmp)
        tmp.replace(snap)
    return out


def run_store_benchmark(store, workdir, *, models: Sequence[str], seeds: Sequence[int],
                        checkpoints: Sequence[int], one_seed: Sequence[str] = (),
                        common: dict | None = None, workers: int = 2, train_only: bool = False,
                        score_only: bool = False, progress_stream=sys.stderr) -> dict[str, Any]:
    """Train (unless ``score_only``: the snapshots trained so far, e.g. by other processes)
    and, unless ``train_only``, score and report the store benchmark."""
    from ..io.store import Store

    if train_only and score_only:
        raise ValueError("--train-only and --score-only exclude each other")
    Store(store)  # fail early, naming the store
    for m in models:  # every config is checked before anything trains
        train_config(m, seeds[0], checkpoints[-1], common)
    snaps = [] if score_only else train_snapshots(
        store, workdir, models=models, seeds=seeds, checkpoints=checkpoints, one_seed=one_seed,
        common=common, progress_stream=progress_stream)
    if train_only:
        return {"message": f"{len(snaps)} snapshot(s) trained under {Path(workdir) / 'runs'}"}
    report = score_and_report(store, workdir, models=models, seeds=seeds,
                              checkpoints=checkpoints, one_seed=one_seed, workers=workers,
                              progress_stream=progress_stream)
    return {"message": f"report at {report}", "report": str(report)}


# --------------------------------------------------------------------------- scoring
#: Columns of the learning-curve table, in report order: (column, label).
CURVE_METRICS = (
    ("pearson_r", "Pearson r"), ("psnr", "PSNR (dB)"), ("psnr_fg", "PSNR fg (dB)"),
    ("ssim", "SSIM"), ("ap50", "AP@0.5 (Otsu)"), ("ap_mean_50_90", "AP 0.5-0.9 (Otsu)"),
    ("ap50_model", "AP@0.5 (model thr.)"), ("ap_mean_50_90_model", "AP 0.5-0.9 (model thr.)"),
    ("bg_below_otsu", "bg below Otsu"), ("bg_spread", "bg spread"),
    ("cosine_nuclei_median", "cosine distance"),
)


def pearson_r(a, b) -> float:
    """Pearson correlation of two images over all voxels (float64 sums)."""
    import numpy as np

    x = np.asarray(a, np.float64).ravel()
    y = np.asarray(b, np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def prediction_name(model: str, seed: int, iteration: int) -> str:
    return f"bench-{model}-s{seed}-i{iteration}"


def score_snapshots(store, workdir, *, models, seeds, checkpoints, one_seed=(), workers: int = 2,
                    split: str = "test", progress_stream=sys.stderr):
    """Score every trained snapshot on ``split``; returns the per-field curve table
    (one row per field, model, seed, iteration) and writes ``WORK/curves.parquet``.

    Each snapshot is predicted into the store (``bench-<model>-s<seed>-i<N>``), segmented
    at the Otsu threshold of its prediction (labels of that name) and at its model's own
    threshold (``...-model``), profiled, and evaluated against ``labels:gt`` with the
    target segmented by the same recipe (``bench-target``). A snapshot scored before (its
    rows in ``curves.parquet``) is not scored again.
    """
    import pandas as pd
    from distributed import Client, LocalCluster

    from ..io.store import Store
    from ..io.tables import read_table, write_table
    from .evaluate import evaluate
    from .predict import predict
    from .profile import profile
    from .segment import segment

    w = Path(workdir)
    st = Store(store)
    table_path = w / "curves.parquet"
    old = read_table(table_path, "benchmark_curves") if table_path.exists() else None
    scored = set() if old is None else set(zip(old["model"], old["seed"], old["iteration"]))
    todo = [(n, s, m) for n, s, m in plan_jobs(models, seeds, checkpoints, one_seed)
            if snapshot_path(w, m, s, n).exists() and (m, s, n) not in scored]
    rows = []
    if todo:
        with LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address=None) as lc, Client(lc):
            addr = lc.scheduler_address
            common = dict(split=split, cluster=addr, progress_stream=progress_stream)
            segment(st.root, image="target", name="bench-target", **common)
            profile(st.root, labels="bench-target", image="target",
                    out=w / "profiles" / "target", **common)  # evaluate reads profiles/target
            for n, s, m in todo:
                name = prediction_name(m, s, n)
                print(f"== score {name}", file=progress_stream, flush=True)
                predict(st.root, snapshot_path(w, m, s, n), name, overwrite=True, **common)
                segment(st.root, image=f"prediction:{name}", name=name, overwrite=True, **common)
                segment(st.root, image=f"prediction:{name}", name=f"{name}-model",
                        foreground="model", overwrite=True, **common)
                profile(st.root, labels=name, image=f"prediction:{name}",
                        out=w / "profiles" / name, overwrite=True, **common)
                out = w / "scores" / name
                # evaluate finds the model-threshold labels by name (<labels>-model)
                evaluate(st, [name], out=out, labels={name: name}, target_labels="bench-target",
                         profiles=w / "profiles", split=split, cluster=addr, overwrite=True,
                         report=False)
                df = read_table(out / "metrics.parquet", "metrics")
                for _, r in df[df["model"] == name].iterrows():
                    key = next(k for k in st.fields(split) if k.field == r["Metadata_Site"]
                               and k.well == r["Metadata_Well"] and k.plate == r["Metadata_Plate"])
                    pred = st.read_named(key, f"prediction:{name}")
                    row = {"model": m, "seed": int(s), "iteration": int(n),
                           "Metadata_Plate": key.plate, "Metadata_Well": key.well,
                           "Metadata_Site": key.field,
                           "pearson_r": pearson_r(pred, st.read(key, "target"))}
                    row.update({col: float(r[col]) for col, _ in CURVE_METRICS if col in r.index})
                    rows.append(row)
                table = pd.concat([t for t in (old, pd.DataFrame(rows)) if t is not None],
                                  ignore_index=True)
                write_table(table, table_path, "benchmark_curves")  # after every snapshot
    return read_table(table_path, "benchmark_curves") if table_path.exists() else None


def curve_summary(table):
    """Per model and iteration: mean and s.d. over seeds of each seed's field mean."""
    per_seed = (table.groupby(["model", "iteration", "seed"], sort=True)
                [[c for c, _ in CURVE_METRICS if c in table]].mean().reset_index())
    agg = per_seed.groupby(["model", "iteration"], sort=True).agg(["mean", "std", "count"])
    return per_seed, agg


def stronger_fnet(per_seed, iteration: int, metric: str = "ap_mean_50_90") -> str | None:
    """The F-net variant with the higher seed-mean ``metric`` at ``iteration``."""
    sub = per_seed[(per_seed["iteration"] == iteration)
                   & per_seed["model"].str.startswith("fnet")]
    if sub.empty:
        return None
    return str(sub.groupby("model")[metric].mean().idxmax())


def write_curve_report(workdir, table) -> Path:
    """``WORK/report.md`` and ``WORK/curves.png``: learning curves, mean +- s.d. over seeds,
    and Spotlight against the stronger F-net at each budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..io.atomic import atomic_write_text

    w = Path(workdir)
    per_seed, agg = curve_summary(table)
    cols = [(c, label) for c, label in CURVE_METRICS if c in per_seed]
    lines = ["# F-net vs Spotlight: learning curves on a store", "",
             "Each run is one training per seed, scored on the test fields at each budget "
             "(snapshots of the same run). Values: mean +- s.d. over seeds of each seed's mean "
             "over the test fields (n = seeds). AP is the mean over IoU 0.5-0.9 unless noted; "
             "'Otsu' segments the prediction at the Otsu threshold recomputed on it, 'model "
             "thr.' at the level its model was trained to put the foreground boundary at.", "",
             "| model | iterations | n | " + " | ".join(label for _, label in cols) + " |",
             "|---|---|---" + "|---" * len(cols) + "|"]
    seeds = per_seed.groupby(["model", "iteration"]).size()
    for (model, it), row in agg.iterrows():
        n = int(seeds[(model, it)])
        cells = []
        for c, _ in cols:
            m, s = row[(c, "mean")], row[(c, "std")]
            cells.append("-" if not np.isfinite(m) else
                         f"{m:.3f}" + (f" +- {s:.3f}" if n > 1 and np.isfinite(s) else ""))
        lines.append(f"| {model} | {it} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Spotlight against F-net at each budget", "",
              "Differences are Spotlight minus the F-net variant, on the seeds both have "
              "(mean +- s.d. over those seeds); **stronger** marks the F-net variant with the "
              "higher mean AP (Otsu) at that budget, the one the issue compares against.", "",
              "| iterations | F-net variant | seeds | d AP (Otsu) | d AP (model thr.) | "
              "d Pearson r | d PSNR fg | Spotlight bg spread / F-net's |", "|---" * 8 + "|"]
    for it in sorted(per_seed["iteration"].unique()):
        ref = stronger_fnet(per_seed, it)
        sp = per_seed[(per_seed["model"] == "spotlight") & (per_seed["iteration"] == it)]
        variants = sorted(m for m in per_seed["model"].unique() if m.startswith("fnet"))
        for var in variants:
            fn = per_seed[(per_seed["model"] == var) & (per_seed["iteration"] == it)]
            both = sorted(set(sp["seed"]) & set(fn["seed"]))
            if not both:
                continue
            a = sp.set_index("seed").loc[both]
            b = fn.set_index("seed").loc[both]

            def d(c):
                if c not in a:
                    return "-"
                v = (a[c] - b[c]).to_numpy(float)
                return f"{v.mean():+.3f}" + (f" +- {v.std(ddof=1):.3f}" if len(v) > 1 else "")

            ratio = "-"
            if "bg_spread" in a:
                ratio = f"{float(a['bg_spread'].mean() / b['bg_spread'].mean()):.2f}"
            name = f"**{var}** (stronger)" if var == ref else var
            lines.append(f"| {it} | {name} | {len(both)} | {d('ap_mean_50_90')} | "
                         f"{d('ap_mean_50_90_model')} | {d('pearson_r')} | {d('psnr_fg')} | "
                         f"{ratio} |")
    show = [c for c in ("pearson_r", "ap_mean_50_90", "ap_mean_50_90_model", "psnr_fg",
                        "bg_below_otsu", "bg_spread") if c in per_seed]
    fig, axes = plt.subplots(1, len(show), figsize=(3.2 * len(show), 3.0))
    for ax, c in zip(np.atleast_1d(axes), show):
        for model, g in per_seed.groupby("model", sort=True):
            st = g.groupby("iteration")[c].agg(["mean", "std"]).reset_index()
            ax.errorbar(st["iteration"], st["mean"], yerr=st["std"].fillna(0), marker="o",
                        capsize=2, label=model)
        ax.set_xscale("log")
        ax.set_title(dict(CURVE_METRICS)[c], fontsize=9)
        ax.set_xlabel("iterations")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(w / "curves.png", dpi=110)
    plt.close(fig)
    lines += ["", "![learning curves](curves.png)", ""]
    path = w / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def score_and_report(store, workdir, *, models, seeds, checkpoints, one_seed=(), workers=2,
                     progress_stream=sys.stderr) -> Path:
    table = score_snapshots(store, workdir, models=models, seeds=seeds, checkpoints=checkpoints,
                            one_seed=one_seed, workers=workers, progress_stream=progress_stream)
    if table is None or table.empty:
        raise RuntimeError(f"{workdir}: no snapshot to score; train first")
    return write_curve_report(workdir, table)
