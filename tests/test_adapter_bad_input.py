"""Bad input around adapters and the schedule: a corrupt adapter file, an adapter for another base
model, bad schedule options → a clear message, exit 1, no traceback, and nothing lost (the
promoted adapter, its files and the ledger are as they were)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from lora.adapter import AdapterSpec, Provenance, key, save_adapter
from assistant.quant_api import export_adapter_gguf as export_gguf
from memory.adapters_ledger import AdapterLedger
from memory.ledger import Ledger

runner = CliRunner()
MODEL = "smollm2-135m"
# the default model's real shapes, so a healthy adapter here would load in llama.cpp
SMOL = {"q_proj": [576, 576], "v_proj": [192, 576]}


def _model_sha(home: Path) -> str:
    from common.files import cached_sha256
    from quant.registry import Registry, sha256_file

    home.mkdir(parents=True, exist_ok=True)
    return cached_sha256(home, Path(Registry(home).get(MODEL).path), sha256_file)


def _adapter(home: Path, vid: str, base_sha: str, dims=SMOL, n_layers=30, seed=0):
    """A small real adapter (2 of 7 projections, rank 2) registered as a candidate."""
    rng = np.random.default_rng(seed)
    w = {}
    for layer in range(n_layers):
        for mod, (o, i) in dims.items():
            w[key(layer, mod, "a")] = rng.normal(0, 0.01, (2, i)).astype(np.float32)
            w[key(layer, mod, "b")] = rng.normal(0, 0.01, (o, 2)).astype(np.float32)
    spec = AdapterSpec(trainer="peft", rank=2, alpha=4.0, targets=list(dims), n_layers=n_layers,
                       base_dims=dims, n_head=9 if dims == SMOL else 4, n_head_kv=3 if dims == SMOL else 1)
    d = save_adapter(home / "adapters" / vid, w, spec, Provenance(base_model_sha256=base_sha))
    g = export_gguf(d, d / "adapter.gguf")
    AdapterLedger(Ledger(home)).add(id=vid, model=MODEL, base_sha256=base_sha, path=str(d), gguf=str(g))
    return d


def _state(home: Path) -> dict:
    """Everything that must survive bad input: ledger rows and every adapter file's bytes."""
    led = AdapterLedger(Ledger(home))
    files = {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((home / "adapters").rglob("*")) if p.is_file()}
    return {"rows": [(r.id, r.status) for r in led.list()], "files": files}


@pytest.fixture
def promoted(reverie_home):
    sha = _model_sha(reverie_home)
    _adapter(reverie_home, "v001-good", sha)
    AdapterLedger(Ledger(reverie_home)).promote("v001-good")
    return sha


@pytest.mark.parametrize("damage, msg", [
    ("weights", "unreadable"),
    ("config", "not valid JSON"),
    ("gguf", "GGUF"),
    ("gguf_missing", "missing"),
    ("gguf_other", "does not match its adapter"),
])
def test_promoting_a_corrupt_adapter_exits_1_and_keeps_the_promoted_one(reverie_home, promoted, damage, msg):
    d = _adapter(reverie_home, "v002-bad", promoted, seed=1)
    if damage == "weights":
        (d / "adapter.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    elif damage == "config":
        (d / "adapter_config.json").write_text("{nope")
    elif damage == "gguf":
        g = d / "adapter.gguf"
        g.write_bytes(g.read_bytes()[:1000])
    elif damage == "gguf_other":  # a healthy GGUF LoRA, but not this directory's (one pair)
        from quant.gguf_lora import write_lora_gguf

        write_lora_gguf(d / "adapter.gguf", "llama", {"blk.0.attn_q.weight": (
            np.zeros((2, 576), np.float32), np.zeros((576, 2), np.float32))}, 4.0)
    else:
        (d / "adapter.gguf").unlink()
    before = _state(reverie_home)
    r = runner.invoke(app, ["adapters", "promote", "v002"])
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and msg in r.output and "Traceback" not in r.output
    assert _state(reverie_home) == before
    assert AdapterLedger(Ledger(reverie_home)).promoted(MODEL).id == "v001-good"


def test_promoting_an_adapter_for_another_base_model_exits_1(reverie_home, promoted):
    # trained on another file: its provenance and ledger row name a different base sha256
    _adapter(reverie_home, "v002-other", "f" * 64, seed=1)
    # and one whose shapes belong to another architecture (gemma3-270m's 640-wide layers)
    _adapter(reverie_home, "v003-shape", promoted, dims={"q_proj": [1024, 640]}, n_layers=18, seed=2)
    before = _state(reverie_home)
    for vid, msg in (("v002", "another base model"), ("v003", "640")):
        r = runner.invoke(app, ["adapters", "promote", vid])
        assert r.exit_code == 1, r.output
        assert msg in r.output and "Traceback" not in r.output, r.output
    assert _state(reverie_home) == before
    assert AdapterLedger(Ledger(reverie_home)).promoted(MODEL).id == "v001-good"


@pytest.mark.slow  # loads the real model through a chat session (~30 s on a busy 2-core box)
@pytest.mark.parametrize("damage", ["truncated", "other_base"])
def test_chat_with_a_broken_promoted_adapter_exits_1_and_says_how_to_go_on(reverie_home, promoted, damage):
    """The promoted file broke after promotion (disk damage, a hand edit): `reverie ask` stops
    with a message naming rollback and --no-adapter, and --no-adapter still answers. (Before the
    check in quant.gguf_lora, llama.cpp loaded both files silently and segfaulted on the first
    evaluation.)"""
    led = AdapterLedger(Ledger(reverie_home))
    row = led.promoted(MODEL)
    g = Path(row.gguf)
    if damage == "truncated":
        g.write_bytes(g.read_bytes()[:5000])
    else:  # a GGUF LoRA whose tensors do not fit this model
        d = _adapter(reverie_home, "v009-x", promoted, dims={"q_proj": [1024, 640]}, n_layers=18)
        g.write_bytes((d / "adapter.gguf").read_bytes())
    before = _state(reverie_home)
    r = runner.invoke(app, ["ask", "hi", "--no-memory", "--max-tokens", "2"])
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    assert "rollback" in r.output and "--no-adapter" in r.output, r.output
    assert _state(reverie_home) == before
    r = runner.invoke(app, ["ask", "hi", "--no-memory", "--no-adapter", "--max-tokens", "2"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("at", ["25:99", "24:00", "3pm", "", "12:5", "-1:00", "03:60", "3:00:00"])
def test_bad_schedule_time_exits_1_and_installs_nothing(reverie_home, at, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(
        AssertionError("crontab must not be touched")))
    r = runner.invoke(app, ["schedule", "install", "--at", at])
    assert r.exit_code == 1, r.output
    assert "HH:MM" in r.output and "Traceback" not in r.output
    assert calls == []


@pytest.mark.parametrize("args", [["schedule", "install", "--at"], ["schedule", "install", "--every", "day"]])
def test_malformed_schedule_arguments_are_usage_errors(args):
    r = runner.invoke(app, args)
    assert r.exit_code != 0 and "Traceback" not in r.output
