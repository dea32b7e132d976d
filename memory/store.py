"""MemoryStore: the memory facade over the ledger (truth) and the derived indexes.

Owns: writing memories (facts with add/update/supersede, episodic turns, LoCoMo imports),
editing and forgetting (history rows, tombstones), export/import, reindex and recall.
Every ledger change happens in one transaction; the chromadb index is updated after commit,
and `reindex()` rebuilds it if a crash ever leaves it behind.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from common.files import atomic_write_text

from . import facts as factrules
from . import hygiene
from . import io as memio
from . import locomo
from .errors import MemoryStoreError
from .index import VectorIndex, fts_search, query_terms
from .ledger import Ledger
from . import query as query_mod
from .recall import (MODES, RecallOptions, Recalled, diversify, focus, fuse, fuse_scores,
                     neighbour_support, pack, recency_boost)

# Cosine above this between two facts means "the same fact, reworded": update, don't add.
DUPLICATE_COSINE = 0.92
# Added to a fact's fused score in hybrid recall: a fact is what the user told in its clean,
# current form, so at equal relevance it comes before the chatter around it (a third of a
# first-place RRF score: a clearly better-ranked turn still wins).
FACT_PRIOR = 0.3 / 11
# Recall's tuned weights (bench/recall_ablation.py: each on/off, cross-validated by conversation).
DEFAULT_OPTIONS = RecallOptions(fusion="score", speaker_focus=2.0, strip_speaker_names=True,
                                strip_names_vector=True, date_focus=1.0, neighbour_expand=True,
                                forward_share=0.6, question_damp=0.5)
# What each index's text carries besides the memory's words (index_text): "speaker", "date".
FTS_FORM: tuple[str, ...] = ("speaker", "date")
VECTOR_FORM: tuple[str, ...] = ("speaker", "sentences")
# The forms an index is taken to have when no home/INDEX_FORM_FILE says (built before it existed).
LEGACY_INDEX_FORM = {"fts": ["speaker"], "vector": ["speaker"]}
INDEX_FORM_FILE = "index-form.json"
Progress = Callable[[int], None] | None


@dataclass
class Memory:
    id: str
    kind: str
    text: str
    subject: str | None
    status: str
    created: float
    updated: float
    source: dict

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ActiveFact:
    """What the nightly trainer needs of a fact, and nothing more."""
    id: str
    text: str
    subject: str | None
    created: float
    updated: float = 0.0  # a restatement changes the text in place: new data for the trainer


def new_memory_id() -> str:
    from .ledger import random_token

    return f"m_{random_token()}"


def text_hash(text: str) -> str:
    """Hash of a text, normalised so whitespace and case changes still match a tombstone."""
    norm = re.sub(r"\s+", " ", text.strip().lower())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def index_text(text: str, source: dict, form: tuple[str, ...] = ("speaker",)) -> str:
    """The text an index holds for a memory: its words, and as `form` says, who said it and
    the date of the session it was said in."""
    # Who said it is half the meaning of a conversation turn ("What did Caroline research?").
    speaker = source.get("speaker") if "speaker" in form else None
    body = f"{speaker}: {text}" if speaker else text
    when = _session_date(source) if "date" in form else None
    # The session's date ("8 May 2023") lets "what did Gina find on 1 February" match by words.
    return f"({query_mod.date_words(when)}) {body}" if when else body


def _session_date(source: dict):
    from datetime import datetime

    stamp = locomo.parse_date(str(source.get("session_time") or ""))
    return datetime.fromtimestamp(stamp) if stamp else None


def _vector_rows(memories: list[Memory], form: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """chromadb entries (id, text, metadata) for memories: one per memory, and with "sentences"
    in the form one more per sentence of a long conversation turn ("<id>#<j>"; search keeps
    each memory's best entry). Only what a search filters on goes in the metadata: chromadb
    keeps no text and no numbers of ours.

    "context" (measured by bench/recall_ablation.py, not in VECTOR_FORM): one more entry per
    turn, "<id>#c", the turn after the one before it in its session ("what are your plans?" ->
    "researching adoption agencies"). Only turns whose previous turn is in the same batch (an
    import) get one, and forgetting a turn would have to re-embed the next turn's entry: both
    are still to build before it could ship."""
    rows = []
    prev = None
    for m in memories:
        rows.append((m.id, index_text(m.text, m.source, form), {"kind": m.kind}))
        if "sentences" in form and m.kind == "episodic":
            rows += [(f"{m.id}#{j}", index_text(part, m.source, form),
                      {"kind": m.kind, "memory": m.id})
                     for j, part in enumerate(query_mod.sentences(m.text), start=1)]
        if "context" in form and m.kind == "episodic":
            same = prev is not None and all(prev.source.get(f) == m.source.get(f) and
                                            m.source.get(f) is not None
                                            for f in ("conversation_id", "session"))
            if same:
                rows.append((f"{m.id}#c", index_text(prev.text, prev.source, ("speaker",)) + " "
                             + index_text(m.text, m.source, ("speaker",)),
                             {"kind": m.kind, "memory": m.id}))
            prev = m
    return rows


def _replies(turn: dict | None, after: dict | None) -> bool:
    """Whether `after` is another speaker answering `turn` (a chat's stored turns are all the
    user's: the assistant's answers in between are not memories)."""
    if not turn or not after:
        return False
    a, b = _source(turn).get("speaker"), _source(after).get("speaker")
    return bool(a and b and a != b)


def _source(row: dict) -> dict:
    """A ledger row's source, parsed once per row and kept on it (recall reads it for
    every candidate several times: speaker, date, reply, result)."""
    src = row.get("_src")
    if src is None:
        src = row["_src"] = json.loads(row["source"] or "{}")
    return src


def _session_of(item: Recalled):
    s = item.source
    return (s.get("conversation_id"), s["session"]) if s.get("session") is not None else None


def _said_on(row: dict):
    """When a memory was said: its conversation session's date, else its creation time."""
    from datetime import datetime

    return _session_date(_source(row)) or datetime.fromtimestamp(row["created"])


def _row_to_memory(row: dict) -> Memory:
    return Memory(row["id"], row["kind"], row["text"], row["subject"], row["status"],
                  row["created"], row["updated"], json.loads(row["source"] or "{}"))


class MemoryStore:
    """Memories of one data directory. Construction is cheap; models load on first use."""

    def __init__(self, home: Path, ledger: Ledger | None = None):
        self.home = Path(home)
        self.ledger = ledger or Ledger(self.home)
        self.db = self.ledger.db
        self.vectors = VectorIndex(self.home)
        self.last_timings: dict[str, float] = {}  # ms per stage of the latest recall
        self._deferred: list | None = None  # vector writes waiting for transaction() to commit
        self.options = DEFAULT_OPTIONS  # how recall weighs (bench/recall_ablation.py switches)
        self.fts_form, self.vector_form = FTS_FORM, VECTOR_FORM
        if not self._index_form_path().exists() and self.db.execute(
                "select 1 from memories limit 1").fetchone() is None:
            self._write_index_form()  # a new store's indexes start in today's form
        self._speaker_cache: tuple[int, set[str]] = (-1, set())
        self._fact_turns: tuple[tuple, dict[str, list[str]]] = ((), {})

    def close(self) -> None:
        self.ledger.close()

    @contextmanager
    def transaction(self):
        """Several writes as one ledger transaction (a chat turn: both turns, their episodic
        memories and the facts said in it), so a kill leaves all of them or none. Vector writes
        wait until the commit: the ledger is the truth, and `heal_index` catches chromadb up if
        a kill falls between the two. Nested use joins the outer transaction."""
        if self._deferred is not None:
            with self.db.atomic():
                yield self
            return
        self._deferred = []
        try:
            with self.db.atomic():
                yield self
            pending = self._deferred
        finally:
            self._deferred = None
        for write in pending:
            write()

    def _vectors_do(self, write) -> None:
        """Run a vector write now, or after the enclosing transaction() commits."""
        if self._deferred is not None:
            self._deferred.append(write)
        else:
            write()

    # --- reading ------------------------------------------------------------------------------
    def get(self, memory_id: str) -> Memory:
        row = self._row(memory_id)
        if row is None:
            hint = (" It was forgotten." if self.db.execute(
                "select 1 from tombstones where memory_id = ?", [memory_id]).fetchone() else "")
            raise MemoryStoreError(f"unknown memory id {memory_id!r}.{hint} "
                                   "List ids with `reverie memory ls` or `reverie memory search`.")
        return _row_to_memory(row)

    def list(self, kind: str | None = None, status: str | None = "active",
             limit: int | None = 50) -> list[Memory]:
        if kind is not None and kind not in memio.KINDS:
            raise MemoryStoreError(f"unknown kind {kind!r}; use one of: {', '.join(memio.KINDS)}.")
        where, params = [], []
        if kind:
            where.append("kind = ?"), params.append(kind)
        if status:
            where.append("status = ?"), params.append(status)
        sql = "select * from memories" + (" where " + " and ".join(where) if where else "")
        sql += " order by created desc, seq desc" + (f" limit {int(limit)}" if limit else "")
        return [_row_to_memory(r) for r in self._dicts(sql, params)]

    def history(self, memory_id: str) -> list[dict]:
        """Earlier versions, oldest first, then the current one (which must exist)."""
        current = self.get(memory_id)
        rows = self._dicts("select text, subject, status, changed, reason from memory_history "
                           "where memory_id = ? order by id", [memory_id])
        return rows + [{"text": current.text, "subject": current.subject,
                        "status": current.status, "changed": current.updated, "reason": "current"}]

    def active_facts(self) -> list[ActiveFact]:
        return [ActiveFact(m.id, m.text, m.subject, m.created, m.updated)
                for m in self.list(kind="fact", status="active", limit=None)]

    def tombstoned_hashes(self) -> set[str]:
        """Hashes (text_hash) of every forgotten text; the trainer drops matching examples."""
        return {r[0] for r in self.db.execute("select text_hash from tombstones").fetchall()}

    def tombstoned_ids(self) -> set[str]:
        """Ids of every forgotten memory; the trainer drops anything that names one."""
        return {r[0] for r in self.db.execute("select distinct memory_id from tombstones").fetchall()}

    def is_tombstoned(self, text: str) -> bool:
        return self.db.execute("select 1 from tombstones where text_hash = ?",
                               [text_hash(text)]).fetchone() is not None

    def stats(self) -> dict:
        by = {f"{k}/{s}": n for k, s, n in self.db.execute(
            "select kind, status, count(*) from memories group by kind, status").fetchall()}
        return {"memories": sum(by.values()), "by_kind_status": by,
                "history_rows": self.db.execute("select count(*) from memory_history").fetchone()[0],
                "tombstones": self.db.execute(
                    "select count(distinct memory_id) from tombstones").fetchone()[0],
                "fts_rows": self.db.execute("select count(*) from memories_fts").fetchone()[0],
                "vector_rows": self.vectors.count(), "ledger": str(self.ledger.path),
                "index": str(self.vectors.path)}

    # --- recall -------------------------------------------------------------------------------
    def recall(self, query: str, k: int = 8, token_budget: int | None = 400,
               count_tokens: Callable[[str], int] | None = None, kinds: list[str] | None = None,
               mode: str = "hybrid", candidates: int | None = None) -> list[Recalled]:
        """Top-k active memories for `query` that fit `token_budget` (None: no budget)."""
        query = (query or "").strip()
        if not query:
            raise MemoryStoreError("the query is empty; give some words to search for.")
        if mode not in MODES:
            raise MemoryStoreError(f"unknown recall mode {mode!r}; use one of {', '.join(MODES)}.")
        if k < 1:
            raise MemoryStoreError(f"k must be at least 1, got {k}.")
        for kind in kinds or []:
            if kind not in memio.KINDS:
                raise MemoryStoreError(f"unknown kind {kind!r}; use {', '.join(memio.KINDS)}.")
        opts = self.options
        n = candidates or max(opts.min_candidates, 4 * k)
        clock = _StageClock()
        # Speakers a question names stand in for its names only where the speaker focus applies.
        named = query_mod.named_speakers(query, self._speakers()) if mode == "hybrid" and (
            opts.speaker_focus or opts.strip_speaker_names) else set()
        text_query = query_mod.strip_names(query, named) if (
            opts.strip_speaker_names and named) else query
        queries = [(query, text_query, "")]
        if mode == "hybrid" and opts.sub_query_weight:
            queries += [(q, query_mod.strip_names(q, named) if opts.strip_speaker_names else q,
                         f":{i}") for i, q in enumerate(query_mod.sub_queries(query), start=1)]
        hits: dict[str, list] = {}
        weights: dict[str, float] = {}
        for q, tq, tag in queries:
            part = opts.sub_query_weight if tag else 1.0
            if mode in ("hybrid", "vector"):
                from .embedder import embed_query

                vq = tq if opts.strip_names_vector and tq else q
                if not tag:
                    self._vector_query = vq
                vec = embed_query(vq)
                clock.lap("embed")
                hits["vector" + tag] = self.vectors.search(vec, n, kinds)
                weights["vector" + tag] = part * opts.vector_weight
                extra = []
                if opts.raw_vector_weight and vq != q:
                    extra.append((":raw", q, opts.raw_vector_weight))
                if opts.statement_weight:
                    st = query_mod.as_statement(vq)
                    if st != vq:
                        extra.append((":statement", st, opts.statement_weight))
                if opts.voice_weight and named:
                    extra.append((":voice", query_mod.as_said_by(q, named), opts.voice_weight))
                for name, text, w in extra if mode == "hybrid" else ():
                    hits["vector" + tag + name] = self.vectors.search(embed_query(text), n, kinds)
                    weights["vector" + tag + name] = part * w * opts.vector_weight
                clock.lap("vector")
            if mode in ("hybrid", "bm25"):
                hits["bm25" + tag] = fts_search(self.db.conn, tq or q, n, kinds)
                weights["bm25" + tag] = part * opts.bm25_weight
                clock.lap("bm25")
        if mode == "hybrid" and opts.term_query_weight:
            terms = query_terms(text_query or query)
            if len(terms) >= 2:
                for t in terms:
                    hits["bm25:term:" + t] = fts_search(self.db.conn, t, n, kinds)
                    weights["bm25:term:" + t] = opts.term_query_weight / len(terms)
                clock.lap("bm25")
        scores = self._fuse(hits, weights, mode, opts)
        if mode == "hybrid" and opts.expand_weight and scores:
            self._expand(scores, hits, weights, n, kinds, opts, text_query or query, named)
            scores = self._fuse(hits, weights, mode, opts)
            clock.lap("expand")
        if mode == "hybrid" and opts.feedback_weight and scores:
            self._feedback(scores, hits, weights, n, kinds, opts)
            scores = self._fuse(hits, weights, mode, opts)
            clock.lap("feedback")
        rankings = {m: [h.id for h in hs] for m, hs in hits.items()}
        rows = {r["id"]: r for r in self._rows_by_id(list(scores))}
        clock.lap("rows")
        if mode == "hybrid":
            nb = self._neighbours(rows.values())
            if opts.forward_share is not None or opts.neighbour_expand:
                rows.update({r["id"]: r for r in self._rows_by_id(
                    list({n for pair in nb.values() for n in pair if n and n not in rows}))})
            scores = neighbour_support(scores, nb, share=opts.neighbour_share,
                                       forward=opts.forward_share, expand=opts.neighbour_expand,
                                       is_reply=lambda a, b: _replies(rows.get(a), rows.get(b)))
            if named and opts.speaker_focus:
                scores = focus(scores, lambda mid: mid in rows and _source(
                    rows[mid]).get("speaker") in named, opts.speaker_focus)
            spans = query_mod.dates_in(query) if opts.date_focus else []
            if spans:
                scores = focus(scores, lambda mid: mid in rows and any(
                    d.matches(_said_on(rows[mid])) for d in spans), opts.date_focus)
            if opts.question_damp:
                scores = focus(scores, lambda mid: mid in rows and query_mod.is_question(
                    rows[mid]["text"]), -opts.question_damp)
            scores = self._facts_over_turns(scores, rows)
            clock.lap("neighbours")
        now = time.time()
        final: dict[str, float] = {}
        for mid, score in scores.items():
            row = rows.get(mid)
            if row is None or row["status"] != "active":
                continue  # index entry behind the ledger; reindex repairs it
            if kinds and row["kind"] not in kinds:
                continue  # brought in by a neighbour or a fact's turn, but not asked for
            final[mid] = score + recency_boost(row["created"], now) if mode == "hybrid" else score
        order = sorted(final, key=lambda mid: (-final[mid], -rows[mid]["created"]))
        rank_of = {m: {mid: r for r, mid in enumerate(ids)} for m, ids in rankings.items()
                   if ":" not in m}

        def item(mid: str) -> Recalled:
            # Built only for what is returned (or tried against the budget): a recall scores
            # ~200 candidates and returns ~10.
            row = rows[mid]
            ranks = {m: r[mid] for m, r in rank_of.items() if mid in r}
            return Recalled(mid, row["text"], row["kind"], final[mid], dict(_source(row)),
                            row["created"], ranks)
        if mode == "hybrid" and opts.session_diversity:
            ranked = iter(diversify([item(m) for m in order[:max(3 * k, 30)]], _session_of,
                                    opts.session_diversity))
        else:
            ranked = (item(m) for m in order)  # lazily: pack may pass over long ones
        out = (list(itertools.islice(ranked, k)) if token_budget is None
               else pack(ranked, k, token_budget, count_tokens))
        clock.lap("fuse")
        self.last_timings = clock.ms
        return out

    def search(self, query: str, k: int = 10, kinds: list[str] | None = None) -> list[Recalled]:
        return self.recall(query, k=k, token_budget=None, kinds=kinds)

    # --- writing ------------------------------------------------------------------------------
    def add_fact(self, text: str, source: dict | None = None) -> tuple[Memory, str]:
        """Store a fact: "added", "updated" (near-duplicate) or "superseded" (same subject)."""
        text = (text or "").strip()
        if not text:
            raise MemoryStoreError("the fact is empty; say what to remember.")
        reason = hygiene.why_not_memorable(text, hygiene.MAX_FACT_CHARS)
        if reason:
            raise MemoryStoreError(f"not stored: {reason}. A fact is a sentence or two about "
                                   "you, e.g. \"My sister is called Ingrid.\"")
        subject, value = factrules.subject_of(text)
        return self._store_fact(text, subject, value, dict(source or {}))

    def observe_user_message(self, text: str, conversation_id: str,
                             turn_id: str) -> list[tuple[Memory, str]]:
        """Store every self-statement found in a user chat message as a fact, and every standing
        preference about how to answer as a preference."""
        from .preferences import extract_preferences

        out = []
        prefs = extract_preferences(text or "")
        said_as_pref = {p.said for p in prefs}
        for p in prefs:
            source = {"conversation_id": conversation_id, "turn_id": turn_id, "said": p.said,
                      "command": "chat", "time": time.time()}
            out.append(self.add_preference(p.text, p.subject, source))
        for f in factrules.extract_facts(text or ""):
            if f.said in said_as_pref and f.subject != "name":
                continue  # "give distances in km" is a habit, not a fact about the user
            source = {"conversation_id": conversation_id, "turn_id": turn_id, "said": f.said,
                      "command": "chat", "time": time.time()}
            out.append(self._store_fact(f.text, f.subject, f.value, source))
        return out

    def add_preference(self, text: str, subject: str, source: dict) -> tuple[Memory, str]:
        """Keep a standing preference: "added", "updated" (the same words again) or "superseded"
        (a newer preference for the same slot, e.g. another opening phrase, replaces it)."""
        rows = self._dicts("select * from memories where kind = 'preference' and status = "
                           "'active' and subject = ? order by created desc", [subject])
        if rows:
            old = _row_to_memory(rows[0])
            if text_hash(old.text) == text_hash(text):
                return self._refresh(old, text, source), "updated"
            return self._supersede(old, text, subject, source), "superseded"
        return self._insert_many([("preference", text, subject, source, None)])[0], "added"

    def active_preferences(self) -> list[Memory]:
        """Every standing preference, oldest first (the order they were asked for)."""
        return list(reversed(self.list(kind="preference", status="active", limit=None)))

    def record_turn(self, conversation_id: str, turn_id: str, role: str, text: str,
                    created: float | None = None, source: dict | None = None) -> Memory:
        """Remember one conversation turn as an episodic memory."""
        reason = hygiene.why_not_memorable(text)
        if reason:
            raise MemoryStoreError(f"the turn is not stored as a memory: {reason}.")
        src = {"conversation_id": conversation_id, "turn_id": turn_id, "role": role,
               "command": "chat", "time": time.time(), **(source or {})}
        return self._insert_many([("episodic", text.strip(), None, src, created)])[0]

    def edit(self, memory_id: str, text: str) -> Memory:
        text = (text or "").strip()
        if not text:
            raise MemoryStoreError("the new text is empty; to remove a memory use `forget`.")
        old = self.get(memory_id)
        if old.status != "active":
            raise MemoryStoreError(f"memory {memory_id} is {old.status}; only active memories "
                                   "can be edited (add a new one instead).")
        subject = old.subject
        if old.kind == "fact":
            subject = factrules.subject_of(text)[0] or old.subject
        now = time.time()
        with self.db.atomic():
            self._history(old, "edited", now)
            self.db.execute("update memories set text = ?, subject = ?, updated = ? where id = ?",
                            [text, subject, now, memory_id])
            self._fts_put(memory_id)
        new = self.get(memory_id)
        self._vector_put([new], replace=True)
        return new

    def forget(self, memory_id: str) -> Memory:
        """Remove one memory, its history and the turns it was said in from the ledger and the
        indexes; leave tombstones. (assistant.forget also reaches adapters and files.)"""
        from . import forgetting

        old = self.get(memory_id)
        p = forgetting.plan(self.db, [], (memory_id,), facts=False)
        forgetting.apply(self.db, p, text_hash)
        self.vectors.delete([m["id"] for m in p.memories])
        old.status = "forgotten"
        return old

    def reindex(self, progress: Progress = None) -> int:
        """Rebuild FTS and chromadb from the ledger's active memories; returns how many."""
        rows = self._dicts("select * from memories where status = 'active' order by seq")
        self._rebuild_fts(rows)
        self.vectors.clear()
        self._vector_put([_row_to_memory(r) for r in rows], progress)
        self._write_index_form()
        return len(rows)

    def _rebuild_fts(self, rows: list[dict]) -> None:
        with self.db.atomic():
            self.db.execute("delete from memories_fts")
            self.db.conn.executemany(
                "insert into memories_fts(rowid, body) values (?, ?)",
                [(r["seq"], index_text(r["text"], json.loads(r["source"]), self.fts_form))
                 for r in rows])

    def _index_form_path(self) -> Path:
        return self.home / INDEX_FORM_FILE

    def _index_form_on_disk(self) -> dict:
        try:
            return json.loads(self._index_form_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return dict(LEGACY_INDEX_FORM)  # built before the form was recorded

    def _write_index_form(self) -> None:
        atomic_write_text(self._index_form_path(), json.dumps(
            {"fts": list(self.fts_form), "vector": list(self.vector_form)}) + "\n")

    def heal_index(self) -> tuple[int, int]:
        """Bring the indexes back in line with the ledger: rebuilt when their text form changed
        since they were built (a new version of index_text), and chromadb caught up after a
        crash between the two writes (the ledger commits first, the vector write follows).
        Cheap when nothing is wrong: a small file read and one count each; ids are compared only
        when the counts differ. Returns (added, removed) vector entries."""
        form = self._index_form_on_disk()
        if form != {"fts": list(self.fts_form), "vector": list(self.vector_form)}:
            rows = self._dicts("select * from memories where status = 'active' order by seq")
            if form.get("fts") != list(self.fts_form):
                self._rebuild_fts(rows)
            changed = []
            if form.get("vector") != list(self.vector_form):
                # re-embed only the memories whose entries change (chat memories carry no
                # speaker or session date, so most of a user's store stays as it is)
                old = tuple(form.get("vector") or ())
                changed = [m for m in map(_row_to_memory, rows)
                           if _vector_rows([m], old) != _vector_rows([m], self.vector_form)]
                self._vector_put(changed, replace=True)
            self._write_index_form()
            if changed:
                return len(changed), 0
        if "sentences" in self.vector_form:  # a long turn has an entry per sentence as well
            active = sum(1 + (len(query_mod.sentences(t)) if k == "episodic" else 0)
                         for t, k in self.db.execute(
                             "select text, kind from memories where status = 'active'"))
        else:
            active = self.db.execute(
                "select count(*) from memories where status = 'active'").fetchone()[0]
        if self.vectors.count() == active:
            return 0, 0
        want = {r[0] for r in self.db.execute("select id from memories where status = 'active'")}
        have = self.vectors.ids()
        extra, missing = sorted(have - want), sorted(want - have)
        self.vectors.delete(extra)
        self._vector_put([_row_to_memory(r) for r in self._rows_by_id(missing)])
        return len(missing), len(extra)

    def export_jsonl(self, path: Path) -> int:
        """Write every active and superseded memory, with its history, as JSONL (0600)."""
        rows = self._dicts("select * from memories order by seq")
        hist: dict[str, list] = {}
        for h in self._dicts("select memory_id, text, subject, status, changed, reason "
                             "from memory_history order by id"):
            hist.setdefault(h.pop("memory_id"), []).append(h)
        lines = []
        for r in rows:
            rec = _row_to_memory(r).to_dict()
            rec["history"] = hist.get(r["id"], [])
            lines.append(memio.record_line(rec))
        atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
        return len(lines)

    def import_jsonl(self, path: Path, progress: Progress = None) -> int:
        """Import an export file all-or-nothing: validate every line, then one transaction.

        Returns how many memories were new (identical records already present are skipped)."""
        records = memio.read_records(path)
        fresh = []
        for lineno, rec in enumerate(records, start=1):
            existing = self._row(rec["id"])
            if existing is not None:
                mine = _row_to_memory(existing).to_dict()
                if any(mine[key] != rec[key] for key in mine):
                    raise MemoryStoreError(
                        f"record {lineno} ({rec['id']}): a different memory with this id exists; "
                        f"forget it first or drop that line. Nothing was imported.")
                continue
            if self.db.execute("select 1 from tombstones where memory_id = ?",
                               [rec["id"]]).fetchone():
                raise MemoryStoreError(
                    f"record {lineno} ({rec['id']}): this memory was forgotten; drop that line "
                    "to keep it forgotten. Nothing was imported.")
            fresh.append(rec)
        with self.db.atomic():
            for rec in fresh:
                self.db.execute("insert into memories (id, kind, text, subject, status, created, "
                                "updated, source) values (?, ?, ?, ?, ?, ?, ?, ?)",
                                [rec["id"], rec["kind"], rec["text"], rec["subject"],
                                 rec["status"], rec["created"], rec["updated"],
                                 json.dumps(rec["source"], ensure_ascii=False, sort_keys=True)])
                for h in rec["history"]:
                    self.db.execute("insert into memory_history (memory_id, text, subject, "
                                    "status, changed, reason) values (?, ?, ?, ?, ?, ?)",
                                    [rec["id"], h["text"], h["subject"], h["status"],
                                     h["changed"], h["reason"]])
                self._fts_put(rec["id"])
        self._vector_put([self.get(r["id"]) for r in fresh], progress)
        return len(fresh)

    def import_locomo(self, path: Path, progress: Progress = None) -> dict:
        """Import LoCoMo conversations as episodic memories (dia_id kept in the source)."""
        samples = locomo.load(path)
        return self.import_locomo_samples(samples, Path(path).name, progress)

    def import_locomo_samples(self, samples: list[dict], origin: str = "",
                              progress: Progress = None) -> dict:
        now = time.time()
        items, ids = [], []
        all_eps = [locomo.episodes(s, i, now) for i, s in enumerate(samples)]  # validate first
        for eps in all_eps:
            for ep in eps:
                # Deterministic ids make a repeated import a no-op instead of a duplicate.
                mid = "m_" + hashlib.sha1(f"{ep.conversation_id}/{ep.dia_id}".encode()).hexdigest()[:12]
                if mid in ids or self._row(mid) is not None:
                    continue
                ids.append(mid)
                items.append(("episodic", ep.text, None,
                              {"conversation_id": ep.conversation_id, "turn_id": ep.dia_id,
                               "dia_id": ep.dia_id, "speaker": ep.speaker, "session": ep.session,
                               "session_time": ep.session_time, "format": "locomo",
                               "file": origin, "command": "import-conversation", "time": now},
                              ep.created))
        self._insert_many(items, ids, progress)
        return {"conversations": len(all_eps), "turns": sum(len(e) for e in all_eps),
                "imported": len(items)}

    # --- internals ----------------------------------------------------------------------------
    def _dicts(self, sql: str, params=()) -> list[dict]:
        cur = self.db.execute(sql, list(params))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def _row(self, memory_id: str) -> dict | None:
        rows = self._dicts("select * from memories where id = ?", [memory_id])
        return rows[0] if rows else None

    @staticmethod
    def _fuse(hits, weights, mode, opts) -> dict[str, float]:
        if mode == "hybrid" and opts.fusion == "score":
            return fuse_scores({m: [(h.id, h.score) for h in hs] for m, hs in hits.items()},
                               weights, scale=1.0 / (opts.rrf_k + 1))
        rankings = {m: [h.id for h in hs] for m, hs in hits.items()}
        return fuse(rankings, weights if mode == "hybrid" else None, k=opts.rrf_k)

    def _feedback(self, scores, hits, weights, n, kinds, opts) -> None:
        """Add a Rocchio ranking: the query embedding moved towards the top fused hits."""
        import numpy as np

        from .embedder import embed_query

        top = sorted(scores, key=scores.get, reverse=True)[:3 * opts.feedback_docs]
        if opts.question_damp:  # a question turn says nothing the feedback could build on
            asks = {r["id"] for r in self._rows_by_id(top) if query_mod.is_question(r["text"])}
            top = [mid for mid in top if mid not in asks]
        top = top[:opts.feedback_docs]
        docs = [v for v in self.vectors.embeddings(top).values() if v is not None]
        if not docs:
            return
        q = np.asarray(embed_query(self._vector_query), dtype=np.float32)
        q = q + opts.feedback_beta * np.mean(np.asarray(docs, dtype=np.float32), axis=0)
        q /= np.linalg.norm(q) or 1.0
        hits["vector:feedback"] = self.vectors.search(q.tolist(), n, kinds)
        weights["vector:feedback"] = opts.feedback_weight * opts.vector_weight

    def _expand(self, scores, hits, weights, n, kinds, opts, text, named) -> None:
        """Add a BM25 ranking for the question plus the words particular to its top hits."""
        import math

        rows = {r["id"]: r["text"] for r in self._rows_by_id(list(scores))}
        asked = set(query_terms(text)) | {w for name in named for w in query_terms(name)}
        df: dict[str, int] = {}
        words_of = {mid: query_terms(t) for mid, t in rows.items()}
        for ws in words_of.values():
            for w in ws:
                df[w] = df.get(w, 0) + 1
        top = sorted(rows, key=lambda m: -scores.get(m, 0.0))[:opts.feedback_docs]
        weight: dict[str, float] = {}
        for mid in top:
            for w in words_of[mid]:
                if w not in asked and df[w] >= 2:
                    weight[w] = weight.get(w, 0.0) + math.log(len(rows) / df[w])
        extra = sorted(weight, key=lambda w: -weight[w])[:opts.expand_terms]
        if extra:
            hits["bm25:expand"] = fts_search(self.db.conn, text + " " + " ".join(extra), n, kinds)
            weights["bm25:expand"] = opts.expand_weight * opts.bm25_weight

    def _speakers(self) -> set[str]:
        """Every speaker name the episodic memories carry, cached until the next insert."""
        top = self.db.execute("select max(seq) from memories").fetchone()[0] or 0
        if self._speaker_cache[0] != top:
            names = {r[0] for r in self.db.execute(
                "select distinct json_extract(source, '$.speaker') from memories "
                "where kind = 'episodic'").fetchall() if r[0]}
            self._speaker_cache = (top, names)
        return self._speaker_cache[1]

    def _facts_by_turn(self) -> dict[str, list[str]]:
        """turn_id -> ids of the active facts drawn from that turn, cached while the active facts
        stay the same: reading it per recall parsed every fact's source (~6 ms at 100k
        memories). A fact's turn_id never changes once written, and every change to the set
        of active facts (a new, superseded or forgotten fact) moves their count or newest seq;
        both come from the (kind, status) index without reading a row."""
        key = self.db.execute("select count(*), max(seq) from memories where kind = 'fact' "
                              "and status = 'active'").fetchone()
        if self._fact_turns[0] != key:
            out: dict[str, list[str]] = {}
            for fid, tid in self.db.execute(
                    "select id, json_extract(source, '$.turn_id') from memories where kind = "
                    "'fact' and status = 'active' order by seq").fetchall():
                if tid:
                    out.setdefault(tid, []).append(fid)
            self._fact_turns = (key, out)
        return self._fact_turns[1]

    def _rows_by_id(self, ids: list[str]) -> list[dict]:
        out = []
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            out += self._dicts(f"select * from memories where id in ({','.join('?' * len(chunk))})",
                               chunk)
        return out

    def _neighbours(self, rows) -> dict[str, list[str]]:
        """The previous and next active episodic memory of the same conversation, for each row.

        One statement for all rows; each lookup is a seek in idx_memories_conversation."""
        cands = []
        for r in rows:
            if r["kind"] == "episodic":
                conv = _source(r).get("conversation_id")
                if conv is not None:
                    cands.append((r["id"], r["seq"], conv))
        out: dict[str, list[str]] = {}
        side = ("(select m.id from memories m where json_extract(m.source, '$.conversation_id')"
                " = c.conv and m.kind = 'episodic' and m.status = 'active' and m.seq {op} c.seq"
                " order by m.seq {order} limit 1)")
        for start in range(0, len(cands), 300):
            chunk = cands[start:start + 300]
            sql = (f"with c(id, seq, conv) as (values {', '.join(['(?, ?, ?)'] * len(chunk))}) "
                   f"select c.id, {side.format(op='<', order='desc')}, "
                   f"{side.format(op='>', order='asc')} from c")
            params = [v for cand in chunk for v in cand]
            for mid, before, after in self.db.conn.execute(sql, params).fetchall():
                out[mid] = [before, after]
        return out

    def _facts_over_turns(self, scores: dict[str, float], rows: dict[str, dict]) -> dict[str, float]:
        """A chat turn a fact was drawn from ranks just below that fact: the fact is the clean,
        current statement of it. A fact the shortlist missed is brought in by its turn; a
        fact always outranks an equally scored turn (FACT_PRIOR)."""
        out = dict(scores)
        turn_of = {}
        for mid, r in rows.items():
            if r["kind"] == "episodic" and r["status"] == "active":
                tid = _source(r).get("turn_id")
                if tid:
                    turn_of[tid] = mid
        facts_of = self._facts_by_turn() if turn_of else {}
        for tid in turn_of.keys() & facts_of.keys():
            for fid in facts_of[tid]:
                turn_score = out.get(turn_of[tid], 0.0)
                out[fid] = max(out.get(fid, 0.0), turn_score)
                if fid not in rows:
                    rows.update({r["id"]: r for r in self._rows_by_id([fid])})
        for mid in out:
            if mid in rows and rows[mid]["kind"] == "fact":
                out[mid] += FACT_PRIOR
        return out

    def _history(self, old: Memory, reason: str, when: float) -> None:
        self.db.execute("insert into memory_history (memory_id, text, subject, status, changed, "
                        "reason) values (?, ?, ?, ?, ?, ?)",
                        [old.id, old.text, old.subject, old.status, when, reason])

    def _fts_put(self, memory_id: str) -> None:
        row = self._row(memory_id)
        self.db.execute("delete from memories_fts where rowid = ?", [row["seq"]])
        if row["status"] == "active":
            self.db.execute("insert into memories_fts(rowid, body) values (?, ?)",
                            [row["seq"], index_text(row["text"], json.loads(row["source"]),
                                                       self.fts_form)])

    def _fts_drop(self, memory_id: str) -> None:
        self.db.execute("delete from memories_fts where rowid = "
                        "(select seq from memories where id = ?)", [memory_id])

    def _vector_put(self, memories: list[Memory], progress: Progress = None,
                    replace: bool = False) -> None:
        """Index memories in chromadb; `replace`: their old sentence entries go first (an edit
        may have fewer sentences, and an old sentence must not stay searchable)."""
        rows = _vector_rows([m for m in memories if m.status == "active"], self.vector_form)
        ids = [m.id for m in memories]

        def write():
            if replace:
                self.vectors.delete_parts(ids)
            self.vectors.add(rows, progress)
        self._vectors_do(write)

    def _insert_rows(self, items: list[tuple], ids: list[str] | None = None) -> list[Memory]:
        """Insert (kind, text, subject, source, created) rows; the caller holds a transaction."""
        now = time.time()
        memories = []
        for j, (kind, text, subject, source, created) in enumerate(items):
            m = Memory(ids[j] if ids else new_memory_id(), kind, text, subject, "active",
                       created or now, now, source)
            self.db.execute("insert into memories (id, kind, text, subject, status, created, "
                            "updated, source) values (?, ?, ?, ?, ?, ?, ?, ?)",
                            [m.id, m.kind, m.text, m.subject, m.status, m.created, m.updated,
                             json.dumps(m.source, ensure_ascii=False, sort_keys=True)])
            self._fts_put(m.id)
            memories.append(m)
        return memories

    def _insert_many(self, items: list[tuple], ids: list[str] | None = None,
                     progress: Progress = None) -> list[Memory]:
        with self.db.atomic():
            memories = self._insert_rows(items, ids)
        self._vector_put(memories, progress)
        return memories

    def _store_fact(self, text: str, subject: str | None, value: str | None,
                    source: dict) -> tuple[Memory, str]:
        source.setdefault("time", time.time())
        same_subject = None
        if subject:
            rows = self._dicts("select * from memories where kind = 'fact' and status = 'active' "
                               "and subject = ? order by created desc", [subject])
            same_subject = _row_to_memory(rows[0]) if rows else None
        if same_subject is not None:
            old_value = factrules.subject_of(same_subject.text)[1]
            if old_value is not None and old_value != value:
                return self._supersede(same_subject, text, subject, source), "superseded"
            return self._refresh(same_subject, text, source), "updated"
        from .embedder import embed

        near = self.vectors.similar(embed([text])[0], "fact")
        if near and near[1] >= DUPLICATE_COSINE:
            return self._refresh(self.get(near[0]), text, source), "updated"
        return self._insert_many([("fact", text, subject, source, None)])[0], "added"

    def _refresh(self, old: Memory, text: str, source: dict) -> Memory:
        """A restatement: keep the id, take the newer wording, remember the old one."""
        now = time.time()
        with self.db.atomic():
            if text != old.text:
                self._history(old, "restated", now)
            src = {**old.source, "restated": source}
            self.db.execute("update memories set text = ?, updated = ?, source = ? where id = ?",
                            [text, now, json.dumps(src, ensure_ascii=False, sort_keys=True), old.id])
            self._fts_put(old.id)
        new = self.get(old.id)
        self._vector_put([new], replace=True)
        return new

    def _supersede(self, old: Memory, text: str, subject: str, source: dict) -> Memory:
        now = time.time()
        with self.db.atomic():
            self._history(old, "superseded", now)
            self.db.execute("update memories set status = 'superseded', updated = ? where id = ?",
                            [now, old.id])
            self._fts_put(old.id)
            retired = self._retire_sources(old, now)
            new = self._insert_rows([(old.kind, text, subject, {**source, "supersedes": old.id},
                                      None)])[0]
        self._vectors_do(lambda: self.vectors.delete([old.id] + retired))
        self._vector_put([new])
        return new

    def _retire_sources(self, old: Memory, when: float) -> list[str]:
        """The user turns a superseded fact came from stop being recalled as current (they stay in
        the conversation history), and feedback that mentions the old value leaves training.
        Returns the episodic memory ids retired. The caller holds a transaction."""
        tids = [t for t in {old.source.get("turn_id"),
                            (old.source.get("restated") or {}).get("turn_id")} if t]
        retired = []
        for tid in tids:
            for (mid,) in self.db.execute(
                    "select id from memories where kind = 'episodic' and status = 'active' and "
                    "json_extract(source, '$.turn_id') = ?", [tid]).fetchall():
                self._history(self.get(mid), "superseded", when)
                self.db.execute("update memories set status = 'superseded', updated = ? "
                                "where id = ?", [when, mid])
                self._fts_put(mid)
                retired.append(mid)
        value = factrules.subject_of(old.text)[1]
        if value and len(value) >= 3:
            from .feedback import FeedbackLog

            FeedbackLog(self.ledger).retire_mentioning(value, f"superseded by a newer fact ({old.id})")
        return retired


class _StageClock:
    """Milliseconds spent per recall stage (the scale benchmark reads store.last_timings)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        t = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (t - self._t) * 1000
        self._t = t
