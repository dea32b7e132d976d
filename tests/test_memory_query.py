"""memory.query (what a question names) and recall's new weighing steps, on tiny inputs."""
import json
from datetime import datetime

from memory.query import (DateSpec, as_statement, date_words, dates_in, named_speakers,
                          strip_names, sub_queries)
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
