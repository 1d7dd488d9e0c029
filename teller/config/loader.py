"""Builds the Config from default.toml, an optional file, then TELLER_* variables.

Later sources win. Unknown keys and values of the wrong type are errors at start-up,
not surprises at run time.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .settings import Config

ENV_PREFIX = "TELLER_"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def default_toml() -> dict[str, Any]:
    text = resources.files("teller.config").joinpath("default.toml").read_text("utf-8")
    return tomllib.loads(text)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Merge default.toml, the file at `path`, `overrides` (nested dict) and env."""
    data = default_toml()
    if path:
        try:
            with open(path, "rb") as f:
                _merge(data, tomllib.load(f))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if overrides:
        _merge(data, dict(overrides))
    env = os.environ if env is None else env
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            _apply_env(data, key[len(ENV_PREFIX):].lower().split("__"), raw, key)
    return _build(Config, data, "")


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> None:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _apply_env(data: dict[str, Any], parts: list[str], raw: str, name: str) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{name}: {part} is not a section")
        node = child
    node[parts[-1]] = _EnvValue(raw)


class _EnvValue(str):
    """A raw environment string, converted once the target field's type is known."""


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in [{where or 'root'}]")
    kwargs = {}
    for name in names:
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{where}.{name}".lstrip("."))
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp) or (dict if tp is dict else None)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if isinstance(value, _EnvValue):
        value = _parse_env(tp, str(value), where)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        return [_convert(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a table")
        return {k: _convert(dict, v, f"{where}.{k}") if isinstance(v, (_EnvValue, Mapping)) else v for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    return value


def _parse_env(tp: Any, raw: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if tp is int:
            return int(raw)
        if tp is float:
            return float(raw)
        if origin is list or origin is dict or tp is dict or dataclasses.is_dataclass(tp):
            stripped = raw.strip()
            if stripped.startswith(("[", "{")):
                return json.loads(stripped)
            if origin is list:
                return [p.strip() for p in raw.split(",") if p.strip()]
            raise ValueError(raw)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: cannot use {raw!r} from the environment") from exc
    return raw


def data_dir(config: Config) -> Path:
    path = Path(config.storage.data_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
