"""``spotlight-scale export``: one stored image as an ImageJ TIFF (voxel size included)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import store_argument


@click.command(epilog="""\b
Examples:
  spotlight-scale export store/ --well B02 --field 0 --image target target.tif
  spotlight-scale export store/ --well B02 --field 0 --image prediction:spotlight pred.tif
  spotlight-scale export store/ --plate DEMO --well B02 --field 0 --image labels:gt gt.tif""")
@store_argument
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--well", required=True, help="Well, e.g. B02.")
@click.option("--field", required=True, type=int, help="Field index within the well.")
@click.option("--plate", default=None, help="Plate (needed when the store has several).")
@click.option("--image", required=True,
              help="signal, target, prediction:NAME or labels:NAME.")
def export(store, out, well, field, plate, image):
    """Export IMAGE of one field of STORE to OUT as an ImageJ TIFF that opens in Fiji."""
    from ..pipelines.export import export as run_export

    path = run_export(store, out, well=well, field=field, image=image, plate=plate)
    click.echo(f"export: wrote {path}")
