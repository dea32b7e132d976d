"""Issue 18: a command line that behaves like the tools people already use (llm, Ollama, the shell).

Each test reproduces one complaint from the issue through typer's runner, with a scripted model
(no weights load: these run in milliseconds). The chat's terminal behaviour (line editing, Ctrl-C,
Ctrl-D) is tested through a real pseudo-terminal in test_cli_pty.py.
"""
from __future__ import annotations

import json
import os
import re
import time
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cli.main import app
from fakes import TAGS, FakeRuntime, last_user
from memory_fakes import fake_embedder  # noqa: F401 - fixture

runner = CliRunner()


# --- a scripted model --------------------------------------------------------------------------
def _echo(prompt):
    """Answers "ok: <the last user message, first 30 chars>"."""
    return "ok: " + " ".join(last_user(prompt).split())[:30]


@pytest.fixture
def scripted(monkeypatch, fake_embedder):  # noqa: F811
    """Every runtime the CLI opens is a FakeRuntime; .prompts holds what each was asked."""
    import assistant.chat

    prompts: list[str] = []
    monkeypatch.setattr(assistant.chat, "open_runtime", lambda *a, **kw: FakeRuntime(
        _echo, name="scripted", backend="llama.cpp", chat_format=TAGS, prompts=prompts))
    return SimpleNamespace(prompts=prompts)


def _conversations(home):
    import sqlite3

    if not (home / "ledger.db").exists():
        return 0, 0
    db = sqlite3.connect(home / "ledger.db")
    try:
        return (db.execute("select count(*) from turns").fetchone()[0],
                db.execute("select count(*) from memories").fetchone()[0])
    finally:
        db.close()


# --- --version, -h, registration ---------------------------------------------------------------
def test_version_and_short_help_exit_0():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and re.fullmatch(r"reverie \S+\n", r.output), r.output
    assert runner.invoke(app, ["-V"]).output == r.output
    for args in (["-h"], ["memory", "-h"], ["memory", "ls", "-h"], ["ask", "-h"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and "Usage" in r.output, (args, r.output)


def test_every_command_module_is_registered_explicitly():
    """A command module that fails to import must break this import, not vanish from --help."""
    import inspect

    import cli.main

    src = inspect.getsource(cli.main)
    assert "except ImportError" not in src and "except (ImportError" not in src
    r = runner.invoke(app, ["--help"])
    for cmd in ("chat", "ask", "logs", "doctor", "demo", "memory", "feedback", "sleep", "adapters",
                "schedule", "models", "quant", "eval", "bench", "export", "wipe"):
        assert re.search(rf"│ {cmd}\s", r.output), cmd


def test_a_broken_command_module_is_an_import_error(monkeypatch):
    import importlib
    import sys

    import cli
    import cli.main

    monkeypatch.setitem(sys.modules, "cli.quant_cmd", None)  # "import cli.quant_cmd" now fails
    monkeypatch.delattr(cli, "quant_cmd")
    with pytest.raises(ImportError):
        importlib.reload(cli.main)
    monkeypatch.undo()
    importlib.reload(cli.main)


# --- ask: stdin and - --------------------------------------------------------------------------
def test_ask_reads_the_question_from_piped_stdin(reverie_home, scripted):
    r = runner.invoke(app, ["ask", "--no-memory"], input="summarize this\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "ok: summarize this\n"


def test_ask_dash_means_stdin(reverie_home, scripted):
    r = runner.invoke(app, ["ask", "-", "--no-memory"], input="what is a dash\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "ok: what is a dash\n"
    assert "<user>-" not in scripted.prompts[-1]


def test_ask_with_a_question_takes_piped_text_as_context(reverie_home, scripted):
    r = runner.invoke(app, ["ask", "Summarize:", "--no-memory"], input="The cat sat on the mat.\n")
    assert r.exit_code == 0, r.output
    assert "<user>Summarize:\n\nThe cat sat on the mat." in scripted.prompts[-1]


def test_ask_without_a_question_or_stdin_says_how(reverie_home, scripted):
    r = runner.invoke(app, ["ask"], input="")
    assert r.exit_code == 1 and "echo" in r.output and "Traceback" not in r.output


# --- length limits ------------------------------------------------------------------------------
def test_a_108_kb_question_is_refused_not_cut(reverie_home, scripted):
    big = "words " * 17_999 + "words."  # 108,000 characters
    r = runner.invoke(app, ["ask", big, "--no-memory"])
    assert r.exit_code == 1
    assert "108,000 characters" in r.output and "limit is 100,000" in r.output
    assert scripted.prompts == []  # the model never saw a cut version
    r = runner.invoke(app, ["ask", "--no-memory"], input=big)
    assert r.exit_code == 1 and "limit is" in r.output


def test_a_question_over_the_context_window_says_so(reverie_home, scripted):
    r = runner.invoke(app, ["ask", "lorem ipsum " * 2000, "--no-memory"])
    assert r.exit_code == 0, r.output
    assert "did not fit in the model's context window" in r.stderr


def test_a_108_kb_fact_is_refused(reverie_home, fake_embedder):  # noqa: F811
    r = runner.invoke(app, ["memory", "add", "My name is Ada. " * 6750])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    assert json.loads(runner.invoke(app, ["memory", "stats", "--json"]).stdout)["memories"] == 0


# --- --no-log, -c, logs --------------------------------------------------------------------------
def test_ask_no_log_stores_nothing_and_recalls_nothing(reverie_home, scripted):
    assert runner.invoke(app, ["memory", "add", "My sister is called Ingrid."]).exit_code == 0
    turns, mems = _conversations(reverie_home)
    r = runner.invoke(app, ["ask", "--no-log", "I live in Tromsø. What is my sister called?"])
    assert r.exit_code == 0, r.output
    assert _conversations(reverie_home) == (turns, mems)
    assert "Ingrid" not in scripted.prompts[-1]  # memory recall is off too
    r = runner.invoke(app, ["ask", "What is my sister called?"])
    assert "Ingrid" in scripted.prompts[-1]  # (while a logged ask does recall)
    assert _conversations(reverie_home)[0] == turns + 2


def test_chat_no_log_stores_nothing(reverie_home, scripted):
    r = runner.invoke(app, ["chat", "--no-log"],
                      input="I live in Tromsø.\nhello\n/good\n/remember my bike is red\n/fix no\n")
    assert r.exit_code == 0, r.output
    assert _conversations(reverie_home) == (0, 0)
    assert "not logged" in r.stderr and "/remember is off in a --no-log chat" in r.stdout
    import sqlite3

    db = sqlite3.connect(reverie_home / "ledger.db")
    assert db.execute("select count(*) from feedback").fetchone()[0] == 0


def test_continue_the_last_conversation_and_browse_logs(reverie_home, scripted):
    assert runner.invoke(app, ["ask", "first question"]).exit_code == 0
    assert runner.invoke(app, ["chat"], input="second conversation\n").exit_code == 0
    r = runner.invoke(app, ["ask", "-c", "and a follow-up"])
    assert r.exit_code == 0, r.output
    assert "second conversation" in scripted.prompts[-1]  # the last conversation is the context
    assert "first question" not in scripted.prompts[-1]
    assert "continuing conv_" in r.stderr

    r = runner.invoke(app, ["logs", "--json"])
    rows = json.loads(r.stdout)
    assert [x["turns"] for x in rows] == [4, 2]  # empty conversations are not listed
    assert rows[0]["first"] == "second conversation"
    r = runner.invoke(app, ["logs", "-n", "1"])
    assert r.exit_code == 0 and rows[0]["id"] in r.stdout and rows[1]["id"] not in r.stdout
    r = runner.invoke(app, ["logs", rows[0]["id"]])
    assert r.exit_code == 0
    assert "you> second conversation" in r.stdout and "you> and a follow-up" in r.stdout
    assert json.loads(runner.invoke(app, ["logs", "last", "--json"]).stdout)["id"] == rows[0]["id"]

    r = runner.invoke(app, ["chat", "-c"], input="/history\n")
    assert "user: and a follow-up" in r.stdout


def test_logs_bad_input(reverie_home):
    r = runner.invoke(app, ["logs", "conv_nope"])
    assert r.exit_code == 1 and "unknown conversation" in r.output
    r = runner.invoke(app, ["logs", "-n", "0"])
    assert r.exit_code == 1 and "at least 1" in r.output
    r = runner.invoke(app, ["logs"])
    assert r.exit_code == 0 and "no conversations yet" in r.output


# --- - for files, and path errors --------------------------------------------------------------
def test_memory_export_dash_writes_stdout_and_import_dash_reads_stdin(reverie_home, fake_embedder,  # noqa: F811
                                                                     tmp_path, monkeypatch):
    runner.invoke(app, ["memory", "add", "My sister is called Ingrid."])
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["memory", "export", "-"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "-").exists()
    rec = json.loads(r.stdout)
    assert rec["text"] == "My sister is called Ingrid." and "exported 1" in r.stderr
    monkeypatch.setenv("REVERIE_HOME", str(tmp_path / "other"))
    r2 = runner.invoke(app, ["memory", "import", "-", "--json"], input=r.stdout)
    assert r2.exit_code == 0, r2.output
    assert json.loads(r2.stdout) == {"path": "stdin", "imported": 1}


def test_export_archive_to_stdout(reverie_home, fake_embedder, tmp_path, monkeypatch):  # noqa: F811
    import io
    import tarfile

    runner.invoke(app, ["memory", "add", "My sister is called Ingrid."])
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["export", "--out", "-"])
    assert r.exit_code == 0, r.output
    with tarfile.open(fileobj=io.BytesIO(r.stdout_bytes)) as tar:
        assert "reverie/memories.jsonl" in tar.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing left behind


@pytest.mark.parametrize("target, message", [
    ("{tmp}", "is a directory"),
    ("{tmp}/nonexistent/x.jsonl", "does not exist"),
])
def test_memory_export_to_a_directory_or_a_missing_dir_is_an_error(reverie_home, fake_embedder,  # noqa: F811
                                                                   tmp_path, target, message):
    runner.invoke(app, ["memory", "add", "My sister is called Ingrid."])
    path = target.format(tmp=tmp_path)
    r = runner.invoke(app, ["memory", "export", path])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "nonexistent").exists()  # never made for you


def test_memory_ls_unknown_status_is_an_error(reverie_home, fake_embedder):  # noqa: F811
    r = runner.invoke(app, ["memory", "ls", "--status", "deleted"])
    assert r.exit_code == 1 and "unknown status 'deleted'" in r.output
    for ok in ("active", "superseded", "all"):
        assert runner.invoke(app, ["memory", "ls", "--status", ok]).exit_code == 0


# --- human-readable output ---------------------------------------------------------------------
def test_memory_stats_is_a_table(reverie_home, fake_embedder):  # noqa: F811
    runner.invoke(app, ["memory", "add", "I live in Bergen"])
    runner.invoke(app, ["memory", "add", "I moved to Oslo"])
    r = runner.invoke(app, ["memory", "stats"])
    assert r.exit_code == 0
    assert "{" not in r.stdout and "by_kind_status" not in r.stdout
    assert re.search(r"fact\s+1\s+1\s+2", r.stdout), r.stdout
    assert re.search(r"forgotten \(tombstones\)\s+0", r.stdout)


def test_long_and_control_character_memories_are_shortened_and_escaped(reverie_home, fake_embedder):  # noqa: F811
    long = "I like " + ", ".join(f"{w} cake" for w in "apple banana cherry walnut carrot lemon orange "
                                 "chocolate vanilla cheese sponge fruit honey ginger coffee".split())
    runner.invoke(app, ["memory", "add", long])
    runner.invoke(app, ["memory", "add", "My password hint is \x1b[31mred\x1b[0m"])
    r = runner.invoke(app, ["memory", "ls"])
    assert "\x1b" not in r.stdout and "\\x1b[31mred" in r.stdout
    line = next(x for x in r.stdout.splitlines() if "banana" in x)
    assert line.endswith("…") and len(line) < 160
    r = runner.invoke(app, ["memory", "ls", "--full"])
    assert "coffee cake" in r.stdout
    r = runner.invoke(app, ["memory", "ls", "--json"])
    assert "\x1b[31mred" in "".join(m["text"] for m in json.loads(r.stdout))  # --json unchanged


def test_feedback_show_prints_local_dates(reverie_home):
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger

    ledger = Ledger(reverie_home)
    fb = FeedbackLog(ledger).add("fix", ledger.new_conversation(), "turn_x", "Where do I live?",
                                 "Paris", "Tromsø")
    ledger.close()
    r = runner.invoke(app, ["feedback", "show", fb.id])
    assert r.exit_code == 0, r.output
    created = next(x for x in r.stdout.splitlines() if "created" in x)
    assert re.search(r"created: \d{4}-\d\d-\d\d \d\d:\d\d$", created), created
    assert time.strftime("%Y-%m-%d") in created
    r = runner.invoke(app, ["feedback", "ls"])
    assert "Where do I live?" in r.stdout and "'" not in r.stdout


METRICS = {"n_probes": 8, "personal_base": 0.125, "personal_adapted": 0.75, "general_base": 0.6333333,
           "general_adapted": 0.65, "n_general": 60, "general_base_correct": [True] * 38 + [False] * 22,
           "general_adapted_correct": [True] * 39 + [False] * 21, "ppl_base": 12.3456789,
           "ppl_adapted": 12.6789, "ppl_ratio": 1.0269999, "kl_drift": 0.0123456, "bwt": None,
           "examples": [{"q": "Where do I live?", "expected": "Oslo", "base": "Paris", "adapter": "Oslo"}],
           "train": {"steps": 60, "final_loss": 0.123456}}


@pytest.fixture
def two_adapters(reverie_home):
    from memory.adapters_ledger import AdapterLedger
    from memory.ledger import Ledger

    ledger = Ledger(reverie_home)
    led = AdapterLedger(ledger)
    gate = {"passed": True, "reasons": [], "checks": [
        {"name": "general", "value": 1.7, "threshold": 1.0, "passed": True,
         "message": "general accuracy 0.633 → 0.650 (+1.7 points)"}]}
    led.add(id="v001-aaaaaa", strategy="retrain", trainer="peft", model="smollm2-135m",
            fact_ids=["f1", "f2"], metrics=METRICS, gate=gate)
    led.add(id="v002-bbbbbb", parent="v001-aaaaaa", strategy="incremental", trainer="peft",
            model="smollm2-135m", fact_ids=["f1", "f3"],
            metrics={**METRICS, "personal_adapted": 0.875, "bwt": -0.125}, gate=gate)
    ledger.close()


def test_adapters_show_is_readable(two_adapters):
    r = runner.invoke(app, ["adapters", "show", "v001-aaaaaa"])
    assert r.exit_code == 0, r.output
    assert "true" not in r.stdout.lower().replace("backward transfer", "")
    assert "[" not in r.stdout and "{" not in r.stdout
    assert re.search(r"general accuracy\s+0\.633\s+→\s+0\.650\s+\(38/60 right\)\s*\(39/60 right\)", r.stdout)
    assert "0.6333333" not in r.stdout and "1.027" in r.stdout
    assert "BWT" in r.stdout and "None" not in r.stdout
    assert "gate       passed" in r.stdout
    d = json.loads(runner.invoke(app, ["adapters", "show", "v001-aaaaaa", "--json"]).stdout)
    assert len(d["metrics"]["general_base_correct"]) == 60  # --json unchanged


def test_adapters_diff_rounds_numbers(two_adapters):
    r = runner.invoke(app, ["adapters", "diff", "v001-aaaaaa", "v002-bbbbbb"])
    assert r.exit_code == 0, r.output
    assert "facts only in v001-aaaaaa: 1; only in v002-bbbbbb: 1" in r.stdout
    assert re.search(r"personal recall\s+0\.75\s+0\.88\s+\+0\.12", r.stdout), r.stdout
    assert re.search(r"backward transfer \(BWT\)\s+—\s+-0\.12", r.stdout), r.stdout
    assert "None" not in r.stdout and "1.0269999" not in r.stdout


# --- doctor ---------------------------------------------------------------------------------------
def test_doctor_does_not_call_an_unassembled_model_present(reverie_home):
    r = runner.invoke(app, ["doctor", "--json"])
    models = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    g = models["gemma3-270m"]
    assert g["present"] == os.path.isfile(g["path"])
    if not g["present"]:
        r = runner.invoke(app, ["doctor"])
        line = next(x for x in r.stdout.splitlines() if "gemma3-270m" in x)
        assert "not assembled yet" in line and "present" not in line


# --- wipe while in use; a process whose data dir was wiped ----------------------------------------
def test_wipe_refuses_while_another_process_holds_the_data_dir(reverie_home, fake_embedder, tmp_path):  # noqa: F811
    import subprocess
    import sys

    runner.invoke(app, ["memory", "add", "My sister is called Ingrid."])
    code = ("import sys; from assistant.privacy import DataDirHold; h = DataDirHold(sys.argv[1]); "
            "print('held', flush=True); sys.stdin.readline()")
    p = subprocess.Popen([sys.executable, "-c", code, str(reverie_home)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["wipe", "--yes"])
        assert r.exit_code == 1 and "another reverie process is using" in r.output
        assert "Traceback" not in r.output and (reverie_home / "ledger.db").exists()
    finally:
        p.communicate("\n", timeout=30)
    r = runner.invoke(app, ["wipe", "--yes"])  # once it is gone, wipe goes ahead
    assert r.exit_code == 0 and not reverie_home.exists()


def test_every_command_releases_the_data_dir_when_it_ends(reverie_home, fake_embedder):  # noqa: F811
    assert runner.invoke(app, ["memory", "add", "My sister is called Ingrid."]).exit_code == 0
    assert runner.invoke(app, ["memory", "export", "/nonexistent/x.jsonl"]).exit_code == 1  # failing too
    assert runner.invoke(app, ["wipe", "--yes"]).exit_code == 0


def test_a_chat_whose_data_dir_was_deleted_says_so_and_exits_1(reverie_home, scripted, monkeypatch):
    """The dir removed by hand between two lines (wipe itself refuses while the chat runs)."""
    import shutil

    from cli.line_input import LineReader

    lines = iter(["hello\n", "/remember my bike is red\n"])

    def read(self):
        line = next(lines)
        if line.startswith("/remember"):
            shutil.rmtree(reverie_home)
        return line

    monkeypatch.setattr(LineReader, "read", read)
    r = runner.invoke(app, ["chat"])
    assert r.exit_code == 1, r.output
    assert "was deleted while this command ran" in r.stderr and "Traceback" not in r.output
    assert not (reverie_home / "ledger.db").exists()  # nothing written into a recreated dir


def test_chat_input_history_is_read_from_the_ledger(reverie_home, scripted):
    """Arrow-up history is what you typed before, read from the ledger (no second file that
    forget or wipe could miss); --no-log turns are not in it."""
    from assistant.logs_api import recent_inputs

    assert recent_inputs(reverie_home) == []
    runner.invoke(app, ["ask", "first question"])
    runner.invoke(app, ["ask", "--no-log", "secret question"])
    runner.invoke(app, ["chat"], input="second question\n")
    assert recent_inputs(reverie_home) == ["first question", "second question"]
    assert not any(f.name.endswith("history") for f in reverie_home.rglob("*"))
