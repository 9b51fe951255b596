"""Sampler, trainer, resume and DDP on small stores (CPU)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import assert_same_run

from spotlight_scale.cli import cli
from spotlight_scale.models.io import load_model_file
from spotlight_scale.train.config import TrainConfig
from spotlight_scale.train.sampler import PatchDataset, make_loader
from spotlight_scale.train.trainer import read_loss_log, run_training

SMALL = dict(depth=2, channels=4, patch=(8, 16, 16), batch_size=4, num_workers=0, lr=3e-3,
             val_interval=5, val_batches=1, checkpoint_interval=5)


@pytest.fixture
def store(make_store):
    return make_store(shape=(16, 48, 48), n_blobs=5)


def test_foreground_sampler_rule_and_chunks(store):
    keys = store.fields("train")
    ds = PatchDataset(store, keys, (8, 16, 16), mode="foreground", norm="spotlight", seed=3)
    reads = []
    orig = store.read

    def counting_read(key, channel, region=None, level=0):
        reads.append(region)
        return orig(key, channel, region, level)

    store.read = counting_read
    for i in range(20):
        sig, tgt, mask = ds[i]
        assert sig.shape == tgt.shape == mask.shape == (1, 8, 16, 16)
        assert mask.float().mean() >= 0.001  # every Spotlight patch has foreground
        assert torch.equal(mask, tgt >= 0)   # spotlight normalisation: Otsu at 0
    assert all(tuple(s.stop - s.start for s in r) == (8, 16, 16) for r in reads)
    sig2, _, _ = ds[7]
    torch.testing.assert_close(sig2, ds[7][0])  # a sample is a pure function of its index
    uni = PatchDataset(store, keys, (8, 16, 16), mode="uniform", norm="fnet", seed=3)
    assert any(float(uni[i][2].float().mean()) == 0 for i in range(40))  # uniform sees background


def test_ranks_draw_disjoint_streams_and_union_is_the_global_batch(store):
    ds = PatchDataset(store, store.fields("train"), (8, 16, 16), mode="uniform", norm="fnet",
                      seed=0)
    one = next(iter(make_loader(ds, batch_size=4, rank=0, world=1, start_iteration=2,
                                iterations=3, num_workers=0)))[0]
    r0 = next(iter(make_loader(ds, batch_size=4, rank=0, world=2, start_iteration=2,
                               iterations=3, num_workers=0)))[0]
    r1 = next(iter(make_loader(ds, batch_size=4, rank=1, world=2, start_iteration=2,
                               iterations=3, num_workers=1)))[0]
    assert not torch.equal(r0, r1)
    torch.testing.assert_close(torch.cat([r0, r1]), one)


def test_bad_input_errors(store, make_store, tmp_path):
    with pytest.raises(ValueError, match="larger than field"):
        PatchDataset(store, store.fields("train"), (32, 16, 16), mode="uniform", norm="fnet", seed=0)
    empty = make_store(fields=(("P2", "B02", 0, "test"),), root=tmp_path / "e")
    with pytest.raises(ValueError, match="training split is empty"):
        run_training(empty.root, tmp_path / "r", TrainConfig(**SMALL, iterations=1))


@pytest.mark.parametrize("loss", ["spotlight", "mse"])
def test_train_cli_loss_falls(store, tmp_path, loss):
    run = tmp_path / loss
    res = CliRunner().invoke(cli, ["train", str(store.root), str(run), "--loss", loss,
                                   "--depth", "2", "--channels", "4", "--patch", "8,16,16",
                                   "--batch-size", "4", "--iterations", "40", "--lr", "0.003",
                                   "--val-interval", "20", "--num-workers", "0"])
    assert res.exit_code == 0, res.output
    log = read_loss_log(run)
    first = np.mean([r["train_loss"] for r in log[:5]])
    last = np.mean([r["train_loss"] for r in log[-5:]])
    assert last < 0.8 * first, (first, last)
    model, meta = load_model_file(run / "model.pt")
    assert meta["normalization"] == {"mse": "fnet", "spotlight": "spotlight"}[loss]
    assert meta["target_range"]["raw_max"] > meta["target_range"]["raw_min"]
    assert (run / "config.yaml").read_text().count(f"loss: {loss}") == 1
    again = CliRunner().invoke(cli, ["train", str(store.root), str(run)])
    assert again.exit_code != 0 and "--resume" in again.output


def test_unknown_config_key(store, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("iterations: 2\nlearning_rate: 0.1\n")
    res = CliRunner().invoke(cli, ["train", str(store.root), str(tmp_path / "r"), "--config",
                                   str(cfg)])
    assert res.exit_code != 0 and "learning_rate" in res.output and str(cfg) in res.output


def test_resume_reproduces_uninterrupted_run(store, tmp_path):
    from spotlight_scale.pipelines.train import train

    full = TrainConfig(**SMALL, iterations=10)
    train(store.root, tmp_path / "full", full)
    train(store.root, tmp_path / "cut", TrainConfig(**SMALL, iterations=5))
    train(store.root, tmp_path / "cut", TrainConfig(**SMALL, iterations=10), resume=True)
    assert_same_run(tmp_path / "full", tmp_path / "cut", 10)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, store_root, run_dir, cfg_kwargs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    run_training(store_root, run_dir, TrainConfig(**cfg_kwargs), progress_stream=None)


def test_ddp_two_gloo_ranks_equal_one_process(store, tmp_path):
    assert_ddp_equals_one_process(store, tmp_path, SMALL)


def assert_ddp_equals_one_process(store, tmp_path, small: dict) -> None:
    """Two gloo ranks train the same model and losses as one process with micro-batches."""
    import torch.multiprocessing as mp

    kw = {**small, "iterations": 3, "val_interval": 100, "checkpoint_interval": 100}
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(store.root), str(tmp_path / "ddp"), kw),
             nprocs=2, join=True)
    run_training(store.root, tmp_path / "one", TrainConfig(**kw, micro_batch=2),
                 progress_stream=None)
    a, _ = load_model_file(tmp_path / "ddp" / "model.pt")
    b, _ = load_model_file(tmp_path / "one" / "model.pt")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    la, lb = read_loss_log(tmp_path / "ddp"), read_loss_log(tmp_path / "one")
    np.testing.assert_allclose([r["train_loss"] for r in la], [r["train_loss"] for r in lb],
                               rtol=1e-4)


def test_lambda_ramp_starts_with_dice_alone(store, tmp_path):
    cfg = TrainConfig(**SMALL, iterations=1, lambda_ramp=4)
    assert [cfg.lam_at(i) for i in (1, 3, 5, 50)] == [0.0, 0.25, 0.5, 0.5]
    with pytest.raises(ValueError, match="lambda_ramp"):
        TrainConfig(**SMALL, lambda_ramp=-1).validate()

    def weights(name, **kw):
        run_training(store.root, tmp_path / name, TrainConfig(**{**SMALL, **kw}, iterations=1),
                     progress_stream=None)
        return load_model_file(tmp_path / name / "model.pt")[0].state_dict()

    ramped, dice_only, plain = (weights("ramp", lambda_ramp=4), weights("dice", lam=0.0),
                                weights("plain"))
    for k in ramped:  # the first step is the Dice-only step, and not the lambda = 0.5 one
        torch.testing.assert_close(ramped[k], dice_only[k], rtol=0, atol=0)
    assert any(not torch.equal(ramped[k], plain[k]) for k in ramped if ramped[k].is_floating_point())
