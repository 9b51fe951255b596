"""``spotlight-scale profile``: CellProfiler 3D measurements (cp_measure) and mesh shape
features of segmented nuclei, as Parquet datasets."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (cluster_options, on_error_option, overwrite_option, shard_option,
                      store_argument)


@click.command(epilog="""\b
Examples:
  spotlight-scale profile store/ --labels seg-target --image target --out profiles/target
  spotlight-scale profile store/ --labels seg-spotlight --image prediction:spotlight \\
      --out profiles/spotlight
  python -c "import pandas as pd; print(pd.read_parquet('profiles/target/nuclei'))"
  duckdb -c "SELECT Metadata_Well, count(*) FROM read_parquet(
      'profiles/target/nuclei/**/*.parquet', hive_partitioning=true) GROUP BY 1" """)
@store_argument
@click.option("--labels", required=True, help="Labels name (from segment --name).")
@click.option("--image", default="target", show_default=True,
              help="Intensity image: target, signal or prediction:NAME.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Profile directory: OUT/nuclei (one row per nucleus) and OUT/wells "
                   "(per-well medians), Parquet datasets.")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True)
@click.option("--texture", is_flag=True,
              help="Add CellProfiler's Haralick texture features (13 x 13 directions).")
@click.option("--granularity", is_flag=True,
              help="Add CellProfiler's granularity spectrum (16 features; slow).")
@cluster_options
@shard_option
@overwrite_option
@on_error_option
def profile(store, labels, image, out, split, texture, granularity, cluster, cluster_config,
            workers, shard, overwrite, on_error):
    """Measure every nucleus of LABELS in STORE and write Parquet profiles to --out."""
    from ..pipelines.profile import profile as run_profile

    res = run_profile(store, labels=labels, image=image, out=out, split=split,
                      texture=texture, granularity=granularity, cluster=cluster,
                      workers=workers, cluster_config=cluster_config, overwrite=overwrite,
                      on_error=on_error, shard=shard)
    click.echo(f"profile {labels}: {res['done']} field(s), {res['rows']} nuclei, "
               f"{res['skipped']} already done, {res['failed']} failed -> {res['out']}")
