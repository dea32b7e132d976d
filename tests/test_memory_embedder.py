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


# --- the NumPy engine (memory/minilm.py) ------------------------------------------------------
def test_gelu_is_the_exact_erf_gelu():
    import math

    import numpy as np

    from memory.minilm import gelu

    x = np.linspace(-10, 10, 20001, dtype=np.float32)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(gelu(x) - want).max() < 1e-6
    assert gelu(x).dtype == np.float32


def test_a_missing_engine_dependency_names_how_to_install_it(monkeypatch):
    import importlib.util

    from memory.errors import MemoryStoreError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tokenizers" else real(name, *a))
    monkeypatch.setattr(emb, "_model", None)
    with pytest.raises(MemoryStoreError, match="pip install tokenizers"):
        emb.get_model()


@pytest.fixture(scope="module")
def real():
    emb.get_model()  # NumPy weights, ~0.2 s
    return emb


# Wordings the stores see: short queries, chat turns, punctuation, unicode, an empty string,
# and texts past the 128 tokens tokenizer.json pads to and the 256 the model truncates at.
TEXTS = ["I live in Oslo", "My home is in Oslo", "I like pancakes", "hi", "",
         "Where does Caroline live now?", "What did Melanie paint last week?",
         "Ünïcödé naïve café 東京 🙂 — “quotes” and ‘apostrophes’",
         "  spaces\tand\nnewlines  ", "The quick brown fox jumps over the lazy dog. " * 12,
         "Melanie: I painted a sunrise over the lake last week, and it took three hours. " * 20,
         "word " * 300, "I'm allergic to peanuts; my sister's name is Ana and she's 34.",
         "remember: the wifi password is hunter2", "1:56 pm on 8 May, 2023"]


def test_real_engine_is_unit_length_semantic_and_path_independent(real):
    import numpy as np

    real.clear_cache()
    bulk = np.asarray(real._encode(TEXTS, 4))  # several batches, several threads
    one = np.asarray([real._one_thread([t])[0] for t in TEXTS])
    assert bulk.shape == (len(TEXTS), real.DIM)
    assert np.abs(np.linalg.norm(bulk, axis=1) - 1).max() < 1e-5
    assert np.abs(bulk - one).max() < 1e-5  # padding and batching change nothing
    assert bulk[0] @ bulk[1] > bulk[0] @ bulk[2] + 0.2
    assert np.abs(np.asarray(real.embed(TEXTS[:3])) - one[:3]).max() < 1e-5  # the cached path


@pytest.mark.slow  # imports sentence-transformers + torch (~4 s) for the reference
def test_same_vectors_as_sentence_transformers(real):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(real.model_dir()), device="cpu")
    want = st.encode(TEXTS, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    real.clear_cache()
    for got in (np.asarray(real._encode(TEXTS, 64)), np.asarray([real.embed_query(t) for t in TEXTS])):
        cos = (got * want).sum(axis=1)
        assert cos.min() >= 0.999, dict(zip(TEXTS, cos.round(5)))
        assert np.abs(got - want).max() < 1e-4  # measured ~2e-7: the same model, not an approximation


def test_blas_is_single_threaded_while_embedding_and_restored_after(real):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from pathlib import Path

    import numpy as np

    # numpy's own BLAS (others, e.g. torch's in a test that imported it, are not the embedder's)
    site = str(Path(np.__file__).parent.parent)
    ours = {i["filepath"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas" and i["filepath"].startswith(site) and "numpy" in i["filepath"]}

    def blas_threads():
        return {i["filepath"]: i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["filepath"] in ours}

    before = blas_threads()
    with real._blas_single_thread():
        with real._blas_single_thread():  # nested (another thread embedding) keeps it at one
            pass
        assert set(blas_threads().values()) <= {1}
    assert blas_threads() == before


def test_a_querys_weight_products_keep_the_bits_of_the_transposed_gemm(real, monkeypatch):
    """minilm._linear runs a few rows as (w @ x.T).T (faster for a query); what it returns must
    be bit for bit what x @ w.T gave, so vectors already in a store still match new queries."""
    import numpy as np

    from memory import minilm

    model = real.get_model()
    with real._blas_single_thread():
        fast = [model.forward(*model.tokenize([t])) for t in TEXTS]
        batch = model.encode(TEXTS, 4)
        monkeypatch.setattr(minilm, "SMALL_ROWS", -1)  # every product as x @ w.T
        for t, got in zip(TEXTS, fast):
            assert np.array_equal(got, model.forward(*model.tokenize([t]))), t
        assert np.array_equal(batch, model.encode(TEXTS, 4))
