"""Feedback on a served answer, stored exactly as the chat's /good, /bad and /fix store it.

Owns: finding the answer a completion id (or its assistant turn id) stands for in the ledger,
and the question it answered, then one memory.feedback.FeedbackLog.add. The nightly sleep
cannot tell this feedback from the chat's.
"""
from __future__ import annotations

from pathlib import Path

from .schema import ApiError

KINDS = ("good", "bad", "fix")


def parse_feedback(body) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object like {\"kind\": \"good\"}.")
    kind = body.get("kind")
    if kind not in KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(KINDS)}, got {kind!r}; e.g. "
                            "{\"kind\": \"fix\", \"correction\": \"the answer you wanted\"}.", "kind")
    correction = body.get("correction") or ""
    if not isinstance(correction, str):
        raise ApiError(400, "correction must be a string.", "correction")
    if kind == "fix" and not correction.strip():
        raise ApiError(400, "a fix needs the better answer: {\"kind\": \"fix\", \"correction\": "
                            "\"...\"}.", "correction")
    if kind != "fix" and correction.strip():
        raise ApiError(400, f"only a fix takes a correction; send kind \"fix\" or drop it.",
                       "correction")
    return kind, correction


def add_feedback(home: Path, turn_id: str, kind: str, correction: str = "") -> dict:
    """Rate the assistant turn `turn_id`. 404 when there is no such recorded answer."""
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger, LedgerError

    ledger = Ledger(home)
    try:
        row = next(iter(ledger.db.query(
            "select rowid, * from turns where id = ? and role = 'assistant'", [turn_id])), None)
        if row is None:
            raise ApiError(404, f"no recorded answer {turn_id!r}: it was forgotten, or made with "
                                "reverie.record false (nothing is kept to rate).",
                           code="completion_not_found")
        question = next(iter(ledger.db.query(
            "select content from turns where conversation_id = ? and role = 'user' and "
            "rowid < ? order by rowid desc limit 1", [row["conversation_id"], row["rowid"]])), {})
        try:
            fb = FeedbackLog(ledger).add(kind, row["conversation_id"], turn_id,
                                         question.get("content", ""), row["content"], correction)
        except LedgerError as e:
            raise ApiError(400, str(e), "kind") from e
        return {"id": fb.id, "object": "feedback", "kind": fb.kind, "turn_id": turn_id,
                "conversation_id": row["conversation_id"], "created": int(fb.created)}
    finally:
        ledger.close()
