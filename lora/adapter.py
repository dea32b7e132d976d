"""Our adapter directory format: config, weights and provenance, written atomically, validated on load.

Owns: the on-disk layout of one adapter version

    adapter_config.json   format, trainer, rank, alpha, targets, layout, base dims, resolved TrainConfig
    metadata.json         base model sha256, dataset hash, ledger snapshot hash, fact ids, metrics, created
    adapter.safetensors   layers.{i}.{module}.lora_a (r, in) and .lora_b (out, r), float32

and the conversions from peft / MLX weight names into it. `layout` records whether the q/k rows
are in Hugging Face order (peft on the transformers twin) or GGUF order (MLX on the GGUF file);
the GGUF LoRA writer (quant.gguf_lora, called by assistant.quant_api.export_adapter_gguf) permutes
only the former. Does not know the ledger, the registry or the GGUF format.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import atomic_dir

from .errors import AdapterMismatch, LoraError

FORMAT = "reverie-lora"
VERSION = 1
WEIGHTS = "adapter.safetensors"
CONFIG = "adapter_config.json"
METADATA = "metadata.json"
LAYOUTS = ("hf", "gguf")


@dataclass
class AdapterSpec:
    trainer: str  # "peft" | "mlx"
    rank: int
    alpha: float
    targets: list[str]
    n_layers: int
    base_dims: dict[str, list[int]]  # module -> [out, in] of the base weight
    arch: str = "llama"
    layout: str = "hf"
    n_head: int = 0
    n_head_kv: int = 0
    train_config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "trainer": self.trainer, "rank": self.rank,
                "alpha": float(self.alpha), "targets": list(self.targets), "n_layers": self.n_layers,
                "base_dims": {k: list(v) for k, v in self.base_dims.items()}, "arch": self.arch,
                "layout": self.layout, "n_head": self.n_head, "n_head_kv": self.n_head_kv,
                "train_config": self.train_config}


@dataclass
class Provenance:
    base_model_sha256: str = ""
    dataset_hash: str = ""
    ledger_snapshot: str = ""
    fact_ids: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    created: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"base_model_sha256": self.base_model_sha256, "dataset_hash": self.dataset_hash,
                "ledger_snapshot": self.ledger_snapshot, "fact_ids": list(self.fact_ids),
                "metrics": self.metrics, "created": self.created, "extra": self.extra}


@dataclass
class Adapter:
    path: Path
    spec: AdapterSpec
    provenance: Provenance
    weights: dict[str, np.ndarray]  # canonical names, see module docstring


def key(layer: int, module: str, ab: str) -> str:
    return f"layers.{layer}.{module}.lora_{ab}"


_PEFT_RE = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.default)?\.weight$")
_MLX_RE = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([ab])$")


def from_peft_state_dict(state: dict) -> dict[str, np.ndarray]:
    """peft's `lora_A.weight` (r, in) / `lora_B.weight` (out, r) under canonical names."""
    out = {}
    for name, t in state.items():
        m = _PEFT_RE.search(name)
        if m:
            arr = t.detach().to("cpu").float().numpy() if hasattr(t, "detach") else np.asarray(t)
            out[key(int(m.group(1)), m.group(2), m.group(3).lower())] = np.ascontiguousarray(arr, np.float32)
    if not out:
        raise LoraError("no LoRA tensors found in the peft state dict; was the model wrapped with peft?")
    return out


def from_mlx_weights(weights: dict) -> dict[str, np.ndarray]:
    """MLX's `lora_a` (in, r) / `lora_b` (r, out), transposed into the canonical orientation."""
    out = {}
    for name, t in weights.items():
        m = _MLX_RE.search(name)
        if m:
            arr = np.asarray(t, dtype=np.float32)
            out[key(int(m.group(1)), m.group(2), m.group(3))] = np.ascontiguousarray(arr.T)
    if not out:
        raise LoraError("no LoRA tensors found in the MLX weights (expected ...layers.N.*.lora_a/lora_b).")
    return out


def save_adapter(path: Path, weights: dict[str, np.ndarray], spec: AdapterSpec,
                 provenance: Provenance | None = None) -> Path:
    """Write an adapter directory atomically (temp dir + rename); returns its path."""
    from safetensors.numpy import save_file

    provenance = provenance or Provenance()
    if not provenance.created:
        provenance.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if spec.layout not in LAYOUTS:
        raise LoraError(f"layout must be one of {LAYOUTS}, got {spec.layout!r}.")
    problems = _check(spec, {k: tuple(v.shape) for k, v in weights.items()})
    if problems:
        raise AdapterMismatch(path, problems)
    path = Path(path)
    with atomic_dir(path) as tmp:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in weights.items()}, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
        (tmp / METADATA).write_text(json.dumps(provenance.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def _check(spec: AdapterSpec, shapes: dict[str, tuple]) -> list[str]:
    problems = []
    expected = set()
    for layer in range(spec.n_layers):
        for mod in spec.targets:
            dims = spec.base_dims.get(mod)
            if dims is None:
                problems.append(f"base_dims has no entry for target {mod}")
                continue
            out_f, in_f = dims
            for ab, want in (("a", (spec.rank, in_f)), ("b", (out_f, spec.rank))):
                k = key(layer, mod, ab)
                expected.add(k)
                if k not in shapes:
                    problems.append(f"missing tensor {k}")
                elif tuple(shapes[k]) != want:
                    problems.append(f"shape mismatch for {k}: {tuple(shapes[k])}, expected {want}")
    for k in sorted(set(shapes) - expected):
        problems.append(f"unexpected tensor {k}")
    return problems


def load_adapter(path: Path, base_model_sha256: str | None = None,
                 base_dims: dict[str, list[int]] | None = None, n_layers: int | None = None,
                 load_weights: bool = True) -> Adapter:
    """Read and validate an adapter; raises AdapterMismatch listing every problem at once."""
    path = Path(path)
    if not path.is_dir():
        raise LoraError(f"adapter {path} does not exist or is not a directory; see `reverie adapters ls`.")
    problems: list[str] = []
    docs = {}
    for name in (CONFIG, METADATA):
        try:
            docs[name] = json.loads((path / name).read_text())
        except FileNotFoundError:
            problems.append(f"{name} is missing")
        except (OSError, json.JSONDecodeError) as e:
            problems.append(f"{name} is not valid JSON ({e})")
    cfg = docs.get(CONFIG, {})
    spec = None
    if cfg:
        if cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
            problems.append(f"unknown format {cfg.get('format')!r} v{cfg.get('version')!r} "
                            f"(expected {FORMAT} v{VERSION})")
        try:
            spec = AdapterSpec(trainer=cfg["trainer"], rank=int(cfg["rank"]), alpha=float(cfg["alpha"]),
                               targets=list(cfg["targets"]), n_layers=int(cfg["n_layers"]),
                               base_dims={k: list(v) for k, v in cfg["base_dims"].items()},
                               arch=cfg.get("arch", "llama"), layout=cfg.get("layout", "hf"),
                               n_head=int(cfg.get("n_head", 0)), n_head_kv=int(cfg.get("n_head_kv", 0)),
                               train_config=cfg.get("train_config", {}))
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{CONFIG} lacks or has a bad field ({e})")
    meta = docs.get(METADATA, {})
    prov = Provenance(**{k: meta[k] for k in Provenance().to_dict() if k in meta}) if meta else Provenance()
    if base_model_sha256 and meta and prov.base_model_sha256 != base_model_sha256:
        problems.append(f"trained for base model sha256 {prov.base_model_sha256[:12] or '?'}…, "
                        f"but the current base is {base_model_sha256[:12]}…")
    if spec and base_dims:
        for mod in spec.targets:
            if mod in base_dims and list(base_dims[mod]) != list(spec.base_dims.get(mod, [])):
                problems.append(f"{mod} was trained for base shape {spec.base_dims.get(mod)}, "
                                f"the base model has {list(base_dims[mod])}")
    if spec and n_layers is not None and n_layers != spec.n_layers:
        problems.append(f"adapter has {spec.n_layers} layers, the base model has {n_layers}")
    weights: dict[str, np.ndarray] = {}
    wfile = path / WEIGHTS
    if not wfile.exists():
        problems.append(f"{WEIGHTS} is missing")
    else:
        try:
            from safetensors import safe_open

            with safe_open(str(wfile), framework="numpy") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
                if load_weights:
                    weights = {k: f.get_tensor(k) for k in f.keys()}
            if spec:
                problems.extend(_check(spec, shapes))
            bad = [k for k, v in weights.items() if not np.all(np.isfinite(v))]
            problems.extend(f"tensor {k} has NaN or inf values" for k in bad)
        except Exception as e:  # safetensors raises assorted errors on a damaged file
            problems.append(f"{WEIGHTS} is unreadable ({e})")
    if problems:
        raise AdapterMismatch(path, problems)
    return Adapter(path=path, spec=spec, provenance=prov, weights=weights)
