"""Dotted keys (`optim.lr`) into the config object or its dict form."""
from __future__ import annotations

from raycf.errors import ConfigError


def get_dotted(obj, key: str):
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError([f"{key}: {part} is not a section"])
    data[parts[-1]] = value
