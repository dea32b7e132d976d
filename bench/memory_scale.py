"""Memory recall latency at scale: N synthetic conversation memories, p50/p95 of hybrid recall,
beside a bare chromadb collection holding the same embeddings, timed in the same run.

Owns: a deterministic synthetic corpus (conversations between named speakers, plus some facts),
embedding it for real in batches (cached, so 100k is embedded once and 10k reuses its prefix),
building a store from it (cached too), building the reference (a plain chromadb
PersistentClient collection, cosine HNSW, the same vectors and metadata; cached), and timing
≥200 varied queries: MemoryStore.recall and the raw collection.query alternating query by
query, so load from other processes lands on both sides alike.

    python -m bench.memory_scale --n 10000 --queries 200      (or `reverie bench memory-scale`)

The store is built through SQL and precomputed embeddings rather than add_fact/record_turn, so
building 100k costs the embedding time only; what it measures is MemoryStore.recall itself.
Every query is a different text and the query-embedding cache is cleared before each one, so
the cache never hides the embedding cost. The raw side is given each query's embedding
precomputed (it has no embedder of its own) and asks for the same k; recall's own vector stage
asks chromadb for max(30, 4k) candidates, so the raw query at that n is timed too, to separate
chromadb's cost from what recall adds (query embedding, BM25, fusion, ledger rows).

    python -m bench.memory_scale --n 10000 100000 > bench/results/memory_scale.json
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

VERSION = 1  # bump when the corpus generator changes: cached corpora are then rebuilt
STORE_VERSION = 2  # bump when how a store is built changes (2: the store's own index forms)
CHUNK = 2048  # texts embedded between checkpoints of the embedding cache

_NAMES = ("Ada Bruno Chen Dara Elif Farid Greta Hiro Ines Jonas Kemi Lars Maya Nils Omar Priya "
          "Quinn Rosa Sven Tariq Uma Vera Wim Xena Yusuf Zoe Anya Bilal Cleo Dmitri Esme Felix "
          "Gwen Hamid Iris Joel Kira Luca Mina Noor Otto Pia Rafael Sana Theo Ulla Viktor Wren "
          "Yara Zain").split()
_PEOPLE = ["my sister", "my brother", "the dentist", "our team", "the landlord", "my neighbour",
           "the coach", "a colleague", "my father", "my mother", "my best friend", "the vet",
           "my manager", "the plumber", "my cousin", "the teacher", "my grandmother", "the baker"]
_VERBS = ["talked about", "cancelled", "recommended", "complained about", "planned", "fixed",
          "painted", "booked", "forgot", "finished", "started", "visited", "sold", "bought",
          "postponed", "organised", "photographed", "repaired", "reviewed", "rehearsed"]
_OBJECTS = ["the garden shed", "a trip to Lisbon", "the budget report", "piano lessons",
            "a hiking route", "the birthday party", "a new laptop", "the kitchen sink",
            "swimming classes", "a jazz concert", "the insurance claim", "a pottery course",
            "the wedding speech", "a camping weekend", "the tax return", "a chess tournament",
            "the bike repair", "a cooking class", "the attic", "a job interview",
            "the school play", "a marathon", "the car lease", "a yoga retreat", "the roof",
            "a museum tour", "the quarterly review", "a sourdough starter", "the vegetable patch",
            "a ferry ticket", "the dog's vaccinations", "a violin recital", "the moving boxes",
            "a surprise dinner", "the photo album", "a language exchange", "the climbing gym",
            "a charity run", "the book club", "a road trip to Porto"]
_PLACES = ["in Oslo", "at the office", "in the park", "at home", "near the station", "in Berlin",
           "at the lake", "downtown", "at the library", "in the mountains", "at the beach",
           "in Kyoto", "at the market", "in Nairobi", "at the gym", "in Montreal"]
_WHEN = ["on Monday", "last weekend", "in March", "yesterday", "after work", "before lunch",
         "on Friday night", "last summer", "two weeks ago", "this morning", "in December",
         "over the holidays", "on Sunday afternoon", "last year"]
_FEEL = ["it was exhausting", "it went better than expected", "nobody showed up on time",
         "it cost far too much", "the weather ruined it", "everyone loved it",
         "it took three hours", "I still can't believe it", "it was a total mess"]
_FAV = ["colour", "food", "book", "film", "band", "season", "sport", "city", "drink", "author"]
_FAV_VALUES = ["teal", "ramen", "Dune", "Alien", "Radiohead", "autumn", "tennis", "Lisbon",
               "oolong tea", "Ursula K. Le Guin", "dumplings", "Middlemarch", "jazz", "Vienna"]

_TURNS = [
    "{P} {v} {o} {w}.",
    "I {v} {o} {pl} {w}, and {f}.",
    "Did you hear that {p} {v} {o}? {F}.",
    "Honestly, {o} {pl} was the highlight of my week; {f}.",
    "{P} and I {v} {o} {w}.",
    "Remember when we {v} {o} {pl}? {F}.",
    "I think {p} {v} {o} {pl}, but I'm not sure.",
    "We {v} {o} {w} with {n}.",
]
_QUERIES = [
    "What did {p} say about {o}?",
    "When did {n} mention {o}?",
    "Who {v} {o}?",
    "What happened {pl} {w}?",
    "Tell me about {o}.",
    "Did {n} ever talk about {o} {pl}?",
    "What is my favourite {fav}?",
    "How did {o} go?",
    "Which trip did {n} plan {w}?",
    "{n} {o}",
]


def corpus(n: int, seed: int = 0) -> list[tuple[str, str, dict]]:
    """n (kind, text, source) items: conversations of 20-150 turns, about 1 in 20 items a fact.

    Prefix-stable: corpus(m)[:n] == corpus(n) for m > n, so one embedding cache serves all sizes."""
    rng = random.Random(seed)
    out: list[tuple[str, str, dict]] = []
    conv, left, speakers, turn = 0, 0, ("", ""), 0
    while len(out) < n:
        if rng.random() < 0.05:
            fav = rng.choice(_FAV)
            out.append(("fact", f"The user's favourite {fav} is {rng.choice(_FAV_VALUES)}.",
                        {"command": "remember", "synthetic": True}))
            continue
        if left == 0:
            conv, left, turn = conv + 1, rng.randint(20, 150), 0
            speakers = tuple(rng.sample(_NAMES, 2))
        p = rng.choice(_PEOPLE)
        text = rng.choice(_TURNS).format(
            p=p, P=p[:1].upper() + p[1:], v=rng.choice(_VERBS), o=rng.choice(_OBJECTS),
            pl=rng.choice(_PLACES), w=rng.choice(_WHEN), f=(f := rng.choice(_FEEL)),
            F=f[:1].upper() + f[1:], n=rng.choice(_NAMES))
        turn += 1
        out.append(("episodic", text, {"conversation_id": f"syn{conv:05d}", "turn_id": f"t{turn}",
                                       "speaker": speakers[turn % 2], "synthetic": True}))
        left -= 1
    return out


def queries(n: int, seed: int = 1) -> list[str]:
    """n distinct questions over the corpus vocabulary (and some that match nothing well)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        q = rng.choice(_QUERIES).format(
            p=rng.choice(_PEOPLE), o=rng.choice(_OBJECTS), n=rng.choice(_NAMES),
            v=rng.choice(_VERBS), pl=rng.choice(_PLACES), w=rng.choice(_WHEN), fav=rng.choice(_FAV))
        seen.setdefault(q)
    return list(seen)


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reverie" / "memory-scale"


def embeddings(texts: list[str], cache: Path, progress: Callable[[int, int], None] | None = None):
    """float32 (len(texts), DIM) unit vectors, embedded in batches; cache[:len] is reused."""
    import numpy as np

    from memory.embedder import embed

    cache.parent.mkdir(parents=True, exist_ok=True)
    have = np.load(cache) if cache.exists() else np.zeros((0, 384), dtype=np.float32)
    if progress:
        progress(min(len(have), len(texts)), len(texts))
    while len(have) < len(texts):
        chunk = texts[len(have):len(have) + CHUNK]
        vecs = np.asarray(embed(chunk, batch_size=128), dtype=np.float32)
        have = np.concatenate([have, vecs])
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, have)
        os.replace(tmp, cache)  # a checkpoint: an interrupted build resumes here
        if progress:
            progress(len(have), len(texts))
    return have[:len(texts)]


def _forms() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The index text forms a new MemoryStore writes (FTS, vector): the bench builds what the
    product would build."""
    from memory import store as store_mod

    return tuple(store_mod.FTS_FORM), tuple(store_mod.VECTOR_FORM)


def entries(n: int, seed: int, root: Path, progress=None):
    """The store's rows and index entries for corpus(n): (items, ids, fts bodies, vector ids,
    vector metadata, vectors). Vector entries come from memory.store's own _vector_rows (one per
    memory, plus one per sentence of a long turn when the form says so); their embeddings are
    cached per form, prefix-stable (one file for the per-memory entries, one for the extra ones)."""
    import numpy as np

    from memory import store as store_mod

    fts_form, vec_form = _forms()
    items = corpus(n, seed)
    ids = [f"m_syn{i:09d}" for i in range(n)]
    bodies = [store_mod.index_text(text, src, fts_form) for _, text, src in items]
    mems = [SimpleNamespace(id=ids[i], text=text, source=src, kind=kind, status="active")
            for i, (kind, text, src) in enumerate(items)]
    rows = store_mod._vector_rows(mems, vec_form)
    main = [r for r in rows if "#" not in r[0]]
    extra = [r for r in rows if "#" in r[0]]
    key = "-".join(f for f in vec_form if f != "sentences")
    name = f"emb-v{VERSION}-s{seed}" + ("" if key == "speaker" else f"-{key}")
    vecs = embeddings([t for _, t, _ in main], root / f"{name}.npy", progress)
    if extra:
        vecs = np.concatenate([vecs, embeddings([t for _, t, _ in extra],
                                                root / f"{name}-sentences.npy", progress)])
    vids = [r[0] for r in main + extra]
    metas = [r[2] for r in main + extra]
    return items, ids, bodies, vids, metas, np.asarray(vecs, dtype=np.float32)


def build(n: int, seed: int = 0, root: Path | None = None, rebuild: bool = False,
          progress: Callable[[int, int], None] | None = None) -> tuple[Path, dict]:
    """A store home with n synthetic memories (cached under root); returns (home, build info)."""
    from memory import MemoryStore

    root = Path(root or cache_root())
    home = root / f"store-v{STORE_VERSION}-s{seed}-n{n}"
    marker = home / "built.json"
    if marker.exists() and not rebuild:
        return home, {**json.loads(marker.read_text()), "cached": True}
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    items, ids, bodies, vids, metas, vecs = entries(n, seed, root, progress)
    embed_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    store = MemoryStore(home)  # a new store records its index form: heal_index leaves it be
    now = time.time()
    created = [now - (n - i) * 600.0 for i in range(n)]  # one every 10 minutes, oldest first
    with store.db.atomic():
        store.db.conn.executemany(
            "insert into memories (id, kind, text, subject, status, created, updated, source) "
            "values (?, ?, ?, null, 'active', ?, ?, ?)",
            [(ids[i], kind, text, created[i], created[i], json.dumps(src, sort_keys=True))
             for i, (kind, text, src) in enumerate(items)])
        seqs = [r[0] for r in store.db.execute("select seq from memories order by seq")]
        store.db.conn.executemany("insert into memories_fts(rowid, body) values (?, ?)",
                                  list(zip(seqs, bodies)))
    store.vectors.add_embedded(vids, vecs, metas)
    info = {"n": n, "seed": seed, "vector_entries": len(vids), "form": list(_forms()[1]),
            "embed_s": round(embed_s, 1), "index_s": round(time.perf_counter() - t1, 1)}
    store.close()
    marker.write_text(json.dumps(info))
    return home, {**info, "cached": False}


RAW_COLLECTION = "raw"


def build_raw(n: int, seed: int = 0, root: Path | None = None, rebuild: bool = False,
              progress: Callable[[int, int], None] | None = None):
    """The reference: a bare chromadb collection with the store's vector entries and metadata
    (cached under root); returns (client, collection, build info)."""
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb
    from chromadb.config import Settings

    root = Path(root or cache_root())
    path = root / f"raw-chroma-v{STORE_VERSION}-s{seed}-n{n}"
    marker = path / "built.json"
    if rebuild or not marker.exists():
        shutil.rmtree(path, ignore_errors=True)
    cached = marker.exists()
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.get_or_create_collection(RAW_COLLECTION, embedding_function=None,
                                          configuration={"hnsw": {"space": "cosine"}})
    if cached:
        return client, col, {**json.loads(marker.read_text()), "cached": True}
    _, _, _, vids, metas, vecs = entries(n, seed, root, progress)
    t0 = time.perf_counter()
    step = min(4096, client.get_max_batch_size())
    for start in range(0, len(vids), step):
        sl = slice(start, start + step)
        col.add(ids=vids[sl], embeddings=vecs[sl], metadatas=metas[sl])
    info = {"n": n, "seed": seed, "vector_entries": len(vids),
            "index_s": round(time.perf_counter() - t0, 1)}
    marker.write_text(json.dumps(info))
    return client, col, {**info, "cached": False}


def _stats(ms: list[float]) -> dict:
    from bench.memory_bench import percentile

    return {"p50": round(percentile(ms, 0.5), 2), "p95": round(percentile(ms, 0.95), 2),
            "p99": round(percentile(ms, 0.99), 2), "max": round(max(ms), 2)}


def run(n: int = 10_000, n_queries: int = 200, k: int = 10, seed: int = 0,
        root: Path | None = None, rebuild: bool = False,
        progress: Callable[[int, int], None] | None = None,
        log: Callable[[str], None] | None = None) -> dict:
    """Build (or reuse) n memories and the raw chromadb reference, then time n_queries distinct
    hybrid recalls and raw collection queries, interleaved."""
    import numpy as np

    from bench.memory_bench import percentile
    from memory import MemoryStore
    from memory.embedder import clear_cache, embed, embed_query

    if n < 1 or n_queries < 1:
        raise ValueError("n and the number of queries must be at least 1")
    home, info = build(n, seed, root, rebuild, progress)
    client, raw, raw_info = build_raw(n, seed, root, rebuild, progress)
    cand = max(30, 4 * k)  # what recall's vector stage asks chromadb for (memory/store.py)
    store = MemoryStore(home)
    load_before = os.getloadavg()
    try:
        warm = queries(n_queries + 3, seed + 1000)  # disjoint warm-up texts
        qs = queries(n_queries, seed + 1)
        qvecs = [np.asarray(v, dtype=np.float32) for v in embed(warm[:3] + qs)]
        for q, v in zip(warm[:3], qvecs):  # load the model, open chromadb, warm pages: both sides
            store.recall(q, k=k, token_budget=None)
            raw.query(query_embeddings=[v], n_results=k, include=["distances"])
            raw.query(query_embeddings=[v], n_results=cand, include=["distances"])
        lat: list[float] = []
        cpu: list[float] = []  # CPU time of the process: the work itself, less what load adds
        raw_k: list[float] = []
        raw_cand: list[float] = []
        raw_emb: list[float] = []  # embed the query text (cold) + the raw query: the engine's floor
        raw_cpu: list[float] = []
        raw_emb_cpu: list[float] = []
        overlap: list[float] = []  # |recall's top k ∩ raw top k| / k: how alike the answers are
        stages: dict[str, list[float]] = {}

        def time_recall(q: str) -> list[str]:
            clear_cache()  # a query seen in an earlier run (or size) must not skip its embedding
            c, t = time.process_time(), time.perf_counter()
            got = store.recall(q, k=k, token_budget=None)
            lat.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
            for stage, ms in store.last_timings.items():
                stages.setdefault(stage, []).append(ms)
            return [r.id for r in got]

        def time_raw(q: str, v) -> list[str]:
            c, t = time.process_time(), time.perf_counter()
            res = raw.query(query_embeddings=[v], n_results=k, include=["distances"])
            raw_k.append((time.perf_counter() - t) * 1000)
            raw_cpu.append((time.process_time() - c) * 1000)
            t = time.perf_counter()
            raw.query(query_embeddings=[v], n_results=cand, include=["distances"])
            raw_cand.append((time.perf_counter() - t) * 1000)
            clear_cache()
            c, t = time.process_time(), time.perf_counter()
            raw.query(query_embeddings=[embed_query(q)], n_results=k, include=["distances"])
            raw_emb.append((time.perf_counter() - t) * 1000)
            raw_emb_cpu.append((time.process_time() - c) * 1000)
            return list(dict.fromkeys(i.split("#", 1)[0] for i in res["ids"][0]))

        for i, (q, v) in enumerate(zip(qs, qvecs[3:])):
            if i % 2:  # alternate which side goes first
                ours = time_recall(q)
                theirs = time_raw(q, v)
            else:
                theirs = time_raw(q, v)
                ours = time_recall(q)
            overlap.append(len(set(ours) & set(theirs)) / k)
        count = store.db.execute("select count(*) from memories where status = 'active'").fetchone()[0]
    finally:
        store.close()
        client.close()

    p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
    r50, r95 = percentile(raw_k, 0.5), percentile(raw_k, 0.95)
    res = {"n": n, "active_memories": count, "vector_entries": info.get("vector_entries"),
           "raw_vector_entries": raw_info.get("vector_entries"), "n_queries": len(lat),
           "k": k, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
           "p99_ms": round(percentile(lat, 0.99), 2), "max_ms": round(max(lat), 2),
           "cpu_ms": {"p50": round(percentile(cpu, 0.5), 2), "p95": round(percentile(cpu, 0.95), 2)},
           "stages_ms": {s: {"p50": round(percentile(v, 0.5), 2), "p95": round(percentile(v, 0.95), 2)}
                         for s, v in stages.items()},
           "raw_chromadb": {"what": f"bare chromadb collection.query, precomputed query embedding, "
                                    f"n_results={k}, include=distances",
                            "ms": _stats(raw_k), "cpu_ms": _stats(raw_cpu)},
           "raw_chromadb_candidates": {"what": f"the same at n_results={cand} (recall's vector stage)",
                                       "ms": _stats(raw_cand)},
           "raw_chromadb_with_query_embedding": {
               "what": f"the query text embedded by the same embedder (cache cleared) + the raw "
                       f"query at n_results={k}", "ms": _stats(raw_emb), "cpu_ms": _stats(raw_emb_cpu)},
           "ratio_p50": round(p50 / r50, 2), "ratio_p95": round(p95 / r95, 2),
           # on a shared machine wall time is mostly waiting for a core; CPU time is the work
           "ratio_cpu_p50": round(percentile(cpu, 0.5) / percentile(raw_cpu, 0.5), 2),
           "ratio_cpu_p95": round(percentile(cpu, 0.95) / percentile(raw_cpu, 0.95), 2),
           "ratio_vs_embedding_plus_raw": {
               "p50": round(p50 / percentile(raw_emb, 0.5), 2),
               "p95": round(p95 / percentile(raw_emb, 0.95), 2)},
           "top_k_overlap_with_raw": round(sum(overlap) / len(overlap), 3),
           "build": info, "raw_build": raw_info, "store": str(home),
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    if log:
        log(f"{n} memories: recall p50 {res['p50_ms']} ms, p95 {res['p95_ms']} ms; raw chromadb "
            f"p50 {res['raw_chromadb']['ms']['p50']} ms, p95 {res['raw_chromadb']['ms']['p95']} ms")
    return res


def repeated(runs: list[dict]) -> dict:
    """The first run in full, with every run's percentiles and load beside it and the median
    of their p50/p95 (one run's p95 on a loaded shared machine is mostly the load)."""
    import statistics

    out = dict(runs[0])
    if len(runs) > 1:
        keep = ("p50_ms", "p95_ms", "p99_ms", "cpu_ms", "raw_chromadb", "stages_ms",
                "load_average_before", "load_average")
        out["runs"] = [{key: r[key] for key in keep} for r in runs]
        out["median_of_runs"] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p95_ms": statistics.median(r["p95_ms"] for r in runs),
            "cpu_p95_ms": statistics.median(r["cpu_ms"]["p95"] for r in runs),
            "raw_chromadb_p95_ms": statistics.median(r["raw_chromadb"]["ms"]["p95"] for r in runs)}
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m bench.memory_scale", description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="time each size this many times (wall p95 on a shared machine moves "
                         "with its load: the runs and their median are reported)")
    a = ap.parse_args(argv)

    def progress(done: int, total: int) -> None:
        print(f"\rembedding {done}/{total}", end="" if done < total else "\n", file=sys.stderr,
              flush=True)

    out = [repeated([run(n, a.queries, a.k, a.seed, a.cache_dir, a.rebuild, progress,
                         log=lambda m: print(m, file=sys.stderr))
                     for _ in range(max(1, a.repeat))]) for n in a.n]
    print(json.dumps(out[0] if len(out) == 1 else out, indent=2))


if __name__ == "__main__":
    main()
