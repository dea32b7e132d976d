"""The quant tools as the CLI (and `reverie sleep`) see them: merge, quantize, report, to-mlx, and
exporting a trained adapter directory as a GGUF LoRA.

Owns: turning user-facing names (model names, adapter versions, paths) into files, choosing
output paths in the data dir, registering a merged model only after its file is complete, and
picking the held-out text for reports. The work itself is in quant/ (merge, quantize, quality,
gguf_mlx); nothing here imports typer.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Callable

from .errors import ReverieError

Progress = Callable[[str], None]
# (reference as the user typed it, data dir) -> path of a GGUF LoRA file
AdapterResolver = Callable[[str, Path], Path]


def _quiet(_: str) -> None:
    pass


def _home(home: Path | None) -> Path:
    from .config import data_dir

    return Path(home) if home else data_dir()


def path_adapter_resolver(ref: str, home: Path) -> Path:
    """ref is a path to a GGUF LoRA file, or an adapter version from `reverie adapters ls`."""
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    if p.suffix == ".gguf" or "/" in ref:
        raise ReverieError(f"adapter file {p} does not exist; check the path.")
    from .adapters_api import adapter_get

    try:
        row = adapter_get(home, ref)
    except Exception as e:  # noqa: BLE001 - the ledger's own not-found error, worded for merge
        raise ReverieError(f"no adapter file or adapter version {ref!r}; pass the path to a GGUF "
                           "LoRA file or a version from `reverie adapters ls`.") from e
    gguf = Path(row.gguf or "")
    if not row.gguf or not gguf.is_file():
        raise ReverieError(f"adapter {row.id}'s GGUF file {row.gguf or '(none)'} is missing; "
                           "it cannot be merged.")
    return gguf


_resolver: AdapterResolver = path_adapter_resolver


def export_adapter_gguf(adapter, out_path: Path | str, *, dtype: str = "f32",
                        skip_permutation: bool = False) -> Path:
    """Write one of our adapter directories (lora's format) as the GGUF LoRA llama.cpp loads
    (quant's format), atomically: lora reads and validates the directory, quant.gguf_lora names
    the tensors, puts peft's q/k rows in GGUF order and writes the file with provenance KVs.
    skip_permutation exists only so the parity tests can show that the permutation has teeth."""
    import json

    from lora import Adapter, load_adapter
    from lora.adapter import key
    from quant.gguf_lora import base_tensor_name, to_gguf_rows, write_lora_gguf

    if not isinstance(adapter, Adapter):
        adapter = load_adapter(Path(adapter))
    s, prov = adapter.spec, adapter.provenance
    pairs = {base_tensor_name(layer, mod): (adapter.weights[key(layer, mod, "a")],
                                            adapter.weights[key(layer, mod, "b")])
             for layer in range(s.n_layers) for mod in s.targets}
    if s.layout == "hf" and not skip_permutation:  # MLX adapters were trained on GGUF rows
        pairs = to_gguf_rows(pairs, s.arch, s.n_head, s.n_head_kv)
    kv = {"general.name": f"reverie-lora-{(prov.dataset_hash or 'adapter')[:12]}",
          "reverie.trainer": s.trainer, "reverie.rank": int(s.rank),
          "reverie.base_model_sha256": prov.base_model_sha256 or "",
          "reverie.dataset_hash": prov.dataset_hash or "",
          "reverie.ledger_snapshot": prov.ledger_snapshot or "",
          "reverie.fact_ids": json.dumps(list(prov.fact_ids)), "reverie.created": prov.created or ""}
    return write_lora_gguf(out_path, s.arch, pairs, float(s.alpha), kv, dtype)


def set_adapter_resolver(fn: AdapterResolver | None) -> None:
    """Install how adapter versions become files (None restores path-only resolution)."""
    global _resolver
    _resolver = fn or path_adapter_resolver


def _registry(home: Path):
    from quant.registry import Registry

    return Registry(home)


def _model_path(home: Path, model: str | None) -> tuple[str, Path]:
    """(name, path) of a registered model name, a .gguf path, or the default model."""
    reg = _registry(home)
    name = model or reg.default_name()
    # Registry.get parses the whole GGUF header (seconds for a 49k-token vocabulary); the
    # quant tools parse the file themselves, so take the path from the cheap listing
    for m in reg.list():
        if m.name == name and m.present and m.path and Path(m.path).is_file():
            return m.name, Path(m.path)
    p = Path(name).expanduser()
    if p.suffix == ".gguf" and p.is_file():
        return p.stem, p.resolve()
    m = reg.get(name)  # assembles gemma on first use, or raises a clear error
    return m.name, Path(m.path)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"


def held_out_text() -> str:
    """Held-out prose for perplexity/KL: the shipped general text, else quant's own default."""
    try:
        text = resources.files("assistant").joinpath("data/general_text.txt").read_text("utf-8")
        if len(text.split()) >= 100:
            return text
    except (FileNotFoundError, OSError):
        pass
    from quant.quality import DEFAULT_TEXT

    return DEFAULT_TEXT


def merge_adapter(adapter: str, qtype: str = "same", name: str | None = None,
                  base: str | None = None, home: Path | None = None,
                  resolve_adapter: AdapterResolver | None = None,
                  progress: Progress = _quiet) -> dict:
    """Bake adapter into base (default model if None), write it under models/, register it."""
    from quant.merge import merge
    from quant.quantize import check_type

    home = _home(home)
    qtype = check_type(qtype, allow_same=True)  # fail on a bad type before resolving anything
    adapter_path = (resolve_adapter or _resolver)(adapter, home)
    base_name, base_path = _model_path(home, base)
    reg = _registry(home)
    tag = qtype.lower() if qtype != "same" else "merged"
    stem = Path(adapter_path).stem
    if stem == "adapter":  # sleep's adapters are all adapter.gguf in a directory named for the version
        stem = Path(adapter_path).parent.name
    name = name or _safe_name(f"{base_name}-{stem}-{tag}")
    if name in reg.names():
        raise ReverieError(f"a model named {name!r} already exists; pass --name NEW_NAME or "
                           f"remove it with `reverie models remove {name}`.")
    out = reg.models_dir / f"{name}.gguf"
    result = merge(base_path, adapter_path, out, qtype, progress=progress)
    try:
        reg.add(name, out, description=f"{base_name} + adapter {Path(adapter_path).name} "
                f"merged, {result.type}", source="merged")
    except Exception:
        out.unlink(missing_ok=True)  # never leave an unregistered merged file behind
        raise
    d = result.to_dict()
    d.update(name=name, base_name=base_name)
    return d


def quantize_model(src: str, qtype: str, out: str | None = None, name: str | None = None,
                   home: Path | None = None, progress: Progress = _quiet) -> dict:
    """Quantize a model name, .gguf path or HF safetensors directory; optionally register it."""
    from quant.quantize import check_type, default_out, quantize

    home = _home(home)
    qtype = check_type(qtype)
    p = Path(src).expanduser()
    if p.is_dir():
        src_path = p
    else:
        _, src_path = _model_path(home, src)
    reg = _registry(home)
    if name and name in reg.names():
        raise ReverieError(f"a model named {name!r} already exists; choose another --name.")
    if out is None:
        out_path = default_out(src_path, qtype)
        if not _writable_dir(out_path.parent) or "site-packages" in str(out_path):
            # built-in models live inside the install; results go to the data dir instead
            out_path = reg.models_dir / out_path.name
    else:
        out_path = Path(out).expanduser()
    result = quantize(src_path, qtype, out_path, progress=progress)
    d = result.to_dict()
    if name:
        try:
            reg.add(name, Path(result.path), description=f"{Path(src).name} quantized to {qtype}")
        except Exception:
            Path(result.path).unlink(missing_ok=True)
            raise
        d["name"] = name
    return d


def _writable_dir(d: Path) -> bool:
    import os

    return d.is_dir() and os.access(d, os.W_OK)


def quality_report(model: str | None, against: str | None = None, home: Path | None = None,
                   text: str | None = None, decode_tokens: int = 64,
                   progress: Progress = _quiet) -> dict:
    """Size, perplexity, decode tokens/s of model; KL and top-1 agreement vs `against`."""
    from quant.quality import measure

    home = _home(home)
    name, path = _model_path(home, model)
    ref_path = None
    if against:
        _, ref_path = _model_path(home, against)
    q = measure(path, text or held_out_text(), ref_path, decode_tokens=decode_tokens,
                progress=progress)
    d = q.to_dict()
    d["name"] = name
    return d


def to_mlx(model: str | None, out: str | None = None, bits: int = 8, name: str | None = None,
           register: bool = True, home: Path | None = None, progress: Progress = _quiet) -> dict:
    """Write an MLX model directory (quantized) for a GGUF model; any GGUF type incl. K-quants.

    The directory is written under a temporary name and renamed when complete; it is registered
    as model `name` (default SOURCE-mlx) only after that, so a failure leaves nothing behind.
    """
    import shutil

    from quant.gguf_mlx import load_gguf_model, save_mlx_model

    home = _home(home)
    src_name, path = _model_path(home, model)
    reg = _registry(home)
    name = name or _safe_name(f"{src_name}-mlx")
    if register and name in reg.names():
        raise ReverieError(f"a model named {name!r} already exists; pass --name NEW_NAME or "
                           f"remove it with `reverie models remove {name}`.")
    out_dir = Path(out).expanduser() if out else reg.models_dir / name
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ReverieError(f"{out_dir} already exists and is not empty; pass --out NEW_DIR.")
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        progress(f"converting {path.name} to MLX")
        mdl, tok, config = load_gguf_model(path, requant_bits=bits)
        save_mlx_model(mdl, config, tmp, tok)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        tmp.rename(out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReverieError(f"cannot write {out_dir}: {e.strerror or e}; choose a writable --out.") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result = {"name": src_name, "source": str(path), "path": str(out_dir), "requant_bits": bits}
    if register:
        chat = next((m.chat_format for m in reg.list() if m.name == src_name), "")
        try:
            reg.add(name, out_dir, description=f"{src_name} converted to MLX "
                    f"(K-quants requantized at {bits} bits)", source="mlx", chat_format=chat)
        except Exception:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        result["registered_as"] = name
    return result


def check_merge_type(qtype: str) -> str:
    """A `sleep --merge` value, checked before the night's work starts ("" and "none" pass)."""
    if not qtype or qtype.lower() in ("none", "off", "no"):
        return qtype
    from quant.quantize import check_type

    return check_type(qtype, allow_same=True)

