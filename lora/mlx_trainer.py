"""The MLX backend of lora.loop: QLoRA directly on the quantized GGUF model (Apple's path; runs on
Linux CPU, slowly).

Owns: wrapping the caller's MLX model (from quant's GGUF loader — this module never imports
quant/) with mlx_lm.tuner LoRA layers, the MLX side of the loss terms (answer cross-entropy, KL to
the LoRA-free model), the optimizer and its checkpointed state, and reading the weights out in our
canonical layout with GGUF row order (no q/k permutation on export). The loop itself is
lora.loop's; `train_mlx` runs it with this backend. The caller's model is restored (LoRA layers
removed) when training ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .adapter import AdapterSpec, from_mlx_weights, key
from .config import TrainConfig
from .dataset import Dataset, Example
from .errors import LoraError
from .training import TrainResult

_ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}


def _path(mod: str) -> str:
    return ("self_attn." if mod in _ATTN else "mlp.") + mod


def tokenize(tokenizer, text: str, add_bos: bool) -> list[int]:
    """Our GGUF tokenizer (`encode(text, add_bos)`) or a Hugging Face one (callable)."""
    try:
        return list(tokenizer.encode(text, add_bos=add_bos))
    except TypeError:
        return list(tokenizer(text, add_special_tokens=add_bos)["input_ids"])


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


def answer_ce(model, ids, labels, per_example: bool = False):
    """Mean cross-entropy over the answer tokens (labels != -100), shifted for next-token
    prediction: the MLX side of the objective's answer term (peft: peft_trainer.batch_loss);
    `per_example`: the mean of each row's mean."""
    import mlx.core as mx
    import mlx.nn as nn

    logits = model(ids[:, :-1]).astype(mx.float32)
    y = labels[:, 1:]
    mask = (y != -100)
    ce = nn.losses.cross_entropy(logits, mx.where(mask, y, 0)) * mask
    if not per_example:
        return ce.sum() / mx.maximum(mask.sum(), 1)
    n = mask.sum(axis=-1)
    rows = ce.sum(axis=-1) / mx.maximum(n, 1)
    return (rows * (n > 0)).sum() / mx.maximum((n > 0).sum(), 1)


def answer_logprobs(model, ids, labels):
    """Per row, the mean log-prob of its answer tokens (peft: peft_trainer.answer_logprobs)."""
    import mlx.core as mx
    import mlx.nn as nn

    lp = nn.log_softmax(model(ids[:, :-1]).astype(mx.float32), axis=-1)
    y = labels[:, 1:]
    mask = (y != -100)
    tok = mx.take_along_axis(lp, mx.where(mask, y, 0)[..., None], axis=-1).squeeze(-1)
    return (tok * mask).sum(axis=-1) / mx.maximum(mask.sum(axis=-1), 1)


class MlxBackend:
    """lora.loop's backend for MLX QLoRA on a model the caller loaded from the GGUF file (quant's
    loader; this module never imports quant/). LoRA layers are added in setup and removed in
    close, so the caller gets its model back as it gave it."""

    name = "mlx"

    def __init__(self, model, tokenizer, arch: str = "llama"):
        self.model, self.tokenizer, self.arch = model, tokenizer, arch
        self.originals: dict | None = None
        self._grads = None

    def load(self, config: TrainConfig) -> None:
        try:
            import mlx.core
            import mlx_lm.tuner.utils  # noqa: F401
        except ImportError as e:
            raise LoraError('the MLX trainer needs mlx and mlx-lm; install "mlx[cpu]" mlx-lm (Linux) '
                            "or mlx mlx-lm (macOS).") from e
        self.xp = mlx.core

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return tokenize(self.tokenizer, text, add_special)

    def setup(self, config: TrainConfig, init_weights: dict | None) -> None:
        import mlx.core as mx
        import mlx.optimizers as optim
        from mlx_lm.tuner.utils import linear_to_lora_layers

        self.config, self.targets = config, list(config.target_modules)
        self.originals = dict(_lora_layers(self.model, self.targets))
        mx.random.seed(config.seed)
        self.model.freeze()
        linear_to_lora_layers(self.model, len(self.model.layers), {
            "rank": config.rank, "scale": config.scale, "dropout": config.dropout,
            "keys": [_path(m) for m in self.targets]})
        if init_weights is not None:
            _set_weights(self.model, self.targets, init_weights)
        self.opt = optim.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
        self.model.train()

    def batch(self, answers: list, anchors: list, pairs: list = ()):
        import mlx.core as mx

        a = _pad(answers, max(len(r[0]) for r in answers)) if answers else None
        p = _pad(list(pairs), max(len(r[0]) for r in pairs)) if pairs else None
        k = None
        if anchors:
            n = max(len(r[0]) for r in anchors)
            ids = _pad(anchors, n)[0][:, :-1]
            mask = mx.array([[1.0 if j < len(r[0]) else 0.0 for j in range(n - 1)] for r in anchors])
            k = (ids, mask, base_logprobs(self.model, self.targets, ids))  # outside the gradient
        return a, k, p

    def answer_ce(self, prepared):
        return answer_ce(self.model, *prepared, per_example=self.config.per_example_loss)

    def answer_logprobs(self, prepared):
        return answer_logprobs(self.model, *prepared)

    def anchor_kl(self, prepared):
        return anchor_kl(self.model, *prepared)

    def step_loss(self, loss_fn) -> float:
        import mlx.core as mx
        import mlx.nn as nn

        loss, self._grads = nn.value_and_grad(self.model, loss_fn)()
        mx.eval(loss, self._grads)
        return float(loss.item())

    def update(self, lr: float) -> None:
        import mlx.core as mx
        import mlx.optimizers as optim

        grads, self._grads = self._grads, None
        self.opt.learning_rate = lr
        if self.config.grad_clip:
            grads, _ = optim.clip_grad_norm(grads, self.config.grad_clip)
        self.opt.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self.opt.state)

    def discard(self) -> None:
        self._grads = None

    def eval_loss(self, rows: list) -> float:
        self.model.eval()
        try:
            vals = [float(answer_ce(self.model, *_pad([r], len(r[0]))).item()) for r in rows]
        finally:
            self.model.train()
        return sum(vals) / len(vals)

    def weights(self) -> dict:
        return _weights(self.model, self.targets)

    def set_weights(self, weights: dict) -> None:
        _set_weights(self.model, self.targets, weights)

    def save_state(self, directory: Path) -> None:
        import mlx.core as mx
        from mlx.utils import tree_flatten

        mx.save_safetensors(str(directory / "lora.safetensors"),
                            dict(tree_flatten(self.model.trainable_parameters())))
        mx.save_safetensors(str(directory / "optimizer.safetensors"), dict(tree_flatten(self.opt.state)))

    def load_state(self, directory: Path, step: int) -> None:
        import mlx.core as mx
        from mlx.utils import tree_unflatten

        lora = mx.load(str(directory / "lora.safetensors"))  # read all before changing anything
        opt_state = mx.load(str(directory / "optimizer.safetensors"))
        self.model.load_weights(list(lora.items()), strict=False)
        self.opt.state = tree_unflatten(list(opt_state.items()))
        mx.random.seed(self.config.seed + step)

    def peak_mb(self) -> float:
        import mlx.core as mx

        return mx.get_peak_memory() / 2**20 if hasattr(mx, "get_peak_memory") else 0.0

    def spec(self, config: TrainConfig) -> AdapterSpec:
        first = _lora_layers(self.model, self.targets)
        dims = {mod: [int(first[(0, mod)].lora_b.shape[1]), int(first[(0, mod)].lora_a.shape[0])]
                for mod in self.targets}
        args = getattr(self.model, "args", None)
        return AdapterSpec(trainer="mlx", rank=config.rank, alpha=config.alpha, targets=self.targets,
                           n_layers=len(self.model.layers), base_dims=dims, arch=self.arch, layout="gguf",
                           n_head=int(getattr(args, "num_attention_heads", 0)) if args is not None else 0,
                           n_head_kv=int(getattr(args, "num_key_value_heads", 0)) if args is not None else 0,
                           train_config=config.to_dict())

    def close(self) -> None:
        if self.originals is not None:
            _remove_lora(self.model, self.targets, self.originals)
            self.originals = None


def train_mlx(dataset: Dataset | list[Example], config: TrainConfig, render: Callable, *, model,
              tokenizer, out_dir: Path, work_dir: Path, arch: str = "llama", **kw) -> TrainResult:
    """lora.loop.train with an MlxBackend: the same keywords (on_report, init_adapter,
    provenance, stop_at_step) as train_peft."""
    from .loop import train

    return train(MlxBackend(model, tokenizer, arch), dataset, config, render, out_dir=out_dir,
                 work_dir=work_dir, **kw)


def _remove_lora(model, targets, originals: dict | None = None) -> None:
    """Hand the caller back the model it gave us: plain (quantized) linears, no LoRA."""
    for (i, mod), m in _lora_layers(model, targets).items():
        parent = getattr(model.layers[i], "self_attn" if mod in _ATTN else "mlp")
        setattr(parent, mod, originals[(i, mod)] if originals else getattr(m, "linear", m))
    model.eval()
