"""`reverie sleep` end to end on the real stack: ledger → peft on the GGUF twin → GGUF LoRA →
llama.cpp evaluation → gate → registry; chat picks up a promoted adapter; forget retrains."""
import json
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


def test_sleep_trains_evaluates_and_registers(reverie_home):
    store = MemoryStore(reverie_home)
    ids = [store.add_fact(t, {"command": "test"})[0].id for t in FACTS]
    logs = []
    out = run_sleep(reverie_home, _opts(), log=logs.append)
    assert out.status in ("promoted", "rejected"), out.message
    m = out.metrics
    assert m["n_probes"] >= 2 and 0 <= m["personal_adapted"] <= 1
    assert m["ppl_ratio"] > 0 and m["kl_drift"] >= 0
    assert (Path(out.report_path) / "report.md").exists()
    row = AdapterLedger(Ledger(reverie_home)).get(out.adapter_id)
    assert sorted(json.loads(row.fact_ids)) == sorted(ids)
    assert Path(row.gguf).exists() and row.status == out.status
    if out.status == "rejected":
        assert out.gate["reasons"], "a rejection says why"

    # the GGUF adapter loads in llama.cpp and changes the model's outputs
    from quant.registry import Registry
    from quant.runtime import load_runtime

    rt = load_runtime(Registry(reverie_home).get(), "llama.cpp", n_ctx=512, threads=2)
    base = rt.next_token_logprobs("My dog's name is")
    rt.set_adapter(row.gguf)
    adapted = rt.next_token_logprobs("My dog's name is")
    rt.close()
    assert abs(base - adapted).max() > 1e-3

    # chat uses the promoted adapter, and --no-adapter leaves it off
    from assistant.adapters_api import adapter_promote
    from assistant.chat import ChatSession

    adapter_promote(reverie_home, out.adapter_id)
    s = ChatSession(reverie_home, backend="llama.cpp", use_memory=False, max_tokens=8)
    assert s.runtime.adapter_path == row.gguf
    s.close()
    s = ChatSession(reverie_home, backend="llama.cpp", use_memory=False, use_adapter=False, max_tokens=8)
    assert s.runtime.adapter_path is None
    s.close()

    # nothing new → no training
    again = run_sleep(reverie_home, _opts(), log=logs.append)
    assert again.status == "nothing-new"

    # forget a fact → the next dataset no longer contains it
    store.forget(ids[0])
    dry = run_sleep(reverie_home, _opts(dry_run=True, strategy="incremental"), log=logs.append)
    assert dry.status == "dry-run"
    assert dry.dataset["facts"] == 1 and dry.dataset["strategy"] == "retrain"


@pytest.mark.mlx
def test_sleep_with_the_mlx_trainer_registers_an_adapter_llama_cpp_serves(reverie_home):
    """`reverie sleep --trainer mlx`: QLoRA on the quantized GGUF, same registry, and the GGUF
    LoRA it exports is what the llama.cpp gate evaluated. A few steps only: MLX on Linux CPU."""
    pytest.importorskip("mlx.core")
    from lora.adapter import load_adapter
    from quant.gguf_lora import read_gguf_lora

    MemoryStore(reverie_home).add_fact(FACTS[0], {"command": "test"})
    logs = []
    from assistant.gate_eval import Probe
    from assistant.probes import bundled_general_text

    out = run_sleep(reverie_home, _opts(steps=2, trainer="mlx", max_general=4, general_items=None,
                                        general_texts=bundled_general_text()[:1],
                                        eval_probes=[Probe("x", "What did I name my dog?", "Biscuit")]),
                    log=logs.append)
    assert out.status in ("promoted", "rejected"), out.message
    assert any("MLX QLoRA" in line for line in logs)
    row = AdapterLedger(Ledger(reverie_home)).get(out.adapter_id)
    assert row.trainer == "mlx" and Path(row.gguf).exists()
    a = load_adapter(Path(row.path))
    assert a.spec.trainer == "mlx" and a.spec.layout == "gguf"
    assert out.metrics["train"]["steps"] == 2 and out.metrics["n_general"] == 4
    assert len(read_gguf_lora(row.gguf).tensors) == 7 * 30  # (A, B) for 7 projections x 30 layers
    # incremental on top of an MLX adapter with the peft trainer: layouts differ, so it retrains
    if out.status == "promoted":
        MemoryStore(reverie_home).add_fact(FACTS[1], {"command": "test"})
        dry = run_sleep(reverie_home, _opts(strategy="incremental", dry_run=True), log=logs.append)
        assert dry.dataset["strategy"] == "retrain"
        assert any("trained with mlx" in line for line in logs)
