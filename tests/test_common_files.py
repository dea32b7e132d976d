"""common.files: the one atomic-write implementation (memory, lora, quant and assistant use it)."""
from __future__ import annotations

import os
import stat

import pytest

from common.files import atomic_dir, atomic_path, atomic_write_text


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_write_text_is_private_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "settings.json"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two" and _mode(p) == 0o600
    atomic_write_text(p, "three", mode=0o640)
    assert _mode(p) == 0o640
    assert os.listdir(p.parent) == ["settings.json"]


def test_failed_block_keeps_the_old_file_and_removes_the_temp(tmp_path):
    p = tmp_path / "models.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(p, suffix=".gguf.tmp") as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".models.json.")
            assert tmp.name.endswith(".gguf.tmp")
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["models.json"]


def test_atomic_dir_replaces_a_directory_whole(tmp_path):
    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b.txt").write_text("2")
            raise ValueError("half-written")
    assert sorted(os.listdir(target)) == ["a.txt"] and os.listdir(tmp_path) == ["adapter"]
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == ["b.txt"] and _mode(target / "b.txt") == 0o600
    assert _mode(target) == 0o700 and os.listdir(tmp_path) == ["adapter"]
