import pytest

from memory.facts import extract_facts, split_sentences, subject_of


@pytest.mark.parametrize("text, subject, value, canonical", [
    ("I live in Bergen.", "city of residence", "bergen", "The user lives in Bergen."),
    ("I moved to Oslo last week", "city of residence", "oslo", "The user lives in Oslo."),
    ("I'm allergic to peanuts and shellfish.", "allergy: peanuts", "peanuts",
     "The user is allergic to peanuts."),
    ("My favorite color is blue", "favourite color", "blue", "The user's favourite color is blue."),
    ("I work as a nurse", "occupation", "nurse", "The user works as a nurse."),
    ("my job is teacher", "occupation", "teacher", "The user's occupation is teacher."),
    ("I work at Equinor", "employer", "equinor", "The user works at Equinor."),
    ("I was born in 1990", "birth year", "1990", "The user was born in 1990."),
    ("I was born in Tromsø", "birthplace", "tromsø", "The user was born in Tromsø."),
    ("My sister's name is Anna.", "sister's name", "anna", "The user's sister's name is Anna."),
    ("I have a dog named Rex", "has: dog named rex", "dog named rex", "The user has a dog named Rex."),
    ("I'm 34 years old", "age", "34", "The user is 34 years old."),
    ("My name is Kari", "name", "kari", "The user's name is Kari."),
])
def test_rules(text, subject, value, canonical):
    facts = extract_facts(text)
    assert len(facts) == 1
    f = facts[0]
    assert (f.subject, f.value, f.text, f.said) == (subject, value, canonical, text)


@pytest.mark.parametrize("text", [
    "Do I live in Oslo?", "I don't live in Oslo", "I no longer work at Equinor.",
    "My bad, sorry", "Hello there, how are you?", "What is the capital of France?",
])
def test_non_statements_are_ignored(text):
    assert extract_facts(text) == []


def test_one_fact_per_sentence_in_order():
    facts = extract_facts("My name is Kari. I was born in 1990! Nice weather. I live in Oslo now")
    assert [f.subject for f in facts] == ["name", "birth year", "city of residence"]
    assert facts[2].value == "oslo"


def test_moving_and_living_share_a_subject_and_multi_valued_slots_do_not():
    assert subject_of("I live in Bergen")[0] == subject_of("I just moved to Oslo!")[0]
    assert subject_of("I'm allergic to cats")[0] != subject_of("I'm allergic to peanuts")[0]
    assert subject_of("nothing to see") == (None, None)


@pytest.mark.parametrize("text, subject, value, canonical", [
    ("My doctor is Dr. Okafor.", "doctor", "dr. okafor", "The user's doctor is Dr. Okafor."),
    ("My favourite author is Ursula K. Le Guin.", "favourite author", "ursula k. le guin",
     "The user's favourite author is Ursula K. Le Guin."),
    ("My favourite author is J. R. R. Tolkien", "favourite author", "j. r. r. tolkien",
     "The user's favourite author is J. R. R. Tolkien."),
    ("My landlord is Mr. Smith.", "landlord", "mr. smith", "The user's landlord is Mr. Smith."),
    ("My dentist is Mrs. Ng", "dentist", "mrs. ng", "The user's dentist is Mrs. Ng."),
    ("I live in St. Louis.", "city of residence", "st. louis", "The user lives in St. Louis."),
    ("My height is 1.82 metres.", "height", "1.82 metres", "The user's height is 1.82 metres."),
    ("I work at Acme Inc.", "employer", "acme inc", "The user works at Acme Inc."),
    ("My favourite snack is fruit, e.g. apples.", "favourite snack", "fruit",
     "The user's favourite snack is fruit."),
])
def test_abbreviations_initials_and_decimals_stay_in_the_value(text, subject, value, canonical):
    facts = extract_facts(text)
    assert len(facts) == 1
    f = facts[0]
    assert (f.subject, f.value, f.text, f.said) == (subject, value, canonical, text)


@pytest.mark.parametrize("text, sentences", [
    ("My doctor is Dr. Okafor. I live in Oslo.", ["My doctor is Dr. Okafor.", "I live in Oslo."]),
    ("I met Ursula K. Le Guin once. She was kind.", ["I met Ursula K. Le Guin once.", "She was kind."]),
    ("Pick one, e.g. the red one. Thanks!", ["Pick one, e.g. the red one.", "Thanks!"]),
    ("It costs 3.50 today. Cheap.", ["It costs 3.50 today.", "Cheap."]),
    ("I wake at 7 a.m. every day. My dog is Rex.", ["I wake at 7 a.m. every day.", "My dog is Rex."]),
    # An abbreviation or initial at the end of a sentence still ends it before a sentence start.
    ("I live on Main St. My sister is Anna.", ["I live on Main St.", "My sister is Anna."]),
    ("I live in the U.S. My name is Kari.", ["I live in the U.S.", "My name is Kari."]),
    ("My hero is Malcolm X. He was brave.", ["My hero is Malcolm X.", "He was brave."]),
    ("Ends here. Next one! And a third? Yes", ["Ends here.", "Next one!", "And a third?", "Yes"]),
])
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


def test_facts_after_an_abbreviation_in_a_sentence_before_are_found():
    facts = extract_facts("My doctor is Dr. Okafor. I live in St. Louis now. My name is Kari")
    assert [(f.subject, f.value) for f in facts] == [
        ("doctor", "dr. okafor"), ("city of residence", "st. louis"), ("name", "kari")]
