"""Preference (habit) probe files and their scoring: does an answer follow how the user asked to
be answered?

Owns the file format of `reverie eval --preferences` ({"id", "night", "statement", "demos":
[{"prompt", "answer"}], "probes": [{"prompt", "must_match": [regex], "must_not_match": [regex],
"max_words": int|null}]}), its validation (line-numbered errors with a fix) and `follows()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ReverieError
from .probes import _bad


@dataclass(frozen=True)
class HabitProbe:
    prompt: str
    must_match: tuple[str, ...] = ()
    must_not_match: tuple[str, ...] = ()
    max_words: int | None = None


@dataclass(frozen=True)
class Habit:
    id: str
    night: int
    statement: str
    demos: tuple[tuple[str, str], ...]  # (prompt, the answer the user wants)
    probes: tuple[HabitProbe, ...]


def follows(answer: str, probe: HabitProbe) -> bool:
    """Every must_match regex found, no must_not_match regex found, and at most max_words."""
    if any(re.search(p, answer) is None for p in probe.must_match):
        return False
    if any(re.search(p, answer) for p in probe.must_not_match):
        return False
    return probe.max_words is None or len(answer.split()) <= probe.max_words


def _regexes(path, lineno, obj, key) -> tuple[str, ...]:
    vals = obj.get(key, [])
    if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
        raise _bad(path, lineno, f"{key!r} must be a list of regular expressions",
                   f'Write e.g. "{key}": ["(?i)^in short"].')
    for v in vals:
        try:
            re.compile(v)
        except re.error as e:
            raise _bad(path, lineno, f"{key} regex {v!r} does not compile ({e})",
                       "Fix the regular expression (Python `re` syntax).") from None
    return tuple(vals)


def load_habits(path: Path | str) -> list[Habit]:
    from .probes import read_jsonl

    path = Path(path)
    out, seen = [], set()
    for lineno, obj in read_jsonl(path, "preferences file"):
        for key in ("id", "statement"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise _bad(path, lineno, f"missing or empty {key!r}", f'Add "{key}": "...".')
        if obj["id"] in seen:
            raise _bad(path, lineno, f"duplicate id {obj['id']!r}", "Give every line its own id.")
        seen.add(obj["id"])
        night = obj.get("night", 1)
        if not isinstance(night, int) or isinstance(night, bool) or night < 1:
            raise _bad(path, lineno, f"night must be a whole number >= 1, got {night!r}", 'Write e.g. "night": 1.')
        demos = obj.get("demos", [])
        if not isinstance(demos, list) or not all(
                isinstance(d, dict) and isinstance(d.get("prompt"), str) and isinstance(d.get("answer"), str)
                for d in demos):
            raise _bad(path, lineno, "'demos' must be a list of {\"prompt\", \"answer\"}",
                       'Write e.g. "demos": [{"prompt": "...", "answer": "..."}].')
        probes = obj.get("probes")
        if not isinstance(probes, list) or not probes:
            raise _bad(path, lineno, "missing 'probes' (a non-empty list)",
                       'Add "probes": [{"prompt": "...", "must_match": ["..."]}].')
        ps = []
        for p in probes:
            if not isinstance(p, dict) or not isinstance(p.get("prompt"), str) or not p["prompt"].strip():
                raise _bad(path, lineno, "every probe needs a 'prompt'", 'Write {"prompt": "...", ...}.')
            mw = p.get("max_words")
            if mw is not None and (not isinstance(mw, int) or isinstance(mw, bool) or mw < 1):
                raise _bad(path, lineno, f"max_words must be a positive whole number or null, got {mw!r}",
                           'Write e.g. "max_words": 20.')
            ps.append(HabitProbe(p["prompt"], _regexes(path, lineno, p, "must_match"),
                                 _regexes(path, lineno, p, "must_not_match"), mw))
        out.append(Habit(obj["id"], night, obj["statement"],
                         tuple((d["prompt"], d["answer"]) for d in demos), tuple(ps)))
    if not out:
        raise ReverieError(f"{path} has no preferences; each line is one JSON object.")
    return out
