"""What is worth keeping as a memory, and what is not.

Owns the rules that keep the memory clean under ordinary use: size limits, and the detection of
degenerate text (empty, a sentence looping, a wall of one repeated token). Knows nothing about
storage; the store and the chat ask `why_not_memorable(text)` and say the reason to the user.
"""
from __future__ import annotations

import re

# A fact is a sentence or two; anything longer is a document, not something to recall whole.
MAX_FACT_CHARS = 500
# A chat message is kept in the conversation whatever its length; only this much becomes a memory.
MAX_MEMORY_CHARS = 2000
# Share of repeated word 4-grams above which a text is a loop, not a statement.
LOOP_SHARE = 0.5
_WORD = re.compile(r"[\w']+")


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Share of the word n-grams of `text` that already occurred earlier in it (0 for short texts)."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2 * n:
        return 0.0
    seen: set = set()
    repeats = 0
    for g in grams:
        if g in seen:
            repeats += 1
        seen.add(g)
    return repeats / len(grams)


def repeated_sentence(text: str, times: int = 3) -> str | None:
    """A sentence said at least `times` times in `text`, or None."""
    counts: dict[str, int] = {}
    for s in re.split(r"(?<=[.!?])\s+|\n+", text):
        key = " ".join(_WORD.findall(s.lower()))
        if len(key) < 8:
            continue
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= times:
            return s.strip()
    return None


def is_loop(text: str) -> bool:
    return repeated_sentence(text) is not None or repeated_ngram_share(text) > LOOP_SHARE


def why_not_memorable(text: str, limit: int = MAX_MEMORY_CHARS) -> str | None:
    """None when `text` may be stored as a memory, else the reason in a few words."""
    t = (text or "").strip()
    if not t:
        return "it is empty"
    if len(t) > limit:
        return f"it is {len(t):,} characters long (the limit is {limit:,})"
    if is_loop(t):
        return "it repeats itself"
    if not _WORD.search(t):
        return "it has no words"
    return None


def is_question_only(text: str) -> bool:
    """Every sentence is a question: it asks, it does not tell (kept in the conversation only)."""
    parts = [p for p in re.split(r"(?<=[.!?])\s+|\n+", (text or "").strip()) if p.strip()]
    return bool(parts) and all(p.rstrip().endswith("?") for p in parts)


_FORGET_REQUEST = re.compile(r"^\W*(?:(?:please|can you|could you|would you)\s+)?(?:forget|delete|erase|"
                             r"remove)\b\s*(?:about\s+)?(?P<what>.*?)[.!?]*$", re.IGNORECASE)


def forget_request(text: str) -> str | None:
    """What a message asks to forget ("Please forget my gym locker code." -> "my gym locker
    code"), or None. Such a message is a request, not something to remember."""
    m = _FORGET_REQUEST.match((text or "").strip())
    if not m:
        return None
    what = m.group("what").strip()
    return what or None
