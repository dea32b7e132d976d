"""Forgetting in the ledger: every row that states a text, found, shown, then removed.

Owns: the plan of a forget (which memories, history rows, conversation turns and feedback state
a text, matched case-insensitively) and applying it in one transaction — tombstones (hashes, never
the text) for removed memories, the rows deleted, any other mention of the text in the ledger
replaced, the FTS index merged so no segment keeps the old tokens. Knows nothing about adapters'
files or the vector index: assistant.forget does those with the ids returned here.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field

from .errors import MemoryStoreError

MIN_NEEDLE = 3  # shorter texts ("a", "me") would match nearly everything
REDACTED = "[forgotten]"
# The columns that ARE the statements (forgotten by removing their rows, never edited: a fact
# kept by a forget-by-id may mention the same value). Every other text column — provenance such
# as a fact's source sentence, adapter metrics, reports, titles — has the forgotten text replaced.
_STATEMENTS = {("memories", "text"), ("memory_history", "text"), ("turns", "content"),
               ("feedback", "prompt"), ("feedback", "answer"), ("feedback", "correction")}
_SCRUB_SKIP = {"tombstones", "_sqlite_migrations"}


@dataclass
class ForgetPlan:
    needles: list[str]
    memories: list[dict] = field(default_factory=list)  # {id, kind, status, text}
    turns: list[dict] = field(default_factory=list)  # {id, conversation_id, role, content}
    feedback: list[dict] = field(default_factory=list)  # {id, kind, prompt}

    @property
    def empty(self) -> bool:
        return not (self.memories or self.turns or self.feedback)

    def counts(self) -> dict:
        return {"memories": len(self.memories), "turns": len(self.turns),
                "feedback": len(self.feedback)}

    def to_dict(self) -> dict:
        return asdict(self)


def check_needle(text: str) -> str:
    t = re.sub(r"\s+", " ", (text or "").strip())
    if len(t) < MIN_NEEDLE:
        raise MemoryStoreError(
            f"give at least {MIN_NEEDLE} characters to match (got {t!r}); to remove one memory "
            "by id use `reverie memory forget ID`.")
    return t


def _like(column: str) -> str:
    return f"instr(lower({column}), lower(?)) > 0"


def plan(db, needles: list[str], memory_ids: tuple[str, ...] = (), facts: bool = True) -> ForgetPlan:
    """What forgetting `needles` (and the memories `memory_ids`) removes. facts=False leaves other
    facts alone (forgetting one fact by id sweeps turns and feedback that state its value, but
    not a different fact that happens to mention it)."""
    p = ForgetPlan(list(needles))
    mem_ids: dict[str, dict] = {}

    def add_memories(sql: str, params: list) -> None:
        for mid, kind, status, text in db.execute(sql, params).fetchall():
            mem_ids.setdefault(mid, {"id": mid, "kind": kind, "status": status, "text": text})

    cols = "select id, kind, status, text from memories"
    for mid in memory_ids:
        add_memories(f"{cols} where id = ?", [mid])
    kinds = "" if facts else " and kind != 'fact'"
    for n in needles:
        add_memories(f"{cols} where {_like('text')}{kinds}", [n])
        add_memories(f"{cols} where id in (select memory_id from memory_history where "
                     f"{_like('text')}){kinds}", [n])
    turn_ids: dict[str, dict] = {}
    for n in needles:
        for tid, conv, role, content in db.execute(
                f"select id, conversation_id, role, content from turns where {_like('content')}",
                [n]).fetchall():
            turn_ids[tid] = {"id": tid, "conversation_id": conv, "role": role, "content": content}
    # the turns the chosen memories were said in, and the memories of those turns
    for m in list(mem_ids.values()):
        row = db.execute("select source from memories where id = ?", [m["id"]]).fetchone()
        src = json.loads(row[0] or "{}") if row else {}
        for tid in {src.get("turn_id"), (src.get("restated") or {}).get("turn_id")} - {None}:
            for tid2, conv, role, content in db.execute(
                    "select id, conversation_id, role, content from turns where id = ?", [tid]):
                turn_ids[tid2] = {"id": tid2, "conversation_id": conv, "role": role,
                                  "content": content}
    # the assistant's reply to a forgotten user turn answers the forgotten text, and often says
    # it back in its own words ("Marine biology, how exciting!"): it goes with the turn
    for t in [t for t in turn_ids.values() if t["role"] == "user"]:
        reply = db.execute(
            "select id, conversation_id, role, content from turns where conversation_id = ? and "
            "(created, rowid) > (select created, rowid from turns where id = ?) "
            "order by created, rowid limit 1", [t["conversation_id"], t["id"]]).fetchone()
        if reply and reply[2] == "assistant":
            turn_ids.setdefault(reply[0], {"id": reply[0], "conversation_id": reply[1],
                                           "role": reply[2], "content": reply[3]})
    if turn_ids:
        tids = list(turn_ids)
        marks = ",".join("?" * len(tids))
        add_memories(f"{cols} where kind = 'episodic' and json_extract(source, '$.turn_id') "
                     f"in ({marks})", tids)
    fb: dict[str, dict] = {}
    for n in needles:
        for fid, kind, prompt in db.execute(
                f"select id, kind, prompt from feedback where {_like('prompt')} or "
                f"{_like('answer')} or {_like('correction')}", [n, n, n]).fetchall():
            fb[fid] = {"id": fid, "kind": kind, "prompt": prompt}
    if turn_ids:
        tids = list(turn_ids)
        for fid, kind, prompt in db.execute(
                f"select id, kind, prompt from feedback where turn_id in ({','.join('?' * len(tids))})",
                tids).fetchall():
            fb[fid] = {"id": fid, "kind": kind, "prompt": prompt}
    p.memories = sorted(mem_ids.values(), key=lambda m: m["id"])
    p.turns = sorted(turn_ids.values(), key=lambda t: t["id"])
    p.feedback = sorted(fb.values(), key=lambda f: f["id"])
    return p


def apply(db, p: ForgetPlan, text_hash) -> None:
    """Remove everything in `p` in one transaction; tombstones keep hashes of the removed texts."""
    now = time.time()
    with db.atomic():
        for m in p.memories:
            texts = {m["text"]} | {r[0] for r in db.execute(
                "select text from memory_history where memory_id = ?", [m["id"]]).fetchall()}
            for t in texts:
                db.execute("insert or ignore into tombstones values (?, ?, ?, ?)",
                           [m["id"], text_hash(t), m["kind"], now])
            db.execute("delete from memories_fts where rowid = (select seq from memories where id = ?)",
                       [m["id"]])
            db.execute("delete from memory_history where memory_id = ?", [m["id"]])
            db.execute("delete from memories where id = ?", [m["id"]])
        for t in p.turns:
            db.execute("delete from turns where id = ?", [t["id"]])
        for f in p.feedback:
            db.execute("delete from feedback where id = ?", [f["id"]])
        scrub_ledger(db, p.needles)
    # FTS5 keeps deleted tokens in old segments until they are merged: merge them all now.
    db.execute("insert into memories_fts(memories_fts) values ('optimize')")


_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def decollide(text: str, needle: str) -> str:
    """Numbers that merely contain a forgotten number (a timestamp 1796158301.2, a loss 0.58301
    when "5830" was forgotten) are not mentions of it: nudge the last digit the two share until
    they no longer contain it, so a byte search finds only real mentions (which are then removed).
    Identifiers are left alone (ours hold no digits). A non-numeric needle changes nothing."""
    if not needle.isdigit() or needle not in text:
        return text

    def nudge(m: re.Match) -> str:
        num = m.group(0)
        if num == needle or needle not in num:
            return num
        digits = list(num)
        for _ in range(100):
            at = "".join(digits).find(needle)
            if at < 0:
                break
            i = at + len(needle) - 1
            digits[i] = str((int(digits[i]) + 1) % 10)
        return "".join(digits)

    return _NUMBER.sub(nudge, text)


def drop_mentions(text: str, needles: list[str]) -> str:
    """A JSON document (adapter metrics, a report) without the items that mention `needles`:
    every list item — an example with its question, expected answer and the model's answers, a
    line of a table — that mentions one anywhere goes whole, since its other fields say the same
    thing in other words. Text that is not a JSON object or list is returned unchanged."""
    try:
        doc = json.loads(text)
    except (ValueError, TypeError):
        return text
    if not isinstance(doc, (dict, list)):
        return text
    low = [n.lower() for n in needles if n]

    def mentions(x) -> bool:
        return any(n in json.dumps(x, ensure_ascii=False).lower() for n in low)

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x if not (isinstance(v, (dict, list, str)) and mentions(v))]
        return x

    new = walk(doc)
    if new == doc:
        return text
    return json.dumps(new, ensure_ascii=False, indent=2 if "\n" in text.strip() else None)


def scrub_ledger(db, needles: list[str]) -> int:
    """Replace every remaining mention of `needles` in other ledger tables' text columns (adapter
    metrics, sleep summaries, conversation titles); returns the number of cells changed."""
    pats = [re.compile(re.escape(n), re.IGNORECASE) for n in needles]
    changed = 0
    for (table,) in db.execute("select name from sqlite_master where type = 'table'").fetchall():
        if table.startswith(("memories_fts", "sqlite_")) or table in _SCRUB_SKIP:
            continue
        cols = [r[1] for r in db.execute(f"pragma table_info([{table}])").fetchall()
                if (r[2] or "").upper() in ("TEXT", "")]
        for col in cols:
            for n in needles:
                rows = db.execute(f"select rowid, [{col}] from [{table}] where "
                                  f"instr(lower([{col}]), lower(?)) > 0", [n]).fetchall()
                for rowid, val in rows:
                    if not isinstance(val, str):
                        continue
                    new = val
                    for m in needles:
                        new = decollide(new, m)
                    if table not in _SCRUB_SKIP and (table, col) not in _STATEMENTS:
                        new = drop_mentions(new, needles)
                        for pat in pats:
                            new = pat.sub(REDACTED, new)
                    if new != val:
                        db.execute(f"update [{table}] set [{col}] = ? where rowid = ?", [new, rowid])
                        changed += 1
    return changed
