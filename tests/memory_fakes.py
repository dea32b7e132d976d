"""A deterministic stand-in for the MiniLM embedder, so store logic tests run in milliseconds.

Bag of words hashed into the same 384 dimensions, unit length: identical wordings have cosine
1.0, shared words raise similarity. The real model is exercised in test_memory_real.py.
"""
from __future__ import annotations

import hashlib
import math
import re

import pytest

DIM = 384


def fake_embed(texts, batch_size=64):
    out = []
    for text in texts:
        v = [0.0] * DIM
        for w in re.findall(r"\w+", text.lower()):
            v[int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
        n = math.sqrt(sum(x * x for x in v)) or 1.0
        out.append([x / n for x in v])
    return out


@pytest.fixture
def fake_embedder(monkeypatch):
    import memory.embedder as emb

    monkeypatch.setattr(emb, "embed", fake_embed)
    monkeypatch.setattr(emb, "get_model", lambda: pytest.fail("the real model must not load here"))
    return fake_embed


@pytest.fixture
def store(tmp_path, fake_embedder):
    from memory import MemoryStore

    s = MemoryStore(tmp_path / "home")
    yield s
    s.close()


LOCOMO_SAMPLE = {
    "sample_id": "conv-test",
    "conversation": {
        "speaker_a": "Ada", "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ada", "dia_id": "D1:1", "text": "I adopted a greyhound called Pixel."},
            {"speaker": "Bo", "dia_id": "D1:2", "text": "Lovely! I started pottery classes.",
             "blip_caption": "a photo of a clay bowl"},
        ],
        "session_2_date_time": "10:00 am on 9 June, 2023",
        "session_2": [
            {"speaker": "Ada", "dia_id": "D2:1", "text": "Pixel loves the beach in Brighton."},
        ],
    },
    "qa": [{"question": "What is the name of Ada's dog?", "answer": "Pixel",
            "evidence": ["D1:1"], "category": 4},
           {"question": "Is it adversarial?", "evidence": [], "category": 5}],
}
