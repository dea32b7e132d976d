"""The chat on the real stack (98 MB model, llama.cpp, SQLite): the context window never overflows,
and the `reverie chat` / `reverie ask` commands work end to end."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_long_conversation_trims_old_turns_and_long_input_is_truncated(tmp_path, default_model):
    from assistant.chat import ChatSession

    s = ChatSession(tmp_path / "home", model=default_model.path, backend="llama.cpp",
                    use_memory=False, use_adapter=False, n_ctx=256, max_tokens=8)
    filler = "Here is a detail about my garden, which has roses and a pond. " * 6  # ~90 tokens
    trimmed = 0
    for i in range(4):
        r = s.send(f"Note {i}: {filler}")
        trimmed = max(trimmed, r.trimmed_turns)
        assert r.prompt_tokens + r.completion_tokens <= 256
    assert trimmed > 0

    r = s.send("Please summarise this. " + "lorem ipsum dolor sit amet " * 200)
    assert r.truncated_input and r.prompt_tokens <= 256 - 8
    s.close()


@pytest.mark.slow
def test_piped_chat_subprocess_exits_zero(tmp_path):
    env = {**os.environ, "REVERIE_HOME": str(tmp_path / "home")}
    script = "My sister is called Ingrid.\n/new\nWhat is my sister called?\n/why\n"
    p = subprocess.run([str(Path(sys.executable).parent / "reverie"), "chat", "--max-tokens", "12"],
                       input=script, capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "new conversation" in p.stdout
    assert "(fact) The user's sister is called Ingrid." in p.stdout  # /why lists the fact
    assert "Loading weights" not in p.stderr  # the embedder's progress bar is silenced


@pytest.mark.slow
def test_ask_json_keys(reverie_home):
    r = CliRunner().invoke(app, ["ask", "Say hello.", "--json", "--max-tokens", "8", "--no-memory",
                                 "--backend", "llama.cpp"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert {"answer", "backend", "model", "prompt_tokens", "completion_tokens", "ttft_s",
            "tokens_per_s"} <= set(d)
    assert d["backend"] == "llama.cpp" and d["prompt_tokens"] > 0 and d["completion_tokens"] > 0
