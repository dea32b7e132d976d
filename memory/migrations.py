"""Ledger schema migrations: append-only, each in its own transaction. Never edit one that has
shipped; add mNNN_verb_noun instead. tests/test_ledger.py pins the resulting schema."""
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
