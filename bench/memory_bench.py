"""Memory benchmark: LoCoMo evidence recall (hybrid vs vector vs BM25) and its query latency.

Owns: the scoring (share of a QA item's evidence dia_ids among the top-k retrieved turns, per
category and overall) and latency percentiles. Every conversation gets a fresh store in a
temporary directory, so nothing touches the user's data. Latency at 10k/100k memories is
bench/memory_scale.py.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from memory import MemoryStore
from memory import locomo as locomo_format
from memory.embedder import clear_cache

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
                    clear_cache()  # each method pays for its own query embedding
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


if __name__ == "__main__":  # quick manual run: python -m bench.memory_bench FILE [k]
    import json
    import sys

    print(json.dumps(run_locomo(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10,
                                log=lambda m: print(m, file=sys.stderr)), indent=2))
