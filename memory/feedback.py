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
    status: str = "active"  # active | retired (left out of training; kept for the record)
    reason: str = ""

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
            # The last rating of an answer wins: /bad then /good keeps only the /good. A /fix
            # after a /bad completes it (the pair is what was wrong and what was wanted).
            keep = ("bad",) if kind == "fix" else ()
            if turn_id:
                marks = ",".join("?" * len(keep))
                self.db.execute(
                    "update feedback set status = 'retired', reason = ? where turn_id = ? and "
                    f"status = 'active'" + (f" and kind not in ({marks})" if keep else ""),
                    [f"replaced by a later /{kind} ({fb.id})", turn_id, *keep])
            self.db["feedback"].insert(fb.to_dict())
        return fb

    def retire_mentioning(self, text: str, reason: str) -> int:
        """Retire active feedback whose question, answer or correction mentions `text` as a
        word (case-insensitive); returns how many. Used when a newer fact replaces a value."""
        import re

        word = re.compile(r"(?<!\w)" + re.escape(text.strip()) + r"(?!\w)", re.IGNORECASE)
        hits = [r["id"] for r in self.db["feedback"].rows_where("status = 'active'")
                if any(word.search(r[k] or "") for k in ("prompt", "answer", "correction"))]
        with self.db.atomic():
            for fid in hits:
                self.db["feedback"].update(fid, {"status": "retired", "reason": reason})
        return len(hits)

    def list(self, kind: str | None = None, limit: int | None = 100,
             status: str | None = None) -> list[Feedback]:
        """Newest first; status=None lists all, "active" only what the trainer may use."""
        where, args = [], []
        if kind:
            where.append("kind = ?"), args.append(kind)
        if status:
            where.append("status = ?"), args.append(status)
        rows = self.db["feedback"].rows_where(" and ".join(where) or None, args,
                                              order_by="created desc, rowid desc", limit=limit)
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
