"""DDP set-up from the launcher's environment: torchrun or SLURM's srun.

- torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``;
- srun sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` and
  ``SLURM_JOB_NODELIST``; the master is the first host of the node list
  (``scontrol show hostnames``) unless ``MASTER_ADDR`` is set.

NCCL on CUDA, gloo on CPU. Only rank 0 writes files.

The GPU of a rank (:func:`local_cuda_index`) follows what the rank can see:
launchers that bind one GPU per task (``srun --gpus-per-task=1``,
``--gpu-bind``) leave one visible device, index 0; where every task sees all of
the node's GPUs, local rank ``r`` takes device ``r``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass

from ..errors import SetupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"
    local_world: int = 1  # ranks on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_host(nodelist: str) -> str:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # simple fallback for "node[01-04],other" style lists
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rng = head.split("[", 1)
        return prefix + rng.rstrip("]").split(",")[0].split("-")[0]
    return head


def _tasks_per_node(text: str | None) -> int:
    """The most tasks on one node from SLURM's ``2(x3),1`` notation."""
    counts = [int(part.split("(")[0]) for part in (text or "").split(",")
              if part.split("(")[0].isdigit()]
    return max(counts, default=1)


def detect(env: dict | None = None) -> DistEnv:
    """Ranks and master address from torchrun or srun variables (single process otherwise)."""
    env = dict(os.environ if env is None else env)
    port = int(env.get("MASTER_PORT", 29500))
    if "WORLD_SIZE" in env and "RANK" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       env.get("MASTER_ADDR", "127.0.0.1"), port, "torchrun",
                       int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", 1)) > 1:
        addr = env.get("MASTER_ADDR") or _first_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        per_node = _tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE")
                                   or env.get("SLURM_TASKS_PER_NODE"))
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                       int(env.get("SLURM_LOCALID", 0)), addr, port, "srun", per_node)
    return DistEnv()


def local_cuda_index(dist_env: DistEnv, n_visible: int, visible: str | None = None) -> int:
    """The CUDA device index this rank uses among the ``n_visible`` devices it sees.

    One visible device: 0 (one GPU per task, or a single GPU). Otherwise every
    task sees the node's GPUs and local rank ``r`` takes device ``r``; fewer
    visible devices than ranks on the node is refused (ranks would share a GPU).
    ``visible``: the ``CUDA_VISIBLE_DEVICES`` value, for the message.
    """
    if n_visible < 1:
        raise SetupError("--device cuda requested but torch sees no CUDA GPU "
                           f"(CUDA_VISIBLE_DEVICES={visible!r})")
    if n_visible == 1:
        return 0
    if dist_env.local_rank < n_visible and dist_env.local_world <= n_visible:
        return dist_env.local_rank
    raise SetupError(
        f"rank {dist_env.rank} (local rank {dist_env.local_rank} of {dist_env.local_world} on "
        f"this node) sees {n_visible} GPUs (CUDA_VISIBLE_DEVICES={visible!r}): run one task per "
        "GPU (tasks per node = GPUs per node) or bind one GPU to each task")


def resolve_device(requested: str, dist_env: DistEnv) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` -> this rank's device (made current on CUDA)."""
    from ..backend import torch_device

    device = torch_device(requested)
    if device.startswith("cuda"):
        import torch

        if device == "cuda":
            index = local_cuda_index(dist_env, torch.cuda.device_count(),
                                     os.environ.get("CUDA_VISIBLE_DEVICES"))
            device = f"cuda:{index}"
        torch.cuda.set_device(device)
    return device


def init(dist_env: DistEnv, device: str) -> None:
    """Join the process group (no-op for a single process)."""
    if dist_env.world == 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if device.startswith("cuda") else "gloo"
    os.environ["MASTER_ADDR"] = dist_env.master_addr
    os.environ["MASTER_PORT"] = str(dist_env.master_port)
    dist.init_process_group(backend, rank=dist_env.rank, world_size=dist_env.world)
    log.info("DDP rank %d/%d via %s (%s, master %s:%d)", dist_env.rank, dist_env.world,
             dist_env.launcher, backend, dist_env.master_addr, dist_env.master_port)


def shutdown(dist_env: DistEnv) -> None:
    if dist_env.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
