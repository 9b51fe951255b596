"""``spotlight-scale predict``: tiled virtual staining of whole fields over Dask workers."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (cluster_options, on_error_option, overwrite_option, parse_triple,
                      shard_option, store_argument)


@click.command(epilog="""\b
Examples:
  spotlight-scale predict store/ runs/spotlight --name spotlight
  spotlight-scale predict store/ runs/fnet --name fnet --split all --workers 2
  spotlight-scale predict store/ runs/spotlight --name spot --cluster cuda --device cuda
  napari --plugin napari-ome-zarr store/predictions/spotlight/DEMO.zarr""")
@store_argument
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True))
@click.option("--name", required=True, help="Name of the prediction in the store.")
@click.option("--split", type=click.Choice(["test", "all", "train", "val"]), default="test",
              show_default=True)
@click.option("--tile", callback=parse_triple, default="64,256,256", show_default=True,
              help="Largest tile Z,Y,X (multiples of 2**depth); a field that fits is one tile. "
                   "Larger tiles recompute less overlap and need more memory.")
@click.option("--overlap", callback=parse_triple, default="16,32,32", show_default=True,
              help="Overlap between neighbouring tiles Z,Y,X; a quarter of it on each side "
                   "is discarded, the rest blended.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto",
              show_default=True)
@click.option("--batch-size", type=int, default=1, show_default=True, help="Tiles per forward.")
@cluster_options
@shard_option
@overwrite_option
@on_error_option
def predict(store, run_dir, name, split, tile, overlap, device, batch_size, cluster,
            cluster_config, workers, shard, overwrite, on_error):
    """Predict the Hoechst channel of STORE's fields with the model in RUN_DIR.

    Writes STORE/predictions/NAME/<PLATE>.zarr (an HCS plate mirroring the raw
    one) with the model's path, hash and configuration in its attributes.
    Done fields are skipped on re-run; a different model under the same NAME
    is refused unless --overwrite.
    """
    from ..pipelines.predict import predict as run_predict

    res = run_predict(store, run_dir, name, split=split, tile=tile, overlap=overlap,
                      cluster=cluster, workers=workers, cluster_config=cluster_config,
                      device=device, overwrite=overwrite, batch_size=batch_size,
                      on_error=on_error, shard=shard)
    click.echo(f"predict {name}: {res['done']} field(s) predicted, {res['skipped']} already "
               f"done, {res['failed']} failed")
