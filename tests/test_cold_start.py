"""Chat, `ask` and the memory commands start without torch, transformers or sentence-transformers.

Each command runs as its own process under `python -X importtime`, which logs every module the
process imports; the training stack is allowed only on the training path. Importing
sentence-transformers alone cost 3.1-3.7 s and torch 1.0 s of every command's start before the
embedder moved to NumPy (memory/minilm.py); the timing itself is `reverie bench startup`.
"""
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real model, real embedder, real chromadb: whole processes

TRAINING_STACK = {"torch", "transformers", "sentence_transformers", "peft", "sklearn"}
RUN = "import sys; from cli.main import main; sys.argv = ['reverie', *sys.argv[1:]]; main()"


def imported(args: list[str], home, stdin: str | None = None) -> set[str]:
    """Top-level packages a whole `reverie ARGS` process imported (it must exit 0)."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", RUN, *args], input=stdin,
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, REVERIE_HOME=str(home)))
    assert p.returncode == 0, p.stderr[-2000:]
    names = set()
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "cli" in names, "importtime logged nothing: the check would pass vacuously"
    return names


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A data dir holding one fact, added by a whole `reverie memory add` (checked the same way)."""
    home = tmp_path_factory.mktemp("cold") / "home"
    names = imported(["memory", "add", "I live in Oslo."], home)  # embeds and indexes for real
    assert not names & TRAINING_STACK, sorted(names & TRAINING_STACK)
    assert "chromadb" in names and "tokenizers" in names  # the real index and embedder ran
    return home


@pytest.mark.parametrize("args, stdin", [
    (["memory", "search", "where do I live"], None),
    (["memory", "ls"], None),
    (["ask", "Where do I live?", "--max-tokens", "8"], None),
    (["ask", "--no-memory", "Where do I live?", "--max-tokens", "8"], None),
    (["chat", "--max-tokens", "8"], "Where do I live?\n/quit\n"),
], ids=["memory-search", "memory-ls", "ask", "ask-no-memory", "chat"])
def test_no_training_stack_on_the_everyday_path(args, stdin, home):
    names = imported(args, home, stdin)
    assert not names & TRAINING_STACK, sorted(names & TRAINING_STACK)
    if args[0] in ("ask", "chat"):
        assert "llama_cpp" in names  # it did answer with the real engine
