"""Typed configuration: dataclasses with the paper's defaults, loaded from YAML.

One meaning per key. Unknown keys are an error that names the key and the file;
CLI flags override file values; the resolved config is saved beside the output.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     lr: float = 1e-3
>>> resolve_config(C, None, {"lr": 0.01}).lr
0.01
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the key."""


def _coerce(value: Any, annotation: Any, key: str, source: str) -> Any:
    """Convert YAML/CLI values to the annotated type (tuples from lists or 'a,b,c')."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return None
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], key, source) if non_none else value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: key '{key}' expects a list, got {value!r}")
        inner = args[0] if args else Any
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, inner, key, source) for v in value)
        if args and len(args) != len(value):
            raise ConfigError(
                f"{source}: key '{key}' expects {len(args)} values, got {len(value)}: {value!r}"
            )
        return tuple(_coerce(v, a, key, source) for v, a in zip(value, args or [Any] * len(value)))
    if annotation in (int, float, str, bool):
        if annotation is bool and isinstance(value, str):
            low = value.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ConfigError(f"{source}: key '{key}' expects true/false, got {value!r}")
        try:
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{source}: key '{key}' expects {annotation.__name__}, got {value!r}"
            ) from None
    return value


def config_from_mapping(cls: type[T], data: Mapping[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise :class:`ConfigError`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown config key(s) {', '.join(repr(k) for k in unknown)}; "
            f"known keys: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(v, hints[k], k, source) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at top level")
    return data


def resolve_config(
    cls: type[T], path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> T:
    """Defaults <- YAML file at ``path`` <- ``overrides`` (``None`` values are ignored)."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        data.update(load_yaml(path))
        source = str(path)
        config_from_mapping(cls, data, source)  # name unknown keys against the file
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    return config_from_mapping(cls, data, source)


def config_to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain dict with tuples as lists (YAML/JSON friendly)."""

    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(obj).items()}


def save_config(obj: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from .io.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config_to_dict(obj), sort_keys=False))
