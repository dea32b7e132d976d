"""Query handling for recall: what a question says beyond its words.

Owns: finding the speakers a question names (among the speakers the candidate memories carry),
the calendar dates it names ("in May", "on 13 October, 2023", "in 2022"), dates as index text
("8 May 2023"), and splitting a multi-part question into sub-queries. Knows nothing about
storage or ranking: the store asks, then weighs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
_MONTH = {m: i + 1 for i, m in enumerate(MONTHS)} | {m[:3]: i + 1 for i, m in enumerate(MONTHS)}
_MONTH_RE = "|".join(sorted(_MONTH, key=len, reverse=True))
# "13 October, 2023" / "October 13, 2023" / "October 2023" / "in May" / "2022"
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+({_MONTH_RE})\b\.?,?\s*(\d{{4}})?", re.I)
_MONTH_DAY = re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b,?\s*(\d{{4}})?", re.I)
_MONTH_YEAR = re.compile(rf"\b({_MONTH_RE})\b\.?,?\s*(\d{{4}})?", re.I)
_YEAR = re.compile(r"\b(19\d\d|20\d\d)\b")
# "may" is also a verb: only a capitalised "May" or one after "in"/"of"/a day counts as a month
_MAY_VERB = re.compile(r"^may$")


@dataclass(frozen=True)
class DateSpec:
    """A calendar span a question names; None fields are unconstrained."""
    year: int | None = None
    month: int | None = None
    day: int | None = None

    def matches(self, when: datetime) -> bool:
        return ((self.year is None or when.year == self.year)
                and (self.month is None or when.month == self.month)
                and (self.day is None or abs(when.day - self.day) <= 1))


def _month(word: str) -> int | None:
    if _MAY_VERB.match(word):  # lower-case "may" is the verb
        return None
    return _MONTH.get(word.lower())


def dates_in(question: str) -> list[DateSpec]:
    """The dates a question names, most specific first; [] when none."""
    out: list[DateSpec] = []
    taken: list[tuple[int, int]] = []

    def free(m) -> bool:
        return not any(a < m.end() and m.start() < b for a, b in taken)

    for rx, order in ((_DAY_MONTH, "dm"), (_MONTH_DAY, "md")):
        for m in rx.finditer(question):
            mon = _month(m.group(2) if order == "dm" else m.group(1))
            if mon is None or not free(m):
                continue
            day = int(m.group(1) if order == "dm" else m.group(2))
            year = int(m.group(3)) if m.group(3) else None
            out.append(DateSpec(year, mon, day))
            taken.append((m.start(), m.end()))
    for m in _MONTH_YEAR.finditer(question):
        mon = _month(m.group(1))
        if mon is None or not free(m):
            continue
        out.append(DateSpec(int(m.group(2)) if m.group(2) else None, mon))
        taken.append((m.start(), m.end()))
    for m in _YEAR.finditer(question):
        if free(m):
            out.append(DateSpec(int(m.group(1))))
    return out


def date_words(when: datetime) -> str:
    """How a date is written into index text: "8 May 2023" (BM25 then matches "May", "2023")."""
    return f"{when.day} {MONTHS[when.month - 1].capitalize()} {when.year}"


def named_speakers(question: str, speakers: set[str]) -> set[str]:
    """The speakers (exact names the memories carry) the question names, also as a first name
    or a short form of at least 3 letters ("Mel" for Melanie)."""
    words = {w.lower().removesuffix("'s") for w in re.findall(r"[A-Za-z][\w']*", question)
             if w[0].isupper()}
    out = set()
    for name in speakers:
        first = name.split()[0].lower()
        if any(w == first or (len(w) >= 3 and first.startswith(w)) for w in words):
            out.add(name)
    return out


def strip_names(question: str, speakers: set[str]) -> str:
    """The question without the speakers' names (they match every turn the speaker said)."""
    out = question
    for name in speakers:
        first = re.escape(name.split()[0])
        out = re.sub(rf"\b{first}\w*('s)?\b", " ", out, flags=re.I)
    return re.sub(r"\s+", " ", out).strip()


_SPLIT = re.compile(r"\s*(?:,|;|\band\b|\bor\b|\bboth\b|\balso\b)\s*", re.I)


def sub_queries(question: str, max_parts: int = 3) -> list[str]:
    """Parts of a multi-part question worth searching on their own, besides the whole: the
    pieces between "and"/","/"or", each with at least two content words. [] when not split."""
    parts = [p.strip(" ?.!") for p in _SPLIT.split(question) if p and p.strip(" ?.!")]
    parts = [p for p in parts if len(re.findall(r"[A-Za-z]{3,}", p)) >= 2]
    return parts[:max_parts] if len(parts) >= 2 else []


_WH = re.compile(r"^\s*(?:what|when|where|why|who|whom|which|how)(?:\s+(?:many|much|long|often))?\s+",
                 re.I)
_KIND_OF = re.compile(r"\b(?:kinds?|types?|sorts?)\s+of\s+", re.I)
_AUX = re.compile(r"\b(?:does|did|do)\b\s*", re.I)


def as_statement(question: str) -> str:
    """A question turned towards the statement that would answer it, by rule: the wh-word and
    its auxiliary go ("What did Caroline research?" -> "Caroline research"), since a sentence
    embedder matches statements to statements better than questions to statements."""
    out = _AUX.sub("", _KIND_OF.sub("", _WH.sub("", question))).strip(" ?")
    return out or question


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s+\[(?=shares a photo)")


def sentences(text: str, min_words: int = 4) -> list[str]:
    """The sentences of a long memory worth indexing on their own ([] for a one-sentence text):
    a greeting in front of the news dilutes the embedding of the whole turn."""
    parts = [p.strip(" []") for p in _SENTENCE.split(text) if p and p.strip(" []")]
    parts = [p for p in parts if len(p.split()) >= min_words]
    return parts if len(parts) >= 2 else []


_CAPTION = re.compile(r"\s*\[shares a photo[^\]]*\]?\s*$")


def is_question(text: str) -> bool:
    """Whether a memory ends on a question (a photo caption after it does not count): it asks
    for what the question is after rather than saying it."""
    return _CAPTION.sub("", text).rstrip().endswith("?")


_PRONOUN = {"her": "my", "his": "my", "hers": "mine", "she": "I", "he": "I", "him": "me",
            "herself": "myself", "himself": "myself", "their": "our", "they": "we",
            "them": "us", "themselves": "ourselves"}


def as_said_by(question: str, speakers: set[str]) -> str:
    """A question about a named speaker turned into the first-person statement the speaker
    would have made ("What do Melanie's kids like?" -> "my kids like"; two speakers: "we"):
    conversation turns are in the first person, and an embedder matches like with like.
    The question as a statement (as_statement) when it names no speaker."""
    out = as_statement(question)
    if not speakers:
        return out
    firsts = [n.split()[0].lower() for n in speakers]
    said = {w for w in re.findall(r"[A-Z][\w]*", out)
            if any(w.lower() == f or (len(w) >= 3 and f.startswith(w.lower())) for f in firsts)}
    if not said:
        return out
    name = rf"\b(?:{'|'.join(map(re.escape, sorted(said, key=len, reverse=True)))})\b"
    out = re.sub(rf"{name}['\u2019]s\s+and\s+{name}['\u2019]s\b", "our", out, flags=re.I)
    out = re.sub(rf"{name}\s+and\s+{name}\b", "we", out, flags=re.I)
    out = re.sub(rf"{name}['\u2019]s\b", "my", out, flags=re.I)
    out = re.sub(name, "I", out, flags=re.I)
    out = re.sub(r"\b(?:her|his|hers|she|he|him|herself|himself|their|they|them|themselves)\b",
                 lambda m: _PRONOUN[m.group(0).lower()], out, flags=re.I)
    return re.sub(r"\s+", " ", out).strip()
