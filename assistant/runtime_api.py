"""Opening models for the rest of assistant/: registry lookup + runtime load in one call."""
from __future__ import annotations

from pathlib import Path


def open_runtime(home: Path, model: str | None = None, backend: str = "auto",
                 n_ctx: int = 2048, threads: int = 0, adapter: str | None = None):
    """model: a name or path the registry resolves (None: the default), or a ModelInfo."""
    from quant.runtime import load_runtime

    info = model if hasattr(model, "path") else find_model(home, model)
    return load_runtime(info, backend, n_ctx=n_ctx, threads=threads,
                        adapter=adapter_file(adapter) if adapter else None)


def find_model(home: Path, model: str | None = None):
    """The registry's ModelInfo for a name or path (None: the default model)."""
    from quant.registry import Registry

    return Registry(home).get(model)


def prepare_runtime(info, backend: str = "auto", adapter: str | None = None):
    """Everything open_runtime does before the load itself: the backend resolved and its library
    imported, errors about them raised. Then an open_runtime on another thread imports nothing
    while this one goes on importing (two threads importing at once can deadlock on a circular
    import; llama.cpp itself loads with the GIL released). Returns the chat format the runtime
    will render prompts with."""
    from quant.runtime import chat_format_for, runtime_loader

    runtime_loader(info, backend, adapter=adapter)
    return chat_format_for(info)


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
