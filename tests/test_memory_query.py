"""memory.query (what a question names) and recall's new weighing steps, on tiny inputs."""
import json
from datetime import datetime

from memory.query import (DateSpec, as_said_by, as_statement, date_words, dates_in,
                          is_question, named_speakers, strip_names, sub_queries)
from memory.recall import Recalled, diversify, focus, fuse_scores, neighbour_support
from memory_fakes import LOCOMO_SAMPLE, fake_embedder, store  # noqa: F401 - fixtures


def test_dates_in_reads_days_months_and_years():
    assert dates_in("What painting did Melanie show on October 13, 2023?") == [DateSpec(2023, 10, 13)]
    assert dates_in("What did Gina find on 1 February, 2023?") == [DateSpec(2023, 2, 1)]
    assert dates_in("When did Melanie go camping in June?") == [DateSpec(None, 6)]
    assert dates_in("What did they paint in July 2023?") == [DateSpec(2023, 7)]
    assert dates_in("How many times in 2023?") == [DateSpec(2023)]
    assert dates_in("What may Caroline do next?") == []  # the verb is not the month
    assert dates_in("What did Caroline research?") == []
    assert DateSpec(2023, 5).matches(datetime(2023, 5, 8)) and not DateSpec(2023, 6).matches(datetime(2023, 5, 8))
    assert date_words(datetime(2023, 5, 8)) == "8 May 2023"


def test_speakers_named_also_by_short_form_and_stripped():
    speakers = {"Caroline", "Melanie"}
    assert named_speakers("What did Mel and her kids paint?", speakers) == {"Melanie"}
    assert named_speakers("What is Caroline's identity?", speakers) == {"Caroline"}
    assert named_speakers("what did caroline say?", speakers) == set()  # names are capitalised
    assert named_speakers("Where did I put it?", speakers) == set()
    assert strip_names("What is Caroline's identity?", {"Caroline"}) == "What is identity?"


def test_statement_form_and_sub_queries():
    assert as_statement("What did Caroline research?") == "Caroline research"
    assert as_statement("What kind of art does Caroline make?") == "art Caroline make"
    assert as_statement("?") == "?"
    assert sub_queries("What did Caroline research?") == []
    assert len(sub_queries("What pets does Ada keep and which beaches does she visit?")) == 2
    assert as_said_by("What do Melanie's kids like?", {"Melanie"}) == "my kids like"
    assert as_said_by("What did Mel paint with her son?", {"Melanie"}) == "I paint with my son"
    assert as_said_by("What have Jon and Gina both opened?", {"Jon", "Gina"}) == "have we both opened"
    assert as_said_by("What did Caroline research?", set()) == "Caroline research"


def test_neighbour_support_forward_share_and_expand():
    scores = {"q": 1.0}
    nb = {"q": [None, "answer"]}
    assert neighbour_support(scores, nb, share=0.4) == {"q": 1.0}  # not a candidate: left out
    got = neighbour_support(scores, nb, share=0.2, forward=0.6, expand=True)
    assert got == {"q": 1.0, "answer": 0.6}
    got = neighbour_support({"q": 1.0, "before": 0.1}, {"q": ["before", None]}, share=0.2, forward=0.6)
    assert got["before"] == 0.1 + 0.2


def test_focus_fuse_scores_and_diversify():
    assert focus({"a": 1.0, "b": 1.0}, lambda m: m == "a", 1.0) == {"a": 2.0, "b": 1.0}
    fused = fuse_scores({"v": [("a", 0.9), ("b", 0.5)], "b": [("b", 3.0)]}, scale=1.0)
    assert fused == {"a": 1.0, "b": 1.0}
    items = [Recalled(i, i, "episodic", s, {"session": g}) for i, s, g in
             (("a", 1.0, 1), ("b", 0.9, 1), ("c", 0.8, 2))]
    assert [i.id for i in diversify(items, lambda it: it.source["session"], 0.5)] == ["a", "c", "b"]


def test_speaker_and_date_focus_in_recall(store, tmp_path):
    from dataclasses import replace

    path = tmp_path / "l.json"
    path.write_text(json.dumps([LOCOMO_SAMPLE]))
    store.import_locomo(path)
    plain = replace(store.options, speaker_focus=0.0, date_focus=0.0)
    store.options = replace(plain, speaker_focus=4.0)
    # the question names Bo: Bo's turn comes first although its words match less
    got = store.recall("What did Bo start, Pixel or pottery?", k=3, token_budget=None)
    assert got[0].source["speaker"] == "Bo"
    store.options = replace(plain, date_focus=4.0)
    got = store.recall("What did Ada say about Pixel in June?", k=3, token_budget=None)
    assert got[0].source["dia_id"] == "D2:1"


def test_is_question_looks_past_a_photo_caption():
    assert is_question("How'd you feel while painting it?")
    assert is_question("Love the colours! What gave you the idea? [shares a photo: a sunset]")
    assert not is_question("Is it done? Yes, I painted a sunset last week.")
    assert not is_question("I painted a sunset. [shares a photo: a painting of a sunset]")


BREAD = {"sample_id": "conv-bread", "conversation": {
    "speaker_a": "Ada", "speaker_b": "Bo", "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"speaker": "Ada", "dia_id": "D1:1", "text": "Do you bake bread on Sundays, the sourdough bread?"},
        {"speaker": "Bo", "dia_id": "D1:2", "text": "Every week I make a rye loaf for the family."},
        {"speaker": "Ada", "dia_id": "D1:3", "text": "My sister bakes sourdough bread on Sundays."}]},
    "qa": []}


def test_question_damp_ranks_a_turn_that_asks_below_one_that_tells(store, tmp_path):
    from dataclasses import replace

    path = tmp_path / "b.json"
    path.write_text(json.dumps([BREAD]))
    store.import_locomo(path)
    plain = replace(store.options, question_damp=0.0, feedback_weight=0.0)

    def top(opts):
        store.options = opts
        return [r.source["dia_id"] for r in store.recall("Who bakes sourdough bread on Sundays?",
                                                         k=3, token_budget=None)]
    assert top(plain)[0] == "D1:1"  # the question repeats the words
    damped = top(replace(plain, question_damp=0.7))
    assert damped.index("D1:3") < damped.index("D1:1")
    assert damped[0] != "D1:1"  # (the reply after it keeps the share the question passes on)
    # feedback, term queries and expansion run and keep every memory findable
    for extra in ({"feedback_weight": 0.5, "question_damp": 0.5}, {"term_query_weight": 0.5},
                  {"expand_weight": 0.5}, {"voice_weight": 0.5}):
        assert sorted(top(replace(plain, **extra))) == ["D1:1", "D1:2", "D1:3"]
