"""memory.embedder's query cache, with the model replaced by a counter."""
import pytest

import memory.embedder as emb


@pytest.fixture
def counted(monkeypatch):
    calls = []

    def vectors(texts, batch_size=64):
        calls.append(list(texts))
        return [[float(len(t)), 1.0] for t in texts]

    monkeypatch.setattr(emb, "_one_thread", vectors)
    monkeypatch.setattr(emb, "_encode", vectors)
    emb.clear_cache()
    yield calls
    emb.clear_cache()


def test_small_calls_are_cached_by_text(counted):
    assert emb.embed_query("abc") == [3.0, 1.0]
    assert emb.embed(["abc", "de", "abc"]) == [[3.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert counted == [["abc"], ["de"]]  # only the miss is embedded, once
    assert emb.embed([]) == []


def test_bulk_calls_bypass_the_cache_and_the_cache_is_bounded(counted, monkeypatch):
    many = [f"t{i}" for i in range(emb.CACHED_CALL_MAX + 1)]
    emb.embed(many)
    emb.embed(many)
    assert len(counted) == 2
    monkeypatch.setattr(emb, "CACHE_SIZE", 3)
    for t in ["a", "b", "c", "d"]:
        emb.embed_query(t)
    assert list(emb._cache) == ["b", "c", "d"]
    emb.embed_query("a")
    assert counted[-1] == ["a"]  # evicted, so embedded again
