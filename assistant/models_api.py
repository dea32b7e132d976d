"""The model registry as the CLI sees it."""
from __future__ import annotations

from pathlib import Path


def _reg(home: Path):
    from quant.registry import Registry

    return Registry(home)


def list_models(home: Path):
    r = _reg(home)
    return r.list(), r.default_name()


def model_info(home: Path, name: str | None) -> dict:
    r = _reg(home)
    m = r.get(name)
    d = m.to_dict()
    d["default"] = m.name == r.default_name()
    return d


def add_model(home: Path, name: str, path: Path, description: str = ""):
    return _reg(home).add(name, path, description)


def set_default(home: Path, name: str):
    return _reg(home).set_default(name)


def remove_model(home: Path, name: str) -> None:
    _reg(home).remove(name)
