"""The llama.cpp runtime (llama-cpp-python): CPU everywhere, Metal on macOS, CUDA where built.

Owns: loading a GGUF with or without a GGUF LoRA adapter, greedy/sampled decoding with honest
end-of-generation detection, and full logits for scoring. Knows nothing about chat history.
"""
from __future__ import annotations

import codecs
import contextlib
import os
import threading
from typing import Iterator

import numpy as np

from .chat_format import ChatFormat
from .errors import BackendUnavailable, QuantError
from .registry import ModelInfo
from .runtime_base import GenerationConfig, Runtime

SCORING_CTX = 1024
# Tokens per llama.cpp call in a background prefill: the point at which a caller that needs the
# context takes it over (a chunk of 16 is ~0.1 s on one core; how a prompt is split into batches
# does not change the logits, tests/test_cold_start.py checks it bit for bit).
PREFILL_CHUNK = 16


def import_llama_cpp():
    """The llama_cpp module, or a clear error saying how to install it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendUnavailable(
            "llama-cpp-python is not installed; run `make install` (it builds llama.cpp with "
            "the right flags for this machine).") from e
    # Llama() compiles the GGUF's chat template with jinja2, whose lexer looks this codec up:
    # imported here, so that a load on another thread imports nothing (quant.runtime_loader)
    import encodings.unicode_escape  # noqa: F401
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load logs straight to fd 2 even with verbose=False on some paths."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def _shared_prefix(prev, ids: list[int]) -> int:
    n = min(len(prev), len(ids))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(prev[:n]) != np.asarray(ids[:n]))
    return int(diff[0]) if diff.size else n


class LlamaCppRuntime(Runtime):
    backend = "llama.cpp"

    def __init__(self, model: ModelInfo, chat_format: ChatFormat, n_ctx: int, threads: int,
                 adapter: str | None = None):
        """Load the model, with `adapter` (a GGUF LoRA) applied from the start when given: one
        load where loading the base and then set_adapter() would load the file twice."""
        super().__init__(model, chat_format, n_ctx, threads)
        import_llama_cpp()
        self._warm: tuple[threading.Thread, threading.Event] | None = None  # a prefill() running
        if adapter is not None:
            self._check_adapter_file(adapter)
        self._llm = self._load(n_ctx, logits_all=False, lora=adapter)
        self.adapter_path = adapter
        self._scorer = None  # a second context with logits for every position, made on demand

    def _load(self, n_ctx: int, logits_all: bool, lora: str | None = None):
        from llama_cpp import Llama

        kwargs = dict(model_path=self.model.path, n_ctx=n_ctx, n_threads=self.threads,
                      n_threads_batch=self.threads, n_batch=512, logits_all=logits_all,
                      verbose=False, seed=0, n_gpu_layers=-1)
        if lora:
            kwargs["lora_path"] = lora
        try:
            with _quiet_stderr():
                return Llama(**kwargs)
        except (ValueError, RuntimeError) as e:
            what = f"adapter {lora}" if lora else f"model {self.model.path}"
            raise QuantError(
                f"llama.cpp could not load {what}: {e}. Check that the file is a complete GGUF "
                "(and, for an adapter, that it was made for this base model).") from e

    @property
    def llama(self):
        self._settle()
        return self._llm

    # --- a prompt's head evaluated ahead of time ----------------------------------------------
    def prefill(self, prompt: str) -> None:
        """Start evaluating `prompt` (BOS first, as stream() tokenizes) into the KV cache on a
        background thread, discarding what the cache held. The next stream() whose prompt starts
        with the same tokens evaluates only the rest: llama-cpp-python's generate() reuses the
        longest cached prefix, and the logits are bit for bit those of one whole evaluation.

        For the fixed head of a chat prompt (system prompt, worked example) while the caller
        recalls memories: llama.cpp releases the GIL, so the two overlap. It runs on one llama.cpp
        thread, leaving the other core of a 2-core machine to the caller's Python, which is the
        longer of the two paths (with spinning OpenMP threads, two of them beside a busy Python
        thread prefilled 82 tokens in 6-14 s against ~1 s for one, at load average 11). Whatever
        next uses the context stops it at a chunk boundary and waits for it (_settle)."""
        self._settle()
        ids = self.tokenize(prompt, add_bos=True)
        if not ids or len(ids) >= self.n_ctx:
            return
        stop = threading.Event()
        llm = self._llm

        def run() -> None:
            try:
                llm._ctx.set_n_threads(1, 1)
                llm.reset()
                for start in range(0, len(ids), PREFILL_CHUNK):
                    if stop.is_set():
                        break
                    llm.eval(ids[start:start + PREFILL_CHUNK])
            except Exception:  # noqa: BLE001 - only a head start: stream() evaluates everything
                llm.reset()
            finally:
                llm._ctx.set_n_threads(self.threads, self.threads)

        thread = threading.Thread(target=run, name="reverie-prefill")
        thread.start()
        self._warm = (thread, stop)

    def _settle(self) -> None:
        """Stop a running prefill() at its next chunk and wait for it: the context is ours again."""
        warm, self._warm = self._warm, None
        if warm is not None:
            warm[1].set()
            warm[0].join()

    # --- primitives -------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, ids: list[int]) -> str:
        return self._llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def _is_eog(self, tok: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, tok))

    def _generate_tokens(self, prompt_ids, config: GenerationConfig, max_tokens) -> Iterator[str | None]:
        self._settle()
        llm = self._llm
        greedy = config.temperature == 0
        if not greedy:
            llm.set_seed(config.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        n = 0
        # llama.cpp penalises repeats among the last 64 (last_n_tokens_size) *generated* tokens
        # only: its sampler is made fresh here and never sees the prompt. mlx_runtime matches it.
        gen = llm.generate(prompt_ids, top_k=1 if greedy else config.top_k,
                           top_p=1.0 if greedy else config.top_p, min_p=0.0,
                           temp=0.0 if greedy else config.temperature,
                           repeat_penalty=config.repeat_penalty, reset=True)
        try:
            for tok in gen:
                if self._is_eog(tok):
                    yield None
                    return
                yield decoder.decode(llm.detokenize([tok]))
                n += 1
                if n >= max_tokens:
                    return
        finally:
            gen.close()

    def logits(self, ids: list[int]) -> np.ndarray:
        self._settle()
        if self._scorer is None:
            self._scorer = self._load(max(SCORING_CTX, min(self.n_ctx, 2048)), logits_all=True,
                                      lora=self.adapter_path)
        s = self._scorer
        if len(ids) > s.n_ctx():
            raise QuantError(f"text of {len(ids)} tokens exceeds the scoring window ({s.n_ctx()}).")
        # Reuse the KV cache for the prefix shared with the previous call: the choices of a
        # multiple-choice item share their context, so only the continuation is evaluated again.
        # Rows of s.scores before the shared length are the logits of that same prefix.
        p = _shared_prefix(s.input_ids[: s.n_tokens], ids)
        s.n_tokens = p
        if p < len(ids):
            s.eval(ids[p:])
        return np.array(s.scores[: len(ids)], dtype=np.float32)

    def set_adapter(self, path: str | None) -> None:
        if path == self.adapter_path:
            return
        if path is not None:
            self._check_adapter_file(path)
        self._settle()
        new = self._load(self.n_ctx, logits_all=False, lora=path)
        self._llm.close()
        self._llm = new
        if self._scorer is not None:
            self._scorer.close()
            self._scorer = None
        self.adapter_path = path

    def _check_adapter_file(self, path: str) -> None:
        if not os.path.isfile(path):
            raise QuantError(f"adapter file {path} does not exist.")
        self._check_adapter(path)

    def _check_adapter(self, path: str) -> None:
        """Refuse a damaged or foreign GGUF LoRA here: llama.cpp would accept it and crash later."""
        from .gguf_lora import base_shapes, check_fits, read_gguf_lora

        if getattr(self, "_base_shapes", None) is None:
            self._base_shapes = base_shapes(self.model.path)
        check_fits(read_gguf_lora(path), self._base_shapes, path, self.model.name)

    def close(self) -> None:
        self._settle()
        for m in (self._llm, self._scorer):
            if m is not None:
                m.close()
