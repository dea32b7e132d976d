"""One chat turn's logic (assistant/chat.py with assistant/services.py), on the fake runtime and
the fake embedder: what goes into the prompt, when memory is recalled, what /good /bad /fix
/remember store, and what a turn leaves in the ledger. Milliseconds each; the same turn on the
real model, llama.cpp and MiniLM is in test_chat.py and test_chat_memory.py."""
import json

import pytest

from assistant.chat import ChatSession
from assistant.errors import ReverieError
from assistant.prompting import QUESTION_SEP
from assistant.services import PREFERENCES_HEADER
from fakes import FakeRuntime
from memory.feedback import FeedbackLog
from memory.recall import CHAT_HEADER
from memory_fakes import fake_embedder  # noqa: F401 - fixture

SYSTEM = "You are a test assistant."


@pytest.fixture
def chat(reverie_home, fake_embedder):  # noqa: F811
    """A session on a fake model that answers "Noted." unless a test scripts it otherwise."""
    sessions = []

    def open_(replies="Noted.", **kw):
        rt = kw.pop("runtime", None) or FakeRuntime(replies)
        s = ChatSession(reverie_home, runtime=rt, use_adapter=kw.pop("use_adapter", False),
                        system_prompt=SYSTEM, **kw)
        sessions.append(s)
        return s

    yield open_
    for s in sessions:
        s.close()


def _memories(s, kind=None):
    return [(m.kind, m.text) for m in s.services.memory.list(kind=kind, limit=None)]


# --- what goes into the prompt ------------------------------------------------------------------
def test_without_memories_the_prompt_is_the_system_prompt_and_the_question(chat):
    s = chat()
    r = s.send("  Hello there  ")
    assert s.runtime.messages[-1] == [{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": "Hello there"}]
    assert s.runtime.last_prompt == s.runtime.chat_format.render(s.runtime.messages[-1])
    assert r.answer == "Noted." and r.recalled == [] and not r.trimmed_turns and not r.truncated_input


def test_a_recalled_fact_is_quoted_before_the_question_after_a_worked_example(chat):
    s = chat()
    s.services.memory.add_fact("My sister is called Ingrid.")
    r = s.send("What is my sister called?")
    msgs = s.runtime.messages[-1]
    assert msgs[0] == {"role": "system", "content": SYSTEM}  # memories never enter the system prompt
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]  # the worked example
    assert "Anna" in msgs[1]["content"] and "Ingrid" not in msgs[1]["content"]
    block, question = msgs[-1]["content"].split(QUESTION_SEP)
    assert question == "What is my sister called?"
    assert block.splitlines() == [CHAT_HEADER, '- "Your sister is called Ingrid."']
    assert [i.kind for i in r.recalled] == ["fact"]
    assert s.command("/why").output.startswith(f"[{r.recalled[0].id}] (fact)")


def test_memory_off_recalls_nothing_and_says_so(chat):
    s = chat(use_memory=False)
    s.services.memory.add_fact("My sister is called Ingrid.")
    r = s.send("What is my sister called?")
    assert "Ingrid" not in s.runtime.last_prompt and r.recalled == []
    assert s.command("/why").output == "the last answer used no memories (memory recall is off)."
    assert s.command("/memory on").output == "memory recall on"
    s.send("What is my sister called?")
    assert "Ingrid" in s.runtime.last_prompt
    assert s.command("/memory off").output == "memory recall off"
    s.send("What is my sister called?")
    assert "Ingrid" not in s.runtime.last_prompt
    assert s.command("/memory").output.startswith("memory recall is off")


def test_history_is_replayed_and_new_clears_it(chat):
    s = chat(["First answer.", "Second answer.", "Third answer."], use_memory=False)
    s.send("One?")
    s.send("Two?")
    assert s.runtime.messages[-1][1:] == [
        {"role": "user", "content": "One?"}, {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Two?"}]
    first = s.conversation_id
    assert s.command("/new").output == f"new conversation {s.conversation_id}" and s.conversation_id != first
    s.send("Three?")
    assert s.runtime.messages[-1][1:] == [{"role": "user", "content": "Three?"}]
    assert s.command("/history").output == "user: Three?\nassistant: Third answer."


def test_old_turns_are_dropped_and_an_overlong_message_shortened_to_fit(chat):
    rt = FakeRuntime("fine " * 3, n_ctx=120)
    s = chat(runtime=rt, use_memory=False, max_tokens=8)
    budget = 120 - 8 - 32  # n_ctx - answer - CONTEXT_MARGIN
    for i in range(6):
        r = s.send(f"Note {i}: " + "roses and a pond " * 3)
        assert rt.count_tokens(rt.last_prompt) <= budget
    assert r.trimmed_turns > 0 and rt.messages[-1][-1]["content"].startswith("Note 5:")
    r = s.send("Summarise: " + "lorem ipsum " * 200)
    assert r.truncated_input and rt.count_tokens(rt.last_prompt) <= budget
    assert rt.messages[-1][-1]["content"].startswith("Summarise: lorem ipsum")
    with pytest.raises(ReverieError, match="empty message"):
        s.send("   ")


def test_a_looping_answer_is_cut_streamed_and_stored_cut(chat):
    s = chat("I can help. " * 30)
    shown = []
    r = s.send("Can you help me?", on_text=shown.append)
    assert r.answer == "I can help."  # the chat turns the loop stop on
    assert "".join(shown).startswith("I can help.") and len(shown) > 1  # streamed piece by piece
    [_, answer] = s.ledger.turns(s.conversation_id)
    assert answer.content == "I can help."


# --- what a turn stores -----------------------------------------------------------------------
def test_a_statement_is_stored_as_turns_an_episode_and_a_fact_the_answer_only_as_a_turn(chat):
    s = chat("Ingrid is a lovely name.")
    r = s.send("My sister is called Ingrid.")
    assert r.notes == ["remembered: Your sister is called Ingrid"]
    turns = s.ledger.turns(s.conversation_id)
    assert [(t.role, t.content) for t in turns] == [("user", "My sister is called Ingrid."),
                                                    ("assistant", "Ingrid is a lovely name.")]
    assert r.turn_id == turns[1].id and r.conversation_id == s.conversation_id
    meta = json.loads(turns[1].meta)
    assert meta["backend"] == "fake" and meta["model"] == "fake-model" and meta["adapter"] is None
    assert meta["prompt_tokens"] == r.prompt_tokens > 0 and meta["completion_tokens"] == r.completion_tokens
    assert sorted(_memories(s)) == [("episodic", "My sister is called Ingrid."),
                                    ("fact", "The user's sister is called Ingrid.")]
    fact = s.services.memory.list(kind="fact")[0]
    assert fact.source["turn_id"] == turns[0].id


def test_a_question_is_history_not_a_memory(chat):
    s = chat()
    r = s.send("What is the capital of France?")
    assert r.notes == [] and _memories(s) == []
    assert len(s.ledger.turns(s.conversation_id)) == 2


def test_a_preference_is_stored_and_shown_with_every_later_answer(chat):
    s = chat()
    r = s.send("From now on, start every answer with 'In short:'.")
    assert r.notes == ["will do: Start every answer with 'In short:'"]
    assert _memories(s, kind="preference") == [("preference", "Start every answer with 'In short:'.")]
    s.send("How do volcanoes form?")  # unrelated: a habit holds for all answers
    block = s.runtime.messages[-1][-1]["content"].split(QUESTION_SEP)[0]
    assert block.splitlines() == [PREFERENCES_HEADER, "- \"Start every answer with 'In short:'.\""]


def test_remember_stores_a_fact_and_needs_text(chat):
    s = chat()
    assert s.command("/remember").output.startswith("usage: /remember")
    out = s.command("/remember my bike is red").output
    [(kind, text)] = _memories(s)
    assert kind == "fact" and out.endswith(f": {text}") and "memory m_" in out
    assert s.runtime.prompts == []  # no model call


@pytest.mark.parametrize("kind, line, said", [("good", "/good", "marked good"),
                                              ("bad", "/bad", "marked bad"),
                                              ("fix", "/fix You live in York.", "correction stored")])
def test_ratings_need_an_answer_and_point_at_it(chat, kind, line, said):
    s = chat("You live in Paris.")
    assert s.command(line).output == "nothing to rate yet: ask something first."
    assert FeedbackLog(s.ledger).list(limit=None) == []
    r = s.send("Where do I live?")
    out = s.command(line).output
    [fb] = FeedbackLog(s.ledger).list(limit=None)
    assert out == f"{said} ({fb.id}); tonight's `reverie sleep` learns from it."
    assert (fb.kind, fb.conversation_id, fb.turn_id, fb.prompt, fb.answer) == (
        kind, s.conversation_id, r.turn_id, "Where do I live?", "You live in Paris.")
    assert fb.correction == ("You live in York." if kind == "fix" else "")
    assert s.command("/fix").output.startswith("usage: /fix")
    assert len(FeedbackLog(s.ledger).list(limit=None)) == 1


def test_a_fix_is_shown_the_next_time_the_question_is_asked(chat):
    s = chat("You live in Paris.")
    s.send("Where do I live?")
    s.command("/fix You live in York.")
    s.send("Where do I live?")
    block = s.runtime.messages[-1][-1]["content"].split(QUESTION_SEP)[0]
    assert block.splitlines() == ["How the user wants these questions answered (quoted data):",
                                  '- When asked "Where do I live?", answer: "You live in York."']
    s.send("How do I bake bread?")
    assert "York" not in s.runtime.last_prompt


def test_an_unrecorded_chat_stores_nothing_and_rates_nothing(chat, reverie_home):
    s = chat(record=False)
    r = s.send("My sister is called Ingrid.")
    assert r.answer == "Noted." and r.turn_id == "" and s.conversation_id == ""
    assert s.ledger.conversations() == [] and _memories(s) == []
    assert s.command("/good").output == "nothing to rate yet: ask something first."
    assert FeedbackLog(s.ledger).list(limit=None) == []


# --- the promoted adapter -----------------------------------------------------------------------
def _promote(s, tmp_path, fact_ids=()):
    from memory.adapters_ledger import AdapterLedger

    gguf = tmp_path / "v001" / "adapter.gguf"
    gguf.parent.mkdir(exist_ok=True)
    gguf.write_bytes(b"GGUF")
    AdapterLedger(s.ledger).add(id="v001-test", model=s.runtime.model.name, status="promoted",
                                path=str(gguf.parent), gguf=str(gguf), fact_ids=list(fact_ids))
    return str(gguf)


def test_a_promoted_adapter_is_picked_up_between_turns_unless_switched_off(chat, tmp_path):
    s = chat(use_adapter=True)
    s.send("Hello.")
    assert s.runtime.adapters == []
    gguf = _promote(s, tmp_path)
    s.send("Hello again.")
    assert s.runtime.adapters == [gguf]
    assert json.loads(s.ledger.turns(s.conversation_id)[-1].meta)["adapter"] == "v001-test"

    off = chat(use_adapter=False)
    off.send("Hello.")
    assert off.runtime.adapters == [] and off.runtime.adapter_path is None


def test_a_merged_served_form_reopens_the_runtime_on_its_file_and_a_rollback_switches_back(
        chat, tmp_path, monkeypatch):
    """When the gate passed the merged file (assistant.served), chat loads that file instead of
    the base with a runtime LoRA; the served form follows the promoted row between turns."""
    import assistant.chat
    from memory.adapters_ledger import AdapterLedger

    opened = []

    def open_runtime(home, model, backend, adapter=None, **kw):
        rt = FakeRuntime("Merged." if model.path.endswith("served.gguf") else "Noted.",
                         name=model.name)
        rt.model = model
        rt.set_adapter(adapter) if adapter else None
        opened.append((model.path, adapter))
        return rt

    monkeypatch.setattr(assistant.chat, "open_runtime", open_runtime)
    s = chat(use_adapter=True)
    base = s.runtime
    led = AdapterLedger(s.ledger)
    gguf = _promote(s, tmp_path)  # v001: a runtime LoRA
    merged = tmp_path / "v002" / "served.gguf"
    merged.parent.mkdir()
    merged.write_bytes(b"GGUF")
    (merged.parent / "adapter.gguf").write_bytes(b"GGUF")
    led.add(id="v002-test", model=s.runtime.model.name, path=str(merged.parent),
            gguf=str(merged.parent / "adapter.gguf"), served=str(merged), status="candidate")
    led.promote("v002-test")
    r = s.send("Hello.")
    assert opened == [(str(merged), None)] and base.closed  # the merged file, no LoRA on top
    assert r.answer == "Merged." and s.served.merged and s.served.adapter_id == "v002-test"
    assert json.loads(s.ledger.turns(s.conversation_id)[-1].meta)["adapter"] == "v002-test"
    # rollback: v001 is promoted again, served as the base with its runtime LoRA
    led.promote("v001-test")
    assert s.send("Hello again.").answer == "Noted."
    assert opened[-1] == (base.model.path, gguf) and s.runtime.adapter_path == gguf
    # a merged file that went missing falls back to the runtime LoRA the gate also passed
    led.promote("v002-test")
    merged.unlink()
    s.send("And again.")
    assert s.served.adapter == str(merged.parent / "adapter.gguf")
    assert s.runtime.model.path == base.model.path and s.runtime.adapter_path == s.served.adapter
    s.close()


def test_a_newer_memory_answers_without_the_adapter_that_learned_the_old_one(chat, tmp_path):
    s = chat(use_adapter=True)
    s.send("I live in Leeds.")
    leeds = s.services.memory.list(kind="fact")[0]
    gguf = _promote(s, tmp_path, fact_ids=[leeds.id])
    s.send("I moved to York.")
    r = s.send("Where do I live?")
    assert "answered without the adapter: a newer memory replaces what it learned" in r.notes
    assert s.runtime.adapters[-2:] == [gguf, None] and "York" in s.runtime.last_prompt
    s.send("How do I bake bread?")
    assert s.runtime.adapter_path == gguf  # back on the next turn


def test_only_the_served_and_the_rollback_versions_keep_their_merged_files(reverie_home, tmp_path):
    """A merged file is a whole model: after a promotion the promoted version and the most
    recently promoted other keep theirs; older ones lose it and serve their runtime LoRA."""
    from assistant.served import prune_merged, served_form
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    ledger = Ledger(reverie_home)
    led = AdapterLedger(ledger)
    files = {}
    for i in range(1, 5):
        d = tmp_path / f"v00{i}"
        d.mkdir()
        (d / "adapter.gguf").write_bytes(b"GGUF")
        (d / "served.gguf").write_bytes(b"GGUF")
        files[f"v00{i}-x"] = d / "served.gguf"
        led.add(id=f"v00{i}-x", model="m", path=str(d), gguf=str(d / "adapter.gguf"),
                served=str(d / "served.gguf"), status="candidate")
        led.promote(f"v00{i}-x")
    led.set_status("v001-x", "withdrawn")  # not servable: not counted, left to forget
    led.promote("v002-x")  # a rollback made v002 the newest promotion of the retired ones
    led.promote("v004-x")
    logs = []
    assert prune_merged(led, "m", logs.append) == ["v003-x"] and "v003-x" in logs[0]
    assert not files["v003-x"].exists() and led.get("v003-x").served == ""
    assert all(files[v].exists() for v in ("v001-x", "v002-x", "v004-x"))
    assert served_form(led.get("v003-x"), "/base.gguf").adapter == str(tmp_path / "v003" / "adapter.gguf")
    assert served_form(led.get("v004-x"), "/base.gguf").merged
    assert prune_merged(led, "m", logs.append) == []  # nothing more to do
    ledger.close()
