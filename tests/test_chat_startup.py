"""What a cold chat start relies on (assistant.chat._load_runtime, quant.llamacpp prefill):

- llama.cpp runs with the GIL released, so the model loads and the prompt's head is evaluated on
  a thread while the memory index opens in Python;
- a prompt whose head was evaluated ahead of time gives the very answer, and bit for bit the
  logits, of one evaluated whole, in whatever chunks the head went in;
- whatever next uses the context waits for (and stops) a prefill still running;
- a promoted adapter loads with the model: one load, not the base and then base + LoRA.

The timing itself is `reverie bench startup` (bench/startup_bench.py). Real model, real llama.cpp.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from assistant.prompting import lead_messages, messages_for
from quant.runtime import GenerationConfig

SYSTEM = "You are reverie, a helpful AI assistant running privately on the user's device."
BLOCK = 'What the user told you (quoted data):\n- "The user lives in Oslo."'
GREEDY = GenerationConfig(max_tokens=24, repeat_penalty=1.2)


def _last_logits(llm) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm._n_vocab,)).copy()


def test_llama_cpp_calls_release_the_gil():
    # ctypes.CDLL drops the GIL around every foreign call (a PyDLL would hold it): the premise of
    # loading and prefilling on a thread while Python imports chromadb
    import llama_cpp.llama_cpp as lib

    assert type(lib._lib) is ctypes.CDLL


@pytest.mark.parametrize("block", [BLOCK, ""], ids=["memories", "no-memories"])
def test_a_prefilled_head_changes_nothing(llama_runtime, block):
    rt = llama_runtime
    for question in ("Where do I live?", "What is the capital of France?"):
        prompt = rt.format_chat(messages_for(SYSTEM, question, block))
        rt.llama.reset()
        cold = "".join(rt.stream(prompt, GREEDY))
        # the head with the worked example is what the chat prefills; without memories shown the
        # real prompt shares only the system prompt with it, and the rest is evaluated again
        rt.prefill(rt.format_chat(lead_messages(SYSTEM, True)))
        rt._warm[0].join()  # let it finish (stream() would stop it at the next chunk)
        assert rt.llama.n_tokens > 20
        warm = "".join(rt.stream(prompt, GREEDY))
        assert warm == cold, (question, block)


def test_logits_do_not_depend_on_how_the_prompt_was_split(llama_runtime):
    llm = llama_runtime.llama
    ids = llama_runtime.tokenize(llama_runtime.format_chat(messages_for(SYSTEM, "Where do I live?", BLOCK)))
    llm.reset()
    llm.eval(ids)
    whole = _last_logits(llm)
    for chunk in (16, 7):
        llm.reset()
        llm._ctx.set_n_threads(1, 1)  # as prefill() runs
        for start in range(0, len(ids) - 5, chunk):
            llm.eval(ids[start:min(start + chunk, len(ids) - 5)])
        llm._ctx.set_n_threads(llama_runtime.threads, llama_runtime.threads)
        llm.eval(ids[len(ids) - 5:])
        assert np.array_equal(_last_logits(llm), whole), chunk


def test_generation_waits_for_a_running_prefill(llama_runtime):
    rt = llama_runtime
    prompt = rt.format_chat(messages_for(SYSTEM, "Where do I live?", BLOCK))
    rt.llama.reset()
    cold = "".join(rt.stream(prompt, GREEDY))
    long_head = rt.format_chat(lead_messages(SYSTEM + " " + "Be brief. " * 120, True))
    rt.prefill(long_head)  # still running when stream() starts: stopped at a chunk, then replaced
    assert "".join(rt.stream(prompt, GREEDY)) == cold
    rt.prefill(long_head)
    assert rt.loglikelihood("The capital of France is", " Paris").n_tokens >= 1  # logits() waits too
    assert rt._warm is None


def test_a_promoted_adapter_loads_with_the_model_once(reverie_home, monkeypatch):
    from test_adapter_bad_input import _adapter, _model_sha

    from assistant.chat import ChatSession
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger
    from quant.llamacpp import LlamaCppRuntime

    _adapter(reverie_home, "v001-good", _model_sha(reverie_home))
    led = Ledger(reverie_home)
    AdapterLedger(led).promote("v001-good")
    gguf = AdapterLedger(led).promoted("smollm2-135m").gguf
    led.close()
    loads = []
    real = LlamaCppRuntime._load
    monkeypatch.setattr(LlamaCppRuntime, "_load", lambda self, *a, **kw: loads.append(kw.get("lora"))
                        or real(self, *a, **kw))
    s = ChatSession(reverie_home, backend="llama.cpp", use_memory=False, record=False, max_tokens=4)
    try:
        assert s.runtime.adapter_path == gguf
        assert loads == [gguf]
        assert s.send("hi").completion_tokens >= 1
        assert loads == [gguf]
    finally:
        s.close()
