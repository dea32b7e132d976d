"""Standing preferences: how the user wants to be answered, said in their own words.

Owns recognising a sentence that sets a habit for the assistant's answers ("From now on, please
start every answer with 'In short:'", "Call me Professor Adeyemi", "Give distances in km"), the
text it is kept as (the user's words, fillers dropped) and its slot: one opening, one sign-off,
one form of address, one length rule at a time — a newer one replaces the older; other habits
accumulate. Rules, no model; knows nothing about storage.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .facts import split_sentences


@dataclass(frozen=True)
class Preference:
    subject: str  # "preference: opening", "preference: units km" ...
    text: str  # what is shown to the model: the user's words, fillers dropped
    said: str  # the sentence it came from


# A sentence is about the assistant's answers when it names them, addresses the assistant with a
# standing rule, or asks to be called something.
_ABOUT_ANSWERS = re.compile(
    r"\b(?:from now on|in future|going forward|(?:every|each|all|your) (?:answers?|repl(?:y|ies)|"
    r"responses?)|when (?:you )?(?:answer|reply|respond)|when I ask|call me|address me|"
    r"(?:always|never) (?:start|begin|end|finish|sign|use|give|say|write|answer|reply|include|add|"
    r"call|keep)|sign (?:off|your)|I (?:think|measure|cook|work) in|(?:give|use|put|quote|write) "
    r"(?:\w+ ){0,3}in (?:km|kilomet|miles|metric|imperial|grams|cups|celsius|fahrenheit)|"
    r"keep (?:your|it|them|answers)|(?:answers?|replies) (?:short|brief|long))\b",
    re.IGNORECASE)
_FILLER = re.compile(r"^(?:(?:ok(?:ay)?|so|and|also|oh|hey|well|one more thing)[,:]?\s+)*"
                     r"(?:from now on|in future|going forward)?[,:]?\s*(?:please\s+)?"
                     r"(?:(?:can|could|would|will) you\s+)?(?:please\s+)?", re.IGNORECASE)
# Slots that hold one habit at a time; anything else is its own slot (several can hold at once).
_SLOTS = [
    ("opening", re.compile(r"\b(?:start|begin|open)\w*\s+(?:(?:every|each|all|your|the|my)\s+)?"
                           r"(?:answers?|repl(?:y|ies)|responses?)\b", re.IGNORECASE)),
    ("closing", re.compile(r"\b(?:sign(?:ing)? off|(?:end|finish|close)\w*\s+(?:(?:every|each|all|"
                           r"your|the|my)\s+)?(?:answers?|repl(?:y|ies)|responses?))\b", re.IGNORECASE)),
    ("address", re.compile(r"\b(?:call|address) me\b", re.IGNORECASE)),
    ("length", re.compile(r"\b(?:short|brief|concise|long|detailed|under \d+ words|"
                          r"at most \d+ words|\d+ words)\b", re.IGNORECASE)),
    ("distance units", re.compile(r"\b(?:km|kilomet\w*|miles?)\b", re.IGNORECASE)),
    ("cooking units", re.compile(r"\b(?:grams?|cups?|ounces?)\b", re.IGNORECASE)),
    ("temperature units", re.compile(r"\b(?:celsius|fahrenheit)\b", re.IGNORECASE)),
]


def _slot(text: str) -> str:
    for name, pattern in _SLOTS:
        if pattern.search(text):
            return f"preference: {name}"
    words = re.findall(r"[a-z']+", text.lower())
    return "preference: " + " ".join(words[:6])


def clean(sentence: str) -> str:
    """The sentence without the fillers around the rule, capitalised, ending in a full stop."""
    s = _FILLER.sub("", sentence.strip()).strip()
    s = re.sub(r",?\s*please[.!]?$", "", s, flags=re.IGNORECASE).strip()
    if not s:
        return ""
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".!?'\"" else s + "."


def extract_preferences(text: str) -> list[Preference]:
    """Every standing preference stated in `text` (questions are not preferences)."""
    out = []
    for sentence in split_sentences(text or ""):
        if sentence.rstrip().endswith("?") or not _ABOUT_ANSWERS.search(sentence):
            continue
        if re.match(r"^\W*(?:what|why|how|who|where|do|does|did|is|are|can you tell)\b", sentence,
                    re.IGNORECASE):
            continue  # asking, not setting a rule
        kept = clean(sentence)
        if len(kept) >= 8:
            out.append(Preference(_slot(kept), kept, sentence))
    return out
