"""``spotlight-scale deploy slurm``: render a SLURM job script to standard output."""

from __future__ import annotations

import click


@click.group()
def deploy():
    """Render deployment files (SLURM job scripts)."""


@deploy.command(epilog="""\b
Examples:
  spotlight-scale deploy slurm --stage train --nodes 2 --gpus-per-node 4 --partition gpu \\
      --set STORE=/data/store --set RUN_DIR=/data/runs/a \\
      --set TRAIN_ARGS="--loss spotlight --device cuda" > train.sbatch
  spotlight-scale deploy slurm --stage pipeline --set MANIFEST=m.csv --set STORE=s \\
      --set RUN_DIR=runs/a --set NAME=spot --set PROFILES=prof \\
      --set CLUSTER_CONFIG=profile.yaml > pipeline.sbatch""")
@click.option("--stage", type=click.Choice(["train", "pipeline", "array"]), required=True)
@click.option("--nodes", type=int, default=None)
@click.option("--gpus-per-node", type=int, default=None)
@click.option("--tasks-per-node", type=int, default=None)
@click.option("--cpus-per-task", type=int, default=None)
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--time", "time_", default=None, help="Wall time HH:MM:SS.")
@click.option("--prologue", multiple=True, help="Lines run first (e.g. module load ...).")
@click.option("--set", "sets", multiple=True, help="Template value NAME=VALUE.")
def slurm(stage, nodes, gpus_per_node, tasks_per_node, cpus_per_task, partition, account, time_,
          prologue, sets):
    """Render the SLURM template of STAGE with checked settings (spotlight-scale deploy slurm)."""
    from ..deploy import render

    values = {"NODES": nodes, "GPUS_PER_NODE": gpus_per_node, "TASKS_PER_NODE": tasks_per_node,
              "CPUS_PER_TASK": cpus_per_task, "PARTITION": partition, "ACCOUNT": account,
              "TIME": time_, "prologue": list(prologue)}
    values = {k: v for k, v in values.items() if v not in (None, [], ())}
    for s in sets:
        k, sep, val = s.partition("=")
        if not sep:
            raise click.BadParameter(f"--set {s!r}: expected NAME=VALUE")
        values[k.strip().upper()] = val
    click.echo(render(stage, **values), nl=False)
