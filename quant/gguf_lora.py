"""The GGUF LoRA format (llama.cpp's adapter files) in one place: names, q/k row order, read,
write, and the one "does this adapter fit this model" check.

Owns:
- the Hugging Face projection -> GGUF name map (q_proj -> attn_q, ...) and the LoRA tensor names
  blk.N.<base>.weight.lora_a / .lora_b;
- llama's RoPE q/k row permutation between Hugging Face order (rotate-half) and GGUF order
  (interleaved), both ways: the HF->GGUF converter (quantize.py), a peft adapter's lora_b rows
  (to_gguf_rows) and the GGUF->torch twin (gguf_torch.py) all use these two functions;
- writing a GGUF LoRA (general.type=adapter, adapter.type=lora, adapter.lora.alpha, provenance KVs)
  and reading one back into float32 A/B pairs with every defect listed at once;
- `check_fits`: architecture and every tensor shape against a base model's.

Orientation (llama.cpp src/llama-adapter.cpp and the graph's LoRA matmul): for a base weight numpy
(n_out, n_in), lora_a is numpy (r, n_in) and lora_b (n_out, r); y = W·x + scale · B·(A·x) with
scale = alpha / r (alpha 0 or absent means scale 1). token_embd is the exception: A and B are
swapped there (a: numpy (n_vocab, r), b: numpy (n_embd, r)), so the delta is A·Bᵀ.
llama.cpp 0.3.x loads a truncated or foreign-shaped LoRA without a word and then segfaults on the
first evaluation, so runtimes, merge and promotion read and check a file here first.
Does not know reverie's own adapter directories: lora/ owns those, and
assistant.quant_api.export_adapter_gguf hands their arrays to `write_lora_gguf`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import QuantError

HF_TO_GGUF = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
DTYPES = {"f32": np.float32, "f16": np.float16}


def base_tensor_name(layer: int, module: str) -> str:
    """GGUF name of the base weight a Hugging Face projection of layer `layer` becomes."""
    return f"blk.{layer}.{HF_TO_GGUF[module]}.weight"


# --- llama's q/k row order --------------------------------------------------------------------
def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Hugging Face's q/k rows ([all first halves, all second halves] per head) to GGUF's order:
    llama.cpp's rope for the llama architecture pairs adjacent rows, so each head's rows are
    interleaved. The converter applies it to q_proj/k_proj; a LoRA's lora_b needs the same, so
    its delta B·A lands on the rows llama.cpp expects."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise QuantError(f"cannot permute {rows} rows over {n_head} heads; is n_head right?")
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of rope_permute: GGUF's interleaved rows back to Hugging Face's order."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise QuantError(f"cannot permute {rows} rows over {n_head} heads; is n_head right?")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_gguf_rows(pairs: dict[str, tuple[np.ndarray, np.ndarray]], arch: str, n_head: int,
                 n_head_kv: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs trained on Hugging Face rows (peft on the transformers twin) with the q/k lora_b rows
    put in GGUF order; other architectures keep their rows (their converter does not permute)."""
    if arch != "llama":
        return dict(pairs)
    if not n_head:
        raise QuantError("the adapter does not record n_head; cannot permute q/k for llama. Retrain it.")
    out = {}
    for name, (a, b) in pairs.items():
        kind = name.split(".")[2] if name.startswith("blk.") else ""
        if kind == "attn_q":
            b = rope_permute(b, n_head)
        elif kind == "attn_k":
            b = rope_permute(b, n_head_kv or n_head)
        out[name] = (a, b)
    return out


# --- the file --------------------------------------------------------------------------------
def _is_embd(base: str) -> bool:
    return base.startswith("token_embd")


@dataclass
class GGUFLora:
    arch: str
    alpha: float  # as the runtimes apply it: the stored alpha, or the rank when absent or 0
    tensors: dict[str, tuple[np.ndarray, np.ndarray]]  # "blk.N.attn_q" -> (A, B), numpy orientation
    metadata: dict = field(default_factory=dict)  # every KV, decoded (provenance: reverie.*)
    path: str = ""
    stored_alpha: float = 0.0  # adapter.lora.alpha as written (0 when absent)

    @staticmethod
    def rank_of(base: str, a: np.ndarray) -> int:
        return int(a.shape[1] if _is_embd(base) else a.shape[0])

    def scale(self, base: str, adapter_scale: float = 1.0) -> float:
        """llama.cpp's scale for this pair: alpha / r, or 1 when no alpha was stored."""
        r = self.rank_of(base, self.tensors[base][0])
        return adapter_scale * self.stored_alpha / r if self.stored_alpha else adapter_scale

    def delta(self, base: str, adapter_scale: float = 1.0) -> np.ndarray:
        """The float32 change this adapter makes to base tensor `base`.weight (numpy orientation)."""
        a, b = (x.astype(np.float32) for x in self.tensors[base])
        d = a @ b.T if _is_embd(base) else b @ a
        return d * np.float32(self.scale(base, adapter_scale))

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """LoRA tensor name -> numpy shape, as stored."""
        out = {}
        for base, (a, b) in self.tensors.items():
            out[f"{base}.weight.lora_a"], out[f"{base}.weight.lora_b"] = tuple(a.shape), tuple(b.shape)
        return out


def read_gguf_lora(path: Path | str) -> GGUFLora:
    """Read a GGUF LoRA into float32 A/B pairs; QuantError listing every defect if it is not one."""
    from .gguf_io import arch_of, dequantize, field_value, open_gguf

    r = open_gguf(path)
    gtype, atype = field_value(r, "general.type", ""), field_value(r, "adapter.type", "")
    if gtype != "adapter" or atype != "lora":
        raise QuantError(f"{path} is not a GGUF LoRA adapter (general.type={gtype!r}, adapter.type="
                         f"{atype!r}): a GGUF file, but not a LoRA adapter. Pass an adapter file "
                         "exported by reverie, not a model.")
    parts: dict[str, dict[str, np.ndarray]] = {}
    problems = []
    for t in r.tensors:
        base, sep, ab = t.name.rpartition(".weight.lora_")
        if not sep or ab not in ("a", "b"):
            if not t.name.endswith("_norm.weight"):  # llama.cpp ignores norm tensors too
                problems.append(f"unexpected tensor {t.name}")
            continue
        try:
            parts.setdefault(base, {})[ab] = dequantize(t)
        except (QuantError, ValueError) as e:
            problems.append(f"tensor {t.name} is unreadable ({e})")
    pairs = {}
    for base, d in sorted(parts.items()):
        if set(d) != {"a", "b"}:
            problems.append(f"{base} has only lora_{next(iter(d))}, without its partner")
            continue
        a, b = d["a"], d["b"]
        if a.ndim != 2 or b.ndim != 2:
            problems.append(f"{base}: lora_a {a.shape} and lora_b {b.shape} must be 2-D")
            continue
        if (a.shape[1] != b.shape[1]) if _is_embd(base) else (a.shape[0] != b.shape[1]):
            problems.append(f"{base}: lora_a {a.shape} and lora_b {b.shape} disagree on the rank")
            continue
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            problems.append(f"{base} has NaN or inf values")
            continue
        pairs[base] = (a, b)
    if not pairs and not problems:
        problems.append("it holds no LoRA tensors")
    if problems:
        raise QuantError(f"GGUF LoRA {path} is damaged: " + "; ".join(problems[:8])
                         + ("; ..." if len(problems) > 8 else "") + ". Re-export it.")
    meta = {}
    for k in r.fields:
        if not k.startswith("GGUF."):
            try:
                meta[k] = field_value(r, k)
            except Exception:  # noqa: BLE001 - an odd KV must not hide the tensors
                pass
    stored = float(field_value(r, "adapter.lora.alpha", 0.0) or 0.0)
    first, (a0, _) = next(iter(pairs.items()))
    return GGUFLora(arch_of(r), stored or float(GGUFLora.rank_of(first, a0)), pairs, meta, str(path),
                    stored)


def write_lora_gguf(path: Path | str, arch: str, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                    alpha: float, extra_kv: dict | None = None, dtype: str = "f32") -> Path:
    """Write a GGUF LoRA atomically: pairs maps a base tensor name ("blk.0.attn_q.weight" or
    "blk.0.attn_q") to numpy-oriented (A, B); extra_kv values are written as strings, uint32
    (int) or float32 (float); dtype f32 (exact) or f16 (half the size)."""
    from gguf import GGUFValueType, GGUFWriter

    from .gguf_io import atomic_target

    if dtype not in DTYPES:
        raise QuantError(f"dtype must be f32 or f16, got {dtype!r}.")
    kinds = {str: GGUFValueType.STRING, bool: GGUFValueType.BOOL, int: GGUFValueType.UINT32,
             float: GGUFValueType.FLOAT32}
    path = Path(path)
    with atomic_target(path) as tmp:
        w = GGUFWriter(str(tmp), arch)  # writes general.architecture
        w.add_type("adapter")
        w.add_key_value("adapter.type", "lora", GGUFValueType.STRING)
        w.add_key_value("adapter.lora.alpha", float(alpha), GGUFValueType.FLOAT32)
        # provenance: llama.cpp keeps unknown KVs and exposes them as adapter metadata
        for k, v in (extra_kv or {}).items():
            w.add_key_value(k, v, kinds.get(type(v), GGUFValueType.STRING))
        for name, (a, b) in pairs.items():
            name = name if name.endswith(".weight") else name + ".weight"
            w.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, DTYPES[dtype]))
            w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, DTYPES[dtype]))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


# --- does it fit ------------------------------------------------------------------------------
def check_fits(lora: GGUFLora, base_shapes: dict[str, tuple[int, ...]], path, model_name: str = "",
               arch: str | None = None, unit: str = "tensor") -> None:
    """QuantError naming every LoRA pair with no base tensor or the wrong (out, in), and an
    architecture that differs from `arch` (when given). The one fit check: promotion, merge and
    both runtimes call it (the MLX runtime with its layers' shapes under GGUF names, unit="layer")."""
    who = model_name or "this model"
    if arch and lora.arch and lora.arch != arch:
        raise QuantError(f"adapter {path} is for a {lora.arch} model (architecture {lora.arch!r}), "
                         f"but {who} is {arch!r}; use it with the model it was trained on.")
    problems = []
    for base, (a, b) in lora.tensors.items():
        have = base_shapes.get(base + ".weight")
        got = (a.shape[0], b.shape[0]) if _is_embd(base) else (b.shape[0], a.shape[1])
        if have is None:
            problems.append(f"{base} has no matching {unit} in the model")
        elif tuple(have) != got:
            problems.append(f"{base} adapts a {got} weight, the model's is {tuple(have)}")
    if problems:
        raise QuantError(f"adapter {path} does not fit {who}: " + "; ".join(problems[:6])
                         + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
                         + ". Was it trained on this base model?")


_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}


def base_shapes(model_path) -> dict[str, tuple[int, ...]]:
    """numpy (out, in) shapes of a GGUF model's tensors, from its header (no tensor data read).
    The fast header reader, cached per file: gguf.GGUFReader spends ~10 s on the tokenizer
    arrays of the default model on a busy 2-core box, and sleep loads several runtimes."""
    from .mlx_gguf_reader import read_gguf

    p = Path(model_path)
    st = p.stat()
    k = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if k not in _SHAPES:
        _SHAPES[k] = {name: tuple(t.shape) for name, t in read_gguf(p).tensors.items()}
    return _SHAPES[k]
