"""The peft backend of lora.loop: LoRA on the transformers twin of the served GGUF (CPU, CUDA, MPS).

Owns: loading the GGUF base dequantized to float32, the torch side of the loss terms (answer-only
cross-entropy, KL to the adapter-free model), the optimizer and its checkpointed state (with the
RNGs), and reading the LoRA weights out in our canonical layout. The loop itself (guard, early
stop, checkpoints, reports, the objective) is lora.loop's; `train_peft` runs it with this backend.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import random
import re
import resource
import warnings
from pathlib import Path
from typing import Callable

from .adapter import AdapterSpec, key
from .config import TrainConfig
from .dataset import Dataset, Example
from .errors import LoraError
from .training import TrainResult
from .training import encode as encode_example

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
    """(input_ids, labels) with a Hugging Face tokenizer (see lora.training.encode)."""
    return encode_example(lambda text, special: tokenizer(text, add_special_tokens=special)["input_ids"],
                          render, example, max_seq_len)


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


def batch_loss(model, ids, labels, mask, per_example: bool = False):
    """Mean cross-entropy over answer tokens (labels != -100), shifted for next-token prediction;
    `per_example`: the mean of each row's mean, so a short answer weighs as much as a long one.

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
    if not per_example:
        return F.cross_entropy(logits, target[keep])
    tok = F.cross_entropy(logits, target[keep], reduction="none")
    rows = keep.nonzero()[:, 0]  # the row of each kept token, in the order hidden[keep] has them
    n = keep.sum(-1)
    per_row = tok.new_zeros(keep.shape[0]).index_add(0, rows, tok)
    return (per_row[n > 0] / n[n > 0]).mean()


def answer_logprobs(model, ids, labels, mask):
    """Per row, the mean log-prob of its answer tokens (labels != -100), shifted for next-token
    prediction: what the objective's odds-ratio term compares between a chosen and a rejected
    answer (MLX: mlx_trainer.answer_logprobs)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    target = labels[:, 1:]
    keep = (target != -100)
    lp = torch.log_softmax(logits, -1).gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (lp * keep).sum(-1) / keep.sum(-1).clamp(min=1)


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


class PeftBackend:
    """lora.loop's backend for peft on a transformers model (the GGUF's float32 twin).

    Pass a loaded base + tokenizer (from load_base or quant's twin loader) to reuse it across
    runs: it is deep-copied, never modified. Otherwise base_model_path is loaded on `load`."""

    name = "peft"
    xp = None  # torch, set on load (imported lazily like everything torch here)

    def __init__(self, model=None, tokenizer=None, base_model_path: Path | None = None,
                 arch: str | None = None):
        self.base, self.tokenizer, self.base_model_path, self.arch = model, tokenizer, base_model_path, arch
        self.model = self.opt = self._loss = None

    def load(self, config: TrainConfig) -> None:
        import torch

        self.xp = torch
        if self.base is None or self.tokenizer is None:
            if self.base_model_path is None:
                raise LoraError("the peft trainer needs base_model_path or a loaded model and tokenizer.")
            self.base, self.tokenizer = load_base(Path(self.base_model_path), config.device)
        self.device = str(next(self.base.parameters()).device).split(":")[0]
        tok = self.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def setup(self, config: TrainConfig, init_weights: dict | None) -> None:
        import torch

        self.config = config
        self.model = wrap(self.base, config)
        if init_weights is not None:
            set_lora_weights(self.model, init_weights)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.model.train()

    def batch(self, answers: list, anchors: list, pairs: list = ()):
        a = collate(answers, self.pad, self.device) if answers else None
        k = collate(anchors, self.pad, self.device) if anchors else None
        p = collate(list(pairs), self.pad, self.device) if pairs else None
        return a, (k[0], k[2]) if k else None, p  # anchors: ids and mask, labels are unused

    def answer_ce(self, prepared):
        return batch_loss(self.model, *prepared, per_example=self.config.per_example_loss)

    def answer_logprobs(self, prepared):
        return answer_logprobs(self.model, *prepared)

    def anchor_kl(self, prepared):
        return anchor_kl_loss(self.model, *prepared)

    def step_loss(self, loss_fn) -> float:
        self._loss = loss_fn()  # backward waits for update(): a skipped batch costs no backward
        return float(self._loss.item())

    def update(self, lr: float) -> None:
        import torch

        for g in self.opt.param_groups:
            g["lr"] = lr
        self._loss.backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._loss = None

    def discard(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._loss = None

    def eval_loss(self, rows: list) -> float:
        import torch

        self.model.eval()
        with torch.no_grad():
            vals = [batch_loss(self.model, *collate([r], self.pad, self.device)).item() for r in rows]
        self.model.train()
        return sum(vals) / len(vals)

    def weights(self) -> dict:
        return lora_weights(self.model)

    def set_weights(self, weights: dict) -> None:
        set_lora_weights(self.model, weights)

    def save_state(self, directory: Path) -> None:
        import torch
        from safetensors.numpy import save_file

        save_file(lora_weights(self.model), str(directory / "lora.safetensors"))
        torch.save({"optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state(),
                    "python_rng": random.getstate()}, directory / "state.pt")

    def load_state(self, directory: Path, step: int) -> None:
        import torch
        from safetensors.numpy import load_file

        weights = load_file(str(directory / "lora.safetensors"))  # read all before changing anything
        tstate = torch.load(directory / "state.pt", weights_only=False)
        set_lora_weights(self.model, weights)
        self.opt.load_state_dict(tstate["optimizer"])
        torch.set_rng_state(tstate["torch_rng"])
        random.setstate(tstate["python_rng"])

    def peak_mb(self) -> float:
        return _peak_mb(self.device)

    def spec(self, config: TrainConfig) -> AdapterSpec:
        return spec_for(self.model, config, "peft", self.arch)

    def close(self) -> None:
        self.model = self.opt = self._loss = None  # the trained copy; the caller's base is untouched


def train_peft(dataset: Dataset | list[Example], config: TrainConfig, render: Callable, *,
               out_dir: Path, work_dir: Path, base_model_path: Path | None = None,
               model=None, tokenizer=None, arch: str | None = None, **kw) -> TrainResult:
    """lora.loop.train with a PeftBackend: the same keywords (on_report, init_adapter,
    provenance, stop_at_step)."""
    from .loop import train

    return train(PeftBackend(model, tokenizer, base_model_path, arch), dataset, config, render,
                 out_dir=out_dir, work_dir=work_dir, **kw)
