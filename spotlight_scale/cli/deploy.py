"""``spotlight-scale deploy``: render SLURM job scripts, print the templates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import click

from .options import parse_key_values


@click.group()
def deploy():
    """Render deployment files (SLURM job scripts)."""


@deploy.command(epilog="""\b
Examples:
  # DDP training on 2 nodes x 4 GPUs (checkpoint and requeue on preemption)
  spotlight-scale deploy slurm --stage train --nodes 2 --gpus-per-node 4 --partition gpu \\
      --set STORE=/data/store --set RUN_DIR=/data/runs/a --set TRAIN_ARGS="--loss spotlight"
  # predict as a job array over the store's fields, 2 fields per task, 8 tasks at a time
  spotlight-scale deploy slurm --stage predict --gpus-per-node 1 --set STORE=s \\
      --set RUN_DIR=runs/a --set NAME=spot --set FIELDS_PER_TASK=2 --set THROTTLE=8
  # everything, chained with --dependency=afterok, submitted now
  spotlight-scale deploy slurm --stage all --out jobs/ --submit --gpus-per-node 4 \\
      --set MANIFEST=m.csv --set STORE=s --set RUN_DIR=runs/a --set NAME=spot \\
      --set PROFILES=prof
  # a site-edited template (start from: spotlight-scale deploy template train)
  spotlight-scale deploy slurm --stage train --template site-train.tmpl --set ...""")
@click.option("--stage", type=click.Choice(["train", "pipeline", "ingest", "predict", "segment",
                                            "profile", "all"]), required=True,
              help="ingest/predict/segment/profile: a job array over the fields; all: every "
                   "stage chained (needs --out).")
@click.option("--nodes", type=int, default=None, help="train only.")
@click.option("--gpus-per-node", type=int, default=None,
              help="train (one rank per GPU) and predict (dask-cuda, one worker per GPU); "
                   "refused for stages that use no GPU.")
@click.option("--tasks-per-node", type=int, default=None, help="train only.")
@click.option("--cpus-per-task", type=int, default=None)
@click.option("--partition", default=None)
@click.option("--account", default=None)
@click.option("--time", "time_", default=None, help="Wall time HH:MM:SS.")
@click.option("--prologue", multiple=True, help="Lines run first (e.g. module load ...).")
@click.option("--set", "sets", multiple=True, callback=parse_key_values, metavar="NAME=VALUE",
              help="Template value NAME=VALUE; a name the stage does not take is refused.")
@click.option("--template", "templates", multiple=True,
              help="A site-edited template FILE (--stage all: KIND=FILE, KIND train, array "
                   "or step).")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="--stage all: directory for the job scripts and submit.sh.")
@click.option("--stages", default="ingest,train,predict,segment,profile", show_default=True,
              help="--stage all: which stages, in pipeline order.")
@click.option("--submit", is_flag=True, help="--stage all: run submit.sh (sbatch) now.")
def slurm(stage, nodes, gpus_per_node, tasks_per_node, cpus_per_task, partition, account, time_,
          prologue, sets, templates, out, stages, submit):
    """Render the SLURM job script of STAGE (to standard output, or --out for all)."""
    from ..deploy import DeployError, render, render_all

    values = {"NODES": nodes, "GPUS_PER_NODE": gpus_per_node, "TASKS_PER_NODE": tasks_per_node,
              "CPUS_PER_TASK": cpus_per_task, "PARTITION": partition, "ACCOUNT": account,
              "TIME": time_, "PROLOGUE": list(prologue)}
    values = {k: v for k, v in values.items() if v not in (None, [], ())}
    values.update((k.upper(), val) for k, val in sets)
    if stage != "all":
        if out is not None or submit:
            raise DeployError("--out and --submit go with --stage all (one script is printed; "
                              "submit it with sbatch)")
        if len(templates) > 1 or any("=" in t for t in templates):
            raise DeployError("--template FILE: one file for one stage")
        click.echo(render(stage, templates[0] if templates else None, **values), nl=False)
        return
    if out is None:
        raise DeployError("--stage all writes several scripts: give --out DIR")
    kinds = {}
    for t in templates:
        kind, sep, path = t.partition("=")
        if not sep:
            raise DeployError(f"--template {t!r}: with --stage all, KIND=FILE (train, array or "
                              "step)")
        kinds[kind] = path
    paths = render_all(out, stages=[s.strip() for s in stages.split(",") if s.strip()],
                       templates=kinds, **values)
    for p in paths:
        click.echo(f"wrote {p}")
    if submit:
        res = subprocess.run(["bash", str(out / "submit.sh")], capture_output=True, text=True)
        click.echo(res.stdout, nl=False)
        if res.returncode:
            raise click.ClickException(f"{out / 'submit.sh'} failed: {res.stderr.strip()}")
    else:
        click.echo(f"submit with: bash {out / 'submit.sh'}")


@deploy.command()
@click.argument("kind", type=click.Choice(["train", "pipeline", "array", "step"]))
def template(kind):
    """Print the packaged job-script template KIND (to edit for a site; use with --template)."""
    from ..deploy import template_text

    click.echo(template_text(kind), nl=False)
