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


def test_facts_come_in_sentence_order():
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


# --- issue 14: keep the point ----------------------------------------------------------------
# (said, [(subject, value, canonical text), ...]) — every fact, in order.
KEEPS_THE_POINT = [
    # Negations: the main clause wins; "the texture" only points back at the mushrooms.
    ("I really cannot stand mushrooms, I hate the texture.",
     [("dislikes: mushrooms", "mushrooms", "The user dislikes mushrooms.")]),
    ("I can't eat gluten", [("cannot eat: gluten", "gluten", "The user can't eat gluten.")]),
    ("I cannot eat gluten.", [("cannot eat: gluten", "gluten", "The user can't eat gluten.")]),
    ("I don't eat meat.", [("does not eat: meat", "meat", "The user does not eat meat.")]),
    ("I don't like olives", [("dislikes: olives", "olives", "The user dislikes olives.")]),
    ("I hate it.", []),
    ("I love the beach.", [("likes: beach", "beach", "The user likes the beach.")]),
    # Named people: the name, and what they do or are.
    ("my sister Anjali, she is a doctor in Pune",
     [("sister", "anjali", "The user's sister is Anjali."),
      ("sister anjali: is", "doctor in pune", "The user's sister Anjali is a doctor in Pune.")]),
    ("My sister Anjali is a doctor in Pune.",
     [("sister", "anjali", "The user's sister is Anjali."),
      ("sister anjali: is", "doctor in pune", "The user's sister Anjali is a doctor in Pune.")]),
    ("My partner is called Ines and she teaches violin.",
     [("spouse", "ines", "The user's partner is called Ines."),
      ("spouse ines: teaches", "violin", "The user's partner Ines teaches violin.")]),
    ("my brother Tom works as a chef",
     [("brother", "tom", "The user's brother is Tom."),
      ("brother tom: works", "as a chef", "The user's brother Tom works as a chef.")]),
    ("My sister is Anjali. She's a nurse.",
     [("sister", "anjali", "The user's sister is Anjali."),
      ("sister anjali: is", "nurse", "The user's sister Anjali is a nurse.")]),
    ("I went to Paris with my friend Sam.", [("friend", "sam", "The user's friend is Sam.")]),
    ("My trip to Paris was great.", []),
    ("She is a doctor.", []),  # nobody named: "she" is nobody we know
    # Occupation said as "I'm a ...", not degree or fandom.
    ("I'm a nurse.", [("occupation", "nurse", "The user works as a nurse.")]),
    ("I'm an engineer at Equinor.",
     [("occupation", "engineer at equinor", "The user works as an engineer at Equinor.")]),
    ("I'm a bit tired", []),
    ("I'm a morning person.", []),
    ("I'm a big fan of jazz", [("likes: jazz", "jazz", "The user likes jazz.")]),
    ("I'm vegetarian", [("diet", "vegetarian", "The user is vegetarian.")]),
    # Names said as "I'm X", only when typed with a capital and not an adjective.
    ("I'm Tomasz", [("name", "tomasz", "The user's name is Tomasz.")]),
    ("I'm Tomasz, by the way.", [("name", "tomasz", "The user's name is Tomasz.")]),
    ("I am Anna.", [("name", "anna", "The user's name is Anna.")]),
    ("I'm Happy", []),
    ("I'm English.", []),
    ("i'm tomasz", []),
    # The first person plural: the user speaking for a household.
    ("we live in Leeds", [("city of residence", "leeds", "The user lives in Leeds.")]),
    ("our dog is called Rex", [("dog", "rex", "The user's dog is called Rex.")]),
    ("our dog is Rex", [("dog", "rex", "The user's dog is Rex.")]),
    ("we have two kids", [("has: two kids", "two kids", "The user has two kids.")]),
    ("We're from Spain.", [("origin", "spain", "The user is from Spain.")]),
    # Several facts in one sentence.
    ("I live in York and I work as a nurse.",
     [("city of residence", "york", "The user lives in York."),
      ("occupation", "nurse", "The user works as a nurse.")]),
    ("I'm 34 and I live in Bath",
     [("age", "34", "The user is 34 years old."),
      ("city of residence", "bath", "The user lives in Bath.")]),
    ("Hi, I'm Tomasz; I can\u2019t eat gluten.",
     [("name", "tomasz", "The user's name is Tomasz."),
      ("cannot eat: gluten", "gluten", "The user can't eat gluten.")]),
    ("I'm allergic to peanuts and shellfish.",  # "and" between values does not split
     [("allergy: peanuts", "peanuts", "The user is allergic to peanuts.")]),
    # Discourse words and time phrases say how or when, not what.
    ("Actually my favourite band is Portishead now.",
     [("favourite band", "portishead", "The user's favourite band is Portishead.")]),
    ("Big news: I moved to Wroclaw last weekend.",
     [("city of residence", "wroclaw", "The user lives in Wroclaw.")]),
    ("I moved to Leeds a few weeks ago.",
     [("city of residence", "leeds", "The user lives in Leeds.")]),
    ("I work as a radiographer at the city hospital.",
     [("occupation", "radiographer at the city hospital",
       "The user works as a radiographer at the city hospital.")]),
    ("My favourite colours are red and blue.",
     [("favourite colours", "red", "The user's favourite colours are red.")]),
    # The user's own words in a value read back in the first person.
    ("I love my dog Rex.",
     [("dog", "rex", "The user's dog is Rex."),
      ("likes: the user's dog rex", "the user's dog rex", "The user likes the user's dog Rex.")]),
    # Negated, or a question: nothing.
    ("I don't live in Oslo", []),
    ("I don't think I like olives.", []),
    ("I'm not a nurse.", []),
    ("Where do I live?", []),
    ("Am I allergic to peanuts? I think so.", []),
]


@pytest.mark.parametrize("said, want", KEEPS_THE_POINT)
def test_extraction_keeps_the_point(said, want):
    facts = extract_facts(said)
    assert [(f.subject, f.value, f.text) for f in facts] == want
    assert all(f.said in said for f in facts)  # the sentence it came from


@pytest.mark.parametrize("text, want", [
    ("The user's favourite band is Radiohead.", ("favourite band", "radiohead")),
    ("The user lives in York.", ("city of residence", "york")),
    ("The user works as a nurse.", ("occupation", "nurse")),
    ("The user is allergic to peanuts.", ("allergy: peanuts", "peanuts")),
    ("The user's partner is called Ines.", ("spouse", "ines")),
    ("The user can't eat gluten.", ("cannot eat: gluten", "gluten")),
    ("The user does not eat meat.", ("does not eat: meat", "meat")),
    ("The user's name is Tomasz.", ("name", "tomasz")),
    # A text with a name and an attribute is about the attribute: it is the fact's own text.
    ("The user's sister Anjali is a doctor in Pune.", ("sister anjali: is", "doctor in pune")),
    ("My sister Anjali is a doctor in Pune.", ("sister anjali: is", "doctor in pune")),
])
def test_subject_of_reads_canonical_texts(text, want):
    assert subject_of(text) == want


def test_every_canonical_text_gives_back_its_own_subject_and_value():
    # The store compares a stored fact's value with a new one through subject_of.
    for said, _ in KEEPS_THE_POINT:
        for f in extract_facts(said):
            assert subject_of(f.text) == (f.subject, f.value), f.text
