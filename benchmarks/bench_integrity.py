"""What the integrity checks cost: verified reads and content fingerprints.

    python benchmarks/bench_integrity.py [--shape 64,512,512]

1. Reads that refuse missing chunks (``Store.read``, one ``stat`` per chunk it touches)
   against the same read straight from zarr, for a whole field and for 200 random
   training patches (the sampler's reads), run alternately, medians of 15 and 9.
2. The content fingerprint ingest computes (SHA-256 of the signal, target and mask
   TIFFs) against ingesting that field (read, statistics, patch index, pyramid, write;
   one process), and against a head/tail hash (size + first/last MiB), median of 5.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import timed  # noqa: E402


def paired(a, b, repeats: int):
    """Median wall times of ``a()`` and ``b()`` run alternately (a noisy machine drifts)."""
    import statistics
    import time

    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def head_tail(path: Path, n: int = 1 << 20) -> str:
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(n))
        fh.seek(max(0, path.stat().st_size - n))
        h.update(fh.read(n))
    return h.hexdigest()


def main(argv=None):
    import zarr

    from spotlight_scale.io.manifest import read_manifest
    from spotlight_scale.io.store import Store
    from spotlight_scale.pipelines.ingest import IngestSettings, file_digest, ingest_field
    from spotlight_scale.pipelines.synth import synth_screen

    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="64,512,512")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp())
    try:
        man = synth_screen(tmp / "raw", plate="I", wells=1, fields=1, shape=shape,
                           voxel_size=(0.29, 0.29, 0.29))
        rows, _ = read_manifest(man)
        row = rows[0]
        settings = IngestSettings(isotropic_um=None)
        Store(tmp / "store", create=True, settings=settings.as_dict())
        files = [row.path_signal, row.path_target, row.path_mask]
        mb = sum(p.stat().st_size for p in files) / 1e6

        def do_ingest():
            shutil.rmtree(tmp / "store" / "I.zarr", ignore_errors=True)
            shutil.rmtree(tmp / "store" / "_done", ignore_errors=True)
            return ingest_field(str(tmp / "store"), row, settings)

        t_ingest, _ = timed(do_ingest, 5)
        t_hash, _ = timed(lambda: [file_digest(p) for p in files], 5)
        t_ht, _ = timed(lambda: [head_tail(p) for p in files], 5)
        print(f"field {shape}: {mb:.1f} MB of TIFFs")
        print(f"ingest of the field: {t_ingest:.3f} s; full SHA-256 of its files: {t_hash:.3f} s "
              f"({t_hash / t_ingest * 100:.1f} % of ingest, {mb / t_hash:.0f} MB/s); head/tail: "
              f"{t_ht * 1e3:.2f} ms")

        store = Store(tmp / "store")
        key = store.fields()[0]
        raw = zarr.open_array(str(store.field_url(key) / "s0"), mode="r")
        verified = store.image(key)  # opened once, like raw: the difference is the check
        assert np.array_equal(verified[1], np.asarray(raw[1]))
        t_ver, t_raw = paired(lambda: verified[1], lambda: np.asarray(raw[1]), 15)
        t_raw_b, t_ver_b = paired(lambda: np.asarray(raw[1]), lambda: verified[1], 15)
        t_ver, t_raw = (t_ver + t_ver_b) / 2, (t_raw + t_raw_b) / 2  # both orders
        c1, c2 = paired(lambda: np.asarray(raw[1]), lambda: np.asarray(raw[1]), 15)
        n_chunks = int(np.prod([-(-n // c) for n, c in zip(raw.shape[1:], raw.chunks[1:])]))
        print(f"whole-field read ({raw.shape[1:]} target, {n_chunks} chunks of "
              f"{raw.chunks[1:]}): verified {t_ver * 1e3:.1f} ms vs zarr {t_raw * 1e3:.1f} ms "
              f"= {t_ver / t_raw:.3f}x (zarr vs itself, same protocol: {c1 / c2:.3f}x)")
        rng = np.random.default_rng(0)
        patch = (16, 32, 32)
        origins = [tuple(int(rng.integers(0, n - p + 1)) for n, p in zip(shape, patch))
                   for _ in range(200)]
        regions = [tuple(slice(o, o + p) for o, p in zip(org, patch)) for org in origins]
        t_pv, t_pr = paired(lambda: [verified[(1, *r)] for r in regions],
                            lambda: [np.asarray(raw[(1, *r)]) for r in regions], 9)
        print(f"200 patches {patch}: verified {t_pv * 1e3:.0f} ms vs zarr {t_pr * 1e3:.0f} ms "
              f"= {t_pv / t_pr:.3f}x")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
