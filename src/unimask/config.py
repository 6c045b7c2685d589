"""Typed configuration: dataclasses loaded from YAML/TOML with dotted CLI overrides.

Every component declares its settings as a (possibly nested) dataclass. This module turns
a mapping (from a file, a preset, or ``--a.b value`` overrides) into such a dataclass,
and rejects an unknown or mistyped key with an error that lists the valid keys.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unimask.io import atomic_write_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message says how to fix it."""


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (pass an existing .yaml, .toml or .json file)")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"unsupported config format {suffix!r} for {path}: use .yaml, .toml or .json")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot parse {path}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must contain a mapping at the top level, got {type(data).__name__}")
    return data


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` to type ``tp`` (dataclass, Optional, list, tuple, dict, scalar)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (list, Sequence, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        args = typing.get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float, str):
        if isinstance(value, bool) and tp is not str:
            raise ConfigError(f"{where}: expected {tp.__name__}, got a boolean {value!r}")
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if tp is int and isinstance(value, str):
                return int(float(value)) if "e" in value.lower() else int(value)
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise a ConfigError listing valid ones."""
    types_ = _field_types(cls)
    unknown = [k for k in data if k not in types_]
    if unknown:
        valid = ", ".join(sorted(types_))
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' for {cls.__name__}; valid keys: {valid}")
    kwargs = {k: _coerce(v, types_[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON/YAML-serialisable dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def parse_overrides(args: Sequence[str]) -> dict[str, str]:
    """Parse ``--a.b value`` / ``--a.b=value`` pairs into ``{"a.b": "value"}``."""
    out: dict[str, str] = {}
    i = 0
    args = list(args)
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        else:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"override --{key} has no value (write --{key} VALUE or --{key}=VALUE)")
            value = args[i + 1]
            i += 1
        out[key.replace("-", "_")] = value
        i += 1
    return out


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``model.n_layers``) in a nested dict; values stay strings until coerced."""
    data = json.loads(json.dumps(data, default=str)) if data else {}
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """``base`` (e.g. a preset) <- file at ``path`` <- dotted ``overrides``, validated into ``cls``."""
    data: dict[str, Any] = _deep_merge({}, dict(base or {}))
    if path is not None:
        data = _deep_merge(data, read_mapping(path))
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        for dotted in overrides:
            _seed_mapping_default(cls, data, dotted.split("."))
        data = apply_overrides(data, overrides)
    return from_dict(cls, data)


def _seed_mapping_default(cls: Any, data: dict[str, Any], path: list[str]) -> None:
    """Before ``--a.key value`` sets one key of a mapping field ``a`` that ``data`` lacks, copy in
    ``a``'s default, so the override changes that key instead of replacing the whole mapping."""
    if not dataclasses.is_dataclass(cls) or len(path) < 2:
        return
    field = next((f for f in dataclasses.fields(cls) if f.name == path[0]), None)
    if field is None:
        return
    tp = _field_types(cls)[field.name]
    if dataclasses.is_dataclass(tp):
        node = data.setdefault(field.name, {})
        if isinstance(node, dict):  # anything else is reported by the type check later
            _seed_mapping_default(tp, node, path[1:])
    elif typing.get_origin(tp) in (dict, Mapping) and field.name not in data:
        if field.default_factory is not dataclasses.MISSING:
            data[field.name] = copy.deepcopy(field.default_factory())


def _deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
