"""`reverie memory …` through typer's CliRunner: output, --json, and exit 1 on bad input."""
import json

import pytest
from typer.testing import CliRunner

from cli.memory_cmd import memory_app
from memory_fakes import fake_embedder  # noqa: F401 - fixture

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch, fake_embedder):  # noqa: F811
    monkeypatch.setenv("REVERIE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def run(*args):
    return runner.invoke(memory_app, list(args))


def test_add_ls_search_show_history_forget(home):
    r = run("add", "I live in Bergen", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["action"] == "added"
    r = run("add", "I moved to Oslo")
    assert r.exit_code == 0 and r.stdout.startswith("superseded m_")
    rows = json.loads(run("ls", "--json").stdout)
    assert [m["text"] for m in rows] == ["I moved to Oslo"]
    assert len(json.loads(run("ls", "--status", "all", "--json").stdout)) == 2
    hits = json.loads(run("search", "Oslo", "--json").stdout)
    assert hits[0]["id"] == rows[0]["id"]
    shown = json.loads(run("show", first["memory"]["id"], "--json").stdout)
    assert shown["status"] == "superseded" and shown["history"][0]["reason"] == "superseded"
    assert run("edit", rows[0]["id"], "I live in Oslo, Norway").exit_code == 0
    hist = json.loads(run("history", rows[0]["id"], "--json").stdout)
    assert [h["text"] for h in hist] == ["I moved to Oslo", "I live in Oslo, Norway"]
    r = run("forget", rows[0]["id"])
    assert r.exit_code == 0 and "forgot" in r.stdout
    assert json.loads(run("stats", "--json").stdout)["tombstones"] == 1
    assert json.loads(run("search", "Oslo", "--json").stdout) == []


@pytest.mark.parametrize("args, message", [
    (["show", "m_doesnotexist"], "unknown memory id"),
    (["forget", "m_doesnotexist"], "unknown memory id"),
    (["search", "  "], "query is empty"),
    (["import-conversation", "missing.json"], "does not exist"),
    (["import-conversation", "x.json", "--format", "csv"], "unknown format"),
])
def test_bad_input_exits_1_with_a_message(home, args, message):
    r = run(*args)
    assert r.exit_code == 1
    assert message in r.stderr and "Traceback" not in r.output


def test_malformed_import_exits_1_and_leaves_ledger_unchanged(home, tmp_path):
    run("add", "My favourite colour is green")
    export = tmp_path / "mem.jsonl"
    assert run("export", str(export)).exit_code == 0
    before = export.read_text()
    rec = json.loads(before)
    rec["id"] = "m_newone0001"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n" + '{"id": "m_x2", "kind": "dream"}\n')
    r = run("import", str(bad))
    assert r.exit_code == 1 and "line 2" in r.stderr
    after = tmp_path / "after.jsonl"
    run("export", str(after))
    assert after.read_text() == before
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps(rec) + "\n")
    r = run("import", str(ok), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["imported"] == 1


def test_reindex_and_import_conversation(home, tmp_path):
    from memory_fakes import LOCOMO_SAMPLE

    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([LOCOMO_SAMPLE]))
    r = run("import-conversation", str(path), "--format", "locomo", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["imported"] == 3
    r = run("reindex", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"indexed": 3}
    ids = {m["source"]["dia_id"] for m in json.loads(run("ls", "--kind", "episodic", "--json").stdout)}
    assert ids == {"D1:1", "D1:2", "D2:1"}


def test_help_explains():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("ls", "search", "show", "add", "edit", "forget", "history", "export", "import",
                "stats", "reindex", "import-conversation"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args, message", [
    (["edit", "m_doesnotexist", "new text"], "unknown memory id"),
    (["history", "m_doesnotexist"], "unknown memory id"),
    (["search", ""], "query is empty"),
    (["add", "   "], "fact is empty"),
    (["ls", "--kind", "dream"], "unknown kind"),
    (["import", "missing.jsonl"], "missing.jsonl"),
])
def test_more_bad_input_exits_1_with_a_message(home, args, message):
    r = run(*args)
    assert r.exit_code == 1, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_forgotten_id_says_so(home):
    mid = json.loads(run("add", "I live in Bergen", "--json").stdout)["memory"]["id"]
    assert run("forget", mid).exit_code == 0
    r = run("show", mid)
    assert r.exit_code == 1 and "forgotten" in r.stderr


@pytest.mark.parametrize("content", [
    b"", b"\n\n", b"not json at all\n", b"\xff\xfe\x00garbage\n", b'{"id": "m_1", "kind": "fact"\n',
    b'[{"id": "m_1"}]\n',
])
def test_malformed_import_files_exit_1_and_change_nothing(home, tmp_path, content):
    run("add", "My favourite colour is green")
    before = json.loads(run("stats", "--json").stdout)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    r = run("import", str(bad))
    if content.strip():
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output and r.stderr.strip()
    else:  # an empty file is a valid export of nothing
        assert r.exit_code == 0 and "imported 0" in r.stdout
    assert json.loads(run("stats", "--json").stdout) == before


@pytest.mark.parametrize("content", [
    "not json", "{}", '[{"conversation": "nope"}]', '[{"conversation": {"speaker_a": "A"}}]',
    '{"sample_id": "x", "conversation": {"session_1": [{"speaker": "A"}]}}',
])
def test_malformed_conversation_import_exits_1_and_changes_nothing(home, tmp_path, content):
    run("add", "My favourite colour is green")
    before = json.loads(run("stats", "--json").stdout)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = run("import-conversation", str(bad), "--format", "locomo")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and r.stderr.strip()
    assert json.loads(run("stats", "--json").stdout) == before


def test_import_conflicting_or_forgotten_id_exits_1_and_changes_nothing(home, tmp_path):
    mid = json.loads(run("add", "I live in Bergen", "--json").stdout)["memory"]["id"]
    export = tmp_path / "mem.jsonl"
    run("export", str(export))
    rec = json.loads(export.read_text())
    rec["text"] = "I live in Paris"
    conflict = tmp_path / "conflict.jsonl"
    conflict.write_text(json.dumps(rec) + "\n")
    before = json.loads(run("stats", "--json").stdout)
    r = run("import", str(conflict))
    assert r.exit_code == 1 and "different memory with this id" in r.stderr
    assert json.loads(run("stats", "--json").stdout) == before
    run("forget", mid)
    before = json.loads(run("stats", "--json").stdout)
    r = run("import", str(export))
    assert r.exit_code == 1 and "forgotten" in r.stderr
    assert json.loads(run("stats", "--json").stdout) == before
