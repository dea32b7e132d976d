"""Bake a GGUF LoRA adapter into its base model: W' = W + scale · B·A, then quantize.

Owns: `merge()`, which adds each delta exactly as llama.cpp applies it at run time, writes the
merged weights as F16/F32 and hands them to llama.cpp's quantizer, and `random_lora` (a synthetic
adapter shaped for a base, for tests and benchmarks). The LoRA file format itself — reading,
writing, orientation, deltas and the fit check — is quant.gguf_lora's.
Does not register models or know where adapters come from (the assistant facade does that).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import gguf_io
from .errors import QuantError
from .gguf_io import Progress, _noop
from .gguf_lora import check_fits, read_gguf_lora
from .quantize import TYPES, UNQUANTIZED, check_type, llama_quantize


@dataclass
class MergeResult:
    path: str
    type: str
    base: str
    adapter: str
    merged_tensors: int
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def merge(base: Path | str, adapter: Path | str, out: Path | str, qtype: str = "same",
          work_type: str = "F16", adapter_scale: float = 1.0, threads: int = 0,
          progress: Progress = _noop) -> MergeResult:
    """Write base + adapter as one GGUF of type qtype at out (atomically) and describe it.

    work_type is the intermediate precision handed to llama.cpp's quantizer (F16 halves the
    temporary file; F32 keeps the sum exact).
    """
    t0 = time.perf_counter()
    qtype = check_type(qtype, allow_same=True)
    base, adapter_path, out = Path(base), Path(adapter), Path(out)
    reader = gguf_io.open_gguf(base)
    lora = read_gguf_lora(adapter_path)
    check_fits(lora, {t.name: gguf_io.tensor_shape(t) for t in reader.tensors}, adapter_path,
               f"base {base}", arch=gguf_io.arch_of(reader))
    if qtype == "same":
        src_type = gguf_io.file_type_name(reader)
        if src_type == "BF16":
            src_type = "F16"
        if src_type not in TYPES:
            raise QuantError(f"the base's type {src_type or 'unknown'} cannot be reproduced; pass "
                             f"--type with one of: {', '.join(TYPES)}.")
        qtype = src_type
    gguf_io.check_writable(out)
    progress(f"merging {len(lora.tensors)} LoRA pairs (alpha {lora.stored_alpha:g}) into {base.name}")

    def add_delta(name: str, w: np.ndarray) -> np.ndarray:
        pair = name.removesuffix(".weight")
        if pair in lora.tensors:
            return w + lora.delta(pair, adapter_scale)
        return w

    provenance = {"reverie.merged_adapter": str(adapter_path.resolve()),
                  "reverie.merged_base": str(base.resolve())}
    if qtype in UNQUANTIZED:
        gguf_io.write_unquantized(reader, out, qtype, transform=add_delta, extra_kv=provenance,
                                  progress=progress)
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix=".reverie-merge-", dir=out.parent) as work:
            mid = Path(work) / f"merged.{work_type}.gguf"
            gguf_io.write_unquantized(reader, mid, work_type, transform=add_delta,
                                      extra_kv=provenance, progress=progress)
            del reader
            progress(f"quantizing to {qtype} with llama.cpp")
            llama_quantize(mid, out, qtype, threads)
    return MergeResult(path=str(out), type=qtype, base=str(base), adapter=str(adapter_path),
                       merged_tensors=len(lora.tensors), size_bytes=out.stat().st_size,
                       seconds=round(time.perf_counter() - t0, 2))


def random_lora(base: Path | str, rank: int = 8, alpha: float = 16.0, std_b: float = 0.01,
                seed: int = 0, targets: tuple[str, ...] = ("attn_q", "attn_k", "attn_v",
                "attn_output", "ffn_gate", "ffn_up", "ffn_down"),
                zero: bool = False) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(arch, pairs) of a random LoRA shaped for base: A ~ N(0, 1/in), B small (or zero)."""
    reader = gguf_io.open_gguf(base)
    rng = np.random.default_rng(seed)
    pairs = {}
    for t in reader.tensors:
        parts = t.name.split(".")
        if len(parts) == 4 and parts[0] == "blk" and parts[2] in targets and parts[3] == "weight":
            n_out, n_in = gguf_io.tensor_shape(t)
            a = rng.normal(0, 1 / np.sqrt(n_in), (rank, n_in)).astype(np.float32)
            b = (np.zeros((n_out, rank), np.float32) if zero
                 else rng.normal(0, std_b, (n_out, rank)).astype(np.float32))
            pairs[t.name] = (a, b)
    return gguf_io.arch_of(reader), pairs
