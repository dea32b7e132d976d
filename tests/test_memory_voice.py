"""memory.voice: one first_person and one second_person for recall, chat and training data."""
import pytest

from memory.voice import first_person, second_person

# (stored, first person, second person)
CASES = [
    ("The user lives in Oslo.", "I live in Oslo.", "You live in Oslo."),
    ("The user goes running.", "I go running.", "You go running."),
    ("The user's dentist is Dr Okafor.", "My dentist is Dr Okafor.", "Your dentist is Dr Okafor."),
    ("The user is allergic to peanuts.", "I am allergic to peanuts.",
     "You are allergic to peanuts."),
    ("The user has two cats.", "I have two cats.", "You have two cats."),
    ("The user watches films.", "I watch films.", "You watch films."),
    ("The user studies law.", "I study law.", "You study law."),
    ("The user misses Oslo.", "I miss Oslo.", "You miss Oslo."),
    ("The user does yoga.", "I do yoga.", "You do yoga."),
    ("The user was born in 1990.", "I was born in 1990.", "You were born in 1990."),
    ("The user likes the user's dentist.", "I like my dentist.", "You like your dentist."),
    ("The user can't eat gluten.", "I can't eat gluten.", "You can't eat gluten."),
    ("The user's sister Anjali is a doctor in Pune.", "My sister Anjali is a doctor in Pune.",
     "Your sister Anjali is a doctor in Pune."),
    ("The user does not eat meat.", "I do not eat meat.", "You do not eat meat."),
    ("The user doesn't smoke.", "I don't smoke.", "You don't smoke."),
    ("The user isn't married.", "I am not married.", "You aren't married."),
    ("The user also fixes bikes.", "I also fix bikes.", "You also fix bikes."),
    ("The user moved to Leeds.", "I moved to Leeds.", "You moved to Leeds."),
    ("Anna calls the user every day.", "Anna calls me every day.", "Anna calls you every day."),
    ("The user lives in Oslo. The user's dog is Rex.", "I live in Oslo. My dog is Rex.",
     "You live in Oslo. Your dog is Rex."),
    ("The user lives with the user's parents and the user teaches maths.",
     "I live with my parents and I teach maths.",
     "You live with your parents and you teach maths."),
    # Texts without "the user" keep their words; second person swaps the speaker's.
    ("I play the bassoon and my name is Ian.", "I play the bassoon and my name is Ian.",
     "You play the bassoon and your name is Ian."),
    ("I'm allergic to cats.", "I'm allergic to cats.", "You're allergic to cats."),
    ("The weather is nice.", "The weather is nice.", "The weather is nice."),
    ("", "", ""),
]


@pytest.mark.parametrize("stored, first, second", CASES)
def test_person_rewrites(stored, first, second):
    assert first_person(stored) == first
    assert second_person(stored) == second


def test_recall_and_persona_use_the_one_home():
    from assistant import persona
    from memory import recall

    assert persona.first_person is first_person
    assert recall.first_person is first_person and recall.second_person is second_person


# lora may not import memory (layers), so lora.phrasings keeps its own second_person for
# first-person statements; this list pins the two to the same answers.
SHARED_FIRST_PERSON = [
    ("I was born in Oslo.", "You were born in Oslo."),
    ("My dog was sick.", "Your dog was sick."),
    ("I live in Bergen.", "You live in Bergen."),
    ("I'm allergic to peanuts.", "You're allergic to peanuts."),
    ("I am a nurse.", "You are a nurse."),
    ("My sister is called Ingrid.", "Your sister is called Ingrid."),
    ("I've got a cat named Miso.", "You've got a cat named Miso."),
    ("I play the bassoon and my name is Ian.", "You play the bassoon and your name is Ian."),
    ("My mother calls me every day.", "Your mother calls you every day."),
]


@pytest.mark.parametrize("said, want", SHARED_FIRST_PERSON)
def test_lora_second_person_agrees_with_memory_voice(said, want):
    from lora.phrasings import second_person as lora_second_person

    assert second_person(said) == want
    assert lora_second_person(said) == want
