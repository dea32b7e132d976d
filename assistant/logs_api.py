"""Past conversations, read back from the ledger: `reverie logs`, `chat/ask -c`, and the chat's
input history (arrow-up recalls what you typed in earlier chats).

Owns: listing conversations that have turns (a chat opened and closed without a word leaves an
empty row; it is not a conversation), showing one with its turns, finding the last one, and
pointing a ChatSession at it so the next turn continues it. Knows nothing about terminals.
The ledger is the only store: there is no separate history file, so `forget` and `wipe` reach
everything shown here.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ReverieError


def _ledger(home: Path):
    from memory.ledger import Ledger

    return Ledger(Path(home))


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise ReverieError(f"-n must be at least 1, got {limit}.")


def list_conversations(home: Path, limit: int = 20) -> list[dict]:
    """Newest first: id, created, model, turns, and the first thing the user said."""
    _check_limit(limit)
    ledger = _ledger(home)
    try:
        rows = ledger.db.execute(
            "select c.id, c.created, c.model, c.meta, count(t.id) as n_turns, max(t.created) as last, "
            "(select content from turns u where u.conversation_id = c.id and u.role = 'user' "
            " order by u.created, u.rowid limit 1) as first "
            "from conversations c join turns t on t.conversation_id = c.id "
            "group by c.id order by max(t.created) desc, c.created desc limit ?", [limit]).fetchall()
    finally:
        ledger.close()
    return [{"id": cid, "created": created, "last": last, "model": model,
             "backend": _meta(meta).get("backend"), "turns": n, "first": first or ""}
            for cid, created, model, meta, n, last, first in rows]


def _meta(meta) -> dict:
    try:
        d = json.loads(meta or "{}")
        return d if isinstance(d, dict) else {}
    except (TypeError, ValueError):
        return {}


def last_conversation_id(home: Path) -> str | None:
    rows = list_conversations(home, 1)
    return rows[0]["id"] if rows else None


def get_conversation(home: Path, conversation_id: str) -> dict:
    """One conversation with every turn, oldest first. `last` means the newest conversation."""
    conversation_id = (conversation_id or "").strip()
    if conversation_id == "last":
        conversation_id = last_conversation_id(home) or ""
        if not conversation_id:
            raise ReverieError("no conversations yet; start one with `reverie chat` or `reverie ask`.")
    ledger = _ledger(home)
    try:
        row = ledger.db.execute("select id, created, model, meta from conversations where id = ?",
                                [conversation_id]).fetchone()
        if row is None:
            raise ReverieError(f"unknown conversation {conversation_id!r}; `reverie logs` lists them.")
        turns = [{"id": t.id, "role": t.role, "content": t.content, "created": t.created}
                 for t in ledger.turns(conversation_id)]
    finally:
        ledger.close()
    cid, created, model, meta = row
    return {"id": cid, "created": created, "model": model, "backend": _meta(meta).get("backend"),
            "turns": turns}


def continue_last(session) -> dict | None:
    """Make `session` continue the newest conversation: its turns become the session's history
    and new turns are added to it. Returns that conversation (None when there is none yet)."""
    cid = last_conversation_id(session.home)
    if cid is None:
        return None
    conv = get_conversation(session.home, cid)
    session.history = [{"role": t["role"], "content": t["content"]} for t in conv["turns"]
                       if t["role"] in ("user", "assistant")]
    if session.record:
        session.conversation_id = cid
    return conv


def recent_inputs(home: Path, limit: int = 500) -> list[str]:
    """What the user typed most recently (oldest first), for the chat's arrow-up history."""
    if not (Path(home) / "ledger.db").exists():
        return []
    ledger = _ledger(home)
    try:
        rows = ledger.db.execute("select content from turns where role = 'user' "
                                 "order by created desc, rowid desc limit ?", [limit]).fetchall()
    finally:
        ledger.close()
    return [r[0] for r in reversed(rows) if "\n" not in r[0]]
