"""GGUF -> MLX: the same quantized file llama.cpp serves, as an mlx_lm model.

Owns: mapping GGUF tensor names and hyper-parameters onto mlx_lm's `llama` and `gemma3_text`
models; turning GGUF blocks into MLX affine-quantized triples (exact bit repacking for
Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, dequantize + `mx.quantize` for K-quants); gemma's "+1" norm
convention; writing a converted model directory once (`save_mlx_model`) and loading it back
without re-dequantizing (`load_mlx_dir`). The directory is a regular mlx_lm model directory
(config.json with per-layer quantization, model.safetensors, tokenizer.json).
Does not know about runtimes, chat formats or adapters.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import BackendUnavailable, QuantError
from .gguf_lora import HF_TO_GGUF
from .mlx_gguf_reader import GGUFFile, read_gguf
from .mlx_tokenizer import GGUFTokenizer

GROUP = 32  # every legacy GGUF block and every K-quant sub-block we repack holds 32 weights
SUPPORTED_ARCHS = ("llama", "gemma3")
_MODEL_TYPE = {"llama": "llama", "gemma3": "gemma3_text"}

# GGUF suffix -> mlx_lm module path suffix, per architecture
_COMMON = {**{g: ("self_attn." if hf in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp.") + hf
              for hf, g in HF_TO_GGUF.items()}, "attn_norm": "input_layernorm"}
_LAYER_NAMES = {
    "llama": {**_COMMON, "ffn_norm": "post_attention_layernorm"},
    "gemma3": {**_COMMON, "ffn_norm": "pre_feedforward_layernorm",
               "post_attention_norm": "post_attention_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm",
               "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"},
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def require_mlx():
    """Import mlx or raise the install hint (mlx is optional: Apple's path, CPU build on Linux)."""
    try:
        import mlx.core as mx  # noqa: F401
        import mlx_lm  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(
            'the MLX backend needs mlx and mlx-lm: `pip install "mlx[cpu]" mlx-lm` on Linux, '
            "`pip install mlx mlx-lm` on macOS; or use --backend llama.cpp.") from e
    return mx


# --- hyper-parameters ---------------------------------------------------------------------------
def mlx_config(g: GGUFFile) -> dict:
    """The mlx_lm config.json dict for this GGUF (no quantization section yet)."""
    arch = g.get("general.architecture", "")
    if arch not in SUPPORTED_ARCHS:
        raise QuantError(f"the MLX backend supports GGUF architectures {', '.join(SUPPORTED_ARCHS)}, "
                         f"not {arch!r}; use --backend llama.cpp for this model.")

    def req(key):
        v = g.arch_get(key)
        if v is None:
            raise QuantError(f"{g.path} lacks {arch}.{key}; the file is incomplete or not a model.")
        return v

    hidden, heads = int(req("embedding_length")), int(req("attention.head_count"))
    vocab = len(g.get("tokenizer.ggml.tokens") or []) or int(req("vocab_size"))
    cfg = dict(model_type=_MODEL_TYPE[arch], hidden_size=hidden,
               num_hidden_layers=int(req("block_count")),
               intermediate_size=int(req("feed_forward_length")), num_attention_heads=heads,
               num_key_value_heads=int(g.arch_get("attention.head_count_kv", heads)),
               head_dim=int(g.arch_get("attention.key_length", hidden // heads)),
               rms_norm_eps=float(req("attention.layer_norm_rms_epsilon")), vocab_size=vocab,
               max_position_embeddings=int(g.arch_get("context_length", 2048)),
               rope_theta=float(g.arch_get("rope.freq_base", 10000.0)))
    scaling = g.arch_get("rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise QuantError(f"rope scaling {scaling!r} is not supported by the MLX loader; use llama.cpp.")
        cfg["rope_scaling"] = {"type": "linear", "factor": float(g.arch_get("rope.scaling.factor", 1.0))}
    if "rope_freqs.weight" in g.tensors:
        raise QuantError("this GGUF carries rope_freqs (llama-3 style rope); the MLX loader does not "
                         "support it yet; use --backend llama.cpp.")
    if arch == "llama":
        # llama.cpp's converter permutes q/k rows into the interleaved ("traditional") rope layout
        cfg.update(rope_traditional=True, tie_word_embeddings="output.weight" not in g.tensors,
                   attention_bias="blk.0.attn_q.bias" in g.tensors)
    else:
        # llama.cpp hard-codes these for gemma3; newer files may state the pattern
        cfg.update(rope_local_base_freq=10000.0, query_pre_attn_scalar=cfg["head_dim"],
                   sliding_window=int(g.arch_get("attention.sliding_window", 512)),
                   sliding_window_pattern=int(g.arch_get("attention.sliding_window_pattern", 6)))
    return cfg


def mlx_name(arch: str, gguf_name: str) -> str | None:
    """mlx_lm parameter name for a GGUF tensor name (None for tensors the model does not use)."""
    base, _, kind = gguf_name.rpartition(".")
    if base.startswith("blk."):
        _, idx, part = base.split(".", 2)
        mapped = _LAYER_NAMES[arch].get(part)
        return f"model.layers.{idx}.{mapped}.{kind}" if mapped else None
    mapped = _TOP_NAMES.get(base)
    return f"{mapped}.{kind}" if mapped else None


# --- tensors ------------------------------------------------------------------------------------
def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    return blocks[:, at:at + 2].copy().view(np.float16)[:, 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    # a block's 16 bytes hold weights 0..15 in low nibbles and 16..31 in high nibbles
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(qh_bytes: np.ndarray) -> np.ndarray:
    qh = qh_bytes.copy().view("<u4")[:, 0]
    return ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)


def _legacy_q(blocks: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(q uint8 [blocks,32], scale, bias, bits) with weight = scale * q + bias, exactly."""
    d = _f16(blocks, 0)
    if name == "Q8_0":
        q = (blocks[:, 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return q, d, -128.0 * d, 8
    if name == "Q4_0":
        return _nibbles(blocks[:, 2:18]), d, -8.0 * d, 4
    if name == "Q4_1":
        return _nibbles(blocks[:, 4:20]), d, _f16(blocks, 2), 4
    if name == "Q5_0":
        q = _nibbles(blocks[:, 6:22]) | (_high_bits(blocks[:, 2:6]) << 4)
        return q, d, -16.0 * d, 5
    if name == "Q5_1":
        q = _nibbles(blocks[:, 8:24]) | (_high_bits(blocks[:, 4:8]) << 4)
        return q, d, _f16(blocks, 2), 5
    raise KeyError(name)


EXACT_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def _pack(q: np.ndarray, bits: int, rows: int) -> np.ndarray:
    """MLX's packing: a little-endian bit stream of `bits`-wide values, read as uint32 words."""
    if bits in (4, 8):  # fast path: whole bytes
        q = q.reshape(rows, -1)
        if bits == 4:
            q = q[:, 0::2] | (q[:, 1::2] << 4)
        return np.ascontiguousarray(q).view(np.uint32)
    stream = ((q.reshape(rows, -1)[..., None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8)
    return np.packbits(stream.reshape(rows, -1), axis=-1, bitorder="little").view(np.uint32)


def load_tensor(g: GGUFFile, name: str, requant_bits: int = 8):
    """One GGUF tensor as MLX arrays: (weight,) for float tensors, or
    (weight uint32, scales, biases, bits) for quantized ones."""
    import mlx.core as mx
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    t = g.tensors[name]
    qtype = GGMLQuantizationType(t.ggml_type)
    raw = g.raw(name)
    if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
        return (mx.array(dequantize(raw, qtype).astype(np.float32)),)
    rows = int(np.prod(t.shape[:-1]))
    if qtype.name in EXACT_TYPES:
        blocks = np.asarray(raw).reshape(-1, GGML_QUANT_SIZES[qtype][1])
        q, scale, bias, bits = _legacy_q(blocks, qtype.name)
        w = _pack(q, bits, rows)
        return (mx.array(w), mx.array(scale.reshape(rows, -1)), mx.array(bias.reshape(rows, -1)), bits)
    # K-quants etc.: blocks of 256 with 16- or 32-wide sub-scales that MLX cannot hold as they are
    dense = mx.array(dequantize(raw, qtype).astype(np.float32).reshape(rows, -1))
    w, scales, biases = mx.quantize(dense, group_size=GROUP, bits=requant_bits)
    return (w, scales, biases, requant_bits)


def _build(config: dict, weights: dict, quant: dict):
    """Instantiate the mlx_lm model for config, quantize the listed modules, load weights."""
    import mlx.nn as nn
    from mlx_lm.utils import _get_classes

    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)  # gemma3 drops lm_head and ties to the embedding here
    nn.quantize(model, class_predicate=lambda p, m: quant.get(p, False) if hasattr(m, "to_quantized") else False)
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise QuantError(f"the GGUF's tensors do not fit the {config['model_type']} model: {e}") from e
    model.eval()
    return model


def load_gguf_model(path: str | Path, requant_bits: int = 8):
    """(mlx model, GGUFTokenizer, mlx_lm config dict) for a GGUF file.

    requant_bits: bits for tensors MLX cannot hold exactly (K-quants); 8 keeps them within ~0.5%
    of llama.cpp's weights, 4 halves their memory."""
    mx = require_mlx()
    if requant_bits not in (2, 3, 4, 5, 6, 8):
        raise QuantError(f"requant_bits must be one of 2, 3, 4, 5, 6, 8; got {requant_bits}.")
    g = read_gguf(path)
    config = mlx_config(g)
    arch = g.get("general.architecture")
    tokenizer = GGUFTokenizer.from_metadata(g.metadata)
    weights, quant = {}, {"group_size": GROUP, "bits": requant_bits}
    for name in g.tensors:
        target = mlx_name(arch, name)
        if target is None:
            continue
        try:
            parts = load_tensor(g, name, requant_bits)
        except (ValueError, KeyError) as e:
            raise QuantError(f"cannot convert tensor {name} of {path}: {e}") from e
        if len(parts) == 1:
            w = parts[0]
            if arch == "gemma3" and name.endswith("norm.weight"):
                w = w - 1.0  # llama.cpp's converter stores gemma's (1 + w) norm scale; mlx_lm adds the 1
            weights[target] = w
        else:
            module = target.rsplit(".", 1)[0]
            weights[target], weights[f"{module}.scales"], weights[f"{module}.biases"] = parts[:3]
            quant[module] = {"group_size": GROUP, "bits": parts[3]}
    model = _build(config, weights, quant)
    mx.eval(model.parameters())
    config["quantization"] = quant
    # arch and chat template travel with the directory so the registry can serve it alone
    config["reverie_source"] = {"gguf": str(Path(path).resolve()), "requant_bits": requant_bits,
                                "file_type": int(g.get("general.file_type", -1)), "arch": arch,
                                "chat_template": g.get("tokenizer.chat_template", "") or ""}
    return model, tokenizer, config


def save_mlx_model(model, config: dict, out_dir: str | Path, tokenizer: GGUFTokenizer | None = None) -> Path:
    """Write an mlx_lm model directory (config.json, model.safetensors, tokenizer files)."""
    mx = require_mlx()
    from mlx.utils import tree_flatten

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    if tokenizer is not None:
        tokenizer.save(out)
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2))
    tmp.replace(out / "config.json")  # written last: a directory with config.json is complete
    return out


def load_mlx_dir(out_dir: str | Path):
    """(model, GGUFTokenizer, config) from a directory written by save_mlx_model."""
    mx = require_mlx()
    out = Path(out_dir)
    try:
        config = json.loads((out / "config.json").read_text())
        weights = mx.load(str(out / "model.safetensors"))
    except (OSError, ValueError, RuntimeError) as e:
        raise QuantError(f"{out} is not a complete converted model ({e}); re-run `reverie quant to-mlx`.") from e
    quant = dict(config.get("quantization") or {})
    model = _build(config, weights, quant)
    mx.eval(model.parameters())
    return model, GGUFTokenizer.load(out), config
