"""Shared fixtures.

``make_store`` builds a small store through the real store writer
(:func:`spotlight_scale.io.fields.write_field`) from simple blob volumes, with
statistics and the patch index computed by plain numpy / scikit-image: an
independent reference for code that reads stores. End-to-end tests use the
real ``synth`` -> ``ingest`` path instead.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

# keep BLAS/torch from oversubscribing the 2-core CI machine
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def blob_field(shape, n_blobs, rng, radius=(3, 6, 6)):
    """A toy field: ellipsoidal nuclei (labels), a Hoechst-like target and a signal
    (shape (1, Y, X): a 2D field of discs)."""
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint32)
    planar = shape[0] == 1  # a 2D field: discs in its one plane
    for i in range(n_blobs):
        c = [rng.integers(r, max(r + 1, s - r)) for s, r in zip(shape, radius)]
        d = sum(((g - ci) / r) ** 2 for g, ci, r in zip((z, y, x), c, radius)
                if not (planar and g is z))
        labels[(d <= 1) & (labels == 0)] = i + 1
    fg = labels > 0
    target = (100 + 800 * fg + rng.normal(0, 20, shape)).clip(0, 65535).astype(np.uint16)
    signal = (1000 + 150 * fg * np.cos(z / 3.0) + rng.normal(0, 30, shape)).clip(0).astype(np.uint16)
    return signal, target, labels


def reference_stats(x: np.ndarray) -> dict:
    from skimage.filters import threshold_otsu

    t = float(threshold_otsu(x))
    flat = np.sort(x.ravel())
    n = flat.size
    # inverted-CDF percentiles: the smallest value with at least q of the mass at or below it
    pct = lambda q: float(flat[max(0, int(np.ceil(q * n)) - 1)])
    return {"otsu": t, "mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()),
            "max": float(x.max()), "p0_1": pct(0.001), "p99_9": pct(0.999),
            "fg_fraction": float((x >= t).mean())}


def reference_patch_index(fg: np.ndarray, patch, stride, min_fraction):
    """Brute force: every origin on the stride grid (plus the last valid origin per axis)."""
    axes = []
    for n, p, s in zip(fg.shape, patch, stride):
        last = n - p
        o = list(range(0, last + 1, s))
        if o[-1] != last:
            o.append(last)
        axes.append(o)
    origins, fracs = [], []
    for a in axes[0]:
        for b in axes[1]:
            for c in axes[2]:
                f = fg[a:a + patch[0], b:b + patch[1], c:c + patch[2]].mean()
                if f >= min_fraction:
                    origins.append((a, b, c))
                    fracs.append(f)
    return np.array(origins, np.int32).reshape(-1, 3), np.array(fracs, np.float32)


@pytest.fixture
def make_store(tmp_path):
    """``make_store(fields=[("P1","B03",0,"train"), ...], shape=(16,48,48), ...)`` -> Store."""
    from spotlight_scale.io.fields import finalize_store, write_field
    from spotlight_scale.io.store import FieldKey, Store

    def make(fields=(("P1", "B03", 0, "train"), ("P1", "B03", 1, "train"),
                     ("P1", "C04", 0, "val"), ("P1", "C04", 1, "test")),
             shape=(16, 48, 48), n_blobs=6, patch=(8, 16, 16), stride=(4, 8, 8),
             min_fraction=0.001, voxel_size=(0.29, 0.29, 0.29), chunks=(8, 32, 32),
             ngff="0.5", seed=0, root=None):
        rng = np.random.default_rng(seed)
        store = Store(root or tmp_path / "store", create=True, ngff=ngff,
                      settings={"patch": list(patch), "patch_stride": list(stride),
                                "min_fraction": min_fraction})
        for plate, well, field, split in fields:
            signal, target, labels = blob_field(shape, n_blobs, rng)
            stats = {"signal": reference_stats(signal), "target": reference_stats(target)}
            fg = target >= stats["target"]["otsu"]
            index = reference_patch_index(fg, patch, stride, min_fraction)
            write_field(store, FieldKey(plate, well, field), signal=signal, target=target,
                        mask=labels, voxel_size=voxel_size, chunks=chunks, split=split,
                        stats=stats, source={"synthetic": True}, patch_index=index,
                        patch_settings={"patch_shape": patch, "stride": stride,
                                        "min_fraction": min_fraction})
        finalize_store(store)
        return store

    return make


@pytest.fixture(scope="module")
def cluster():
    """The address of one LocalCluster (1 worker) shared by a module's stage runs, so that
    each run does not start its own workers."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as lc:
        yield lc.scheduler_address


@pytest.fixture
def make_model_file():
    """``make_model_file(store, path, seed=0)``: an untrained depth-2 F-net (4 channels) saved
    as a model file at ``path``, with the target range of ``store``'s training fields."""
    import torch

    from spotlight_scale.core.normalize import target_range
    from spotlight_scale.models.fnet import FNet
    from spotlight_scale.models.io import save_model_file

    def make(store, path, seed=0):
        torch.manual_seed(seed)
        rng = target_range([store.stats(k, "target") for k in store.fields("train")],
                           "spotlight")
        return save_model_file(path, FNet(depth=2, channels=4), normalization="spotlight",
                               target_range=rng, train_config={}, iteration=0, loss="spotlight")

    return make


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests need a CUDA device for torch; elsewhere they are skipped, not failed."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
        for item in gpu_items:
            item.add_marker(skip)


def assert_same_run(run_a, run_b, iterations: int) -> None:
    """Two training runs (run directories) logged the same losses for iterations 1..N and end
    with bit-identical weights."""
    import torch

    from spotlight_scale.models.io import load_model_file
    from spotlight_scale.train.trainer import read_loss_log

    a, b = read_loss_log(run_a), read_loss_log(run_b)
    assert [r["iteration"] for r in b] == list(range(1, iterations + 1))
    assert [r["train_loss"] for r in a] == [r["train_loss"] for r in b]
    ma, _ = load_model_file(run_a / "model.pt")
    mb, _ = load_model_file(run_b / "model.pt")
    for (k, va), vb in zip(ma.state_dict().items(), mb.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
