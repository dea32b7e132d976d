"""memory/chroma_fast.py against chromadb's own Python client, on the same real collection."""
import os

import numpy as np
import pytest

from memory import chroma_fast
from memory_fakes import fake_embedder  # noqa: F401 - fixture

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


# --- memory/index.py over the fast path: every VectorIndex method, and the same answers -------

def _fast_now(index) -> bool:
    return isinstance(index._shared.collection, chroma_fast.FastCollection)


def _reopen(index) -> None:
    """What a new process sees: nothing open, an existing store on disk."""
    index._close()


def _every_method(index) -> list:
    """Each VectorIndex method once, in an order that starts and ends on an existing store."""
    rng = np.random.default_rng(7)
    v = rng.standard_normal((30, 16)).astype(np.float32)
    ids = [f"m{i}" for i in range(20)] + [f"m{i}#1" for i in range(10)]
    metas = [{"kind": "fact" if n % 2 else "episodic", "memory": i.split("#")[0]}
             for n, i in enumerate(ids)]
    index.add_embedded(ids, v, metas)
    _reopen(index)
    out = [index.count(), sorted(index.ids())]
    q = rng.standard_normal(16).astype(np.float32).tolist()
    out.append([(h.id, h.rank, h.score) for h in index.search(q, 5)])
    out.append([(h.id, h.score) for h in index.search(q, 60)])  # more than the store holds
    out.append([(h.id, h.score) for h in index.search(q, 5, ["fact"])])
    out.append(index.similar(q, "episodic"))
    emb = index.embeddings(["m3", "m4", "nope"])
    out.append({k: np.asarray(e).tolist() for k, e in emb.items()})
    index.delete_parts(["m1", "m2"])
    index.delete(["m3"])
    out += [index.count(), sorted(index.ids())]
    _reopen(index)
    out.append(index.settings().anonymized_telemetry)
    out.append([(h.id, h.score) for h in index.search(q, 5)])  # the client, after settings()
    _reopen(index)
    index.clear()  # what `memory reindex` does first: broke when only the bindings were open
    out.append(index.count())
    index.add_embedded(ids[:5], v[:5], metas[:5])
    _reopen(index)
    out += [index.count(), [(h.id, h.score) for h in index.search(q, 3)]]
    return out


def test_every_index_method_works_and_agrees_with_the_client_only_path(tmp_path, monkeypatch):
    from memory.index import VectorIndex

    fast_seen = []
    real_open = chroma_fast.open_fast

    def spy(*a):
        col = real_open(*a)
        fast_seen.append(col is not None)
        return col

    monkeypatch.setattr(chroma_fast, "open_fast", spy)
    got = _every_method(VectorIndex(tmp_path / "a"))
    assert any(fast_seen), "the bindings path was taken"

    monkeypatch.setattr(chroma_fast, "open_fast", lambda *a: None)  # the Python client throughout
    want = _every_method(VectorIndex(tmp_path / "b"))
    assert got == want  # same ids, ranks and distances, bit for bit


def test_clear_and_settings_open_the_client_lazily_then_reads_stay_correct(tmp_path):
    from memory.index import VectorIndex

    index = VectorIndex(tmp_path)
    index.add_embedded(["a", "b"], _vecs(2), [{"memory": "a"}, {"memory": "b"}])
    _reopen(index)
    assert index.count() == 2 and _fast_now(index)
    assert index.settings().anonymized_telemetry is False
    assert index._shared.client is not None and not _fast_now(index)  # switched, not both
    assert index.count() == 2
    _reopen(index)
    assert index.count() == 2 and _fast_now(index)
    index.clear()
    assert index.count() == 0  # created afresh by the client
    index.add_embedded(["c"], _vecs(1, seed=2), [{"memory": "c"}])
    _reopen(index)
    assert index.ids() == {"c"} and _fast_now(index)


def test_reindex_of_a_store_opened_through_the_bindings(tmp_path, fake_embedder):  # noqa: F811
    from memory import MemoryStore

    s = MemoryStore(tmp_path / "home")
    s.add_fact("My sister is called Ingrid.", {"command": "test"})
    s.add_fact("I live in Tromsø.", {"command": "test"})
    s.close()
    _reopen(s.vectors)  # the process's shared chromadb handle, as a new process starts
    s = MemoryStore(tmp_path / "home")
    try:
        assert s.search("sister")[0].text == "My sister is called Ingrid."
        assert _fast_now(s.vectors)
        assert s.reindex() == 2
        assert s.search("sister")[0].text == "My sister is called Ingrid."
        assert s.vectors.count() == 2
    finally:
        s.close()
