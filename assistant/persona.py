"""Between the memory ledger's facts and the trainer's input: first-person statements.

Memory stores extracted facts in the third person ("The user lives in Oslo."); the trainer's
phrasing rules and the user think in the first person ("I live in Oslo.").
"""
from __future__ import annotations

import re

_IRREGULAR = {"is": "am", "has": "have", "was": "was", "does": "do", "goes": "go"}


def _verb_to_first(verb: str) -> str:
    low = verb.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if re.search(r"(ss|sh|ch|x|o)es$", low):
        return verb[:-2]
    if low.endswith("ies") and len(low) > 4:
        return verb[:-3] + "y"
    if low.endswith("s") and not low.endswith("ss"):
        return verb[:-1]
    return verb


def first_person(text: str) -> str:
    """'The user's sister is called Ingrid.' → 'My sister is called Ingrid.'"""
    t = text.strip()
    m = re.match(r"(?i)^the user's\s+(.*)$", t)
    if m:
        return "My " + m.group(1)
    m = re.match(r"(?i)^the user\s+(\w+)\b(.*)$", t)
    if m:
        rest = re.sub(r"(?i)\bthe user's\b", "my", m.group(2))
        return "I " + _verb_to_first(m.group(1)) + rest
    return t
