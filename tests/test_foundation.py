"""Foundation: well names, field keys, typed configs, store manifest versioning."""

from dataclasses import dataclass

import pytest

from spotlight_scale.config import ConfigError, resolve_config
from spotlight_scale.io.store import FieldKey, Store, StoreError, canonical_well, parse_well
from spotlight_scale.versioning import VersionError


@pytest.mark.parametrize("well,expected", [("B3", ("B", "03")), ("b03", ("B", "03")),
                                           ("AA12", ("AA", "12")), ("P024", ("P", "24"))])
def test_parse_well(well, expected):
    assert parse_well(well) == expected


@pytest.mark.parametrize("bad", ["3B", "B", "B0", "B-3", "", "B1234"])
def test_parse_well_rejects(bad):
    with pytest.raises(ValueError, match="bad well name"):
        parse_well(bad)


def test_field_key_canonical_and_path():
    key = FieldKey("P1", "c7", "2")
    assert key.well == "C07" and key.field == 2
    assert key.path == "C/07/2" and key.id == "P1/C07/2"
    assert FieldKey.from_id("P1/C7/2") == key
    assert canonical_well("C7") == "C07"


@dataclass
class _Cfg:
    lr: float = 1e-3
    patch: tuple[int, int, int] = (32, 64, 64)
    name: str = "x"


def test_config_yaml_override_and_unknown_key(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.5\npatch: [8, 16, 16]\n")
    cfg = resolve_config(_Cfg, f, {"name": "y", "lr": None})
    assert cfg == _Cfg(lr=0.5, patch=(8, 16, 16), name="y")
    assert resolve_config(_Cfg, None, {"patch": "4,8,8"}).patch == (4, 8, 8)
    f.write_text("lr: 0.5\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match="learning_rate") as err:
        resolve_config(_Cfg, f)
    assert str(f) in str(err.value)
    f.write_text("patch: [1, 2]\n")
    with pytest.raises(ConfigError, match="patch"):
        resolve_config(_Cfg, f)


def test_store_manifest_version(tmp_path):
    with pytest.raises(StoreError, match="ingest"):
        Store(tmp_path / "nope")
    s = Store(tmp_path / "s", create=True, ngff="0.4")
    assert Store(tmp_path / "s").ngff == "0.4" and s.zarr_format == 2
    (tmp_path / "s" / "spotlight.json").write_text('{"layout_version": 99, "ngff": "0.5"}')
    with pytest.raises(VersionError, match="99"):
        Store(tmp_path / "s")
