"""The runtime interface every backend implements.

Owns: GenerationConfig / GenerationStats / LogLikelihood dataclasses and the Runtime base class.
`Runtime.stream` is the one decoding loop every backend runs through: stop strings and the loop
stop (quant.loops) are applied there, not per backend. Backends (llamacpp.py, mlx_runtime.py)
subclass it from here; quant.runtime picks one (`load_runtime`) and re-exports these names, so
the backends and their factory do not import each other in a circle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .chat_format import ChatFormat, Message
from .errors import QuantError
from .loops import LoopDetector
from .registry import ModelInfo

BACKENDS = ("llama.cpp", "mlx")


@dataclass
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    top_k: int = 1
    top_p: float = 1.0
    repeat_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    # End the answer when it starts repeating itself (quant.loops). Off by default so that
    # comparisons of runtimes, adapters and nights see the plain decode; the chat turns it on.
    loop_stop: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise QuantError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise QuantError(f"temperature must be >= 0, got {self.temperature}")
        if not self.repeat_penalty > 0:
            raise QuantError(f"repeat_penalty must be > 0 (1.0 is none), got {self.repeat_penalty}")


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0  # prompt processing until the first token is out
    total_s: float = 0.0
    finish_reason: str = ""  # "stop" | "length" | "loop"
    # finish_reason "loop": where the repeated tail begins in the streamed text. Those pieces were
    # already yielded; `trimmed` gives the answer without them.
    loop_cut: int | None = None

    def trimmed(self, text: str) -> str:
        """The streamed text without the repeated tail the loop stop found (unchanged otherwise)."""
        return text if self.loop_cut is None else text[: self.loop_cut]

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first, over the time after the first."""
        decode = self.total_s - self.ttft_s
        if self.completion_tokens <= 1 or decode <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode


@dataclass
class LogLikelihood:
    logprob: float  # sum of log p(continuation tokens | context)
    n_tokens: int
    is_greedy: bool  # every continuation token was the argmax


class Runtime:
    """One loaded model on one backend. Subclasses implement the four primitives at the bottom."""

    backend: str = ""

    def __init__(self, model: ModelInfo, chat_format: ChatFormat, n_ctx: int, threads: int):
        self.model = model
        self.chat_format = chat_format
        self.n_ctx = n_ctx
        self.threads = threads
        self.adapter_path: str | None = None
        self.last_stats = GenerationStats()

    # --- shared behaviour -------------------------------------------------------------------
    def format_chat(self, messages: list[Message]) -> str:
        return self.chat_format.render(messages)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text, add_bos=False))

    def stream(self, prompt: str, config: GenerationConfig | None = None,
               on_first_token: Callable[[], None] | None = None) -> Iterator[str]:
        """Yield text pieces; sets self.last_stats when the generator is exhausted."""
        config = config or GenerationConfig()
        stop = tuple(config.stop) or self.chat_format.stop
        prompt_ids = self.tokenize(prompt, add_bos=True)
        budget = self.n_ctx - len(prompt_ids)
        if budget < 1:
            raise QuantError(
                f"prompt is {len(prompt_ids)} tokens, the context window is {self.n_ctx}; "
                "shorten it or raise n_ctx.")
        max_tokens = min(config.max_tokens, budget)
        stats = GenerationStats(prompt_tokens=len(prompt_ids))
        loops = LoopDetector() if config.loop_stop else None
        hold = max((len(s) - 1 for s in stop), default=0)
        t0 = time.perf_counter()
        text, emitted, n = "", 0, 0
        finish = "length"
        for piece in self._generate_tokens(prompt_ids, config, max_tokens):
            n += 1
            if n == 1:
                stats.ttft_s = time.perf_counter() - t0
                if on_first_token:
                    on_first_token()
            if piece is None:  # end of sequence
                finish = "stop"
                break
            text += piece
            hit = next((s for s in stop if s in text), None)
            if hit:
                text = text[: text.index(hit)]
                finish = "stop"
                break
            if loops is not None and loops.feed(piece) is not None:
                # what was yielded stays yielded; the rest of the repeat is not sent
                stats.loop_cut = loops.cut
                text = text[: max(emitted, loops.cut)]
                finish = "loop"
                break
            # hold back a tail that could be the start of a stop string
            safe = len(text) - hold
            if safe > emitted:
                yield text[emitted:safe]
                emitted = safe
        if len(text) > emitted:
            yield text[emitted:]
        stats.completion_tokens = n
        stats.total_s = time.perf_counter() - t0
        stats.finish_reason = finish
        self.last_stats = stats

    def generate(self, prompt: str, config: GenerationConfig | None = None) -> tuple[str, GenerationStats]:
        text = "".join(self.stream(prompt, config))
        return self.last_stats.trimmed(text).strip(), self.last_stats

    def chat(self, messages: list[Message], config: GenerationConfig | None = None) -> tuple[str, GenerationStats]:
        return self.generate(self.format_chat(messages), config)

    def loglikelihood(self, context: str, continuation: str) -> LogLikelihood:
        """log p(continuation | context), tokenising the two parts as lm-eval-harness does."""
        ctx = self.tokenize(context, add_bos=True)
        whole = self.tokenize(context + continuation, add_bos=True)
        # split where the joint tokenisation diverges from the context's, so a merged boundary
        # token counts toward the continuation
        i = 0
        while i < min(len(ctx), len(whole)) and ctx[i] == whole[i]:
            i += 1
        i = max(i, 1)
        cont = whole[i:]
        if not cont:
            return LogLikelihood(0.0, 0, True)
        logits = self.logits(whole[:-1])[i - 1:]
        lp = _log_softmax(logits)
        picked = lp[np.arange(len(cont)), cont]
        greedy = bool(np.all(np.argmax(logits, axis=-1) == np.array(cont)))
        return LogLikelihood(float(picked.sum()), len(cont), greedy)

    def next_token_logprobs(self, text: str) -> np.ndarray:
        """Log-probabilities of the next token at every position of text: [n_tokens, vocab]."""
        return _log_softmax(self.logits(self.tokenize(text, add_bos=True)))

    # --- backend primitives ---------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        raise NotImplementedError

    def detokenize(self, ids: list[int]) -> str:
        raise NotImplementedError

    def logits(self, ids: list[int]) -> np.ndarray:
        """Raw next-token logits after each prefix of ids: [len(ids), vocab] float32."""
        raise NotImplementedError

    def _generate_tokens(self, prompt_ids: list[int], config: GenerationConfig,
                         max_tokens: int) -> Iterator[str | None]:
        """Yield decoded text per generated token; None for end-of-sequence."""
        raise NotImplementedError

    def set_adapter(self, path: str | None) -> None:
        """Apply a LoRA adapter (backend's own format) or remove it with None."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
