"""Reconciliation in ordinary use: corrections are recalled, an update beats the stale adapter,
and a turn that said more than its facts stays recallable. Real SQLite, chromadb and embedder."""
import time

from assistant.services import Services
from fakes import FakeRuntime
from memory.adapters_ledger import AdapterLedger
from memory.feedback import FeedbackLog
from memory.ledger import Ledger


def _rt():  # the model whose adapters the ledger lists is "m"
    return FakeRuntime(name="m")


def _services(home):
    ledger = Ledger(home)
    return ledger, Services(home, ledger), ledger.new_conversation(model="m")


def test_a_fix_is_recalled_for_the_same_question_rephrased_not_for_others(reverie_home):
    ledger, services, conv = _services(reverie_home)
    u, a, _ = services.record_exchange(conv, "What is the capital of Australia?", "Sydney.", "{}")
    FeedbackLog(ledger).add("bad", conv, a.id, u.content, a.content)
    FeedbackLog(ledger).add("fix", conv, a.id, u.content, a.content,
                            "The capital of Australia is Canberra.")
    items, block = services.recall("What's the capital city of Australia?", _rt())
    assert "Canberra" in block and items[-1].kind == "correction"
    _, block = services.recall("How long should I boil pasta?", _rt())
    assert "Canberra" not in block
    ledger.close()


def test_an_update_after_the_night_makes_the_adapter_step_aside(reverie_home):
    ledger, services, conv = _services(reverie_home)
    services.record_exchange(conv, "I live in Leeds.", "Noted.", "{}")
    leeds = services.memory.list(kind="fact")[0]
    AdapterLedger(ledger).add(id="v001-x", model="m", fact_ids=[leeds.id], status="promoted",
                              created=time.time())
    recalled, _ = services.recall("Which city do I live in?", _rt())
    assert not services.newer_than_adapter(recalled, _rt())  # the adapter knows Leeds
    services.record_exchange(conv, "I moved to York last week.", "Nice.", "{}")
    recalled, block = services.recall("Which city do I live in?", _rt())
    assert "York" in block and "Leeds" not in block
    assert services.newer_than_adapter(recalled, _rt())  # memory's York must win this turn
    ledger.close()


def test_a_turn_that_said_more_than_its_facts_stays_recallable(reverie_home):
    ledger, services, conv = _services(reverie_home)
    services.record_exchange(conv, "I work as a nurse, and my shifts start at dawn.", "Ok.", "{}")
    _, block = services.recall("When do my shifts start?", _rt())
    assert "dawn" in block
    ledger.close()


def test_chat_forget_command_forgets_everywhere_and_says_what(reverie_home):
    ledger, services, conv = _services(reverie_home)
    services.record_exchange(conv, "My gym locker code is 5830.", "Got it.", "{}")
    forget = services.command_handler("/forget")
    assert forget(None, "").startswith("usage: /forget")
    out = forget(None, "5830")
    # the turn that said it and the reply to it
    assert out == "forgot '5830': 2 memories, 2 conversation turns, 0 feedback items."
    assert forget(None, "5830") == "nothing matches '5830'; nothing changed."
    from assistant.forget import leaked_files

    assert leaked_files(reverie_home, ["5830"]) == []
    ledger.close()


def test_asking_to_forget_in_words_is_not_stored_and_points_to_the_command(reverie_home):
    from memory.hygiene import forget_request

    assert forget_request("Please forget my gym locker code.") == "my gym locker code"
    assert forget_request("Can you forget about my ex?") == "my ex"
    assert forget_request("I forget things a lot.") is None
    ledger, services, conv = _services(reverie_home)
    _, _, notes = services.record_exchange(conv, "Please forget my gym locker code.", "Ok.", "{}")
    assert "/forget" in notes[0] and services.memory.list(limit=None) == []
    ledger.close()
