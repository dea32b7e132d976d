"""Standing preferences: recognised in chat, kept as their own kind (one per slot: a newer opening
replaces the older), shown with every answer when memory is on; habit probe files and scoring."""
import json

import pytest

from assistant.errors import ReverieError
from assistant.habits import HabitProbe, follows, load_habits
from assistant.services import PREFERENCES_HEADER, Services
from fakes import FakeRuntime
from memory.ledger import Ledger
from memory.preferences import extract_preferences


@pytest.mark.parametrize("said, slot, kept", [
    ("From now on, please begin each reply with 'Right then:'.", "opening",
     "Begin each reply with 'Right then:'."),
    ("Please always end your answers with 'Take care!'", "closing",
     "Always end your answers with 'Take care!'"),
    ("Please call me Captain Ortiz.", "address", "Call me Captain Ortiz."),
    ("Keep answers brief, please.", "length", "Keep answers brief."),
    ("Could you give temperatures in celsius from now on.", "temperature units", None),
    ("When I ask for a synonym, list three of them.", "when i ask for a synonym", None),
])
def test_a_stated_habit_is_recognised_with_its_slot(said, slot, kept):
    [p] = extract_preferences(said)
    assert p.subject == f"preference: {slot}"
    if kept:
        assert p.text == kept


@pytest.mark.parametrize("said", ["I live in Leeds.", "What should I call my cat?",
                                  "My answers on the quiz were wrong.", "I am short.",
                                  "Do you always answer like that?"])
def test_ordinary_talk_and_questions_are_not_habits(said):
    assert extract_preferences(said) == []


def test_preferences_are_kept_one_per_slot_and_shown_with_every_answer(reverie_home):
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    _, _, notes = services.record_exchange(
        conv, "From now on, start every answer with 'Right then:'.", "Right then: ok.", "{}")
    assert notes == ["will do: Start every answer with 'Right then:'"]
    services.record_exchange(conv, "Please call me Captain Ortiz.", "Ok.", "{}")
    _, _, notes = services.record_exchange(
        conv, "Actually, start every answer with 'Well:' instead.", "Well: ok.", "{}")
    assert notes == ["changed to: Actually, start every answer with 'Well:' instead"]
    prefs = [m.text for m in services.memory.active_preferences()]
    assert prefs == ["Call me Captain Ortiz.", "Actually, start every answer with 'Well:' instead."]
    items, block = services.recall("How do volcanoes form?", FakeRuntime())
    assert block.splitlines()[0] == PREFERENCES_HEADER and "Captain Ortiz" in block
    assert "Right then" not in block and [i.kind for i in items] == ["preference", "preference"]
    # a name said as "call me" is also the user's name
    assert any("Captain Ortiz" in m.text for m in services.memory.list(kind="fact"))
    ledger.close()


def test_habit_scoring_and_file_errors(tmp_path):
    p = HabitProbe("x", ("(?i)^in short",), ("(?i)miles",), 5)
    assert follows("In short: yes.", p)
    assert not follows("Yes, in short.", p) and not follows("In short: 3 miles.", p)
    assert not follows("In short: one two three four five six.", p)
    good = {"id": "h1", "night": 1, "statement": "Say hi.", "demos": [{"prompt": "q", "answer": "hi"}],
            "probes": [{"prompt": "q2", "must_match": ["hi"], "must_not_match": [], "max_words": None}]}
    f = tmp_path / "h.jsonl"
    f.write_text(json.dumps(good) + "\n")
    assert load_habits(f)[0].probes[0].must_match == ("hi",)
    for bad, msg in [({**good, "probes": [{"prompt": "q", "must_match": ["("]}]}, "does not compile"),
                     ({k: v for k, v in good.items() if k != "statement"}, "missing or empty 'statement'"),
                     ({**good, "probes": []}, "missing 'probes'"),
                     ({**good, "night": 0}, "night must be")]:
        f.write_text(json.dumps(good) + "\n" + json.dumps({**bad, "id": "h2"}) + "\n")
        with pytest.raises(ReverieError, match=r"h\.jsonl:2: .*" + msg):
            load_habits(f)


def test_eval_preferences_bad_input_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--preferences", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 1 and "does not exist" in r.output
    f = tmp_path / "p.jsonl"
    f.write_text('{"id": "a", "statement": "Say hi.", "probes": [{"prompt": "q", "must_match": ["("]}]}\n')
    # with --facts both files are checked before anything runs, each with its own line errors
    r = runner.invoke(app, ["eval", "--preferences", str(f), "--facts", str(f)])
    assert r.exit_code == 1 and "p.jsonl:1: missing field 'night'" in r.output
    r = runner.invoke(app, ["eval", "--preferences", str(f), "--scenario", str(f)])
    assert r.exit_code == 1 and "leave out --scenario" in r.output
    r = runner.invoke(app, ["eval", "--preferences", str(f)])
    assert r.exit_code == 1 and "p.jsonl:1: must_match regex '(' does not compile" in r.output


def test_contradictory_preferences_the_newer_wins_and_the_report_says_so():
    from assistant.habit_eval import superseded
    from assistant.habits import Habit
    from assistant.report import render_markdown, render_table

    probe = (HabitProbe("q", ("x",)),)
    habits = [Habit("open-short", 1, "From now on, start every answer with 'In short:'.", (), probe),
              Habit("km", 1, "Always give distances in km.", (), probe),
              Habit("open-tldr", 2, "From now on, start every answer with 'TL;DR:'.", (), probe)]
    assert superseded(habits) == {"open-short": "open-tldr"}
    assert superseded(habits[:2]) == {}
    rows = {"km": {"followed": 1, "probes": 2, "example": "It is 5 km."},
            "open-tldr": {"followed": 2, "probes": 2, "example": "TL;DR: yes."},
            "open-short": {"followed": 0, "probes": 0, "superseded_by": "open-tldr"}}
    arm = {"personal_acc": 0.5, "preference_acc": 0.75, "per_preference": rows}
    res = {"arms": {"memory": arm, "adapter": {**arm, "preference_acc": 0.9}},
           "general_factual_delta": -0.00625, "n_factual": 320,
           "superseded_preferences": superseded(habits)}
    md = render_markdown(res)
    assert "| arm | personal | 95% CI | preference |" in md and "| 0.900 |" in md
    assert "| open-short | replaced | replaced |" in md and "| km | 1/2 | 1/2 |" in md
    assert "open-short was replaced by open-tldr" in md and "TL;DR: yes." in md
    table = render_table(res)
    assert "preference" in table.splitlines()[0] and "general questions change" in table
    assert "-0.6 points" in table


def test_fix_without_a_previous_answer_is_refused_and_stores_nothing(tmp_path, llama_runtime):
    from assistant.chat import ChatSession
    from memory.feedback import FeedbackLog

    s = ChatSession(tmp_path / "home", runtime=llama_runtime, use_adapter=False, max_tokens=4)
    try:
        assert s.command("/fix In short: yes.").output == "nothing to rate yet: ask something first."
        assert s.command("/fix").output.startswith("usage: /fix")
        assert FeedbackLog(s.services.ledger).list(limit=None) == []
        s.send("Is it going to rain?")
        assert "correction stored" in s.command("/fix In short: take an umbrella.").output
        assert [f.kind for f in FeedbackLog(s.services.ledger).list(limit=None)] == ["fix"]
    finally:
        s.close()
