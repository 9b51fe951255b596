"""Against a real single-node SLURM (deploy/slurm/local-slurm.sh): dask-jobqueue workers as
SLURM jobs (an open profile's keywords reach them), a cancelled worker, a training job with 2
gloo ranks under sbatch + srun that is signalled, requeues itself and ends like an
uninterrupted run, and the whole pipeline as chained job arrays (deploy slurm --stage all)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "local-slurm.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no SLURM and no apt-get to install it")
    if os.geteuid() != 0 and shutil.which("slurmctld") is None:
        pytest.skip("installing SLURM needs root")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(tmp_path_factory.mktemp("slurm"))}
    r = subprocess.run(["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        pytest.skip(f"local SLURM did not start: {r.stderr[-500:]}")
    conf = r.stdout.strip().splitlines()[-1].split("=", 1)[1]
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    yield env
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def _profile(tmp_path, jobs=2):
    p = tmp_path / "profile.yaml"
    p.write_text(f"cores: 1\nmemory: 1GB\nwalltime: '00:15:00'\njobs: {jobs}\ninterface: lo\n"
                 f"local_directory: {tmp_path}\nlog_directory: {tmp_path}\n"
                 f"python: {sys.executable}\n")
    return p


def _watch_squeue(stop, seen):
    while not stop.is_set():
        out = subprocess.run(["squeue", "-h", "-o", "%i %j %T %r"], capture_output=True,
                             text=True)
        seen.update(line for line in out.stdout.splitlines() if line.strip())
        time.sleep(0.3)


def _raw(tmp_path, n):
    from spotlight_scale.pipelines.synth import synth_screen

    return synth_screen(tmp_path / "raw", wells=n // 2, fields=2, shape=(8, 64, 64), seed=2)


def _arrays(root):
    from spotlight_scale.io.store import Store

    s = Store(root)
    return {k.id: (s.read(k, "target"), s.stats(k, "target")) for k in s.fields()}


def test_ingest_on_slurm_workers_equals_local(slurm, tmp_path):
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    man = _raw(tmp_path, 4)
    settings = IngestSettings(patch=(8, 32, 32))
    stop, seen = threading.Event(), set()
    watcher = threading.Thread(target=_watch_squeue, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        ingest(man, tmp_path / "slurm", settings, cluster="slurm",
               cluster_config=str(_profile(tmp_path)), progress_stream=None)
    finally:
        stop.set()
        watcher.join()
    assert any("dask-worker" in s and "RUNNING" in s for s in seen), seen
    ingest(man, tmp_path / "local", settings, workers=1, progress_stream=None)
    a, b = _arrays(tmp_path / "slurm"), _arrays(tmp_path / "local")
    assert sorted(a) == sorted(b) and len(a) == 4
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        assert a[k][1] == b[k][1]


def test_cancelled_worker_job_loses_nothing(slurm, tmp_path):
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    man = _raw(tmp_path, 8)
    result = {}

    def run():
        result["res"] = ingest(man, tmp_path / "store", IngestSettings(patch=(8, 32, 32)),
                               cluster="slurm", cluster_config=str(_profile(tmp_path)),
                               progress_stream=None)

    t = threading.Thread(target=run)
    t.start()
    marker_dir = tmp_path / "store" / "_done" / "ingest"
    deadline = time.time() + 120
    while time.time() < deadline and not list(marker_dir.rglob("*.json")):
        time.sleep(0.1)
    jobs = subprocess.run(["squeue", "-h", "-n", "dask-worker", "-t", "RUNNING", "-o", "%i"],
                          capture_output=True, text=True).stdout.split()
    assert jobs, "no running worker job to cancel"
    subprocess.run(["scancel", jobs[0]], check=True)
    t.join(timeout=300)
    assert not t.is_alive() and result["res"]["failed"] == 0
    from spotlight_scale.io.store import Store

    store = Store(tmp_path / "store")
    assert len(store.fields()) == 8
    for k in store.fields():
        store.read(k, "target")
        store.patch_index(k)


def _job(jid: str) -> dict[str, str]:
    """``scontrol show job`` as a dict ({} once the controller forgot the job)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", jid], capture_output=True,
                         text=True).stdout
    return dict(f.split("=", 1) for f in out.split() if "=" in f)


def _wait(predicate, timeout, what, logs=lambda: ""):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")


def _ddp_reference(rank, world, port, store_root, run_dir, cfg_kwargs):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    from spotlight_scale.train.config import TrainConfig
    from spotlight_scale.train.trainer import run_training

    torch.set_num_threads(1)
    run_training(store_root, run_dir, TrainConfig(**cfg_kwargs), progress_stream=None)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_preempted_training_job_requeues_and_ends_like_an_uninterrupted_run(slurm, make_store,
                                                                            tmp_path):
    """The train template with 2 gloo ranks under srun gets USR1 as `--signal=B:USR1@120`
    delivers it (to the batch shell); the ranks stop together after a checkpoint, the job
    requeues itself, and the requeued job (`--resume auto`) ends with the weights and losses
    of an uninterrupted 2-rank run, bit for bit."""
    import torch.multiprocessing as mp

    from conftest import assert_same_run
    from spotlight_scale.deploy import render
    from spotlight_scale.train.trainer import read_loss_log

    store = make_store(root=tmp_path / "store")
    n = 60  # the signal is sent after iteration 1 (it arrived after iteration 11 on a busy machine)
    cfg = dict(loss="spotlight", depth=2, channels=4, patch=(8, 16, 16), batch_size=4,
               iterations=n, num_workers=0, checkpoint_interval=1000, val_interval=20,
               device="cpu")
    args = " ".join(f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, tuple) else v}"
                    for k, v in cfg.items())
    script = render("train", nodes=1, tasks_per_node=2, cpus_per_task=1, mem_per_cpu="1G",
                    time="00:10:00", log_dir=tmp_path, store=store.root,
                    run_dir=tmp_path / "run", master_port=_free_port(),
                    prologue=[f'export PATH="{Path(sys.executable).parent}:$PATH"'],
                    train_args=args)
    (tmp_path / "train.sbatch").write_text(script)
    jid = subprocess.run(["sbatch", "--parsable", str(tmp_path / "train.sbatch")],
                         capture_output=True, text=True, check=True).stdout.strip()
    log = tmp_path / f"spotlight-train-{jid}.out"
    text = lambda: log.read_text() if log.exists() else ""  # noqa: E731
    _wait(lambda: "train spotlight: " in text(), 180, "training to start", text)
    subprocess.run(["scancel", "--signal=USR1", "--batch", jid], check=True)
    # the job requeues itself and starts again after SLURM's hold (cred_expire + 1 s: 11 s
    # on the local controller, 121 s by default)
    _wait(lambda: _job(jid).get("Restarts") == "1", 120, "the job to requeue itself", text)
    _wait(lambda: _job(jid).get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", None),
          300, "the requeued job to finish", text)
    assert _job(jid).get("JobState") == "COMPLETED", f"{_job(jid)}\n{text()}"
    out = text()
    assert "stopped by SIGUSR1 after iteration" in out and f"requeueing job {jid}" in out
    stopped = int(out.split("stopped by SIGUSR1 after iteration ")[1].split(";")[0])
    assert 1 <= stopped < n, out
    assert [r["iteration"] for r in read_loss_log(tmp_path / "run")] == list(range(1, n + 1))
    mp.spawn(_ddp_reference, args=(2, _free_port(), str(store.root),
                                   str(tmp_path / "ref"), cfg), nprocs=2, join=True)
    assert_same_run(tmp_path / "ref", tmp_path / "run", n)


def test_open_profile_keywords_and_site_defaults_reach_the_worker_job(slurm, tmp_path):
    import dask

    from spotlight_scale.cluster import open_client

    prof = tmp_path / "open.yaml"
    prof.write_text(f"cores: 1\nmemory: 1GB\njobs: 1\ninterface: lo\njob_name: spot-open\n"
                    f"local_directory: {tmp_path}\nlog_directory: {tmp_path}\n"
                    f"python: {sys.executable}\n"
                    "job_extra_directives: ['--comment=spotlight-open-profile', '--nice=7']\n")
    # no walltime in the profile: the site's dask config decides (ours would be 1 h)
    with dask.config.set({"jobqueue.slurm.walltime": "00:07:00"}), \
            open_client("slurm", cluster_config=str(prof)) as client:
        client.wait_for_workers(1, timeout=120)
        seen = subprocess.run(["squeue", "-h", "-n", "spot-open", "-o", "%k|%y|%l|%T"],
                              capture_output=True, text=True).stdout.split()
    assert seen == ["spotlight-open-profile|7|7:00|RUNNING"], seen


def test_stage_all_chains_job_arrays_over_the_fields(slurm, tmp_path):
    """`deploy slurm --stage all`: ingest, train, predict, segment and profile as job arrays
    (4 fields, 2 per task) and one-task finalize runs, chained with --dependency=afterok."""
    from click.testing import CliRunner

    from spotlight_scale.cli import cli
    from spotlight_scale.io.store import Store

    man = _raw(tmp_path, 4)
    store, jobs, logs = tmp_path / "store", tmp_path / "jobs", tmp_path / "logs"
    logs.mkdir()
    sets = {"MEM": "2G", "MEM_PER_CPU": "2G", "LOG_DIR": logs, "MANIFEST": man, "STORE": store,
            "RUN_DIR": tmp_path / "run", "NAME": "spot", "PROFILES": tmp_path / "profiles",
            "FIELDS_PER_TASK": 2, "THROTTLE": 2, "MASTER_PORT": _free_port(),
            # train at another patch than ingest indexed
            "TRAIN_ARGS": "--depth 2 --channels 4 --patch 8,32,32 --batch-size 4 "
                          "--iterations 3 --num-workers 0"}
    args = ["deploy", "slurm", "--stage", "all", "--out", str(jobs), "--submit",
            "--cpus-per-task", "1", "--time", "00:10:00",
            "--prologue", f'export PATH="{Path(sys.executable).parent}:$PATH"',
            "--prologue", "export OMP_NUM_THREADS=1"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    stop, seen = threading.Event(), set()
    watcher = threading.Thread(target=_watch_squeue, args=(stop, seen), daemon=True)
    watcher.start()
    try:
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        ids = [line.split()[0] for line in res.output.splitlines() if line[:1].isdigit()]
        assert len(ids) == 9
        text = lambda: "\n".join(f"--- {p.name}\n{p.read_text()}"  # noqa: E731
                                  for p in sorted(logs.glob("*.out")))
        _wait(lambda: all(_job(j).get("JobState", "COMPLETED") in ("COMPLETED", "FAILED",
                                                                     "CANCELLED", "TIMEOUT")
                          for j in ids), 900, "the chain to finish", text)
    finally:
        stop.set()
        watcher.join()
    assert all(_job(j).get("JobState", "COMPLETED") == "COMPLETED" for j in ids), text()
    assert any(f"{ids[0]}_1 " in s for s in seen)  # array tasks ran as such
    assert any("PENDING Dependency" in s for s in seen)  # later stages waited (afterok)
    s = Store(store)
    keys = s.fields()
    assert len(keys) == 4 and len(s.fields_table()) == 4  # the finalize run wrote the table
    assert all(s.is_done("predict", k, name="spot") and s.is_done("segment", k, name="seg-spot")
               for k in keys)
    assert (tmp_path / "run" / "model.pt").exists()
    from spotlight_scale.io import profiles as P

    assert all(P.part_path(tmp_path / "profiles", k).exists() for k in keys)
    # the well table comes from the unsharded run (3 training iterations find few nuclei:
    # its rows are not the point here)
    assert P.wells_path(tmp_path / "profiles").exists()
    # shards: 2 tasks per array, logs named JOB_TASK
    assert len(list(logs.glob(f"spotlight-ingest-{ids[0]}_*.out"))) == 2
