"""``spotlight-scale synth``: a synthetic screen, so everything runs with no downloads."""

from __future__ import annotations

from pathlib import Path

import click

from .options import parse_triple


@click.command(epilog="""\b
Examples:
  spotlight-scale synth raw/                       # 2 wells x 2 fields, 16x128x128 voxels
  spotlight-scale synth raw/ --wells 4 --fields 3 --seed 7
  spotlight-scale synth raw/ --shape 24,256,256 --voxel-size 0.58,0.29,0.29 --test-fraction 0.3
  spotlight-scale synth raw/ --preset v1           # the simulator before calibration
  spotlight-scale ingest raw/manifest.csv store/   # next step""")
@click.argument("out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--plate", default="DEMO", show_default=True, help="Plate name.")
@click.option("--wells", type=int, default=2, show_default=True, help="Number of wells.")
@click.option("--fields", type=int, default=2, show_default=True, help="Fields per well.")
@click.option("--shape", callback=parse_triple, default="16,128,128", show_default=True,
              help="Raw z-stack shape Z,Y,X in voxels.")
@click.option("--voxel-size", callback=parse_triple, default="0.87,0.29,0.29", show_default=True,
              help="Raw voxel size Z,Y,X in um (anisotropic, as acquired).")
@click.option("--test-fraction", type=float, default=0.25, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--preset", type=click.Choice(["calibrated", "v1"]), default="calibrated",
              show_default=True, help="Simulator parameters: calibrated against real images "
              "(docs/calibration), or v1, the screens of the results before calibration.")
def synth(out_dir, plate, wells, fields, shape, voxel_size, test_fraction, val_fraction, seed,
          preset):
    """Simulate a screen of paired transmitted-light / Hoechst z-stacks into OUT_DIR.

    Nuclei of varied size, shape, brightness and chromatin texture in a
    monolayer; an axially elongated PSF, haze, debris and noise in the Hoechst
    channel only; transmitted-light contrast that flips sign through focus,
    with its own noise and an illumination gradient. The default parameters
    are fitted to real images (docs/calibration/README.md). Writes ImageJ TIFFs
    (signal, target, true nuclei masks) and manifest.csv.
    """
    from ..core.synth import PRESETS
    from ..pipelines.synth import synth_screen

    manifest = synth_screen(out_dir, plate=plate, wells=wells, fields=fields,
                            shape=tuple(int(s) for s in shape),
                            voxel_size=tuple(float(v) for v in voxel_size),
                            test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                            params=PRESETS[preset])
    click.echo(f"synth: {wells * fields} field(s) -> {manifest}")
