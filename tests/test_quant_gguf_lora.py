import json

import numpy as np
import pytest

from lora.adapter import Provenance, load_adapter, permute_rows, save_adapter
from lora.errors import LoraError
from lora.gguf_export import export_gguf, read_gguf_adapter

from tests.test_lora_adapter import DIMS, make


def test_names_shapes_and_kvs(tmp_path):
    spec, w = make(rank=2, layers=2)
    prov = Provenance(base_model_sha256="c" * 64, dataset_hash="d" * 64, fact_ids=["f1"])
    save_adapter(tmp_path / "a", w, spec, prov)
    out = export_gguf(tmp_path / "a", tmp_path / "a.gguf")
    kvs, shapes = read_gguf_adapter(out)
    assert kvs["general.architecture"] == "llama"
    assert kvs["general.type"] == "adapter"
    assert kvs["adapter.type"] == "lora"
    assert kvs["adapter.lora.alpha"] == pytest.approx(4.0)
    assert kvs["reverie.base_model_sha256"] == "c" * 64
    assert json.loads(kvs["reverie.fact_ids"]) == ["f1"]
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v"}
    expected = {}
    for layer in range(2):
        for mod, (o, i) in DIMS.items():
            expected[f"blk.{layer}.{names[mod]}.weight.lora_a"] = (2, i)
            expected[f"blk.{layer}.{names[mod]}.weight.lora_b"] = (o, 2)
    assert shapes == expected


def test_values_are_permuted_for_llama_q_and_k_only(tmp_path):
    from gguf import GGUFReader

    spec, w = make()
    save_adapter(tmp_path / "a", w, spec)
    r = GGUFReader(str(export_gguf(tmp_path / "a", tmp_path / "a.gguf")))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    np.testing.assert_array_equal(t["blk.1.attn_q.weight.lora_b"], permute_rows(w["layers.1.q_proj.lora_b"], 2))
    np.testing.assert_array_equal(t["blk.1.attn_k.weight.lora_b"], permute_rows(w["layers.1.k_proj.lora_b"], 1))
    np.testing.assert_array_equal(t["blk.1.attn_v.weight.lora_b"], w["layers.1.v_proj.lora_b"])
    np.testing.assert_array_equal(t["blk.0.attn_q.weight.lora_a"], w["layers.0.q_proj.lora_a"])


def test_gemma_is_not_permuted_and_f16(tmp_path):
    from gguf import GGUFReader

    spec, w = make()
    spec.arch = "gemma3"
    save_adapter(tmp_path / "a", w, spec)
    out = export_gguf(tmp_path / "a", tmp_path / "a.gguf", dtype="f16")
    r = GGUFReader(str(out))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    assert t["blk.0.attn_q.weight.lora_b"].dtype == np.float16
    np.testing.assert_allclose(t["blk.0.attn_q.weight.lora_b"], w["layers.0.q_proj.lora_b"], rtol=1e-3)
    assert read_gguf_adapter(out)[0]["general.architecture"] == "gemma3"


def test_bad_input(tmp_path):
    spec, w = make()
    save_adapter(tmp_path / "a", w, spec)
    with pytest.raises(LoraError, match="dtype"):
        export_gguf(tmp_path / "a", tmp_path / "x.gguf", dtype="q4")
    assert not (tmp_path / "x.gguf").exists()
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(LoraError):
        read_gguf_adapter(tmp_path / "bad.gguf")
