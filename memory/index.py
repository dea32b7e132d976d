"""The derived search indexes: the chromadb vector collection and the SQLite FTS5 table.

Owns: opening chromadb (persistent, in home/"chroma", telemetry off, our own embedding
function), adding/removing index entries in batches, and the two single-method searches
(vector top-N by cosine, BM25 top-N over FTS5). Only active memories are indexed; both indexes
can be rebuilt from the ledger at any time, so nothing here is the source of truth.
"""
from __future__ import annotations

import os
import re
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


class VectorIndex:
    """The chromadb collection for one data directory."""

    def __init__(self, home: Path):
        self.path = Path(home) / "chroma"
        self._collection = None
        self._client = None

    @property
    def collection(self):
        if self._collection is None:
            os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
            import chromadb
            from chromadb.config import Settings

            from .embedder import chroma_embedding_function

            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._client = chromadb.PersistentClient(
                path=str(self.path), settings=Settings(anonymized_telemetry=False,
                                                       allow_reset=True))
            self._collection = self._client.get_or_create_collection(
                COLLECTION, embedding_function=chroma_embedding_function(),
                configuration={"hnsw": {"space": "cosine"}})
        return self._collection

    def add(self, items: list[tuple[str, str, dict]], progress=None) -> None:
        """Upsert (id, indexed text, metadata) in batches; progress(n_done) after each batch."""
        for start in range(0, len(items), ADD_BATCH):
            batch = items[start:start + ADD_BATCH]
            self.collection.upsert(ids=[i for i, _, _ in batch], documents=[t for _, t, _ in batch],
                                   metadatas=[m for _, _, m in batch])
            if progress:
                progress(len(batch))

    def add_embedded(self, ids: list[str], embeddings, documents: list[str], metadatas: list[dict]):
        """Upsert precomputed embeddings (the scale benchmark; avoids re-embedding)."""
        for start in range(0, len(ids), 4096):
            sl = slice(start, start + 4096)
            self.collection.upsert(ids=ids[sl], embeddings=embeddings[sl], documents=documents[sl],
                                   metadatas=metadatas[sl])

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.collection.delete(ids=list(ids))

    def ids(self) -> set[str]:
        return set(self.collection.get(include=[])["ids"])

    def count(self) -> int:
        return self.collection.count()

    def clear(self) -> None:
        self.collection  # noqa: B018 - opens the client
        self._client.delete_collection(COLLECTION)
        self._collection = None

    def search(self, query_embedding, n: int, kinds: list[str] | None = None) -> list[Hit]:
        # Only ids and distances: documents and metadata stay in chromadb (the ledger has them).
        # No count() first: chromadb returns fewer than n_results (or none) by itself, and the
        # count was a second round trip costing ~5 ms a query at 10k memories.
        where = {"kind": {"$in": list(kinds)}} if kinds else None
        try:
            res = self.collection.query(query_embeddings=[query_embedding], n_results=n,
                                        where=where, include=["distances"])
        except Exception:  # older chromadb: n_results above the collection size is an error
            total = self.count()
            if total == 0:
                return []
            res = self.collection.query(query_embeddings=[query_embedding],
                                        n_results=min(n, total), where=where,
                                        include=["distances"])
        return [Hit(i, r, 1.0 - d) for r, (i, d) in enumerate(zip(res["ids"][0],
                                                                   res["distances"][0]))]

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
