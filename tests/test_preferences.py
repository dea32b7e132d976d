"""Standing preferences: recognised in chat, kept as their own kind (one per slot: a newer opening
replaces the older), shown with every answer when memory is on; habit probe files and scoring."""
import json

import pytest

from assistant.errors import ReverieError
from assistant.habits import HabitProbe, follows, load_habits
from assistant.services import PREFERENCES_HEADER, Services
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
    class Rt:
        def count_tokens(self, text):
            return len(text) // 4

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
    items, block = services.recall("How do volcanoes form?", Rt())
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
    r = runner.invoke(app, ["eval", "--preferences", str(f), "--facts", str(f)])
    assert r.exit_code == 1 and "on its own" in r.output
    r = runner.invoke(app, ["eval", "--preferences", str(f)])
    assert r.exit_code == 1 and "p.jsonl:1: must_match regex '(' does not compile" in r.output
