"""`reverie sleep` end to end on the real stack: ledger → peft on the GGUF twin → GGUF LoRA →
llama.cpp evaluation → gate → registry; chat picks up a promoted adapter; forget retrains."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from assistant.sleep import SleepOptions, run_sleep
from memory import MemoryStore
from memory.adapters_ledger import AdapterLedger
from memory.ledger import Ledger

pytestmark = pytest.mark.slow

FACTS = ["My dog's name is Biscuit.", "I live in Tromsø."]


def _opts(**kw):
    from assistant.probes import bundled_general_mc, bundled_general_text

    base = dict(steps=12, max_general=16, general_items=bundled_general_mc()[:16],
                general_texts=bundled_general_text()[:2])
    base.update(kw)
    return SleepOptions(**base)


@pytest.fixture(scope="module")
def anchors(tmp_path_factory, default_model):
    """The base model's anchor answers, made once for this module by sleep's own code (~40 s on
    2 cores); each test finds them in its data dir as a second night would. Its own runtime: the
    session's `llama_runtime` may have been closed by a test that owns a copy of it."""
    from assistant.config import Settings
    from assistant.sleep import _anchors, anchor_cache_path
    from common.files import cached_sha256
    from quant.registry import sha256_file
    from quant.runtime import load_runtime

    home = tmp_path_factory.mktemp("anchors") / "home"
    home.mkdir(mode=0o700)
    sha = cached_sha256(home, Path(default_model.path), sha256_file)
    prompt = Settings.load(home).system_prompt
    rt = load_runtime(default_model, "llama.cpp", n_ctx=1024, threads=2)
    try:
        made = _anchors(home, rt, sha, prompt, log=lambda _: None)
    finally:
        rt.close()
    assert len(made) >= 20 and all(a.answer.strip() for a in made)
    return anchor_cache_path(home, sha, prompt)


def _seed(home: Path, anchors: Path) -> None:
    (home / "cache").mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(anchors, home / "cache" / anchors.name)


# questions written here, never generated: the test checks below that training never saw them
UNSEEN = {"What do I call my dog?": "Biscuit", "In which town do I have my home?": "Tromsø"}


def test_sleep_trains_evaluates_and_registers(reverie_home, no_network, anchors):
    """The acceptance path: facts told in chat, one `reverie sleep`, and a new chat with memory
    recall off answers them on phrasings training never saw, through the promoted adapter.
    All of it without a network connection (chat, training, evaluation, both runtimes)."""
    from assistant.chat import ChatSession

    s = ChatSession(reverie_home, backend="llama.cpp", use_adapter=False, max_tokens=8)
    _seed(reverie_home, anchors)
    for f in FACTS:
        assert "memory" in s.command(f"/remember {f}").output
    s.close()
    store = MemoryStore(reverie_home)
    ids = [m.id for m in store.active_facts()]
    assert len(ids) == 2
    # a chat stays open through the night, talking while sleep trains, evaluates and promotes
    chat = subprocess.Popen([str(Path(sys.executable).parent / "reverie"), "chat", "--max-tokens", "4"],
                            env=dict(os.environ, REVERIE_HOME=str(reverie_home)), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop = threading.Event()

    def talk():
        i = 0
        while not stop.wait(15):
            chat.stdin.write(f"What is {i} plus 3?\n")
            chat.stdin.flush()
            i += 1

    talker = threading.Thread(target=talk, daemon=True)
    talker.start()
    logs = []
    try:
        out = run_sleep(reverie_home, _opts(steps=24), log=logs.append)
    finally:
        stop.set()
        talker.join()
    chat.stdin.write("What is 10 plus 3?\n")  # after the promotion, same process
    chat.stdin.close()
    t0 = time.time()
    rc, err = chat.wait(timeout=300), chat.stderr.read()
    assert rc == 0 and "Traceback" not in err, err[-1500:]
    assert time.time() - t0 < 120, "the chat's last turns were blocked"
    assert out.status == "promoted", out.message
    m = out.metrics
    assert m["n_probes"] >= 2 and m["personal_adapted"] > m["personal_base"]
    assert m["ppl_ratio"] > 0 and m["kl_drift"] >= 0
    assert (Path(out.report_path) / "report.md").exists()
    row = AdapterLedger(Ledger(reverie_home)).get(out.adapter_id)
    assert sorted(json.loads(row.fact_ids)) == sorted(ids)
    assert Path(row.gguf).exists() and row.status == "promoted"
    metas = [json.loads(r[0]) for r in Ledger(reverie_home).db.execute(
        "select meta from turns where role = 'assistant' order by rowid").fetchall()]
    assert len(metas) >= 3  # turns during the sleep and one after it
    assert metas[0]["adapter"] is None  # nothing was promoted yet
    assert metas[-1]["adapter"] == row.id  # picked up by the running chat, no restart

    trained = {msg["content"].strip().lower() for line in (Path(row.path) / "train.jsonl").read_text().splitlines()
               for msg in json.loads(line)["messages"] if msg["role"] == "user"}
    assert not trained & {q.lower() for q in UNSEEN}

    from quant.registry import Registry, sha256_file

    served, base_path = m["served"], Registry(reverie_home).get().path
    assert served["form"] == ("merged" if row.served else "runtime_lora")
    assert served["adapter_id"] == row.id and (row.served or row.gguf) in served.values()

    def ask(backend: str, use_adapter: bool = True) -> dict:
        chat = ChatSession(reverie_home, backend=backend, use_memory=False, use_adapter=use_adapter,
                           max_tokens=16)
        try:
            if use_adapter:  # chat serves the very file the gate measured, in the same form
                assert (chat.runtime.model.path, chat.runtime.adapter_path) == (
                    served["model"], served["adapter"])
                assert sha256_file(served["adapter"] or served["model"]) == served["sha256"]
            else:
                assert chat.runtime.adapter_path is None and chat.runtime.model.path == base_path
            turns = {q: chat.send(q) for q in UNSEEN}
            assert not any(t.recalled for t in turns.values())  # recall is off: weights only
            return {q: t.answer for q, t in turns.items()}
        finally:
            chat.close()

    base = ask("llama.cpp", use_adapter=False)
    assert not any(want in base[q] for q, want in UNSEEN.items()), base
    adapted = ask("llama.cpp")
    assert all(want in adapted[q] for q, want in UNSEEN.items()), adapted
    import importlib.util

    if importlib.util.find_spec("mlx") is not None:  # the MLX runtime serves the same GGUF LoRA
        on_mlx = ask("mlx")
        assert any(want in on_mlx[q] for q, want in UNSEEN.items()), on_mlx

    # the GGUF adapter loads in llama.cpp and changes the model's outputs
    from quant.registry import Registry
    from quant.runtime import load_runtime

    rt = load_runtime(Registry(reverie_home).get(), "llama.cpp", n_ctx=512, threads=2)
    base = rt.next_token_logprobs("My dog's name is")
    rt.set_adapter(row.gguf)
    adapted = rt.next_token_logprobs("My dog's name is")
    rt.close()
    assert abs(base - adapted).max() > 1e-3

    # nothing new → no training
    again = run_sleep(reverie_home, _opts(), log=logs.append)
    assert again.status == "nothing-new"
    assert no_network == []

    # forget a fact → the next dataset no longer contains it
    store.forget(ids[0])
    dry = run_sleep(reverie_home, _opts(dry_run=True, strategy="incremental"), log=logs.append)
    assert dry.status == "dry-run"
    assert dry.dataset["facts"] == 1 and dry.dataset["strategy"] == "retrain"


@pytest.mark.mlx
def test_sleep_with_the_mlx_trainer_registers_an_adapter_llama_cpp_serves(reverie_home, anchors):
    """`reverie sleep --trainer mlx`: QLoRA on the quantized GGUF, same registry, and the GGUF
    LoRA it exports is what the llama.cpp gate evaluated. One step only: MLX's Linux CPU build
    runs a forward pass of this model at ~7 tokens/s (reference BLAS, scalar quantized matmul),
    so a step takes ~50 s; learning itself is tested in test_lora_mlx_trainer.py."""
    pytest.importorskip("mlx.core")
    from lora.adapter import load_adapter
    from quant.gguf_lora import read_gguf_lora

    MemoryStore(reverie_home).add_fact(FACTS[0], {"command": "test"})
    _seed(reverie_home, anchors)
    logs = []
    from assistant.gate_eval import Probe
    from assistant.probes import bundled_general_text

    out = run_sleep(reverie_home, _opts(steps=1, trainer="mlx", max_general=4, general_items=None,
                                        general_texts=bundled_general_text()[:1],
                                        eval_probes=[Probe("x", "What did I name my dog?", "Biscuit")]),
                    log=logs.append)
    assert out.status in ("promoted", "rejected"), out.message
    assert any("MLX QLoRA" in line for line in logs)
    row = AdapterLedger(Ledger(reverie_home)).get(out.adapter_id)
    assert row.trainer == "mlx" and Path(row.gguf).exists()
    a = load_adapter(Path(row.path))
    assert a.spec.trainer == "mlx" and a.spec.layout == "gguf"
    assert out.metrics["train"]["steps"] == 1 and out.metrics["n_general"] == 4
    assert len(read_gguf_lora(row.gguf).tensors) == 7 * 30  # (A, B) for 7 projections x 30 layers
    # incremental on top of an MLX adapter with the peft trainer: layouts differ, so it retrains
    if out.status == "promoted":
        MemoryStore(reverie_home).add_fact(FACTS[1], {"command": "test"})
        dry = run_sleep(reverie_home, _opts(strategy="incremental", dry_run=True), log=logs.append)
        assert dry.dataset["strategy"] == "retrain"
        assert any("trained with mlx" in line for line in logs)


def test_forget_after_a_night_reaches_the_served_adapter_and_every_file(reverie_home, anchors):
    """The leak of issue 14: a fact told in chat, a night trained on it, then forgotten. Before,
    the promoted adapter kept serving it, its train.jsonl kept the sentence and the user's turn
    stayed the top hit of `memory search`. Now: the adapter is withdrawn at once (the base is
    served), search finds nothing, `ask --no-memory` neither uses an adapter nor stores the answer
    as a memory, and no file under the data dir holds the text."""
    from typer.testing import CliRunner

    from assistant.forget import leaked_files
    from assistant.services import Services
    from cli.main import app

    ledger = Ledger(reverie_home)
    services = Services(reverie_home, ledger)
    conv = ledger.new_conversation(model="test")
    services.record_exchange(conv, "I am allergic to peanuts.", "I will remember that.", "{}")
    services.record_exchange(conv, "My dog's name is Biscuit.", "What a lovely name.", "{}")
    ledger.close()
    _seed(reverie_home, anchors)
    from assistant.probes import bundled_general_mc, bundled_general_text

    # the gate's verdict is not what this test is about: its lightest general probe
    out = run_sleep(reverie_home, _opts(max_general=2, general_items=bundled_general_mc()[:2],
                                        general_texts=bundled_general_text()[:1]), log=lambda _: None)
    assert out.status in ("promoted", "rejected"), out.message
    adapters = AdapterLedger(Ledger(reverie_home))
    if out.status == "rejected":  # the gate's verdict is not what this test is about
        adapters.promote(out.adapter_id)
    trained = Path(adapters.get(out.adapter_id).path)
    assert "peanuts" in "".join(p.read_text() for p in trained.glob("*.jsonl")).lower()

    runner = CliRunner()
    r = runner.invoke(app, ["memory", "forget", "--matching", "peanuts", "--yes", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["adapters_withdrawn"] == [out.adapter_id] and res["serving"] == {
        adapters.get(out.adapter_id).model: ""}
    assert AdapterLedger(Ledger(reverie_home)).promoted(adapters.get(out.adapter_id).model) is None
    r = runner.invoke(app, ["memory", "search", "peanuts", "--json"])
    assert r.exit_code == 0 and "peanut" not in r.output.lower()
    r = runner.invoke(app, ["ask", "What am I allergic to?", "--no-memory", "--json",
                            "--max-tokens", "24"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[r.stdout.index("{"):])["adapter"] is None
    assert leaked_files(reverie_home, ["peanuts"]) == []
    # the next night retrains without it: Biscuit is still there to learn
    dry = run_sleep(reverie_home, _opts(dry_run=True), log=lambda _: None)
    assert dry.status == "dry-run" and dry.dataset["facts"] == 1


# a week's worth of what a user says about themselves (written here, not from ../shared/data)
PERSONA = ["My sister is called Ingrid.", "I work as a glassblower.", "My cat is named Pepper.",
           "I was born in Lisbon.", "My favourite food is ramen.", "I drive a green Volvo.",
           "My daughter plays the cello.", "I am allergic to peanuts."]


def test_a_night_on_persona_facts_keeps_the_general_answers_the_base_knew(reverie_home, anchors):
    """The France regression (issue 15): an adapter trained on persona facts once answered "What
    is the capital of France?" with "L'Étoile…" and was promoted. Now the gate asks general
    questions the adapter never trained on and measures how many answers the base knew it
    loses, against the model's own noise floor. Whatever it decides, what chat serves after the
    night still answers France, and the decision agrees with its numbers."""
    from assistant.chat import ChatSession
    from assistant.probes import bundled_general_facts
    from assistant.sleep import never_trained

    _seed(reverie_home, anchors)
    store = MemoryStore(reverie_home)
    for f in PERSONA:
        store.add_fact(f)
    items = never_trained(bundled_general_facts())[:40]
    assert "What is the capital of France?" in {it.question for it in items}  # never an anchor
    out = run_sleep(reverie_home, _opts(steps=0, factual_items=items), log=lambda _: None)
    assert out.status in ("promoted", "rejected"), out.message
    m = out.metrics
    check = next(c for c in out.gate["checks"] if c["name"] == "factual_lost")
    known = sum(1 for x in m["factual_base_correct"] if x)
    assert known >= 15 and m["n_factual"] == 40  # the base knows enough of them to matter
    assert check["value"] == pytest.approx(100 * m["factual_lost"] / known)
    assert check["threshold"] == pytest.approx(m["factual_noise_pct"] + 3.0)
    assert check["passed"] == (check["value"] <= check["threshold"] + 1e-9)
    if not check["passed"]:
        assert out.status == "rejected" and "general questions" in out.message
    s = ChatSession(reverie_home, backend="llama.cpp", use_memory=False, max_tokens=24, record=False)
    try:
        assert (s.served is not None) == (out.status == "promoted")
        assert "Paris" in s.send("What is the capital of France?").answer
    finally:
        s.close()
