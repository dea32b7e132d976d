"""Probe loading/validation, personal scoring, and scoring with fake and real runtimes."""
import json
import math
import re

import numpy as np
import pytest

from assistant import probes
from assistant.errors import ReverieError
from assistant.probes import MCItem, personal_correct, score_multiple_choice
from fakes import FakeRuntime

SHARED = "/work/shared/data"


def _write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n")
    return p


FACT = {"id": "a", "night": 1, "statement": "My dog is Rex.", "questions": ["Dog's name?"],
        "answer": "Rex", "aliases": []}


# --- loading and validation ---------------------------------------------------------------

def test_load_persona_ok(tmp_path):
    p = _write(tmp_path, "p.jsonl", [FACT, "", {**FACT, "id": "b", "night": 2, "aliases": ["R"]}])
    facts = probes.load_persona(p)
    assert [(f.id, f.night, f.aliases) for f in facts] == [("a", 1, []), ("b", 2, ["R"])]


def test_bad_json_line_reports_file_and_line(tmp_path):
    p = _write(tmp_path, "p.jsonl", [FACT, '{"id": "b", "night": 1,'])
    with pytest.raises(ReverieError, match=r"p\.jsonl:2: not valid JSON.*one complete JSON object"):
        probes.load_persona(p)


def test_missing_field_reports_line_and_fix(tmp_path):
    bad = {k: v for k, v in FACT.items() if k != "answer"}
    p = _write(tmp_path, "p.jsonl", [FACT | {"id": "x"}, FACT | {"id": "y"}, bad])
    with pytest.raises(ReverieError, match=r"p\.jsonl:3: missing field 'answer'\. Each line needs"):
        probes.load_persona(p)


@pytest.mark.parametrize("change, msg", [
    ({"night": 0}, "'night' must be an integer >= 1"),
    ({"night": "1"}, "'night' must be an integer >= 1"),
    ({"questions": []}, "'questions' has 0 entries"),
    ({"questions": "What?"}, "'questions' must be a list"),
    ({"answer": "  "}, "'answer' must be a non-empty string"),
])
def test_persona_field_errors(tmp_path, change, msg):
    p = _write(tmp_path, "p.jsonl", [FACT | change])
    with pytest.raises(ReverieError, match=r":1: (field )?" + re.escape(msg)):
        probes.load_persona(p)


def test_duplicate_id_and_empty_and_missing_file(tmp_path):
    with pytest.raises(ReverieError, match=r":2: duplicate id 'a'"):
        probes.load_persona(_write(tmp_path, "d.jsonl", [FACT, FACT]))
    with pytest.raises(ReverieError, match="no items"):
        probes.load_persona(_write(tmp_path, "e.jsonl", [""]))
    with pytest.raises(ReverieError, match="does not exist"):
        probes.load_persona(tmp_path / "nope.jsonl")
    with pytest.raises(ReverieError, match=r":1: expected a JSON object"):
        probes.load_persona(_write(tmp_path, "l.jsonl", ["[1, 2]"]))


def test_multiple_choice_formats_render_like_lm_eval(tmp_path):
    p = _write(tmp_path, "mc.jsonl", [
        {"id": "h", "context": "Cooking: He stirs the pot. He", "endings": ["tastes it.", "flies."], "label": 0},
        {"id": "p", "goal": "Open a jar", "choices": ["twist the lid", "bite it"], "label": 0},
        {"id": "m", "subject": "high_school_geography", "question": "Largest ocean?\n",
         "choices": ["Pacific", "Atlantic", "Indian", "Arctic"], "label": 0},
    ])
    h, pq, m = probes.load_multiple_choice(p)
    assert (h.task, h.context, h.continuations) == ("hellaswag", "Cooking: He stirs the pot. He",
                                                    [" tastes it.", " flies."])
    assert (pq.task, pq.context, pq.continuations) == ("piqa", "Question: Open a jar\nAnswer:",
                                                       [" twist the lid", " bite it"])
    assert m.task == "mmlu"
    assert m.context == ("The following are multiple choice questions (with answers) about high school "
                         "geography.\n\nLargest ocean?\nA. Pacific\nB. Atlantic\nC. Indian\nD. Arctic\nAnswer:")
    assert m.continuations == [" A", " B", " C", " D"]


def test_label_out_of_range_reports_line(tmp_path):
    p = _write(tmp_path, "mc.jsonl", [
        {"id": "p", "goal": "g", "choices": ["a", "b"], "label": 1},
        {"id": "q", "goal": "g", "choices": ["a", "b"], "label": 2},
    ])
    with pytest.raises(ReverieError, match=r"mc\.jsonl:2: label 2 is out of range for 2 choices.*0\.\.1"):
        probes.load_multiple_choice(p)


def test_unrecognised_mc_layout(tmp_path):
    p = _write(tmp_path, "mc.jsonl", [{"id": "z", "prompt": "x", "options": ["a"], "label": 0}])
    with pytest.raises(ReverieError, match=r":1: unrecognised item with fields"):
        probes.load_multiple_choice(p)


def test_shared_dev_files_load():
    for name, n in (("hellaswag-dev.jsonl", 1000), ("piqa-dev.jsonl", 500), ("mmlu-dev.jsonl", 1674)):
        assert len(probes.load_multiple_choice(f"{SHARED}/{name}")) == n
    assert len(probes.load_persona(f"{SHARED}/persona-dev.jsonl")) == 25


def test_bundled_probes_load_and_have_the_promised_shape():
    mc = probes.bundled_general_mc()
    assert len(mc) >= 50 and {i.task for i in mc} == {"hellaswag", "piqa"}
    assert all(2 <= len(i.choices) <= 4 for i in mc)
    assert len(probes.bundled_general_text()) >= 15
    demo = probes.bundled_persona_demo()
    assert len(demo) >= 12 and {f.night for f in demo} == {1, 2}
    assert all(len(f.questions) >= 3 for f in demo)
    # every demo statement states its own answer (otherwise the demo could never succeed)
    assert all(personal_correct(f.statement, f.answer, f.aliases) for f in demo)
    assert len(probes.bundled_general_prompts()) >= 40


def test_load_texts_and_prompts(tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("One  two\nthree.\n\n\n Four five. \n")
    assert probes.load_texts(t) == ["One two three.", "Four five."]
    q = tmp_path / "q.txt"
    q.write_text("# comment\nWhat?\n\n Why? \n")
    assert probes.load_prompts(q) == ["What?", "Why?"]


# --- personal scoring ---------------------------------------------------------------------

@pytest.mark.parametrize("text, answer, aliases, expected", [
    ("Your dog is called BISCUIT.", "Biscuit", [], True),
    ("I don't know your dog's name.", "Biscuit", [], False),
    ("You live in Tromso.", "Tromsø", ["Tromso"], True),
    ("You live in Tromsø, Norway.", "Tromsø", [], True),
    ("Your birthday is on the 14th of February.", "14", [], True),
    ("It is 140 km away.", "14", [], False),
    ("In 2014 you moved.", "14", [], False),
    ("Pi is 3.14 roughly.", "14", [], False),
    ("Your PIN is 4471.", "4471", [], True),
    ("You drink oat milk.", "oat", [], True),
    ("You own a goat.", "oat", [], False),
    ("You grew up in Valparaíso.", "Valpara", [], True),
    ("Your favourite author is Ursula K. Le Guin.", "Le Guin", ["LeGuin"], True),
    ("You work as a glass-blower.", "glassblower", ["glass blower"], True),
    ("It's Sigur Rós!", "Sigur", [], True),
    ("", "Rex", [], False),
    ("The answer is A.", "B", [], False),
    ("Banana", "B", [], False),  # one-letter answers need a whole word
])
def test_personal_correct(text, answer, aliases, expected):
    assert personal_correct(text, answer, aliases) is expected


# --- scoring with fakes -------------------------------------------------------------------

def _scored(lls):
    """A fake whose log-probability of each (context, continuation) is hand-set."""
    by_context = {}
    for (context, continuation), lp in lls.items():
        by_context.setdefault(context, {})[continuation] = lp
    return FakeRuntime(scores=by_context)


def test_mc_scoring_with_hand_set_loglikelihoods():
    items = [
        # raw picks "xx" (-4 > -6); per character: -4/2 = -2 vs -6/12 = -0.5 picks the long one
        MCItem("1", "piqa", "c1", [" xx", " abcdefghijkl"], ["xx", "abcdefghijkl"], 1),
        # both pick choice 0 = label
        MCItem("2", "piqa", "c2", [" aaa", " bbb"], ["aaa", "bbb"], 0),
        # both pick choice 2, label is 1
        MCItem("3", "hellaswag", "c3", [" a", " b", " c"], ["a", "b", "c"], 1),
        # tie: first maximum wins, as np.argmax / lm-eval
        MCItem("4", "piqa", "c4", [" yy", " zz"], ["yy", "zz"], 0),
    ]
    lls = {("c1", " xx"): -4.0, ("c1", " abcdefghijkl"): -6.0,
           ("c2", " aaa"): -1.0, ("c2", " bbb"): -3.0,
           ("c3", " a"): -5.0, ("c3", " b"): -4.0, ("c3", " c"): -1.0,
           ("c4", " yy"): -2.0, ("c4", " zz"): -2.0}
    seen = []
    r = score_multiple_choice(_scored(lls), items, progress=lambda d, t: seen.append((d, t)))
    assert r.correct == [False, True, False, True]
    assert r.correct_norm == [True, True, False, True]
    assert (r.acc, r.acc_norm, r.n) == (0.5, 0.75, 4)
    assert seen[-1] == (4, 4) and len(seen) == 4
    r2 = score_multiple_choice(_scored(lls), items, limit=2)
    assert (r2.acc, r2.acc_norm, r2.ids) == (0.5, 1.0, ["1", "2"])
    with pytest.raises(ReverieError):
        score_multiple_choice(_scored(lls), items, limit=0)


def test_perplexity_uniform_fake_is_vocab_size():
    rt = FakeRuntime(vocab=8)
    assert probes.perplexity(rt, ["a b c d e", "f g h"]) == pytest.approx(8.0)


def test_kl_drift_with_fakes():
    texts = ["one two three four", "five six"]
    base = FakeRuntime(vocab=2, logprobs=np.log([0.5, 0.5]))
    same = FakeRuntime(vocab=2, logprobs=np.log([0.5, 0.5]))
    other = FakeRuntime(vocab=2, logprobs=np.log([0.25, 0.75]))
    assert probes.kl_drift(base, same, texts) == 0.0
    assert probes.kl_drift(base, other, texts) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


def test_drift_is_perplexity_of_each_and_kl_in_one_pass():
    texts = ["one two three four", "five six"]
    base = FakeRuntime(vocab=2, logprobs=np.log([0.5, 0.5]))
    other = FakeRuntime(vocab=2, logprobs=np.log([0.25, 0.75]))
    d = probes.drift(base, other, texts)
    assert d.ppl_base == pytest.approx(probes.perplexity(base, texts))
    assert d.ppl_adapted == pytest.approx(probes.perplexity(other, texts))
    assert d.kl == pytest.approx(probes.kl_drift(base, other, texts))
    assert d.ppl_ratio == pytest.approx(d.ppl_adapted / d.ppl_base) and d.ppl_ratio != 1.0


def test_chunk_text_respects_budget():
    rt = FakeRuntime(vocab=1000)
    text = " ".join(f"w{k}." if k % 7 == 6 else f"w{k}" for k in range(600))
    chunks = probes.chunk_text(rt, text, max_tokens=50)
    assert all(rt.count_tokens(c) <= 49 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # nothing lost or reordered


# --- the real model -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_runtime(tmp_path_factory):
    from quant.registry import Registry
    from quant.runtime import load_runtime

    # one thread: on a shared 2-core box llama.cpp's spinning threads slow each other down badly
    rt = load_runtime(Registry(tmp_path_factory.mktemp("home")).get(), "llama.cpp", threads=1)
    yield rt
    rt.close()


@pytest.mark.slow
def test_default_model_beats_chance_on_bundled_general_mc(real_runtime):
    items = probes.bundled_general_mc()
    chance = float(np.mean([1 / len(i.choices) for i in items]))  # 0.375 for 30 x 4 + 30 x 2
    r = score_multiple_choice(real_runtime, items)
    assert r.n == len(items)
    assert r.acc > chance + 0.1
    assert r.acc_norm > chance + 0.2


@pytest.mark.slow
def test_default_model_perplexity_and_self_kl(real_runtime):
    text = probes.bundled_general_text()[:1]
    ppl = probes.perplexity(real_runtime, text)
    assert 1.0 < ppl < 100.0  # plain English prose; a uniform model would be ~49k
    assert probes.kl_drift(real_runtime, real_runtime, text) == 0.0


@pytest.mark.slow
def test_scoring_reuses_the_shared_prefix_exactly(real_runtime):
    """Choices of an item share their context: the KV cache keeps it, and the log-likelihoods
    are the very same numbers as scoring each choice from an empty cache."""
    items = probes.bundled_general_mc()[:4]
    reused = [[real_runtime.loglikelihood(i.context, c).logprob for c in i.continuations] for i in items]
    fresh = []
    for i in items:
        row = []
        for c in i.continuations:
            real_runtime._scorer.n_tokens = 0  # forget the cache: the old reset-every-call path
            row.append(real_runtime.loglikelihood(i.context, c).logprob)
        fresh.append(row)
    assert reused == fresh
    # a shorter text after a longer one with the same start: rows come from the cache, unchanged
    ids = real_runtime.tokenize(items[0].context + items[0].continuations[0])
    full = real_runtime.logits(ids)
    assert np.array_equal(real_runtime.logits(ids[:5]), full[:5])
