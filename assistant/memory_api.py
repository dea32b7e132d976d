"""The library calls behind `reverie memory …` (`reverie bench memory` runs bench/memory_bench.py).

Owns: opening the memory store in the data directory, turning memory's domain errors into
ReverieError, and shaping results as plain dicts for the CLI to print or dump as JSON.
Knows nothing about typer or terminals; progress is a callback.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from .config import data_dir
from .errors import ReverieError

Progress = Callable[[int], None] | None
FORMATS = ("locomo",)


@contextlib.contextmanager
def _store(home: Path | None = None, heal: bool = False) -> Iterator:
    """The memory store; heal=True first catches the vector index up with the ledger (commands
    that read or extend the index: a killed import must not leave memories unsearchable)."""
    from memory import MemoryStore, MemoryStoreError

    try:
        store = MemoryStore(home or data_dir())
        if heal:
            store.heal_index()
    except MemoryStoreError as e:
        raise ReverieError(str(e)) from e
    try:
        yield store
    except MemoryStoreError as e:
        raise ReverieError(str(e)) from e
    finally:
        store.close()


def list_memories(kind: str | None = None, status: str | None = "active", limit: int = 50,
                  home: Path | None = None) -> list[dict]:
    with _store(home) as s:
        return [m.to_dict() for m in s.list(kind=kind, status=status, limit=limit)]


def search(query: str, k: int = 10, kind: str | None = None, home: Path | None = None) -> list[dict]:
    with _store(home, heal=True) as s:
        return [r.to_dict() for r in s.search(query, k=k, kinds=[kind] if kind else None)]


def show(memory_id: str, home: Path | None = None) -> dict:
    with _store(home) as s:
        return {**s.get(memory_id).to_dict(), "history": s.history(memory_id)}


def add(text: str, home: Path | None = None) -> dict:
    import time

    with _store(home, heal=True) as s:
        mem, action = s.add_fact(text, {"command": "memory add", "time": time.time()})
        return {"action": action, "memory": mem.to_dict()}


def edit(memory_id: str, text: str, home: Path | None = None) -> dict:
    with _store(home) as s:
        return s.edit(memory_id, text).to_dict()


def forget(memory_id: str, home: Path | None = None) -> dict:
    """Forget one memory everywhere (assistant.forget): returns the forget report with "memory"."""
    from .forget import forget_memory

    return forget_memory(home or data_dir(), memory_id)


def forget_matching(text: str, yes: bool = False, home: Path | None = None) -> dict:
    """Preview (yes=False) or forget everything that states `text`."""
    from .forget import forget_matching as do

    return do(home or data_dir(), text, apply=yes)


def history(memory_id: str, home: Path | None = None) -> list[dict]:
    with _store(home) as s:
        return s.history(memory_id)


def export(path: Path, home: Path | None = None) -> int:
    with _store(home) as s:
        return s.export_jsonl(Path(path))


def import_(path: Path, progress: Progress = None, home: Path | None = None) -> int:
    with _store(home, heal=True) as s:
        return s.import_jsonl(Path(path), progress)


def stats(home: Path | None = None) -> dict:
    with _store(home) as s:
        return s.stats()


def count_active(home: Path | None = None) -> int:
    with _store(home) as s:
        return len(s.list(status="active", limit=None))


def reindex(progress: Progress = None, home: Path | None = None) -> int:
    with _store(home) as s:
        return s.reindex(progress)


def import_conversation(path: Path, fmt: str = "locomo", progress: Progress = None,
                        home: Path | None = None) -> dict:
    check_format(fmt)
    with _store(home, heal=True) as s:
        return s.import_locomo(Path(path), progress)


def check_format(fmt: str) -> None:
    """ReverieError unless fmt is a conversation format we import (the LoCoMo benchmark's too)."""
    if fmt not in FORMATS:
        raise ReverieError(f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}.")
