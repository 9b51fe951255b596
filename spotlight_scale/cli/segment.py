"""``spotlight-scale segment``: nuclei labels of a stored image (watershed or Cellpose)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (cluster_options, on_error_option, overwrite_option, shard_option,
                      store_argument)


@click.command(epilog="""\b
Examples:
  spotlight-scale segment store/ --image target --name seg-target
  spotlight-scale segment store/ --image prediction:spotlight --name seg-spotlight
  # nuclei of a known size (um); default: estimated per field, kept in the labels' attributes
  spotlight-scale segment store/ --image target --name seg-target --diameter 12
  # the paper's post-thresholding (evaluate finds labels named <LABELS>-t<T>):
  spotlight-scale segment store/ --image prediction:fnet --name seg-fnet-t500 --threshold 500
  # the foreground at the level the model was trained to (evaluate finds <LABELS>-model):
  spotlight-scale segment store/ --image prediction:spotlight --name seg-spotlight-model \
      --foreground model
  spotlight-scale segment store/ --image target --name cp --method cellpose \\
      --cellpose-model /path/to/cellpose_model    # needs: pip install 'spotlight-scale[cellpose]'""")
@store_argument
@click.option("--image", required=True, help="target, signal or prediction:NAME.")
@click.option("--name", required=True, help="Name of the labels (labels/NAME in each field).")
@click.option("--method", type=click.Choice(["watershed", "cellpose"]), default="watershed",
              show_default=True)
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False,
                                                         exists=True),
              help="YAML with watershed parameters (see spotlight_scale.core.segment).")
@click.option("--diameter", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="UM", help="Expected nucleus diameter in um (watershed); every size of "
              "the recipe follows from it. Default: estimated per field on the field's target "
              "(the real nuclear stain, also when a prediction is segmented), recorded in "
              "the labels' attributes.")
@click.option("--threshold", type=float, default=None,
              help="Zero intensities below T before segmenting (post-thresholding).")
@click.option("--foreground", default="otsu", show_default=True, metavar="otsu|model|LEVEL",
              help="Foreground level of the watershed: otsu (the recipe, Otsu on the "
              "equalised image), model (the level the prediction's model was trained to put "
              "the foreground boundary at; --image prediction:NAME only) or a number in image "
              "units. Recorded in the labels' attributes and the segment marker.")
@click.option("--cellpose-model", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all",
              show_default=True)
@cluster_options
@shard_option
@overwrite_option
@on_error_option
def segment(store, image, name, method, config_file, diameter, threshold, foreground,
            cellpose_model, split, cluster, cluster_config, workers, shard, overwrite, on_error):
    """Segment nuclei in IMAGE of every field of STORE into NGFF labels NAME."""
    from ..config import resolve_config
    from ..core.segment import WatershedConfig
    from ..pipelines.segment import segment as run_segment

    cfg = resolve_config(WatershedConfig, config_file,
                         {} if diameter is None else {"diameter_um": diameter})
    res = run_segment(store, image=image, name=name, method=method, config=cfg,
                      threshold=threshold, cellpose_model=cellpose_model, split=split,
                      cluster=cluster, workers=workers, cluster_config=cluster_config,
                      overwrite=overwrite, on_error=on_error, shard=shard,
                      foreground=foreground)
    click.echo(f"segment {name}: {res['done']} field(s), {res['objects']} nuclei, "
               f"{res['skipped']} already done, {res['failed']} failed")
