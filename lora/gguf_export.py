"""Export one of our adapter directories to a GGUF LoRA that llama.cpp loads with `lora_path`.

Owns: the GGUF adapter layout (general.type=adapter, adapter.type=lora, adapter.lora.alpha,
tensors blk.N.<base>.weight.lora_a / .lora_b), provenance KVs, and reading such a file back for
checks. llama.cpp's loader wants, in ggml order, lora_a ne=[in, r] and lora_b ne=[r, out] —
numpy (r, in) and (out, r), i.e. peft's orientation as is. q/k permutation lives in adapter.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .adapter import Adapter, load_adapter, to_gguf_layout
from .errors import LoraError
from .files import atomic_write_file

GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


def gguf_tensor_name(layer: int, module: str, ab: str) -> str:
    return f"blk.{layer}.{GGUF_NAMES[module]}.weight.lora_{ab}"


def export_gguf(adapter: Adapter | Path, out_path: Path, *, dtype: str = "f32",
                skip_permutation: bool = False) -> Path:
    """Write adapter as a GGUF LoRA (atomically). dtype: f32 (exact) or f16 (half the size)."""
    import gguf

    if not isinstance(adapter, Adapter):
        adapter = load_adapter(Path(adapter))
    if dtype not in ("f32", "f16"):
        raise LoraError(f"dtype must be f32 or f16, got {dtype!r}.")
    s, prov = adapter.spec, adapter.provenance
    weights = to_gguf_layout(adapter, skip_permutation=skip_permutation)
    np_dtype = np.float32 if dtype == "f32" else np.float16

    def write(tmp: str):
        w = gguf.GGUFWriter(tmp, s.arch)  # writes general.architecture
        w.add_string("general.type", "adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", float(s.alpha))
        w.add_string("general.name", f"reverie-lora-{(prov.dataset_hash or 'adapter')[:12]}")
        # provenance: llama.cpp keeps unknown KVs and exposes them as adapter metadata
        w.add_string("reverie.trainer", s.trainer)
        w.add_uint32("reverie.rank", int(s.rank))
        w.add_string("reverie.base_model_sha256", prov.base_model_sha256 or "")
        w.add_string("reverie.dataset_hash", prov.dataset_hash or "")
        w.add_string("reverie.ledger_snapshot", prov.ledger_snapshot or "")
        w.add_string("reverie.fact_ids", json.dumps(list(prov.fact_ids)))
        w.add_string("reverie.created", prov.created or "")
        for layer in range(s.n_layers):
            for mod in s.targets:
                for ab in ("a", "b"):
                    arr = np.ascontiguousarray(weights[f"layers.{layer}.{mod}.lora_{ab}"], np_dtype)
                    w.add_tensor(gguf_tensor_name(layer, mod, ab), arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    out_path = Path(out_path)
    atomic_write_file(out_path, write)
    return out_path


def read_gguf_adapter(path: Path) -> tuple[dict, dict[str, tuple[int, ...]]]:
    """(KVs, tensor name -> numpy shape) of a GGUF file, for checks and `adapters show`."""
    from gguf import GGUFReader

    try:
        r = GGUFReader(str(path))
    except Exception as e:  # gguf raises assorted errors on damaged files
        raise LoraError(f"cannot read GGUF adapter {path}: {e}; re-export it.") from e
    kvs = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        v = f.parts[f.data[0]] if f.data else None
        if f.types and f.types[0].name == "STRING":
            kvs[name] = bytes(v).decode("utf-8", "replace")
        elif v is not None:
            kvs[name] = v.tolist()[0] if hasattr(v, "tolist") else v
    shapes = {t.name: tuple(int(x) for x in reversed(t.shape)) for t in r.tensors}
    return kvs, shapes
