"""`reverie eval --scenario`: file validation, scoring, redaction, the run's logic on fakes, and one
run on the real stack (real model, llama.cpp, chromadb, SQLite, assistant.forget)."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.errors import ReverieError
from assistant.scenario import load_scenario, redact, score

DEV = Path("/work/shared/data/scenario-dev.jsonl")
PROBE = '{"probe": "Where do I live?", "expect": ["Leeds"], "forbid": []}'


def write(tmp_path, *lines) -> Path:
    p = tmp_path / "s.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# --- load_scenario ---------------------------------------------------------------------------

def test_loads_a_valid_scenario(tmp_path):
    p = write(tmp_path, '{"day": 1, "say": "I live in Leeds."}', "",
              '{"day": 1, "say": "/remember My locker code is 4417."}', '{"day": 1, "sleep": true}',
              '{"day": 2, "forget": "4417"}', PROBE,
              '{"probe": "What is my locker code?", "expect": [], "forbid": ["4417"]}')
    sc = load_scenario(p)
    assert [(e.day, e.kind) for e in sc.events] == [(1, "say"), (1, "say"), (1, "sleep"), (2, "forget")]
    assert sc.events[3].line == 5  # blank lines still count
    assert sc.forgotten == ("4417",) and sc.days == [1, 2]
    assert [q.question for q in sc.probes] == ["Where do I live?", "What is my locker code?"]
    assert sc.probes[1].forbid == ("4417",) and sc.probes[1].expect == ()


@pytest.mark.skipif(not DEV.exists(), reason="the shared development data is not here")
def test_dev_scenario_loads():
    sc = load_scenario(DEV)
    assert len(sc.probes) == 9 and sc.forgotten == ("5830", "coeliac", "gluten")
    assert sc.days == [1, 2, 3]


@pytest.mark.parametrize("lines, line, words", [
    (['{"day": 1, "shout": "hi"}', PROBE], 1, "unknown key(s) 'shout'"),
    (['{"day": 1}', PROBE], 1, "no event type"),
    (['{"day": 1, "say": "a", "sleep": true}', PROBE], 1, "more than one event type"),
    (['{"say": "hello"}', PROBE], 1, "has no 'day'"),
    (['{"day": "1", "say": "hello"}', PROBE], 1, "'day' must be a whole number"),
    (['{"day": 1.5, "say": "hello"}', PROBE], 1, "'day' must be a whole number"),
    (['{"day": true, "say": "hello"}', PROBE], 1, "'day' must be a whole number"),
    (['{"day": 0, "say": "hello"}', PROBE], 1, "'day' must be a whole number"),
    (['{"day": 2, "say": "a"}', '{"day": 1, "say": "b"}', PROBE], 2, "day 1 comes after day 2"),
    (['{"day": 1, "say": ""}', PROBE], 1, "'say' must be a non-empty string"),
    (['{"day": 1, "forget": 4417}', PROBE], 1, "'forget' must be a non-empty string"),
    (['{"day": 1, "sleep": false}', PROBE], 1, "'sleep' must be true"),
    (['{"day": 1, "say": "a"}', '{"expect": ["Leeds"]}'], 2, "no 'probe' question"),
    (['{"probe": "Q?", "expect": "Leeds"}'], 1, "'expect' must be a list of non-empty strings"),
    (['{"probe": "Q?", "forbid": ["ok", ""]}'], 1, "'forbid' must be a list of non-empty strings"),
    (['{"probe": "Q?", "expect": [], "forbid": []}'], 1, "always passes"),
    (['{"probe": "Q?", "expect": ["x"], "day": 3}'], 1, "probes have no day"),
    (['{"probe": "Q?", "expect": ["x"], "answer": "x"}'], 1, "unknown key(s) 'answer' in a probe"),
    ([PROBE, '{"day": 1, "say": "late"}'], 2, "an event after the probes"),
    (['{"day": 1, "say": "a"', PROBE], 1, "not valid JSON"),
    (['["day", 1]', PROBE], 1, "expected a JSON object"),
])
def test_bad_lines_name_file_line_and_fix(tmp_path, lines, line, words):
    p = write(tmp_path, *lines)
    with pytest.raises(ReverieError) as e:
        load_scenario(p)
    msg = str(e.value)
    assert f"{p}:{line}:" in msg and words in msg, msg
    assert msg.rstrip().endswith("."), msg  # a sentence saying how to fix it follows


def test_no_probes_missing_file_and_not_utf8(tmp_path):
    with pytest.raises(ReverieError, match=r"has no probes; add at least one line"):
        load_scenario(write(tmp_path, '{"day": 1, "say": "hello"}'))
    with pytest.raises(ReverieError, match=r"has no probes"):
        load_scenario(write(tmp_path, ""))
    with pytest.raises(ReverieError, match=r"does not exist; check the path"):
        load_scenario(tmp_path / "nope.jsonl")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"probe": "Wrocław?", "expect": ["x"]}'.encode("latin-1", "replace") + b"\xff")
    with pytest.raises(ReverieError, match="not UTF-8"):
        load_scenario(bad)


# --- score and redaction -----------------------------------------------------------------------

def test_score():
    assert score("You live in LEEDS, near the river.", ["Leeds"], [])
    assert score("Wrocław it is", ["Wroclaw", "Wrocław"], ["Gdansk"])
    assert not score("You live in Gdansk.", ["Wroclaw", "Wrocław"], ["Gdansk"])
    assert not score("You moved from gdansk to Wroclaw.", ["Wroclaw"], ["Gdansk"])  # forbid wins
    assert score("I don't know your code.", [], ["4417"])  # empty expect always matches
    assert not score("Your code is 4417.", [], ["4417"])
    assert not score("I don't know.", ["Leeds"], [])
    assert not score("", ["Leeds"], [])


def test_redact_hides_every_case_and_keeps_structure():
    forgotten = ["4417", "Coeliac"]
    data = {"answers": ["Your code is 4417.", "COELIAC disease, coeliac"], "n": 3,
            "nested": {"q": "coeliac?", "ok": None}, "4417": True}
    out = redact(data, forgotten)
    assert out == {"answers": ["Your code is [forgotten].", "[forgotten] disease, [forgotten]"], "n": 3,
                   "nested": {"q": "[forgotten]?", "ok": None}, "[forgotten]": True}
    assert data["answers"][0] == "Your code is 4417."  # the input is not changed
    assert redact("nothing to hide", []) == "nothing to hide"


def test_redaction_never_spells_a_forgotten_text_back():
    # "[forgotten]" contains "got": another mark is used
    assert redact("I got it", ["got"]) == "I [redacted] it"
    # every mark contains one: the text is deleted, and deletion that joins pieces is repeated
    marks = ["got", "red", "..."]
    out = redact("I got a red ... card", marks)
    assert not any(m in out.lower() for m in marks), out
    assert redact("aabb", ["ab", "got", "red", "..."]) == ""


def test_scoring_uses_raw_answers_not_the_redacted_ones():
    answer = "Your locker code is 4417."
    assert not score(answer, [], ["4417"])
    assert score(redact(answer, ["4417"]), [], ["4417"])  # why scoring must see the raw text


# --- the run, on fakes ---------------------------------------------------------------------------

class FakeSession:
    """A ChatSession stand-in: answers say back what memory would recall; adapters never promoted."""
    opened: list = []
    told: list = []

    def __init__(self, home, backend="auto", use_memory=True, use_adapter=True, record=True):
        self.home, self.use_memory, self.record = Path(home), use_memory, record
        self.runtime = types.SimpleNamespace(adapter_path=None)
        self.served = None  # no adapter is ever promoted here
        self.closed = False
        self.new_calls = 0
        FakeSession.opened.append(self)

    def new(self):
        self.new_calls += 1

    def send(self, text):
        if self.record:
            FakeSession.told.append(text)
            return types.SimpleNamespace(answer=f"Noted: {text}")
        if not self.use_memory:
            return types.SimpleNamespace(answer="I don't know.")
        said = " ".join(FakeSession.told)
        return types.SimpleNamespace(answer=f"From memory: {said}")

    def command(self, line):
        FakeSession.told.append(line)
        return types.SimpleNamespace(output=f"stored memory m1: {line[10:]}")

    def close(self):
        self.closed = True


def test_run_scenario_logic_on_fakes(tmp_path, monkeypatch):
    import assistant.chat
    import assistant.sleep
    import memory

    FakeSession.opened, FakeSession.told = [], []
    monkeypatch.setattr(assistant.chat, "ChatSession", FakeSession)
    nights = []

    def fake_sleep(home, opts, log=print, on_train=None):
        nights.append(opts)
        return assistant.sleep.SleepOutcome("rejected", "v1 rejected: recall gain 0", "v1",
                                            gate={"passed": False, "reasons": ["recall gain 0"]})

    monkeypatch.setattr(assistant.sleep, "run_sleep", fake_sleep)
    forgot = []

    def forget_matching(home, text, apply=False):
        forgot.append((Path(home), text, apply))
        FakeSession.told = [t for t in FakeSession.told if text.lower() not in t.lower()]
        return {"forgotten": 1, "matching": text}

    def leaked_files(home, texts):
        assert not list(Path(home).glob("reports/scenario-*")), "data_leaks is measured before the report"
        return ["ledger.db-wal"]

    monkeypatch.setitem(sys.modules, "assistant.forget",
                        types.SimpleNamespace(forget_matching=forget_matching, leaked_files=leaked_files))

    class FakeStore:
        def __init__(self, home):
            pass

        def stats(self):
            return {"memories": 4, "tombstones": 1,
                    "by_kind_status": {"fact/active": 2, "episodic/active": 1, "fact/forgotten": 1}}

        def close(self):
            pass

    monkeypatch.setattr(memory, "MemoryStore", FakeStore)
    p = write(tmp_path, '{"day": 1, "say": "I live in Leeds."}',
              '{"day": 1, "say": "/remember My locker code is 4417."}', '{"day": 1, "sleep": true}',
              '{"day": 2, "say": "Hello again, code 4417"}', '{"day": 2, "forget": "4417"}', PROBE,
              '{"probe": "What is my locker code 4417?", "expect": [], "forbid": ["4417"]}')
    from assistant.scenario import run_scenario

    home = tmp_path / "data"
    env_before = dict(__import__("os").environ)
    res = run_scenario(p, home=home, log=lambda s: None, steps=3)
    assert dict(__import__("os").environ) == env_before  # the environment is never touched
    # two days: two recording chats, both closed; four probe arms that record nothing
    chats = [s for s in FakeSession.opened if s.record]
    arms = [s for s in FakeSession.opened if not s.record]
    assert len(chats) == 2 and len(arms) == 4 and all(s.closed for s in FakeSession.opened)
    assert all(s.home == home for s in FakeSession.opened) and forgot == [(home, "4417", True)]
    assert all(s.new_calls == 2 for s in arms[:2])  # a fresh conversation per probe
    # the trainer never sees the probes; the gate's light general probe
    assert nights[0].exclude_questions == ("Where do I live?", "What is my locker code 4417?")
    assert nights[0].steps == 3 and len(nights[0].general_items) <= 60 and len(nights[0].general_texts) <= 5
    a = res["arms"]
    assert set(a) == {"base", "memory", "adapter", "adapter+memory"}
    assert a["memory"]["scenario_acc"] == 1.0 and a["memory"]["leaks"] == 0
    assert a["base"]["scenario_acc"] == 0.5 and a["base"]["leaks"] == 0
    assert a["adapter"]["same_as"] == "base" and a["adapter+memory"]["same_as"] == "memory"
    assert a["adapter+memory"]["scenario_acc"] == a["memory"]["scenario_acc"]
    assert res["data_leaks"] == ["ledger.db-wal"] and res["memories"]["by_kind"] == {"fact": 2, "episodic": 1}
    assert res["sleeps"] == [{"day": 1, "status": "rejected", "message": "v1 rejected: recall gain 0",
                              "adapter": "v1", "gate": {"passed": False, "reasons": ["recall gain 0"]},
                              "seconds": 0.0}]
    assert "no adapter was promoted" in res["adapter"]["note"]
    # nothing printed or written says the forgotten text, though scoring saw it (the question has it)
    text = json.dumps(res)
    assert "4417" not in text and "[forgotten]" in text
    report = Path(res["report_path"])
    assert report.parent.parent == home / "reports" and report.exists()
    for f in report.parent.iterdir():
        assert "4417" not in f.read_text(), f
    md = report.read_text()
    assert "| memory | 1.000 | 2/2 | 0 |" in md and "### Day 2" in md and "rejected: recall gain 0" in md


def test_cli_scenario_missing_file_and_conflicting_options(tmp_path):
    from cli.main import app

    runner = CliRunner()
    r = runner.invoke(app, ["eval", "--scenario", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 1 and "error:" in r.output and "nope.jsonl does not exist" in r.output
    p = write(tmp_path, PROBE)
    r = runner.invoke(app, ["eval", "--scenario", str(p), "--nights", "2"])
    assert r.exit_code == 1 and "leave out --facts, --general and --nights" in r.output
    bad = write(tmp_path, '{"day": "one", "say": "hi"}', PROBE)
    r = runner.invoke(app, ["eval", "--scenario", str(bad)])
    assert r.exit_code == 1 and f"error: {bad}:1: 'day' must be a whole number" in r.output
    assert "Traceback" not in r.output


# --- the real stack ------------------------------------------------------------------------------

@pytest.mark.slow
def test_scenario_real_stack_through_the_cli(tmp_path, monkeypatch, reverie_home):
    import tempfile

    from cli.main import app

    p = write(tmp_path, '{"day": 1, "say": "I live in Leeds."}',
              '{"day": 1, "say": "/remember My locker code is 4417."}',
              '{"day": 1, "forget": "4417"}',
              '{"probe": "Which city do I live in?", "expect": ["Leeds"], "forbid": []}',
              '{"probe": "What is my locker code?", "expect": [], "forbid": ["4417"]}')
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the isolated data dir lands in tmp_path
    r = CliRunner().invoke(app, ["eval", "--scenario", str(p), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout[r.stdout.index("{"):])
    home = Path(res["data_dir"])
    assert home.parent == tmp_path and home.name.startswith("reverie-scenario-")
    assert not reverie_home.exists()  # everything went to the scenario's own data dir
    for arm in ("base", "memory", "adapter", "adapter+memory"):
        assert set(res["arms"][arm]) >= {"scenario_acc", "leaks"}
        assert 0.0 <= res["arms"][arm]["scenario_acc"] <= 1.0
        assert res["arms"][arm]["leaks"] == 0, res["probes"]  # the locker code is never said
    city = res["probes"][0]["answers"]
    assert city["memory"]["passed"], city["memory"]["answer"]
    assert all(p["answers"]["memory"]["passed"] is not None for p in res["probes"])
    assert res["data_leaks"] == []
    assert res["memories"]["by_kind"] and res["sleeps"] == [] and res["forgets"][0]["day"] == 1
    assert "no adapter was promoted" in res["adapter"]["note"]
    assert isinstance(res["seconds"], float)
    report = Path(res["report_path"])
    assert report.exists() and report.parent.parent == home / "reports"
    assert "4417" not in report.read_text() and "4417" not in r.stdout
    assert "Which city do I live in?" in report.read_text()
