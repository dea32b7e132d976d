"""Picking and loading a runtime: `load_runtime(model, backend)`, and the interface names callers
use with it (defined once in quant.runtime_base, re-exported here).

Backends live in llamacpp.py and mlx_runtime.py and are imported lazily so `reverie --help`
never pays for them.
"""
from __future__ import annotations

import platform
import sys
from typing import Callable

from .errors import QuantError
from .registry import ModelInfo
from .runtime_base import (BACKENDS, GenerationConfig, GenerationStats, LogLikelihood, Runtime,
                           _log_softmax)

__all__ = ["BACKENDS", "GenerationConfig", "GenerationStats", "LogLikelihood", "Runtime",
           "_log_softmax", "default_threads", "is_apple_silicon", "load_runtime", "resolve_backend",
           "chat_format_for", "runtime_loader"]


def is_apple_silicon() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def resolve_backend(backend: str) -> str:
    if backend in (None, "", "auto"):
        return "mlx" if is_apple_silicon() else "llama.cpp"
    if backend not in BACKENDS:
        raise QuantError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    return backend


def default_threads() -> int:
    import os

    n = os.cpu_count() or 2
    return max(1, n if n <= 4 else n // 2)


def load_runtime(model: ModelInfo, backend: str = "auto", n_ctx: int = 2048, threads: int = 0,
                 adapter: str | None = None) -> Runtime:
    return runtime_loader(model, backend, n_ctx, threads, adapter)()


def runtime_loader(model: ModelInfo, backend: str = "auto", n_ctx: int = 2048, threads: int = 0,
                   adapter: str | None = None) -> Callable[[], Runtime]:
    """load_runtime in two steps: everything but the load now (the backend and chat format
    resolved, the backend's library imported, errors about them raised here), and a function
    that loads the model. llama.cpp reads the model with the GIL released, so a caller can run
    that function on a thread while it does Python work of its own, and no import then runs on
    two threads at once."""
    from pathlib import Path

    if Path(model.path).is_dir():  # an MLX directory from `reverie quant to-mlx`
        if backend == "llama.cpp":
            raise QuantError(f"model {model.name!r} is an MLX directory; llama.cpp serves GGUF "
                             "files only: use --backend mlx (or the GGUF it came from).")
        backend = "mlx"
    backend = resolve_backend(backend)
    fmt = chat_format_for(model)
    threads = threads or default_threads()
    if backend == "llama.cpp":
        from .llamacpp import LlamaCppRuntime, import_llama_cpp

        import_llama_cpp()
        if adapter:
            from . import gguf_lora  # noqa: F401 - the adapter check at load time needs it
        # the adapter goes in with the model: one load, not the base and then the base + LoRA
        return lambda: LlamaCppRuntime(model, fmt, n_ctx, threads, adapter=adapter)
    from .mlx_runtime import MLXRuntime

    def load_mlx() -> Runtime:
        rt = MLXRuntime(model, fmt, n_ctx, threads)
        if adapter:
            rt.set_adapter(adapter)
        return rt
    return load_mlx


def chat_format_for(model: ModelInfo):
    """The chat format a runtime for `model` renders prompts with (Runtime.format_chat)."""
    from pathlib import Path

    from .chat_format import pick
    from .registry import model_summary

    template = ""
    if not model.chat_format:
        template = model_summary(Path(model.path)).get("chat_template", "")
    return pick(model.chat_format, model.arch, template)
