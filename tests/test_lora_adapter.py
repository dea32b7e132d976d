import json

import numpy as np
import pytest

from lora.adapter import (AdapterSpec, Provenance, from_mlx_weights, from_peft_state_dict, key,
                          load_adapter, save_adapter)
from lora.errors import AdapterMismatch, LoraError

DIMS = {"q_proj": [8, 6], "k_proj": [4, 6], "v_proj": [4, 6]}


def make(rank=2, layers=2, seed=0):
    rng = np.random.default_rng(seed)
    spec = AdapterSpec(trainer="peft", rank=rank, alpha=4.0, targets=list(DIMS), n_layers=layers,
                       base_dims=DIMS, n_head=2, n_head_kv=1, train_config={"rank": rank})
    w = {}
    for layer in range(layers):
        for mod, (o, i) in DIMS.items():
            w[key(layer, mod, "a")] = rng.standard_normal((rank, i)).astype(np.float32)
            w[key(layer, mod, "b")] = rng.standard_normal((o, rank)).astype(np.float32)
    return spec, w


def test_round_trip(tmp_path):
    spec, w = make()
    prov = Provenance(base_model_sha256="ab" * 32, dataset_hash="d" * 64, ledger_snapshot="s1",
                      fact_ids=["f1", "f2"], metrics={"recall": 0.5})
    save_adapter(tmp_path / "a", w, spec, prov)
    a = load_adapter(tmp_path / "a", base_model_sha256="ab" * 32, base_dims=DIMS, n_layers=2)
    assert a.provenance.fact_ids == ["f1", "f2"] and a.provenance.created
    assert a.spec.train_config == {"rank": 2}
    for k in w:
        np.testing.assert_array_equal(a.weights[k], w[k])
    assert not [p for p in (tmp_path).iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_every_mismatch_is_listed_at_once(tmp_path):
    spec, w = make()
    save_adapter(tmp_path / "a", w, spec, Provenance(base_model_sha256="aa" * 32))
    from safetensors.numpy import save_file

    del w[key(1, "v_proj", "b")]
    w[key(0, "q_proj", "a")] = np.zeros((3, 6), np.float32)
    save_file(w, str(tmp_path / "a" / "adapter.safetensors"))
    with pytest.raises(AdapterMismatch) as e:
        load_adapter(tmp_path / "a", base_model_sha256="bb" * 32, n_layers=3,
                     base_dims={**DIMS, "k_proj": [5, 6]})
    probs = e.value.problems
    text = " ".join(probs)
    assert "missing tensor layers.1.v_proj.lora_b" in text
    assert "shape mismatch for layers.0.q_proj.lora_a" in text
    assert "base model sha256" in text
    assert "k_proj was trained for base shape" in text
    assert "3" in text and "layers" in text
    assert len(probs) == 5
    assert "reverie" in str(e.value)  # the message says how to fix it


def test_corrupt_files(tmp_path):
    spec, w = make()
    save_adapter(tmp_path / "a", w, spec)
    (tmp_path / "a" / "adapter_config.json").write_text("{nope")
    (tmp_path / "a" / "adapter.safetensors").write_bytes(b"garbage")
    with pytest.raises(AdapterMismatch) as e:
        load_adapter(tmp_path / "a")
    assert len(e.value.problems) == 2
    with pytest.raises(LoraError, match="does not exist"):
        load_adapter(tmp_path / "missing")


def test_save_refuses_inconsistent_weights_and_keeps_the_old_adapter(tmp_path):
    spec, w = make()
    save_adapter(tmp_path / "a", w, spec, Provenance(dataset_hash="old"))
    bad = dict(w)
    bad[key(0, "q_proj", "b")] = np.zeros((7, 2), np.float32)
    with pytest.raises(AdapterMismatch):
        save_adapter(tmp_path / "a", bad, spec, Provenance(dataset_hash="new"))
    assert load_adapter(tmp_path / "a").provenance.dataset_hash == "old"


def test_nan_weights_are_rejected(tmp_path):
    spec, w = make()
    w[key(0, "q_proj", "a")][0, 0] = np.nan
    save_adapter(tmp_path / "a", w, spec)
    with pytest.raises(AdapterMismatch, match="NaN"):
        load_adapter(tmp_path / "a")


def test_peft_and_mlx_names():
    a, b = np.ones((2, 6), np.float32), np.ones((8, 2), np.float32)
    peft = {"base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight": a,
            "base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight": b}
    assert set(from_peft_state_dict(peft)) == {key(3, "q_proj", "a"), key(3, "q_proj", "b")}
    mlx = {"model.layers.0.mlp.up_proj.lora_a": a.T, "model.layers.0.mlp.up_proj.lora_b": b.T}
    out = from_mlx_weights(mlx)
    assert out[key(0, "up_proj", "a")].shape == (2, 6) and out[key(0, "up_proj", "b")].shape == (8, 2)
    with pytest.raises(LoraError):
        from_mlx_weights({"x": a})
