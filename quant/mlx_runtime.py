"""The MLX runtime: the same GGUF llama.cpp serves, run by mlx_lm (Apple Silicon; CPU on Linux).

Owns: loading a GGUF (or a directory written by `save_mlx_model`) through gguf_mlx, KV-cached
greedy/sampled decoding with llama.cpp's end-of-generation ids, full logits for scoring, and
LoRA adapters applied to and removed from the loaded model: GGUF LoRA files (the very file
llama.cpp loads with `lora_path`; its q/k rows are already in GGUF order, which is the order of
a model loaded from GGUF, so they apply as they are) and mlx-lm adapter directories
(adapter_config.json + adapters.safetensors). Knows nothing about chat history or about
reverie's own adapter directories (assistant/ points this at their exported GGUF).
"""
from __future__ import annotations

import codecs
from pathlib import Path
from typing import Iterator

import numpy as np

from .chat_format import ChatFormat
from .errors import QuantError
from .gguf_lora import GGUFLora, check_fits, read_gguf_lora
from .gguf_mlx import load_gguf_model, load_mlx_dir, require_mlx
from .registry import ModelInfo
from .runtime_base import GenerationConfig, Runtime

SCORING_CHUNK = 512  # logits for long texts are computed in chunks through the KV cache
REPEAT_WINDOW = 64  # llama.cpp's default repeat_last_n, so repeat_penalty means the same on both


class MLXRuntime(Runtime):
    backend = "mlx"

    def __init__(self, model: ModelInfo, chat_format: ChatFormat, n_ctx: int, threads: int):
        super().__init__(model, chat_format, n_ctx, threads)
        require_mlx()
        # MLX's CPU backend sizes its own thread pool; `threads` is kept for the interface only.
        path = Path(model.path)
        if path.is_dir():
            self._model, self._tok, self.config = load_mlx_dir(path)
        else:
            self._model, self._tok, self.config = load_gguf_model(path)

    # --- handles for code that reuses the loaded model (trainers, converters) ----------------
    @property
    def mlx_model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tok

    # --- primitives -------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self._tok.encode(text, add_bos=add_bos)

    def detokenize(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids))

    def logits(self, ids: list[int]) -> np.ndarray:
        import mlx.core as mx
        from mlx_lm.models.cache import make_prompt_cache

        if not ids:
            raise QuantError("cannot score an empty token list; pass at least one token.")
        if len(ids) > self.n_ctx:
            raise QuantError(f"text of {len(ids)} tokens exceeds the context window ({self.n_ctx}); "
                             "shorten it or raise n_ctx.")
        self._check_ids(ids)
        cache = make_prompt_cache(self._model)
        out = []
        for start in range(0, len(ids), SCORING_CHUNK):
            chunk = mx.array([ids[start:start + SCORING_CHUNK]])
            logits = self._model(chunk, cache=cache)[0].astype(mx.float32)
            out.append(np.array(logits))
        return np.concatenate(out, axis=0)

    def _check_ids(self, ids) -> None:
        bad = [i for i in ids if not 0 <= int(i) < self._tok.vocab_size]
        if bad:
            raise QuantError(f"token ids {bad[:5]} are outside the vocabulary (0..{self._tok.vocab_size - 1}).")

    def _generate_tokens(self, prompt_ids, config: GenerationConfig, max_tokens) -> Iterator[str | None]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step
        from mlx_lm.sample_utils import make_sampler

        self._check_ids(prompt_ids)
        greedy = config.temperature == 0
        if greedy:
            sampler = lambda logprobs: mx.argmax(logprobs, axis=-1)  # noqa: E731
        else:
            mx.random.seed(config.seed)
            sampler = make_sampler(temp=config.temperature, top_p=config.top_p if config.top_p < 1 else 0.0,
                                   top_k=config.top_k if config.top_k > 1 else 0)
        processors = None
        if config.repeat_penalty != 1.0:
            processors = [_penalty_on_generated(config.repeat_penalty, len(prompt_ids))]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        gen = generate_step(mx.array(prompt_ids), self._model, max_tokens=max_tokens,
                            sampler=sampler, logits_processors=processors)
        try:
            for tok, _ in gen:
                tok = int(tok)
                if tok in self._tok.eog_ids:
                    yield None
                    return
                yield decoder.decode(self._tok.piece(tok))
        finally:
            gen.close()

    # --- adapters ---------------------------------------------------------------------------
    def set_adapter(self, path: str | None) -> None:
        """Apply a GGUF LoRA file or an mlx-lm adapter directory, or remove the adapter (None)."""
        if path is not None and path == self.adapter_path:
            return
        gguf_lora = None
        if path is not None:
            p = Path(path)
            if p.is_file():
                gguf_lora = read_gguf_lora(p)  # validated before the model is touched
            else:
                missing = [n for n in ("adapter_config.json", "adapters.safetensors") if not (p / n).is_file()]
                if missing:
                    raise QuantError(f"{path} is neither a GGUF LoRA file nor an mlx-lm adapter directory "
                                     f"(missing {', '.join(missing)}); pass the adapter's .gguf file.")
        _remove_adapters(self._model)
        self.adapter_path = None
        if path is None:
            return
        try:
            if gguf_lora is not None:
                _apply_gguf_lora(self._model, self.config, gguf_lora, path)
            else:
                from mlx_lm.tuner.utils import load_adapters

                load_adapters(self._model, str(path))
        except QuantError:
            _remove_adapters(self._model)
            raise
        except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:
            _remove_adapters(self._model)  # leave the base model usable
            raise QuantError(f"cannot apply adapter {path}: {e}. Was it trained on this base model?") from e
        self._model.eval()  # no LoRA dropout at inference
        self.adapter_path = str(path)

    def close(self) -> None:
        import mlx.core as mx

        self._model = None
        mx.clear_cache()


def _penalty_on_generated(penalty: float, n_prompt: int):
    """mlx-lm's repetition penalty over the last REPEAT_WINDOW *generated* tokens only, as
    llama.cpp applies it (its sampler never sees the prompt); mlx-lm hands processors the prompt
    too, which would penalise words of the question at the start of the answer."""
    from mlx_lm.sample_utils import make_repetition_penalty

    base = make_repetition_penalty(penalty, REPEAT_WINDOW)

    def processor(tokens, logits):
        generated = tokens[n_prompt:]
        return base(generated, logits) if len(generated) else logits

    return processor


def _remove_adapters(model) -> None:
    """Swap every LoRA/DoRA wrapper back for the base layer it wraps."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear

    restore = []
    for name, module in model.named_modules():
        if isinstance(module, (LoRALinear, DoRALinear)):
            restore.append((name, module.linear))
        elif isinstance(module, (LoRAEmbedding, DoRAEmbedding)):
            restore.append((name, module.embedding))
    if restore:
        model.update_modules(tree_unflatten(restore))


def _apply_gguf_lora(model, config: dict, lora: GGUFLora, path) -> None:
    """Wrap each targeted linear in an mlx-lm LoRALinear holding the file's A/B (scale alpha/r,
    as llama.cpp applies it). Every mismatch with the loaded model is listed at once."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear

    from .gguf_mlx import mlx_name

    arch = (config.get("reverie_source") or {}).get("arch") or {"gemma3_text": "gemma3"}.get(
        config.get("model_type"), config.get("model_type", ""))
    modules = dict(model.named_modules())
    layers, shapes = {}, {}
    for base in lora.tensors:
        target = mlx_name(arch, base + ".weight")
        name = target.rsplit(".", 1)[0] if target else None
        linear = modules.get(name) if name else None
        if not isinstance(linear, (nn.Linear, nn.QuantizedLinear)):
            continue  # check_fits names it: only a linear layer takes a LoRALinear
        out_dims, in_dims = linear.weight.shape
        if isinstance(linear, nn.QuantizedLinear):
            in_dims = in_dims * 32 // linear.bits
        layers[base], shapes[base + ".weight"] = (name, linear), (out_dims, in_dims)
    check_fits(lora, shapes, path, arch=arch, unit="layer")  # every mismatch at once
    wrapped = []
    for base, (a, b) in lora.tensors.items():
        name, linear = layers[base]
        rank = a.shape[0]
        lin = LoRALinear.from_base(linear, r=rank, dropout=0.0, scale=lora.alpha / rank)
        # ours: A (r, in), B (out, r); mlx-lm computes (x @ lora_a) @ lora_b
        lin.lora_a = mx.array(np.ascontiguousarray(a.T))
        lin.lora_b = mx.array(np.ascontiguousarray(b.T))
        wrapped.append((name, lin))
    model.update_modules(tree_unflatten(wrapped))
