"""Chat, `ask` and the memory commands start without torch, transformers or sentence-transformers,
and load the rest only when they need it.

Each command runs as its own process under `python -X importtime`, which logs every module the
process imports; the training stack is allowed only on the training path. Importing
sentence-transformers alone cost 3.1-3.7 s and torch 1.0 s of every command's start before the
embedder moved to NumPy (memory/minilm.py); chromadb costs ~0.5 s and llama_cpp ~0.1 s, so a
command that needs neither imports neither. A chat loads its model on a thread while chromadb
imports (assistant.chat._load_runtime); that thread must import nothing itself (two threads
importing at once can deadlock on a circular import). The timing itself is `reverie bench startup`.
"""
import json
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


# Imports made on threads other than the main one, printed at exit (a meta-path spy is asked
# about every module that is not imported yet).
SPY = """
import atexit, json, sys, threading
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        seen.append([threading.current_thread().name, name])
sys.meta_path.insert(0, Spy())
# importlib.util.find_spec asks the finders too without importing: keep what was imported
atexit.register(lambda: sys.stderr.write("IMPORTS " + json.dumps(
    [x for x in seen if x[1] in sys.modules]) + "\\n"))
"""


def test_help_imports_no_engine(tmp_path):
    names = imported(["--help"], tmp_path / "home")
    assert not names & (TRAINING_STACK | ENGINES), sorted(names & (TRAINING_STACK | ENGINES))


ENGINES = {"chromadb", "llama_cpp", "numpy", "tokenizers", "sqlite_utils"}


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


@pytest.mark.parametrize("args, absent", [
    (["memory", "ls"], {"chromadb", "llama_cpp", "tokenizers"}),
    # nothing recalled, nothing recorded: the memory index is never opened
    (["ask", "--no-log", "Where do I live?", "--max-tokens", "4"], {"chromadb", "tokenizers"}),
], ids=["memory-ls", "ask-no-log"])
def test_what_a_command_does_not_need_it_does_not_import(args, absent, home):
    names = imported(args, home)
    assert not names & absent, sorted(names & absent)


def test_the_model_loads_on_a_thread_that_imports_nothing(home):
    p = subprocess.run([sys.executable, "-c", SPY + RUN, "ask", "Where do I live?", "--max-tokens", "8"],
                       capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, REVERIE_HOME=str(home)))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Oslo" in p.stdout  # it answered from memory, with the prefilled head
    line = next(x for x in p.stderr.splitlines() if x.startswith("IMPORTS "))
    seen = json.loads(line[len("IMPORTS "):])
    # the spy saw the index (the client, or memory/chroma_fast.py's bindings) and the engine
    assert (["MainThread", "chromadb"] in seen or ["MainThread", "chromadb_rust_bindings"] in seen)
    assert ["MainThread", "llama_cpp"] in seen
    ours = [(t, m) for t, m in seen if t.startswith("reverie-")]
    assert ours == [], ours


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["memory", "show", "m_none"], 1),
                                        (["memory", "bogus"], 1), (["ask", "--max-tokens", "0", "hi"], 1)])
def test_the_entry_point_keeps_exit_codes_when_it_skips_teardown(args, code, tmp_path):
    # cli.main._end: os._exit after the command; exit codes and output are as a normal exit's
    p = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, REVERIE_HOME=str(tmp_path / "home")))
    assert p.returncode == code, p.stderr[-1000:]
    assert (p.stdout + p.stderr).strip()  # what it printed was flushed before the exit
