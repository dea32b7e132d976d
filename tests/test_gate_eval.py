"""The base-result cache behind the gate and `reverie eval`: a question asked once is not asked
again, results persist per model file, and it refuses anything but the bare base model."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest

from assistant.gate_eval import BaseCache, Probe, ask_probes, general_ability
from assistant.probes import MCItem


class ChatFake:
    backend = "fake"

    def __init__(self, adapter_path=None):
        self.adapter_path = adapter_path
        self.asked = []
        self.lls = {}

    def chat(self, messages, cfg):
        q = messages[-1]["content"]
        self.asked.append(q)
        return f"It is Biscuit ({len(self.asked)})", SimpleNamespace(prompt_tokens=7, ttft_s=0.1, tokens_per_s=30.0)

    def loglikelihood(self, context, continuation):
        self.asked.append((context, continuation))
        return SimpleNamespace(logprob=-len(continuation), n_tokens=1, is_greedy=False)


PROBES = [Probe("f1", "What is my dog's name?", "Biscuit"), Probe("f2", "Where do I live?", "Bergen")]


def test_questions_are_asked_once_and_the_cache_persists(tmp_path):
    rt = ChatFake()
    cache = BaseCache.for_model(tmp_path, "ab" * 32)
    first = ask_probes(rt, PROBES, "sys", cache=cache)
    assert len(rt.asked) == 2 and first.correct == [True, False]
    again = ask_probes(rt, PROBES + [Probe("f3", "Who is my sister?", "Anna")], "sys",
                       cache=BaseCache.for_model(tmp_path, "ab" * 32))
    assert len(rt.asked) == 3  # only the new question reached the model
    assert again.answers[:2] == first.answers and again.prompt_tokens == [7, 7, 7]
    assert oct(os.stat(cache.path).st_mode & 0o777) == "0o600"  # questions are personal
    # another system prompt, another generation length or another model: asked afresh
    ask_probes(rt, PROBES[:1], "other system prompt", cache=cache)
    ask_probes(rt, PROBES[:1], "sys", max_tokens=16, cache=cache)
    ask_probes(rt, PROBES[:1], "sys", cache=BaseCache.for_model(tmp_path, "cd" * 32))
    assert len(rt.asked) == 6


def test_cache_refuses_adapters_and_memory_and_survives_damage(tmp_path):
    cache = BaseCache.for_model(tmp_path, "ab" * 32)
    with pytest.raises(ValueError, match="base model"):
        ask_probes(ChatFake(adapter_path="/x.gguf"), PROBES, "sys", cache=cache)
    with pytest.raises(ValueError, match="without memory"):
        ask_probes(ChatFake(), PROBES, "sys", memory_block=lambda q: "note", cache=cache)
    with pytest.raises(ValueError, match="base model"):
        general_ability(ChatFake(adapter_path="/x.gguf"), [], cache=cache)
    cache.path.parent.mkdir(parents=True, exist_ok=True)
    cache.path.write_text("{not json")
    rt = ChatFake()
    assert ask_probes(rt, PROBES, "sys", cache=BaseCache(cache.path)).correct == [True, False]
    assert len(json.loads(cache.path.read_text())) == 2  # rewritten whole


def test_general_ability_from_cache_equals_scoring(tmp_path):
    items = [MCItem("1", "piqa", "c1", [" a", " bbb"], ["a", "bbb"], 0),
             MCItem("2", "piqa", "c2", [" aaaa", " b"], ["aaaa", "b"], 0),
             MCItem("3", "piqa", "c3", [" aa", " b"], ["aa", "b"], 1)]
    plain = general_ability(ChatFake(), items)
    cache = BaseCache.for_model(tmp_path, "ab" * 32)
    rt = ChatFake()
    part = general_ability(rt, items[:2], cache=cache)
    n = len(rt.asked)
    whole = general_ability(rt, items, cache=cache)
    assert len(rt.asked) == n + 2  # only item 3's two choices were scored
    assert (whole.acc, whole.acc_norm, whole.correct) == (plain.acc, plain.acc_norm, plain.correct)
    assert part.correct == plain.correct[:2]


class StreamFake:
    """Streams a fixed answer piece by piece and counts the pieces the caller pulled."""
    backend = "fake"

    def __init__(self, answers, adapter_path=None):
        self.answers, self.adapter_path, self.pulled, self.asked = answers, adapter_path, 0, []

    def format_chat(self, messages):
        return messages[-1]["content"]

    def stream(self, prompt, cfg):
        self.asked.append(prompt)
        for piece in self.answers[prompt]:
            self.pulled += 1
            yield piece


def test_general_questions_stop_decoding_once_answered_and_score_like_the_whole_answer(tmp_path):
    from assistant.gate_eval import answers_known
    from assistant.probes import FactualItem

    items = [FactualItem("What is the capital of France?", "Paris"),
             FactualItem("What is 12 times 12?", "144", ("one hundred forty-four",)),
             FactualItem("Who painted the Mona Lisa?", "Leonardo da Vinci", ("Leonardo",))]
    answers = {items[0].question: ["The", " capital", " is", " Paris", ".", " It", " is", " big", " and", " old"],
               items[1].question: ["It", " is", " 14", "4", "."],  # "14" alone must not pass
               items[2].question: ["A", " famous", " painter", "."]}
    rt = StreamFake(answers)
    assert answers_known(rt, items, "sys") == [True, True, False]
    assert rt.pulled == 6 + 5 + 4  # France stopped two pieces after "Paris"; the others ran out
    # a number that runs on into a longer one is not the answer
    rt = StreamFake({items[1].question: ["It", " is", " 144", "0", " exactly"]})
    assert answers_known(rt, items[1:2], "sys") == [False]
    cache = BaseCache.for_model(tmp_path, "ab" * 32)
    rt = StreamFake(answers)
    answers_known(rt, items, "sys", cache=cache)
    again = StreamFake(answers)
    assert answers_known(again, items, "sys", cache=BaseCache.for_model(tmp_path, "ab" * 32)) == [True, True, False]
    assert again.asked == []  # the base's answers were cached
    with pytest.raises(ValueError, match="only for the base model"):
        answers_known(StreamFake(answers, adapter_path="a.gguf"), items, "sys", cache=cache)


def test_gate_factual_items_bundled_and_cut_by_the_environment(monkeypatch):
    from assistant.errors import ReverieError
    from assistant.probes import bundled_general_facts
    from assistant.probes import FactualItem, bundled_general_prompts
    from assistant.sleep import gate_factual_items, never_trained

    every = bundled_general_facts()
    assert len(every) >= 300 and len({it.question for it in every}) == len(every)
    assert any(it.question == "What is the capital of France?" and it.answer == "Paris" for it in every)
    # the anchor prompts (trained every night) and the gate's questions are disjoint, and a
    # question that were also an anchor prompt would not be asked
    unseen = never_trained(every)
    assert unseen == every
    assert never_trained(every + [FactualItem(bundled_general_prompts()[0], "x")]) == every
    assert len(bundled_general_prompts()) >= 200
    monkeypatch.setenv("REVERIE_GATE_FACTUAL", "5")
    assert gate_factual_items() == unseen[:5]
    monkeypatch.delenv("REVERIE_GATE_FACTUAL")
    assert gate_factual_items() == unseen
    monkeypatch.setenv("REVERIE_GATE_FACTUAL", "many")
    with pytest.raises(ReverieError, match="REVERIE_GATE_FACTUAL"):
        gate_factual_items()


class ForcedFake(StreamFake):
    """Characters are tokens; its greedy continuation of any prompt is `says`."""

    def __init__(self, answers, says):
        super().__init__(answers, adapter_path="a.gguf")
        self.says, self.forced = says, 0

    def tokenize(self, text, add_bos=True):
        return ([0] if add_bos else []) + [ord(c) for c in text]

    def logits(self, ids):
        import numpy as np

        self.forced += 1
        prompt_len = len(self.tokenize(next(iter(self.answers))))  # one question per fake
        out = np.zeros((len(ids), 200), np.float32)
        for j in range(len(ids)):
            k = j - prompt_len + 1  # position j predicts the k-th character after the prompt
            if 0 <= k < len(self.says):
                out[j, ord(self.says[k])] = 1.0
        return out


def test_a_reference_answer_the_adapter_would_write_costs_one_forward_pass():
    from assistant.gate_eval import answers_known
    from assistant.probes import FactualItem

    item = FactualItem("Capital of France?", "Paris")
    pieces = {item.question: ["It", " is", " Lyon", "."]}
    same = ForcedFake(pieces, "The capital is Paris. It")
    assert answers_known(same, [item], "sys", reference=["The capital is Paris. It"]) == [True]
    assert same.forced == 1 and same.asked == []  # no decode
    other = ForcedFake(pieces, "It is Lyon.")
    assert answers_known(other, [item], "sys", reference=["The capital is Paris. It"]) == [False]
    assert other.forced == 1 and other.asked == [item.question]  # forced check failed: decoded
