"""Option decorators shared by several commands (one definition each)."""

from __future__ import annotations

from pathlib import Path

import click


def parse_triple(ctx, param, value):
    """Click callback: ``"32,64,64"`` -> ``(32, 64, 64)`` (ints) or floats when needed."""
    if value is None:
        return None
    parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    if len(parts) != 3:
        raise click.BadParameter(f"expected three comma-separated values Z,Y,X, got {value!r}")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"expected numbers Z,Y,X, got {value!r}") from None
    if all(n.is_integer() for n in nums) and not any("." in p for p in parts):
        return tuple(int(n) for n in nums)
    return tuple(nums)


def parse_shape(ctx, param, value):
    """Click callback: ``"32,64,64"`` (Z,Y,X) or ``"64,64"`` (Y,X, a single plane) -> ints."""
    if value is None:
        return None
    parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    if len(parts) not in (2, 3):
        raise click.BadParameter(f"expected Z,Y,X or (2D fields) Y,X, got {value!r}")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"expected whole numbers Z,Y,X or Y,X, got {value!r}") from None


def parse_key_values(ctx, param, value):
    """Click callback of a repeatable ``NAME=VALUE`` option -> ``[(name, value), ...]``
    (names stripped, values as given)."""
    pairs = []
    for item in value or ():
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}")
        pairs.append((key.strip(), val))
    return pairs


def store_argument(f):
    return click.argument("store", type=click.Path(path_type=Path, file_okay=False))(f)


def cluster_options(f):
    """``--cluster``, ``--cluster-config`` and ``--workers``: the one way stages get Dask."""
    f = click.option("--workers", type=int, default=None,
                     help="Worker processes (local/cuda) or jobs (slurm). Default: one per core.")(f)
    f = click.option("--cluster-config", type=click.Path(path_type=Path, dir_okay=False,
                                                        exists=True), default=None,
                     help="Cluster profile YAML (see deploy/cluster-profile.example.yaml).")(f)
    f = click.option("--cluster", default="local", show_default=True,
                     help="local, slurm, cuda, or a scheduler address tcp://host:port.")(f)
    return f


def parse_shard(ctx, param, value):
    """Click callback: ``"3/8"`` -> ``(3, 8)``."""
    if value is None:
        return None
    i, sep, n = str(value).partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = None
    if not sep or shard is None or not 0 <= shard[0] < shard[1]:
        raise click.BadParameter(f"expected I/N with 0 <= I < N, got {value!r}")
    return shard


def shard_option(f):
    """``--shard I/N``: the fields a SLURM array task does (see ``deploy slurm``)."""
    return click.option(
        "--shard", callback=parse_shard, default=None, metavar="I/N",
        help="Only fields I, I+N, I+2N, ... (a job-array task: I=$SLURM_ARRAY_TASK_ID); "
             "store-level tables are left to one run without --shard afterwards.")(f)


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Redo work already marked done (otherwise it is skipped).")(f)


def on_error_option(f):
    """``--on-error fail|skip``: stop at the first failing field, or go on and list failures."""
    return click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
                        show_default=True,
                        help="skip: go on past failing fields and list them in a failures "
                             "table (the command says where).")(f)
