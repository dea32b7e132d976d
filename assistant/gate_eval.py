"""Measurements shared by the nightly gate and `reverie eval`: personal recall by generation,
general ability by multiple-choice log-likelihood, drift by KL and perplexity.

Owns: asking probe questions through a runtime with or without a memory block, and scoring them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .probes import personal_correct


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


def ask_probes(runtime, probes: Sequence[Probe], system_prompt: str, max_tokens: int = 48,
               memory_block: Callable[[str], str] | None = None,
               progress: Callable[[int], None] | None = None) -> PersonalResult:
    """Ask every probe in a fresh conversation (greedy); memory_block(question) puts recalled
    memories in front of the question, exactly as chat does."""
    from quant.runtime import GenerationConfig

    from .prompting import messages_for

    cfg = GenerationConfig(max_tokens=max_tokens)
    res = PersonalResult([], [], [], [], [], [])
    for i, p in enumerate(probes):
        block = memory_block(p.question) if memory_block is not None else ""
        # laid out exactly as chat lays it out (assistant.prompting)
        text, st = runtime.chat(messages_for(system_prompt, p.question, block), cfg)
        res.correct.append(personal_correct(text, p.answer, p.aliases))
        res.answers.append(text)
        res.prompt_tokens.append(st.prompt_tokens)
        res.ttft_s.append(st.ttft_s)
        res.tokens_per_s.append(st.tokens_per_s)
        res.fact_ids.append(p.fact_id)
        if progress:
            progress(i + 1)
    return res


@dataclass
class GeneralResult:
    acc: float
    acc_norm: float
    correct: list[bool]
    seconds: float


def general_ability(runtime, items, limit: int | None = None) -> GeneralResult:
    from .probes import score_multiple_choice

    t0 = time.perf_counter()
    r = score_multiple_choice(runtime, items, limit=limit)
    return GeneralResult(r.acc, r.acc_norm, list(r.correct), time.perf_counter() - t0)
