"""Sleep plumbing without training: lock, nothing-new, feedback and adapter rows, CLI errors."""
import json

import pytest
from typer.testing import CliRunner

from assistant.errors import ReverieError
from assistant.persona import first_person
from assistant.sleep import SleepOptions, run_sleep, sleep_lock
from cli.main import app
from memory.adapters_ledger import AdapterLedger
from memory.feedback import FeedbackLog
from memory.ledger import Ledger, LedgerError

runner = CliRunner()


@pytest.mark.parametrize("text, want", [
    ("The user's sister is called Ingrid.", "My sister is called Ingrid."),
    ("The user lives in Oslo.", "I live in Oslo."),
    ("The user is allergic to peanuts.", "I am allergic to peanuts."),
    ("The user has a cat named Miso.", "I have a cat named Miso."),
    ("The user teaches maths.", "I teach maths."),
    ("I live in Bergen.", "I live in Bergen."),
])
def test_first_person(text, want):
    assert first_person(text) == want


def test_sleep_with_nothing_to_learn_exits_cleanly(reverie_home):
    out = run_sleep(reverie_home, SleepOptions(), log=lambda s: None)
    assert out.status == "nothing-new"
    r = runner.invoke(app, ["sleep"])
    assert r.exit_code == 0 and "nothing to learn" in r.output


def test_second_sleep_is_refused_while_one_runs(reverie_home):
    reverie_home.mkdir(parents=True, exist_ok=True)
    with sleep_lock(reverie_home):
        with pytest.raises(ReverieError, match="another `reverie sleep` is running"):
            run_sleep(reverie_home, SleepOptions(), log=lambda s: None)


def test_bad_options():
    with pytest.raises(ReverieError, match="unknown strategy"):
        SleepOptions(strategy="sometimes")
    r = runner.invoke(app, ["sleep", "--strategy", "sometimes"])
    assert r.exit_code == 1 and "unknown strategy" in r.output


def test_feedback_log_and_cli(reverie_home):
    led = Ledger(reverie_home)
    fb = FeedbackLog(led)
    f = fb.add("fix", "c1", "t1", "What is my dog called?", "A cat.", "Your dog is called Biscuit.")
    with pytest.raises(LedgerError, match="better answer"):
        fb.add("fix", "c1", "t1", "q", "a", "  ")
    r = runner.invoke(app, ["feedback", "ls", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["correction"] == "Your dog is called Biscuit."
    r = runner.invoke(app, ["feedback", "show", "nope"])
    assert r.exit_code == 1 and "unknown feedback id" in r.output
    r = runner.invoke(app, ["feedback", "rm", f.id])
    assert r.exit_code == 0 and fb.list() == []


def test_adapter_rows_promote_rollback(reverie_home):
    a = AdapterLedger(Ledger(reverie_home))
    v1 = a.add(id=a.new_version_id(), model="smollm2-135m")
    v2 = a.add(id=a.new_version_id(), model="smollm2-135m", parent=v1.id, served="/x/served.gguf")
    v3 = a.add(id=a.new_version_id(), model="smollm2-135m", status="rejected")
    a.promote(v1.id)
    a.promote(v2.id)
    assert a.promoted("smollm2-135m").id == v2.id
    assert a.get(v1.id).status == "retired"
    with pytest.raises(LedgerError, match="promoted adapter"):
        a.remove(v2.id)
    r = runner.invoke(app, ["adapters", "rollback"])
    assert r.exit_code == 0 and v1.id in r.output
    r = runner.invoke(app, ["adapters", "ls", "--json"])
    assert {x["id"]: x["status"] for x in json.loads(r.output)} == {
        v1.id: "promoted", v2.id: "retired", v3.id: "rejected"}
    lines = {ln.split()[1] if ln.startswith("*") else ln.split()[0]: ln
             for ln in runner.invoke(app, ["adapters", "ls"]).output.splitlines()}
    assert lines[v1.id].endswith("served as runtime LoRA") and lines[v1.id].startswith("*")
    assert lines[v2.id].endswith("served merged") and lines[v3.id].endswith("not served")
    r = runner.invoke(app, ["adapters", "show", "v999"])
    assert r.exit_code == 1 and "unknown adapter version" in r.output


def test_schedule_bad_time():
    r = runner.invoke(app, ["schedule", "install", "--at", "25:99"])
    assert r.exit_code == 1 and "HH:MM" in r.output
    r = runner.invoke(app, ["schedule", "install", "--at", "03:30", "--dry-run"])
    assert r.exit_code == 0 and "sleep" in r.output


def test_checkpoint_every_from_option_or_environment(monkeypatch):
    from assistant.sleep import _train_config

    monkeypatch.delenv("REVERIE_CHECKPOINT_EVERY", raising=False)
    assert _train_config(SleepOptions(steps=8)).checkpoint_every == 25  # TrainConfig's default
    monkeypatch.setenv("REVERIE_CHECKPOINT_EVERY", "2")
    assert _train_config(SleepOptions(steps=8)).checkpoint_every == 2
    assert _train_config(SleepOptions(steps=8, checkpoint_every=3)).checkpoint_every == 3
    monkeypatch.setenv("REVERIE_CHECKPOINT_EVERY", "often")
    with pytest.raises(ReverieError, match="REVERIE_CHECKPOINT_EVERY"):
        _train_config(SleepOptions(steps=8))
    with pytest.raises(ReverieError):
        SleepOptions(checkpoint_every=-1)


def test_runs_left_running_by_a_killed_sleep_are_closed(reverie_home):
    reverie_home.mkdir(parents=True, exist_ok=True)
    led = AdapterLedger(Ledger(reverie_home))
    dead = led.start_run("retrain")
    done = led.start_run("retrain")
    led.finish_run(done, "promoted")
    assert led.close_stale_runs() == [dead]
    assert {r["id"]: r["status"] for r in led.runs()} == {dead: "interrupted", done: "promoted"}
    assert led.close_stale_runs() == []


def test_gate_probes_are_bounded_new_facts_first_and_old_ones_kept():
    """A ledger of thousands of facts must not make the night's evaluation thousands of
    generations (the crash harness's data dir had 2,473 facts)."""
    from types import SimpleNamespace

    from assistant.sleep import held_back_probes

    facts = [SimpleNamespace(id=f"f{i:04d}", text=f"My locker number is {i}.", subject="locker number")
             for i in range(300)]
    everything = held_back_probes(facts, set())
    assert len(everything) == 600  # 2 a fact when unbounded
    new = {f"f{i:04d}" for i in range(290, 300)}
    probes = held_back_probes(facts, set(), limit=64, new_ids=new)
    chosen = {p.fact_id for p in probes}
    assert len(probes) == 64 and len(chosen) == 32
    assert new <= chosen  # tonight's 10 facts are all measured
    assert len(chosen - new) == 22  # and old ones too, for backward transfer
    assert held_back_probes(facts, set(), limit=64, new_ids=new) == probes  # seeded
    only_new = held_back_probes(facts, set(), limit=64, new_ids={f.id for f in facts})
    assert len(only_new) == 64
    assert len(held_back_probes(facts[:20], set(), limit=64)) == 40  # under the limit: all
