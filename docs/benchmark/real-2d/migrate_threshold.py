"""One-off: complete the target_range of snapshots written before model files recorded the
normalised foreground threshold (norm_threshold), from the same training fields by the same
function (spotlight_scale.core.normalize.target_range); every other key must be unchanged."""
import io, sys
from pathlib import Path

import torch

from spotlight_scale.core.normalize import target_range
from spotlight_scale.io.atomic import atomic_write_bytes
from spotlight_scale.io.store import Store
from spotlight_scale.train.trainer import _split_fields

store = Store("store")
train_keys, _ = _split_fields(store)
for path in sorted(Path("work/runs").glob("*/seed-*/model-*.pt")):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    rng = payload["target_range"]
    if "norm_threshold" in rng:
        continue
    new = target_range([store.stats(k, "target") for k in train_keys], payload["normalization"])
    assert all(abs(new[k] - rng[k]) < 1e-9 for k in rng), (path, rng, new)
    payload["target_range"] = new
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    print(path, "norm_threshold", new["norm_threshold"])
