"""``spotlight-scale ingest``: microscope files (TIFF, OME-TIFF, CZI, ...) -> OME-Zarr HCS
plates with statistics."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (cluster_options, on_error_option, overwrite_option, parse_triple,
                      shard_option)


@click.command(epilog="""\b
Examples:
  spotlight-scale ingest raw/manifest.csv store/
  spotlight-scale ingest raw/manifest.csv store/ --workers 4 --chunks 32,256,256
  spotlight-scale ingest raw/manifest.csv store/ --no-resample --ngff 0.4
  spotlight-scale ingest raw/manifest.csv store/ --on-error skip   # see store/tables/failures.parquet
  spotlight-scale ingest raw/manifest.csv store/ --platemap platemap.csv --stain DNA
  spotlight-scale ingest raw/manifest.csv store/ --cluster slurm --cluster-config profile.yaml""")
@click.argument("manifest", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.argument("store", type=click.Path(path_type=Path, file_okay=False))
@click.option("--isotropic", type=float, default=0.29, show_default=True,
              help="Resample to isotropic voxels of this size (um): cubic for images, nearest for labels.")
@click.option("--no-resample", is_flag=True, help="Keep the raw voxel grid.")
@click.option("--chunks", callback=parse_triple, default="32,128,128", show_default=True,
              help="Zarr chunk shape Z,Y,X (also the block shape of the statistics pass).")
@click.option("--ngff", type=click.Choice(["0.5", "0.4"]), default="0.5", show_default=True,
              help="NGFF version: 0.5 (zarr v3) or 0.4 (zarr v2).")
@click.option("--patch", callback=parse_triple, default="32,64,64", show_default=True,
              help="Training patch shape Z,Y,X for the foreground patch index.")
@click.option("--patch-stride", callback=parse_triple, default="8,16,16", show_default=True,
              help="Grid stride Z,Y,X of candidate patch origins.")
@click.option("--min-foreground", type=float, default=0.001, show_default=True,
              help="Keep patches with at least this fraction of foreground (target >= Otsu).")
@click.option("--voxel-size", callback=parse_triple, default=None,
              help="Fallback voxel size Z,Y,X in um when neither the manifest nor the file says.")
@click.option("--platemap", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Plate map CSV: a 'well' column ('plate' too when the screen "
              "has several), every other column a Metadata_ column of every table (kept in "
              "STORE/tables/platemap.parquet).")
@click.option("--stain", default=None,
              help="The target's stain, naming the profiles' intensity columns (recorded in "
                   "spotlight.json; default DNA).")
@cluster_options
@shard_option
@overwrite_option
@on_error_option
def ingest(manifest, store, isotropic, no_resample, chunks, ngff, patch, patch_stride,
           min_foreground, voxel_size, platemap, stain, cluster, cluster_config, workers, shard,
           overwrite, on_error):
    """Convert the fields of MANIFEST into OME-Zarr HCS plates in STORE.

    Each field becomes a CZYX image (channels signal, target) with a pyramid,
    ground-truth labels (labels/gt), per-channel statistics (Otsu threshold,
    mean, std, min, max, 0.1/99.9 percentiles, foreground fraction) and a
    foreground patch index. The manifest is validated before anything is
    written; done fields are skipped on re-run; an interrupted run resumes.
    """
    from ..pipelines.ingest import IngestSettings
    from ..pipelines.ingest import ingest as run_ingest

    settings = IngestSettings(isotropic_um=None if no_resample else isotropic,
                              chunks=tuple(int(c) for c in chunks),
                              patch=tuple(int(p) for p in patch),
                              patch_stride=tuple(int(s) for s in patch_stride),
                              min_fraction=min_foreground, ngff=ngff)
    res = run_ingest(manifest, store, settings, voxel_size=voxel_size, platemap=platemap,
                     stain=stain, cluster=cluster,
                     workers=workers or 2, cluster_config=cluster_config,
                     overwrite=overwrite, on_error=on_error, shard=shard)
    click.echo(f"ingest: {res['done']} field(s) written, {res['skipped']} already done, "
               f"{res['failed']} failed -> {res['store']}")
    if res["failed"] and on_error == "fail":
        raise SystemExit(1)
