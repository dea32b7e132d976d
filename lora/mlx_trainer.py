"""QLoRA with MLX directly on the quantized GGUF model (Apple's path; runs on Linux CPU, slowly).

Owns: wrapping the caller's MLX model (from quant's GGUF loader — this module never imports
quant/) with mlx_lm.tuner LoRA layers, the same loop semantics as the peft trainer (TrainConfig,
TrainReport/TrainResult, spike skip, divergence abort, checkpoints, seeding), and saving the
result as one of our adapter directories in GGUF row layout (no q/k permutation on export).
The caller's model is restored (LoRA layers removed) when training ends.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .adapter import AdapterSpec, Provenance, from_mlx_weights, key, load_adapter, save_adapter
from .config import TrainConfig
from .dataset import Dataset, Example
from .errors import LoraError
from .files import atomic_dir
from .training import (Progress, SpikeGuard, TrainReport, TrainResult, batch_indices, lr_at,
                       split_for_render)

_ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}


def _path(mod: str) -> str:
    return ("self_attn." if mod in _ATTN else "mlp.") + mod


def tokenize(tokenizer, text: str, add_bos: bool) -> list[int]:
    """Our GGUF tokenizer (`encode(text, add_bos)`) or a Hugging Face one (callable)."""
    try:
        return list(tokenizer.encode(text, add_bos=add_bos))
    except TypeError:
        return list(tokenizer(text, add_special_tokens=add_bos)["input_ids"])


def encode(tokenizer, render: Callable, example: Example, max_seq_len: int) -> tuple[list[int], list[int]]:
    prompt, target = split_for_render(render, example.messages)
    p, t = tokenize(tokenizer, prompt, True), tokenize(tokenizer, target, False)
    t = t[: max_seq_len // 2] if len(t) >= max_seq_len else t
    room = max_seq_len - len(t)
    if len(p) > room:
        p = p[:1] + p[len(p) - room + 1:]
    return p + t, [-100] * len(p) + t


def _lora_layers(model, targets) -> dict[tuple[int, str], object]:
    out = {}
    for i, layer in enumerate(model.layers):
        for mod in targets:
            parent = getattr(layer, "self_attn" if mod in _ATTN else "mlp")
            out[(i, mod)] = getattr(parent, mod)
    return out


def _weights(model, targets) -> dict[str, np.ndarray]:
    raw = {}
    for (i, mod), m in _lora_layers(model, targets).items():
        raw[f"layers.{i}.{_path(mod)}.lora_a"] = np.array(m.lora_a)
        raw[f"layers.{i}.{_path(mod)}.lora_b"] = np.array(m.lora_b)
    return from_mlx_weights(raw)


def _set_weights(model, targets, weights: dict) -> None:
    import mlx.core as mx

    for (i, mod), m in _lora_layers(model, targets).items():
        for ab in "ab":
            k = key(i, mod, ab)
            if k not in weights:
                raise LoraError(f"initial adapter lacks {k}; use --strategy retrain.")
            want = getattr(m, f"lora_{ab}").shape
            arr = np.asarray(weights[k]).T
            if tuple(arr.shape) != tuple(want):
                raise LoraError(f"initial adapter tensor {k} has the wrong shape; use --strategy retrain.")
            setattr(m, f"lora_{ab}", mx.array(arr))


def base_logprobs(model, targets, ids):
    """Next-token log-probs of the model with its LoRA switched off (scale 0, no dropout): what
    anchors pull the adapter back towards. Computed outside the gradient, once a step, so no
    second copy of the model is held (the peft trainer does the same with disable_adapter)."""
    import mlx.core as mx
    import mlx.nn as nn

    layers = list(_lora_layers(model, targets).values())
    scales = [m.scale for m in layers]
    training = model.training
    model.eval()
    try:
        for m in layers:
            m.scale = 0.0
        lp = nn.log_softmax(model(ids).astype(mx.float32), axis=-1)
        mx.eval(lp)
    finally:
        for m, s in zip(layers, scales):
            m.scale = s
        if training:
            model.train()
    return mx.stop_gradient(lp)


def anchor_kl(model, ids, mask, base_lp):
    """Mean KL(base || adapted) over the real positions (mask 1) of the inputs ids: the same
    objective as the peft trainer's anchor_kl_loss (TrainConfig.anchor_kl)."""
    import mlx.core as mx
    import mlx.nn as nn

    lq = nn.log_softmax(model(ids).astype(mx.float32), axis=-1)
    kl = (mx.exp(base_lp) * (base_lp - lq)).sum(axis=-1)
    return (kl * mask).sum() / mx.maximum(mask.sum(), 1)


def _pad(rows, n: int):
    import mlx.core as mx

    ids = mx.array([r[0] + [0] * (n - len(r[0])) for r in rows])
    labels = mx.array([r[1] + [-100] * (n - len(r[1])) for r in rows])
    return ids, labels


def train_mlx(dataset: Dataset | list[Example], config: TrainConfig, render: Callable, *, model,
              tokenizer, out_dir: Path, work_dir: Path, on_report: Progress | None = None,
              init_adapter: Path | None = None, provenance: Provenance | None = None,
              stop_at_step: int | None = None, arch: str = "llama") -> TrainResult:
    """Same contract as train_peft, on an MLX model the caller loaded from the GGUF file."""
    try:
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        from mlx.utils import tree_flatten, tree_unflatten
        from mlx_lm.tuner.utils import linear_to_lora_layers
    except ImportError as e:
        raise LoraError('the MLX trainer needs mlx and mlx-lm; install "mlx[cpu]" mlx-lm (Linux) '
                        "or mlx mlx-lm (macOS).") from e
    train = dataset.train if isinstance(dataset, Dataset) else list(dataset)
    if not train:
        raise LoraError("nothing to train on: the dataset is empty. Add facts or feedback first.")
    data_hash = dataset.hash if isinstance(dataset, Dataset) else ""
    rows = [encode(tokenizer, render, e, config.max_seq_len) for e in train]
    kinds = [e.kind if isinstance(e, Example) else e.get("kind", "") for e in train]
    total = config.total_steps(len(rows))
    targets = list(config.target_modules)
    originals = {k: m for k, m in _lora_layers(model, targets).items()}

    mx.random.seed(config.seed)
    model.freeze()
    linear_to_lora_layers(model, len(model.layers), {
        "rank": config.rank, "scale": config.scale, "dropout": config.dropout,
        "keys": [_path(m) for m in targets]})
    try:
        if init_adapter is not None:
            _set_weights(model, targets, load_adapter(Path(init_adapter)).weights)
        opt = optim.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)

        def loss_fn(m, ids, labels, a_ids, a_mask, a_base):
            loss = mx.array(0.0)
            if ids is not None:  # answers: cross-entropy on the answer tokens
                logits = m(ids[:, :-1]).astype(mx.float32)
                y = labels[:, 1:]
                mask = (y != -100)
                ce = nn.losses.cross_entropy(logits, mx.where(mask, y, 0)) * mask
                loss = ce.sum() / mx.maximum(mask.sum(), 1)
            if a_ids is not None:  # anchors: keep the base model's whole distribution
                loss = loss + config.anchor_kl * anchor_kl(m, a_ids, a_mask, a_base)
            return loss

        step_fn = nn.value_and_grad(model, loss_fn)
        guard = SpikeGuard(config)
        ckpt = Path(work_dir) / "checkpoint"
        fp = json.dumps({"data": data_hash or str(len(rows)), "cfg": {k: v for k, v in config.to_dict().items()
                                                                       if k not in ("checkpoint_every", "device")},
                         "init": str(init_adapter or ""), "trainer": "mlx"}, sort_keys=True)
        losses: list[float] = []
        start = 0
        if config.checkpoint_every and (ckpt / "state.json").exists():
            try:
                state = json.loads((ckpt / "state.json").read_text())
                if state["fingerprint"] == fp:
                    model.load_weights(str(ckpt / "lora.safetensors"), strict=False)
                    opt_state = mx.load(str(ckpt / "optimizer.safetensors"))
                    opt.state = tree_unflatten(list(opt_state.items()))
                    guard.load(state["guard"])
                    losses, start = state["losses"], state["step"]
                    mx.random.seed(config.seed + start)
            except (OSError, ValueError, KeyError):
                start, losses = 0, []
        t_start, tokens, train_s = time.perf_counter(), 0, 0.0
        aborted, reason, interrupted = False, "", False

        def report(step, loss, event):
            if on_report:
                peak = mx.get_peak_memory() / 2**20 if hasattr(mx, "get_peak_memory") else 0.0
                on_report(TrainReport(step, total, loss, tokens / train_s if train_s else 0.0, peak,
                                      guard.skipped, lr_at(step - 1, total, config), None, event))

        model.train()
        step = start
        while step < total:
            t0 = time.perf_counter()
            idx = batch_indices(step, len(rows), config.batch_size, config.seed)
            batch = [rows[i] for i in idx]
            anchor = [i for i in idx if kinds[i] == "anchor"] if config.anchor_kl else []
            plain = [rows[i] for i in idx if i not in anchor]
            ids = labels = a_ids = a_mask = a_base = None
            if plain:
                ids, labels = _pad(plain, max(len(r[0]) for r in plain))
            if anchor:
                n = max(len(rows[i][0]) for i in anchor)
                a_ids = _pad([rows[i] for i in anchor], n)[0][:, :-1]
                a_mask = mx.array([[1.0 if j < len(rows[i][0]) else 0.0 for j in range(n - 1)]
                                   for i in anchor])
                a_base = base_logprobs(model, targets, a_ids)
            opt.learning_rate = lr_at(step, total, config)
            loss, grads = step_fn(model, ids, labels, a_ids, a_mask, a_base)
            mx.eval(loss, grads)
            value = float(loss.item())
            verdict = guard.check(value)
            step += 1
            if verdict.startswith("abort"):
                aborted, reason = True, verdict.split(":", 1)[1]
                report(step, value, "abort")
                break
            if verdict == "skip":
                report(step, value, "skip")
                continue
            if config.grad_clip:
                grads, _ = optim.clip_grad_norm(grads, config.grad_clip)
            opt.update(model, grads)
            mx.eval(model.trainable_parameters(), opt.state)
            train_s += time.perf_counter() - t0
            tokens += sum(len(r[0]) for r in batch)
            losses.append(value)
            report(step, value, "step")
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
                with atomic_dir(ckpt) as tmp:
                    mx.save_safetensors(str(tmp / "lora.safetensors"),
                                        dict(tree_flatten(model.trainable_parameters())))
                    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(opt.state)))
                    (tmp / "state.json").write_text(json.dumps(
                        {"fingerprint": fp, "step": step, "guard": guard.state(), "losses": losses}))
                report(step, value, "checkpoint")
            if stop_at_step is not None and step >= stop_at_step:
                interrupted = True
                break
        result = TrainResult(adapter_dir=None, steps=step, final_loss=losses[-1] if losses else float("nan"),
                             tokens_per_s=tokens / train_s if train_s else 0.0,
                             seconds=time.perf_counter() - t_start, aborted=aborted, abort_reason=reason,
                             interrupted=interrupted, resumed_from=start, skipped=guard.skipped,
                             losses=losses, trainer="mlx")
        if aborted or interrupted:
            return result
        weights = _weights(model, targets)
        first = _lora_layers(model, targets)
        dims = {mod: [int(first[(0, mod)].lora_b.shape[1]), int(first[(0, mod)].lora_a.shape[0])]
                for mod in targets}
        spec = AdapterSpec(trainer="mlx", rank=config.rank, alpha=config.alpha, targets=targets,
                           n_layers=len(model.layers), base_dims=dims, arch=arch, layout="gguf",
                           n_head=int(getattr(model.args, "num_attention_heads", 0)) if hasattr(model, "args") else 0,
                           n_head_kv=int(getattr(model.args, "num_key_value_heads", 0)) if hasattr(model, "args") else 0,
                           train_config=config.to_dict())
        prov = provenance or Provenance()
        prov.dataset_hash = prov.dataset_hash or data_hash
        if isinstance(dataset, Dataset) and not prov.fact_ids:
            prov.fact_ids = list(dataset.fact_ids)
        prov.metrics = {**prov.metrics, "final_loss": result.final_loss, "steps": step,
                        "tokens_per_s": result.tokens_per_s, "skipped": guard.skipped}
        result.adapter_dir = save_adapter(Path(out_dir), weights, spec, prov)
        shutil.rmtree(ckpt, ignore_errors=True)
        return result
    finally:
        _remove_lora(model, targets, originals)


def _remove_lora(model, targets, originals: dict | None = None) -> None:
    """Hand the caller back the model it gave us: plain (quantized) linears, no LoRA."""
    for (i, mod), m in _lora_layers(model, targets).items():
        parent = getattr(model.layers[i], "self_attn" if mod in _ATTN else "mlp")
        setattr(parent, mod, originals[(i, mod)] if originals else getattr(m, "linear", m))
    model.eval()
