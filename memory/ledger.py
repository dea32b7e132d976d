"""The SQLite ledger: the source of truth for everything personal.

Owns: the database file, its migrations (memory/migrations.py), WAL mode and private permissions,
and the conversation/turn tables. Other modules of memory/ add their own tables through migrations.
Does not know about models or adapters' files — only rows describing them.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .migrations import migrations

DB_NAME = "ledger.db"


class LedgerError(Exception):
    """A user-facing ledger error (unknown id, bad input); the message says how to fix it."""


def now() -> float:
    return time.time()


# Ids are drawn from consonants only: no digits and no vowels, so no id can spell a word or a
# number a user might later ask to forget ("5830" inside a hex id made a false leak).
ID_ALPHABET = "bcdfghjkmnpqrstvwxz"


def random_token(n: int = 12) -> str:
    import secrets

    return "".join(secrets.choice(ID_ALPHABET) for _ in range(n))


def new_id(prefix: str) -> str:
    return f"{prefix}_{random_token()}"


@dataclass
class Turn:
    id: str
    conversation_id: str
    role: str
    content: str
    created: float
    meta: str = "{}"


class _Database(sqlite_utils.Database):
    """sqlite-utils' Database whose top-level transactions start with BEGIN IMMEDIATE.

    A deferred BEGIN reads first (sqlite-utils looks the table up before an insert) and then
    asks for the write lock; if another process committed in between, SQLite fails the upgrade
    at once with "database is locked" instead of waiting (busy_timeout does not apply to a
    stale snapshot). Two chats under load while adapters were promoted hit it in CI."""

    @contextlib.contextmanager
    def atomic(self):
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise


class Ledger:
    """Opens (creating and migrating) the ledger in `home`. Cheap to construct."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = self.home / DB_NAME
        fresh = not self.path.exists()
        conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                               check_same_thread=False)
        if fresh:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA busy_timeout = 30000")
        # Deleted rows are overwritten with zeros, so a forgotten text does not linger in free
        # pages of the file (the WAL is truncated by assistant.forget after a forget).
        conn.execute("PRAGMA secure_delete = ON")
        self.db = _Database(conn)
        self.db.enable_wal()
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrations.apply(self.db)

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- conversations ----------------------------------------------------------------------
    def new_conversation(self, title: str = "", model: str = "", meta: str = "{}") -> str:
        cid = new_id("conv")
        with self.db.atomic():
            self.db["conversations"].insert(
                {"id": cid, "title": title, "model": model, "created": now(), "meta": meta})
        return cid

    def add_turn(self, conversation_id: str, role: str, content: str, meta: str = "{}") -> Turn:
        if role not in ("system", "user", "assistant"):
            raise LedgerError(f"unknown role {role!r}")
        turn = Turn(new_id("turn"), conversation_id, role, content, now(), meta)
        with self.db.atomic():
            if not self.db["conversations"].count_where("id = ?", [conversation_id]):
                raise LedgerError(f"unknown conversation {conversation_id!r}")
            self.db["turns"].insert(turn.__dict__)
        return turn

    def turns(self, conversation_id: str) -> list[Turn]:
        rows = self.db["turns"].rows_where("conversation_id = ?", [conversation_id],
                                           order_by="created, rowid")
        return [Turn(**r) for r in rows]

    def conversations(self, limit: int = 50) -> list[dict]:
        return list(self.db.query(
            "select c.*, (select count(*) from turns t where t.conversation_id = c.id) as n_turns "
            "from conversations c order by created desc limit ?", [limit]))

    def get_conversation(self, conversation_id: str) -> dict:
        try:
            return self.db["conversations"].get(conversation_id)
        except sqlite_utils.db.NotFoundError:
            raise LedgerError(
                f"unknown conversation {conversation_id!r}; list them with `reverie history`.") from None
