"""Opening models for the rest of assistant/: registry lookup + runtime load in one call."""
from __future__ import annotations

from pathlib import Path


def open_runtime(home: Path, model: str | None = None, backend: str = "auto",
                 n_ctx: int = 2048, threads: int = 0, adapter: str | None = None):
    from quant.registry import Registry
    from quant.runtime import load_runtime

    info = Registry(home).get(model)
    return load_runtime(info, backend, n_ctx=n_ctx, threads=threads,
                        adapter=adapter_file(adapter) if adapter else None)


def adapter_file(path: str | Path) -> str:
    """The GGUF LoRA both runtimes load, for a .gguf path or one of our adapter directories
    (its adapter.gguf, exported on first use for an adapter that was never exported)."""
    p = Path(path)
    if not p.is_dir() or not (p / "adapter_config.json").is_file() or (p / "adapters.safetensors").exists():
        return str(p)  # a GGUF file, an mlx-lm directory, or a bad path the runtime reports
    gguf = p / "adapter.gguf"
    if not gguf.exists():
        from lora import load_adapter

        from .quant_api import export_adapter_gguf

        export_adapter_gguf(load_adapter(p), gguf)  # validates first: a damaged adapter is a clear error
    return str(gguf)
