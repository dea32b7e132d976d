"""No network at run time: every non-loopback connection or name lookup fails the test.

The guard is the `no_network` fixture in conftest.py (the end-to-end sleep test in
test_sleep_real.py runs under it too). It wraps socket.connect/connect_ex,
socket.create_connection and getaddrinfo; attempts are recorded (not only raised) because
chromadb/posthog telemetry would call from a thread.
"""
import socket

import pytest

from memory_fakes import fake_embedder  # noqa: F401 - fixture


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
    settings = store.vectors.settings()
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
