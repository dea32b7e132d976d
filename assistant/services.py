"""What a chat session uses besides the model: memory recall and capture, feedback commands,
and the promoted adapter. Kept apart from chat.py so each piece can be switched off or faked.
"""
from __future__ import annotations

from pathlib import Path

RECALL_TOKEN_BUDGET = 300
# Hybrid recall's shortlist, filtered down to ChatRecall.k by relevance.
RECALL_CANDIDATES = 12


# A /fix is shown when the question asked is this close to the one it corrected (MiniLM cosine;
# rephrasings of one question score 0.8-0.95, related but different questions 0.5-0.7).
FIX_COSINE = 0.75
FIX_K = 2


def _fully_captured(text: str) -> bool:
    """Every clause of a user turn became a fact (so the facts can stand in for the turn)."""
    import re

    from memory import extract_facts

    clauses = [c for c in re.split(r"[.;!?]+|,\s+|\s+and\s+|\s+but\s+", text) if c.strip()]
    return len(extract_facts(text)) >= len(clauses)


PREFERENCES_HEADER = "How the user wants every answer (the user's own words):"


def _block(items: list, fixes: list, policy, prefs: list = ()) -> str:
    """The recalled memories, then the corrections, then the standing preferences, as one
    quoted block in front of the question."""
    import json

    from memory.recall import format_for_chat

    block = format_for_chat(items, policy) if items else ""
    sections = [block] if block else []
    if fixes:
        lines = ["How the user wants these questions answered (quoted data):"]
        lines += [f"- When asked {json.dumps(f.source['prompt'], ensure_ascii=False)}, answer: "
                  f"{json.dumps(f.text, ensure_ascii=False)}" for f in fixes]
        sections.append("\n".join(lines))
    if prefs:
        sections.append("\n".join([PREFERENCES_HEADER] + [
            f"- {json.dumps(p.text, ensure_ascii=False)}" for p in prefs]))
    return "\n".join(sections)


class Services:
    def __init__(self, home: Path, ledger):
        self.home = Path(home)
        self.ledger = ledger
        self._memory = None
        self.recall_policy = None  # memory.recall.ChatRecall; None: its defaults

    # --- memory ------------------------------------------------------------------------------
    @property
    def memory(self):
        if self._memory is None:
            from memory import MemoryStore

            self._memory = MemoryStore(self.home, self.ledger)  # one connection: one transaction a turn
            self._memory.heal_index()  # a crash between ledger and index write left it behind
        return self._memory

    def recall(self, query: str, runtime) -> tuple[list, str]:
        """Memories to show the model for `query`, and the quoted block that shows them.

        Facts and user statements no fact rule captured, most relevant first; never the
        assistant's own answers or earlier questions; nothing below the similarity floor; then
        the user's corrections (/fix) of questions like this one."""
        from memory.embedder import embed
        from memory.recall import (ChatRecall, chat_candidates, first_person, format_for_chat,
                                   select_for_chat)

        policy = self.recall_policy or ChatRecall()
        found = self.memory.recall(query, k=RECALL_CANDIDATES, token_budget=None)
        # A turn whose every clause a fact rule captured is represented by those facts; a turn
        # that said more ("I can't eat gluten, I have coeliac disease") can still be shown.
        # Forgotten and replaced facts took their turns with them (memory.forgetting, supersede).
        fact_turns = {i.source.get("turn_id") for i in found if i.kind == "fact"} - {None}
        items = chat_candidates(found, policy, covered=lambda item: (
            item.source.get("turn_id") in fact_turns and _fully_captured(item.text)))
        qvec, fixes = None, []
        if items:
            # Hybrid scores are ranks, not relevance, so the shortlist is re-scored by cosine.
            # Facts are stored as "The user lives in Oslo."; questions come as "Where do I
            # live?", and in the same voice related pairs score clearly higher (dev set: median
            # 0.63 vs 0.56).
            vecs = embed([query] + [first_person(i.text) for i in items])
            qvec = vecs[0]
            cosine = {i.id: sum(a * b for a, b in zip(qvec, v)) for i, v in zip(items, vecs[1:])}
            items = select_for_chat(items, cosine, policy)
        fixes = self._corrections_for(query, qvec)
        prefs = self._preferences()
        while items and runtime.count_tokens(_block(items, fixes, policy)) > RECALL_TOKEN_BUDGET:
            items = items[:-1]
        return items + fixes + prefs, _block(items, fixes, policy, prefs)

    def _preferences(self) -> list:
        """Every standing preference, whatever the question: a habit holds for all answers."""
        from memory.recall import Recalled

        return [Recalled(m.id, m.text, "preference", 0.0, m.source, m.created)
                for m in self.memory.active_preferences()]

    def _corrections_for(self, query: str, qvec=None) -> list:
        """The user's active /fix corrections whose question is close to `query` (cosine of the
        two questions >= FIX_COSINE), as Recalled items of kind "correction", best first."""
        from memory.embedder import embed
        from memory.feedback import FeedbackLog
        from memory.recall import Recalled

        fixes = FeedbackLog(self.ledger).list(kind="fix", limit=200, status="active")
        if not fixes:
            return []
        vecs = embed(([] if qvec is not None else [query]) + [f.prompt for f in fixes])
        if qvec is None:
            qvec, vecs = vecs[0], vecs[1:]
        scored = sorted(((sum(a * b for a, b in zip(qvec, v)), f) for f, v in zip(fixes, vecs)),
                        key=lambda x: -x[0])
        return [Recalled(f.id, f.correction, "correction", sim,
                         {"prompt": f.prompt, "turn_id": f.turn_id}, f.created)
                for sim, f in scored[:FIX_K] if sim >= FIX_COSINE]

    def record_exchange(self, conversation_id: str, question: str, answer: str, meta: str):
        """Store a chat turn in one ledger transaction: the user turn, the answer, the user turn's
        episodic memory and any facts said in it. A kill leaves all of it or none (never a
        question without its answer, or a turn whose memory is missing).
        Returns (user_turn, answer_turn, notes): notes say what was remembered, in a few words."""
        with self.memory.transaction():
            user_turn = self.ledger.add_turn(conversation_id, "user", question)
            assistant_turn = self.ledger.add_turn(conversation_id, "assistant", answer, meta)
            notes = self.after_turn(conversation_id, user_turn, assistant_turn)
        return user_turn, assistant_turn, notes or []

    def after_turn(self, conversation_id: str, user_turn, assistant_turn) -> list[str]:
        """What the user said becomes recallable; what the assistant said stays conversation
        history only (as a memory it echoed old mistakes and crowded out the user's facts).
        Questions and degenerate text (loops, walls of text) are kept in the history, not as
        memories."""
        from memory.hygiene import forget_request, is_question_only, why_not_memorable
        from memory.recall import second_person

        mem = self.memory
        text = user_turn.content
        notes = []
        asked = forget_request(text)
        if asked:  # a request, not a statement: say how to do it, store nothing as a memory
            words = " ".join(asked.split()[-3:]).removeprefix("my ").removeprefix("the ")
            return [f"to forget something everywhere, type /forget and the words that state it, "
                    f"e.g. /forget {words}"]
        reason = why_not_memorable(text)
        if reason is None and not is_question_only(text):
            mem.record_turn(conversation_id, user_turn.id, "user", text, user_turn.created)
        elif reason is not None and text.strip():
            notes.append(f"not remembered: {reason}")
        if reason is None:
            for m, action in mem.observe_user_message(text, conversation_id, user_turn.id):
                verb = {"added": "remembered", "updated": "remembered",
                        "superseded": "updated"}.get(action, action)
                if m.kind == "preference":
                    verb = {"remembered": "will do", "updated": "changed to"}[verb]
                    notes.append(f"{verb}: {m.text.rstrip('.')}")
                else:
                    notes.append(f"{verb}: {second_person(m.text).rstrip('.')}")
        return notes

    def describe(self, recalled) -> str:
        """One /why line: the id (for `reverie memory show/forget`), kind, and stored text."""
        rid = getattr(recalled, "id", recalled)
        text = getattr(recalled, "text", "")
        kind = getattr(recalled, "kind", "")
        role = getattr(recalled, "source", {}).get("role")
        label = f"{kind}, {role} turn" if kind == "episodic" and role else kind
        return f"[{rid}] ({label}) {text}"

    # --- slash commands beyond the built-in ones ---------------------------------------------
    def command_handler(self, name: str):
        return {"/remember": self._remember, "/good": self._good, "/bad": self._bad,
                "/fix": self._fix, "/forget": self._forget}.get(name)

    def _forget(self, session, arg: str) -> str:
        from .forget import forget_matching

        if not arg:
            return "usage: /forget <text> — removes every memory, turn and feedback that states it"
        res = forget_matching(self.home, arg, apply=True, ledger=self.ledger)
        return res["summary"]

    def _feedback(self, session, kind: str, correction: str = "") -> str:
        from memory.feedback import FeedbackLog

        if session.last is None or not session.last.turn_id:
            return "nothing to rate yet: ask something first."
        fb = FeedbackLog(self.ledger).add(kind, session.conversation_id, session.last.turn_id,
                                          session.last_question, session.last.answer, correction)
        what = {"good": "marked good", "bad": "marked bad", "fix": "correction stored"}[kind]
        return f"{what} ({fb.id}); tonight's `reverie sleep` learns from it."

    def _good(self, session, arg: str) -> str:
        return self._feedback(session, "good")

    def _bad(self, session, arg: str) -> str:
        return self._feedback(session, "bad")

    def _fix(self, session, arg: str) -> str:
        if not arg:
            return "usage: /fix <the answer you wanted>"
        return self._feedback(session, "fix", arg)

    def _remember(self, session, arg: str) -> str:
        if not arg:
            return "usage: /remember <a fact about you>, e.g. /remember my sister is called Ingrid"
        from memory import MemoryStoreError

        try:
            mem, action = self.memory.add_fact(arg, {"command": "/remember",
                                                     "conversation_id": session.conversation_id})
        except MemoryStoreError as e:
            return str(e)
        return f"{action} memory {mem.id}: {mem.text}"

    # --- adapters ----------------------------------------------------------------------------
    def newer_than_adapter(self, recalled: list, runtime) -> bool:
        """Does a recalled fact replace or restate something after the promoted adapter was
        trained (a move, a new favourite)? Then the adapter's answer is stale on it."""
        import json

        from memory.adapters_ledger import AdapterLedger

        row = AdapterLedger(self.ledger).promoted(runtime.model.name)
        if row is None:
            return False
        trained = set(json.loads(row.fact_ids or "[]"))
        for r in recalled:
            if r.kind != "fact" or not (r.source.get("supersedes") or r.source.get("restated")):
                continue
            if r.id not in trained or self.memory.get(r.id).updated > row.created:
                return True
        return False

    def served(self, base):
        """What chat serves for the promoted adapter of `base` (a registry ModelInfo): a
        Served (assistant.served) — the base file with the adapter's GGUF LoRA, which both
        runtimes load (MLX as LoRA layers on the GGUF's own q/k row order), or the merged file
        the gate measured — or None. Read from the ledger on every turn, so a promotion, a
        rollback or a forget is picked up live."""
        from memory.adapters_ledger import AdapterLedger

        from .served import served_form

        return served_form(AdapterLedger(self.ledger).promoted(base.name), base.path)
