"""A ledger written by an older reverie opens with today's code: every row it held survives (bar
what a migration retires on purpose), and the schema it ends with is exactly today's pinned one.

For each point in the migration history, a ledger is built with only the migrations shipped by
then and filled the way that version wrote its rows (plain SQL against the old tables), then
opened with `memory.ledger.Ledger`. The memory tables are pinned in test_memory_schema.py; the
rest of the ledger is pinned here.
"""
import json
import sqlite3

import pytest
import sqlite_utils
from sqlite_utils import Migrations

from memory import migrations as mig
from memory.adapters_ledger import AdapterLedger
from memory.feedback import FeedbackLog
from memory.ledger import DB_NAME, Ledger
from test_memory_schema import EXPECTED as MEMORY_SCHEMA

ALL = [m.name for m in mig.migrations._migrations]

# The tables outside memory/ (conversations, feedback, adapter versions, nightly runs) as today's
# migrations leave them. Changing one needs a new migration and a new line here.
LEDGER_SCHEMA = {
    "conversations": 'CREATE TABLE "conversations" ( "id" TEXT PRIMARY KEY, "title" TEXT, '
                     '"model" TEXT, "created" REAL, "meta" TEXT )',
    "turns": 'CREATE TABLE "turns" ( "id" TEXT PRIMARY KEY, "conversation_id" TEXT REFERENCES '
             '"conversations"("id"), "role" TEXT, "content" TEXT, "created" REAL, "meta" TEXT )',
    "idx_turns_conversation_id_created": 'CREATE INDEX "idx_turns_conversation_id_created" ON '
                                         '"turns" ("conversation_id", "created")',
    "feedback": 'CREATE TABLE "feedback" ( "id" TEXT PRIMARY KEY, "kind" TEXT, "conversation_id" '
                'TEXT, "turn_id" TEXT, "prompt" TEXT, "answer" TEXT, "correction" TEXT, "created" '
                "REAL , status TEXT NOT NULL DEFAULT 'active', reason TEXT NOT NULL DEFAULT '')",
    "idx_feedback_created": 'CREATE INDEX "idx_feedback_created" ON "feedback" ("created")',
    "adapters": 'CREATE TABLE "adapters" ( "id" TEXT PRIMARY KEY, "parent" TEXT, "status" TEXT, '
                '"strategy" TEXT, "trainer" TEXT, "model" TEXT, "base_sha256" TEXT, '
                '"dataset_hash" TEXT, "fact_ids" TEXT, "feedback_ids" TEXT, "path" TEXT, "gguf" '
                'TEXT, "metrics" TEXT, "gate" TEXT, "created" REAL, "promoted" REAL , served TEXT NOT NULL DEFAULT \'\')',
    "sleep_runs": 'CREATE TABLE "sleep_runs" ( "id" TEXT PRIMARY KEY, "started" REAL, "finished" '
                  'REAL, "status" TEXT, "strategy" TEXT, "adapter_id" TEXT, "report_path" TEXT, '
                  '"summary" TEXT )',
}


def _schema(conn) -> dict:
    """name -> SQL of every table and index, whitespace folded (SQLite keeps it as written)."""
    return {name: " ".join(sql.split()) for name, sql in conn.execute(
        "select name, sql from sqlite_master where sql is not null")}


def _pinned_part(schema: dict) -> dict:
    skip = ("memories_fts_", "_sqlite_migrations", "idx__sqlite_migrations", "sqlite_sequence")
    return {k: v for k, v in schema.items() if not k.startswith(skip)}


def _old_ledger(path, upto: int) -> dict:
    """A ledger with only the first `upto` migrations, filled as that version would have.
    Returns the rows it wrote, by table."""
    old = Migrations("reverie.ledger")
    old._migrations.extend(mig.migrations._migrations[:upto])
    conn = sqlite3.connect(str(path), isolation_level=None)
    db = sqlite_utils.Database(conn)
    old.apply(db)
    tables = set(db.table_names())
    wrote: dict[str, list] = {}

    def put(table, row):
        cols = ", ".join(row)
        db.execute(f"insert into {table} ({cols}) values ({', '.join('?' * len(row))})",
                   list(row.values()))
        wrote.setdefault(table, []).append(row)

    put("conversations", {"id": "conv_old", "title": "", "model": "smollm2-135m", "created": 1.0,
                          "meta": '{"backend": "llama.cpp"}'})
    for i, (role, text) in enumerate([("user", "I live in York."), ("assistant", "Nice city."),
                                      ("user", "My dog is called Rex.")], start=1):
        put("turns", {"id": f"turn_{i}", "conversation_id": "conv_old", "role": role,
                      "content": text, "created": float(i), "meta": "{}"})
    if "memories" in tables:
        src = lambda role, i: json.dumps({"role": role, "turn_id": f"turn_{i}",  # noqa: E731
                                          "conversation_id": "conv_old"})
        rows = [(1, "episodic", "I live in York.", None, src("user", 1)),
                (3, "episodic", "My dog is called Rex.", None, src("user", 3)),
                (4, "fact", "The user lives in York.", "lives in", json.dumps({"turn_id": "turn_1"}))]
        if upto < ALL.index("m006_retire_answers_and_feedback") + 1:
            # before m006 the assistant's answers were memories too
            rows.insert(1, (2, "episodic", "Nice city.", None, src("assistant", 2)))
        for seq, kind, text, subject, source in rows:
            put("memories", {"seq": seq, "id": f"m_{seq}", "kind": kind, "text": text,
                             "subject": subject, "status": "active", "created": float(seq),
                             "updated": float(seq), "source": source})
            if "memories_fts" in tables:
                db.execute("insert into memories_fts(rowid, body) values (?, ?)", [seq, text])
        put("memory_history", {"id": 1, "memory_id": "m_4", "text": "The user lives in Leeds.",
                               "subject": "lives in", "status": "superseded", "changed": 4.5,
                               "reason": "updated"})
        put("tombstones", {"memory_id": "m_9", "text_hash": "ab" * 32, "kind": "fact",
                           "forgotten": 5.0})
    if "feedback" in tables:
        put("feedback", {"id": "fb_1", "kind": "fix", "conversation_id": "conv_old",
                         "turn_id": "turn_2", "prompt": "Where do I live?", "answer": "Paris",
                         "correction": "You live in York.", "created": 6.0})
        put("adapters", {"id": "v001-oldold", "parent": None, "status": "promoted",
                         "strategy": "retrain", "trainer": "peft", "model": "smollm2-135m",
                         "base_sha256": "cd" * 32, "dataset_hash": "ef" * 8,
                         "fact_ids": '["m_4"]', "feedback_ids": '["fb_1"]', "path": "/a/v001",
                         "gguf": "/a/v001/adapter.gguf", "metrics": '{"personal_adapted": 0.75}',
                         "gate": '{"passed": true}', "created": 7.0, "promoted": 7.5})
        put("sleep_runs", {"id": "run_1", "started": 7.0, "finished": 8.0, "status": "done",
                           "strategy": "retrain", "adapter_id": "v001-oldold",
                           "report_path": "/r/report.md", "summary": "promoted v001-oldold"})
    conn.close()
    return wrote


@pytest.mark.parametrize("upto", range(1, len(ALL)), ids=lambda n: f"after-{ALL[n - 1][:4]}")
def test_an_old_ledger_upgrades_to_todays_schema_and_keeps_its_rows(tmp_path, upto):
    old_home, new_home = tmp_path / "old", tmp_path / "new"
    old_home.mkdir()
    wrote = _old_ledger(old_home / DB_NAME, upto)

    fresh = Ledger(new_home)
    want = _schema(fresh.db.conn)
    fresh.close()
    with Ledger(old_home) as ledger:
        conn = ledger.db.conn
        got = _schema(conn)
        assert got == want  # every table, index and FTS shadow table, as a new ledger has them
        assert _pinned_part(got) == {k: " ".join(v.split())
                                     for k, v in {**MEMORY_SCHEMA, **LEDGER_SCHEMA}.items()}
        assert [r[0] for r in conn.execute("select name from _sqlite_migrations order by id")] == ALL

        # every row the old version wrote is still there, unchanged
        for table, rows in wrote.items():
            cols = list(rows[0])
            kept = [dict(zip(cols, r)) for r in conn.execute(
                f"select {', '.join(cols)} from {table} order by rowid")]
            if table == "memories":
                # m006 on purpose: the assistant's answers stay turns, not memories
                rows = [r for r in rows if '"assistant"' not in r["source"]]
            assert kept == rows, table
        # columns added since come with their defaults
        if "feedback" in wrote:
            assert conn.execute("select status, reason from feedback").fetchall() == [("active", "")]
            assert conn.execute("select served from adapters").fetchall() == [("",)]
        if "memories" in wrote:
            fts = [r[0] for r in conn.execute("select rowid from memories_fts order by rowid")]
            assert fts == ([1, 3, 4] if upto >= ALL.index("m003_create_memories_fts") + 1 else [])
            # new rows take fresh seq values (the FTS rowid), and the kinds added since are allowed
            conn.execute("insert into memories (id, kind, text, created, updated) "
                         "values ('m_new', 'preference', 'Call me Sam.', 9, 9)")
            assert conn.execute("select seq from memories where id = 'm_new'").fetchone()[0] == 5

        # and today's readers see them
        assert [(t.role, t.content) for t in ledger.turns("conv_old")] == [
            ("user", "I live in York."), ("assistant", "Nice city."), ("user", "My dog is called Rex.")]
        if "feedback" in wrote:
            [fb] = FeedbackLog(ledger).list(limit=None)
            assert (fb.id, fb.kind, fb.correction) == ("fb_1", "fix", "You live in York.")
            assert AdapterLedger(ledger).promoted("smollm2-135m").id == "v001-oldold"
        # a new conversation in the old file works like one in a new file
        cid = ledger.new_conversation(model="smollm2-135m")
        ledger.add_turn(cid, "user", "Hello again.")
        assert len(ledger.turns(cid)) == 1


def test_reopening_an_upgraded_ledger_changes_nothing(tmp_path):
    _old_ledger(tmp_path / DB_NAME, 1)
    Ledger(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_NAME)
    before = (_schema(conn), conn.execute("select count(*) from _sqlite_migrations").fetchone())
    conn.close()
    with Ledger(tmp_path) as ledger:
        assert (_schema(ledger.db.conn),
                ledger.db.conn.execute("select count(*) from _sqlite_migrations").fetchone()) == before
