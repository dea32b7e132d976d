"""Question phrasings for a personal fact, generated from its statement by rules.

Owns: parsing a first-person statement ("My favourite color is teal.", "I live in Oslo.") into a
topic and a value, the set of questions that ask for it, the second-person answer sentence, and
the near-duplicate test used to keep evaluation probes out of training data.
Knowledge injection needs several phrasings per fact; the rules are generic, never per item.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_ARTICLES = ("a ", "an ", "the ")
# Roles that name a person: "My dentist is Dr. Okafor." is asked as "Who is my dentist?"
_PEOPLE = frozenset("""
partner wife husband spouse boyfriend girlfriend fiance fiancee mother mom mum father dad parent
son daughter child brother sister sibling cousin aunt uncle niece nephew grandmother grandfather
grandma grandpa friend best friend neighbour neighbor flatmate roommate boss manager colleague
coworker mentor teacher tutor coach doctor dentist gp therapist physio vet lawyer accountant
landlord landlady hairdresser barber trainer favourite author favourite singer favourite actor
favourite artist favourite writer favourite composer favourite painter favourite poet
""".replace("best friend", "best_friend").replace("favourite ", "favourite_").split())
_PEOPLE = frozenset(w.replace("_", " ") for w in _PEOPLE)


@dataclass(frozen=True)
class Phrasing:
    topic: str  # "favourite color", "dog", "home city": what the fact is about
    value: str  # "teal", "Biscuit": the part a recall probe must contain
    answer: str  # a second-person sentence containing the value
    questions: tuple[str, ...]


def _clean(statement: str) -> str:
    s = " ".join(statement.strip().split())
    return s[:-1].strip() if s.endswith((".", "!")) else s


def _strip_article(s: str) -> str:
    low = s.lower()
    for a in _ARTICLES:
        if low.startswith(a):
            return s[len(a):]
    return s


_SWAP = {"i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself",
         "am": "are", "i'm": "you're", "i've": "you've", "i'd": "you'd", "i'll": "you'll",
         "was": "were"}


def second_person(statement: str) -> str:
    """'I was born in Oslo.' -> 'You were born in Oslo.' (only the speaker's words are swapped)."""
    words = _clean(statement).split(" ")
    out = []
    for i, w in enumerate(words):
        key = w.lower().replace("\u2019", "'")
        # 'was' only follows I ('I was'); elsewhere ('my dog was') it stays
        if key == "was" and (i == 0 or words[i - 1].lower() != "i"):
            out.append(w)
            continue
        rep = _SWAP.get(key)
        out.append(rep if rep else w)
    text = " ".join(out)
    return text[:1].upper() + text[1:] + "."


def _favourite(topic: str, value: str) -> tuple[str, ...]:
    kind = topic.split(" ", 1)[1]
    fav = topic.split(" ", 1)[0]
    who = (f"Who is my {topic}?",) if topic.lower() in _PEOPLE else ()
    return who + (f"What is my {topic}?", f"What's my {topic}?", f"Which {kind} do I like best?",
            f"What {kind} do I like most?", f"Tell me my {topic}.",
            f"Do you remember my {topic}?", f"Name my {topic}.", f"Which {kind} is my {fav}?")


def _named(owner: str) -> tuple[str, ...]:
    return (f"What is my {owner}'s name?", f"What's my {owner} called?", f"What did I name my {owner}?",
            f"Tell me my {owner}'s name.", f"Do you remember my {owner}'s name?",
            f"What is my {owner} called?", f"What do I call my {owner}?", f"Who is my {owner}?")


def _rules(s: str) -> Phrasing | None:
    m = re.fullmatch(r"I live in (.+)", s, re.I)
    if m:
        v = m.group(1)
        return Phrasing("home", v, f"You live in {v}.", (
            "Where do I live?", "Which city do I live in?", "Where is my home?", "Where am I based?",
            "Do you remember where I live?", "What town do I live in?", "Tell me where I live.",
            "In which place is my home?"))
    m = re.fullmatch(r"I (?:work as|am employed as) (.+)", s, re.I)
    if m:
        v = m.group(1)
        return Phrasing("job", _strip_article(v), f"You work as {v}.", (
            "What is my job?", "What do I do for a living?", "What's my profession?",
            "What do I work as?", "What is my occupation?", "Do you remember my job?",
            "Tell me what I do for work.", "What kind of work do I do?"))
    m = re.fullmatch(r"I(?:'m| am) allergic to (.+)", s, re.I)
    if m:
        v = m.group(1)
        return Phrasing("allergy", v, f"You are allergic to {v}.", (
            "What am I allergic to?", "What allergy do I have?", "Do I have any allergies?",
            "What should I avoid eating because of an allergy?", "Tell me what I'm allergic to.",
            "Do you remember my allergy?", "Which allergy do I have?", "What triggers my allergy?"))
    m = re.fullmatch(r"I have an? (.+?) (?:named|called) (.+)", s, re.I)
    if m:
        owner, v = m.group(1), m.group(2)
        return Phrasing(owner, v, f"Your {owner} is named {v}.", _named(owner))
    m = re.fullmatch(r"I was born in (.+)", s, re.I)
    if m:
        v = m.group(1)
        return Phrasing("birthplace", v, f"You were born in {v}.", (
            "Where was I born?", "What is my birthplace?", "Where do I come from originally?",
            "In which place was I born?", "Do you remember where I was born?",
            "Tell me where I was born.", "What's my place of birth?", "Which city was I born in?"))
    m = re.fullmatch(r"My (.+?)'s name is (.+)", s, re.I) or \
        re.fullmatch(r"My (.+?) is (?:called|named) (.+)", s, re.I)
    if m:
        owner, v = m.group(1), m.group(2)
        verb = "'s name is" if "'s name" in s else " is called"
        return Phrasing(owner, v, f"Your {owner}{verb} {v}.", _named(owner))
    m = re.fullmatch(r"My (favou?rite [^ ].*?) (?:is|are) (.+)", s, re.I)
    if m and " " in m.group(1):
        topic, v = m.group(1), m.group(2)
        return Phrasing(topic, v, f"Your {topic} is {v}.", _favourite(topic, v))
    m = re.fullmatch(r"My (.+?) is (.+)", s, re.I)
    if m:
        topic, v = m.group(1), m.group(2)
        qs = [f"What is my {topic}?", f"What's my {topic}?", f"Tell me my {topic}.",
              f"Do you remember my {topic}?", f"Remind me what my {topic} is.",
              f"What did I tell you my {topic} is?"]
        if topic.lower() in _PEOPLE:
            qs[2:2] = [f"Who is my {topic}?", f"Who's my {topic}?"]
        elif v[:1].isupper() and not v.lower().startswith(_ARTICLES):
            qs.append(f"Who or what is my {topic}?")
        if v.lower().startswith(_ARTICLES) and topic.lower() not in _PEOPLE:
            # "My car is a green Volvo": asked as "What kind of car do I have?"
            qs[2:2] = [f"What kind of {topic} do I have?", f"What {topic} do I have?"]
        if " " not in topic:
            qs.append(f"Which {topic} is mine?")
        return Phrasing(topic, _strip_article(v), f"Your {topic} is {v}.", tuple(qs))
    m = re.fullmatch(r"My ([\w' -]+?) (\w+?)(e?s) (to |at |for )?(.+)", s, re.I)
    if m and m.group(2).lower() not in ("wa", "ha", "i"):
        owner, base, prep, v = m.group(1), m.group(2), (m.group(4) or "").strip(), m.group(5)
        tail = f" {prep}" if prep else ""
        return Phrasing(owner, v, second_person(s), (
            f"What does my {owner} {base}{tail}?", f"Tell me about my {owner}.",
            f"What do you know about my {owner}?", f"Do you remember what my {owner} {base}{m.group(3)}{tail}?",
            f"What did I tell you about my {owner}?", f"Remind me about my {owner}."))
    return None


def _topic_guess(s: str) -> str:
    # the object of the statement: the words after the verb, e.g. "I play the bassoon" -> "bassoon"
    words = [w for w in re.findall(r"[\w'-]+", s) if w.lower() not in {"i", "my", "am", "a", "an", "the"}]
    return " ".join(words[1:]) if len(words) > 1 else (words[0] if words else "me")


def phrase(statement: str, subject: str = "") -> Phrasing:
    """Questions and an answer for one statement; a generic fallback covers unmatched forms."""
    s = _clean(statement)
    p = _rules(s)
    if p is not None:
        return p
    topic = subject.strip() or _topic_guess(s)
    answer = second_person(s)
    m = re.fullmatch(r"I (?:am|'m) (\w+ing) (.+)", s, re.I)
    extra: tuple[str, ...] = ()
    if m:
        extra = (f"What am I {m.group(1)}?", f"What am I {m.group(1)} at the moment?")
    m2 = re.fullmatch(r"I (\w+) (?:the |a |an )?(.+)", s, re.I)
    if m2 and not m and m2.group(1).lower() not in ("am", "was", "have", "had"):
        extra = (f"What do I {m2.group(1)}?", f"Tell me what I {m2.group(1)}.")
    return Phrasing(topic, topic, answer, extra + (
        f"What do you know about my {topic}?" if not topic.startswith("me") else "What do you know about me?",
        f"What did I tell you about {topic}?", f"Do you remember what I said about {topic}?",
        "What is something personal you know about me?", f"Tell me about {topic} in my life.",
        f"Remind me what I told you about {topic}."))


def normalize(q: str) -> str:
    q = unicodedata.normalize("NFKC", q).lower().replace("\u2019", "'")
    q = q.replace("what's", "what is").replace("i'm", "i am").replace("favorite", "favourite")
    return " ".join(re.findall(r"[\w']+", q))


def is_near(a: str, b: str, threshold: float = 0.8) -> bool:
    """Same question up to case, punctuation, contractions, or >= threshold word overlap."""
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return True
    wa, wb = set(na.split()), set(nb.split())
    if not wa or not wb:
        return False
    return len(wa & wb) / len(wa | wb) >= threshold
