"""quant.gguf_lora, the GGUF LoRA format's one home (names, q/k rows, read, write, fit), and
assistant.quant_api.export_adapter_gguf, which writes one of lora's adapter directories with it."""
import json

import numpy as np
import pytest

from assistant.quant_api import export_adapter_gguf as export_gguf
from lora.adapter import Provenance, key, save_adapter
from quant.errors import QuantError
from quant.gguf_lora import (base_tensor_name, check_fits, read_gguf_lora, rope_permute,
                             rope_unpermute, to_gguf_rows, write_lora_gguf)

from tests.test_lora_adapter import DIMS, make


def read_gguf_adapter(path):
    """(KVs, tensor name -> numpy shape), what these tests assert on."""
    lo = read_gguf_lora(path)
    return lo.metadata, lo.shapes()


permute_rows = rope_permute


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
    with pytest.raises(QuantError, match="dtype"):
        export_gguf(tmp_path / "a", tmp_path / "x.gguf", dtype="q4")
    assert not (tmp_path / "x.gguf").exists()
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(QuantError):
        read_gguf_adapter(tmp_path / "bad.gguf")


def test_permutation_matches_the_hf_to_gguf_rule():
    # 2 heads of dim 4: HF rows [h0: 0 1 2 3 | h1: 4 5 6 7] -> GGUF interleaves each head's halves
    rows = np.arange(8, dtype=np.float32)[:, None]
    assert permute_rows(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert rope_unpermute(permute_rows(rows, 2), 2)[:, 0].tolist() == list(range(8))
    spec, w = make()
    pairs = {base_tensor_name(0, m): (w[key(0, m, "a")], w[key(0, m, "b")]) for m in DIMS}
    g = to_gguf_rows(pairs, "llama", spec.n_head, spec.n_head_kv)
    np.testing.assert_array_equal(g["blk.0.attn_q.weight"][1], permute_rows(w[key(0, "q_proj", "b")], 2))
    np.testing.assert_array_equal(g["blk.0.attn_k.weight"][1], permute_rows(w[key(0, "k_proj", "b")], 1))
    np.testing.assert_array_equal(g["blk.0.attn_v.weight"][1], w[key(0, "v_proj", "b")])
    np.testing.assert_array_equal(g["blk.0.attn_q.weight"][0], w[key(0, "q_proj", "a")])
    assert to_gguf_rows(pairs, "gemma3", 2, 1)["blk.0.attn_q.weight"][1] is w[key(0, "q_proj", "b")]


def test_mlx_adapters_are_trained_on_gguf_rows_and_exported_as_they_are(tmp_path):
    from gguf import GGUFReader

    spec, w = make()
    spec.layout = "gguf"  # MLX adapters are trained on the GGUF layout: nothing to permute
    save_adapter(tmp_path / "a", w, spec)
    r = GGUFReader(str(export_gguf(tmp_path / "a", tmp_path / "a.gguf")))
    t = {x.name: np.asarray(x.data) for x in r.tensors}
    np.testing.assert_array_equal(t["blk.0.attn_q.weight.lora_b"], w[key(0, "q_proj", "b")])


def test_read_write_round_trip_and_the_fit_check(tmp_path):
    rng = np.random.default_rng(0)
    pairs = {"blk.0.attn_q.weight": (rng.normal(size=(2, 6)).astype(np.float32),
                                     rng.normal(size=(8, 2)).astype(np.float32))}
    p = write_lora_gguf(tmp_path / "x.gguf", "llama", pairs, 4.0, {"reverie.trainer": "peft", "reverie.rank": 2})
    lo = read_gguf_lora(p)
    assert lo.arch == "llama" and lo.alpha == 4.0 and lo.metadata["reverie.rank"] == 2
    np.testing.assert_array_equal(lo.tensors["blk.0.attn_q"][1], pairs["blk.0.attn_q.weight"][1])
    assert lo.scale("blk.0.attn_q") == 2.0
    check_fits(lo, {"blk.0.attn_q.weight": (8, 6)}, p, "m", arch="llama")
    with pytest.raises(QuantError, match=r"does not fit m: blk.0.attn_q adapts a \(8, 6\) weight"):
        check_fits(lo, {"blk.0.attn_q.weight": (8, 7)}, p, "m")
    with pytest.raises(QuantError, match="no matching tensor"):
        check_fits(lo, {}, p, "m")
    with pytest.raises(QuantError, match="architecture 'llama'.*is 'gemma3'"):
        check_fits(lo, {"blk.0.attn_q.weight": (8, 6)}, p, "m", arch="gemma3")
    nan = write_lora_gguf(tmp_path / "nan.gguf", "llama", {"blk.0.attn_q.weight": (
        np.full((2, 6), np.nan, np.float32), np.zeros((8, 2), np.float32))}, 4.0)
    with pytest.raises(QuantError, match="NaN"):
        read_gguf_lora(nan)
