"""Pins the memory tables that migrations m002/m003 create: changing them needs a new migration."""
from memory.ledger import Ledger

EXPECTED = {
    "memories": "CREATE TABLE memories ( seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
                "UNIQUE, kind TEXT NOT NULL CHECK (kind IN ('episodic', 'fact')), text TEXT NOT "
                "NULL, subject TEXT, status TEXT NOT NULL DEFAULT 'active'   CHECK (status IN "
                "('active', 'superseded', 'forgotten')), created REAL NOT NULL, updated REAL NOT "
                "NULL, source TEXT NOT NULL DEFAULT '{}')",
    "memory_history": "CREATE TABLE memory_history ( id INTEGER PRIMARY KEY AUTOINCREMENT, "
                      "memory_id TEXT NOT NULL, text TEXT NOT NULL, subject TEXT, status TEXT NOT "
                      "NULL, changed REAL NOT NULL, reason TEXT NOT NULL)",
    "tombstones": "CREATE TABLE tombstones ( memory_id TEXT NOT NULL, text_hash TEXT NOT NULL, "
                  "kind TEXT NOT NULL, forgotten REAL NOT NULL, PRIMARY KEY (memory_id, text_hash))",
    "memories_fts": "CREATE VIRTUAL TABLE memories_fts USING fts5(body, tokenize = 'porter "
                    "unicode61 remove_diacritics 2')",
    "idx_memories_kind_status": "CREATE INDEX idx_memories_kind_status ON memories (kind, status)",
    "idx_memories_subject": "CREATE INDEX idx_memories_subject ON memories (subject, status)",
    "idx_memory_history_memory": "CREATE INDEX idx_memory_history_memory ON memory_history "
                                 "(memory_id, id)",
    "idx_tombstones_hash": "CREATE INDEX idx_tombstones_hash ON tombstones (text_hash)",
    "idx_memories_conversation": "CREATE INDEX idx_memories_conversation ON memories "
                                 "(json_extract(source, '$.conversation_id'), seq) "
                                 "WHERE kind = 'episodic' AND status = 'active'",
}


def test_memory_schema_is_pinned(tmp_path):
    ledger = Ledger(tmp_path)
    rows = {r[0]: r[1] for r in ledger.db.execute(
        "select name, sql from sqlite_master where sql is not null and (name like 'memor%' or "
        "name like 'tombstone%' or name like 'idx_memor%' or name like 'idx_tombstone%')")}
    rows = {k: v for k, v in rows.items() if not k.startswith("memories_fts_")}  # FTS shadow tables
    assert rows == EXPECTED
    applied = [r[0] for r in ledger.db.execute("select name from _sqlite_migrations")]
    assert {"m002_create_memories", "m003_create_memories_fts"} <= set(applied)


def test_migrations_are_idempotent(tmp_path):
    Ledger(tmp_path).close()
    ledger = Ledger(tmp_path)  # re-opening must not re-run or fail
    assert ledger.db["memories"].count == 0
