import shutil

import pytest

from quant.errors import QuantError
from quant.registry import DEFAULT_MODEL, Registry, check_gguf


def test_builtin_default_is_embedded_model(reverie_home):
    r = Registry(reverie_home)
    m = r.get()
    assert m.name == DEFAULT_MODEL
    assert m.path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert m.arch == "llama" and m.file_type == "Q4_1"
    assert 90e6 < m.size_bytes < 110e6


def test_unknown_model_lists_known(reverie_home):
    with pytest.raises(QuantError, match="unknown model 'nope'.*smollm2-135m"):
        Registry(reverie_home).get("nope")


def test_add_default_remove(reverie_home, default_model, tmp_path):
    r = Registry(reverie_home)
    m = r.add("mine", default_model.path, "a copy")
    assert m.source == "user" and m.arch == "llama"
    r.set_default("mine")
    assert r.get().name == "mine"
    r.remove("mine")
    assert r.default_name() == DEFAULT_MODEL
    with pytest.raises(QuantError, match="built-in"):
        r.add("smollm2-135m", default_model.path)
    with pytest.raises(QuantError, match="must be letters"):
        r.add("bad name!", default_model.path)


def test_bad_files(tmp_path, default_model):
    missing = tmp_path / "missing.gguf"
    with pytest.raises(QuantError, match="does not exist"):
        check_gguf(missing)
    text = tmp_path / "text.gguf"
    text.write_text("hello, not a model" * 100)
    with pytest.raises(QuantError, match="not a GGUF"):
        check_gguf(text)
    trunc = tmp_path / "trunc.gguf"
    with open(default_model.path, "rb") as src, open(trunc, "wb") as dst:
        dst.write(src.read(5_000_000))
    r = Registry(tmp_path / "h")
    with pytest.raises(QuantError, match="truncated"):
        r.add("trunc", trunc)


def test_missing_registered_file(reverie_home, default_model, tmp_path):
    copy = tmp_path / "copy.gguf"
    shutil.copy(default_model.path, copy)
    r = Registry(reverie_home)
    r.add("copy", copy)
    copy.unlink()
    with pytest.raises(QuantError, match="missing"):
        r.get("copy")
