"""Ledger schema migrations: append-only, each in its own transaction. Never edit one that has
shipped; add mNNN_verb_noun instead. tests/test_memory_schema.py pins the resulting schema;
tests/test_ledger_upgrade.py opens ledgers made by every earlier step."""
from sqlite_utils import Migrations

migrations = Migrations("reverie.ledger")


@migrations()
def m001_create_conversations(db):
    db["conversations"].create(
        {"id": str, "title": str, "model": str, "created": float, "meta": str}, pk="id")
    db["turns"].create(
        {"id": str, "conversation_id": str, "role": str, "content": str, "created": float,
         "meta": str},
        pk="id", foreign_keys=[("conversation_id", "conversations", "id")])
    db["turns"].create_index(["conversation_id", "created"])


@migrations()
def m002_create_memories(db):
    # seq is the rowid alias the FTS table shares, so index rows are found without a scan;
    # id is the stable public id (m_...). source is provenance JSON.
    db.execute(
        "CREATE TABLE memories ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL CHECK (kind IN ('episodic', 'fact')),"
        " text TEXT NOT NULL,"
        " subject TEXT,"
        " status TEXT NOT NULL DEFAULT 'active'"
        "   CHECK (status IN ('active', 'superseded', 'forgotten')),"
        " created REAL NOT NULL,"
        " updated REAL NOT NULL,"
        " source TEXT NOT NULL DEFAULT '{}')")
    db.execute("CREATE INDEX idx_memories_kind_status ON memories (kind, status)")
    db.execute("CREATE INDEX idx_memories_subject ON memories (subject, status)")
    db.execute(
        "CREATE TABLE memory_history ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " memory_id TEXT NOT NULL,"
        " text TEXT NOT NULL,"
        " subject TEXT,"
        " status TEXT NOT NULL,"
        " changed REAL NOT NULL,"
        " reason TEXT NOT NULL)")
    db.execute("CREATE INDEX idx_memory_history_memory ON memory_history (memory_id, id)")
    db.execute(
        "CREATE TABLE tombstones ("
        " memory_id TEXT NOT NULL,"
        " text_hash TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " forgotten REAL NOT NULL,"
        " PRIMARY KEY (memory_id, text_hash))")
    db.execute("CREATE INDEX idx_tombstones_hash ON tombstones (text_hash)")


@migrations()
def m003_create_memories_fts(db):
    # Only active memories are in the FTS table; rowid = memories.seq. The body is the indexed
    # text (speaker prefix etc.), porter-stemmed so "painted" finds "paint".
    db.execute("CREATE VIRTUAL TABLE memories_fts USING fts5("
               "body, tokenize = 'porter unicode61 remove_diacritics 2')")


@migrations()
def m004_create_feedback_and_adapters(db):
    # Feedback on answers: /good, /bad, /fix. The trainer turns fixes into corrections.
    db["feedback"].create(
        {"id": str, "kind": str, "conversation_id": str, "turn_id": str, "prompt": str,
         "answer": str, "correction": str, "created": float}, pk="id")
    db["feedback"].create_index(["created"])
    # Adapter versions and their lineage; files live under home/adapters/<id>/.
    db["adapters"].create(
        {"id": str, "parent": str, "status": str, "strategy": str, "trainer": str, "model": str,
         "base_sha256": str, "dataset_hash": str, "fact_ids": str, "feedback_ids": str,
         "path": str, "gguf": str, "metrics": str, "gate": str, "created": float,
         "promoted": float}, pk="id")
    db["sleep_runs"].create(
        {"id": str, "started": float, "finished": float, "status": str, "strategy": str,
         "adapter_id": str, "report_path": str, "summary": str}, pk="id")


@migrations()
def m005_index_memories_conversation(db):
    # Recall's neighbour support looks up the previous/next active turn of a conversation; without
    # this index each lookup walked the memories table (~130 lookups a query).
    db.execute("CREATE INDEX idx_memories_conversation ON memories "
               "(json_extract(source, '$.conversation_id'), seq) "
               "WHERE kind = 'episodic' AND status = 'active'")


@migrations()
def m006_retire_answers_and_feedback(db):
    # The assistant's own answers are conversation history (the turns table), not memories: as
    # recallable memories they echoed old mistakes and crowded the user's facts out of recall.
    db.execute("DELETE FROM memories_fts WHERE rowid IN (SELECT seq FROM memories WHERE"
               " kind = 'episodic' AND json_extract(source, '$.role') = 'assistant')")
    db.execute("DELETE FROM memories WHERE kind = 'episodic'"
               " AND json_extract(source, '$.role') = 'assistant'")
    # Feedback can be retired (a newer rating of the same answer, a fact that replaced what it
    # praised) and then no longer enters training; the row stays for `feedback ls --all`.
    db.execute("ALTER TABLE feedback ADD COLUMN status TEXT NOT NULL DEFAULT 'active'")
    db.execute("ALTER TABLE feedback ADD COLUMN reason TEXT NOT NULL DEFAULT ''")


@migrations()
def m007_allow_preference_memories(db):
    # A third kind: a standing preference about how to answer ("start every answer with 'In
    # short:'"). SQLite cannot alter a CHECK constraint, so the table is rebuilt with the same
    # rows and seq values (the FTS index is keyed by seq and stays valid).
    db.execute(
        "CREATE TABLE memories_new ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " id TEXT NOT NULL UNIQUE,"
        " kind TEXT NOT NULL CHECK (kind IN ('episodic', 'fact', 'preference')),"
        " text TEXT NOT NULL,"
        " subject TEXT,"
        " status TEXT NOT NULL DEFAULT 'active'"
        "   CHECK (status IN ('active', 'superseded', 'forgotten')),"
        " created REAL NOT NULL,"
        " updated REAL NOT NULL,"
        " source TEXT NOT NULL DEFAULT '{}')")
    db.execute("INSERT INTO memories_new (seq, id, kind, text, subject, status, created, updated,"
               " source) SELECT seq, id, kind, text, subject, status, created, updated, source"
               " FROM memories")
    db.execute("DROP TABLE memories")
    db.execute("ALTER TABLE memories_new RENAME TO memories")
    db.execute("CREATE INDEX idx_memories_kind_status ON memories (kind, status)")
    db.execute("CREATE INDEX idx_memories_subject ON memories (subject, status)")
    db.execute("CREATE INDEX idx_memories_conversation ON memories "
               "(json_extract(source, '$.conversation_id'), seq) "
               "WHERE kind = 'episodic' AND status = 'active'")


@migrations()
def m008_add_adapter_served(db):
    # What chat serves for a version: "" = llama.cpp's runtime LoRA over the base (what every
    # version before this served), else the path of the merged model file the gate measured.
    db.execute("ALTER TABLE adapters ADD COLUMN served TEXT NOT NULL DEFAULT ''")
