"""Templates render with checked invariants; cluster profiles reject unknown keys."""

import pytest
from click.testing import CliRunner

from spotlight_scale.cli import cli
from spotlight_scale.config import ConfigError, config_from_mapping
from spotlight_scale.deploy import render


def test_train_template_invariants():
    text = render("train", nodes=2, gpus_per_node=4, store="/s", run_dir="/r",
                  train_args="--device cuda", partition="gpu")
    assert "#SBATCH --nodes=2" in text and "#SBATCH --ntasks-per-node=4" in text
    assert "#SBATCH --gpus-per-node=4" in text and "#SBATCH --partition=gpu" in text
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in text
    assert "srun spotlight-scale train \"/s\" \"/r\" --device cuda" in text
    with pytest.raises(ValueError, match="must equal GPUs per node"):
        render("train", gpus_per_node=4, tasks_per_node=2, store="s", run_dir="r")
    with pytest.raises(ValueError, match="STORE"):
        render("train", run_dir="r")


def test_cli_renders_pipeline_and_array():
    r = CliRunner().invoke(cli, ["deploy", "slurm", "--stage", "pipeline", "--set", "MANIFEST=m",
                                 "--set", "STORE=s", "--set", "RUN_DIR=r", "--set", "NAME=n",
                                 "--set", "PROFILES=p", "--set", "CLUSTER_CONFIG=c.yaml",
                                 "--prologue", "module load cuda"])
    assert r.exit_code == 0, r.output
    assert "module load cuda" in r.output and "--cluster slurm --cluster-config c.yaml" in r.output
    assert "--partition" not in r.output  # no site default baked in
    r = CliRunner().invoke(cli, ["deploy", "slurm", "--stage", "array", "--set", "NAME=n"])
    assert r.exit_code != 0 and "MANIFEST_LIST" in r.output


def test_slurm_profile_unknown_key_and_job_script(tmp_path):
    from spotlight_scale._cluster_backends import SlurmProfile, slurm_cluster
    from spotlight_scale.cluster import WORKER_ENV

    with pytest.raises(ConfigError, match="partition"):
        config_from_mapping(SlurmProfile, {"partition": "gpu"}, "p.yaml")
    prof = config_from_mapping(SlurmProfile, {"queue": "gpu", "cores": 8, "memory": "32GB",
                                              "gpus_per_job": 1,
                                              "job_script_prologue": ["module load x"]}, "p.yaml")
    with slurm_cluster(prof) as cluster:
        script = cluster.job_script()
    assert "-p gpu" in script and "module load x" in script and "--cpus-per-task=8" in script
    assert "--gpus=1" in script
    for k, v in WORKER_ENV.items():  # worker allocator settings, before the user's prologue
        assert script.index(f"export {k}={v}") < script.index("module load x")


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
