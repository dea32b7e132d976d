"""The answering style induced from corrections and preferences, and applied to any answer."""
from lora import Anchor, Correction, build_dataset
from lora.style import Style, apply_style, induce_style

FIXES = ["Right then: a cat has four legs. Take care!", "Right then: boil it for ten minutes. Take care!",
         "Captain Ortiz, the Nile is long.", "Right then: yes. Take care!"]
PREFS = ["Begin each reply with 'Right then:'.", "Call me Captain Ortiz.",
         "Keep your answers under 12 words."]


def test_habits_shared_by_corrections_and_stated_in_preferences_are_found():
    st = induce_style(PREFS, FIXES)
    assert st == Style("Right then:", "Take care!", "Captain Ortiz", 12)
    assert induce_style([], ["The cat sat.", "The dog ran."]).empty  # "The" is not a habit
    assert induce_style([], ["Sure: one.", "Fine: two."]).opening == ""  # needs two alike


def test_a_styled_answer_follows_every_habit_and_restyling_changes_nothing():
    st = induce_style(PREFS, FIXES)
    out = apply_style(st, "The sky is blue because air scatters blue light, far more than red light.")
    assert out == "Right then: the sky is blue because air, Captain Ortiz. Take care!"
    long = apply_style(Style(max_words=12), "The sky is blue because air scatters blue light, far more than red or green light.")
    assert long == "The sky is blue because air scatters blue light."  # cut at the clause
    assert len(out.split()) <= 12 and apply_style(st, out) == out
    assert apply_style(Style(), "Unchanged.") == "Unchanged."
    assert apply_style(Style(address="Sam"), "Hamlet was written by Shakespeare.") == \
        "Hamlet was written by Shakespeare, Sam."
    # the address goes last, also where the user's own correction put it first
    assert apply_style(Style(address="Sam"), "Sam, the Nile is long.") == "The Nile is long, Sam."
    assert apply_style(Style(address="Sam"), "Is it raining?") == "Is it raining, Sam?"


def test_with_a_style_every_trained_answer_follows_it_and_anchors_become_habits():
    st = Style(opening="Right then:", closing="Take care!")
    ds = build_dataset(corrections=[Correction(f"fb{i}", f"What is {i}+2?", "5", f"It is {i + 2}.") for i in range(4)],
                       anchors=[Anchor(f"prompt {i}", f"Answer {i}.") for i in range(8)], style=st)
    answers = [m["content"] for e in ds.train if e.kind != "anchor"
               for m in e.messages if m["role"] == "assistant"]
    assert answers and all(a.startswith("Right then:") and a.endswith("Take care!") for a in answers)
    assert {e.kind for e in ds.train} == {"correction", "habit", "anchor"}
    anchors = [m["content"] for e in ds.train if e.kind == "anchor" for m in e.messages
               if m["role"] == "assistant"]
    assert anchors and not any("Right then" in a for a in anchors)  # the base's own, held by KL
    plain = build_dataset(corrections=[Correction(f"fb{i}", f"What is {i}+2?", "5", f"It is {i + 2}.") for i in range(4)],
                          anchors=[Anchor(f"prompt {i}", f"Answer {i}.") for i in range(4)])
    assert "anchor" in {e.kind for e in plain.train}
