"""``spotlight-scale profile``: 3D morphology profiles of segmented nuclei, as Parquet."""

from __future__ import annotations

from pathlib import Path

import click

from .options import cluster_options, overwrite_option, store_argument


@click.command(epilog="""\b
Examples:
  spotlight-scale profile store/ --labels seg-target --image target --out profiles/target
  spotlight-scale profile store/ --labels seg-spotlight --image prediction:spotlight \\
      --out profiles/spotlight
  duckdb -c "SELECT Metadata_Well, count(*) FROM read_parquet(
      'profiles/target/Metadata_Plate=*/**/*.parquet', hive_partitioning=true) GROUP BY 1" """)
@store_argument
@click.option("--labels", required=True, help="Labels name (from segment --name).")
@click.option("--image", default="target", show_default=True,
              help="Intensity image: target, signal or prediction:NAME.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Profile directory (Parquet dataset partitioned by plate and well).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True)
@cluster_options
@overwrite_option
def profile(store, labels, image, out, split, cluster, cluster_config, workers, overwrite):
    """Measure every nucleus of LABELS in STORE and write Parquet profiles to --out."""
    from ..io.store import StoreError
    from ..pipelines.profile import profile as run_profile

    try:
        res = run_profile(store, labels=labels, image=image, out=out, split=split,
                          cluster=cluster, workers=workers, cluster_config=cluster_config,
                          overwrite=overwrite)
    except (StoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"profile {labels}: {res['done']} field(s), {res['rows']} nuclei, "
               f"{res['skipped']} already done -> {res['out']}")
