"""What a chat session uses besides the model: memory recall and capture, feedback commands,
and the promoted adapter. Kept apart from chat.py so each piece can be switched off or faked.
"""
from __future__ import annotations

from pathlib import Path

RECALL_K = 6
RECALL_TOKEN_BUDGET = 300


class Services:
    def __init__(self, home: Path, ledger):
        self.home = Path(home)
        self.ledger = ledger
        self._memory = None

    # --- memory ------------------------------------------------------------------------------
    @property
    def memory(self):
        if self._memory is None:
            from memory import MemoryStore

            self._memory = MemoryStore(self.home)
        return self._memory

    def recall(self, query: str, runtime) -> tuple[list, str]:
        from memory import format_recalled

        items = self.memory.recall(query, k=RECALL_K, token_budget=RECALL_TOKEN_BUDGET,
                                   count_tokens=runtime.count_tokens)
        return items, (format_recalled(items) if items else "")

    def after_turn(self, conversation_id: str, user_turn, assistant_turn) -> None:
        mem = self.memory
        mem.record_turn(conversation_id, user_turn.id, "user", user_turn.content, user_turn.created)
        mem.record_turn(conversation_id, assistant_turn.id, "assistant", assistant_turn.content,
                        assistant_turn.created)
        mem.observe_user_message(user_turn.content, conversation_id, user_turn.id)

    def describe(self, recalled) -> str:
        rid = getattr(recalled, "id", recalled)
        text = getattr(recalled, "text", "")
        kind = getattr(recalled, "kind", "")
        return f"[{rid}] ({kind}) {text}"

    # --- slash commands beyond the built-in ones ---------------------------------------------
    def command_handler(self, name: str):
        return {"/remember": self._remember}.get(name)

    def _remember(self, session, arg: str) -> str:
        if not arg:
            return "usage: /remember <a fact about you>, e.g. /remember my sister is called Ingrid"
        mem, action = self.memory.add_fact(arg, {"command": "/remember",
                                                 "conversation_id": session.conversation_id})
        return f"{action} memory {mem.id}: {mem.text}"

    # --- adapters ----------------------------------------------------------------------------
    def promoted_adapter_for(self, runtime) -> str | None:
        return None
