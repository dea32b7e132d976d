"""Rule-based extraction of the user's self-statements ("I live in Oslo", "my X is Y").

Owns: the sentence rules, subject keys (what a later statement supersedes) and the canonical
third-person text a fact is stored as. No LLM: this must work next to a 135M model.
Knows nothing about storage; the store decides added / updated / superseded.

A subject key names one slot about the user ("city of residence", "favourite color"). Slots that
hold many values at once (allergies, likes, pets) carry the value in the key ("allergy: peanuts"),
so a second allergy is added rather than superseding the first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ExtractedFact:
    subject: str  # normalised slot key, e.g. "city of residence"
    value: str  # normalised value, e.g. "oslo"
    text: str  # canonical statement to store, e.g. "The user lives in Oslo."
    said: str  # the sentence it came from


# A value runs to the end of the clause: stop at punctuation or a conjunction that starts a new one.
_VALUE = r"(?P<v>[^,;.!?]+?)"
_END = r"(?=\s*(?:[,;.!?]|$|\s(?:and|but|because|since|so|which|who|where|though|although)\s))"


# (pattern, subject, template). A "{x}" subject takes the `x` group; a "*" subject gets ": value".
_RULES: list[tuple[str, object, str]] = [
    (r"\bmy name is " + _VALUE + _END, "name", "The user's name is {v}."),
    (r"\b(?:please )?call me " + _VALUE + _END, "name", "The user's name is {v}."),
    (r"\bI(?: am|'m) (?P<v>\d{1,3}) years? old\b", "age", "The user is {v} years old."),
    (r"\bI(?: currently)? (?:live|am living|'m living|reside|am based|'m based) in " + _VALUE + _END,
     "city of residence", "The user lives in {v}."),
    (r"\bI(?: just| recently| have| 've)? (?:moved|relocated) to " + _VALUE + _END,
     "city of residence", "The user lives in {v}."),
    (r"\bI was born in (?P<v>\d{4})\b", "birth year", "The user was born in {v}."),
    (r"\bI was born (?:in|at) " + _VALUE + _END, "birthplace", "The user was born in {v}."),
    (r"\bI(?: am|'m) (?:from|originally from) " + _VALUE + _END, "origin", "The user is from {v}."),
    (r"\bI(?: am|'m)(?: very| severely| mildly)? allergic to " + _VALUE + _END, "allergy*",
     "The user is allergic to {v}."),
    (r"\bI work as (?:an? )?" + _VALUE + _END, "occupation", "The user works as {a}{v}."),
    (r"\bI work (?:at|for) " + _VALUE + _END, "employer", "The user works at {v}."),
    (r"\bmy favou?rite (?P<x>[a-z]+(?: [a-z]+)?) (?:is|are) " + _VALUE + _END,
     "favourite {x}", "The user's favourite {x} is {v}."),
    (r"\bI(?: am|'m) (?:a )?(?P<v>vegetarian|vegan|pescatarian|teetotal)\b", "diet",
     "The user is {v}."),
    (r"\bI(?: am|'m) married to " + _VALUE + _END, "spouse", "The user is married to {v}."),
    (r"\bI speak " + _VALUE + _END, "language*", "The user speaks {v}."),
    (r"\bI have (?P<v>(?:a|an|one|two|three|four|five|\d+) [a-z][a-z' -]*?)" + _END, "has*",
     "The user has {v}."),
    (r"\bI (?:really )?(?:like|love|enjoy) " + _VALUE + _END, "likes*", "The user likes {v}."),
    (r"\bI (?:really )?(?:hate|dislike|can't stand) " + _VALUE + _END, "dislikes*",
     "The user dislikes {v}."),
    # Generic last: "my X is Y" ("my sister's name is Anna", "my job is nurse").
    (r"\bmy (?P<x>[a-z][a-z' ]{0,30}?) (?:is|are) " + _VALUE + _END, "{x}", "The user's {x} is {v}."),
]
_COMPILED = [(re.compile(p, re.IGNORECASE), s, t) for p, s, t in _RULES]

# Synonyms folded into one slot so "my job is X" and "I work as Y" supersede each other.
_SUBJECT_ALIASES = {
    "job": "occupation", "profession": "occupation", "occupation": "occupation",
    "work": "occupation", "home town": "origin", "hometown": "origin", "city": "city of residence",
    "address": "address", "wife": "spouse", "husband": "spouse", "partner": "spouse",
    "favorite": "favourite",
}
# "my X is Y" where X is one of these is not a stable fact about the user.
_SKIP_SUBJECTS = {"bad", "pleasure", "god", "goodness", "point", "question", "problem", "guess",
                  "turn", "fault", "mistake", "answer", "bet", "plan", "head", "day", "life"}
_NEGATION = re.compile(r"\b(?:not|n't|never|no longer)\b", re.IGNORECASE)
_FIRST_PERSON = {r"\bmy\b": "their", r"\bmine\b": "theirs", r"\bI'm\b": "they're", r"\bme\b": "them"}
_ARTICLES = re.compile(r"^(?:a|an|the|some)\s+", re.IGNORECASE)
# Time phrases say when, not what: "I moved to Oslo last week" stores "Oslo".
_TRAILING = re.compile(
    r"\s+(?:now|too|as well|these days|nowadays|anymore|right now|today|yesterday|recently|"
    r"last (?:week|month|year|summer|winter|spring|autumn|fall)|a (?:while|week|month|year) ago|"
    r"(?:in|since) \d{4})$", re.IGNORECASE)


# --- sentence boundaries -------------------------------------------------------------------
# A full stop that does not end a sentence (decimals, "Dr.", "e.g.", initials such as "K.") is
# swapped for this placeholder while sentences are split and values matched, then restored.
_KEEP = "\ue000"
# Titles that always precede a name, so their full stop never ends a sentence (case-sensitive).
_TITLES = ("Dr Mr Mrs Ms Mx Prof Rev Fr Gen Col Capt Lt Sgt Cpl Hon Gov Sen Rep Pres Supt Mt Ft "
           "Messrs Mme Mlle").split()
# Abbreviations that may also end a sentence ("I live on Main St."): treated like an initial.
_ABBREVIATIONS = ("St Ave Rd Blvd Ln Sq Inc Ltd Co Corp Bros Jr Sr Esq Dept Univ Assn etc approx "
                  "est vs cf ca vol Vol fig Fig Jan Feb Aug Sep Sept Oct Nov Dec").split()
# After an abbreviation or initial, a capitalised word from this list starts a new sentence
# ("... Main St. My sister ..."); any other word continues it ("Ursula K. Le Guin").
_STARTERS = frozenset("""I I'm I've I'd I'll My Mine We We're Our Ours The A An It It's Its He He's
His She She's Her They They're Their You You're Your But And So Then This That These Those There
Here What How Why When Where Who Which Do Did Does Is Are Was Were Can Could Would Should Will
Please Also Anyway Yes No Oh Well Hi Hello Thanks Thank Sorry Now Today Tomorrow Yesterday If
Maybe Not Let Let's""".split())
_ALWAYS = re.compile(r"(?<=\d)\.(?=\d)"  # 3.5, 1.80
                     r"|(?<![\w.])(?:%s)\.(?=\s)" % "|".join(_TITLES)  # Dr. Okafor
                     + r"|(?<![\w.])[Nn]o\.(?=\s*\d)"  # No. 5
                     + r"|(?<![\w.])(?:[eE]\.[gG]|[iI]\.[eE])\.")  # e.g. i.e.
_MAYBE = re.compile(r"(?<![\w.])(?:(?:[A-Za-z]\.){2,}"  # U.S. a.m. (dotted acronyms)
                    r"|[A-Z]\."  # K. (an initial)
                    r"|(?:%s)\.)" % "|".join(_ABBREVIATIONS)
                    + r"(?=(?P<next>\s+[\w']+)?)")


def _protect(text: str) -> str:
    """`text` with every full stop that does not end a sentence replaced by _KEEP."""
    text = text.replace(_KEEP, "")
    text = _ALWAYS.sub(lambda m: m.group(0).replace(".", _KEEP), text)

    def maybe(m: re.Match) -> str:
        inner, last = m.group(0)[:-1].replace(".", _KEEP), m.group(0)[-1]
        nxt = (m.group("next") or "").strip()
        ends = nxt in _STARTERS or not nxt[:1].isalnum()
        return inner + (last if ends else _KEEP)

    return _MAYBE.sub(maybe, text)


def _restore(text: str) -> str:
    return text.replace(_KEEP, ".")


def _split_protected(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", _protect(text.strip()))
    return [p.strip() for p in parts if p.strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`; abbreviations, initials and decimals do not end one."""
    return [_restore(p) for p in _split_protected(text)]


def normalise(value: str) -> str:
    """Comparison form of a value: lower case, no article, single spaces, no trailing dot."""
    v = re.sub(r"\s+", " ", value.strip().strip(".!?,;:\"'")).lower()
    return _ARTICLES.sub("", v)


def _clean_value(value: str) -> str:
    v = re.sub(r"\s+", " ", value).strip().strip("\"'")
    v = _TRAILING.sub("", v).strip()
    for pattern, repl in _FIRST_PERSON.items():
        v = re.sub(pattern, repl, v, flags=re.IGNORECASE)
    return v


def _subject_key(template: object, x: str, value: str) -> str:
    key = str(template)
    if "{x}" in key:
        x = re.sub(r"\s+", " ", x.strip().lower())
        words = x.split(" ")
        x = " ".join(_SUBJECT_ALIASES.get(w, w) if i == 0 else w for i, w in enumerate(words))
        key = key.format(x=_SUBJECT_ALIASES.get(x, x))
    key = _SUBJECT_ALIASES.get(key, key)
    if key.endswith("*"):  # many-valued slot: the value is part of the key
        key = f"{key[:-1]}: {normalise(value)}"
    return key


def extract_facts(text: str) -> list[ExtractedFact]:
    """Every self-statement in `text`, at most one per sentence, first matching rule wins.

    Questions and negated statements are skipped: "do I live in Oslo?" and "I don't live in
    Oslo" must not store "lives in Oslo".
    """
    found: list[ExtractedFact] = []
    for protected in _split_protected(text):
        sentence = _restore(protected)
        if sentence.endswith("?"):
            continue
        for pattern, subject, template in _COMPILED:
            m = pattern.search(protected)
            if not m:
                continue
            head = sentence[:m.end()]
            if _NEGATION.search(head):
                break
            raw = _restore(m.group("v"))
            value = _clean_value(raw)
            x = _restore(m.groupdict().get("x") or "")
            if not value or len(value) > 80 or (x and x.strip().lower() in _SKIP_SUBJECTS):
                break
            key = _subject_key(subject, x, value)
            article = "an " if value[:1].lower() in "aeiou" else "a "
            canonical = template.format(v=value, x=_subject_key("{x}", x, value) if x else "",
                                        a=article)
            if canonical.endswith(".."):  # the value ended in an abbreviation ("Acme Inc.")
                canonical = canonical[:-1]
            found.append(ExtractedFact(key, normalise(value), canonical, sentence))
            break
    return found


def subject_of(text: str) -> tuple[str | None, str | None]:
    """(subject, value) of the first self-statement in `text`, or (None, None)."""
    facts = extract_facts(text)
    return (facts[0].subject, facts[0].value) if facts else (None, None)
