"""`reverie chat` in a real pseudo-terminal (pexpect), on the real model: line editing and input
history, Ctrl-C stops an answer and keeps the chat, Ctrl-D leaves cleanly on a fresh line, and
`reverie wipe` refuses while the chat is open (issue 18)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

pexpect = pytest.importorskip("pexpect")

REPO = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "reverie")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LEFT, UP = "\x1b[D", "\x1b[A"


def _plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def _spawn(home: Path, *args: str):
    # no cursor-position requests: a real terminal answers them, pexpect does not
    env = dict(os.environ, REVERIE_HOME=str(home), TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1")
    child = pexpect.spawn(EXE, ["chat", *args], env=env, cwd=str(REPO), encoding="utf-8",
                          timeout=120, dimensions=(40, 200))
    child.expect("you>")
    return child


@pytest.mark.slow
def test_chat_line_editing_history_ctrl_c_and_ctrl_d(tmp_path):
    c = _spawn(tmp_path / "home", "--no-log", "--max-tokens", "300")
    try:
        c.send("/nop" + LEFT + "e\r")  # the arrow moves the cursor; it does not print ^[[D
        c.expect(r"unknown command (\S+);")
        assert c.match.group(1) == "/noep"
        c.expect("you>")
        c.send(UP + "\r")  # arrow-up brings the last line back
        c.expect(r"unknown command (\S+);")
        assert c.match.group(1) == "/noep"
        c.expect("you>")
        c.send("half a line")
        c.sendintr()  # Ctrl-C at the prompt drops the line, the chat goes on
        c.expect("Ctrl-D or /quit to leave")
        c.expect("you>")

        c.send("Tell me a long story about a dragon and a princess.\r")
        c.expect("reverie> ")
        c.expect(r"\w+ \w+ \w+")  # the answer is streaming
        c.sendintr()
        c.expect(r"\(stopped")
        c.expect("you>")  # same session: no exit 130
        c.send("What is the capital of France?\r")
        c.expect("reverie> ")
        c.expect("you>")
        assert "Paris" in _plain(c.before)

        c.sendeof()
        c.expect(pexpect.EOF)
        assert c.before.endswith("\n")  # the shell prompt starts on a line of its own
    finally:
        c.close()
    assert c.exitstatus == 0 and c.signalstatus is None


@pytest.mark.slow
def test_wipe_refuses_while_a_chat_is_open(tmp_path, monkeypatch):
    from cli.main import app

    home = tmp_path / "home"
    c = _spawn(home, "--no-memory", "--max-tokens", "8")
    monkeypatch.setenv("REVERIE_HOME", str(home))
    try:
        r = CliRunner().invoke(app, ["wipe", "--yes"])
        assert r.exit_code == 1 and "another reverie process is using" in r.output
        assert (home / "ledger.db").exists()
        c.send("/remember my bike is red\r")  # the chat's data is still there to write to
        c.expect("you>")
        assert "Traceback" not in c.before and "readonly" not in c.before
        c.send("/quit\r")
        c.expect(pexpect.EOF)
    finally:
        c.close()
    assert c.exitstatus == 0
    r = CliRunner().invoke(app, ["wipe", "--yes"])
    assert r.exit_code == 0 and not home.exists()
