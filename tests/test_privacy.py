"""`reverie export` / `reverie wipe` through the CLI, and private file modes in the data dir."""
import json
import os
import sqlite3
import stat
import tarfile

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from memory_fakes import fake_embedder  # noqa: F401 - fixture

runner = CliRunner()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _tiny_adapter(path):
    from lora.adapter import AdapterSpec, key, save_adapter

    dims = {"q_proj": [4, 4]}
    spec = AdapterSpec(trainer="peft", rank=2, alpha=4.0, targets=["q_proj"], n_layers=1,
                       base_dims=dims, n_head=2, n_head_kv=2)
    w = {key(0, "q_proj", "a"): np.ones((2, 4), np.float32),
         key(0, "q_proj", "b"): np.ones((4, 2), np.float32)}
    return save_adapter(path, w, spec)


@pytest.fixture
def filled(reverie_home, fake_embedder):  # noqa: F811
    """A data dir with two memories, one feedback item, an adapter and settings."""
    from assistant.config import Settings
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger

    for fact in ("My sister is called Ingrid.", "I live in Tromsø."):
        r = runner.invoke(app, ["memory", "add", fact])
        assert r.exit_code == 0, r.output
    ledger = Ledger(reverie_home)
    conv = ledger.new_conversation()
    FeedbackLog(ledger).add("fix", conv, "turn_x", "Where do I live?", "Paris", "Tromsø")
    ledger.close()
    _tiny_adapter(reverie_home / "adapters" / "v001-abc")
    Settings(max_tokens=64).save(reverie_home)
    return reverie_home


def test_export_archive_holds_every_kind_of_personal_data(filled, tmp_path):
    out = tmp_path / "out" / "me.tar.gz"
    out.parent.mkdir()
    r = runner.invoke(app, ["export", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["memories"] == 2 and res["feedback"] == 1 and res["path"] == str(out)
    assert "chroma" in res["skipped"]  # derived index: named, not silently dropped
    assert mode(out) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["me.tar.gz"]  # no temp file left
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"reverie/ledger.db", "reverie/memories.jsonl", "reverie/feedback.jsonl",
                "reverie/settings.json", "reverie/adapters/v001-abc/adapter.safetensors",
                "reverie/adapters/v001-abc/adapter_config.json"} <= names
        assert not any(n.startswith("reverie/chroma") for n in names)
        mems = [json.loads(x) for x in tar.extractfile("reverie/memories.jsonl").read().splitlines()]
        assert sorted(m["text"] for m in mems) == ["I live in Tromsø.", "My sister is called Ingrid."]
        fb = json.loads(tar.extractfile("reverie/feedback.jsonl").read())
        assert fb["correction"] == "Tromsø"
        assert json.loads(tar.extractfile("reverie/settings.json").read())["max_tokens"] == 64
        tar.extract("reverie/ledger.db", tmp_path / "x", filter="data")
    db = sqlite3.connect(tmp_path / "x" / "reverie" / "ledger.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("select count(*) from memories").fetchone()[0] == 2
    assert db.execute("select count(*) from feedback").fetchone()[0] == 1


def test_exported_memories_import_into_a_fresh_data_dir(filled, tmp_path, monkeypatch):
    out = tmp_path / "me.tar.gz"
    assert runner.invoke(app, ["export", "-o", str(out)]).exit_code == 0
    with tarfile.open(out) as tar:
        tar.extract("reverie/memories.jsonl", tmp_path / "x", filter="data")
    monkeypatch.setenv("REVERIE_HOME", str(tmp_path / "fresh"))
    r = runner.invoke(app, ["memory", "import", str(tmp_path / "x" / "reverie" / "memories.jsonl"),
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["imported"] == 2


def test_export_refuses_a_path_inside_the_data_dir(filled):
    r = runner.invoke(app, ["export", "--out", str(filled / "x.tar.gz")])
    assert r.exit_code == 1 and "inside the data dir" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["export", "--out", "/nonexistent-dir/x.tar.gz"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_wipe_without_confirmation_keeps_everything(filled):
    before = sorted(p.relative_to(filled) for p in filled.rglob("*"))
    r = runner.invoke(app, ["wipe"], input="n\n")
    assert r.exit_code == 1 and "nothing deleted" in r.output
    assert sorted(p.relative_to(filled) for p in filled.rglob("*")) == before


def test_wipe_yes_and_confirmed_delete_the_data_dir(filled):
    r = runner.invoke(app, ["wipe"], input="y\n")
    assert r.exit_code == 0, r.output
    assert not filled.exists()
    filled.mkdir()
    (filled / "ledger.db").write_bytes(b"")
    r = runner.invoke(app, ["wipe", "--yes", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["wiped"] is True
    assert not filled.exists()


def test_wipe_refuses_while_sleep_holds_the_lock(filled):
    from assistant.sleep import sleep_lock

    with sleep_lock(filled):
        r = runner.invoke(app, ["wipe", "--yes"])
    assert r.exit_code == 1 and "reverie sleep" in r.output and "Traceback" not in r.output
    assert (filled / "ledger.db").exists()


def test_wipe_refuses_a_directory_that_is_not_reverie_data(reverie_home):
    reverie_home.mkdir(parents=True, exist_ok=True)
    (reverie_home / "thesis.tex").write_text("years of work")
    r = runner.invoke(app, ["wipe", "--yes"])
    assert r.exit_code == 1 and "does not look like a reverie data dir" in r.output
    assert (reverie_home / "thesis.tex").exists()


def test_private_modes_on_files_that_memory_add_and_adapters_create(filled):
    from memory.ledger import Ledger

    assert mode(filled) == 0o700
    ledger = Ledger(filled)  # an open writer keeps the WAL files in place
    ledger.new_conversation()
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm", "settings.json"):
        assert mode(filled / name) == 0o600, name
    ledger.close()
    assert mode(filled / "chroma") == 0o700
    adapter = filled / "adapters" / "v001-abc"
    assert mode(adapter) == 0o700
    for f in adapter.iterdir():
        assert mode(f) == 0o600, f.name
    from assistant.quant_api import export_adapter_gguf as export_gguf

    gguf = export_gguf(adapter, adapter / "adapter.gguf")
    assert mode(gguf) == 0o600
    r = runner.invoke(app, ["memory", "export", str(filled / "m.jsonl")])
    assert r.exit_code == 0 and mode(filled / "m.jsonl") == 0o600
