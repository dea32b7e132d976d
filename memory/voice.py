"""Grammatical person of a memory's text: the one home of first_person and second_person.

Owns: rewriting the canonical third-person facts ("The user lives in Oslo.") into the first
person (the voice users ask in, so recall compares like with like, and the voice the trainer's
phrasing rules read) and into the second person (how the chat prompt addresses the model).
Knows nothing about facts, storage or models: text in, text out. Text without "the user" (or,
for second_person, without first-person words) comes back unchanged.
"""
from __future__ import annotations

import re

_APOS = "['\u2019]"
# Verbs whose base form is not the third-person form minus -s/-es, as (first, second) person.
_IRREGULAR = {
    "is": ("am", "are"), "isn't": ("am not", "aren't"), "was": ("was", "were"),
    "wasn't": ("wasn't", "weren't"), "has": ("have", "have"), "hasn't": ("haven't", "haven't"),
    "does": ("do", "do"), "doesn't": ("don't", "don't"), "goes": ("go", "go"),
}
# Words that may sit between the subject and its verb ("the user also goes running").
_ADVERB = r"(?:\w+ly|also|always|often|sometimes|never|still|just|even|already|now|seldom|almost)"
# After these (or at the start, or after punctuation) "the user" is a subject; elsewhere an
# object ("Anna calls the user" -> "Anna calls me").
_CLAUSE_START = re.compile(
    r"(?:^|[.!?;:,(\"]\s*|\b(?:and|but|or|so|that|because|when|while|if|since|although|though|"
    r"where|as|until|before|after)\s+)$", re.IGNORECASE)
_POSSESSIVE = re.compile(rf"\bthe user{_APOS}s\b", re.IGNORECASE)
_SUBJECT = re.compile(rf"\bthe user\b(?P<adv>(?:\s+{_ADVERB})*)(?:\s+(?P<verb>[\w'\u2019]+))?",
                      re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+|[\"(]\s*)$")


def _verb_base(verb: str, person: int) -> str:
    """'lives' -> 'live', 'watches' -> 'watch', 'studies' -> 'study', 'misses' -> 'miss'.

    A word that is not a third-person present verb ('can't', 'moved', 'and') is left as is."""
    low = verb.lower().replace("\u2019", "'")
    if low in _IRREGULAR:
        return _IRREGULAR[low][person - 1]
    if not low.endswith("s") or low.endswith(("ss", "us", "is")) or len(low) < 3:
        return verb
    if low.endswith("ies") and len(low) > 4:
        return verb[:-3] + "y"
    if low.endswith(("sses", "shes", "ches", "xes", "zzes", "oes")):
        return verb[:-2]
    return verb[:-1]


def _cased(word: str, text: str, start: int) -> str:
    """`word` capitalised when it starts a sentence in `text` at `start`."""
    return word[:1].upper() + word[1:] if _SENTENCE_START.search(text[:start]) else word


def _from_third(text: str, person: int) -> str:
    """'the user' -> I/me/my (person 1) or you/your (person 2), agreeing the verb after it."""
    subject, obj, possessive = ("I", "me", "my") if person == 1 else ("you", "you", "your")
    out = _POSSESSIVE.sub(lambda m: _cased(possessive, text, m.start()), text)

    def swap(m: re.Match) -> str:
        if not _CLAUSE_START.search(out[:m.start()]):
            return obj + m.group(0)[len("the user"):]
        verb = m.group("verb")
        rest = m.group("adv") + (" " + _verb_base(verb, person) if verb else "")
        return _cased(subject, out, m.start()) + rest

    return _SUBJECT.sub(swap, out)


def first_person(text: str) -> str:
    """'The user lives in Oslo.' -> 'I live in Oslo.'; "The user's dentist" -> 'My dentist'.

    The voice users ask questions in ("Where do I live?"), so recall compares it with a question,
    and the voice the trainer's phrasing rules read."""
    return _from_third(text, 1)


_FIRST_TO_SECOND = [  # applied in order; "I" forms are case-sensitive ("i" is rarely the pronoun)
    (r"\bI am\b", "you are", 0), (rf"\bI{_APOS}m\b", "you're", 0), (r"\bI was\b", "you were", 0),
    (rf"\bI wasn{_APOS}t\b", "you weren't", 0), (rf"\bI{_APOS}ve\b", "you've", 0),
    (rf"\bI{_APOS}ll\b", "you'll", 0), (rf"\bI{_APOS}d\b", "you'd", 0), (r"\bI\b", "you", 0),
    (r"\bmy\b", "your", re.I), (r"\bmine\b", "yours", re.I), (r"\bmyself\b", "yourself", re.I),
    (r"\bme\b", "you", re.I),
]
_FIRST_TO_SECOND_RE = [(re.compile(p, f), r) for p, r, f in _FIRST_TO_SECOND]


def second_person(text: str) -> str:
    """'The user's sister is Ingrid.' / 'My sister is Ingrid.' -> 'Your sister is Ingrid.'

    Third-person facts and first-person statements both end up addressed to the user."""
    out = _from_third(text, 2)
    for pattern, repl in _FIRST_TO_SECOND_RE:
        out = pattern.sub(lambda m, r=repl, t=out: _cased(r, t, m.start()), out)
    return out
