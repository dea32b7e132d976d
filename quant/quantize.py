"""Quantize a model to a GGUF type with llama.cpp's own quantizer.

Owns: the table of output types reverie offers, calling `llama_model_quantize` through
llama-cpp-python (with its log captured, not sprayed on the terminal), and `quantize()` for any
source: an F16/F32 GGUF (straight in), a quantized GGUF (dequantized to F32 first), or a Hugging
Face safetensors directory of a llama-family model (converted here with gguf's writer first).
Does not know about adapters or the registry.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import gguf_io
from .errors import BackendUnavailable, QuantError
from .gguf_io import Progress, _noop
from .gguf_lora import rope_permute

# name -> llama_ftype (same numbering as gguf.LlamaFileType). The first four are the ones the
# issue asks for; the rest are cheap to offer because llama.cpp does the work.
TYPES: dict[str, int] = {
    "Q4_K_M": 15, "Q8_0": 7, "Q4_1": 3, "F16": 1,
    "Q4_0": 2, "Q5_K_M": 17, "Q6_K": 18, "F32": 0,
}
UNQUANTIZED = ("F16", "F32", "BF16")


def valid_types(with_same: bool = False) -> list[str]:
    return list(TYPES) + (["same"] if with_same else [])


def check_type(qtype: str, allow_same: bool = False) -> str:
    """Normalise a type name ('q8_0' -> 'Q8_0'); unknown names list the valid ones."""
    if allow_same and qtype.lower() == "same":
        return "same"
    norm = qtype.upper()
    if norm not in TYPES:
        raise QuantError(f"unknown quantization type {qtype!r}; choose one of: "
                         f"{', '.join(valid_types(allow_same))}.")
    return norm


@dataclass
class QuantizeResult:
    path: str
    type: str
    source: str
    source_type: str
    size_bytes: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@contextlib.contextmanager
def _captured_fds(log_path: Path):
    """Send fd 1 and 2 to log_path: llama.cpp's quantizer prints a line per tensor from C."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "wb") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def llama_quantize(src: Path | str, dst: Path | str, qtype: str, threads: int = 0) -> Path:
    """Quantize an F16/F32 GGUF to qtype with llama.cpp; dst appears only on success."""
    import ctypes

    qtype = check_type(qtype)
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendUnavailable("quantizing needs llama-cpp-python; run `make install`.") from e
    src, dst = Path(src), Path(dst)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = TYPES[qtype]
    params.nthread = threads or (os.cpu_count() or 1)
    with gguf_io.atomic_target(dst) as tmp, tempfile.TemporaryDirectory() as logdir:
        log = Path(logdir) / "quantize.log"
        with _captured_fds(log):
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(),
                                                ctypes.byref(params))
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise QuantError(f"llama.cpp could not quantize {src} to {qtype} (code {rc}): "
                             f"{' | '.join(tail)}. Check free disk space and that the source "
                             "is a complete GGUF.")
    return dst


def default_out(src: Path, qtype: str) -> Path:
    stem = src.name if src.is_dir() else src.stem
    for t in list(TYPES) + ["BF16"]:  # drop an old type suffix: model.Q4_1 -> model
        for sep in (".", "-", "_"):
            if stem.upper().endswith(sep + t):
                stem = stem[: -len(t) - 1]
    return src.parent / f"{stem}.{qtype}.gguf"


def quantize(src: Path | str, qtype: str, out: Path | str | None = None, threads: int = 0,
             progress: Progress = _noop) -> QuantizeResult:
    """Make a qtype GGUF from src (GGUF file or HF safetensors directory); return where it went."""
    qtype = check_type(qtype)
    src = Path(src).expanduser()
    if not src.exists():
        raise QuantError(f"{src} does not exist; pass a .gguf file or a Hugging Face model directory.")
    out = Path(out).expanduser() if out else default_out(src, qtype)
    if out.resolve() == src.resolve():
        raise QuantError(f"--out {out} is the source file; choose another path.")
    if out.is_dir():
        raise QuantError(f"--out {out} is a directory; give a file name ending in .gguf.")
    gguf_io.check_writable(out)
    t0 = time.perf_counter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".reverie-quant-", dir=out.parent) as work:
        work = Path(work)
        if src.is_dir():
            src_type = "safetensors"
            mid_type = "F32" if qtype == "F32" else "F16"
            progress(f"converting {src} to {mid_type} GGUF")
            mid = convert_hf_dir(src, work / "converted.gguf", mid_type, progress=progress)
            if qtype in ("F16", "F32"):
                with gguf_io.atomic_target(out) as tmp:
                    os.replace(mid, tmp)
            else:
                progress(f"quantizing to {qtype} with llama.cpp")
                llama_quantize(mid, out, qtype, threads)
        else:
            reader = gguf_io.open_gguf(src)
            src_type = gguf_io.file_type_name(reader) or "?"
            if qtype in ("F16", "F32"):
                progress(f"writing {qtype} GGUF")
                gguf_io.write_unquantized(reader, out, qtype, progress=progress)
            else:
                mid = src
                if src_type not in UNQUANTIZED:
                    # llama.cpp refuses to requantize by default; going through exact F32 values
                    # makes the loss explicit and works for every type gguf can read
                    notes.append(f"source is {src_type}: dequantized to F32 first, so the "
                                 "quantization errors of both types add up")
                    progress(f"source is {src_type}; dequantizing to F32 first")
                    mid = gguf_io.write_unquantized(reader, work / "dequant.gguf", "F32",
                                                    progress=progress)
                del reader  # release the memory map before llama.cpp reads the file
                progress(f"quantizing to {qtype} with llama.cpp")
                llama_quantize(mid, out, qtype, threads)
    return QuantizeResult(path=str(out), type=qtype, source=str(src), source_type=src_type,
                          size_bytes=out.stat().st_size, seconds=round(time.perf_counter() - t0, 2),
                          notes=notes)


# --- Hugging Face safetensors (llama family) -> GGUF ------------------------------------------
HF_LLAMA_ARCHS = ("LlamaForCausalLM", "MistralForCausalLM")


def _hf_config(src: Path) -> dict:
    import json

    cfg_path = src / "config.json"
    if not cfg_path.exists():
        raise QuantError(f"{src} has no config.json; pass a Hugging Face model directory.")
    cfg = json.loads(cfg_path.read_text())
    archs = cfg.get("architectures") or []
    if not any(a in HF_LLAMA_ARCHS for a in archs):
        raise QuantError(f"{src} is a {archs or cfg.get('model_type')} model; converting from "
                         f"safetensors supports {', '.join(HF_LLAMA_ARCHS)}. Convert others with "
                         "llama.cpp's convert_hf_to_gguf.py, then quantize the GGUF here.")
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise QuantError(f"{src} uses rope scaling {rope.get('rope_type')!r}, which this "
                         "converter does not write; use llama.cpp's convert_hf_to_gguf.py.")
    cfg["_rope_theta"] = float(cfg.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    return cfg


def _pre_tokenizer_name(tok: dict) -> str:
    """llama.cpp's name for the pre-tokenizer regex, read from tokenizer.json's structure."""
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # SmolLM's one-digit-per-token split in front of GPT-2's byte level
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    return "default"


def _write_hf_vocab(src: Path, writer) -> None:
    import json

    import gguf

    tok_path = src / "tokenizer.json"
    if not tok_path.exists():
        raise QuantError(f"{src} has no tokenizer.json; save the tokenizer with the model.")
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    model = tok.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise QuantError(f"{src}: only byte-level BPE tokenizers (GPT-2 style) are converted here.")
    vocab: dict[str, int] = dict(model["vocab"])
    kinds = {}
    for t in tok.get("added_tokens", []):
        vocab[t["content"]] = t["id"]
        kinds[t["id"]] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
    n = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n)]  # holes in the id space get placeholder pieces
    types = [gguf.TokenType.UNUSED] * n
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = kinds.get(i, gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tok))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    special = gguf.SpecialVocab(src, load_merges=True, n_vocab=n)
    special.add_to_gguf(writer, quiet=True)


def convert_hf_dir(src: Path | str, out: Path | str, out_type: str = "F16",
                   progress: Progress = _noop) -> Path:
    """Write a llama-family safetensors directory as an F16/F32 GGUF (atomically)."""
    import gguf
    from safetensors import safe_open

    src, out = Path(src), Path(out)
    cfg = _hf_config(src)
    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise QuantError(f"{src} has no .safetensors files.")
    n_layer, n_head = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    n_kv = int(cfg.get("num_key_value_heads") or n_head)
    n_embd = int(cfg["hidden_size"])
    head_dim = int(cfg.get("head_dim") or n_embd // n_head)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    big = np.float16 if out_type.upper() == "F16" else np.float32
    # first pass: names and shapes only, so the header can be written before any data
    plan = []
    for f in files:
        with safe_open(f, "pt") as st:
            for key in st.keys():
                if key.endswith("rotary_emb.inv_freq"):
                    continue  # llama.cpp computes RoPE frequencies itself
                if key == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                    continue
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise QuantError(f"{src}: tensor {key} has no GGUF name for llama; "
                                     "this converter handles plain llama-family checkpoints.")
                shape = tuple(st.get_slice(key).get_shape())
                plan.append((f, key, name, shape))
    with gguf_io.atomic_target(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_name(cfg.get("_model_name_or_path") or src.name)
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if big is np.float16 else gguf.LlamaFileType.ALL_F32)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_block_count(n_layer)
        w.add_context_length(int(cfg.get("max_position_embeddings", 2048)))
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_rope_freq_base(cfg["_rope_theta"])
        w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
        w.add_vocab_size(int(cfg["vocab_size"]))
        w.add_rope_dimension_count(head_dim)
        _write_hf_vocab(src, w)
        for _, _, name, shape in plan:
            dt = np.dtype(big if len(shape) >= 2 else np.float32)
            w.add_tensor_info(name, shape, dt, int(np.prod(shape)) * dt.itemsize)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        try:
            i = 0
            for f in files:
                with safe_open(f, "pt") as st:  # torch, not numpy: checkpoints are often bf16
                    for pf, key, name, shape in plan:
                        if pf != f:
                            continue
                        t = st.get_tensor(key).float().numpy()
                        if name.endswith("attn_q.weight"):
                            t = rope_permute(t, n_head)
                        elif name.endswith("attn_k.weight"):
                            t = rope_permute(t, n_kv)
                        t = t.astype(big if t.ndim >= 2 else np.float32)
                        w.write_tensor_data(np.ascontiguousarray(t))
                        i += 1
                        if i % 50 == 0 or i == len(plan):
                            progress(f"converted {i}/{len(plan)} tensors")
        finally:
            w.close()
    return out
