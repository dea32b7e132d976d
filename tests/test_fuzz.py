"""Bad input, generated: importers, probe loaders, slash commands and CLI arguments answer with the
project's own error types and clear messages — never a raw traceback — and a failed import leaves
the ledger exactly as it was."""
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from assistant.errors import ReverieError
from cli.main import app
from fakes import FakeRuntime
from memory.errors import MemoryStoreError
from memory.ledger import LedgerError
from memory_fakes import LOCOMO_SAMPLE, fake_embedder  # noqa: F401 - fixture

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
runner = CliRunner()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)


def _valid_record(i: int = 0) -> dict:
    return {"id": f"m_fuzz{i:04d}", "kind": "fact", "text": f"I have {i} cats.", "subject": None,
            "status": "active", "created": 1.0, "updated": 1.0, "source": {}, "history": []}


@st.composite
def memory_files(draw) -> bytes:
    """Raw bytes, text lines, or export records with one field broken or dropped."""
    kind = draw(st.sampled_from(["bytes", "lines", "records"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "lines":
        return "\n".join(draw(st.lists(st.text(max_size=40), max_size=5))).encode("utf-8", "surrogatepass")
    recs = []
    for i in range(draw(st.integers(1, 3))):
        rec = _valid_record(i)
        if draw(st.booleans()):
            field = draw(st.sampled_from(sorted(rec) + ["extra"]))
            if draw(st.booleans()) and field in rec:
                del rec[field]
            else:
                rec[field] = draw(json_values)
        recs.append(rec)
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def _ledger_state(store) -> list:
    return [list(store.db.execute(f"select * from {t} order by 1").fetchall())
            for t in ("memories", "memory_history", "tombstones")]


@pytest.fixture
def fuzz_store(fake_embedder):  # noqa: F811
    from memory import MemoryStore

    d = Path(tempfile.mkdtemp(prefix="reverie-fuzz-"))
    store = MemoryStore(d / "home")
    store.add_fact("My sister is called Ingrid.", {"command": "test"})
    yield store, d
    store.close()
    shutil.rmtree(d, ignore_errors=True)


@FUZZ
@given(data=memory_files())
def test_memory_import_is_all_or_nothing_with_a_clear_error(fuzz_store, data):
    store, d = fuzz_store
    path = d / "in.jsonl"
    path.write_bytes(data)
    before = _ledger_state(store)
    try:
        store.import_jsonl(path)
    except MemoryStoreError as e:
        assert str(e) and "Traceback" not in str(e)
        assert _ledger_state(store) == before, "a failed import changed the ledger"
        return
    # accepted: every accepted record is a valid one (ids of the form m_fuzzNNNN)
    assert all(r[0] == "My sister is called Ingrid." or r[0].startswith("I have")
               for r in store.db.execute("select text from memories").fetchall())


@st.composite
def locomo_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    sample = json.loads(json.dumps(LOCOMO_SAMPLE))
    conv = sample["conversation"]
    target = draw(st.sampled_from(["conversation", "session_1", "turn", "turn_field", "date"]))
    value = draw(json_values)
    if target == "conversation":
        sample["conversation"] = value
    elif target == "session_1":
        conv["session_1"] = value
    elif target == "turn":
        conv["session_1"][0] = value
    elif target == "turn_field":
        conv["session_1"][0][draw(st.sampled_from(["speaker", "dia_id", "text"]))] = value
    else:
        conv["session_1_date_time"] = value
    return json.dumps([sample]).encode()


@FUZZ
@given(data=locomo_files())
def test_locomo_import_errors_are_clear_and_change_nothing(fuzz_store, data):
    store, d = fuzz_store
    path = d / "conv.json"
    path.write_bytes(data)
    before = _ledger_state(store)
    try:
        store.import_locomo(path)
    except MemoryStoreError as e:
        assert str(e)
        assert _ledger_state(store) == before


@st.composite
def probe_files(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "objects"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    objs = draw(st.lists(st.dictionaries(
        st.sampled_from(["id", "night", "statement", "questions", "answer", "aliases", "context",
                         "goal", "question", "endings", "choices", "label"]), json_values, max_size=8),
        max_size=3))
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


@settings(max_examples=150, deadline=None)
@given(data=probe_files())
def test_probe_loaders_raise_only_reverie_errors(data):
    from assistant.probes import load_multiple_choice, load_persona

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.jsonl"
        path.write_bytes(data)
        for loader in (load_persona, load_multiple_choice):
            try:
                loader(path)
            except ReverieError as e:
                assert str(path) in str(e) or "probe file" in str(e)


@FUZZ
@given(line=st.tuples(st.sampled_from(["/help", "/new", "/history", "/why", "/remember", "/good",
                                       "/bad", "/fix", "/memory", "/quit", "/", "/nope", "/REMEMBER"]),
                      st.text(max_size=30)).map(lambda t: f"{t[0]} {t[1]}"))
def test_slash_commands_answer_or_raise_a_domain_error(reverie_home, fake_embedder, line):  # noqa: F811
    from assistant.chat import ChatSession

    rt = FakeRuntime()
    s = ChatSession(reverie_home, runtime=rt, use_adapter=False)
    try:
        res = s.command(line)
        assert isinstance(res.output, str)
    except (ReverieError, LedgerError) as e:
        assert str(e)
    finally:
        s.ledger.close()
    assert rt.prompts == []  # slash commands never reach the model


CLI_ARGS = st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
                            max_size=12), max_size=3)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from([["memory", "show"], ["memory", "history"], ["memory", "forget"],
                            ["memory", "edit"], ["feedback", "show"], ["adapters", "show"],
                            ["adapters", "diff"], ["models", "info"], ["models", "default"],
                            ["memory", "ls", "--kind"], ["memory", "ls", "--limit"]]),
       args=CLI_ARGS)
def test_cli_arguments_never_traceback(reverie_home, cmd, args):
    r = runner.invoke(app, cmd + args)
    assert r.exit_code in (0, 1, 2), (cmd + args, r.output)
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), (cmd + args, repr(r.exception))


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage\x80", "ok\n".encode("utf-16")])
def test_import_commands_on_empty_and_non_utf8_files(reverie_home, tmp_path, fake_embedder,  # noqa: F811
                                                     content):
    path = tmp_path / "f"
    path.write_bytes(content)
    for cmd in (["memory", "import"], ["memory", "import-conversation"]):
        r = runner.invoke(app, cmd + [str(path)])
        assert "Traceback" not in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
        if content:
            assert r.exit_code == 1 and "error:" in r.output, (cmd, r.output)
        else:
            assert r.exit_code in (0, 1), (cmd, r.output)


@pytest.mark.parametrize("size", [0, 3, 8, 24, 4096, 65536])
def test_models_add_on_a_truncated_gguf(reverie_home, tmp_path, default_model, size):
    path = tmp_path / "cut.gguf"
    with open(default_model.path, "rb") as f:
        path.write_bytes(f.read(size))
    r = runner.invoke(app, ["models", "add", "cut", str(path)])
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
