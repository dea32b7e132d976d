"""quant.merge: LoRA deltas exactly as llama.cpp applies them, validation, real-model parity."""
from __future__ import annotations

import numpy as np
import pytest

from quant import gguf_io
from quant.errors import QuantError
from quant.gguf_lora import read_gguf_lora as read_adapter
from quant.gguf_lora import write_lora_gguf
from quant.merge import merge, random_lora
from test_quant_fixtures import N_EMBD, N_FF, default_model_path, write_tiny_model


def _adapter(tmp_path, arch="llama", rank=4, alpha=8.0, seed=1, name="ad.gguf", **shape_over):
    rng = np.random.default_rng(seed)
    pairs = {}
    for tname, (n_out, n_in) in {"blk.0.attn_q.weight": (N_EMBD, N_EMBD),
                                 "blk.0.ffn_down.weight": (N_EMBD, N_FF)}.items():
        n_in = shape_over.get("n_in", n_in)
        pairs[tname] = (rng.normal(0, 0.3, (rank, n_in)).astype(np.float32),
                        rng.normal(0, 0.3, (n_out, rank)).astype(np.float32))
    return write_lora_gguf(tmp_path / name, arch, pairs, alpha), pairs


def test_merge_adds_scaled_delta_and_nothing_else(tmp_path):
    exact = write_tiny_model(tmp_path / "base.gguf")
    ad, pairs = _adapter(tmp_path, rank=4, alpha=8.0)
    r = merge(tmp_path / "base.gguf", ad, tmp_path / "m.gguf", "F32")
    assert r.type == "F32" and r.merged_tensors == 2
    out = dict(gguf_io.iter_dequantized(gguf_io.open_gguf(tmp_path / "m.gguf")))
    scale = 8.0 / 4
    for name, w in exact.items():
        if name in pairs:
            a, b = pairs[name]
            np.testing.assert_allclose(out[name], w + scale * (b @ a), rtol=1e-5, atol=1e-5)
            assert not np.allclose(out[name], w)
        else:
            np.testing.assert_array_equal(out[name], w)
    meta = gguf_io.open_gguf(tmp_path / "m.gguf")
    assert gguf_io.field_value(meta, "reverie.merged_adapter").endswith("ad.gguf")
    assert gguf_io.field_value(meta, "tokenizer.ggml.tokens") == gguf_io.field_value(
        gguf_io.open_gguf(tmp_path / "base.gguf"), "tokenizer.ggml.tokens")


def test_alpha_zero_means_scale_one(tmp_path):
    exact = write_tiny_model(tmp_path / "base.gguf")
    ad, pairs = _adapter(tmp_path, alpha=0.0)
    merge(tmp_path / "base.gguf", ad, tmp_path / "m.gguf", "F32")
    out = dict(gguf_io.iter_dequantized(gguf_io.open_gguf(tmp_path / "m.gguf")))
    a, b = pairs["blk.0.attn_q.weight"]
    np.testing.assert_allclose(out["blk.0.attn_q.weight"], exact["blk.0.attn_q.weight"] + b @ a,
                               rtol=1e-5, atol=1e-5)


def test_wrong_architecture_is_refused_before_writing(tmp_path):
    write_tiny_model(tmp_path / "base.gguf")
    ad, _ = _adapter(tmp_path, arch="gemma3")
    with pytest.raises(QuantError, match="architecture 'gemma3'.*is 'llama'"):
        merge(tmp_path / "base.gguf", ad, tmp_path / "out" / "m.gguf", "Q8_0")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_shape_mismatch_lists_tensors(tmp_path):
    write_tiny_model(tmp_path / "base.gguf")
    ad, _ = _adapter(tmp_path, n_in=16)
    with pytest.raises(QuantError, match="does not fit base.*attn_q.*ffn_down"):
        merge(tmp_path / "base.gguf", ad, tmp_path / "m.gguf", "F32")


def test_not_an_adapter_and_bad_type(tmp_path):
    write_tiny_model(tmp_path / "base.gguf")
    with pytest.raises(QuantError, match="not a GGUF LoRA adapter"):
        read_adapter(tmp_path / "base.gguf")
    ad, _ = _adapter(tmp_path)
    with pytest.raises(QuantError, match="unknown quantization type 'Q3_X'.*Q4_K_M.*same"):
        merge(tmp_path / "base.gguf", ad, tmp_path / "m.gguf", "Q3_X")
    with pytest.raises(QuantError, match="does not exist"):
        merge(tmp_path / "base.gguf", tmp_path / "nope.gguf", tmp_path / "m.gguf", "F32")


def test_half_pair_is_malformed(tmp_path):
    from gguf import GGUFValueType, GGUFWriter

    w = GGUFWriter(str(tmp_path / "half.gguf"), "llama")
    w.add_type("adapter")
    w.add_key_value("adapter.type", "lora", GGUFValueType.STRING)
    w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((4, N_EMBD), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(QuantError, match="only lora_a"):
        read_adapter(tmp_path / "half.gguf")


# --- real model --------------------------------------------------------------------------------
def _logprobs(path, lora=None):
    from quant.quality import Scorer

    sc = Scorer(path, threads=1, lora=lora)
    ids = sc.rt.tokenize("The library opened at nine, and the queue began forming early.", True)
    lp = sc.logprobs(ids)
    sc.close()
    return lp


def _kl(p, q):
    return float((np.exp(p) * (p - q)).sum(-1).mean())


@pytest.mark.slow
def test_zero_adapter_merge_reproduces_base(tmp_path):
    """Zero lora_b, merged at the base's own type (dequantize -> F16 -> llama.cpp Q4_1)."""
    base = default_model_path()
    arch, pairs = random_lora(base, rank=4, zero=True, targets=("attn_q", "ffn_up"))
    ad = write_lora_gguf(tmp_path / "zero.gguf", arch, pairs, 8.0)
    r = merge(base, ad, tmp_path / "merged.gguf", "same")
    assert r.type == "Q4_1"
    assert abs(r.size_bytes - base.stat().st_size) < 0.01 * base.stat().st_size
    kl = _kl(_logprobs(base), _logprobs(tmp_path / "merged.gguf"))
    assert kl < 0.01, kl


@pytest.mark.slow
def test_merged_f32_matches_runtime_lora(tmp_path):
    """A random adapter merged (F32, no requantization) behaves like llama.cpp applying it at
    run time: this pins the A/B orientation and the alpha/rank scale."""
    base = default_model_path()
    arch, pairs = random_lora(base, rank=8, std_b=0.02, seed=3)
    ad = write_lora_gguf(tmp_path / "rand.gguf", arch, pairs, 16.0)
    merge(base, ad, tmp_path / "merged.gguf", "F32")
    runtime = _logprobs(base, lora=str(ad))
    effect = _kl(runtime, _logprobs(base))
    residual = _kl(runtime, _logprobs(tmp_path / "merged.gguf"))
    assert effect > 0.02, effect  # the adapter really changes the model
    assert residual < 0.25 * effect, (residual, effect)


@pytest.mark.slow
def test_merged_f32_equals_runtime_lora_on_the_f32_base(tmp_path, f32_default_model):
    """Like for like: the base dequantized to F32 + runtime LoRA vs the merged F32 model. Same
    weights and f32 matmuls on both sides, so the logits match to float rounding; a wrong scale,
    orientation or tensor mapping in merge would show here as a large difference."""
    base = default_model_path()
    arch, pairs = random_lora(base, rank=8, std_b=0.02, seed=3)
    ad = write_lora_gguf(tmp_path / "rand.gguf", arch, pairs, 16.0)
    f32 = f32_default_model  # gguf_io.write_unquantized(base, ..., "F32"), written once a session
    merge(base, ad, tmp_path / "merged.gguf", "F32")
    runtime = _logprobs(f32, lora=str(ad))
    merged = _logprobs(tmp_path / "merged.gguf")
    assert _kl(runtime, _logprobs(f32)) > 0.02  # the adapter really changes the model
    assert (runtime.argmax(-1) == merged.argmax(-1)).all()
    assert _kl(runtime, merged) < 1e-4
