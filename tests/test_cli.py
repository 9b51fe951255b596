"""Every command has --help with examples; --version works."""

import pytest
from click.testing import CliRunner

from spotlight_scale import __version__
from spotlight_scale.cli import COMMANDS, cli


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output


@pytest.mark.parametrize("command", sorted(c for c in COMMANDS if c != "deploy"))
def test_help_has_examples(command):
    r = CliRunner().invoke(cli, [command, "--help"])
    assert r.exit_code == 0, r.output
    assert "example" in r.output.lower() and f"spotlight-scale {command}" in r.output


def test_cuda_cluster_on_cpu_machine_is_a_clear_error():
    from spotlight_scale import backend
    from spotlight_scale.cluster import open_client

    if backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="cuda"):
        with open_client("cuda"):
            pass
