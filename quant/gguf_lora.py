"""GGUF LoRA files (llama.cpp's adapter format) read and checked before any runtime touches them.

Owns: reading a GGUF LoRA (general.type=adapter, tensors blk.N.<w>.weight.lora_a / .lora_b) into
float32 A (r, in) / B (out, r) pairs with every defect listed at once, and checking that it fits a
base model's tensor shapes. llama.cpp 0.3.x loads a truncated or foreign-shaped LoRA without a
word and then segfaults on the first evaluation, so both runtimes call this first.
Does not know reverie's own adapter directories (lora/ owns those).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import QuantError


@dataclass
class GGUFLora:
    arch: str
    alpha: float
    tensors: dict[str, tuple[np.ndarray, np.ndarray]]  # "blk.N.attn_q" -> (A (r, in), B (out, r))


def read_gguf_lora(path: Path) -> GGUFLora:
    """Read a GGUF LoRA (general.type=adapter) into float32 A/B pairs; QuantError if it is not one."""
    from .gguf_io import arch_of, dequantize, field_value, open_gguf

    r = open_gguf(path)
    if field_value(r, "general.type") != "adapter" or field_value(r, "adapter.type") != "lora":
        raise QuantError(f"{path} is a GGUF file but not a LoRA adapter (general.type="
                         f"{field_value(r, 'general.type')!r}); pass an adapter exported by reverie.")
    alpha = field_value(r, "adapter.lora.alpha")
    parts: dict[str, dict[str, np.ndarray]] = {}
    problems = []
    for t in r.tensors:
        base, _, ab = t.name.rpartition(".weight.lora_")
        if ab not in ("a", "b"):
            problems.append(f"unexpected tensor {t.name}")
            continue
        try:
            parts.setdefault(base, {})[ab] = dequantize(t)
        except (QuantError, ValueError) as e:
            problems.append(f"tensor {t.name} is unreadable ({e})")
    pairs = {}
    for base, d in sorted(parts.items()):
        if set(d) != {"a", "b"}:
            problems.append(f"{base} has lora_{'a' if 'a' in d else 'b'} without its partner")
            continue
        a, b = d["a"], d["b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
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
    rank = next(iter(pairs.values()))[0].shape[0]
    return GGUFLora(arch_of(r), float(alpha) if alpha is not None else float(rank), pairs)


def check_fits(lora: GGUFLora, base_shapes: dict[str, tuple[int, ...]], path, model_name: str = "") -> None:
    """QuantError listing every LoRA pair that has no base tensor or the wrong (out, in)."""
    problems = []
    for base, (a, b) in lora.tensors.items():
        have = base_shapes.get(base + ".weight")
        if have is None:
            problems.append(f"{base} has no matching tensor in the model")
        elif tuple(have[-2:]) != (b.shape[0], a.shape[1]):
            problems.append(f"{base} adapts a {(b.shape[0], a.shape[1])} weight, the model's is {tuple(have)}")
    if problems:
        raise QuantError(f"adapter {path} does not fit {model_name or 'this model'}: " + "; ".join(problems[:6])
                         + ("; ..." if len(problems) > 6 else "") + ". Was it trained on this base model?")


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
