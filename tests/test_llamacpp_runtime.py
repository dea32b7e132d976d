"""Real-stack tests of the llama.cpp runtime on the embedded default model."""
import pytest

from assistant.config import Settings

from quant.errors import QuantError
from quant.runtime import GenerationConfig, resolve_backend

pytestmark = pytest.mark.slow


def test_chat_turn_answers_and_stops(llama_runtime):
    text, st = llama_runtime.chat(
        [{"role": "system", "content": Settings().system_prompt},
         {"role": "user", "content": "What is the capital of Germany?"}], GenerationConfig(max_tokens=40))
    assert "Berlin" in text
    assert st.finish_reason == "stop" and 0 < st.completion_tokens < 40
    assert "<|im_end|>" not in text and "<|im_start|>" not in text
    assert st.prompt_tokens > 10 and st.ttft_s > 0


def test_greedy_is_deterministic(llama_runtime):
    p = llama_runtime.format_chat([{"role": "user", "content": "Name three colors."}])
    a, _ = llama_runtime.generate(p, GenerationConfig(max_tokens=24))
    b, _ = llama_runtime.generate(p, GenerationConfig(max_tokens=24))
    assert a == b and a


def test_max_tokens_respected(llama_runtime):
    p = llama_runtime.format_chat([{"role": "user", "content": "Write a long story about a dragon."}])
    _, st = llama_runtime.generate(p, GenerationConfig(max_tokens=5))
    assert st.completion_tokens == 5 and st.finish_reason == "length"


def test_loglikelihood_prefers_the_true_continuation(llama_runtime):
    good = llama_runtime.loglikelihood("The capital of France is", " Paris")
    bad = llama_runtime.loglikelihood("The capital of France is", " Tromsø")
    assert good.logprob > bad.logprob
    assert good.n_tokens >= 1 and good.is_greedy


def test_logits_shape(llama_runtime):
    ids = llama_runtime.tokenize("Hello world, this is a test.")
    lg = llama_runtime.logits(ids)
    assert lg.shape == (len(ids), 49152)


def test_prompt_longer_than_context_is_a_clear_error(llama_runtime):
    with pytest.raises(QuantError, match="context window"):
        llama_runtime.generate("word " * 3000)


def test_missing_adapter_file(llama_runtime, tmp_path):
    with pytest.raises(QuantError, match="does not exist"):
        llama_runtime.set_adapter(str(tmp_path / "nope.gguf"))


def test_backend_resolution():
    assert resolve_backend("llama.cpp") == "llama.cpp"
    assert resolve_backend("auto") in ("llama.cpp", "mlx")
    with pytest.raises(QuantError, match="unknown backend"):
        resolve_backend("tpu")
