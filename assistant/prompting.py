"""How a question and the memories recalled for it are laid out for the model.

Owns the one layout shared by chat, `reverie eval` and the nightly gate, so that what is
measured is what the user gets: the system prompt stays exactly the configured one; recalled
memories go in front of the question as quoted data; and when memories are shown, one fixed
worked example (made-up notes, never the user's) comes first, showing the model how to answer
from the notes.

Why the example: on the 135M default model, with the 25 persona-dev facts (100 questions),
memory-only accuracy was 0.67 with the block alone and 0.83 with the example in front
(/tmp experiment, same recall, greedy). Without it the model mostly talks *about* the
question ("The user is asking about …") or refuses.
"""
from __future__ import annotations

import json

QUESTION_SEP = "\n\nQuestion: "


def _note(text: str) -> str:
    return "- " + json.dumps(text, ensure_ascii=False)


def worked_example(header: str) -> list[dict]:
    """One user/assistant exchange answering from notes, in the same format as real recall.

    Its notes are invented and generic (nothing from any user or probe set)."""
    notes = "\n".join([header, _note("Your brother is called Tom."), _note("Your sister is called Anna.")])
    return [{"role": "user", "content": f"{notes}{QUESTION_SEP}Who is my sister?"},
            {"role": "assistant", "content": "Your sister is called Anna."}]


def with_memories(question: str, block: str) -> str:
    """The user turn: the quoted memory block, then the question."""
    return f"{block}{QUESTION_SEP}{question}" if block else question


def strip_memories(user_text: str) -> str:
    """The question alone, from a user turn built by with_memories."""
    return user_text.split(QUESTION_SEP, 1)[-1]


def messages_for(system_prompt: str, question: str, block: str = "",
                 history: list[dict] | None = None, header: str | None = None,
                 example: bool = True) -> list[dict]:
    """System prompt, the worked example (only when memories are shown), the earlier turns,
    then the question with its memories."""
    msgs = lead_messages(system_prompt, bool(block) and example, header)
    msgs += list(history or [])
    msgs.append({"role": "user", "content": with_memories(question, block)})
    return msgs


def lead_messages(system_prompt: str, memories_shown: bool = True, header: str | None = None) -> list[dict]:
    """The head every prompt of a first turn starts with: the system prompt, and the worked
    example when memories are shown. The chat evaluates it ahead of time (quant.llamacpp prefill)."""
    from memory.recall import CHAT_HEADER

    msgs = [{"role": "system", "content": system_prompt}]
    if memories_shown:
        msgs += worked_example(header or CHAT_HEADER)
    return msgs
