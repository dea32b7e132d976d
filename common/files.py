"""Atomic, private writes: the one implementation every package uses.

A file is written under a temp name in the same directory and renamed onto its final name, so a
reader (or a crash) sees the old file or the complete new one, never half of it. Temp names
start with "." and hold ".tmp" (".old." for a directory being replaced), which is how
assistant.privacy recognises them. Files are created 0600: they hold personal data.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(target: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """A temp path (an empty 0600 file) beside target for the caller to write; renamed onto
    target if the block succeeds, removed if it fails. The caller fsyncs if it needs to."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes, mode: int = 0o600) -> None:
    """Write data to path atomically and durably (fsync before the rename), with `mode`."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)


def atomic_write_text(path: Path | str, text: str, mode: int = 0o600) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), mode)


@contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a temp dir beside target; on success it replaces target in one rename.

    A reader never sees a half-written directory: either the old one or the complete new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        # adapters and reports come from personal facts: private like the rest of the data dir
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)
            for f in files:
                os.chmod(os.path.join(root, f), 0o600)
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old.{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cached_sha256(home: Path | str, path: Path | str, sha_fn) -> str:
    """sha256 of a large file (a model), remembered in home/cache/sha256.json under its path,
    size and mtime: a file that changed is hashed again. sha_fn does the hashing."""
    import json

    path = Path(path)
    st = path.stat()
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}"
    cache = Path(home) / "cache" / "sha256.json"
    data = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in data:
        data[key] = sha_fn(path)
        atomic_write_text(cache, json.dumps(data))
    return data[key]
