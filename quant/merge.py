"""Bake a GGUF LoRA adapter into its base model: W' = W + scale · B·A, then quantize.

Owns: reading and validating a GGUF LoRA adapter (architecture, tensor pairs, shapes, all
problems listed at once), computing the deltas exactly as llama.cpp applies them at run time, and
`merge()`, which writes the merged weights as F16/F32 and hands them to llama.cpp's quantizer.
Does not register models or know where adapters come from (the assistant facade does that).

Orientation (llama.cpp src/llama-adapter.cpp and the graph's LoRA matmul): for a base weight with
ggml ne = [n_in, n_out] (numpy (n_out, n_in)), lora_a has ne = [n_in, r] (numpy (r, n_in)) and
lora_b ne = [r, n_out] (numpy (n_out, r)); y = W·x + scale · B·(A·x) with scale = alpha / r
(r = lora_b's ne[0]; alpha 0 means scale 1). token_embd is the exception: A and B are swapped
there (a: numpy (n_vocab, r), b: numpy (n_embd, r)), so the delta is A·Bᵀ.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import gguf_io
from .errors import QuantError
from .gguf_io import Progress, _noop
from .quantize import TYPES, UNQUANTIZED, check_type, llama_quantize


@dataclass
class LoraPair:
    a: np.ndarray
    b: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.b.shape[-1])


@dataclass
class GGUFAdapter:
    path: str
    arch: str
    alpha: float
    pairs: dict[str, LoraPair]  # base tensor name -> (A, B) in numpy orientation
    metadata: dict[str, str] = field(default_factory=dict)

    def scale(self, name: str, adapter_scale: float = 1.0) -> float:
        r = self.pairs[name].rank
        return adapter_scale * self.alpha / r if self.alpha else adapter_scale

    def delta(self, name: str, adapter_scale: float = 1.0) -> np.ndarray:
        """The float32 change this adapter makes to base tensor `name` (numpy orientation)."""
        p = self.pairs[name]
        a, b = p.a.astype(np.float32), p.b.astype(np.float32)
        d = a @ b.T if name.endswith("token_embd.weight") else b @ a
        return d * np.float32(self.scale(name, adapter_scale))


def read_adapter(path: Path | str) -> GGUFAdapter:
    """Load a GGUF LoRA adapter fully into memory (adapters are small), checking its structure."""
    path = Path(path)
    r = gguf_io.open_gguf(path)
    gtype = gguf_io.field_value(r, "general.type", "")
    atype = gguf_io.field_value(r, "adapter.type", "")
    if gtype != "adapter" or atype != "lora":
        raise QuantError(f"{path} is not a GGUF LoRA adapter (general.type={gtype!r}, "
                         f"adapter.type={atype!r}); pass an adapter file, not a model.")
    arch = gguf_io.arch_of(r)
    alpha = float(gguf_io.field_value(r, "adapter.lora.alpha", 0.0) or 0.0)
    halves: dict[str, dict[str, np.ndarray]] = {}
    problems = []
    for t in r.tensors:
        for suffix, key in ((".lora_a", "a"), (".lora_b", "b")):
            if t.name.endswith(suffix):
                halves.setdefault(t.name[: -len(suffix)], {})[key] = gguf_io.dequantize(t)
                break
        else:
            if not t.name.endswith("_norm.weight"):  # llama.cpp ignores these too
                problems.append(f"unexpected tensor {t.name}")
    pairs = {}
    for name, h in halves.items():
        if set(h) != {"a", "b"}:
            problems.append(f"{name} has only lora_{next(iter(h))}")
            continue
        a, b = h["a"], h["b"]
        if a.ndim != 2 or b.ndim != 2:
            problems.append(f"{name}: lora_a/lora_b must be 2-D")
            continue
        ok = (a.shape[1] == b.shape[1]) if name.endswith("token_embd.weight") else (a.shape[0] == b.shape[1])
        if not ok:
            problems.append(f"{name}: lora_a {a.shape} and lora_b {b.shape} disagree on the rank")
            continue
        pairs[name] = LoraPair(a, b)
    if problems:
        raise QuantError(f"{path} is a malformed LoRA adapter: {'; '.join(problems)}.")
    if not pairs:
        raise QuantError(f"{path} has no lora_a/lora_b tensors; nothing to merge.")
    meta = {}
    for k, f in r.fields.items():
        if k.startswith(("reverie.", "general.name", "training.")):
            try:
                meta[k] = str(f.contents())
            except Exception:  # noqa: BLE001 - provenance is best-effort
                pass
    return GGUFAdapter(str(path), arch, alpha, pairs, meta)


def check_compatible(base_reader, adapter: GGUFAdapter, base_path: str = "base") -> None:
    """Architecture and every shape must fit the base; list all mismatches in one message."""
    arch = gguf_io.arch_of(base_reader)
    if adapter.arch != arch:
        raise QuantError(f"adapter {adapter.path} was made for architecture {adapter.arch!r}, "
                         f"but the base model {base_path} is {arch!r}; merge it into the model "
                         "it was trained on.")
    shapes = {t.name: gguf_io.tensor_shape(t) for t in base_reader.tensors}
    problems = []
    for name, p in adapter.pairs.items():
        if name not in shapes:
            problems.append(f"{name} is not in the base")
            continue
        want = shapes[name]
        if name.endswith("token_embd.weight"):
            got = (p.a.shape[0], p.b.shape[0])
        else:
            got = (p.b.shape[0], p.a.shape[1])
        if len(want) != 2 or tuple(want) != got:
            problems.append(f"{name}: adapter gives {got}, base has {tuple(want)}")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; … {len(problems) - 6} more" if len(problems) > 6 else "")
        raise QuantError(f"adapter {adapter.path} does not fit base {base_path}: {shown}. "
                         "It was probably trained on a different model.")


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
    lora = read_adapter(adapter_path)
    check_compatible(reader, lora, str(base))
    if qtype == "same":
        src_type = gguf_io.file_type_name(reader)
        if src_type == "BF16":
            src_type = "F16"
        if src_type not in TYPES:
            raise QuantError(f"the base's type {src_type or 'unknown'} cannot be reproduced; pass "
                             f"--type with one of: {', '.join(TYPES)}.")
        qtype = src_type
    gguf_io.check_writable(out)
    progress(f"merging {len(lora.pairs)} LoRA pairs (alpha {lora.alpha:g}) into {base.name}")

    def add_delta(name: str, w: np.ndarray) -> np.ndarray:
        if name in lora.pairs:
            return w + lora.delta(name, adapter_scale)
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
                       merged_tensors=len(lora.pairs), size_bytes=out.stat().st_size,
                       seconds=round(time.perf_counter() - t0, 2))


def write_lora_gguf(path: Path | str, arch: str, pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                    alpha: float, extra_kv: dict[str, str] | None = None) -> Path:
    """Write a GGUF LoRA adapter (numpy-oriented A (r, in), B (out, r) per base tensor).

    For tests and benchmarks (a synthetic adapter) and any caller that holds plain arrays.
    """
    from gguf import GGUFValueType, GGUFWriter

    path = Path(path)
    with gguf_io.atomic_target(path) as tmp:
        w = GGUFWriter(str(tmp), arch)
        w.add_type("adapter")
        w.add_key_value("adapter.type", "lora", GGUFValueType.STRING)
        w.add_key_value("adapter.lora.alpha", float(alpha), GGUFValueType.FLOAT32)
        for k, v in (extra_kv or {}).items():
            w.add_key_value(k, v, GGUFValueType.STRING)
        for name, (a, b) in pairs.items():
            w.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
            w.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


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
