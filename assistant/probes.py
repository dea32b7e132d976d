"""Probe files and how a model is scored on them.

Owns: loading and validating probe files (personal facts; multiple choice in the HellaSwag, PIQA
and MMLU layouts; plain text; prompt lists), the probes bundled in assistant/data, and scoring a
runtime on them: multiple-choice accuracy by log-likelihood the way lm-evaluation-harness does it,
whether an answer states a personal fact, perplexity and KL drift over general text.
Does not know about arms, nights, adapters or reports: evaluate.py composes these.

A runtime here is anything with the quant.runtime.Runtime scoring methods (loglikelihood,
next_token_logprobs, tokenize, count_tokens), so tests can pass fakes.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lora.metrics import mean_kl, perplexity_from_logprobs

from .errors import ReverieError

PERSONA_FIELDS = ("id", "night", "statement", "questions", "answer", "aliases")
CHUNK_TOKENS = 256  # scoring window per text chunk; well inside every runtime's context
Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class PersonaFact:
    id: str
    night: int  # 1-based: the day the user tells it
    statement: str  # what the user says
    questions: list[str]  # probe phrasings; a trainer must never see them
    answer: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class MCItem:
    """One multiple-choice item, already rendered into lm-eval's context / continuations."""

    id: str
    task: str  # "hellaswag" | "piqa" | "mmlu"
    context: str
    continuations: list[str]  # what is scored after context, delimiter included
    choices: list[str]  # the raw choice texts (their length normalises acc_norm)
    label: int


@dataclass
class MCResult:
    acc: float
    acc_norm: float
    correct: list[bool]  # per item, by raw log-likelihood
    correct_norm: list[bool]  # per item, by log-likelihood per character of the choice
    ids: list[str]

    @property
    def n(self) -> int:
        return len(self.correct)


# --- loading ------------------------------------------------------------------------------

def _bad(path: Path, lineno: int, what: str, fix: str) -> ReverieError:
    return ReverieError(f"{path}:{lineno}: {what}. {fix}")


def read_jsonl(path: Path | str, what: str = "probe file") -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; a missing or unreadable
    file, a line that is not JSON or not an object is a ReverieError naming the file and line.
    Shared by every JSONL input (probes, scenarios, preferences); may return no rows."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReverieError(f"{what} {path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise ReverieError(f"{path} is a directory; give a .jsonl file.") from None
    except UnicodeDecodeError as e:
        raise ReverieError(f"{path} is not UTF-8 text ({e}); save it as UTF-8.") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, lineno, f"not valid JSON ({e.msg} at column {e.colno})",
                       "Each line must be one complete JSON object.") from None
        if not isinstance(obj, dict):
            raise _bad(path, lineno, f"expected a JSON object, got {type(obj).__name__}",
                       "Each line must be one JSON object like {\"id\": ...}.")
        rows.append((lineno, obj))
    return rows


def _read_jsonl(path: Path | str) -> list[tuple[int, dict]]:
    rows = read_jsonl(path)
    if not rows:
        raise ReverieError(f"{path} has no items; add one JSON object per line.")
    return rows


def _str(path, lineno, obj, key, fix) -> str:
    if key not in obj:
        raise _bad(path, lineno, f"missing field {key!r}", fix)
    v = obj[key]
    if not isinstance(v, str) or not v.strip():
        raise _bad(path, lineno, f"field {key!r} must be a non-empty string, got {v!r}", fix)
    return v


def _str_list(path, lineno, obj, key, fix, min_len: int) -> list[str]:
    if key not in obj:
        raise _bad(path, lineno, f"missing field {key!r}", fix)
    v = obj[key]
    if not isinstance(v, list) or not all(isinstance(s, str) and s.strip() for s in v):
        raise _bad(path, lineno, f"field {key!r} must be a list of non-empty strings", fix)
    if len(v) < min_len:
        raise _bad(path, lineno, f"field {key!r} has {len(v)} entries, needs at least {min_len}", fix)
    return list(v)


def _unique(path, lineno, seen: set, item_id: str) -> None:
    if item_id in seen:
        raise _bad(path, lineno, f"duplicate id {item_id!r}", "Give every item its own id.")
    seen.add(item_id)


def load_persona(path: Path | str) -> list[PersonaFact]:
    """Personal facts, one JSON object a line: {"id","night","statement","questions","answer","aliases"}."""
    path = Path(path)
    fix = ('Each line needs {"id": str, "night": int >= 1, "statement": str, "questions": [str, ...], '
           '"answer": str, "aliases": [str, ...]}.')
    facts, seen = [], set()
    for lineno, obj in _read_jsonl(path):
        fid = _str(path, lineno, obj, "id", fix)
        night = obj.get("night")
        if "night" not in obj:
            raise _bad(path, lineno, "missing field 'night'", fix)
        if not isinstance(night, int) or isinstance(night, bool) or night < 1:
            raise _bad(path, lineno, f"field 'night' must be an integer >= 1, got {night!r}", fix)
        statement = _str(path, lineno, obj, "statement", fix)
        questions = _str_list(path, lineno, obj, "questions", fix, 1)
        answer = _str(path, lineno, obj, "answer", fix)
        aliases = _str_list(path, lineno, obj, "aliases", fix, 0) if "aliases" in obj else []
        _unique(path, lineno, seen, fid)
        facts.append(PersonaFact(fid, night, statement, questions, answer.strip(),
                                 [a.strip() for a in aliases]))
    return facts


def _mmlu_context(question: str, choices: list[str], subject: str | None) -> str:
    # lm-eval's mmlu default template, zero-shot, with its per-subject description line
    head = (f"The following are multiple choice questions (with answers) about "
            f"{subject.replace('_', ' ')}.\n\n") if subject else ""
    lettered = "".join(f"\n{chr(65 + k)}. {c}" for k, c in enumerate(choices))
    return f"{head}{question.strip()}{lettered}\nAnswer:"


def _mc_item(path: Path, lineno: int, obj: dict) -> MCItem:
    fix = ('Use one of: {"id", "context", "endings", "label"} (HellaSwag), '
           '{"id", "goal", "choices", "label"} (PIQA), {"id", "question", "choices", "label"} (MMLU).')
    item_id = _str(path, lineno, obj, "id", fix)
    if "context" in obj and "endings" in obj:
        task, context = "hellaswag", _str(path, lineno, obj, "context", fix)
        choices = _str_list(path, lineno, obj, "endings", fix, 2)
    elif "goal" in obj and "choices" in obj:
        task = "piqa"
        choices = _str_list(path, lineno, obj, "choices", fix, 2)
        context = f"Question: {_str(path, lineno, obj, 'goal', fix)}\nAnswer:"
    elif "question" in obj and "choices" in obj:
        task = "mmlu"
        choices = _str_list(path, lineno, obj, "choices", fix, 2)
        if len(choices) > 26:
            raise _bad(path, lineno, f"{len(choices)} choices, MMLU letters go to Z", "Use at most 26.")
        subject = obj.get("subject")
        subject = subject if isinstance(subject, str) and subject.strip() else None
        context = _mmlu_context(_str(path, lineno, obj, "question", fix), choices, subject)
    else:
        raise _bad(path, lineno, f"unrecognised item with fields {sorted(obj)}", fix)
    if "label" not in obj:
        raise _bad(path, lineno, "missing field 'label'", fix)
    label = obj["label"]
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(choices):
        raise _bad(path, lineno, f"label {label!r} is out of range for {len(choices)} choices",
                   f"label is the 0-based index of the right choice: 0..{len(choices) - 1}.")
    if task == "mmlu":
        # scored continuation is the letter, so acc_norm divides by the letter's length
        letters = [chr(65 + k) for k in range(len(choices))]
        return MCItem(item_id, task, context, [" " + x for x in letters], letters, label)
    return MCItem(item_id, task, context, [" " + c for c in choices], choices, label)


def load_multiple_choice(path: Path | str) -> list[MCItem]:
    """Multiple-choice items; each line may be in the HellaSwag, PIQA or MMLU layout."""
    path = Path(path)
    items, seen = [], set()
    for lineno, obj in _read_jsonl(path):
        item = _mc_item(path, lineno, obj)
        _unique(path, lineno, seen, item.id)
        items.append(item)
    return items


def load_texts(path: Path | str) -> list[str]:
    """Plain-text paragraphs separated by blank lines (for perplexity and KL drift)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReverieError(f"text file {path} does not exist; check the path.") from None
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", raw)]
    paras = [p for p in paras if p]
    if not paras:
        raise ReverieError(f"{path} has no text; write paragraphs separated by blank lines.")
    return paras


def load_prompts(path: Path | str) -> list[str]:
    """One prompt a line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ReverieError(f"prompt file {path} does not exist; check the path.") from None
    prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not prompts:
        raise ReverieError(f"{path} has no prompts; write one question a line.")
    return prompts


# --- bundled probes -----------------------------------------------------------------------

def bundled_path(name: str) -> Path:
    """Path of a probe file shipped in assistant/data (general_mc.jsonl, general_text.txt, ...)."""
    res = resources.files("assistant") / "data" / name
    if not res.is_file():
        raise ReverieError(f"bundled probe {name!r} is missing from the package; reinstall reverie.")
    return Path(str(res))


def bundled_general_mc() -> list[MCItem]:
    return load_multiple_choice(bundled_path("general_mc.jsonl"))


def bundled_general_text() -> list[str]:
    return load_texts(bundled_path("general_text.txt"))


@dataclass(frozen=True)
class FactualItem:
    """A short general question with its answer: does the model still know what everyone knows."""
    question: str
    answer: str
    aliases: tuple[str, ...] = ()


def load_factual(path: Path | str) -> list[FactualItem]:
    """{"q", "a", "aliases"} lines; a missing field is a line-numbered ReverieError."""
    out = []
    for n, row in read_jsonl(path, "factual probe file"):
        q, a, al = row.get("q"), row.get("a"), row.get("aliases", [])
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip() \
                or not isinstance(al, list) or not all(isinstance(x, str) for x in al):
            raise ReverieError(f"{path}:{n}: a factual probe needs \"q\" and \"a\" (text) and "
                               "optional \"aliases\" (a list of texts).")
        out.append(FactualItem(q.strip(), a.strip(), tuple(al)))
    return out


def bundled_general_facts() -> list[FactualItem]:
    """320 short general questions written for reverie (none from any benchmark): the gate's
    check that an adapter still answers what the base model answered (France -> Paris)."""
    return load_factual(bundled_path("general_facts.jsonl"))


def bundled_persona_demo() -> list[PersonaFact]:
    return load_persona(bundled_path("persona_demo.jsonl"))


def bundled_general_prompts() -> list[str]:
    return load_prompts(bundled_path("general_prompts.txt"))


# --- scoring ------------------------------------------------------------------------------

def score_multiple_choice(runtime, items: Sequence[MCItem], limit: int | None = None,
                          progress: Progress | None = None) -> MCResult:
    """acc and acc_norm by log-likelihood of each continuation, as lm-evaluation-harness does.

    acc_norm divides each choice's log-likelihood by the character length of the choice text
    (lm-eval's `len(choice)`: characters, not tokens, so it does not depend on the tokenizer).
    """
    items = list(items)[:limit] if limit is not None else list(items)
    if not items:
        raise ReverieError("no multiple-choice items to score; check the probe file or --limit.")
    correct, correct_norm = [], []
    for k, item in enumerate(items):
        lls = np.array([runtime.loglikelihood(item.context, c).logprob for c in item.continuations])
        lengths = np.array([max(1, len(c)) for c in item.choices], dtype=float)
        # np.argmax takes the first maximum on ties, as lm-eval does
        correct.append(int(np.argmax(lls)) == item.label)
        correct_norm.append(int(np.argmax(lls / lengths)) == item.label)
        if progress:
            progress(k + 1, len(items))
    n = len(items)
    return MCResult(sum(correct) / n, sum(correct_norm) / n, correct, correct_norm,
                    [i.id for i in items])


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # é -> e, not ø -> o
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("-", " ")
    return " ".join(text.casefold().split())


def _mentions(text: str, target: str) -> bool:
    t = _fold(target)
    if not t:
        return False
    # Start at a word boundary so "oat" does not match "goat"; numbers get digit boundaries on
    # both sides so "14" matches "14th" but not "140" or "3.14". Words may be followed by more
    # letters ("oat" in "oats", a stem like "Valpara" in "Valparaiso"), except very short ones.
    if t[0].isdigit():
        start = r"(?<!\d)(?<!\d[.,])"
    elif t[0].isalnum():
        start = r"(?<!\w)"
    else:
        start = ""
    if t[-1].isdigit():
        end = r"(?!\d)(?![.,]\d)"
    elif len(t) <= 2 and t[-1].isalnum():
        end = r"(?!\w)"
    else:
        end = ""
    return re.search(start + re.escape(t) + end, _fold(text)) is not None


def personal_correct(answer_text: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    """True when the model's answer states the fact: it contains the answer or an alias,
    case- and accent-insensitively, at a word start (numbers: not inside a longer number)."""
    return any(_mentions(answer_text or "", t) for t in [answer, *aliases])


def chunk_text(runtime, text: str, max_tokens: int = CHUNK_TOKENS) -> list[str]:
    """Split text at sentence, then word, boundaries into pieces of <= max_tokens tokens
    (one is kept free for BOS), so every piece fits any scoring window."""
    budget = max_tokens - 1
    if budget < 1:
        raise ReverieError(f"max_tokens must be at least 2, got {max_tokens}.")
    pieces = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        if runtime.count_tokens(sentence) <= budget:
            pieces.append(sentence)
            continue
        word_run = ""
        for word in sentence.split():
            cand = f"{word_run} {word}".strip()
            if word_run and runtime.count_tokens(cand) > budget:
                pieces.append(word_run)
                cand = word
            word_run = cand
        if word_run:
            pieces.append(word_run)
    chunks, cur = [], ""
    for p in pieces:
        cand = f"{cur} {p}".strip()
        if cur and runtime.count_tokens(cand) > budget:
            chunks.append(cur)
            cand = p
        cur = cand
    if cur:
        chunks.append(cur)
    return chunks


def _chunks(runtime, texts: Sequence[str]) -> list[str]:
    out = [c for t in texts if t.strip() for c in chunk_text(runtime, t)]
    if not out:
        raise ReverieError("no text to score; give at least one non-empty paragraph.")
    return out


def _target_logprobs(lp: np.ndarray, ids: list[int]) -> np.ndarray:
    # row k predicts token k+1
    return lp[np.arange(len(ids) - 1), ids[1:]]


def perplexity(runtime, texts: Sequence[str]) -> float:
    """Token-weighted perplexity of the texts (each token predicted from what precedes it in
    its chunk; the first token after BOS counts too)."""
    logps = []
    for chunk in _chunks(runtime, texts):
        ids = runtime.tokenize(chunk, add_bos=True)
        if len(ids) < 2:
            continue
        logps.append(_target_logprobs(runtime.next_token_logprobs(chunk), ids))
    if not logps:
        raise ReverieError("texts too short to score; give paragraphs of a few words at least.")
    return perplexity_from_logprobs(np.concatenate(logps))


@dataclass
class Drift:
    ppl_base: float
    ppl_adapted: float
    kl: float  # mean KL(base || adapted) per position

    @property
    def ppl_ratio(self) -> float | None:
        return self.ppl_adapted / self.ppl_base if self.ppl_base else None


def drift(base_runtime, adapted_runtime, texts: Sequence[str]) -> Drift:
    """Perplexity of both models and KL(base || adapted) from one pass of each over the texts
    (the same numbers as perplexity() twice and kl_drift(), at half the cost)."""
    total, n = 0.0, 0
    lp_b, lp_a = [], []
    for chunk in _chunks(base_runtime, texts):
        ids = base_runtime.tokenize(chunk, add_bos=True)
        b = base_runtime.next_token_logprobs(chunk)
        a = adapted_runtime.next_token_logprobs(chunk)
        if b.shape != a.shape:
            raise ReverieError(
                f"base and adapted runtimes disagree on the shape of the distributions ({b.shape} "
                f"vs {a.shape}); both must run the same base model.")
        # accumulate per chunk: holding [tokens, vocab] float64 for every text would take GBs
        total += mean_kl([b], [a]) * b.shape[0]
        n += b.shape[0]
        if len(ids) >= 2:
            lp_b.append(_target_logprobs(b, ids))
            lp_a.append(_target_logprobs(a, ids))
    if not lp_b:
        raise ReverieError("texts too short to score; give paragraphs of a few words at least.")
    kl = total / n
    return Drift(perplexity_from_logprobs(np.concatenate(lp_b)),
                 perplexity_from_logprobs(np.concatenate(lp_a)),
                 0.0 if math.isclose(kl, 0.0, abs_tol=1e-12) else kl)


def kl_drift(base_runtime, adapted_runtime, texts: Sequence[str]) -> float:
    """Mean KL(base || adapted) of next-token distributions over every position of the texts."""
    return drift(base_runtime, adapted_runtime, texts).kl


__all__ = [
    "Drift", "MCItem", "MCResult", "PersonaFact", "bundled_general_mc", "bundled_general_prompts",
    "bundled_general_text", "bundled_path", "bundled_persona_demo", "chunk_text", "drift", "kl_drift",
    "load_multiple_choice", "load_persona", "load_prompts", "load_texts", "perplexity",
    "personal_correct", "score_multiple_choice",
]
