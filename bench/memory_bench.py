"""Memory benchmarks: LoCoMo evidence recall (hybrid vs vector vs BM25) and query latency at scale.

Owns: the scoring (share of a QA item's evidence dia_ids among the top-k retrieved turns, per
category and overall), latency percentiles, and the synthetic scale test. Every conversation
gets a fresh store in a temporary directory, so nothing touches the user's data.
"""
from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from memory import MemoryStore
from memory import locomo as locomo_format

METHODS = ("hybrid", "vector", "bm25")
CATEGORIES = (1, 2, 3, 4)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_locomo(path: Path, k: int = 10, log: Callable[[str], None] | None = None) -> dict:
    """Evidence recall@k for every category 1-4 QA item of every conversation in `path`."""
    samples = locomo_format.load(path)
    per_item: dict[str, list[tuple[int, float]]] = {m: [] for m in METHODS}
    latency: dict[str, list[float]] = {m: [] for m in METHODS}
    for i, sample in enumerate(samples):
        with tempfile.TemporaryDirectory(prefix="reverie-bench-") as tmp:
            store = MemoryStore(Path(tmp))
            t0 = time.perf_counter()
            store.import_locomo_samples([sample], Path(path).name)
            if log:
                log(f"{sample.get('sample_id', i)}: imported in {time.perf_counter() - t0:.1f}s")
            for qa in locomo_format.qa_items(sample, CATEGORIES):
                evidence = set(qa["evidence"])
                for method in METHODS:
                    t = time.perf_counter()
                    got = store.recall(str(qa["question"]), k=k, token_budget=None, mode=method,
                                       kinds=["episodic"])
                    latency[method].append((time.perf_counter() - t) * 1000)
                    found = {r.source.get("dia_id") for r in got}
                    per_item[method].append((qa["category"], len(evidence & found) / len(evidence)))
            store.close()

    def mean(xs):
        return round(statistics.fmean(xs), 4) if xs else None

    overall = {m: mean([s for _, s in per_item[m]]) for m in METHODS}
    by_cat = {str(c): {m: mean([s for cat, s in per_item[m] if cat == c]) for m in METHODS}
              for c in CATEGORIES}
    counts = {str(c): sum(1 for cat, _ in per_item["hybrid"] if cat == c) for c in CATEGORIES}
    return {"file": str(path), "k": k, "n_questions": len(per_item["hybrid"]),
            "n_conversations": len(samples), "recall_at_k": overall, "by_category": by_cat,
            "n_by_category": counts,
            "latency_ms": {"p50": round(percentile(latency["hybrid"], 0.5), 2),
                           "p95": round(percentile(latency["hybrid"], 0.95), 2),
                           "by_method": {m: {"p50": round(percentile(latency[m], 0.5), 2),
                                             "p95": round(percentile(latency[m], 0.95), 2)}
                                         for m in METHODS}}}


_SUBJECTS = ["my sister", "the dentist", "our team", "the landlord", "my neighbour", "the coach",
             "a colleague", "my father", "the bakery", "the museum", "my best friend", "the vet"]
_VERBS = ["talked about", "cancelled", "recommended", "complained about", "planned", "fixed",
          "painted", "booked", "forgot", "finished", "started", "visited"]
_OBJECTS = ["the garden shed", "a trip to Lisbon", "the budget report", "piano lessons",
            "a hiking route", "the birthday party", "a new laptop", "the kitchen sink",
            "swimming classes", "a jazz concert", "the insurance claim", "a pottery course"]
_WHEN = ["on Monday", "last weekend", "in March", "yesterday", "after work", "before lunch"]


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{rng.choice(_WHEN)} (note {i})" for i in range(n)]


def run_scale(sizes=(10_000, 100_000), n_queries: int = 100, pool: int = 512, seed: int = 0,
              log: Callable[[str], None] | None = None) -> dict:
    """p50/p95 hybrid query latency with `sizes` synthetic memories.

    Embedding 100k texts would take hours on 2 cores, so each memory's vector is an embedded
    template sentence plus small noise (still unit length, still clustered like real text);
    FTS gets the full synthetic text. Latency is what is measured, not relevance.
    """
    import json

    import numpy as np

    from memory.embedder import embed

    rng = np.random.default_rng(seed)
    base_texts = synthetic_texts(pool, seed)
    base = np.asarray(embed(base_texts), dtype=np.float32)
    queries = [f"What did {random.Random(i).choice(_SUBJECTS)} say about "
               f"{random.Random(i + 1).choice(_OBJECTS)}?" for i in range(n_queries)]
    out = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="reverie-scale-") as tmp:
            store = MemoryStore(Path(tmp))
            texts = synthetic_texts(size, seed + 1)
            pick = rng.integers(0, pool, size)
            vecs = base[pick] + rng.normal(0, 0.02, (size, base.shape[1])).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            ids = [f"m_syn{i:08d}" for i in range(size)]
            now = time.time()
            t0 = time.perf_counter()
            with store.db.atomic():
                store.db.conn.executemany(
                    "insert into memories (id, kind, text, subject, status, created, updated, "
                    "source) values (?, 'episodic', ?, null, 'active', ?, ?, ?)",
                    [(mid, t, now - j, now, json.dumps({"synthetic": True}))
                     for j, (mid, t) in enumerate(zip(ids, texts))])
                store.db.execute("insert into memories_fts(rowid, body) "
                                 "select seq, text from memories")
            store.vectors.add_embedded(ids, vecs.tolist(), texts,
                                       [{"kind": "episodic", "created": now - j}
                                        for j in range(size)])
            build_s = time.perf_counter() - t0
            store.recall(queries[0], k=10)  # warm caches and the model
            lat = []
            for q in queries:
                t = time.perf_counter()
                store.recall(q, k=10)
                lat.append((time.perf_counter() - t) * 1000)
            out[str(size)] = {"p50_ms": round(percentile(lat, 0.5), 2),
                              "p95_ms": round(percentile(lat, 0.95), 2),
                              "build_s": round(build_s, 1), "n_queries": len(lat)}
            if log:
                log(f"{size} memories: {out[str(size)]}")
            store.close()
    return out


if __name__ == "__main__":  # quick manual run: python -m bench.memory_bench FILE [k]
    import json
    import sys

    print(json.dumps(run_locomo(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10,
                                log=lambda m: print(m, file=sys.stderr)), indent=2))
