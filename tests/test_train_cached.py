"""The cached training set (same stream as the store-backed sampler), foreground origins for
any patch, the memory-budget fallback, preemption (signal -> checkpoint -> resume auto) and
the device of a rank (CPU; a faked number of visible GPUs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from spotlight_scale.errors import SetupError
from spotlight_scale.train import distributed as ddp
from spotlight_scale.train.cached import CachedPatchSet, cache_nbytes, training_stream
from spotlight_scale.train.config import TrainConfig
from spotlight_scale.train.preempt import EXIT_INTERRUPTED
from spotlight_scale.train.sampler import PatchDataset, field_origins, make_loader
from spotlight_scale.train.trainer import run_training

from conftest import assert_same_run, reference_patch_index

SMALL = dict(depth=2, channels=4, patch=(8, 16, 16), batch_size=4, num_workers=0, lr=3e-3,
             val_interval=5, val_batches=1, checkpoint_interval=5)


@pytest.fixture
def store(make_store):
    return make_store(shape=(16, 48, 48), n_blobs=5)


def _stack(ds, indices):
    return [torch.stack(t) for t in zip(*(ds[i] for i in indices))]


@pytest.mark.parametrize("mode,norm,patch,augment", [
    ("foreground", "spotlight", (8, 16, 16), False),   # the patch ingest indexed
    ("foreground", "spotlight", (8, 32, 32), True),    # another patch: origins computed
    ("uniform", "fnet", (8, 16, 32), True),            # Y != X: half turns only
])
def test_cached_set_equals_store_backed(store, mode, norm, patch, augment):
    keys = store.fields("train")
    kw = dict(mode=mode, norm=norm, seed=5, augment=augment)
    ref = PatchDataset(store, keys, patch, **kw)
    cached = CachedPatchSet(store, keys, patch, device="cpu", **kw)
    idx = [0, 3, 17, 123456789, 42]
    got = cached.batch(idx)
    want = _stack(ref, idx)
    for name, a, b in zip(("signal", "target", "mask"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape == (len(idx), 1, *patch), name
        assert torch.equal(a, b), name  # bit for bit: same patches, same float32 arithmetic
    if mode == "foreground":
        assert all(float(m.float().mean()) >= 0.001 for m in got[2])
    # the reused output buffers give the same values as a fresh allocation
    out = cached.empty_batch(len(idx))
    again = cached.batch(idx, out=out)
    assert all(torch.equal(a, b) for a, b in zip(again, got))
    assert again[0].data_ptr() == out[0].data_ptr()


def test_cached_batches_follow_the_ranks_of_the_loader(store):
    keys = store.fields("train")
    kw = dict(mode="foreground", norm="spotlight", seed=1)
    ds = PatchDataset(store, keys, (8, 16, 16), **kw)
    cached = CachedPatchSet(store, keys, (8, 16, 16), **kw)
    for rank in (0, 1):
        loop = dict(batch_size=4, rank=rank, world=2, start_iteration=3, iterations=5)
        a = [[t.clone() for t in b] for b in cached.batches(**loop)]  # buffers are reused
        b = list(make_loader(ds, num_workers=0, **loop))
        assert len(a) == len(b) == 2
        for x, y in zip(a, b):
            assert all(torch.equal(u, v) for u, v in zip(x, y))


def test_origins_for_any_patch(store):
    """For the indexed patch the stored index is used; for another the origins computed from
    the target equal a brute-force reference with the index's rule (stride clipped to the
    patch), and computing them for the indexed patch reproduces ingest's index."""
    from spotlight_scale.core.patches import foreground_patch_origins

    key = store.fields("train")[0]
    idx = store.patch_index(key)
    target = store.read(key, "target")
    fg = target >= store.stats(key, "target")["otsu"]
    again, _ = foreground_patch_origins(fg, idx.patch_shape, idx.stride, idx.min_fraction)
    np.testing.assert_array_equal(again, idx.origins)
    patch = (4, 32, 8)
    stride = tuple(min(s, p) for s, p in zip(idx.stride, patch))
    ref, _ = reference_patch_index(fg, patch, stride, idx.min_fraction)
    got = field_origins(store, key, patch)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(field_origins(store, key, patch, target=target), ref)
    assert len(got) and not np.array_equal(got[:, 1:], idx.origins[: len(got), 1:])


def test_memory_budget_fallback(store):
    keys = store.fields("train")
    need = cache_nbytes(store, keys)
    assert need == 2 * (4 + 4 + 1) * 16 * 48 * 48  # two fields: float32 signal, target; mask
    cfg = TrainConfig(**SMALL, iterations=2, cache_memory_gb=need / 2**30)
    common = dict(device="cpu", rank=0, world=1, local_ranks=1, start_iteration=0)
    cached, path = training_stream(store, keys, cfg, **common)
    assert path == "cached"
    cfg.cache_memory_gb = (need - 1) / 2**30
    loader, path = training_stream(store, keys, cfg, **common)
    assert path == "store"
    for a, b in zip(cached, loader):  # the fallback draws the same batches
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    cfg.cache = "on"
    with pytest.raises(SetupError, match="cache budget"):
        training_stream(store, keys, cfg, **common)


def test_cached_and_store_backed_training_resume_into_one_run(store, tmp_path):
    """Train 10 iterations cached; train 5 store-backed, then resume (auto) cached: same run."""
    from spotlight_scale.pipelines.train import train

    train(store.root, tmp_path / "full", TrainConfig(**SMALL, iterations=10, cache="on"))
    train(store.root, tmp_path / "cut", TrainConfig(**SMALL, iterations=5, cache="off"),
          resume="auto")  # nothing to resume yet: starts
    train(store.root, tmp_path / "cut", TrainConfig(**SMALL, iterations=10, cache="on"),
          resume="auto")
    assert_same_run(tmp_path / "full", tmp_path / "cut", 10)


class _SignalOnFirstWrite:
    """A progress stream that sends ``signum`` to this process when training first reports
    (after iteration 1): the trainer sees it after iteration 2, deterministically."""

    def __init__(self, signum):
        self.signum, self.sent = signum, False

    def write(self, text):
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def flush(self):
        pass


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM])
def test_signal_checkpoints_and_resume_auto_finishes_the_same_run(store, tmp_path, signum):
    from spotlight_scale.pipelines.train import train
    from spotlight_scale.train.checkpoint import load_checkpoint
    from spotlight_scale.train.preempt import TrainingInterrupted

    cfg = TrainConfig(**{**SMALL, "checkpoint_interval": 1000}, iterations=10)
    with pytest.raises(TrainingInterrupted, match=signal.Signals(signum).name) as info:
        train(store.root, tmp_path / "cut", cfg, resume="auto",
              progress_stream=_SignalOnFirstWrite(signum))
    assert info.value.iteration == 2 and load_checkpoint(tmp_path / "cut")["iteration"] == 2
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert signal.getsignal(signum) is signal.SIG_DFL  # handlers restored
    train(store.root, tmp_path / "cut", cfg, resume="auto", progress_stream=None)
    run_training(store.root, tmp_path / "full", cfg, progress_stream=None)
    assert_same_run(tmp_path / "full", tmp_path / "cut", 10)


def test_train_cli_exits_75_after_a_signal(store, tmp_path):
    cmd = [sys.executable, "-m", "spotlight_scale", "-v", "train", str(store.root),
           str(tmp_path / "run"), "--depth", "2", "--channels", "4", "--patch", "8,16,16",
           "--batch-size", "4", "--iterations", "5000", "--num-workers", "0", "--resume", "auto"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = []
    for line in proc.stderr:  # the handler is in place once the data path is chosen
        seen.append(line)
        if "training data:" in line:
            break
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    err = "".join(seen) + err
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "stopped by SIGUSR1" in err and "--resume auto" in err and "Traceback" not in err
    from spotlight_scale.train.checkpoint import load_checkpoint

    assert 1 <= load_checkpoint(tmp_path / "run")["iteration"] < 5000


@pytest.mark.parametrize("local_rank,local_world,visible,expected", [
    (0, 1, 1, 0), (3, 4, 1, 0),    # one GPU bound to each task (or a single GPU)
    (0, 4, 4, 0), (3, 4, 4, 3),    # every task sees the node's GPUs
    (1, 2, 8, 1),                  # more GPUs than ranks: ranks take the first ones
    (3, 4, 2, None), (0, 1, 0, None),  # ranks would share a GPU; no GPU
])
def test_local_cuda_device_from_visible_count(local_rank, local_world, visible, expected):
    env = ddp.DistEnv(rank=local_rank, world=local_world, local_rank=local_rank,
                      local_world=local_world)
    if expected is None:
        with pytest.raises(SetupError, match="CUDA_VISIBLE_DEVICES='x'"):
            ddp.local_cuda_index(env, visible, "x")
    else:
        assert ddp.local_cuda_index(env, visible, "x") == expected


def test_ranks_per_node_from_launchers():
    slurm = ddp.detect({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                        "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "MASTER_ADDR": "n1"})
    assert (slurm.rank, slurm.world, slurm.local_rank, slurm.local_world) == (5, 8, 1, 4)
    mixed = ddp.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "5", "SLURM_TASKS_PER_NODE": "3,2",
                        "MASTER_ADDR": "n1"})
    assert mixed.local_world == 3
    tr = ddp.detect({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"})
    assert (tr.rank, tr.local_rank, tr.local_world) == (2, 0, 2)


@pytest.mark.gpu
def test_cached_set_on_the_gpu_equals_the_store_backed_sampler(store, tmp_path):
    """On CUDA the batch is made of device copies of fields normalised on the host: equal to
    the store-backed patches bit for bit; and a short training run on the GPU goes through."""
    keys = store.fields("train")
    kw = dict(mode="foreground", norm="spotlight", seed=5, augment=True)
    cached = CachedPatchSet(store, keys, (8, 16, 16), device="cuda", **kw)
    idx = [0, 3, 17, 99]
    got = cached.batch(idx)
    assert all(t.device.type == "cuda" for t in got)
    want = _stack(PatchDataset(store, keys, (8, 16, 16), **kw), idx)
    for a, b in zip(got, want):
        assert torch.equal(a.cpu(), b)
    out = run_training(store.root, tmp_path / "gpu", TrainConfig(**SMALL, iterations=3,
                                                                 device="cuda", cache="on"),
                       progress_stream=None)
    assert out is not None and out.exists()
