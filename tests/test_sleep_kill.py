"""`kill -9` during training, then `reverie sleep` again: it resumes from the checkpoint, the
previously promoted adapter is untouched and still loads in llama.cpp, the ledger is intact.

A real `reverie sleep` subprocess on the real default model, SIGKILLed as soon as its first
training checkpoint is on disk (REVERIE_CHECKPOINT_EVERY=2 makes that two steps in). The data dir
starts with a promoted adapter registered directly (a real GGUF LoRA for this model, small random
weights) and cached anchors: a first full sleep for that took over 15 minutes on a busy 2-core box.
The rerun evaluates on a handful of items for the same reason; what it checks is the resume.
"""
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.sleep import SleepOptions, run_sleep
from memory import MemoryStore
from memory.adapters_ledger import AdapterLedger
from memory.ledger import DB_NAME, Ledger

pytestmark = pytest.mark.slow

FIRST = ["My dog's name is Biscuit.", "I live in Tromsø."]
LATER = ["My sister is called Ingrid.", "I work as a glassblower."]
STEPS, EVERY = 4, 2
ANCHORS = [("What is the capital of France?", "The capital of France is Paris."),
           ("How many days are in a week?", "There are seven days in a week."),
           ("What do bees make?", "Bees make honey.")]


def _opts(probes, **kw):
    from assistant.probes import bundled_general_mc, bundled_general_text

    base = dict(steps=STEPS, max_general=2, general_items=bundled_general_mc()[:2],
                general_texts=bundled_general_text()[:1], eval_probes=probes, checkpoint_every=EVERY)
    base.update(kw)
    return SleepOptions(**base)


def _promoted_adapter(home: Path, model, sha: str, fact_ids: list[str]):
    """What a first night leaves behind: a promoted version with its dir and GGUF LoRA."""
    import numpy as np

    from lora.adapter import AdapterSpec, Provenance, key, save_adapter
    from assistant.quant_api import export_adapter_gguf as export_gguf

    dims = {"q_proj": [576, 576], "v_proj": [192, 576]}
    rng = np.random.default_rng(0)
    w = {key(i, m, ab): rng.normal(0, 0.01, (2, d[1]) if ab == "a" else (d[0], 2)).astype(np.float32)
         for i in range(30) for m, d in dims.items() for ab in "ab"}
    spec = AdapterSpec(trainer="peft", rank=2, alpha=4.0, targets=list(dims), n_layers=30,
                       base_dims=dims, n_head=9, n_head_kv=3)
    d = save_adapter(home / "adapters" / "v001-first", w, spec,
                     Provenance(base_model_sha256=sha, fact_ids=fact_ids))
    g = export_gguf(d, d / "adapter.gguf")
    led = AdapterLedger(Ledger(home))
    led.add(id="v001-first", model=model.name, base_sha256=sha, fact_ids=fact_ids, path=str(d),
            gguf=str(g), strategy="retrain", trainer="peft")
    return led.promote("v001-first")


def _digest(d: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(d).iterdir()) if p.is_file()}


def _integrity(home: Path) -> str:
    c = sqlite3.connect(str(home / DB_NAME))
    try:
        return c.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        c.close()


@pytest.mark.timeout(1500)
def test_kill_during_training_then_sleep_resumes_and_keeps_the_promoted_adapter(reverie_home, tmp_path):
    from llama_cpp import Llama
    from quant.registry import Registry

    from assistant.gate_eval import Probe
    from assistant.config import Settings
    from assistant.sleep import anchor_cache_path
    from common.files import cached_sha256
    from quant.registry import sha256_file

    home = reverie_home
    store = MemoryStore(home)
    first_ids = sorted(store.add_fact(t, {"command": "test"})[0].id for t in FIRST)
    model = Registry(home).get()
    sha = cached_sha256(home, Path(model.path), sha256_file)
    anchors = anchor_cache_path(home, sha, Settings.load(home).system_prompt)
    anchors.parent.mkdir(parents=True, exist_ok=True)
    anchors.write_text(
        json.dumps([{"prompt": p, "answer": a} for p, a in ANCHORS]))
    old = _promoted_adapter(home, model, sha, first_ids)
    before = _digest(Path(old.path))
    later_ids = [store.add_fact(t, {"command": "test"})[0].id for t in LATER]
    probes = [Probe(first_ids[0], "What is the name of my dog?", "Biscuit"),
              Probe(later_ids[0], "What is my sister called?", "Ingrid")]
    n_facts = len(store.active_facts())

    # a real `reverie sleep`, killed with SIGKILL once a checkpoint is on disk
    ckpt = home / "work" / "sleep" / "checkpoint" / "state.json"
    env = dict(os.environ, REVERIE_HOME=str(home), REVERIE_CHECKPOINT_EVERY=str(EVERY),
               TOKENIZERS_PARALLELISM="false")
    log = tmp_path / "killed.log"
    exe = Path(sys.executable).parent / "reverie"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "sleep", "--steps", str(STEPS), "--force"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 600
            while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None, f"sleep ended before a checkpoint: {log.read_text()[-2000:]}"
            assert ckpt.exists(), "no checkpoint within 10 minutes"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    killed_at = json.loads(ckpt.read_text())["step"]
    assert 0 < killed_at < STEPS

    # nothing lost: the promoted adapter is the same version, byte for byte, and still loads
    led = AdapterLedger(Ledger(home))
    assert led.promoted(model.name).id == old.id
    assert _digest(Path(old.path)) == before
    assert [r.id for r in led.list()] == [old.id]  # the killed run registered no half version
    assert _integrity(home) == "ok"
    assert len(store.active_facts()) == n_facts
    llm = Llama(model_path=model.path, lora_path=old.gguf, n_ctx=64, verbose=False, n_threads=2)
    assert llm.tokenize(b"hi")
    llm.close()
    running = [r for r in led.runs() if r["status"] == "running"]
    assert len(running) == 1  # the killed one; the next sleep closes it

    # `reverie sleep` again (same options; the library call the command makes): it resumes
    reports, logs = [], []
    again = run_sleep(home, _opts(probes), log=logs.append, on_train=reports.append)
    assert again.status in ("promoted", "rejected"), again.message
    resumed = [r for r in reports if r.event == "resume"]
    assert len(resumed) == 1 and resumed[0].step == killed_at, [r.event for r in reports]
    assert [r.step for r in reports if r.event == "step"] == list(range(killed_at + 1, STEPS + 1))
    assert again.metrics["train"]["resumed_from"] == killed_at
    assert any(f"checkpoint at step {killed_at}" in line for line in logs), logs
    assert any("did not finish" in line for line in logs), logs
    assert not ckpt.parent.exists()  # done: the next run must not resume this one
    led = AdapterLedger(Ledger(home))
    new = led.get(again.adapter_id)
    assert new.id != old.id and new.parent == old.id and Path(new.gguf).is_file()
    assert len(json.loads(new.fact_ids)) == n_facts
    assert {r["status"] for r in led.runs()} <= {"promoted", "rejected", "interrupted"}
    assert _integrity(home) == "ok"
    llm = Llama(model_path=model.path, lora_path=new.gguf, n_ctx=64, verbose=False, n_threads=2)
    llm.close()
