"""pipelines layer: see spotlight_scale/__init__.py for the layering."""

from __future__ import annotations

from typing import Sequence, TypeVar

T = TypeVar("T")


def take_shard(items: Sequence[T], shard: tuple[int, int] | None) -> list[T]:
    """Share ``i`` of ``n`` of ``items`` (``shard=(i, n)``): items ``i, i + n, i + 2n, ...``.

    A SLURM job array runs a per-field stage with ``--shard $SLURM_ARRAY_TASK_ID/N``;
    round robin spreads each plate's fields over the tasks. ``None``: all items.
    A sharded run does the work of its fields but leaves store-level tables and
    plate metadata to one unsharded run afterwards (every field then skipped).
    """
    if shard is None:
        return list(items)
    i, n = shard
    if not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: expected 0 <= I < N")
    return list(items[i::n])
