"""Pins the memory tables that migrations m002/m003 create: changing them needs a new migration."""
from memory.ledger import Ledger

EXPECTED = {
    # m007 rebuilt the table to allow the 'preference' kind (hence the quoted name)
    "memories": "CREATE TABLE \"memories\" ( seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL "
                "UNIQUE, kind TEXT NOT NULL CHECK (kind IN ('episodic', 'fact', 'preference')), text TEXT NOT "
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


def test_a_ledger_made_before_m006_upgrades_and_keeps_everything(tmp_path):
    """An old ledger (migrations up to m005, assistant answers stored as memories) opens with
    today's code: the answers leave the memories (they stay turns), the user's rows keep their
    seq (the FTS rowid), new rows never reuse one, and feedback gains its status."""
    import sqlite3

    import sqlite_utils
    from sqlite_utils import Migrations

    from memory import migrations as mig

    old = Migrations("reverie.ledger")
    for m in mig.migrations._migrations:
        if m.name <= "m005":
            old._migrations.append(m)
    conn = sqlite3.connect(str(tmp_path / "ledger.db"), isolation_level=None)
    db = sqlite_utils.Database(conn)
    old.apply(db)
    src = '{"role": "%s", "turn_id": "t%d", "conversation_id": "c"}'
    for seq, (role, text) in enumerate([("user", "I live in York."), ("assistant", "Nice city."),
                                        ("user", "My dog is Rex.")], start=1):
        db.execute("insert into memories (seq, id, kind, text, created, updated, source) values "
                   "(?, ?, 'episodic', ?, 1, 1, ?)", [seq, f"m_{seq}", text, src % (role, seq)])
        db.execute("insert into memories_fts(rowid, body) values (?, ?)", [seq, text])
    db.execute("insert into feedback (id, kind, conversation_id, turn_id, prompt, answer, "
               "correction, created) values ('fb_1', 'good', 'c', 't2', 'q', 'a', '', 1)")
    conn.close()

    ledger = Ledger(tmp_path)
    rows = ledger.db.execute("select seq, text from memories order by seq").fetchall()
    assert rows == [(1, "I live in York."), (3, "My dog is Rex.")]
    assert ledger.db.execute("select rowid from memories_fts order by rowid").fetchall() == [(1,), (3,)]
    assert ledger.db.execute("select status from feedback").fetchall() == [("active",)]
    ledger.db.execute("insert into memories (id, kind, text, created, updated) "
                      "values ('m_new', 'preference', 'Call me Sam.', 2, 2)")
    assert ledger.db.execute("select seq from memories where id = 'm_new'").fetchone()[0] == 4
