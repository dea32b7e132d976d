"""GGUF -> torch: the float32 "dequantized twin" of a llama-architecture GGUF as a transformers
model, built from our own reader.

transformers can open a GGUF itself (`from_pretrained(gguf_file=...)`) and gives the same model,
but on the default 135M model it takes ~25 s, nearly all of it outside de-quantization: the
gguf package's reader walks the 49k-entry vocabulary field by field, twice, and the tensor-name
maps are rebuilt per tensor. This loader reads the file once (`mlx_gguf_reader`), de-quantizes
with the gguf package, undoes llama.cpp's q/k row permutation and fills a `LlamaForCausalLM` —
the same weights bit for bit (tests/test_lora_parity.py::
test_our_twin_loader_is_transformers_gguf_load_bit_for_bit compares it with transformers' own
load). Other architectures: `load_twin` returns None and the caller uses transformers.

Owns: the GGUF -> Hugging Face config and names for llama (the q/k row permutation it undoes is
quant.gguf_lora.rope_unpermute).
Does not know about LoRA or training.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import QuantError
from .gguf_lora import rope_unpermute
from .gguf_mlx import mlx_config, mlx_name
from .mlx_gguf_reader import read_gguf
from .mlx_tokenizer import GGUFTokenizer

TWIN_ARCHS = ("llama",)


def hf_name(gguf_name: str) -> str | None:
    """Hugging Face llama parameter name for a GGUF tensor name (None: not a model weight);
    mlx_lm's llama uses the same names as transformers'."""
    return mlx_name("llama", gguf_name)


def twin_config(g) -> dict:
    """LlamaConfig keyword arguments for the GGUF, as transformers' own GGUF loader sets them."""
    c = mlx_config(g)
    ids = {k: g.get(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "padding", "unknown")}
    return dict(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
                intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
                num_attention_heads=c["num_attention_heads"],
                num_key_value_heads=c["num_key_value_heads"], head_dim=c["head_dim"],
                rms_norm_eps=c["rms_norm_eps"], max_position_embeddings=c["max_position_embeddings"],
                rope_theta=c["rope_theta"], tie_word_embeddings=c["tie_word_embeddings"],
                attention_bias=c["attention_bias"], hidden_act="silu",
                bos_token_id=ids["bos"], eos_token_id=ids["eos"],
                pad_token_id=ids["padding"] if ids["padding"] is not None else ids["eos"])


def load_twin(path: str | Path):
    """(transformers model in eval mode, tokenizer) for a llama GGUF, or None for other
    architectures. Raises QuantError for a file that is not a readable model."""
    import torch
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize
    from transformers import LlamaConfig, LlamaForCausalLM

    g = read_gguf(path)
    if g.get("general.architecture") not in TWIN_ARCHS:
        return None
    cfg = twin_config(g)
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    state = {}
    for name, t in g.tensors.items():
        target = hf_name(name)
        if target is None:
            continue
        try:
            w = dequantize(g.raw(name), GGMLQuantizationType(t.ggml_type)).astype(np.float32, copy=False)
        except (ValueError, KeyError, NotImplementedError) as e:
            raise QuantError(f"cannot de-quantize tensor {name} of {path}: {e}") from e
        w = w.reshape(t.shape)
        if name.endswith("attn_q.weight"):
            w = rope_unpermute(w, heads)
        elif name.endswith("attn_k.weight"):
            w = rope_unpermute(w, kv_heads)
        state[target] = torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy
    config = LlamaConfig(**cfg)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if cfg["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (cfg["tie_word_embeddings"] and k == "lm_head.weight")]
    if missing or unexpected:
        raise QuantError(f"the GGUF's tensors do not fit a llama model (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); use transformers' loader for this file.")
    if cfg["tie_word_embeddings"]:
        model.tie_weights()
    # buffers built on the meta device (rotary inverse frequencies) are made again for real
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    model.eval()
    tok = GGUFTokenizer.from_metadata(g.metadata).to_transformers()
    if cfg["pad_token_id"] is not None:
        tok.pad_token = g.get("tokenizer.ggml.tokens")[cfg["pad_token_id"]]
    return model, tok
