"""Job scripts render from one copy of the templates with checked settings; cluster profiles
pass any dask-jobqueue SLURMCluster keyword through; sharded stage runs cover every field
once and leave the store-level tables to the unsharded run."""

from importlib import resources
from pathlib import Path

import pytest
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.config import ConfigError
from spotlight_scale.deploy import DeployError, render, render_all, template_text

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args):
    return CliRunner().invoke(cli, ["deploy", "slurm", *args])


def test_train_template_invariants():
    text = render("train", nodes=2, gpus_per_node=4, store="/s", run_dir="/r",
                  train_args="--loss spotlight", partition="gpu")
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text and "#SBATCH --partition=gpu" in text
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in text
    assert ('run_step srun spotlight-scale train "/s" "/r" --resume auto --device cuda '
            '--loss spotlight || finish $?') in text
    cpu = render("train", store="/s", run_dir="/r")
    assert "--device cpu" in cpu and "--gpus" not in cpu and "--partition" not in cpu
    with pytest.raises(ValueError, match="must equal GPUs per node"):
        render("train", gpus_per_node=4, tasks_per_node=2, store="s", run_dir="r")
    with pytest.raises(ValueError, match="STORE"):
        render("train", run_dir="r")


def test_one_copy_of_the_templates_and_a_site_template(tmp_path):
    assert not list((ROOT / "deploy").rglob("*.tmpl"))  # only the package's copy exists
    for kind in ("train", "pipeline", "array", "step"):
        r = CliRunner().invoke(cli, ["deploy", "template", kind])
        assert r.exit_code == 0
        packaged = resources.files("spotlight_scale").joinpath(f"templates/{kind}.sbatch.tmpl")
        assert r.output == packaged.read_text() == template_text(kind)
    site = tmp_path / "site.tmpl"
    site.write_text(template_text("train").replace(
        "set -euo pipefail", "set -euo pipefail\ncd ${SCRATCH}"))
    r = _cli("--stage", "train", "--template", str(site), "--set", "STORE=s", "--set", "RUN_DIR=r",
             "--set", "SCRATCH=/scratch/me")
    assert r.exit_code == 0, r.output
    assert "cd /scratch/me" in r.output and "srun spotlight-scale train" in r.output
    r = _cli("--stage", "train", "--template", str(site), "--set", "STORE=s", "--set", "RUN_DIR=r")
    assert r.exit_code != 0 and "SCRATCH" in r.output
    r = _cli("--stage", "train", "--template", str(tmp_path / "nope.tmpl"), "--set", "STORE=s")
    assert r.exit_code != 0 and "nope.tmpl" in r.output


def test_unknown_and_derived_set_keys_are_refused():
    r = _cli("--stage", "train", "--set", "STORE=s", "--set", "RUN_DIR=r", "--set", "STOER=x")
    assert r.exit_code != 0 and "STOER" in r.output and "STORE" in r.output
    r = _cli("--stage", "train", "--set", "STORE=s", "--set", "RUN_DIR=r", "--set", "MANIFEST=m")
    assert r.exit_code != 0 and "MANIFEST" in r.output  # a key of other stages
    r = _cli("--stage", "train", "--set", "STORE=s", "--set", "RUN_DIR=r", "--set", "PREEMPT=")
    assert r.exit_code != 0 and "PREEMPT" in r.output  # filled by the renderer


def test_gpus_per_node_honoured_or_refused_for_every_stage(make_store, tmp_path):
    store = make_store()
    common = {"store": store.root, "run_dir": "r", "name": "n", "manifest": "m.csv",
              "profiles": "p"}
    for stage, kw in (("ingest", {"store": store.root, "manifest": "m.csv"}),
                      ("segment", {"store": store.root, "name": "n"}),
                      ("profile", {"store": store.root, "name": "n", "profiles": "p"}),
                      ("pipeline", dict(common, cluster_config="c.yaml"))):
        with pytest.raises(DeployError, match="--gpus-per-node would be ignored"):
            render(stage, gpus_per_node=1, **kw)
    pred = render("predict", gpus_per_node=2, store=store.root, run_dir="r", name="n")
    assert "#SBATCH --gpus=2" in pred and "--cluster cuda --device cuda" in pred
    cpu = render("predict", cpus_per_task=3, store=store.root, run_dir="r", name="n")
    assert "--gpus" not in cpu and "--workers 3" in cpu and "--device" not in cpu
    prof = tmp_path / "gpu.yaml"
    prof.write_text("gpus_per_job: 2\n")
    pipe = render("pipeline", cluster_config=prof, **common)
    assert 'predict "' in pipe and "--split all  --device cuda" in pipe
    assert "--device cuda" not in render("pipeline", cluster_config="cpu.yaml", **common)
    with pytest.raises(DeployError, match="train only"):
        render("predict", nodes=2, store=store.root, run_dir="r", name="n")


def test_array_size_from_the_store_or_the_manifest(make_store, tmp_path):
    store = make_store()  # 4 fields
    kw = dict(store=store.root, name="n", profiles="p")
    text = render("profile", **kw)
    assert "#SBATCH --array=0-3%32" in text
    assert 'profile "' + str(store.root) + '" --labels "seg-n"' in text
    assert '--shard "$SLURM_ARRAY_TASK_ID/4" --workers 4' in text
    text = render("segment", fields_per_task=3, throttle=1, store=store.root, name="n")
    assert "#SBATCH --array=0-1%1" in text and '--shard "$SLURM_ARRAY_TASK_ID/2"' in text
    man = tmp_path / "m.csv"
    man.write_text("path_signal,path_target\n" + "a.tif,b.tif\n" * 5 + "\n")
    text = render("ingest", manifest=man, store=tmp_path / "new")
    assert "#SBATCH --array=0-4%32" in text
    with pytest.raises(DeployError, match="MANIFEST"):
        render("predict", store=tmp_path / "new", run_dir="r", name="n")


def test_stage_all_writes_a_chain(tmp_path):
    man = tmp_path / "m.csv"  # before ingest, array sizes come from the manifest's 4 rows
    man.write_text("path_signal,path_target\n" + "a.tif,b.tif\n" * 4)
    r = _cli("--stage", "all", "--out", str(tmp_path / "jobs"), "--gpus-per-node", "2",
             "--cpus-per-task", "2", "--set", f"STORE={tmp_path / 'store'}", "--set", "RUN_DIR=r",
             "--set", "NAME=n", "--set", "PROFILES=p", "--set", "TRAIN_ARGS=--iterations 9",
             "--set", f"MANIFEST={man}", "--set", "FIELDS_PER_TASK=2")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "jobs").glob("*.sbatch"))
    assert names == ["01-ingest.sbatch", "02-ingest-finalize.sbatch", "03-train.sbatch",
                     "04-predict.sbatch", "05-predict-finalize.sbatch", "06-segment.sbatch",
                     "07-segment-finalize.sbatch", "08-profile.sbatch",
                     "09-profile-finalize.sbatch"]
    jobs = {n: (tmp_path / "jobs" / n).read_text() for n in names}
    assert "--gpus-per-node=2" in jobs["03-train.sbatch"] and "--iterations 9" in jobs[
        "03-train.sbatch"]
    assert "--gpus=2" in jobs["04-predict.sbatch"]
    assert all("#SBATCH --array=0-1%32" in jobs[n] for n in ("01-ingest.sbatch",
                                                            "04-predict.sbatch",
                                                            "06-segment.sbatch"))
    assert not any("--gpus" in jobs[n] for n in names if "train" not in n and "predict" not in n)
    assert "--shard \"" not in jobs["05-predict-finalize.sbatch"]
    submit = (tmp_path / "jobs" / "submit.sh").read_text()
    assert "--dependency=afterok:$prev" in submit and "--kill-on-invalid-dep=yes" in submit
    assert submit.index("01-ingest.sbatch") < submit.index("03-train.sbatch") < submit.index(
        "09-profile-finalize.sbatch")
    with pytest.raises(DeployError, match="no job takes CLUSTER_CONFIG"):
        render_all(tmp_path / "x", store=tmp_path, run_dir="r", name="n", profiles="p",
                   manifest=man, cluster_config="c.yaml")
    r = _cli("--stage", "all", "--set", "STORE=s")
    assert r.exit_code != 0 and "--out" in r.output


def test_slurm_profile_passes_slurmcluster_keywords_through(tmp_path):
    from spotlight_scale._cluster_backends import load_slurm_profile, slurm_cluster
    from spotlight_scale.cluster import WORKER_ENV

    with pytest.raises(ConfigError, match="'partition'.*'queue'"):
        load_slurm_profile({"partition": "gpu"}, "p.yaml")
    with pytest.raises(ConfigError, match="p.yaml"):
        load_slurm_profile({"jobs": -1}, "p.yaml")
    prof = load_slurm_profile({
        "queue": "gpu", "cores": 8, "memory": "32GB", "job_script_prologue": ["module load x"],
        "job_extra_directives": ["--qos=high", "--constraint=a100", "--exclusive"],
        "worker_extra_args": ["--lifetime", "55m"], "job_name": "spot"}, "p.yaml")
    with slurm_cluster(prof) as cluster:
        script = cluster.job_script()
    assert "-p gpu" in script and "module load x" in script and "--cpus-per-task=8" in script
    for d in ("--qos=high", "--constraint=a100", "--exclusive"):
        assert f"#SBATCH {d}" in script
    assert "--lifetime 55m" in script and "#SBATCH -J spot" in script
    assert "-t 01:00:00" in script  # our default walltime: neither profile nor site set one
    for k, v in WORKER_ENV.items():  # worker allocator settings, before the user's prologue
        assert script.index(f"export {k}={v}") < script.index("module load x")


def test_site_dask_config_wins_over_our_defaults():
    import dask

    from spotlight_scale._cluster_backends import SlurmProfile, slurm_cluster

    site = {"jobqueue.slurm.walltime": "07:00:00", "jobqueue.slurm.cores": 3,
            "jobqueue.slurm.memory": "5GB",
            "jobqueue.slurm.job-script-prologue": ["source /site/env"],
            "jobqueue.slurm.job-extra-directives": ["--qos=site"]}
    with dask.config.set(site), slurm_cluster(SlurmProfile()) as cluster:
        script = cluster.job_script()
    assert "-t 07:00:00" in script and "--cpus-per-task=3" in script and "--mem=5G" in script
    assert "source /site/env" in script and "#SBATCH --qos=site" in script
    with slurm_cluster(SlurmProfile()) as cluster:
        script = cluster.job_script()
    assert "-t 01:00:00" in script and "--cpus-per-task=4" in script


def test_gpu_profile_runs_one_dask_cuda_worker_per_gpu():
    from spotlight_scale._cluster_backends import load_slurm_profile, slurm_cluster

    prof = load_slurm_profile({"cores": 8, "memory": "32GB", "gpus_per_job": 2}, "p.yaml")
    with slurm_cluster(prof) as cluster:
        script = cluster.job_script()
        assert cluster._job_kwargs["processes"] == 2  # dask-jobqueue expects 2 workers a job
    assert "#SBATCH --gpus=2" in script
    assert "-m dask_cuda.cli" in script and "--nthreads 4" in script  # cores split per GPU
    gres = load_slurm_profile({"cores": 8, "memory": "32GB", "gpus_per_job": 2,
                               "job_extra_directives": ["--gres=gpu:a100:2"]}, "p.yaml")
    with slurm_cluster(gres) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:a100:2" in script and "--gpus=2" not in script


def test_shards_cover_every_field_and_the_unsharded_run_finalises(make_store, make_model_file,
                                                                  tmp_path):
    from spotlight_scale.pipelines import take_shard
    from spotlight_scale.pipelines.predict import predict

    assert take_shard(list("abcde"), (1, 2)) == ["b", "d"]
    assert take_shard(list("ab"), (2, 3)) == []
    with pytest.raises(ValueError, match="0 <= I < N"):
        take_shard([1], (3, 3))
    import zarr
    from distributed import LocalCluster

    store = make_store(shape=(8, 32, 32))
    model = make_model_file(store, tmp_path / "model.pt")
    plate = store.plate_path("P1", "p")
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc:  # one cluster for the four runs
        kw = dict(split="all", tile=(8, 32, 32), overlap=(0, 0, 0), cluster=lc.scheduler_address,
                  progress_stream=None)
        done = [predict(store.root, model, "p", shard=(i, 3), **kw)["done"] for i in range(3)]
        assert done == [2, 1, 1]
        ome = zarr.open_group(str(plate), mode="r").attrs.asdict().get("ome", {})
        assert "plate" not in ome  # the HCS plate metadata is left to the unsharded run
        res = predict(store.root, model, "p", **kw)
    assert res["done"] == 0 and res["skipped"] == 4
    wells = zarr.open_group(str(plate), mode="r").attrs.asdict()["ome"]["plate"]["wells"]
    assert sorted(w["path"] for w in wells) == ["B/03", "C/04"]


def test_local_workers_get_the_worker_environment():
    """Even after a plain LocalCluster in this process left distributed's own
    MALLOC_TRIM_THRESHOLD_ in os.environ; and the process environment is restored."""
    import os

    from distributed import LocalCluster

    from spotlight_scale.cluster import WORKER_ENV, open_client

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None):
        pass
    before = {k: os.environ.get(k) for k in WORKER_ENV}
    assert before["MALLOC_TRIM_THRESHOLD_"] != WORKER_ENV["MALLOC_TRIM_THRESHOLD_"]
    with open_client("local", workers=1) as client:
        env = list(client.run(lambda: {k: os.environ.get(k) for k in WORKER_ENV}).values())
    assert env == [WORKER_ENV]
    assert {k: os.environ.get(k) for k in WORKER_ENV} == before


@pytest.mark.parametrize("name", ["cluster-profile.example.yaml",
                                  "cluster-profile.gpu.example.yaml"])
def test_example_profiles_are_valid(name):
    from spotlight_scale._cluster_backends import load_slurm_profile, slurm_cluster_kwargs
    from spotlight_scale.config import load_yaml

    prof = load_slurm_profile(load_yaml(ROOT / "deploy" / name), name)
    kw = slurm_cluster_kwargs(prof)
    assert kw["job_extra_directives"] and kw["cores"] >= 1
    if prof.gpus_per_job:
        assert kw["worker_command"] == "dask_cuda.cli" and kw["processes"] == prof.gpus_per_job
        assert not any(d.startswith("--gpus") for d in kw["job_extra_directives"])  # --gres


def test_shard_locks_coexist_and_exclude_the_unsharded_writer(tmp_path):
    from spotlight_scale.io.lock import LockError, exclusive

    with exclusive(tmp_path, "predict p", shard=(0, 2)), \
            exclusive(tmp_path, "predict p", shard=(1, 2)):
        with pytest.raises(LockError, match="job-array task"):
            with exclusive(tmp_path, "predict p"):
                pass
        with pytest.raises(LockError):  # the same shard twice
            with exclusive(tmp_path, "predict p", shard=(1, 2)):
                pass
    with exclusive(tmp_path, "predict p"):
        with pytest.raises(LockError, match="an unsharded run"):
            with exclusive(tmp_path, "predict p", shard=(0, 2)):
                pass
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
