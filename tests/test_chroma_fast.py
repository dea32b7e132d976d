"""memory/chroma_fast.py against chromadb's own Python client, on the same real collection."""
import os

import numpy as np
import pytest

from memory import chroma_fast

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
chromadb = pytest.importorskip("chromadb")


def _client_collection(path):
    from chromadb.config import Settings
    client = chromadb.PersistentClient(path=str(path), settings=Settings(
        anonymized_telemetry=False, allow_reset=True))
    col = client.get_or_create_collection("memories", embedding_function=None,
                                          configuration={"hnsw": {"space": "cosine"}})
    return client, col


def _vecs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def test_same_query_same_ids_and_distances_both_ways(tmp_path):
    client, col = _client_collection(tmp_path)
    v = _vecs(40)
    col.upsert(ids=[f"m{i}" for i in range(40)], embeddings=v,
               metadatas=[{"memory": f"m{i % 7}"} for i in range(40)])
    q = _vecs(1, seed=1)
    want = col.query(query_embeddings=q, n_results=10, include=["distances"])
    want_w = col.query(query_embeddings=q, n_results=5, where={"memory": {"$in": ["m1", "m2"]}},
                       include=["distances"])
    client.close()

    fast = chroma_fast.open_fast(str(tmp_path), "memories")
    assert isinstance(fast, chroma_fast.FastCollection)
    got = fast.query(query_embeddings=q, n_results=10, include=["distances"])
    got_w = fast.query(query_embeddings=q, n_results=5, where={"memory": {"$in": ["m1", "m2"]}})
    assert got["ids"] == want["ids"] and got["distances"] == want["distances"]
    assert got_w["ids"] == want_w["ids"] and got_w["distances"] == want_w["distances"]
    assert fast.count() == 40


def test_writes_through_either_path_are_seen_by_the_other(tmp_path):
    client, col = _client_collection(tmp_path)
    col.upsert(ids=["a", "b"], embeddings=_vecs(2), metadatas=[{"memory": "a"}, {"memory": "b"}])
    client.close()

    fast = chroma_fast.open_fast(str(tmp_path), "memories")
    fast.upsert(["c"], _vecs(1, seed=3), [{"memory": "c"}])
    fast.delete(ids=["a"])
    fast.delete(where={"memory": {"$in": ["b"]}})
    assert sorted(fast.get(include=[])["ids"]) == ["c"]
    got = fast.get(ids=["c"], include=["embeddings"])["embeddings"]
    fast.close()

    client, col = _client_collection(tmp_path)
    assert sorted(col.get(include=[])["ids"]) == ["c"]
    # Both paths read back the very same stored vector (not compared with the input: the store
    # round-trips float32 through its own encoding).
    np.testing.assert_array_equal(np.asarray(got[0]),
                                  np.asarray(col.get(ids=["c"], include=["embeddings"])["embeddings"][0]))
    col.upsert(ids=["d"], embeddings=_vecs(1, seed=4), metadatas=[{"memory": "d"}])
    client.close()
    fast = chroma_fast.open_fast(str(tmp_path), "memories")
    assert sorted(fast.get(include=[])["ids"]) == ["c", "d"]


def test_falls_back_to_the_client_never_crashes(tmp_path, monkeypatch):
    assert chroma_fast.open_fast(str(tmp_path), "memories") is None  # no collection yet
    _client_collection(tmp_path)[0].close()
    monkeypatch.setattr(chroma_fast, "chromadb_version", lambda: "9.0.0")
    assert chroma_fast.open_fast(str(tmp_path), "memories") is None  # unchecked version


def test_cache_size_is_the_clients():
    import resource
    assert chroma_fast.hnsw_cache_size() == resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 5
