"""``spotlight-scale profile``: CellProfiler 3D measurements (cp_measure) and mesh shape
features of segmented nuclei, as Parquet datasets."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (cluster_options, on_error_option, overwrite_option, shard_option,
                      store_argument)


@click.command(epilog="""\b
Examples:
  spotlight-scale profile store/ --labels seg-target --image target --out profiles/target \\
      --platemap platemap.csv
  spotlight-scale profile store/ --labels seg-spotlight --image prediction:spotlight \\
      --out profiles/spotlight --platemap platemap.csv
  python -c "import pandas as pd; print(pd.read_parquet('profiles'))"   # nuclei of both
  duckdb -c "SELECT Metadata_Source, Metadata_Treatment, count(*) FROM read_parquet(
      'profiles/*/nuclei/**/*.parquet') GROUP BY ALL" """)
@store_argument
@click.option("--labels", required=True, help="Labels name (from segment --name).")
@click.option("--image", default="target", show_default=True,
              help="Intensity image: target, signal or prediction:NAME.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Profile directory: OUT/nuclei (one row per nucleus, a Parquet dataset) "
                   "and OUT/_wells/wells.parquet (per-well medians).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True)
@click.option("--texture", is_flag=True,
              help="Add CellProfiler's Haralick texture features (13 x 13 directions).")
@click.option("--granularity", is_flag=True,
              help="Add CellProfiler's granularity spectrum (16 features; slow).")
@click.option("--platemap", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Plate map CSV for this run ('well', 'plate' when several, "
              "other columns -> Metadata_ columns of every row); default: the store's "
              "(ingest --platemap).")
@cluster_options
@shard_option
@overwrite_option
@on_error_option
def profile(store, labels, image, out, split, texture, granularity, platemap, cluster,
            cluster_config, workers, shard, overwrite, on_error):
    """Measure every nucleus of LABELS in STORE and write Parquet profiles to --out."""
    from ..pipelines.profile import profile as run_profile

    res = run_profile(store, labels=labels, image=image, out=out, split=split,
                      texture=texture, granularity=granularity, cluster=cluster,
                      workers=workers, cluster_config=cluster_config, overwrite=overwrite,
                      on_error=on_error, shard=shard, platemap=platemap)
    click.echo(f"profile {labels}: {res['done']} field(s), {res['rows']} nuclei, "
               f"{res['skipped']} already done, {res['failed']} failed -> {res['out']}")
