"""Feedback rows in the ledger: /good, /bad and /fix on the assistant's answers."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .ledger import Ledger, LedgerError, new_id, now

KINDS = ("good", "bad", "fix")


@dataclass
class Feedback:
    id: str
    kind: str
    conversation_id: str
    turn_id: str
    prompt: str
    answer: str
    correction: str
    created: float

    def to_dict(self) -> dict:
        return asdict(self)


class FeedbackLog:
    def __init__(self, ledger: Ledger):
        self.db = ledger.db

    def add(self, kind: str, conversation_id: str, turn_id: str, prompt: str, answer: str,
            correction: str = "") -> Feedback:
        if kind not in KINDS:
            raise LedgerError(f"unknown feedback kind {kind!r}; one of {', '.join(KINDS)}")
        if kind == "fix" and not correction.strip():
            raise LedgerError("a fix needs the better answer: /fix <better answer>")
        fb = Feedback(new_id("fb"), kind, conversation_id, turn_id, prompt, answer,
                      correction.strip(), now())
        with self.db.atomic():
            self.db["feedback"].insert(fb.to_dict())
        return fb

    def list(self, kind: str | None = None, limit: int | None = 100) -> list[Feedback]:
        where, args = ("kind = ?", [kind]) if kind else (None, [])
        rows = self.db["feedback"].rows_where(where, args, order_by="created desc", limit=limit)
        return [Feedback(**r) for r in rows]

    def get(self, fid: str) -> Feedback:
        rows = list(self.db["feedback"].rows_where("id = ?", [fid]))
        if not rows:
            raise LedgerError(f"unknown feedback id {fid!r}; list them with `reverie feedback ls`.")
        return Feedback(**rows[0])

    def remove(self, fid: str) -> Feedback:
        fb = self.get(fid)
        with self.db.atomic():
            self.db["feedback"].delete(fid)
        return fb
