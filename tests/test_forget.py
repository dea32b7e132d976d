"""Forget reaches everything: ledger rows, the vector index, feedback, adapter versions and their
files, reports and caches, and the bytes of the SQLite file. Real SQLite, real chromadb, real
embedder; adapter versions are real directories registered in the real ledger."""
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import ReverieError
from assistant.forget import forget_matching, forget_memory, leaked_files
from assistant.services import Services
from fakes import FakeRuntime
from memory import MemoryStore
from memory.adapters_ledger import AdapterLedger
from memory.feedback import FeedbackLog
from memory.ledger import Ledger


def _adapter(home: Path, adapters: AdapterLedger, vid: str, lines: list[str], status: str,
             fact_ids=(), promoted=0.0):
    d = home / "adapters" / vid
    d.mkdir(parents=True)
    (d / "train.jsonl").write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]})
                                           + "\n" for q in lines))
    (d / "adapter.gguf").write_bytes(b"GGUF fake weights")
    adapters.add(id=vid, model="m", path=str(d), gguf=str(d / "adapter.gguf"), status=status,
                 fact_ids=list(fact_ids), promoted=promoted, metrics={"answers": lines})
    return d


@pytest.fixture
def day(reverie_home):
    """A day of chat: a fact said in a turn, rated, trained into two adapter versions."""
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    services.record_exchange(conv, "I am allergic to peanuts.", "Noted: no peanuts for you.", "{}")
    services.record_exchange(conv, "I live in York.", "York is lovely.", "{}")
    ask_user, ask_answer, _ = services.record_exchange(conv, "What should I avoid eating?",
                                                       "You should avoid peanuts.", "{}")
    FeedbackLog(ledger).add("good", conv, ask_answer.id, ask_user.content, ask_answer.content)
    store = services.memory
    fact = next(m for m in store.list(kind="fact") if "peanuts" in m.text)
    adapters = AdapterLedger(ledger)
    _adapter(reverie_home, adapters, "v001-clean", ["Where do I live? York"], "retired",
             promoted=time.time() - 100)
    _adapter(reverie_home, adapters, "v002-nuts", ["What am I allergic to? peanuts",
                                                   "Where do I live? York"],
             "promoted", fact_ids=[fact.id], promoted=time.time())
    report = reverie_home / "reports" / "sleep-x" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("| probe | What am I allergic to? | Peanuts |\n")
    yield reverie_home, ledger, services, fact
    ledger.close()


def test_forget_matching_previews_then_reaches_every_copy(day):
    home, ledger, services, fact = day
    preview = forget_matching(home, "PEANUTS", apply=False, ledger=ledger)
    assert not preview["applied"] and preview["adapters_withdrawn"] == ["v002-nuts"]
    assert {m["id"] for m in preview["memories"]} >= {fact.id}
    assert len(preview["turns"]) == 3 and len(preview["feedback"]) == 1  # 2 answers + 1 user turn
    assert "peanuts" in json.dumps(services.memory.search("peanuts", k=5)[0].to_dict()).lower()

    res = forget_matching(home, "PEANUTS", apply=True, ledger=ledger)
    assert res["applied"] and res["serving"] == {"m": "v001-clean"}
    assert res["still_on_disk"] == [] and leaked_files(home, ["peanuts"]) == []
    assert "withdrawn" in res["summary"] and "v001-clean" in res["summary"]
    adapters = AdapterLedger(ledger)
    assert adapters.promoted("m").id == "v001-clean"
    assert adapters.get("v002-nuts").status == "withdrawn"
    # an example that stated it goes whole (its other fields say it in other words)
    assert json.loads(adapters.get("v002-nuts").metrics)["answers"] == ["Where do I live? York"]
    assert not Path(adapters.get("v002-nuts").path).exists()
    # the clean version's files are untouched; the report keeps its line without the text
    assert "York" in (home / "adapters" / "v001-clean" / "train.jsonl").read_text()
    assert "[forgotten]" in (home / "reports" / "sleep-x" / "report.md").read_text()
    # recall finds nothing about it; what else was said stays
    assert all("peanut" not in r.text.lower() for r in services.memory.search("allergic peanuts"))
    assert any("York" in r.text for r in services.memory.search("Where do I live?"))
    assert FeedbackLog(ledger).list(limit=None) == []
    assert services.memory.tombstoned_ids() >= {fact.id}


def test_forget_by_id_takes_the_turn_it_was_said_in(day):
    home, ledger, services, fact = day
    res = forget_memory(home, fact.id, ledger=ledger)
    assert res["memory"]["status"] == "forgotten" and res["still_on_disk"] == []
    assert leaked_files(home, [fact.text]) == []
    turns = [t.content for c in ledger.conversations() for t in ledger.turns(c["id"])]
    assert "I am allergic to peanuts." not in turns and "I live in York." in turns
    # the reply to it goes too: it answered the forgotten text; the next exchange stays
    assert "Noted: no peanuts for you." not in turns and "York is lovely." in turns
    with pytest.raises(ReverieError, match="unknown memory id"):
        forget_memory(home, fact.id, ledger=ledger)


def test_bad_and_empty_forgets_change_nothing(day):
    home, ledger, services, fact = day
    before = (home / "ledger.db").stat().st_size, len(services.memory.list(limit=None))
    for bad in ("", "  ", "a"):
        with pytest.raises(ReverieError, match="at least 3 characters"):
            forget_matching(home, bad, apply=True, ledger=ledger)
    res = forget_matching(home, "kangaroo", apply=True, ledger=ledger)
    assert res["summary"] == "nothing matches 'kangaroo'; nothing changed." and not res["applied"]
    assert len(services.memory.list(limit=None)) == before[1]


def test_forget_refuses_while_a_sleep_holds_the_lock(day):
    from assistant.sleep import sleep_lock

    home, ledger, services, fact = day
    with sleep_lock(home):
        with pytest.raises(ReverieError, match="run the forget again"):
            forget_matching(home, "peanuts", apply=True, ledger=ledger)
    assert services.memory.get(fact.id).text == fact.text  # nothing was forgotten


def test_cli_forget_matching_preview_yes_and_errors(day):
    from cli.main import app

    home, ledger, services, fact = day
    runner = CliRunner()
    r = runner.invoke(app, ["memory", "forget", "--matching", "peanuts"])
    assert r.exit_code == 0 and "would forget" in r.output and "--yes" in r.output
    assert services.memory.get(fact.id)  # a preview changes nothing
    r = runner.invoke(app, ["memory", "forget", "--matching", "peanuts", "--yes", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["applied"] is True
    r = runner.invoke(app, ["memory", "forget", "--matching", "zebra", "--yes"])
    assert r.exit_code == 0 and "nothing matches" in r.output
    r = runner.invoke(app, ["memory", "forget", "--matching", ""])
    assert r.exit_code == 1 and "at least 3 characters" in r.output
    r = runner.invoke(app, ["memory", "forget"])
    assert r.exit_code == 1 and "--matching" in r.output


def test_sixty_turns_of_chat_keep_the_fact_first(reverie_home):
    """Ordinary chatting, the assistant's answers looping included, does not bury a fact."""
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    services.record_exchange(conv, "I live in York.", "York is a lovely city.", "{}")
    loop = "I'm happy to help you with your culinary skills. " * 7
    chatter = ["Where do I live?", "Tell me about living somewhere nice.", "I like my home a lot.",
               "Where is a good place to live?", "Can you recommend a recipe?", "Thanks!",
               "Do people live long in cities?", "What should I cook tonight?"]
    for i in range(60):
        services.record_exchange(conv, chatter[i % len(chatter)],
                                 loop if i % 5 == 0 else f"You live in a nice place, answer {i}.", "{}")
    store = services.memory
    assert all(m.source.get("role") != "assistant" for m in store.list(kind="episodic", limit=None))
    assert not any("culinary" in m.text for m in store.list(limit=None))
    hits = store.search("Where do I live?", k=12)
    assert hits[0].kind == "fact" and "York" in hits[0].text
    items, block = services.recall("Where do I live?", FakeRuntime())
    assert items and items[0].kind == "fact" and "York" in block
    ledger.close()


def test_a_wall_of_text_or_a_loop_is_not_a_memory(reverie_home):
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    _, _, notes = services.record_exchange(conv, "x " * 60_000, "ok", "{}")
    assert notes and "not remembered" in notes[0] and "limit" in notes[0]
    _, _, notes = services.record_exchange(conv, "I moved to York. " * 5, "ok", "{}")
    assert "repeats itself" in notes[0]
    assert services.memory.list(limit=None) == []
    assert len(ledger.turns(conv)) == 4  # the conversation keeps them
    from memory import MemoryStoreError

    with pytest.raises(MemoryStoreError, match="not stored"):
        services.memory.add_fact("My note is " + "long " * 200)
    ledger.close()


def test_an_update_supersedes_and_retires_what_was_said_before(reverie_home):
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    u, a, notes = services.record_exchange(conv, "I live in Leeds.", "You live in Leeds.", "{}")
    assert notes == ["remembered: You live in Leeds"]
    fb = FeedbackLog(ledger)
    fb.add("bad", conv, a.id, u.content, a.content)
    fb.add("good", conv, a.id, u.content, a.content)  # the last rating wins
    assert [f.kind for f in fb.list(status="active")] == ["good"]
    _, _, notes = services.record_exchange(conv, "I moved to York.", "Nice.", "{}")
    assert notes == ["updated: You live in York"]
    assert fb.list(status="active") == []  # the /good on "Leeds" no longer trains
    store = services.memory
    assert [m.text for m in store.list(kind="fact")] == ["The user lives in York."]
    hits = store.search("Leeds", k=10)
    assert all("Leeds" not in h.text for h in hits)  # the old turn is history, not current
    ledger.close()


def test_memory_text_never_reaches_chromadb_files(reverie_home):
    store = MemoryStore(reverie_home)
    store.add_fact("My bank PIN is 8642.")
    assert "8642" in store.search("bank pin")[0].text
    assert [f for f in leaked_files(reverie_home, ["8642"]) if f.startswith("chroma")] == []
    store.close()


def test_a_number_that_merely_contains_a_forgotten_number_is_nudged_not_a_leak():
    from memory.forgetting import decollide

    text = '{"time": 1796158301.25, "loss": 0.583012, "code": 5830, "id": "run_158301"}'
    out = decollide(text, "5830")
    assert out == '{"time": 1796158311.25, "loss": 0.583112, "code": 5830, "id": "run_158301"}'
    assert decollide("my locker code is 5830.", "5830") == "my locker code is 5830."
    assert decollide("gluten 0.5830", "gluten") == "gluten 0.5830"  # words: nothing to nudge
    from memory.ledger import new_id

    assert not any(c.isdigit() for c in new_id("turn")[5:])  # ids hold no numbers to collide


def test_a_kept_fact_loses_the_forgotten_words_from_its_provenance(reverie_home):
    """"My sister Anjali is a doctor in Pune." gives two facts; forgetting "Pune" removes the
    one that states it and the turn, and the kept fact's source sentence loses the word."""
    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="m")
    services.record_exchange(conv, "My sister Anjali is a doctor in Pune.", "Nice.", "{}")
    res = forget_matching(reverie_home, "Pune", apply=True, ledger=ledger)
    assert res["still_on_disk"] == [] and leaked_files(reverie_home, ["pune"]) == []
    kept = services.memory.list(kind="fact")
    assert [m.text for m in kept] == ["The user's sister is Anjali."]
    assert "[forgotten]" in kept[0].source["said"]
    ledger.close()


def test_drop_mentions_removes_whole_examples_and_leaves_other_text():
    from memory.forgetting import drop_mentions

    doc = {"examples": [{"q": "What do I do?", "expected": "marine biologist",
                         "adapter": "Your job is in marine biology."},
                        {"q": "Where do I live?", "expected": "Bergen", "adapter": "Bergen."}],
           "lost": ["What is the capital of Ireland?", "Who is a Marine Biologist?"], "n": 2}
    out = json.loads(drop_mentions(json.dumps(doc), ["MARINE biologist"]))
    assert out == {"examples": [doc["examples"][1]], "lost": [doc["lost"][0]], "n": 2}
    for text in ("not json, marine biologist", '"marine biologist"', "", "[1, 2]"):
        assert drop_mentions(text, ["marine biologist"]) == text
