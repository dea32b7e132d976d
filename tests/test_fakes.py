"""The shared fake runtime (tests/fakes.py) keeps the Runtime contract the logic tests rely on:
what it is scripted to say is what the base class streams, and what it records is what it was asked."""
import math

import numpy as np
import pytest

from fakes import TAGS, FakeRuntime, last_user
from quant.chat_format import CHATML
from quant.errors import QuantError
from quant.runtime_base import GenerationConfig, Runtime


def test_it_is_a_runtime_and_tokens_round_trip():
    rt = FakeRuntime()
    assert isinstance(rt, Runtime) and rt.model.name == "fake-model"
    text = "Hello,  world!\nNew line  "
    ids = rt.tokenize(text)
    assert ids[0] == 0 and rt.detokenize(ids) == text
    assert rt.count_tokens(text) == len(ids) - 1 == 5  # "Hello,", "  world!", "\nNew", " line", "  "
    assert rt.tokenize("Hello, again", add_bos=False)[0] == ids[1]  # one id per word, kept


def test_replies_in_turn_prompts_and_messages_recorded():
    rt = FakeRuntime(["first answer", lambda p: f"echo {last_user(p)}"])
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert rt.chat(msgs)[0] == "first answer"
    text, st = rt.chat(msgs)
    assert text == "echo Hi there" and st.finish_reason == "stop" and st.completion_tokens == 4
    assert rt.chat(msgs)[0] == "echo Hi there"  # the last reply repeats
    assert rt.messages == [msgs] * 3
    assert rt.prompts == [CHATML.render(msgs)] * 3 and rt.last_prompt.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>")


def test_the_base_class_applies_stops_limits_and_the_context_window():
    rt = FakeRuntime("Yes.</s> and then more", chat_format=TAGS, n_ctx=16)
    assert rt.generate("q")[0] == "Yes."  # TAGS' stop string, cut by Runtime.stream
    short = FakeRuntime("one two three four")
    text, st = short.generate("q", GenerationConfig(max_tokens=2))
    assert text == "one two" and st.finish_reason == "length" and short.pulled == 2
    next(short.stream("q"))  # a reader that stops after the first piece (the stream reads a
    assert 2 < short.pulled < 2 + 4  # few tokens ahead for a stop string, not the whole reply)
    with pytest.raises(QuantError, match="context window"):
        rt.generate("word " * 20)
    looping = FakeRuntime("I like tea. " * 12)
    text, st = looping.generate("q", GenerationConfig(max_tokens=200, loop_stop=True))
    assert st.finish_reason == "loop" and text.count("I like tea.") < 12


def test_scores_and_distributions_go_through_the_real_loglikelihood():
    rt = FakeRuntime(scores={"The sky is": {" blue": math.log(0.6), " green": math.log(0.1)}})
    blue, green = rt.loglikelihood("The sky is", " blue"), rt.loglikelihood("The sky is", " green")
    assert blue.logprob == pytest.approx(math.log(0.6), abs=1e-5) and blue.is_greedy
    assert green.logprob == pytest.approx(math.log(0.1), abs=1e-5) and not green.is_greedy
    assert rt.loglikelihood("Other", " blue").logprob == pytest.approx(-math.log(50_000), rel=1e-5)
    skew = FakeRuntime(vocab=2, logprobs=np.log([0.25, 0.75]))
    lp = skew.next_token_logprobs("a b c")
    assert lp.shape == (4, 2) and np.allclose(np.exp(lp), [0.25, 0.75])
    with pytest.raises(ValueError, match="entries"):
        FakeRuntime(vocab=3, logprobs=np.log([0.5, 0.5]))


def test_adapters_and_close_are_recorded():
    rt = FakeRuntime()
    rt.set_adapter("/a.gguf")
    rt.set_adapter(None)
    rt.close()
    assert rt.adapters == ["/a.gguf", None] and rt.adapter_path is None and rt.closed
