"""The training loop: Adam, optional DDP, bf16 autocast on GPU, validation, checkpoints.

BatchNorm under DDP is per rank (statistics of each rank's local batch), as in
plain ``DistributedDataParallel``. A single process reproduces a DDP run
exactly by processing the global batch in ``micro_batch``-sized pieces with
gradient accumulation: gradients are averaged over the pieces as DDP averages
them over ranks (this is what the 2-process test checks).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from ..config import config_to_dict, save_config
from ..core.losses import get_loss
from ..core.normalize import target_range
from ..io.store import Store
from ..models.fnet import FNet
from ..models.io import save_model_file
from ..progress import Progress
from . import distributed as ddp
from .cached import training_stream
from .checkpoint import latest_path, load_checkpoint, save_checkpoint
from .config import TrainConfig, field_patch
from .preempt import StopRequest, TrainingInterrupted
from .sampler import VAL_SALT, PatchDataset

log = logging.getLogger(__name__)

LOSS_COLUMNS = ["iteration", "train_loss", "val_loss", "seconds"]


def _split_fields(store: Store):
    train = store.fields("train")
    if not train:
        raise ValueError(f"{store.root}: the training split is empty (no field with split=train)")
    val = store.fields("val")
    if not val:
        if len(train) >= 2:
            val, train = train[-1:], train[:-1]
            log.warning("no 'val' fields: holding out training field %s for validation", val[0])
        else:
            log.warning("no 'val' fields and one training field: validating on other patches "
                        "of the training field")
            val = list(train)
    return train, val


def _planar_store(store: Store, keys) -> bool:
    """True when the training and validation fields are single planes (a 2D F-net is
    trained), False for z-stacks; a mixture is an error naming one field of each."""
    from ..core.dims import is_planar

    kinds = {}
    for key in keys:
        kinds.setdefault(is_planar(store.field_meta(key)["shape_zyx"]), key)
    if len(kinds) > 1:
        raise ValueError(f"{store.root}: the store mixes 2D fields (e.g. {kinds[True]}) and "
                         f"z-stacks (e.g. {kinds[False]}); train on one kind")
    return bool(kinds.get(True) is not None)


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if int(r["iteration"]) <= upto]


def run_training(store_root, run_dir, cfg: TrainConfig, *, resume: bool = False,
                 progress_stream=sys.stderr) -> Path | None:
    """Train F-net on the store's training fields; returns the model path (rank 0).

    SIGUSR1 or SIGTERM from the start of this call on: every rank stops after the
    same iteration, rank 0 saves the checkpoint and :class:`TrainingInterrupted`
    is raised (see :mod:`spotlight_scale.train.preempt`).
    """
    with StopRequest() as stop:
        return _train(store_root, run_dir, cfg, resume=resume, progress_stream=progress_stream,
                      stop=stop)


def _train(store_root, run_dir, cfg: TrainConfig, *, resume: bool, progress_stream,
           stop: StopRequest) -> Path | None:
    cfg.validate()
    run_dir = Path(run_dir)
    store = Store(store_root)
    env = ddp.detect()
    device = ddp.resolve_device(cfg.device, env)
    if cfg.batch_size % env.world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {env.world} ranks")
    local = cfg.batch_size // env.world
    micro = min(cfg.micro_batch or local, local)
    if local % micro:
        raise ValueError(f"micro_batch {micro} must divide the local batch {local}")
    ddp.init(env, device)

    train_keys, val_keys = _split_fields(store)
    planar = _planar_store(store, train_keys + val_keys)
    cfg = dataclasses.replace(cfg, patch=field_patch(cfg.patch, planar))
    cfg.validate()
    if env.is_main and (run_dir / "config.yaml").exists():
        save_config(cfg, run_dir / "config.yaml")  # with the patch resolved for this store
    norm, mode = cfg.norm_mode, cfg.sampling_mode
    val_ds = PatchDataset(store, val_keys, cfg.patch, mode=mode, norm=norm, seed=cfg.seed,
                          salt=VAL_SALT)
    torch.manual_seed(cfg.seed)
    model = FNet(depth=cfg.depth, channels=cfg.channels, init=cfg.init,
                 spatial_dims=2 if planar else 3).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    loss_fn = get_loss(cfg.loss, **(cfg.spotlight_kwargs() if cfg.loss == "spotlight" else {}))
    start = 0
    if resume:
        ck = load_checkpoint(run_dir)
        saved = {k: v for k, v in ck["config"].items()
                 if k not in ("iterations", "device", "num_workers", "cache", "cache_memory_gb")}
        now = {k: v for k, v in config_to_dict(cfg).items() if k in saved}
        diff = sorted(k for k in saved if saved[k] != now.get(k))
        if diff:
            raise ValueError(f"{latest_path(run_dir)}: cannot resume with changed settings "
                             f"{', '.join(diff)}")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["iteration"])
        log.info("resuming %s at iteration %d", run_dir, start)
    net = model
    if env.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda")
                else nullcontext())

    log_path = run_dir / "loss.csv"
    rows = _read_log(log_path, start) if resume else []
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    def write_log():
        if not env.is_main:
            return
        from ..io.atomic import atomic_write_text
        import io as _io

        buf = _io.StringIO()
        w = csv.DictWriter(buf, LOSS_COLUMNS)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(log_path, buf.getvalue())

    # a fixed validation set, the same at every evaluation
    val_batches = [[val_ds[b * local + j] for j in range(local)] for b in range(cfg.val_batches)]

    def validate() -> float:
        model.eval()
        total = 0.0
        with torch.no_grad(), autocast:
            for batch in val_batches:
                sig, tgt, mask = (torch.stack(t).to(device) for t in zip(*batch))
                total += float(loss_fn(model(sig).float(), tgt, mask))
        model.train()
        return total / max(len(val_batches), 1)

    loader, path = training_stream(store, train_keys, cfg, device=device, rank=env.rank,
                                   world=env.world, local_ranks=env.local_world,
                                   start_iteration=start)
    log.info("training data: %s", "cached on the device" if path == "cached" else "store-backed")
    progress = Progress(cfg.iterations, "it", desc=f"train {cfg.loss}", initial=start,
                        stream=progress_stream if env.is_main else None)
    t0 = time.perf_counter()
    model.train()
    it = start
    for it, (sig, tgt, mask) in enumerate(loader, start=start + 1):
        sig, tgt, mask = sig.to(device), tgt.to(device), mask.to(device)
        opt.zero_grad(set_to_none=True)
        n_micro = local // micro
        total = 0.0
        ramp = {"lam": cfg.lam_at(it)} if cfg.loss == "spotlight" and cfg.lambda_ramp else {}
        for m in range(n_micro):
            sl = slice(m * micro, (m + 1) * micro)
            sync = nullcontext() if (m == n_micro - 1 or env.world == 1) else net.no_sync()
            with sync, autocast:
                loss = loss_fn(net(sig[sl]).float(), tgt[sl], mask[sl], **ramp) / n_micro
                loss.backward()
            total += float(loss.detach())
        opt.step()
        stopping = stop.requested
        if env.world > 1:  # the stop flag travels with the loss: all ranks stop together
            t = torch.tensor([total, float(stopping)], device=device)
            torch.distributed.all_reduce(t)
            total, stopping = float(t[0]) / env.world, bool(t[1] > 0)
        if not math.isfinite(total):
            raise FloatingPointError(f"training loss became {total} at iteration {it}")
        row = {"iteration": it, "train_loss": f"{total:.8g}", "val_loss": "",
               "seconds": f"{time.perf_counter() - t0:.3f}"}
        if env.is_main and (it % cfg.val_interval == 0 or it == cfg.iterations):
            row["val_loss"] = f"{validate():.8g}"
        rows.append(row)
        progress.update(1, extra=f"loss {total:.4f}")
        if env.is_main and (stopping or it % cfg.checkpoint_interval == 0
                            or it == cfg.iterations):
            save_checkpoint(run_dir, model=model, optimizer=opt, iteration=it,
                            config=config_to_dict(cfg))
            write_log()
        if stopping and it < cfg.iterations:
            progress.close()
            ddp.shutdown(env)
            raise TrainingInterrupted(it, stop.signum, latest_path(run_dir))
    progress.close()
    out = None
    if env.is_main:
        write_log()
        rng = target_range([store.stats(k, "target") for k in train_keys], norm)
        out = save_model_file(run_dir / "model.pt", model, normalization=norm, target_range=rng,
                              train_config=config_to_dict(cfg), iteration=it, loss=cfg.loss,
                              loss_settings=cfg.loss_settings())
    ddp.shutdown(env)
    return out


def read_loss_log(run_dir) -> list[dict]:
    """The loss log as a list of dicts (floats; ``val_loss`` None where not evaluated)."""
    out = []
    with open(Path(run_dir) / "loss.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            out.append({"iteration": int(r["iteration"]), "train_loss": float(r["train_loss"]),
                        "val_loss": float(r["val_loss"]) if r["val_loss"] else None})
    return out



