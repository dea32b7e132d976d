"""Rule-based extraction of the user's self-statements ("I live in Oslo", "my X is Y").

Owns: the clause and sentence rules, subject keys (what a later statement supersedes) and the
canonical third-person text a fact is stored as. No LLM: this must work next to a 135M model.
Knows nothing about storage; the store decides added / updated / superseded.

A subject key names one slot about the user ("city of residence", "favourite color"). Slots that
hold many values at once (allergies, likes, pets) carry the value in the key ("allergy: peanuts"),
so a second allergy is added rather than superseding the first.

A sentence is split into clauses ("I live in York and I work as a nurse"); each clause gives at
most one fact from the rule table, plus the name and attribute of a person the user names ("my
sister Anjali is a doctor"). "she/he/they" at the start of a clause stands for the last person
named in the message. "we/our" are read as "I/my": the user speaking for a household.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .voice import first_person


@dataclass(frozen=True)
class ExtractedFact:
    subject: str  # normalised slot key, e.g. "city of residence"
    value: str  # normalised value, e.g. "oslo"
    text: str  # canonical statement to store, e.g. "The user lives in Oslo."
    said: str  # the sentence it came from


# A value runs to the end of the clause: stop at punctuation or a conjunction that starts a new one.
_VALUE = r"(?P<v>[^,;.!?]+?)"
_END = r"(?=\s*(?:[,;.!?]|$|\s(?:and|but|because|since|so|which|who|where|when|whenever|if|though|although)\s))"
# Words between "I" and its verb that do not change the fact ("I really like", "I currently live").
_ADV = r"(?:(?:[a-z]+ly|just|also|still|so|even|do) )*"
_NAME = r"(?-i:[A-Z][\w'-]*(?: [A-Z][\w'-]*)?)"  # one or two capitalised words, as typed


@dataclass(frozen=True)
class _Rule:
    pattern: str
    subject: str  # a "{x}" subject takes the `x` group; a trailing "*" appends ": value"
    template: str  # {v} value, {x} subject words, {a} "a "/"an "; {c} "called ", {be} as said
    # The pattern carries its own negation ("can't stand"): only a negation before it disqualifies.
    negated: bool = False
    check: Callable[[str], bool] | None = None  # the value must pass, else the next rule is tried


def _not_adjective(name: str) -> bool:
    first = name.split(" ")[0]
    return (first.lower() not in _NOT_NAMES and first not in _STARTERS
            and not first.lower().endswith(("ish", "ese")))


def _an_occupation(value: str) -> bool:
    # The noun phrase before any preposition: "nurse" in "nurse at the city hospital".
    head = re.split(r"\s(?:at|in|for|with|of|from|on|to|who|and)\s", value.lower(), maxsplit=1)[0]
    return not any(w in _NOT_JOBS or w.endswith("ly") or w.isdigit() for w in head.split())


# "I'm <capitalised word>" is a name unless it is one of these (adjectives, nationalities).
_NOT_NAMES = frozenset("""happy sad tired fine good okay ok great sorry ready here back home busy
sure glad excited bored hungry thirsty sick ill well alright done new old free late early lost stuck
confused curious afraid scared worried nervous angry upset lonely single married pregnant retired
vegetarian vegan pescatarian human american canadian australian indian italian german russian
brazilian mexican nigerian korean kenyan european asian african muslim jewish hindu buddhist
catholic christian""".split())
# "I'm a <head>" is an occupation unless the head is one of these (degree, fandom, person words).
_NOT_JOBS = frozenset("""bit little lot big huge massive great good bad real total complete kind
sort fan lover person people man woman guy girl boy lady morning night very pretty quite really
member part mother father mum mom dad parent wife husband""".split())

_RULES: list[_Rule] = [
    _Rule(r"\bmy name is " + _VALUE + _END, "name", "The user's name is {v}."),
    _Rule(r"\b(?:please )?call me " + _VALUE + _END, "name", "The user's name is {v}."),
    _Rule(r"\bI(?: am|'m) (?P<v>" + _NAME + ")" + _END, "name", "The user's name is {v}.",
          check=_not_adjective),
    _Rule(r"\bI(?: am|'m) (?P<v>\d{1,3})(?: years? old)?" + _END, "age",
          "The user is {v} years old."),
    _Rule(r"\bI " + _ADV + r"(?:live|am living|'m living|reside|am based|'m based) in " + _VALUE
          + _END, "city of residence", "The user lives in {v}."),
    _Rule(r"\bI(?: just| recently| have| 've|'ve)? (?:moved|relocated) to " + _VALUE + _END,
          "city of residence", "The user lives in {v}."),
    _Rule(r"\bI was born in (?P<v>\d{4})\b", "birth year", "The user was born in {v}."),
    _Rule(r"\bI was born (?:in|at) " + _VALUE + _END, "birthplace", "The user was born in {v}."),
    _Rule(r"\bI(?: am|'m) (?:from|originally from) " + _VALUE + _END, "origin",
          "The user is from {v}."),
    _Rule(r"\bI(?: am|'m)(?: very| severely| mildly)? allergic to " + _VALUE + _END, "allergy*",
          "The user is allergic to {v}."),
    _Rule(r"\bI " + _ADV + r"work as (?:an? )?" + _VALUE + _END, "occupation",
          "The user works as {a}{v}."),
    _Rule(r"\bI " + _ADV + r"work (?:at|for) " + _VALUE + _END, "employer",
          "The user works at {v}."),
    _Rule(r"\bmy favou?rite (?P<x>[a-z]+(?: [a-z]+)?) (?P<be>is|are) " + _VALUE + _END,
          "favourite {x}", "The user's favourite {x} {be} {v}."),
    _Rule(r"\bI(?: am|'m) (?:a )?(?P<v>vegetarian|vegan|pescatarian|teetotal)\b", "diet",
          "The user is {v}."),
    _Rule(r"\bI(?: am|'m) married to " + _VALUE + _END, "spouse", "The user is married to {v}."),
    _Rule(r"\bI speak " + _VALUE + _END, "language*", "The user speaks {v}."),
    # Negated facts the user wants kept: what they cannot or do not eat, drink or do.
    _Rule(r"\bI " + _ADV + r"(?:can't|cannot|can not|am unable to|'m unable to) "
          r"(?P<x>eat|drink|have|tolerate|digest) " + _VALUE + _END,
          "cannot {x}*", "The user can't {x} {v}.", negated=True),
    _Rule(r"\bI " + _ADV + r"(?:don't|do not|never) (?P<x>eat|drink|smoke) " + _VALUE + _END,
          "does not {x}*", "The user does not {x} {v}.", negated=True),
    _Rule(r"\bI(?: am|'m) (?:an? )?(?:big |huge |massive |great |real )?fan of " + _VALUE + _END,
          "likes*", "The user likes {v}."),
    _Rule(r"\bI have (?P<v>(?:a|an|one|two|three|four|five|\d+) [a-z][a-z' -]*?)" + _END, "has*",
          "The user has {v}."),
    _Rule(r"\bI " + _ADV + r"(?:hate|dislike|detest|loathe|can't stand|cannot stand|can not stand|"
          r"don't like|do not like|don't enjoy|do not enjoy) " + _VALUE + _END, "dislikes*",
          "The user dislikes {v}.", negated=True),
    _Rule(r"\bI " + _ADV + r"(?:like|love|enjoy|adore) " + _VALUE + _END, "likes*",
          "The user likes {v}."),
    _Rule(r"\bI(?: am|'m) an? " + _VALUE + _END, "occupation", "The user works as {a}{v}.",
          check=_an_occupation),
    # Generic last: "my X is Y" ("my sister's name is Anna", "my dog is called Rex").
    _Rule(r"\bmy (?P<x>[a-z][a-z' ]{0,30}?) (?P<be>is|are) (?P<c>(?:called|named) )?" + _VALUE
          + _END, "{x}", "The user's {x} {be} {c}{v}."),
]
_COMPILED = [(re.compile(r.pattern, re.IGNORECASE), r) for r in _RULES]
_GENERIC = _RULES[-1]

# Synonyms folded into one slot so "my job is X" and "I work as Y" supersede each other; the
# stored text says the slot's name ("The user's occupation is teacher.").
_SUBJECT_ALIASES = {
    "job": "occupation", "profession": "occupation", "occupation": "occupation",
    "work": "occupation", "home town": "origin", "hometown": "origin", "city": "city of residence",
    "address": "address", "favorite": "favourite",
}
# Folded in the key only: the text keeps the user's word ("The user's partner is called Ines.").
_PERSON_ALIASES = {"wife": "spouse", "husband": "spouse", "partner": "spouse"}
# "my X is Y" where X is one of these is not a stable fact about the user.
_SKIP_SUBJECTS = {"bad", "pleasure", "god", "goodness", "point", "question", "problem", "guess",
                  "turn", "fault", "mistake", "answer", "bet", "plan", "head", "day", "life"}
_NEGATION = re.compile(r"\b(?:not|never|no longer|cannot)\b|n't\b", re.IGNORECASE)
# First-person words inside a value become "the user", which first_person turns back exactly.
_FIRST_PERSON = {r"\bmy\b": "the user's", r"\bmine\b": "the user's", r"\bmyself\b": "the user",
                 r"\bme\b": "the user"}
_ARTICLES = re.compile(r"^(?:a|an|some|the(?!\s+user\b))\s+", re.IGNORECASE)
# Time phrases say when, not what: "I moved to Oslo last week" stores "Oslo".
_TRAILING = re.compile(
    r"\s+(?:now|too|as well|these days|nowadays|anymore|any more|right now|today|yesterday|"
    r"recently|lately|earlier|"
    r"(?:last|this|next|over the|at the) (?:week|weekend|month|year|summer|winter|spring|autumn|"
    r"fall|night|morning|evening)|"
    r"(?:a|one|two|three|a few|a couple of|\d+) (?:days?|weeks?|weekends?|months?|years?) ago|"
    r"a while ago|(?:in|since) \d{4})$", re.IGNORECASE)
# An opinion whose object only points back at something named before ("I hate it", "... I hate
# the texture" after "I can't stand mushrooms") is not a second opinion.
_POINTS_BACK = re.compile(r"^(?:it|that|this|them|those|these|(?:the|that|this|its|those|these) "
                          r"[\w-]+)$", re.IGNORECASE)


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
    while True:  # "last week now": drop every trailing time phrase
        shorter = _TRAILING.sub("", v).strip()
        if shorter == v:
            break
        v = shorter
    for pattern, repl in _FIRST_PERSON.items():
        v = re.sub(pattern, repl, v, flags=re.IGNORECASE)
    return v


def _fold(words: str, person_too: bool) -> str:
    x = re.sub(r"\s+", " ", words.strip().lower())
    first, _, rest = x.partition(" ")
    x = " ".join(filter(None, [_SUBJECT_ALIASES.get(first, first), rest]))
    x = _SUBJECT_ALIASES.get(x, x)
    return _PERSON_ALIASES.get(x, x) if person_too else x


def _subject_key(template: str, x: str, value: str) -> str:
    key = template.format(x=_fold(x, person_too=True)) if "{x}" in template else template
    key = _SUBJECT_ALIASES.get(key, key)
    if key.endswith("*"):  # many-valued slot: the value is part of the key
        key = f"{key[:-1]}: {normalise(value)}"
    return key


def _finish(text: str) -> str:
    return text[:-1] if text.endswith("..") else text  # the value ended in "Inc." or "St."


# --- clauses -------------------------------------------------------------------------------
# A new clause starts where a subject does after ";", a comma or a conjunction: "I live in York
# and I work as a nurse", "my sister Anjali, she is a doctor". A conjunction between two values
# ("peanuts and shellfish") does not split.
_SUBJECTS = r"(?:I\b|(?i:my|she|he|they)\b)"
_CLAUSE_BREAK = re.compile(r"\s*;\s*|,?\s+(?:and|but|so|and then|while)\s+(?=" + _SUBJECTS + ")"
                           r"|,\s+(?=" + _SUBJECTS + ")")
_PLURAL = [(r"\bwe are\b", "I am"), (r"\bwe're\b", "I'm"), (r"\bwe were\b", "I was"),
           (r"\bwe\b", "I"), (r"\bour\b", "my"), (r"\bours\b", "mine")]
_PLURAL_RE = [(re.compile(p, re.IGNORECASE), r) for p, r in _PLURAL]
_PRONOUN = re.compile(r"^(?:she|he|they)(?P<is>'s\b)?\s*", re.IGNORECASE)

# "my sister Anjali", "my best friend Sam": a role word or two, then a name as typed.
_PERSON = re.compile(r"\b[Mm]y (?P<rel>[a-z]+(?: [a-z]+){0,2}?),? (?P<name>[A-Z][\w\ue000-]*"
                     r"(?: [A-Z][\w\ue000-]*)?)(?![\w'])(?:,? (?:who )?(?P<rest>[^,;.!?]*))?")
# Words that cannot be part of a role ("my trip to Paris", "my doctor is Dr Okafor").
_NOT_ROLE = frozenset("""to in at on from with for of by and or but the a an is are was were has
had have called named that who""".split())
_VERBISH = frozenset("is was has had can could will would does did".split())


def _person_facts(clause: str, sentence: str) -> tuple[list[ExtractedFact], tuple[str, str] | None]:
    """For "my <role> <Name> ...": the name, and what they do or are; and (role, Name)."""
    for m in _PERSON.finditer(clause):
        rel, name = m.group("rel"), _restore(m.group("name"))
        if any(w in _NOT_ROLE for w in rel.split()) or name.split(" ")[0] in _STARTERS:
            continue
        facts = [ExtractedFact(_subject_key("{x}", rel, name), normalise(name),
                               f"The user's {rel} is {name}.", sentence)]
        rest = _restore(_clean_value(m.group("rest") or ""))
        verb = rest.split(" ")[0].lower()
        # "my friend Sam in Paris" says no more than the name; "... Sam isn't here" is negated.
        if (verb in _VERBISH or re.fullmatch(r"[a-z]{3,}(?:s|ed)", verb)) \
                and not _NEGATION.search(rest):
            what = rest.split(" ", 1)[1] if " " in rest else rest  # "a doctor in Pune"
            facts.append(ExtractedFact(f"{_fold(rel, person_too=True)} {name.lower()}: {verb}",
                                       normalise(what), _finish(f"The user's {rel} {name} {rest}."),
                                       sentence))
        return facts, (rel, name)
    return [], None


def _points_back(value: str, after_opinion: bool) -> bool:
    # "it"/"that" always points back; "the texture" only after an opinion in the same sentence.
    return bool(_POINTS_BACK.match(value)) and (after_opinion or " " not in value)


def _rule_fact(clause: str, sentence: str, skip_generic: bool,
               after_opinion: bool) -> tuple[ExtractedFact | None, tuple[str, str] | None]:
    """The first rule that matches the clause and passes its checks, and the person it names
    ("my partner is called Ines" names (partner, Ines)), or (None, None)."""
    for pattern, rule in _COMPILED:
        if skip_generic and rule is _GENERIC:
            continue
        m = pattern.search(clause)
        if not m:
            continue
        head = clause[:m.start()] if rule.negated else clause[:m.end()]
        if _NEGATION.search(head):
            return None, None
        value = _clean_value(_restore(m.group("v")))
        x = _restore(m.groupdict().get("x") or "")
        if not value or len(value) > 80 or (x and x.strip().lower() in _SKIP_SUBJECTS):
            return None, None
        if rule.check is not None and not rule.check(value):
            continue
        if rule.subject in ("likes*", "dislikes*") and _points_back(value, after_opinion):
            return None, None
        key = _subject_key(rule.subject, x, value)
        article = "an " if value[:1].lower() in "aeiou" else "a "
        text = rule.template.format(v=value, x=_fold(x, person_too=False) if x else "",
                                    a=article, c=(m.groupdict().get("c") or "").lower(),
                                    be=(m.groupdict().get("be") or "").lower())
        named = None
        if rule is _GENERIC and re.fullmatch(_NAME, value):
            named = (x.strip().lower(), value)
        return ExtractedFact(key, normalise(value), _finish(text), sentence), named
    return None, None


def _clauses(protected: str) -> list[str]:
    text = protected.replace("\u2019", "'")
    for pattern, repl in _PLURAL_RE:
        text = pattern.sub(lambda m, r=repl: r[:1].upper() + r[1:] if m.group(0)[0].isupper()
                           else r, text)
    return [c.strip() for c in _CLAUSE_BREAK.split(text) if c and c.strip()]


def _resolve(clause: str, person: tuple[str, str] | None) -> str:
    """'she is a doctor' -> 'my sister Anjali is a doctor' when Anjali was named last."""
    if person is None:
        return clause
    return _PRONOUN.sub(lambda m: f"my {person[0]} {person[1]} " + ("is " if m.group("is") else ""),
                        clause, count=1)


def extract_facts(text: str) -> list[ExtractedFact]:
    """Every self-statement in `text`: at most one table rule per clause, plus named people.

    Questions and negated statements are skipped: "do I live in Oslo?" and "I don't live in
    Oslo" must not store "lives in Oslo"; "I can't eat gluten" is kept as what it says.
    """
    found: list[ExtractedFact] = []
    seen: set[tuple[str, str]] = set()
    person: tuple[str, str] | None = None  # who "she/he/they" stands for

    for protected in _split_protected(text):
        sentence = _restore(protected)
        if sentence.endswith("?"):
            continue
        after_opinion = False
        for clause in _clauses(protected):
            clause = _resolve(clause, person)
            people, named = _person_facts(clause, sentence)
            fact, named_by_rule = _rule_fact(clause, sentence, bool(people), after_opinion)
            person = named or named_by_rule or person
            if fact is not None:
                after_opinion = after_opinion or fact.subject.startswith(("likes:", "dislikes:"))
            for f in people + ([fact] if fact else []):
                if (f.subject, f.value) not in seen:
                    seen.add((f.subject, f.value))
                    found.append(f)
    return found


def subject_of(text: str) -> tuple[str | None, str | None]:
    """(subject, value) of the self-statement `text` makes, or (None, None).

    Works on what the user said and on the stored canonical text ("The user lives in York."),
    which is read in the first person: the store compares an old fact's value with a new one.
    When a text gives several facts, the one whose own text it is wins, else the first."""
    said = first_person(text or "")
    facts = extract_facts(said)
    if not facts:
        return None, None
    key = _comparable(said)
    best = next((f for f in facts if _comparable(first_person(f.text)) == key), facts[0])
    return best.subject, best.value


def _comparable(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower()))
