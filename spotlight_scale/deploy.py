"""Render the SLURM job templates of ``deploy/slurm/`` with checked settings.

Templates use ``${NAME}`` placeholders (``string.Template``) and carry no
site-specific paths. Rendering refuses what would not run: a GPU training job
whose tasks per node differ from its GPUs per node, a placeholder left empty.
"""

from __future__ import annotations

import string
from importlib import resources

STAGES = ("train", "pipeline", "array")


def template_text(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return resources.files("spotlight_scale").joinpath(f"templates/{stage}.sbatch.tmpl").read_text()


def render(stage: str, **values) -> str:
    """Render ``stage`` with ``values`` (upper-case placeholder names, any case accepted)."""
    v = {k.upper(): ("" if x is None else str(x)) for k, x in values.items()}
    v.setdefault("JOB_NAME", f"spotlight-{stage}")
    v.setdefault("PARTITION", "")
    v.setdefault("TIME", "01:00:00")
    v.setdefault("LOG_DIR", ".")
    v.setdefault("CPUS_PER_TASK", "4")
    v.setdefault("MEM", "16G")
    v.setdefault("MEM_PER_CPU", "4G")
    v.setdefault("MASTER_PORT", "29500")
    prologue = values.get("prologue") or values.get("PROLOGUE") or []
    v["PROLOGUE"] = "\n".join(prologue) if isinstance(prologue, (list, tuple)) else str(prologue)
    account = v.pop("ACCOUNT", "")
    v["ACCOUNT_LINE"] = f"#SBATCH --account={account}" if account else ""
    if stage == "train":
        nodes = int(v.setdefault("NODES", "1"))
        gpus = int(v.pop("GPUS_PER_NODE", "0") or 0)
        tasks = int(v.setdefault("TASKS_PER_NODE", str(gpus or 1)))
        if gpus and tasks != gpus:
            raise ValueError(f"tasks per node ({tasks}) must equal GPUs per node ({gpus}): "
                             "DDP runs one rank per GPU")
        if nodes < 1 or tasks < 1:
            raise ValueError("nodes and tasks per node must be >= 1")
        v["GPU_LINE"] = f"#SBATCH --gpus-per-node={gpus}" if gpus else ""
        v.setdefault("TRAIN_ARGS", "")
    text = string.Template(template_text(stage))
    needed = {m.group("named") or m.group("braced") for m in text.pattern.finditer(text.template)
              if m.group("named") or m.group("braced")}
    if v.get("PARTITION", "") == "":
        text = string.Template(text.template.replace("#SBATCH --partition=${PARTITION}\n", ""))
        needed.discard("PARTITION")
    optional = {"PROLOGUE", "ACCOUNT_LINE", "GPU_LINE", "TRAIN_ARGS"}
    missing = sorted(k for k in needed - optional if not v.get(k))
    if missing:
        raise ValueError(f"template {stage!r} needs values for: {', '.join(missing)}")
    return text.substitute(v)
