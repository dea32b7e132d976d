"""Shared fixtures: every test gets its own data dir; real-model fixtures are loaded once."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see quant/__init__.py
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def reverie_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("REVERIE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def default_model(tmp_path_factory):
    from quant.registry import Registry

    return Registry(tmp_path_factory.mktemp("reg")).get()


@pytest.fixture(scope="session")
def llama_runtime(default_model):
    from quant.runtime import load_runtime

    rt = load_runtime(default_model, "llama.cpp", n_ctx=1024, threads=2)
    yield rt
    rt.close()
