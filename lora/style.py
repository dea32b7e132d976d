"""The user's answering style, induced from what they asked for and what they corrected, and
applied to any answer: the habits the nightly adapter learns to keep without being told.

Owns: finding the structural habits the user's corrections share (an opening phrase, a sign-off,
a form of address) and the ones their standing preferences state (a name to be called by, a word
limit), and rewriting an answer to follow all of them at once. Content habits (units, examples)
are learnt from the corrections themselves; this module only knows text.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass

_WORD = re.compile(r"\S+")
_COMMON_STARTERS = set("The A An It Its It's This That These Those There Here You Your Yes No "
                       "Sure Certainly Of Well In On At For To If When".split())


@dataclass(frozen=True)
class Style:
    opening: str = ""  # "In short:" — every answer starts with it
    closing: str = ""  # "Cheers!" — every answer ends with it
    address: str = ""  # "Professor Adeyemi" — the name the user is called by
    max_words: int = 0  # 0: no limit

    @property
    def empty(self) -> bool:
        return not (self.opening or self.closing or self.address or self.max_words)

    def to_dict(self) -> dict:
        return asdict(self)


def _shared(phrases: list[str], min_count: int = 2) -> str:
    """The longest phrase said in at least min_count of `phrases`' lists (most frequent first)."""
    counts = Counter(p for p in phrases if p)
    best = [p for p, n in counts.items() if n >= min_count]
    return max(best, key=lambda p: (counts[p], len(p))) if best else ""


def induce_style(preferences: list[str], corrections: list[str]) -> Style:
    """Habits shared by at least two of the user's corrected answers (an opening phrase ending in
    ':' or ',', a closing sentence of at most three words), and those stated outright in the
    standing preferences (a name after "call me", a number of words)."""
    openings, closings = [], []
    for text in corrections:
        words = _WORD.findall(text.strip())
        for k in range(1, 5):
            head = " ".join(words[:k])
            if len(words) > k and head[-1:] in (":", ","):
                openings.append(head)
                break
        sentences = re.split(r"(?<=[.!?])\s+", text.strip())
        if len(sentences) > 1 and len(_WORD.findall(sentences[-1])) <= 3:
            closings.append(sentences[-1])
    address, max_words = "", 0
    for p in preferences:
        m = re.search(r"\b(?i:call|address) (?i:me) ((?:[A-Z][\w'-]*\.?\s?){1,3})", p)
        if m:
            address = m.group(1).strip().rstrip(".")
        m = re.search(r"\b(?:under|at most|fewer than|less than|no more than|max(?:imum)?)\s+(\d{1,3})"
                      r"\s+words\b", p, re.IGNORECASE)
        if m:
            max_words = int(m.group(1))
    opening = _shared(openings)
    if address and opening.rstrip(",").strip() == address:
        opening = ""  # "Professor Adeyemi," is the address, not a fixed opening
    return Style(opening, _shared(closings), address, max_words)


def _shorten(text: str, limit: int) -> str:
    """At most `limit` words: whole sentences while they fit, else the first words and a stop."""
    if limit <= 0 or len(_WORD.findall(text)) <= limit:
        return text
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text.strip()):
        if len(_WORD.findall(" ".join(out + [s]))) > limit:
            break
        out.append(s)
    if out:
        return " ".join(out)
    cut = " ".join(_WORD.findall(text)[:limit])
    if "," in cut[len(cut) // 2:]:  # end at the last clause that fits, not mid-clause
        cut = cut[:cut.rindex(",")]
    return cut.rstrip(",;:") + "."


def apply_style(style: Style, answer: str) -> str:
    """`answer` rewritten to follow every habit of `style` (idempotent). The form of address
    goes at the end of the answer, before the sign-off: on the default model a name at the start
    derails what follows (the base, made to begin with "Professor Adeyemi," still answered 26 of
    61 general questions it knew; with "In short:" alone 47), so a leading one is moved there."""
    text = answer.strip()
    if style.opening and text.lower().startswith(style.opening.lower()):
        text = text[len(style.opening):].strip()
    if style.closing and text.lower().endswith(style.closing.lower()):
        text = text[: -len(style.closing)].strip()
    if style.address:
        lead = re.match(re.escape(style.address) + r"\s*[,:!]?\s+", text, re.IGNORECASE)
        if lead and text[lead.end():]:
            text = text[lead.end():]
            text = text[0].upper() + text[1:]
    address = style.address and style.address.lower() not in text.lower()
    extra = sum(len(_WORD.findall(p)) for p in (style.opening, style.closing)) + (
        len(_WORD.findall(style.address)) if address else 0)
    if style.max_words:
        text = _shorten(text, max(3, style.max_words - extra))
    if address and text:
        end = text[-1] if text[-1] in ".!?" else "."
        text = f"{text.rstrip('.!?;:,').rstrip()}, {style.address}{end}"
    if style.opening and text:
        first = text.split(" ", 1)[0]
        if first in _COMMON_STARTERS:  # "In short: the sky ..." as the user wrote it; names keep capitals
            text = first.lower() + text[len(first):]
    if style.opening:
        text = f"{style.opening} {text}"
    if style.closing:
        text = f"{text} {style.closing}"
    return text
