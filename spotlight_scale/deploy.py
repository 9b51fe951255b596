"""Render SLURM job scripts from the package's templates, with checked settings.

The templates (``spotlight_scale/templates/*.sbatch.tmpl``, one copy, printed by
``spotlight-scale deploy template KIND``) use ``${NAME}`` placeholders
(``string.Template``) and carry no site-specific paths; a site may edit a copy
and render it with ``--template FILE``. Rendering refuses what would not run or
would be silently ignored: an unknown ``--set`` key, a placeholder left empty,
GPUs for a stage that uses none, DDP tasks per node that differ from GPUs per node.

Stages:

- ``train``: DDP training under ``srun``, with checkpoint-and-requeue on preemption;
- ``pipeline``: one job running ingest -> predict -> segment -> profile whose Dask
  workers are SLURM jobs (their GPUs come from the cluster profile);
- ``ingest``, ``predict``, ``segment``, ``profile``: a job array over the fields,
  its size computed from the store (or, before ingest, the manifest), throttled;
- ``all``: the arrays and training chained with ``--dependency=afterok``
  (:func:`render_all` writes the scripts and a ``submit.sh``).
"""

from __future__ import annotations

import csv
import math
import string
from importlib import resources
from pathlib import Path

#: per-field stages (one job array each) and their commands; ${NAME} is the prediction name
FIELD_STAGES = {
    "ingest": 'spotlight-scale ingest "${MANIFEST}" "${STORE}" ${INGEST_ARGS}',
    "predict": 'spotlight-scale predict "${STORE}" "${RUN_DIR}" --name "${NAME}" --split all '
               '${PREDICT_ARGS}',
    "segment": 'spotlight-scale segment "${STORE}" --image "prediction:${NAME}" '
               '--name "seg-${NAME}" ${SEGMENT_ARGS}',
    "profile": 'spotlight-scale profile "${STORE}" --labels "seg-${NAME}" '
               '--image "prediction:${NAME}" --out "${PROFILES}" ${PROFILE_ARGS}',
}
STAGES = ("train", "pipeline", *FIELD_STAGES, "all")
#: the templates, by kind
KINDS = ("train", "pipeline", "array", "step")
#: stages whose unsharded run writes store-level tables after their array (plate metadata,
#: fields and well tables, failures tables): all of them
FINALIZED = tuple(FIELD_STAGES)
#: stages that can use GPUs given by --gpus-per-node
GPU_STAGES = ("train", "predict")

DEFAULTS = {"TIME": "01:00:00", "LOG_DIR": ".", "CPUS_PER_TASK": "4", "MEM": "16G",
            "MEM_PER_CPU": "4G", "MASTER_PORT": "29500", "SIGNAL_SECONDS": "120",
            "FIELDS_PER_TASK": "1", "THROTTLE": "32"}
#: placeholders filled by the renderer, not by --set
DERIVED = {"ACCOUNT_LINE", "GPU_LINE", "PREEMPT", "DEVICE", "COMMAND", "WORKER_ARGS",
           "ARRAY_MAX", "SHARDS", "STAGE", "INGEST_COMMAND", "PREDICT_COMMAND",
           "SEGMENT_COMMAND", "PROFILE_COMMAND"}
#: options of one stage only (train: all three; predict: GPUs); where unused, refused by name
_RESOURCES = ("GPUS_PER_NODE", "NODES", "TASKS_PER_NODE")
#: placeholders that may stay empty
OPTIONAL = {"PROLOGUE", "ACCOUNT_LINE", "GPU_LINE", "TRAIN_ARGS", "INGEST_ARGS", "PREDICT_ARGS",
            "SEGMENT_ARGS", "PROFILE_ARGS", "WORKER_ARGS", "PARTITION"}

#: shell functions of the preemptible templates (inserted at ${PREEMPT})
PREEMPT = r'''# checkpoint and requeue: run_step runs a command in the background, so that traps run while
# it works. USR1 (the --signal above) is forwarded to it and marks the job for requeueing;
# TERM (preemption, scancel) is forwarded only. finish requeues a job whose step stopped
# after USR1 (the requeued job skips done work or resumes from the checkpoint).
preempted=0 caught=0 step_pid=
forward() {
  caught=1
  if [ "$1" = USR1 ]; then preempted=1; fi
  if [ -n "$step_pid" ]; then kill -s "$1" "$step_pid" 2>/dev/null || true; fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM
run_step() {
  local rc
  "$@" &
  step_pid=$!
  while :; do
    caught=0
    wait "$step_pid" && rc=0 || rc=$?
    if [ "$caught" = 1 ] && [ "$rc" -gt 128 ]; then continue; fi  # a trap woke wait
    break
  done
  step_pid=
  return "$rc"
}
finish() {
  if [ "$1" != 0 ] && [ "$preempted" = 1 ]; then
    echo "spotlight-scale: stopped after USR1 (status $1): requeueing job $SLURM_JOB_ID" >&2
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
  fi
  exit "$1"
}'''


class DeployError(ValueError):
    """Settings that would render a job script that does not run as asked."""


def template_text(kind: str, template_file: str | Path | None = None) -> str:
    """The packaged template of ``kind``, or ``template_file`` (a site-edited copy)."""
    if template_file is not None:
        path = Path(template_file)
        try:
            return path.read_text()
        except OSError as exc:
            raise DeployError(f"--template {path}: cannot read it ({exc.strerror})") from None
    if kind not in KINDS:
        raise DeployError(f"unknown template {kind!r}; expected one of {', '.join(KINDS)}")
    return resources.files("spotlight_scale").joinpath(f"templates/{kind}.sbatch.tmpl").read_text()


def placeholders(text: str) -> set[str]:
    """The ``${NAME}`` / ``$NAME`` placeholders of a template."""
    t = string.Template(text)
    return {m.group("named") or m.group("braced") for m in t.pattern.finditer(text)
            if m.group("named") or m.group("braced")}


def _fill(text: str, values: dict[str, str], what: str) -> str:
    """Substitute ``values`` into ``text``; a required placeholder without a value is an error."""
    missing = sorted(k for k in placeholders(text) - OPTIONAL if not values.get(k))
    if missing:
        raise DeployError(f"{what} needs values for: {', '.join(missing)} "
                          f"(--set NAME=VALUE)")
    return string.Template(text).substitute({k: values.get(k, "") for k in placeholders(text)})


def count_fields(values: dict[str, str], stage: str) -> int:
    """The fields a per-field stage covers: the store's (all splits), else the manifest's rows."""
    store = values.get("STORE")
    manifest = values.get("MANIFEST")
    if stage != "ingest" and store and (Path(store) / "spotlight.json").exists():
        from .io.store import Store

        return len(Store(store).fields())
    if manifest:
        try:
            with open(manifest, newline="") as fh:
                return sum(1 for row in csv.DictReader(fh) if any((v or "").strip()
                                                                 for v in row.values()))
        except OSError as exc:
            raise DeployError(f"MANIFEST={manifest}: cannot read it ({exc.strerror}); the "
                              "array size of a per-field stage comes from it") from None
    raise DeployError(f"--stage {stage}: the array size comes from the store's fields or the "
                      f"manifest's rows: STORE={store!r} is not an ingested store yet; give "
                      "--set MANIFEST=manifest.csv")


def settable(stage: str, text: str) -> set[str]:
    """The settings ``--set`` may give for ``stage`` rendered from template ``text``.

    ``stage`` is one of :data:`STAGES` (not ``all``) or ``STAGE-finalize`` (the
    unsharded run after an array, template ``step``).
    """
    # the resource options are known everywhere: where unused, render names why
    keys = placeholders(text) | {"ACCOUNT", "JOB_NAME", *_RESOURCES}
    base = stage.removesuffix("-finalize")
    if stage == "pipeline":
        keys |= placeholders(" ".join(FIELD_STAGES.values()))
    elif base in FIELD_STAGES:
        keys |= placeholders(FIELD_STAGES[base])
        if stage == base:
            keys |= {"FIELDS_PER_TASK", "THROTTLE", "MANIFEST"}
    return keys - DERIVED


def _values(stage: str, text: str, given: dict) -> dict[str, str]:
    """Upper-cased given values over the defaults; a key the stage does not take is refused."""
    v = {k.upper(): ("" if x is None else x) for k, x in given.items()}
    if isinstance(v.get("PROLOGUE"), (list, tuple)):
        v["PROLOGUE"] = "\n".join(v["PROLOGUE"])
    v = {k: str(x) for k, x in v.items()}
    keys = settable(stage, text)
    unknown = sorted(set(v) - keys)
    if unknown:
        raise DeployError(f"--stage {stage}: unknown setting(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(keys))}")
    v = {**{k: x for k, x in DEFAULTS.items() if k in keys}, "JOB_NAME": f"spotlight-{stage}", **v}
    v["ACCOUNT_LINE"] = f"#SBATCH --account={v['ACCOUNT']}" if v.get("ACCOUNT") else ""
    return v


def _drop_empty_partition(text: str, v: dict[str, str]) -> str:
    """No ``--partition`` line without a partition: the site's default partition applies."""
    return text if v.get("PARTITION") else text.replace("#SBATCH --partition=${PARTITION}\n", "")


def _gpus(stage: str, v: dict[str, str]) -> int:
    gpus = int(v.get("GPUS_PER_NODE") or 0)
    if gpus < 0:
        raise DeployError(f"--gpus-per-node must be >= 0, got {gpus}")
    if gpus and stage not in GPU_STAGES:
        why = ("its Dask workers get GPUs from the cluster profile's gpus_per_job"
               if stage == "pipeline" else "it runs on CPUs")
        raise DeployError(f"--stage {stage}: --gpus-per-node would be ignored ({why}); it "
                          f"applies to {' and '.join(GPU_STAGES)}")
    return gpus


def render(stage: str, template_file: str | Path | None = None, **values) -> str:
    """Render one job script of ``stage`` (any of :data:`STAGES` but ``all``).

    ``values`` are template settings (``store="/data/s"`` or ``STORE="/data/s"``);
    ``prologue`` may be a list of lines.
    """
    if stage not in STAGES or stage == "all":
        raise DeployError(f"unknown stage {stage!r}; expected one of "
                          f"{', '.join(s for s in STAGES if s != 'all')} (or all, with --out)")
    kind = "array" if stage in FIELD_STAGES else stage
    text = template_text(kind, template_file)
    v = _values(stage, text, values)
    gpus = _gpus(stage, v)
    if stage != "train" and any(v.get(k) for k in ("NODES", "TASKS_PER_NODE")):
        raise DeployError(f"--stage {stage}: --nodes and --tasks-per-node apply to train only "
                          "(the other stages run one task per job or array task)")
    v.update(PREEMPT=PREEMPT, STAGE=stage)
    text = _drop_empty_partition(text, v)
    if stage == "train":
        nodes = int(v.get("NODES") or 1)
        tasks = int(v.get("TASKS_PER_NODE") or gpus or 1)
        if gpus and tasks != gpus:
            raise DeployError(f"tasks per node ({tasks}) must equal GPUs per node ({gpus}): "
                              "DDP runs one rank per GPU")
        if nodes < 1 or tasks < 1:
            raise DeployError("nodes and tasks per node must be >= 1")
        v.update(NODES=str(nodes), TASKS_PER_NODE=str(tasks), DEVICE="cuda" if gpus else "cpu",
                 GPU_LINE=f"#SBATCH --gpus-per-node={gpus}" if gpus else "")
    elif stage == "pipeline":
        for s, cmd in FIELD_STAGES.items():
            v[f"{s.upper()}_COMMAND"] = _fill(cmd, v, f"--stage pipeline ({s})")
        if _profile_gpus(v.get("CLUSTER_CONFIG")):
            v["PREDICT_COMMAND"] += " --device cuda"
    else:
        n = count_fields(v, stage)
        per = int(v["FIELDS_PER_TASK"])
        throttle = int(v["THROTTLE"])
        if per < 1 or throttle < 1:
            raise DeployError("FIELDS_PER_TASK and THROTTLE must be >= 1")
        if n < 1:
            raise DeployError(f"--stage {stage}: no fields to cover (store or manifest empty)")
        shards = math.ceil(n / per)
        v.update(SHARDS=str(shards), ARRAY_MAX=str(shards - 1),
                 COMMAND=_fill(FIELD_STAGES[stage], v, f"--stage {stage}"),
                 GPU_LINE=f"#SBATCH --gpus={gpus}" if gpus else "",
                 WORKER_ARGS=("--cluster cuda --device cuda" if gpus
                              else f"--workers {v['CPUS_PER_TASK']}"))
    return _fill(text, v, f"--stage {stage}")


def _profile_gpus(path) -> int:
    """``gpus_per_job`` of a cluster profile (0 when it has none or the file is not there yet)."""
    if not path or not Path(path).exists():
        return 0
    from ._cluster_backends import load_slurm_profile
    from .config import load_yaml

    return load_slurm_profile(load_yaml(path), str(path)).gpus_per_job


def render_step(stage: str, template_file=None, **values) -> str:
    """The unsharded run of per-field ``stage`` after its array (a one-task job)."""
    text = template_text("step", template_file)
    v = _values(f"{stage}-finalize", text, values)
    if any(v.get(k) for k in _RESOURCES):
        raise DeployError(f"{stage}-finalize: one task without GPUs; no "
                          f"{', '.join(k for k in _RESOURCES if v.get(k))}")
    v["COMMAND"] = _fill(FIELD_STAGES[stage], v, f"{stage}-finalize")
    return _fill(_drop_empty_partition(text, v), v, f"{stage}-finalize")


def render_all(out_dir: str | Path, *, stages=("ingest", "train", "predict", "segment",
                                              "profile"),
               templates: dict[str, str | Path] | None = None, **values) -> list[Path]:
    """Write the job scripts of ``stages`` and ``submit.sh``, which submits them in order,
    each with ``--dependency=afterok`` on the one before. Returns the scripts in order.

    Each per-field stage is a job array followed, where the stage writes store-level
    tables (ingest, predict, profile), by its unsharded run. ``templates`` maps a
    template kind (train, array, step) to a site-edited file. Each job gets the
    settings its template takes; a setting no job takes is refused. ``GPUS_PER_NODE``
    goes to train and predict; ``JOB_NAME`` prefixes the jobs' names.
    """
    from .io.atomic import atomic_write_text

    templates = templates or {}
    order = [s for s in ("ingest", "train", "predict", "segment", "profile") if s in stages]
    unknown = sorted(set(stages) - set(order))
    if unknown or not order:
        raise DeployError(f"--stages: unknown {', '.join(unknown) or '(none given)'}; expected "
                          f"some of ingest, train, predict, segment, profile")
    bad = sorted(set(templates) - {"train", "array", "step"})
    if bad:
        raise DeployError(f"--template {bad[0]}=FILE: expected train, array or step")
    jobs = []  # (name, stage or STAGE-finalize, template kind)
    for stage in order:
        jobs.append((stage, stage, "train" if stage == "train" else "array"))
        if stage in FINALIZED:
            jobs.append((f"{stage}-finalize", f"{stage}-finalize", "step"))
    given = {k.upper(): x for k, x in values.items()}
    prefix = str(given.pop("JOB_NAME", "spotlight"))
    keys = {name: settable(stage, template_text(kind, templates.get(kind)))
            for name, stage, kind in jobs}
    if given.get("GPUS_PER_NODE") and not {"train", "predict"} & set(order):
        raise DeployError("--gpus-per-node applies to train and predict, and neither is in "
                          "--stages")
    unused = sorted(set(given) - set().union(*keys.values()))
    if unused:
        raise DeployError(f"--stage all: no job takes {', '.join(unused)}; the jobs take "
                          f"{', '.join(sorted(set().union(*keys.values())))}")
    scripts = []
    for name, stage, kind in jobs:
        kw = {k: x for k, x in given.items() if k in keys[name] and (
            k not in _RESOURCES or stage == "train" or (k == "GPUS_PER_NODE"
                                                        and stage in GPU_STAGES))}
        kw["JOB_NAME"] = f"{prefix}-{name}"
        if kind == "step":
            text = render_step(stage.removesuffix("-finalize"), templates.get("step"), **kw)
        else:
            text = render(stage, templates.get(kind), **kw)
        scripts.append((name, text))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, text) in enumerate(scripts, start=1):
        path = out_dir / f"{i:02d}-{name}.sbatch"
        atomic_write_text(path, text)
        paths.append(path)
    lines = ["#!/bin/bash",
             "# spotlight-scale: submit the jobs in order, each after the previous one succeeded",
             "# (--dependency=afterok; a failed job cancels the jobs waiting on it).",
             "# Written by: spotlight-scale deploy slurm --stage all ...",
             "set -euo pipefail", 'cd "$(dirname "$0")"', "prev=",
             "submit() {",
             "  local id",
             '  id="$(sbatch --parsable --kill-on-invalid-dep=yes '
             '${prev:+--dependency=afterok:$prev} "$1")"',
             '  prev="${id%%;*}"',
             '  echo "$prev $1"',
             "}"]
    lines += [f"submit {p.name}" for p in paths]
    atomic_write_text(out_dir / "submit.sh", "\n".join(lines) + "\n")
    (out_dir / "submit.sh").chmod(0o755)
    return paths
