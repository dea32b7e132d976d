"""No network at run time: every non-loopback connection or name lookup fails the test.

The guard wraps socket.connect/connect_ex, socket.create_connection and getaddrinfo; attempts
are recorded (not only raised) because chromadb/posthog telemetry would call from a thread.
"""
import ipaddress
import socket

import pytest

from memory_fakes import fake_embedder  # noqa: F401 - fixture

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


def test_the_guard_catches_a_connection(no_network):
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("203.0.113.7", 443), timeout=0.1)
    with pytest.raises(OSError, match="blocked"):
        socket.getaddrinfo("example.com", 443)
    s = socket.socket()
    with pytest.raises(OSError, match="blocked"):
        s.connect(("198.51.100.1", 80))
    s.close()
    assert len(no_network) == 3
    no_network.clear()
    socket.getaddrinfo("localhost", 80)  # loopback stays allowed
    assert not no_network


def _telemetry_off(store) -> None:
    settings = store.vectors._client.get_settings()
    assert settings.anonymized_telemetry is False


def test_memory_add_search_and_chromadb_make_no_connection(no_network, reverie_home,
                                                           fake_embedder):  # noqa: F811
    from memory import MemoryStore

    store = MemoryStore(reverie_home)
    store.add_fact("My sister is called Ingrid.", {"command": "test"})
    assert store.search("sister")[0].text == "My sister is called Ingrid."
    _telemetry_off(store)
    store.close()
    assert no_network == []


@pytest.mark.slow
def test_real_chat_turn_with_memory_and_real_embedder_makes_no_connection(no_network, reverie_home):
    from assistant.chat import ChatSession

    s = ChatSession(reverie_home, backend="llama.cpp", use_memory=True, use_adapter=False,
                    max_tokens=12, threads=2)
    try:
        s.send("My sister is called Ingrid.")
        r = s.send("What is my sister's name?")
        assert r.recalled, "memory recall ran (real embedder, real chromadb)"
        hits = s.services.memory.search("sister")
        assert any("Ingrid" in h.text for h in hits)
        _telemetry_off(s.services.memory)
    finally:
        s.close()
    assert no_network == []
