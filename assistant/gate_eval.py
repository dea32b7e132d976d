"""Measurements shared by the nightly gate and `reverie eval`: personal recall by generation,
general ability by multiple-choice log-likelihood, drift by KL and perplexity.

Owns: asking probe questions through a runtime with or without a memory block, and scoring them;
the per-model cache of base-model results (the base model's answers do not change between nights,
so each night only the adapter is measured again).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .probes import Drift, personal_correct


@dataclass
class Probe:
    fact_id: str
    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class PersonalResult:
    correct: list[bool]
    answers: list[str]
    prompt_tokens: list[int]
    ttft_s: list[float]
    tokens_per_s: list[float]
    fact_ids: list[str]

    @property
    def acc(self) -> float:
        return sum(self.correct) / len(self.correct) if self.correct else 0.0

    def by_fact(self) -> dict[str, float]:
        out: dict[str, list[bool]] = {}
        for fid, ok in zip(self.fact_ids, self.correct):
            out.setdefault(fid, []).append(ok)
        return {k: sum(v) / len(v) for k, v in out.items()}


class BaseCache:
    """Results of the base model (no adapter, no memory) keyed by what determines them: the
    model file (the cache is one file per model sha256), the backend, the prompt and the
    generation length. Greedy decoding and log-likelihoods are deterministic, so a cached
    result is the result; timings in it are those measured when it was first computed.
    Lives in the data dir (0600) because questions and answers are personal."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._data: dict = {}
        self._dirty = False
        if self.path.exists():
            try:
                self._data = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self._data = {}  # a damaged cache is only lost work: measure again

    @classmethod
    def for_model(cls, home: Path, model_sha: str) -> "BaseCache":
        return cls(Path(home) / "cache" / f"base-eval-{model_sha[:16]}.json")

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    def get(self, key: str):
        return self._data.get(key)

    def put(self, key: str, value) -> None:
        self._data[key] = value
        self._dirty = True

    def __len__(self) -> int:
        return len(self._data)

    def save(self) -> None:
        if self._dirty:
            from common.files import atomic_write_text

            atomic_write_text(self.path, json.dumps(self._data))
            self._dirty = False


def ask_probes(runtime, probes: Sequence[Probe], system_prompt: str, max_tokens: int = 48,
               memory_block: Callable[[str], str] | None = None,
               progress: Callable[[int], None] | None = None,
               cache: BaseCache | None = None) -> PersonalResult:
    """Ask every probe in a fresh conversation (greedy); memory_block(question) puts recalled
    memories in front of the question, exactly as chat does. With a cache (base model, no
    memory only) a question already asked is not asked again."""
    from quant.runtime import GenerationConfig

    from .prompting import messages_for

    if cache is not None and (memory_block is not None or runtime.adapter_path):
        raise ValueError("the base-result cache is only for the base model without memory.")
    cfg = GenerationConfig(max_tokens=max_tokens)
    res = PersonalResult([], [], [], [], [], [])
    for i, p in enumerate(probes):
        block = memory_block(p.question) if memory_block is not None else ""
        # laid out exactly as chat lays it out (assistant.prompting)
        messages = messages_for(system_prompt, p.question, block)
        key = cache.key("chat", runtime.backend, max_tokens, messages) if cache is not None else ""
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            text, st = runtime.chat(messages, cfg)
            hit = [text, st.prompt_tokens, st.ttft_s, st.tokens_per_s]
            if cache is not None:
                cache.put(key, hit)
        text, prompt_tokens, ttft_s, tokens_per_s = hit
        res.correct.append(personal_correct(text, p.answer, p.aliases))
        res.answers.append(text)
        res.prompt_tokens.append(prompt_tokens)
        res.ttft_s.append(ttft_s)
        res.tokens_per_s.append(tokens_per_s)
        res.fact_ids.append(p.fact_id)
        if progress:
            progress(i + 1)
    if cache is not None:
        cache.save()
    return res


FACTUAL_MAX_TOKENS = 24  # bundled factual answers name the answer within ~16 tokens (0.47 of 0.50)


def answers_known(runtime, items, system_prompt: str, max_tokens: int = FACTUAL_MAX_TOKENS,
                  cache: BaseCache | None = None, reference: Sequence[str | None] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[bool]:
    """Per bundled factual item (assistant.probes.FactualItem): does the greedy answer, laid out
    as chat lays it out, name the item's answer? See known_answers, which also returns the
    answer text each verdict rests on."""
    return [ok for ok, _ in known_answers(runtime, items, system_prompt, max_tokens, cache,
                                          reference, progress)]


def known_answers(runtime, items, system_prompt: str, max_tokens: int = FACTUAL_MAX_TOKENS,
                  cache: BaseCache | None = None, reference: Sequence[str | None] | None = None,
                  progress: Callable[[int], None] | None = None) -> list[tuple[bool, str]]:
    """(verdict, answer text) per item. Decoding stops two pieces after the answer has been
    named (a number must not run on into a longer one), so a known answer costs ~10 tokens, not
    max_tokens; the verdict is the one the whole answer would get.

    `reference`: another model's answer texts that named the answer (the base's, for the gate).
    Where this model's greedy next token, teacher-forced along that text, is the text's own
    token at every position, it would write the same words: one forward pass answers the item
    instead of a decode. Anywhere else (or with another tokenization) it decodes as usual.
    With a cache (base model only) an item asked before is not asked again."""
    from quant.runtime import GenerationConfig

    from .probes import personal_correct
    from .prompting import messages_for

    if cache is not None and runtime.adapter_path:
        raise ValueError("the base-result cache is only for the base model.")
    cfg = GenerationConfig(max_tokens=max_tokens)
    out = []
    for i, it in enumerate(items):
        prompt = runtime.format_chat(messages_for(system_prompt, it.question, ""))
        key = cache.key("factual", runtime.backend, max_tokens, prompt, it.answer,
                        list(it.aliases)) if cache is not None else ""
        hit = cache.get(key) if cache is not None else None
        ref = reference[i] if reference is not None else None
        if hit is None and ref and _writes(runtime, prompt, ref):
            hit = [True, ref]
            if cache is not None:
                cache.put(key, hit)
        if hit is None:
            text, after = "", -1
            for piece in runtime.stream(prompt, cfg):
                text += piece
                if after < 0 and personal_correct(text, it.answer, it.aliases):
                    after = 0
                elif after >= 0:
                    after += 1
                    if after >= 2:
                        break
            hit = [bool(personal_correct(text, it.answer, it.aliases)), text]
            if cache is not None:
                cache.put(key, hit)
        out.append((bool(hit[0]), hit[1]))
        if progress:
            progress(i + 1)
    if cache is not None:
        cache.save()
    return out


def _writes(runtime, prompt: str, text: str) -> bool:
    """Would greedy decoding after `prompt` write `text`? Teacher-forced: the argmax after every
    prefix is the next token of prompt + text (one forward pass, the prompt's KV reused)."""
    import numpy as np

    p = runtime.tokenize(prompt, add_bos=True)
    t = runtime.tokenize(text, add_bos=False)
    if not t:
        return False
    logits = runtime.logits(p + t)
    return bool(np.array_equal(np.argmax(logits[len(p) - 1: len(p) + len(t) - 1], axis=-1),
                               np.array(t)))


@dataclass
class GeneralResult:
    acc: float
    acc_norm: float
    correct: list[bool]
    seconds: float


def general_ability(runtime, items, limit: int | None = None,
                    cache: BaseCache | None = None) -> GeneralResult:
    """Multiple-choice accuracy; with a cache (base model only) items scored before are reused."""
    from .probes import score_multiple_choice

    if cache is not None and runtime.adapter_path:
        raise ValueError("the base-result cache is only for the base model.")
    t0 = time.perf_counter()
    items = list(items)[:limit] if limit is not None else list(items)
    if not items:
        score_multiple_choice(runtime, items)  # raises its message for an empty probe set
    keys = [BaseCache.key("mc", runtime.backend, it.context, it.continuations, it.choices, it.label)
            for it in items] if cache is not None else [""] * len(items)
    got = [cache.get(k) if cache is not None else None for k in keys]
    todo = [i for i, g in enumerate(got) if g is None]
    if todo:
        r = score_multiple_choice(runtime, [items[i] for i in todo])
        for i, c, cn in zip(todo, r.correct, r.correct_norm):
            got[i] = [bool(c), bool(cn)]
            if cache is not None:
                cache.put(keys[i], got[i])
        if cache is not None:
            cache.save()
    correct = [g[0] for g in got]
    n = len(items)
    return GeneralResult(sum(correct) / n, sum(g[1] for g in got) / n, correct,
                         time.perf_counter() - t0)


@dataclass
class ForgettingResult:
    """General ability and drift of an adapted runtime against its base, on the same items/texts."""
    general_base: GeneralResult
    general_adapted: GeneralResult
    drift: Drift  # perplexity of each and KL(base || adapted)


def forgetting(base_runtime, adapted_runtime, items, texts,
               cache: BaseCache | None = None) -> ForgettingResult:
    """What the adapter costs outside the user's facts: multiple-choice accuracy of both models
    (the base from the cache when it has them), perplexity of both and KL(base || adapted)."""
    from .probes import drift

    gb = general_ability(base_runtime, items, cache=cache)
    ga = general_ability(adapted_runtime, items)
    return ForgettingResult(gb, ga, drift(base_runtime, adapted_runtime, texts))
