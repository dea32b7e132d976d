"""quant.quantize: type table, llama.cpp quantizer, and HF safetensors (llama) -> GGUF."""
from __future__ import annotations

import numpy as np
import pytest

from quant import gguf_io
from quant.errors import QuantError
from quant.gguf_lora import rope_permute
from quant.quantize import check_type, convert_hf_dir, default_out, quantize
from test_quant_fixtures import default_model_path, write_tiny_model


def test_check_type():
    assert check_type("q8_0") == "Q8_0"
    assert check_type("same", allow_same=True) == "same"
    with pytest.raises(QuantError, match="unknown quantization type 'same'"):
        check_type("same")
    with pytest.raises(QuantError, match="Q4_K_M, Q8_0, Q4_1, F16"):
        check_type("Q2")


def test_default_out_drops_old_type(tmp_path):
    assert default_out(tmp_path / "m.Q4_1.gguf", "Q8_0") == tmp_path / "m.Q8_0.gguf"
    assert default_out(tmp_path / "m-f16.gguf", "Q4_K_M") == tmp_path / "m.Q4_K_M.gguf"


def test_rope_permute_interleaves_halves_per_head():
    # 2 heads of dim 4: HF rows [h0: a0 a1 b0 b1 | h1: ...] -> llama.cpp [a0 b0 a1 b1 | ...]
    w = np.arange(8, dtype=np.float32)[:, None]
    assert rope_permute(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_quantize_tiny_model_with_llama_cpp(tmp_path):
    exact = write_tiny_model(tmp_path / "tiny.gguf")
    r = quantize(tmp_path / "tiny.gguf", "Q8_0", tmp_path / "tiny.Q8_0.gguf")
    assert r.type == "Q8_0" and r.source_type == "Q8_0"
    assert r.notes  # a quantized source goes through F32 first, and says so
    out = gguf_io.open_gguf(tmp_path / "tiny.Q8_0.gguf")
    assert gguf_io.file_type_name(out) == "Q8_0"
    for t in out.tensors:
        np.testing.assert_allclose(gguf_io.dequantize(t), exact[t.name], atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.Q8_0.gguf", "tiny.gguf"]


def test_quantize_bad_inputs(tmp_path):
    write_tiny_model(tmp_path / "tiny.gguf")
    with pytest.raises(QuantError, match="does not exist"):
        quantize(tmp_path / "missing.gguf", "Q8_0")
    with pytest.raises(QuantError, match="unknown quantization type"):
        quantize(tmp_path / "tiny.gguf", "Q7")
    with pytest.raises(QuantError, match="is the source"):
        quantize(tmp_path / "tiny.gguf", "Q8_0", tmp_path / "tiny.gguf")
    (tmp_path / "file").write_text("x")
    with pytest.raises(QuantError, match="cannot write"):
        quantize(tmp_path / "tiny.gguf", "Q8_0", tmp_path / "file" / "o.gguf")
    (tmp_path / "hf").mkdir()
    with pytest.raises(QuantError, match="no config.json"):
        quantize(tmp_path / "hf", "Q8_0", tmp_path / "o.gguf")
    (tmp_path / "hf" / "config.json").write_text('{"architectures": ["GPT2LMHeadModel"]}')
    with pytest.raises(QuantError, match="supports LlamaForCausalLM"):
        quantize(tmp_path / "hf", "Q8_0", tmp_path / "o.gguf")


def _two_block_default_model(path):
    """The default model cut to its first two blocks, F32 (small enough for transformers to
    load quickly, still the real vocabulary, tokenizer and q/k layout)."""
    from gguf import GGUFValueType, GGUFWriter

    r = gguf_io.open_gguf(default_model_path())
    keep = [t for t in r.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < 2]
    w = GGUFWriter(str(path), "llama")
    gguf_io.copy_metadata(r, w, file_type=0, skip=("llama.block_count",))
    w.add_key_value("llama.block_count", 2, GGUFValueType.UINT32)
    for t in keep:
        w.add_tensor(t.name, gguf_io.dequantize(t))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return path


@pytest.mark.slow
def test_hf_safetensors_round_trip(tmp_path):
    """GGUF -> transformers model (dequantized, q/k un-permuted: quant.gguf_torch, which
    test_lora_parity pins bit for bit to transformers' own GGUF load) -> save_pretrained -> our
    converter -> GGUF: same weights and same logits in llama.cpp as the original."""
    from quant.gguf_torch import load_twin
    from quant.quality import Scorer

    src = _two_block_default_model(tmp_path / "two.gguf")
    model, tok = load_twin(src)
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    del model

    out = convert_hf_dir(tmp_path / "hf", tmp_path / "back.gguf", "F32")
    a = {t.name: gguf_io.dequantize(t) for t in gguf_io.open_gguf(src).tensors}
    b = {t.name: gguf_io.dequantize(t) for t in gguf_io.open_gguf(out).tensors}
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], atol=1e-6, err_msg=name)
    meta = gguf_io.open_gguf(out)
    orig = gguf_io.open_gguf(src)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.eos_token_id", "llama.rope.freq_base", "llama.attention.head_count_kv"):
        assert gguf_io.field_value(meta, key) == gguf_io.field_value(orig, key), key

    text = "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n"
    lps = []
    for p in (src, out):
        sc = Scorer(p, threads=1)
        lps.append(sc.logprobs(sc.rt.tokenize(text, True)))
        sc.close()
    np.testing.assert_allclose(lps[1], lps[0], atol=1e-3)
