"""``spotlight-scale train``: F-net with the MSE or the Spotlight loss."""

from __future__ import annotations

from pathlib import Path

import click

from .options import overwrite_option, parse_shape, store_argument


@click.command(epilog="""\b
Examples:
  # the paper's protocol (a GPU job): 50k iterations, batch 24, 32x64x64
  spotlight-scale train store/ runs/spotlight --loss spotlight --device cuda
  # F-net baseline, small enough for a CPU
  spotlight-scale train store/ runs/fnet --loss mse --depth 2 --channels 8 \\
      --patch 16,32,32 --batch-size 4 --iterations 200
  # a store of 2D fields (single planes) trains a 2D F-net
  spotlight-scale train store2d/ runs/fnet2d --loss mse --depth 3 --channels 16 \
      --patch 64,64 --batch-size 8 --iterations 600 --init torch
  # a YAML config (same keys as the flags; flags win), then continue to more iterations
  spotlight-scale train store/ runs/a --config train.yaml
  spotlight-scale train store/ runs/a --resume --iterations 100000
  # SIGUSR1/SIGTERM: checkpoint, exit 75; a requeued job continues with --resume auto
  # DDP: torchrun --nproc-per-node 4 -m spotlight_scale train store/ runs/ddp ...
  #      or srun inside an sbatch job (spotlight-scale deploy slurm --stage train)""")
@store_argument
@click.argument("run_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False,
                                                         exists=True),
              help="YAML file with any of the keys below (unknown keys are an error).")
@click.option("--loss", type=click.Choice(["mse", "spotlight"]), help="[default: spotlight]")
@click.option("--dice-probability", type=click.Choice(["clamp", "shifted"]),
              help="Spotlight: how the sigmoid of the prediction becomes the Dice probability: "
              "clamp(sigma_k(x), 0, 1) or clamp((sigma_k(x) + 1) / 2, 0, 1) [default: shifted].")
@click.option("--loss-reduction", type=click.Choice(["batch", "patch"]),
              help="Spotlight: average both terms over the whole batch or per patch "
              "[default: batch].")
@click.option("--dice-denominator", type=click.Choice(["linear", "squared"]),
              help="Spotlight: Dice denominator sum(p)+sum(m) or sum(p^2)+sum(m^2) (V-Net) "
              "[default: squared, as the authors' code].")
@click.option("--mse-denominator", type=click.Choice(["foreground", "all"]),
              help="Spotlight: divide the masked squared error by the foreground voxels or by "
              "all voxels [default: all, as the authors' code].")
@click.option("--lambda-ramp", type=int,
              help="Spotlight, beyond the paper: raise the MSE weight linearly from 0 to lambda "
              "over the first N iterations (Dice alone at first) [default: 0, off].")
@click.option("--iterations", type=int, help="[default: 50000]")
@click.option("--batch-size", type=int, help="Global batch, split across ranks [default: 24].")
@click.option("--patch", callback=parse_shape,
              help="Patch Z,Y,X, or Y,X on a store of 2D (single-plane) fields "
                   "[default: 32,64,64; 2D: 64,64].")
@click.option("--depth", type=int, help="F-net depth [default: 4].")
@click.option("--channels", type=int, help="F-net base channels [default: 32].")
@click.option("--init", type=click.Choice(["fnet", "torch"]),
              help="Weight initialisation: pytorch_fnet's N(0, 0.02) or PyTorch's defaults "
              "[default: fnet].")
@click.option("--lr", type=float, help="Adam learning rate [default: 1e-3].")
@click.option("--seed", type=int, help="[default: 0]")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="[default: auto]")
@click.option("--val-interval", type=int, help="Validate every N iterations [default: 500].")
@click.option("--checkpoint-interval", type=int, help="Checkpoint every N iterations [default: 500].")
@click.option("--num-workers", type=int, help="DataLoader workers [default: 2].")
@click.option("--augment/--no-augment", default=None, help="XY flips/rotations [default: off].")
@click.option("--cache", type=click.Choice(["auto", "on", "off"]),
              help="Hold the training fields in device memory and crop patches there (auto: "
                   "when they fit the budget, else read patches from the store) [default: auto].")
@click.option("--cache-memory-gb", type=float,
              help="Budget of the cached training set [default: half the free GPU memory, or "
                   "half the available RAM shared by the node's ranks].")
@click.option("--resume", is_flag=False, flag_value="yes", default=None,
              type=click.Choice(["yes", "auto"]),
              help="Continue from RUN_DIR/checkpoints/latest.pt; `--resume auto`: continue when "
                   "a checkpoint exists, else start (for requeued jobs).")
@overwrite_option
def train(store, run_dir, config_file, resume, overwrite, **flags):
    """Train F-net on STORE's training fields into RUN_DIR.

    Writes RUN_DIR/config.yaml (the resolved config), loss.csv (train and
    validation loss), checkpoints/latest.pt and, at the end, model.pt with the
    model config, normalisation mode, the training target's intensity range and the
    loss settings that trained it (every Spotlight choice below).
    """
    from ..pipelines.train import resolve_train_config
    from ..pipelines.train import train as run_train
    from ..train.preempt import EXIT_INTERRUPTED, TrainingInterrupted

    if flags.get("patch") is not None:
        flags["patch"] = tuple(int(p) for p in flags["patch"])
    cfg = resolve_train_config(config_file, flags)
    try:
        path = run_train(store, run_dir, cfg, resume={"yes": True, None: False}.get(resume, resume),
                         overwrite=overwrite)
    except TrainingInterrupted as exc:
        click.echo(f"train: {exc}", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    if path is not None:
        click.echo(f"train: model written to {path}")
