"""The derived search indexes: the chromadb vector collection and the SQLite FTS5 table.

Owns: opening chromadb (persistent, in home/"chroma", telemetry off, our own embedding
function), adding/removing index entries in batches, and the two single-method searches
(vector top-N by cosine, BM25 top-N over FTS5). Only active memories are indexed; both indexes
can be rebuilt from the ledger at any time, so nothing here is the source of truth.
"""
from __future__ import annotations

import fcntl
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

COLLECTION = "memories"
ADD_BATCH = 256

# Function words carry no topic; BM25 over an OR-query of them only adds noise and latency.
STOPWORDS = frozenset("""
a about above after again against all am an and any are aren't as at be because been before being
below between both but by can can't could couldn't did didn't do does doesn't doing don't down
during each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her
here here's hers herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's
its itself let's me more most mustn't my myself no nor not of off on once only or other ought our
ours ourselves out over own same shan't she she'd she'll she's should shouldn't so some such than
that that's the their theirs them themselves then there there's these they they'd they'll they're
they've this those through to too under until up very was wasn't we we'd we'll we're we've were
weren't what what's when when's where where's which while who who's whom why why's with won't
would wouldn't you you'd you'll you're you've your yours yourself yourselves
also just really like get got go going went yeah yes oh hey hi ok okay well thanks thank
s t d ll re ve m
""".split())
_WORD = re.compile(r"[\w']+", re.UNICODE)


@dataclass
class Hit:
    id: str
    rank: int  # 0-based rank within its method
    score: float  # cosine similarity (vector) or -bm25 (higher is better for both)


def query_terms(query: str) -> list[str]:
    """Content words of a query, lower-cased, deduplicated, in order."""
    seen: list[str] = []
    for w in _WORD.findall(query.lower()):
        w = w.strip("'")
        if w.endswith("'s"):
            w = w[:-2]
        if len(w) < 2 or w in STOPWORDS or w in seen:
            continue
        seen.append(w)
    return seen


def fts_match(query: str) -> str | None:
    """An FTS5 MATCH expression: content words OR-ed, each quoted so no word is FTS syntax."""
    terms = query_terms(query)
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


class _Shared:
    """This process's one chromadb client for a directory, shared by every VectorIndex on it
    (chromadb keeps one system per path per process anyway), with the generation it loaded and
    the open lock file, so two stores on one dir in one process never reload each other."""

    def __init__(self) -> None:
        self.client = None
        self.collection = None
        self.seen = -1  # the index generation our client loaded; -1: none loaded
        self.mutex = threading.Lock()
        self.fd: int | None = None  # home/chroma.lock, open for the life of the process


_SHARED: dict[str, _Shared] = {}
_SHARED_LOCK = threading.Lock()


class VectorIndex:
    """The chromadb collection for one data directory, safe to use from several processes.

    chromadb's persistent client is not multi-process safe: a client that opened the collection
    before another live process wrote to it fails its next search with "Error creating hnsw
    segment reader: Nothing found on disk" (the writer's HNSW index is still only in its memory).
    So every operation runs under an exclusive flock on home/chroma.lock (the kernel drops it
    when a process dies, so a kill never leaves it held), and the lock file holds a generation
    number that each write bumps: an operation that finds it moved since our client loaded
    reopens the client first, which loads the other process's writes from chromadb's log. A
    process alone keeps its client open, so a search costs one flock more than raw chromadb
    (bench/vector_bench.py). Embedding happens outside the lock, so a long import never blocks
    another process's recall for long.
    """

    def __init__(self, home: Path):
        self.path = Path(home) / "chroma"
        self.lock_path = Path(home) / "chroma.lock"
        with _SHARED_LOCK:
            self._shared = _SHARED.setdefault(str(self.path.resolve()), _Shared())

    def _open(self, client: bool = False):
        """The collection, opened if need be. An existing one opens through chromadb's bindings
        (memory/chroma_fast.py, ~0.5 s CPU less than its Python client); `client=True` (creating,
        deleting, settings: what the bindings object does not do) opens the Python client,
        dropping a bindings object first so one process never holds two views of the store."""
        sh = self._shared
        if client and sh.client is None:
            self._close()
        if sh.collection is None and not client and (self.path / "chroma.sqlite3").exists():
            from .chroma_fast import open_fast
            sh.collection = open_fast(str(self.path), COLLECTION)  # None: use the client
        if sh.collection is None:
            os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
            import chromadb
            from chromadb.config import Settings

            from .embedder import chroma_embedding_function

            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            sh.client = chromadb.PersistentClient(
                path=str(self.path), settings=Settings(anonymized_telemetry=False,
                                                       allow_reset=True))
            sh.collection = sh.client.get_or_create_collection(
                COLLECTION, embedding_function=chroma_embedding_function(),
                configuration={"hnsw": {"space": "cosine"}})
        return sh.collection

    def _close(self) -> None:
        sh = self._shared
        client, col = sh.client, sh.collection
        sh.client, sh.collection, sh.seen = None, None, -1
        if client is not None:
            client.close()
        elif col is not None:
            col.close()  # a chroma_fast.FastCollection (only the client's collections lack it)

    @contextmanager
    def _locked(self, write: bool = False, client: bool = False):
        """The collection under the inter-process lock, fresh with respect to other processes;
        client=True: through chromadb's Python client (self._shared.client is then set)."""
        sh = self._shared
        with sh.mutex:
            if sh.fd is None:
                self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                sh.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(sh.fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(sh.fd, 32, 0).strip()
                gen = int(raw) if raw.isdigit() else 0
                if sh.seen != gen:  # another process wrote since our client loaded: reload
                    self._close()
                try:
                    yield self._open(client)
                finally:
                    if write:  # tell the other processes to reload before their next use
                        gen += 1
                        os.pwrite(sh.fd, b"%020d" % gen, 0)
                    if sh.collection is not None:
                        sh.seen = gen
            finally:
                fcntl.flock(sh.fd, fcntl.LOCK_UN)

    def settings(self):
        """The chromadb client's settings (telemetry must be off)."""
        with self._locked(client=True):
            return self._shared.client.get_settings()

    def add(self, items: list[tuple[str, str, dict]], progress=None) -> None:
        """Upsert (id, indexed text, metadata) in batches; progress(n_done) after each batch."""
        from .embedder import embed

        for start in range(0, len(items), ADD_BATCH):
            batch = items[start:start + ADD_BATCH]
            vectors = embed([t for _, t, _ in batch])  # outside the lock: the slow part
            self.add_embedded([i for i, _, _ in batch], vectors, [m for _, _, m in batch])
            if progress:  # memories done, not sentence entries
                progress(sum(1 for i, _, _ in batch if "#" not in i))

    def add_embedded(self, ids: list[str], embeddings, metadatas: list[dict]):
        """Upsert precomputed embeddings (also the scale benchmark's path; avoids re-embedding).

        No documents: the ledger holds every text, and a text chromadb kept in its own SQLite
        (and its write log) would survive a forget there."""
        with self._locked(write=True) as collection:
            for start in range(0, len(ids), 4096):
                sl = slice(start, start + 4096)
                collection.upsert(ids=ids[sl], embeddings=embeddings[sl], metadatas=metadatas[sl])

    def delete(self, ids: list[str]) -> None:
        if ids:
            with self._locked(write=True) as collection:
                collection.delete(ids=list(ids))
                collection.delete(where={"memory": {"$in": list(ids)}})  # their sentence entries

    def delete_parts(self, ids: list[str]) -> None:
        """Remove the sentence entries ("<id>#<j>") of these memories, keeping their own."""
        if ids:
            with self._locked(write=True) as collection:
                collection.delete(where={"memory": {"$in": list(ids)}})

    def ids(self) -> set[str]:
        with self._locked() as collection:
            return {i.split("#", 1)[0] for i in collection.get(include=[])["ids"]}

    def count(self) -> int:
        """Entries, sentence entries included."""
        with self._locked() as collection:
            return collection.count()

    def clear(self) -> None:
        with self._locked(write=True, client=True):
            self._shared.client.delete_collection(COLLECTION)
            self._close()  # the next operation creates the collection afresh

    def search(self, query_embedding, n: int, kinds: list[str] | None = None) -> list[Hit]:
        # Only ids and distances: documents and metadata stay in chromadb (the ledger has them).
        # No count() first: chromadb returns fewer than n_results (or none) by itself, and the
        # count was a second round trip costing ~5 ms a query at 10k memories.
        where = {"kind": {"$in": list(kinds)}} if kinds else None
        with self._locked() as collection:
            res = collection.query(query_embeddings=[query_embedding], n_results=n + n // 2,
                                   where=where, include=["distances"])
        # a long memory may also be indexed sentence by sentence ("<id>#<j>"): its best entry counts
        out: list[Hit] = []
        seen: set[str] = set()
        for i, d in zip(res["ids"][0], res["distances"][0]):
            mid = i.split("#", 1)[0]
            if mid not in seen:
                seen.add(mid)
                out.append(Hit(mid, len(out), 1.0 - d))
        return out[:n]

    def embeddings(self, ids: list[str]) -> dict:
        """id -> stored embedding, for the ids that are indexed."""
        if not ids:
            return {}
        with self._locked() as collection:
            res = collection.get(ids=list(ids), include=["embeddings"])
        return dict(zip(res["ids"], res["embeddings"]))

    def similar(self, text_embedding, kind: str) -> tuple[str, float] | None:
        """The nearest active memory of `kind` and its cosine similarity (for near-duplicates)."""
        hits = self.search(text_embedding, 1, [kind])
        return (hits[0].id, hits[0].score) if hits else None


# BM25 scores every row that contains any query word, so its cost grows with the postings of the
# words (~4 µs each here: 120 ms p95 at 100k memories). When the query's words together occur
# in more rows than this, the most common words are left out of the match, rarest kept first:
# a word in many rows has a low IDF and moves the ranking least. Below the budget (every
# LoCoMo conversation, most stores under ~20k memories) the query is exact BM25.
FTS_POSTINGS_BUDGET = 8000
_TOKENIZER = "porter unicode61 remove_diacritics 2"  # the same as memories_fts (migration m003)


def _ensure_vocab(db) -> None:
    """Per-connection temp tables: the index's term statistics and a scratch tokenizer."""
    if db.execute("select 1 from temp.sqlite_master where name = 'memories_fts_vocab'").fetchone():
        return
    db.execute("create virtual table temp.memories_fts_vocab using fts5vocab(main, memories_fts, row)")
    db.execute(f"create virtual table temp.query_terms using fts5(word, tokenize = '{_TOKENIZER}')")
    db.execute("create virtual table temp.query_terms_vocab using fts5vocab(temp, query_terms, instance)")


def frequent_terms(db, terms: list[str], budget: int = FTS_POSTINGS_BUDGET) -> set[str]:
    """The query words to leave out so the rest occur in at most `budget` rows (never all)."""
    if len(terms) < 2:
        return set()
    _ensure_vocab(db)
    db.execute("delete from temp.query_terms")
    db.executemany("insert into temp.query_terms(rowid, word) values (?, ?)",
                   list(enumerate(terms, start=1)))
    tokens: dict[int, list[str]] = {}
    for doc, term in db.execute("select doc, term from temp.query_terms_vocab"):
        tokens.setdefault(doc, []).append(term)
    db.execute("delete from temp.query_terms")
    need = sorted({t for ts in tokens.values() for t in ts})
    df = dict(db.execute(f"select term, doc from temp.memories_fts_vocab where term in "
                         f"({', '.join('?' * len(need))})", need).fetchall()) if need else {}
    # a quoted word that is several tokens is a phrase: its rows are at most its rarest token's
    cost = {w: min((df.get(t, 0) for t in tokens.get(i, [])), default=0)
            for i, w in enumerate(terms, start=1)}
    total = sum(cost.values())
    dropped: set[str] = set()
    for w in sorted(terms, key=lambda w: -cost[w]):
        if total <= budget or len(dropped) == len(terms) - 1:
            break
        dropped.add(w)
        total -= cost[w]
    return dropped


def fts_search(db, query: str, n: int, kinds: list[str] | None = None,
               budget: int | None = FTS_POSTINGS_BUDGET) -> list[Hit]:
    """BM25 top-n over active memories (FTS5 ranks: more negative is better)."""
    terms = query_terms(query)
    if not terms:
        return []
    if budget is not None:
        dropped = frequent_terms(db, terms, budget)
        terms = [t for t in terms if t not in dropped]
    match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
    sql = ("select m.id, bm25(memories_fts) as b from memories_fts "
           "join memories m on m.seq = memories_fts.rowid where memories_fts match ?")
    params: list = [match]
    if kinds:
        sql += f" and m.kind in ({', '.join('?' for _ in kinds)})"
        params += list(kinds)
    sql += " order by b limit ?"
    params.append(n)
    return [Hit(r[0], i, -r[1]) for i, r in enumerate(db.execute(sql, params).fetchall())]
