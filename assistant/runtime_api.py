"""Opening models for the rest of assistant/: registry lookup + runtime load in one call."""
from __future__ import annotations

from pathlib import Path


def open_runtime(home: Path, model: str | None = None, backend: str = "auto",
                 n_ctx: int = 2048, threads: int = 0, adapter: str | None = None):
    from quant.registry import Registry
    from quant.runtime import load_runtime

    info = Registry(home).get(model)
    return load_runtime(info, backend, n_ctx=n_ctx, threads=threads, adapter=adapter)
