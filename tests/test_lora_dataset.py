import json
from pathlib import Path

import pytest

from lora.config import TrainConfig
from lora.dataset import Anchor, Correction, Example, Fact, GoodAnswer, build_dataset
from lora.errors import LoraError
from lora.phrasings import is_near, phrase, second_person

PERSONA = Path("/work/shared/data/persona-dev.jsonl")


def users(ds, kind=None):
    return [m["content"] for e in ds.train if kind in (None, e.kind) for m in e.messages if m["role"] == "user"]


@pytest.mark.parametrize("statement,value,question", [
    ("My favourite color is teal.", "teal", "Which color do I like best?"),
    ("I live in Bergen.", "Bergen", "Where do I live?"),
    ("I work as a baker.", "baker", "What is my job?"),
    ("I'm allergic to peanuts.", "peanuts", "What am I allergic to?"),
    ("My car is a blue Fiat.", "blue Fiat", "What is my car?"),
    ("I have a parrot named Kiwi.", "Kiwi", "What is my parrot's name?"),
    ("I was born in Lagos.", "Lagos", "Where was I born?"),
    ("My brother's name is Tomas.", "Tomas", "What is my brother's name?"),
])
def test_rules_give_several_phrasings_and_an_answer_with_the_value(statement, value, question):
    p = phrase(statement)
    assert p.value == value
    assert value in p.answer
    assert question in p.questions
    assert len(set(p.questions)) >= 6


def test_generic_fallback_still_teaches_something():
    p = phrase("I collect antique typewriters.")
    assert len(p.questions) >= 4
    assert p.answer == "You collect antique typewriters."


def test_second_person():
    assert second_person("I was born in Oslo") == "You were born in Oslo."
    assert second_person("My dog was sick.") == "Your dog was sick."


def test_near_match():
    assert is_near("What's my favorite color?", "what is my favourite color")
    assert is_near("What is my dog's name?", "what is my dog's name")
    assert is_near("What's my job?", "What is my job?")
    assert not is_near("Where do I live?", "What is my job?")


def test_facts_become_examples_and_probes_are_excluded():
    facts = [Fact("f1", "My favourite color is teal."), Fact("f2", "I live in Bergen.")]
    probes = ["What is my favourite color?", "where do i live"]
    ds = build_dataset(facts, system_prompt="You are helpful.", exclude_questions=probes)
    qs = users(ds) + [m["content"] for e in ds.holdout for m in e.messages if m["role"] == "user"]
    assert qs and all(not is_near(q, p) for q in qs for p in probes)
    assert "What is my favourite color?" not in qs
    assert ds.dropped["probe-like phrasing"] >= 2
    assert all(e.messages[0] == {"role": "system", "content": "You are helpful."} for e in ds.train)
    assert {e.source_id for e in ds.train} == {"f1", "f2"}
    assert sum(e.source_id == "f1" for e in ds.train + ds.holdout) >= 4


def test_persona_probes_never_leak():
    rows = [json.loads(line) for line in PERSONA.read_text().splitlines()]
    facts = [Fact(r["id"], r["statement"]) for r in rows]
    probes = [q for r in rows for q in r["questions"]]
    ds = build_dataset(facts, exclude_questions=probes)
    train_qs = users(ds) + [m["content"] for e in ds.holdout for m in e.messages if m["role"] == "user"]
    leaked = [q for q in train_qs if any(is_near(q, p) for p in probes)]
    assert leaked == []
    assert set(ds.fact_ids) == {r["id"] for r in rows}


def test_tombstoned_facts_never_enter_even_via_replay_or_feedback():
    facts = [Fact("f1", "I live in Bergen."), Fact("f2", "My cat's name is Pixel.")]
    replay = [Example([{"role": "user", "content": "Where do I live?"},
                       {"role": "assistant", "content": "You live in Bergen."}], "fact", "f1"),
              Example([{"role": "user", "content": "Home town?"},
                       {"role": "assistant", "content": "Bergen, of course."}], "fact", "old")]
    good = [GoodAnswer("g1", "Where should I shop?", "Near your home in Bergen.")]
    ds = build_dataset(facts, good_answers=good, replay=replay, tombstoned_ids={"f1"},
                       config=TrainConfig(replay_ratio=5))
    text = json.dumps([e.to_dict() for e in ds.train + ds.holdout])
    assert "Bergen" not in text
    assert "Pixel" in text
    assert ds.fact_ids == ["f2"]
    ds2 = build_dataset(facts, tombstoned_texts={"i live in bergen"})
    assert ds2.fact_ids == ["f2"]


def test_replay_and_anchor_mixing_ratios():
    facts = [Fact(f"f{i}", f"My code number {i} is {1000 + i}.") for i in range(10)]
    replay = [Example([{"role": "user", "content": f"old {i}?"}, {"role": "assistant", "content": f"r{i}"}],
                      "fact", f"o{i}") for i in range(100)]
    anchors = [Anchor(f"general {i}?", f"a{i}") for i in range(100)]
    cfg = TrainConfig(replay_ratio=0.5, anchor_ratio=0.25, holdout_fraction=0.0)
    ds = build_dataset(facts, anchors=anchors, replay=replay, config=cfg)
    c = ds.counts()
    assert c["replay"] == round(0.5 * c["fact"])
    assert c["anchor"] == round(0.25 * c["fact"])
    assert ds.new_examples == c["fact"]
    # anchors are never more than there are
    ds2 = build_dataset(facts, anchors=anchors[:2], config=TrainConfig(anchor_ratio=3))
    assert ds2.counts()["anchor"] == 2


def test_corrections_make_examples_and_preference_pairs():
    c = Correction("c1", "What's 2+2?", "5", "4")
    ds = build_dataset(corrections=[c])
    assert ds.pairs[0].chosen == "4" and ds.pairs[0].rejected == "5"
    assert ds.counts() == {"correction": 1}


def test_deterministic_hash_and_seed_sensitivity(tmp_path):
    facts = [Fact(f"f{i}", s) for i, s in enumerate(["I live in Bergen.", "My cat's name is Pixel.",
                                                      "I work as a baker."])]
    anchors = [Anchor("What is the capital of France?", "Paris.")]
    a = build_dataset(facts, anchors=anchors, config=TrainConfig(seed=1))
    b = build_dataset(facts, anchors=anchors, config=TrainConfig(seed=1))
    c = build_dataset(facts, anchors=anchors, config=TrainConfig(seed=2))
    assert a.hash == b.hash and len(a.hash) == 64
    assert [e.to_dict() for e in a.train] != [e.to_dict() for e in c.train]
    a.save(tmp_path / "ds")
    saved = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert saved["hash"] == a.hash
    assert len((tmp_path / "ds" / "train.jsonl").read_text().splitlines()) == len(a.train)


def test_dry_run_summary_and_empty_dataset():
    ds = build_dataset([Fact("f1", "I live in Bergen.")])
    s = ds.dry_run_summary(TrainConfig())
    assert "f1" in s and "would train" in s
    empty = build_dataset()
    assert empty.new_examples == 0
    assert "nothing new" in empty.dry_run_summary()


def test_bad_input():
    with pytest.raises(LoraError):
        build_dataset(["I live in Bergen."])
