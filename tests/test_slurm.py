"""Against a real single-node SLURM (deploy/slurm/local-slurm.sh): dask-jobqueue workers as
SLURM jobs, the training template under sbatch + srun with 2 gloo ranks, a cancelled worker."""

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
        out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True)
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


def test_train_template_sbatch_srun_two_ranks(slurm, tmp_path):
    from spotlight_scale.deploy import render
    from spotlight_scale.pipelines.ingest import IngestSettings, ingest

    man = _raw(tmp_path, 4)
    ingest(man, tmp_path / "store", IngestSettings(patch=(8, 32, 32)), workers=1,
           progress_stream=None)
    bindir = Path(sys.executable).parent
    script = render("train", nodes=1, tasks_per_node=2, cpus_per_task=1, mem_per_cpu="1G",
                    time="00:10:00", log_dir=tmp_path, store=tmp_path / "store",
                    run_dir=tmp_path / "run", master_port=29731,
                    prologue=[f'export PATH="{bindir}:$PATH"'],
                    train_args="--loss spotlight --depth 2 --channels 4 --patch 8,32,32 "
                               "--batch-size 4 --iterations 3 --num-workers 0 --device cpu")
    (tmp_path / "train.sbatch").write_text(script)
    out = subprocess.run(["sbatch", "--parsable", "--wait", str(tmp_path / "train.sbatch")],
                         capture_output=True, text=True, timeout=600)
    logs = "\n".join(p.read_text() for p in tmp_path.glob("*.out"))
    assert out.returncode == 0, out.stderr + logs
    assert (tmp_path / "run" / "model.pt").exists(), logs
    assert "DDP" in logs or "rank" in logs.lower() or (tmp_path / "run" / "loss.csv").exists()
    from spotlight_scale.train.trainer import read_loss_log

    assert [r["iteration"] for r in read_loss_log(tmp_path / "run")] == [1, 2, 3]
