"""The real stack: bundled MiniLM embedder + persistent chromadb + SQLite FTS5."""
import pytest

from memory import MemoryStore


@pytest.fixture(scope="session")
def real_embedder():
    from memory import embedder

    embedder.get_model()  # load once for the session
    return embedder


@pytest.mark.slow
def test_embedder_is_local_normalised_and_semantic(real_embedder):
    a, b, c = real_embedder.embed(["I live in Oslo", "My home is in Oslo", "I like pancakes"])
    assert len(a) == real_embedder.DIM
    assert abs(sum(x * x for x in a) - 1.0) < 1e-4
    cos = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    assert cos(a, b) > cos(a, c) + 0.2


@pytest.mark.slow
def test_real_chromadb_recall_persists_and_forgets(tmp_path, real_embedder):
    store = MemoryStore(tmp_path)
    oslo, _ = store.add_fact("I live in Oslo", {"command": "test"})
    store.add_fact("My favourite food is pancakes", {"command": "test"})
    store.add_fact("I work at a hospital as a nurse", {"command": "test"})
    # no shared content word with the fact: only the embedding can find it
    top = store.recall("Which city is my home?", k=1, mode="vector")
    assert top[0].id == oslo.id
    store.close()
    reopened = MemoryStore(tmp_path)  # the index is persistent
    assert reopened.vectors.count() == 3
    assert reopened.recall("Which city is my home?", k=1)[0].id == oslo.id
    reopened.forget(oslo.id)
    assert oslo.id not in [r.id for r in reopened.recall("Which city is my home?", k=3)]
    reopened.close()


@pytest.mark.slow
def test_query_path_gives_the_same_vectors_as_encode(real_embedder):
    import numpy as np

    texts = ["Where does Caroline live now?", "hi", "Melanie: I painted a sunrise over the lake "
             "last week, and it took three hours."]
    real_embedder.clear_cache()
    bulk = np.asarray(real_embedder._encode(texts, 64))
    one = np.asarray([real_embedder._one_thread([t])[0] for t in texts])
    assert np.abs(bulk - one).max() < 1e-5
    assert real_embedder.embed_query(texts[0]) == real_embedder.embed_query(texts[0])  # cached


@pytest.mark.slow
def test_first_query_in_a_fresh_process_does_not_hang():
    # the query path loads the model and traces it on first use; both take locks
    import subprocess
    import sys

    code = ("from memory import embedder; v = embedder.embed_query('where do I live?'); "
            "assert len(v) == embedder.DIM; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
