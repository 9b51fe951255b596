"""``spotlight-scale benchmark``: F-net vs Spotlight end to end on a synthetic screen."""

from __future__ import annotations

from pathlib import Path

import click

from .options import parse_key_values


@click.command(epilog="""\b
Examples:
  spotlight-scale benchmark work/ --quick          # this CPU, well under 15 minutes
  spotlight-scale benchmark work/ --full           # the paper's protocol, on a GPU
  spotlight-scale benchmark work/ --tiny --seed 3  # a smoke test
  spotlight-scale benchmark work/ --quick --seeds 0,1,2   # mean +- s.d. over 3 seeds""")
@click.argument("workdir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--quick", "budget", flag_value="quick", default=True, help="CPU budget (default).")
@click.option("--full", "budget", flag_value="full", help="Paper protocol (GPU).")
@click.option("--tiny", "budget", flag_value="tiny", help="Smallest budget (CI).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", default=None, help="Several seeds, e.g. 0,1,2: one run each into "
              "WORKDIR/seed-<S>/, then WORKDIR/report.md with mean +- s.d. over seeds and the "
              "Spotlight criteria (overrides --seed).")
@click.option("--workers", type=int, default=2, show_default=True, help="Local Dask workers.")
@click.option("--iterations", type=int, default=None, help="Override the training iterations.")
@click.option("--spotlight-option", "spotlight_option", multiple=True,
              callback=parse_key_values, metavar="KEY=VALUE",
              help="A train config key for the Spotlight model only, e.g. lambda_ramp=100 "
              "(repeatable; recorded in benchmark.json).")
@click.option("--fnet-option", "fnet_option", multiple=True, callback=parse_key_values,
              metavar="KEY=VALUE",
              help="A train config key for the F-net model only, e.g. init=torch (repeatable).")
@click.option("--preset", default="calibrated", show_default=True,
              help="The simulator's parameter set (synth --preset); v1 reproduces the screens "
              "of the runs before calibration.")
@click.option("--store", "store", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=None, help="Benchmark on this store (any ingested screen, 2D or 3D) "
              "instead of a synthetic one: learning curves, several seeds (see below).")
@click.option("--models", default="fnet-torch,fnet,spotlight,spotlight-clamp", show_default=True,
              help="--store: model variants (fnet, fnet-torch, spotlight, spotlight-clamp, "
                   "spotlight-mse-all).")
@click.option("--one-seed", default="fnet,spotlight-clamp", show_default=True,
              help="--store: variants run with the first seed only.")
@click.option("--checkpoints", default="1000,3000,10000,20000", show_default=True,
              help="--store: iterations at which each run is scored (one run per seed).")
@click.option("--set", "common", multiple=True, callback=parse_key_values, metavar="KEY=VALUE",
              help="--store: a train config key for every model, e.g. depth=4 (repeatable).")
@click.option("--train-only", is_flag=True,
              help="--store: train the snapshots, score later (e.g. several processes).")
@click.option("--score-only", is_flag=True,
              help="--store: score and report the snapshots trained so far, train nothing.")
def benchmark(workdir, budget, seed, seeds, workers, iterations, spotlight_option, fnet_option,
              preset, store, models, one_seed, checkpoints, common, train_only, score_only):
    """synth -> ingest -> train F-net and Spotlight -> predict -> segment -> profile -> evaluate.

    Both models get the same budget and seed. Writes WORKDIR/report/report.md
    with figures, metrics.parquet, summary.json and benchmark.json (settings,
    timings).

    With --store STORE: every model variant is trained once per seed (--seeds,
    default 0,1,2) on STORE's training fields, snapshotted at each of
    --checkpoints, and each snapshot is scored on the test fields (predictions and
    labels named bench-* in STORE); WORKDIR/report.md holds the learning curves.
    Resumable: re-run the same command.
    """
    import yaml

    from ..pipelines.benchmark import run_benchmark, run_benchmark_seeds

    options = {key: yaml.safe_load(value) for key, value in spotlight_option}
    f_options = {key: yaml.safe_load(value) for key, value in fnet_option}
    if store is not None:
        from ..pipelines.benchmark_store import run_store_benchmark

        def ints(text, opt):
            try:
                return [int(v) for v in str(text).split(",") if v.strip()]
            except ValueError:
                raise click.BadParameter(f"expected integers like 0,1,2, got {text!r}",
                                         param_hint=opt) from None

        names = lambda text: [v.strip() for v in str(text).split(",") if v.strip()]  # noqa: E731
        res = run_store_benchmark(
            store, workdir, models=names(models), seeds=ints(seeds or "0,1,2", "--seeds"),
            checkpoints=ints(checkpoints, "--checkpoints"), one_seed=names(one_seed),
            common={k: yaml.safe_load(v) for k, v in common}, workers=workers,
            train_only=train_only, score_only=score_only)
        click.echo(f"benchmark --store {store}: {res['message']}")
        return

    if seeds:
        try:
            values = [int(v) for v in seeds.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected integers like 0,1,2, got {seeds!r}",
                                     param_hint="--seeds") from None
        res = run_benchmark_seeds(workdir, budget=budget, seeds=values, workers=workers,
                                  iterations=iterations, spotlight_options=options,
                                  fnet_options=f_options, preset=preset)
        for v in res["aggregate"]["criteria"]:
            click.echo(f"  {'met' if v['met'] else 'NOT met'}: {v['criterion']}")
        click.echo(f"benchmark ({budget}, seeds {seeds}): report at {res['report']}")
        return
    res = run_benchmark(workdir, budget=budget, seed=seed, workers=workers, iterations=iterations,
                        spotlight_options=options, fnet_options=f_options, preset=preset)
    click.echo(f"benchmark ({budget}, seed {seed}): report at {res['report']}")
