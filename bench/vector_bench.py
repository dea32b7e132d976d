"""What the multi-process safety of memory/index.py costs, against raw chromadb in one run.

Both sides get the same 384-dimensional unit vectors (embedding is left out: it is the same for
both) in a fresh directory. Reference: one chromadb PersistentClient kept open, as chromadb is
meant to be used by a single process. Ours: memory.index.VectorIndex, which takes an flock per
operation and reopens its client when another process wrote since it last looked.

Three workloads, each timed per operation, medians and p95 in ms and ours/raw ratios:
- search: `--searches` top-30 queries on a store of `--size` vectors (the recall hot path);
- chat: a write of one vector followed by a search, `--turns` times (one chat turn's pattern);
- import: `--size` vectors upserted in batches of 256;
- reload (ours only, no reference: raw chromadb fails or is stale here): a search right after
  another process wrote, which reopens the client and replays chromadb's log. Simulated by
  bumping the lock file's generation, exactly what the other process's write does from our side.

Run: .venv/bin/python -m bench.vector_bench --size 5000 --out bench/results/vector_bench.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import emit

DIM = 384
BATCH = 256


def _vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Raw:
    """Reference: plain chromadb, one client for the whole run."""

    def __init__(self, home: Path):
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings

        client = chromadb.PersistentClient(path=str(home / "chroma"),
                                           settings=Settings(anonymized_telemetry=False))
        self.c = client.get_or_create_collection("memories", configuration={"hnsw": {"space": "cosine"}})

    def add(self, ids, vecs):
        self.c.upsert(ids=ids, embeddings=vecs, documents=["x"] * len(ids),
                      metadatas=[{"kind": "fact"}] * len(ids))

    def search(self, vec):
        return self.c.query(query_embeddings=[vec], n_results=30, include=["distances"])


class Ours:
    def __init__(self, home: Path):
        from memory.index import VectorIndex

        self.v = VectorIndex(home)

    def add(self, ids, vecs):
        self.v.add_embedded(ids, vecs, [{"kind": "fact"}] * len(ids))

    def search(self, vec):
        return self.v.search(vec, 30)


def _ms(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t) * 1000


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 3), "p95_ms": round(s[int(0.95 * (len(s) - 1))], 3),
            "n": len(s)}


def run_side(cls, size: int, searches: int, turns: int) -> dict:
    base, queries, extra = _vectors(size, 1), _vectors(searches, 2), _vectors(turns, 3)
    with tempfile.TemporaryDirectory(prefix="reverie-vbench-") as tmp:
        side = cls(Path(tmp))
        t = time.perf_counter()
        batches = [_ms(side.add, [f"m{j}" for j in range(i, min(i + BATCH, size))],
                       base[i:i + BATCH]) for i in range(0, size, BATCH)]
        import_s = time.perf_counter() - t
        search = [_ms(side.search, q) for q in queries]
        chat = [_ms(side.add, [f"t{i}"], extra[i:i + 1]) + _ms(side.search, extra[i])
                for i in range(turns)]
        out = {"import_s": round(import_s, 3), "import_batch": _stats(batches),
               "search": _stats(search), "chat_turn": _stats(chat)}
        if isinstance(side, Ours):
            reload = []
            for q in queries[:20]:
                _bump(Path(tmp) / "chroma.lock")
                reload.append(_ms(side.search, q))
            out["search_after_other_process_wrote"] = _stats(reload)
    return out


def _bump(lock: Path) -> None:
    import fcntl

    with open(lock, "r+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        gen = int(f.read().strip() or 0)
        f.seek(0)
        f.write(b"%020d" % (gen + 1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=5000, help="Vectors in the store.")
    ap.add_argument("--searches", type=int, default=300)
    ap.add_argument("--turns", type=int, default=100, help="Write-then-search pairs.")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    raw = run_side(Raw, a.size, a.searches, a.turns)
    ours = run_side(Ours, a.size, a.searches, a.turns)
    ratio = {k: round(ours[k]["median_ms"] / raw[k]["median_ms"], 3)
             for k in ("search", "chat_turn", "import_batch")}
    ratio["import_s"] = round(ours["import_s"] / raw["import_s"], 3)
    emit({"what": f"{a.size} vectors of {DIM} dims, {a.searches} searches, {a.turns} write+search "
                  "turns; ours = memory.index.VectorIndex (flock per operation, reopen after "
                  "another process wrote), raw = one "
                  "open chromadb PersistentClient",
          "load_avg_before": os.getloadavg()[0], "raw": raw, "ours": ours,
          "ratio_ours_over_raw": ratio}, a.out)


if __name__ == "__main__":
    main()
