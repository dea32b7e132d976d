"""MLX runtime and GGUF->MLX loader: exact repacking, tokenizer parity, real-model behaviour.

The real-model tests share one MLX and one llama.cpp runtime on the default SmolLM2 GGUF (module
fixtures): MLX on a Linux CPU is slow, so generations are capped at a few tokens.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from quant.chat_format import CHATML
from quant.errors import BackendUnavailable, QuantError
from quant.registry import ModelInfo, Registry
from quant.runtime import GenerationConfig

pytest.importorskip("mlx.core")
pytestmark = pytest.mark.mlx


def _info(path: Path) -> ModelInfo:
    return ModelInfo(name=path.stem, path=str(path), source="path", arch="llama")


# --- fast tests: no real model -----------------------------------------------------------------
def _write_gguf(path: Path, tensors: dict, vocab: bool = True, arch: str = "llama") -> None:
    """A small GGUF from {name: (array, ggml type or None)}; raw-typed arrays are block bytes."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_feed_forward_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if vocab:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        toks = ["a", "b", "c", "d", "e", "ab", "cd", "Ġ", "Ġa", "<|im_start|>", "<|im_end|>"]
        toks += [f"z{i}" for i in range(32 - len(toks))]
        w.add_token_list(toks)
        w.add_token_types([3 if t.startswith("<|") else 1 for t in toks])
        w.add_token_merges(["a b", "c d", "Ġ a"])
        w.add_bos_token_id(9)
        w.add_eos_token_id(10)
        w.add_add_bos_token(False)
    for name, (arr, qtype) in tensors.items():
        if qtype is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _tiny_llama(path: Path, seed: int = 0) -> None:
    """A one-block llama mixing Q8_0, Q4_0, Q4_1, Q5_0 and F32 weights."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": ((32, 64), T.Q8_0), "blk.0.attn_q.weight": ((64, 64), T.Q4_0),
              "blk.0.attn_k.weight": ((32, 64), T.Q5_0), "blk.0.attn_v.weight": ((32, 64), T.Q8_0),
              "blk.0.attn_output.weight": ((64, 64), T.Q4_1), "blk.0.ffn_gate.weight": ((128, 64), T.Q5_0),
              "blk.0.ffn_up.weight": ((128, 64), None), "blk.0.ffn_down.weight": ((64, 128), T.Q4_0),
              "blk.0.attn_norm.weight": ((64,), None), "blk.0.ffn_norm.weight": ((64,), None),
              "output_norm.weight": ((64,), None)}
    tensors = {}
    for name, (shape, qtype) in shapes.items():
        x = rng.normal(0, 0.2, shape).astype(np.float32)
        if name.endswith("norm.weight"):
            x = 1.0 + 0.1 * x
        tensors[name] = (quantize(x, qtype) if qtype is not None else x, qtype)
    _write_gguf(path, tensors)


def test_exact_repack_matches_gguf_dequantization(tmp_path):
    """Legacy block types become MLX triples that dequantize to exactly llama.cpp's weights."""
    import mlx.core as mx
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    from quant.gguf_mlx import load_tensor, read_gguf

    rng = np.random.default_rng(1)
    types = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
    tensors = {f"t{i}.weight": (quantize(rng.normal(0, 1, (8, 96)).astype(np.float32), q), q)
               for i, q in enumerate(types)}
    # a K-quant cannot be written from Python; random blocks with sane f16 scales are valid Q4_K
    k = rng.integers(0, 256, (8, 144), dtype=np.uint8)
    k[:, 0:4] = np.array([0.01, 0.02], dtype=np.float16).view(np.uint8)
    tensors["k.weight"] = (k, T.Q4_K)
    _write_gguf(tmp_path / "q.gguf", tensors, vocab=False)
    g = read_gguf(tmp_path / "q.gguf")
    for name, (_, q) in tensors.items():
        w, scales, biases, bits = load_tensor(g, name, requant_bits=8)
        got = np.array(mx.dequantize(w, scales, biases, group_size=32, bits=bits))
        ref = dequantize(g.raw(name), q).reshape(got.shape)
        if q == T.Q4_K:  # re-quantized at 8 bits: close, not exact
            assert np.abs(got - ref).max() < 0.01 * np.abs(ref).max()
        else:
            np.testing.assert_array_equal(got, ref, err_msg=q.name)


def test_tiny_model_logits_match_llama_cpp(tmp_path):
    """Tensor names, rope layout (GGUF's permuted q/k) and GQA agree with llama.cpp end to end."""
    from quant.gguf_mlx import load_gguf_model
    import mlx.core as mx
    from llama_cpp import Llama

    path = tmp_path / "tiny.gguf"
    _tiny_llama(path)
    model, tok, config = load_gguf_model(path)
    assert config["model_type"] == "llama" and config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    ids = [0, 3, 1, 2, 5, 8, 6, 4, 4, 7, 11, 12]
    ours = np.array(model(mx.array([ids]))[0])
    llm = Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=1)
    llm.eval(ids)
    ref = np.array(llm.scores[: len(ids)])
    llm.close()
    # llama.cpp quantizes activations to 8 bits for quantized matmuls: close, not identical
    assert np.abs(ours - ref).max() < 0.05 * np.abs(ref).max()
    assert (ours.argmax(-1) == ref.argmax(-1)).mean() >= 0.9


def test_tiny_tokenizer_special_tokens_and_bos(tmp_path):
    from quant.gguf_mlx import read_gguf
    from quant.mlx_tokenizer import GGUFTokenizer

    path = tmp_path / "tiny.gguf"
    _tiny_llama(path)
    tok = GGUFTokenizer.from_metadata(read_gguf(path).metadata)
    assert tok.encode("<|im_start|>ab cd<|im_end|>") == [9, 5, 7, 6, 10]  # merges applied, markup whole
    assert tok.encode("ab", add_bos=True) == tok.encode("ab", add_bos=False)  # add_bos_token False
    assert tok.eog_ids == {10}
    assert tok.decode(tok.encode("ab cd")) == "ab cd"
    assert tok.piece(9) == b""  # control tokens render as nothing, as in llama.cpp


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_header", "bad_magic", "empty"])
def test_corrupt_gguf_raises_quant_error(tmp_path, damage):
    from quant.mlx_runtime import MLXRuntime
    from quant.registry import _smollm2_path

    src = _smollm2_path().read_bytes() if damage.startswith("truncate") else b""
    bad = tmp_path / "bad.gguf"
    if damage == "truncate_half":
        bad.write_bytes(src[: len(src) // 2])
    elif damage == "truncate_header":
        bad.write_bytes(src[:200_000])
    elif damage == "bad_magic":
        bad.write_bytes(b"NOPE" + b"\0" * 4096)
    else:
        bad.write_bytes(b"")
    with pytest.raises(QuantError) as e:
        MLXRuntime(_info(bad), CHATML, 256, 2)
    assert str(bad) in str(e.value)


def test_unsupported_architecture_is_a_clear_error(tmp_path):
    from quant.gguf_mlx import mlx_config, read_gguf

    path = tmp_path / "x.gguf"
    _write_gguf(path, {"token_embd.weight": (np.zeros((32, 64), np.float32), None)}, arch="falcon")
    with pytest.raises(QuantError, match="llama.cpp"):
        mlx_config(read_gguf(path))


def test_missing_mlx_names_the_install_command(monkeypatch):
    from quant.gguf_mlx import require_mlx

    monkeypatch.setitem(sys.modules, "mlx", None)
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    with pytest.raises(BackendUnavailable, match=r'pip install "mlx\[cpu\]" mlx-lm'):
        require_mlx()


def test_gemma_names_and_config_mapping():
    from quant.gguf_mlx import mlx_name

    assert mlx_name("gemma3", "blk.3.ffn_norm.weight") == "model.layers.3.pre_feedforward_layernorm.weight"
    assert mlx_name("gemma3", "blk.0.post_ffw_norm.weight") == "model.layers.0.post_feedforward_layernorm.weight"
    assert mlx_name("gemma3", "blk.0.attn_q_norm.weight") == "model.layers.0.self_attn.q_norm.weight"
    assert mlx_name("llama", "blk.2.ffn_norm.weight") == "model.layers.2.post_attention_layernorm.weight"
    assert mlx_name("llama", "output.weight") == "lm_head.weight"
    assert mlx_name("llama", "rope_freqs.weight") is None


# --- the real default model ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def model_info(home):
    return Registry(home).get()


@pytest.fixture(scope="module")
def mlx_rt(model_info):
    from quant.runtime import load_runtime

    rt = load_runtime(model_info, backend="mlx", n_ctx=512)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def cpp_rt(model_info):
    from quant.runtime import load_runtime

    rt = load_runtime(model_info, backend="llama.cpp", n_ctx=512, threads=2)
    yield rt
    rt.close()


TEXTS = ["Hello world", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
         "  spaces\tand tabs\n\nnaïve café Tromsø 東京 🙂", "don't I'll 12345 3.14", ""]


@pytest.mark.slow
def test_tokenization_equals_llama_cpp(mlx_rt, cpp_rt):
    import llama_cpp

    for text in TEXTS:
        for bos in (True, False):
            assert mlx_rt.tokenize(text, add_bos=bos) == cpp_rt.tokenize(text, add_bos=bos), (text, bos)
        ids = cpp_rt.tokenize(text, add_bos=False)
        assert mlx_rt.detokenize(ids) == cpp_rt.detokenize(ids)
    assert mlx_rt.tokenize("<|im_start|>", add_bos=False) == [1]  # one id, not pieces of markup
    assert mlx_rt.tokenize("x", add_bos=True) == mlx_rt.tokenize("x", add_bos=False)  # SmolLM2: no BOS
    vocab = cpp_rt.llama._model.vocab
    eog = {i for i in range(cpp_rt.llama.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert mlx_rt.tokenizer.eog_ids == eog


@pytest.mark.slow
def test_chat_turn_answers_and_stops_at_end_of_turn(mlx_rt):
    text, stats = mlx_rt.chat([{"role": "user", "content": "What is the capital of France?"}],
                              GenerationConfig(max_tokens=16))
    assert "Paris" in text
    assert stats.finish_reason == "stop" and stats.completion_tokens < 16
    assert "<|im_end|>" not in text and "<|im_start|>" not in text


@pytest.mark.slow
def test_teacher_forced_greedy_agreement_with_llama_cpp(mlx_rt, cpp_rt):
    text = ("<|im_start|>user\nTell me about Paris.<|im_end|>\n<|im_start|>assistant\n"
            "Paris is the capital of France, known for the Eiffel Tower, museums and cafés.")
    ids = cpp_rt.tokenize(text)
    a, b = mlx_rt.logits(ids), cpp_rt.logits(ids)
    assert a.shape == b.shape == (len(ids), 49152) and a.dtype == np.float32
    agreement = float((a.argmax(-1) == b.argmax(-1)).mean())
    assert agreement >= 0.9, agreement


@pytest.mark.slow
def test_loglikelihood_prefers_the_true_capital(mlx_rt):
    paris = mlx_rt.loglikelihood("The capital of France is", " Paris")
    tromso = mlx_rt.loglikelihood("The capital of France is", " Tromsø")
    assert paris.logprob > tromso.logprob
    assert paris.is_greedy


def _write_adapter(d: Path, rank: int = 4, layers=(28, 29), v_out: int = 192, seed: int = 0) -> Path:
    import mlx.core as mx

    d.mkdir(parents=True, exist_ok=True)
    cfg = {"fine_tune_type": "lora", "num_layers": 2,
           "lora_parameters": {"rank": rank, "scale": 8.0, "dropout": 0.0,
                               "keys": ["self_attn.q_proj", "self_attn.v_proj"]}}
    (d / "adapter_config.json").write_text(json.dumps(cfg))
    rng = np.random.default_rng(seed)
    w = {}
    for i in layers:
        for key, out in (("q_proj", 576), ("v_proj", v_out)):
            p = f"model.layers.{i}.self_attn.{key}"
            w[f"{p}.lora_a"] = mx.array(rng.normal(0, 0.05, (576, rank)).astype(np.float32))
            w[f"{p}.lora_b"] = mx.array(rng.normal(0, 0.05, (rank, out)).astype(np.float32))
    mx.save_safetensors(str(d / "adapters.safetensors"), w)
    return d


@pytest.mark.slow
def test_adapter_set_and_unset_changes_and_restores_logits(mlx_rt, tmp_path):
    ids = mlx_rt.tokenize("The capital of France is Paris.")
    base = mlx_rt.logits(ids)
    mlx_rt.set_adapter(str(_write_adapter(tmp_path / "a")))
    assert mlx_rt.adapter_path == str(tmp_path / "a")
    adapted = mlx_rt.logits(ids)
    assert np.abs(adapted - base).max() > 0.05
    mlx_rt.set_adapter(None)
    assert mlx_rt.adapter_path is None
    np.testing.assert_allclose(mlx_rt.logits(ids), base, atol=1e-5)


@pytest.mark.slow
def test_bad_adapters_are_rejected_and_leave_the_base_model(mlx_rt, tmp_path):
    ids = mlx_rt.tokenize("Hello there")
    base = mlx_rt.logits(ids)
    with pytest.raises(QuantError, match="adapter_config.json"):
        mlx_rt.set_adapter(str(tmp_path / "nowhere"))
    wrong = _write_adapter(tmp_path / "wrong", v_out=576)  # v_proj is 192 wide in SmolLM2
    with pytest.raises(QuantError, match="v_proj"):
        mlx_rt.set_adapter(str(wrong))
    assert mlx_rt.adapter_path is None
    np.testing.assert_allclose(mlx_rt.logits(ids), base, atol=1e-5)


@pytest.mark.slow
def test_saved_mlx_dir_loads_without_the_gguf_and_gives_the_same_logits(mlx_rt, tmp_path):
    from quant.gguf_mlx import load_mlx_dir, save_mlx_model
    from quant.mlx_runtime import MLXRuntime

    out = save_mlx_model(mlx_rt.mlx_model, mlx_rt.config, tmp_path / "m", mlx_rt.tokenizer)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    model, tok, config = load_mlx_dir(out)
    assert config["quantization"]["model.layers.0.self_attn.q_proj"] == {"group_size": 32, "bits": 4}
    rt = MLXRuntime(ModelInfo(name="m", path=str(out), source="path"), CHATML, 256, 2)
    ids = mlx_rt.tokenize("<|im_start|>user\nhi<|im_end|>\n")
    assert rt.tokenize("<|im_start|>user\nhi<|im_end|>\n") == ids
    np.testing.assert_allclose(rt.logits(ids), mlx_rt.logits(ids), atol=1e-4)
    rt.close()
