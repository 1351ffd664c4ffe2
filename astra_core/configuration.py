"""Config dataclasses from YAML/dicts, validated at load: unknown keys fail with the valid ones.

Used by the model config (``AstraConfig``) and the training config alike. Overrides use dotted
``key=value`` strings (``model.n_layer=4``), values parsed as YAML scalars.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and the problem."""


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclass fields."""
    where_ = where or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where_}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {[prefix + k for k in unknown]}; valid keys: {', '.join(prefix + f for f in fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = _unwrap_optional(hints[name])
        key = f"{where}.{name}" if where else name
        if _is_dataclass_type(tp) and (isinstance(value, dict) or value is None):
            kwargs[name] = from_dict(tp, value, key)
        else:
            kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where_}: {err}") from err


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check a YAML value against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{name}={value!r}: must be one of {list(typing.get_args(hint))}")
        return value
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list or hint is list:
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return list(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r}: expected a number") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r}: expected a number")
        if not math.isfinite(value):
            raise ConfigError(f"{name}={value!r}: must be finite")
        return float(value)
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # preset names like 38m or paths may come out of YAML as numbers
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r}: expected a string")
        return value
    return value  # unions (Optional) and other types: validated by the dataclass itself


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict suitable for YAML (nested dataclasses included)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return data


def set_dotted(data: dict, key: str, value: Any, where: str = "") -> None:
    """Set ``a.b.c`` in a nested dict, creating sections on the way."""
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{where or key!r}: empty key component")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where or key!r}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def merge_dotted(base: dict, overrides: dict) -> dict:
    """``base`` updated leaf by leaf from ``overrides`` (nested dicts and/or dotted keys)."""
    out = copy.deepcopy(base)

    def visit(prefix: str, node: dict) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                visit(f"{path}.", value)
            else:
                set_dotted(out, path, value)

    visit("", overrides)
    return out


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        set_dotted(data, key, value, where=f"override {item}")
    return data
