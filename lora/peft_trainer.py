"""LoRA training with peft on the transformers twin of the served GGUF (CPU, CUDA or Apple MPS).

Owns: loading the GGUF base dequantized to float32, encoding chat examples with the serving
template (loss on the answer tokens only), the training loop with loss-spike skipping, divergence
abort, early stopping on held-out phrasings, resumable checkpoints, and writing the result as one
of our adapter directories. The chat format comes in as a `render(messages) -> str` callable, so
training and serving never disagree about a byte of the prompt.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

from .adapter import AdapterSpec, Provenance, key, load_adapter, save_adapter
from .config import TrainConfig
from .dataset import Dataset, Example
from .errors import LoraError
from .files import atomic_dir
from .training import (EarlyStopper, Progress, SpikeGuard, TrainReport, TrainResult, batch_indices,
                       lr_at, split_for_render)

_MOD_RE = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)$")
ARCH = {"llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def resolve_device(pref: str = "auto") -> str:
    import torch

    if pref != "auto":
        if pref == "cuda" and not torch.cuda.is_available():
            raise LoraError("device cuda requested but CUDA is not available; use --device cpu.")
        if pref == "mps" and not torch.backends.mps.is_available():
            raise LoraError("device mps requested but Apple MPS is not available; use --device cpu.")
        return pref
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_base(gguf_path: Path, device: str = "auto"):
    """(model, tokenizer): the GGUF dequantized to float32 by transformers, in eval mode."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise LoraError("the peft trainer needs torch and transformers; run `make install`.") from e
    p = Path(gguf_path)
    if not p.is_file():
        raise LoraError(f"base model {p} does not exist; check `reverie models list`.")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the CLI draws its own progress; keep stderr readable
        os.environ["TQDM_DISABLE"] = "1"  # the GGUF de-quantization bar is plain tqdm
        # transformers' GGUF de-quantization draws a tqdm bar that ignores both switches above
        # once tqdm is imported; it goes to a buffer (exceptions still propagate)
        with contextlib.redirect_stderr(io.StringIO()):
            tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
            model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
    except Exception as e:  # transformers raises many types for an unsupported or damaged file
        raise LoraError(f"transformers cannot load {p} ({e}); only GGUF architectures transformers "
                        "supports (llama, gemma3, ...) can be trained with peft.") from e
    model.to(resolve_device(device))
    model.eval()
    return model, tok


def encode(tokenizer, render: Callable, example: Example | dict, max_seq_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with labels -100 on the prompt, truncated from the left of the prompt."""
    messages = example.messages if isinstance(example, Example) else example["messages"]
    prompt, target = split_for_render(render, messages)
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    t_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    if len(t_ids) >= max_seq_len:
        t_ids = t_ids[: max_seq_len // 2]
    room = max_seq_len - len(t_ids)
    if len(p_ids) > room:
        p_ids = p_ids[:1] + p_ids[len(p_ids) - room + 1:]  # keep BOS / first token, drop old context
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device: str):
    import torch

    n = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def batch_loss(model, ids, labels, mask):
    """Mean cross-entropy over answer tokens (labels != -100), shifted for next-token prediction.

    The vocabulary projection runs only at the positions that predict an answer token (~15% of
    a chat example): on the 135M model it is a fifth of the forward cost and most of the
    activation memory when applied everywhere."""
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(causal, "model", None), getattr(causal, "lm_head", None)
    if body is None or head is None:  # not a *ForCausalLM layout: the plain path
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               labels[:, 1:].reshape(-1), ignore_index=-100)
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = head(hidden[keep]).float()
    cap = getattr(causal.config, "final_logit_softcapping", None)
    if cap:
        logits = logits.div(cap).tanh().mul(cap)
    return F.cross_entropy(logits, target[keep])


def anchor_kl_loss(model, ids, mask):
    """Mean KL(base || adapted) of next-token distributions over every real position: the base is
    the same peft model with its adapter switched off, so no second copy is held in memory."""
    import torch
    import torch.nn.functional as F

    keep = mask[:, :-1].bool()
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float()
    adapted = model(input_ids=ids, attention_mask=mask).logits[:, :-1][keep].float()
    return F.kl_div(F.log_softmax(adapted, -1), F.log_softmax(base, -1), log_target=True,
                    reduction="batchmean")


def _peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def lora_modules(model) -> dict[tuple[int, str], object]:
    out = {}
    for name, mod in model.named_modules():
        m = _MOD_RE.search(name)
        if m and hasattr(mod, "lora_A"):
            out[(int(m.group(1)), m.group(2))] = mod
    return out


def lora_weights(model) -> dict:
    """Canonical name -> numpy copy of every LoRA A (r, in) and B (out, r)."""
    out = {}
    for (layer, mod), m in lora_modules(model).items():
        out[key(layer, mod, "a")] = m.lora_A["default"].weight.detach().cpu().float().numpy().copy()
        out[key(layer, mod, "b")] = m.lora_B["default"].weight.detach().cpu().float().numpy().copy()
    return out


def set_lora_weights(model, weights: dict) -> None:
    import torch

    mods = lora_modules(model)
    missing = [key(l, m, ab) for (l, m) in mods for ab in "ab" if key(l, m, ab) not in weights]
    if missing:
        raise LoraError(f"initial adapter lacks {len(missing)} tensors (e.g. {missing[0]}); it was "
                        "trained with other targets or rank: use --strategy retrain.")
    with torch.no_grad():
        for (layer, mod), m in mods.items():
            for ab, lin in (("a", m.lora_A["default"]), ("b", m.lora_B["default"])):
                src = torch.as_tensor(weights[key(layer, mod, ab)])
                if tuple(src.shape) != tuple(lin.weight.shape):
                    raise LoraError(f"initial adapter tensor {key(layer, mod, ab)} has shape "
                                    f"{tuple(src.shape)}, expected {tuple(lin.weight.shape)}; use --strategy retrain.")
                lin.weight.copy_(src)


def spec_for(model, config: TrainConfig, trainer: str = "peft", arch: str | None = None) -> AdapterSpec:
    c = model.config
    c = getattr(c, "text_config", None) or c
    dims = {}
    for (layer, mod), m in lora_modules(model).items():
        if layer == 0:
            w = m.base_layer.weight
            dims[mod] = [int(w.shape[0]), int(w.shape[1])]
    return AdapterSpec(trainer=trainer, rank=config.rank, alpha=config.alpha,
                       targets=list(config.target_modules), n_layers=int(c.num_hidden_layers),
                       base_dims=dims, arch=arch or ARCH.get(c.model_type, c.model_type), layout="hf",
                       n_head=int(c.num_attention_heads),
                       n_head_kv=int(getattr(c, "num_key_value_heads", c.num_attention_heads)),
                       train_config=config.to_dict())


def wrap(base, config: TrainConfig):
    """A deep copy of base with fresh LoRA layers (seeded); the caller's base stays untouched."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)
    lc = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                    target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5 (FutureWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        return get_peft_model(copy.deepcopy(base), lc)


def _fingerprint(dataset_hash: str, config: TrainConfig, init: str) -> str:
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "device")}
    blob = json.dumps({"data": dataset_hash, "config": cfg, "init": init}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _save_checkpoint(ckpt: Path, model, opt, state: dict, best: dict | None) -> None:
    import torch
    from safetensors.numpy import save_file

    with atomic_dir(ckpt) as tmp:
        save_file(lora_weights(model), str(tmp / "lora.safetensors"))
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate()}, tmp / "state.pt")
        (tmp / "state.json").write_text(json.dumps(state))


def _load_checkpoint(ckpt: Path, fingerprint: str):
    """(state, lora weights, best weights, torch state) or None if absent, foreign or damaged."""
    import torch
    from safetensors.numpy import load_file

    try:
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("fingerprint") != fingerprint:
            return None
        weights = load_file(str(ckpt / "lora.safetensors"))
        best = load_file(str(ckpt / "best.safetensors")) if (ckpt / "best.safetensors").exists() else None
        tstate = torch.load(ckpt / "state.pt", weights_only=False)
        return state, weights, best, tstate
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def train_peft(dataset: Dataset | list[Example], config: TrainConfig, render: Callable, *,
               out_dir: Path, work_dir: Path, base_model_path: Path | None = None,
               model=None, tokenizer=None, on_report: Progress | None = None,
               init_adapter: Path | None = None, provenance: Provenance | None = None,
               stop_at_step: int | None = None, arch: str | None = None) -> TrainResult:
    """Train a LoRA and save it to out_dir (atomically). Pass model+tokenizer (from load_base) to
    reuse a loaded base; it is deep-copied, never modified. A checkpoint in work_dir from the
    same data and config is resumed. On divergence nothing is written to out_dir."""
    import torch

    if model is None or tokenizer is None:
        if base_model_path is None:
            raise LoraError("train_peft needs base_model_path or a loaded model and tokenizer.")
        model, tokenizer = load_base(base_model_path, config.device)
    train = dataset.train if isinstance(dataset, Dataset) else list(dataset)
    holdout = dataset.holdout if isinstance(dataset, Dataset) else []
    if not train:
        raise LoraError("nothing to train on: the dataset is empty. Add facts or feedback first.")
    data_hash = dataset.hash if isinstance(dataset, Dataset) else hashlib.sha256(
        json.dumps([e.to_dict() for e in train], sort_keys=True).encode()).hexdigest()
    device = str(next(model.parameters()).device).split(":")[0]
    rows = [encode(tokenizer, render, e, config.max_seq_len) for e in train]
    kinds = [e.kind if isinstance(e, Example) else e.get("kind", "") for e in train]
    held = [encode(tokenizer, render, e, config.max_seq_len) for e in holdout]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    total = config.total_steps(len(rows))

    peft_model = wrap(model, config)
    if init_adapter is not None:
        set_lora_weights(peft_model, load_adapter(Path(init_adapter)).weights)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    guard, stopper = SpikeGuard(config), EarlyStopper(config.patience)
    work_dir = Path(work_dir)
    ckpt = work_dir / "checkpoint"
    fp = _fingerprint(data_hash, config, str(init_adapter or ""))
    losses: list[float] = []
    holdout_losses: list[float] = []
    best: dict | None = None
    start = 0
    found = _load_checkpoint(ckpt, fp) if config.checkpoint_every else None
    if found:
        state, weights, best, tstate = found
        set_lora_weights(peft_model, weights)
        opt.load_state_dict(tstate["optimizer"])
        torch.set_rng_state(tstate["torch_rng"])
        random.setstate(tstate["python_rng"])
        guard.load(state["guard"])
        stopper.load(state["stopper"])
        losses, holdout_losses, start = state["losses"], state["holdout_losses"], state["step"]
        if on_report:
            on_report(TrainReport(start, total, losses[-1] if losses else float("nan"), 0.0,
                                  _peak_mb(device), guard.skipped, event="resume"))

    def report(step, loss, event, hl=None):
        if on_report:
            on_report(TrainReport(step, total, loss, tokens / train_s if train_s > 0 else 0.0,
                                  _peak_mb(device), guard.skipped, lr_at(step - 1, total, config), hl, event))

    def eval_holdout() -> float:
        peft_model.eval()
        with torch.no_grad():
            vals = [batch_loss(peft_model, *collate([r], pad, device)).item() for r in held]
        peft_model.train()
        return sum(vals) / len(vals)

    t_start = time.perf_counter()
    tokens, train_s = 0, 0.0
    aborted, reason, stopped_early, interrupted = False, "", False, False
    peft_model.train()
    step = start
    while step < total:
        t0 = time.perf_counter()
        idx = batch_indices(step, len(rows), config.batch_size, config.seed)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, config)
        anchor = [i for i in idx if kinds[i] == "anchor"] if config.anchor_kl else []
        plain = [i for i in idx if i not in anchor]
        loss = None
        if plain:
            ids, labels, mask = collate([rows[i] for i in plain], pad, device)
            loss = batch_loss(peft_model, ids, labels, mask)
        if anchor:  # anchors keep the base model's whole distribution (see TrainConfig.anchor_kl)
            a_ids, _, a_mask = collate([rows[i] for i in anchor], pad, device)
            kl = config.anchor_kl * anchor_kl_loss(peft_model, a_ids, a_mask)
            loss = kl if loss is None else loss + kl
        value = float(loss.item())
        verdict = guard.check(value)
        step += 1
        if verdict.startswith("abort"):
            aborted, reason = True, verdict.split(":", 1)[1]
            report(step, value, "abort")
            break
        if verdict == "skip":
            opt.zero_grad(set_to_none=True)
            report(step, value, "skip")
            continue
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        tokens += sum(len(rows[i][0]) for i in idx)
        losses.append(value)
        report(step, value, "step")
        if held and (step % config.eval_every == 0 or step == total):
            hl = eval_holdout()
            holdout_losses.append(hl)
            improved, stop = stopper.update(hl, step)
            if improved:
                best = lora_weights(peft_model)
            report(step, value, "eval", hl)
            if stop:
                stopped_early = True
                break
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
            _save_checkpoint(ckpt, peft_model, opt, {
                "fingerprint": fp, "step": step, "guard": guard.state(), "stopper": stopper.state(),
                "losses": losses, "holdout_losses": holdout_losses}, best)
            report(step, value, "checkpoint")
        if stop_at_step is not None and step >= stop_at_step:
            interrupted = True
            report(step, value, "stop")
            break

    seconds = time.perf_counter() - t_start
    result = TrainResult(adapter_dir=None, steps=step, final_loss=losses[-1] if losses else float("nan"),
                         tokens_per_s=tokens / train_s if train_s > 0 else 0.0, seconds=seconds,
                         aborted=aborted, abort_reason=reason, stopped_early=stopped_early,
                         interrupted=interrupted, resumed_from=start, skipped=guard.skipped,
                         losses=losses, holdout_losses=holdout_losses, trainer="peft")
    if aborted or interrupted:
        return result
    if best is not None and holdout_losses and holdout_losses[-1] > stopper.best:
        set_lora_weights(peft_model, best)  # early stopping keeps the best held-out state
    prov = provenance or Provenance()
    prov.dataset_hash = prov.dataset_hash or data_hash
    if isinstance(dataset, Dataset) and not prov.fact_ids:
        prov.fact_ids = list(dataset.fact_ids)
    prov.metrics = {**prov.metrics, "final_loss": result.final_loss, "steps": step,
                    "tokens_per_s": result.tokens_per_s, "skipped": guard.skipped,
                    "best_holdout_loss": stopper.best if holdout_losses else None}
    result.adapter_dir = save_adapter(Path(out_dir), lora_weights(peft_model),
                                      spec_for(peft_model, config, "peft", arch), prov)
    shutil.rmtree(ckpt, ignore_errors=True)  # done: a later run must not resume this one
    return result
