"""A model runtime for logic tests: the real `quant.runtime_base.Runtime` with scripted primitives.

Only the backend primitives are faked (tokenize, detokenize, logits, _generate_tokens,
set_adapter); streaming, stop strings, the loop stop, generate/chat, token counting and
log-likelihoods run the product's own code in the base class. Replies are scripted, and every
prompt the model was asked to continue is recorded (with the messages rendered into it), so a
test can assert exactly what reached the model. No weights load: tests using it run in
milliseconds. The real backends are tested in test_llamacpp_runtime.py and test_mlx_runtime.py.

Tokens are whitespace-led words ("Hello", " world", "."-attached): lossless, so detokenize gives
back the text, unless `vocab` is so small that distinct words must share an id (as in a tiny
real vocabulary; then the first word seen stands for the id).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable

import numpy as np

from quant.chat_format import CHATML, ChatFormat
from quant.registry import ModelInfo
from quant.runtime_base import Runtime

_PIECE = re.compile(r"\s*\S+|\s+")


class Tags(ChatFormat):
    """`<role>content` lines: prompts that read easily in an assertion."""

    def render(self, messages, add_generation_prompt=True):
        return "\n".join(f"<{m['role']}>{m['content']}" for m in messages)


TAGS = Tags("tags", ("</s>",), "")

Reply = str | Callable[[str], str]


class FakeRuntime(Runtime):
    """A scripted model behind the real Runtime interface.

    replies: what the model answers, in turn: a string, a function of the prompt, or a list of
      either (the last one repeats once the list runs out).
    vocab: ids are 1..vocab-1 (0 is BOS); logits are [n, vocab].
    logprobs: the next-token log-distribution at every position (default uniform).
    scores: {context: {continuation: logprob}}: after exactly `context`, the continuation (one
      token) has that log-probability; the rest of the mass is spread over the other ids.
    prompts: a list to record prompts into (share one between runtimes a test opens).
    """

    def __init__(self, replies: Reply | Iterable[Reply] = "ok", *, name: str = "fake-model",
                 backend: str = "fake", chat_format: ChatFormat = CHATML, n_ctx: int = 2048,
                 vocab: int = 50_000, logprobs=None, scores: dict | None = None,
                 prompts: list | None = None):
        super().__init__(ModelInfo(name=name, path=f"/nonexistent/{name}.gguf", source="builtin",
                                   arch="fake"), chat_format, n_ctx, threads=1)
        self.backend = backend
        self._replies = [replies] if isinstance(replies, str) or callable(replies) else list(replies)
        if not self._replies:
            raise ValueError("give the fake at least one reply")
        self.vocab = vocab
        self.table = None if logprobs is None else np.asarray(logprobs, dtype=np.float64)
        if self.table is not None and self.table.shape != (vocab,):
            raise ValueError(f"logprobs must have {vocab} entries (vocab), got {self.table.shape}")
        self.scores = scores or {}
        self.prompts: list[str] = [] if prompts is None else prompts  # what stream() was given
        self.messages: list[list[dict]] = []  # what format_chat() rendered
        self.adapters: list[str | None] = []  # every set_adapter call
        self.pulled = 0  # tokens generated (a caller that stops reading early pulls fewer)
        self.closed = False
        self._ids: dict[str, int] = {}
        self._pieces: dict[int, str] = {}

    # --- scripting --------------------------------------------------------------------------
    def reply_for(self, prompt: str) -> str:
        reply = self._replies.pop(0) if len(self._replies) > 1 else self._replies[0]
        return reply(prompt) if callable(reply) else reply

    @property
    def last_prompt(self) -> str:
        return self.prompts[-1] if self.prompts else ""

    def format_chat(self, messages):
        self.messages.append([dict(m) for m in messages])
        return super().format_chat(messages)

    # --- backend primitives ---------------------------------------------------------------
    def _id(self, piece: str) -> int:
        if piece not in self._ids:
            i = 1 + len(self._ids) % (self.vocab - 1) if self.vocab > 1 else 0
            self._ids[piece] = i
            self._pieces.setdefault(i, piece)
        return self._ids[piece]

    def tokenize(self, text, add_bos=True):
        return ([0] if add_bos else []) + [self._id(p) for p in _PIECE.findall(text)]

    def detokenize(self, ids):
        return "".join(self._pieces.get(i, "") for i in ids if i != 0)

    def logits(self, ids):
        # Log-probabilities are valid logits: log_softmax leaves a normalised row unchanged.
        base = self.table if self.table is not None else np.full(self.vocab, -np.log(self.vocab))
        out = np.tile(base, (len(ids), 1))
        for j in range(len(ids)):
            given = self.scores.get(self.detokenize(ids[: j + 1]))
            if given:
                set_ids = {self._id(p): lp for p, lp in given.items()}
                rest = 1.0 - sum(np.exp(lp) for lp in set_ids.values())
                if rest <= 0:
                    raise ValueError(f"scores after {self.detokenize(ids[:j + 1])!r} sum past 1")
                out[j] = np.log(rest / max(1, self.vocab - len(set_ids)))
                for i, lp in set_ids.items():
                    out[j, i] = lp
        return out.astype(np.float32)

    def _generate_tokens(self, prompt_ids, config, max_tokens):
        prompt = self.detokenize(prompt_ids)
        self.prompts.append(prompt)
        pieces = _PIECE.findall(self.reply_for(prompt))
        for piece in pieces[:max_tokens]:
            self._id(piece)
            self.pulled += 1
            yield piece
        if len(pieces) < max_tokens:
            yield None  # end of sequence

    def set_adapter(self, path):
        self.adapters.append(path)
        self.adapter_path = path

    def close(self):
        self.closed = True


def last_user(prompt: str) -> str:
    """The last user message of a TAGS or ChatML prompt."""
    if "<|im_start|>user\n" in prompt:
        return prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    return prompt.rsplit("<user>", 1)[-1]
