"""Shared fixtures: every test gets its own data dir; real-model fixtures are loaded once."""
from __future__ import annotations

import ipaddress
import os
import socket

import pytest

from common.threads import passive_openmp

passive_openmp()
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The nightly gate asks 306 general questions (~3 min for the base once per data dir, then the
# adapter on those the base knew). Sleeps in tests ask none; the France regression test
# (test_sleep_real.py) asks 40 on purpose. Subprocesses inherit this.
os.environ.setdefault("REVERIE_GATE_FACTUAL", "0")


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


@pytest.fixture(scope="session")
def f32_default_model(tmp_path_factory, default_model):
    """The default model with every tensor dequantized to F32 (quant.gguf_io, 540 MB): the exact
    weights the torch twin holds. Written once (~15 s) for every test that only reads it."""
    from quant import gguf_io

    return gguf_io.write_unquantized(gguf_io.open_gguf(default_model.path),
                                     tmp_path_factory.mktemp("f32") / "smollm2-f32.gguf", "F32")


@pytest.fixture(scope="session")
def torch_twin(default_model):
    """(model, tokenizer): the default GGUF's float32 transformers twin, what sleep trains on
    (quant.gguf_torch.load_twin), loaded once. Read only: lora.peft_trainer.wrap deep-copies it."""
    from pathlib import Path

    from quant.gguf_torch import load_twin

    return load_twin(Path(default_model.path))


# --- no network: every non-loopback connection or name lookup is blocked and recorded ---------
LOCAL_NAMES = {"localhost", "ip6-localhost", ""}


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]")
    if host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def no_network(monkeypatch):
    attempts: list[str] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_gai = socket.create_connection, socket.getaddrinfo

    def check(what, sock, address):
        if sock is not None and sock.family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) else address
        if not _is_local(host):
            attempts.append(f"{what} {address!r}")
            raise OSError(f"network access blocked in tests: {what} {address!r}")

    def connect(self, address):
        check("connect", self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check("connect_ex", self, address)
        return real_connect_ex(self, address)

    def create_connection(address, *a, **kw):
        check("create_connection", None, address)
        return real_create(address, *a, **kw)

    def getaddrinfo(host, *a, **kw):
        check("getaddrinfo", None, (host,))
        return real_gai(host, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts
