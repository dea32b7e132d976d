"""What quantizing or merging cost: file size, perplexity, KL against a reference, decode speed.

Owns: the measurements behind `reverie quant report` and the quant benchmark, all on llama.cpp
(the runtime that serves these files): perplexity over held-out text in fixed windows, mean
per-token KL(reference || model) on the same windows, and decode tokens/s over a fixed number of
tokens with end-of-sequence ignored, so two models are timed on the same amount of work.
Does not know where the held-out text comes from beyond its own short default.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import QuantError

# Our own held-out prose (written for this module, not from any dataset) so a report works with
# nothing else installed. Callers pass longer text when they have it.
DEFAULT_TEXT = """\
The kettle clicked off just as the rain started again, a thin grey rain that made the street
look older than it was. Mara poured the water over the leaves and waited, counting under her
breath, because her grandmother had always said that tea left too long turns bitter and tea
taken too early tastes of nothing at all.

Most bridges are built to move a little. Steel expands in summer heat and shrinks in winter
cold, so engineers leave small gaps called expansion joints where one section meets the next.
Without them the metal would push against itself until something cracked. The same idea
appears in railway tracks, concrete pavements and even the long glass walls of some airports.

A good recipe for bread needs only four things: flour, water, salt and yeast. The baker mixes
them, lets the dough rest so the gluten can develop, folds it a few times, and then leaves it
to rise slowly in a cool place. Time does most of the work. A loaf that rises overnight has a
deeper flavour than one rushed through in an hour.

The library opened at nine, but the queue began forming at half past eight. Students came for
the quiet tables near the windows, retired teachers came for the newspapers, and a few people
came simply because the building was warm. The librarian knew most of them by name and kept a
spare umbrella behind the desk for anyone caught out by the weather.

Honeybees communicate the location of food with a movement known as the waggle dance. The
angle of the dance relative to the vertical tells the other bees the direction of the flowers
relative to the sun, and the length of the waggle run tells them how far away the flowers are.
A colony can shift its foraging within hours when a better field starts to bloom.

When the power failed that evening, the whole street seemed to notice the sky at once. People
stood in doorways and pointed at stars they had not seen in years. Someone brought out a guitar,
a neighbour lit candles on the front steps, and for two hours nobody checked a phone.
"""


@dataclass
class ModelQuality:
    path: str
    size_bytes: int
    file_type: str
    perplexity: float
    tokens_scored: int
    decode_tokens_per_s: float
    kl_mean: float | None = None  # vs the reference model, nats per token
    kl_max: float | None = None
    top1_agreement: float | None = None  # share of positions with the same argmax as the reference
    reference: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class Scorer:
    """One GGUF loaded in llama.cpp with logits for every position (and an optional LoRA)."""

    def __init__(self, path: Path | str, threads: int = 0, n_ctx: int = 1024, lora: str | None = None):
        from .llamacpp import LlamaCppRuntime
        from .chat_format import pick
        from .registry import ModelInfo, check_gguf, gguf_summary
        from .runtime import default_threads

        path = Path(path)
        check_gguf(path)
        s = gguf_summary(path)
        info = ModelInfo(name=path.stem, path=str(path), source="path", arch=s["arch"],
                         file_type=s["file_type"], size_bytes=path.stat().st_size)
        self.info = info
        self.n_ctx = n_ctx
        self.rt = LlamaCppRuntime(info, pick("", s["arch"], s["chat_template"]), n_ctx,
                                  threads or default_threads())
        if lora:
            self.rt.set_adapter(str(lora))

    def windows(self, text: str, window: int = 256) -> list[list[int]]:
        """The text as BOS-prefixed token windows of at most `window` tokens (no overlap)."""
        ids = self.rt.tokenize(text, add_bos=False)
        if len(ids) < 2:
            raise QuantError("the held-out text is too short to score; give at least a sentence.")
        bos = self.rt.tokenize("", add_bos=True)
        out = []
        for i in range(0, len(ids), window - len(bos)):
            chunk = ids[i: i + window - len(bos)]
            if len(chunk) >= 2:
                out.append(bos + chunk)
        return out

    def logprobs(self, ids: list[int]) -> np.ndarray:
        return _log_softmax(self.rt.logits(ids))

    def decode_speed(self, prompt: str = "Write a short story about a lighthouse keeper.",
                     n_tokens: int = 64, repeats: int = 1) -> float:
        """Decode tokens/s over exactly n_tokens greedy tokens (end-of-sequence ignored)."""
        llm = self.rt.llama
        ids = self.rt.tokenize(prompt, add_bos=True)
        best = 0.0
        for _ in range(repeats):
            llm.reset()
            n, t_first = 0, 0.0
            gen = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0,
                               repeat_penalty=1.0, reset=True)
            for _tok in gen:
                n += 1
                if n == 1:
                    t_first = time.perf_counter()
                if n >= n_tokens:
                    break
            gen.close()
            dt = time.perf_counter() - t_first
            if n > 1 and dt > 0:
                best = max(best, (n - 1) / dt)
        return best

    def greedy(self, prompt: str, max_tokens: int = 32) -> list[int]:
        """Greedy token ids (stops at end-of-generation), for answer-agreement checks."""
        llm = self.rt.llama
        ids = self.rt.tokenize(prompt, add_bos=True)
        out: list[int] = []
        gen = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0,
                           reset=True)
        for tok in gen:
            if self.rt._is_eog(tok):
                break
            out.append(int(tok))
            if len(out) >= max_tokens:
                break
        gen.close()
        return out

    def close(self) -> None:
        self.rt.close()


def perplexity(lps: list[np.ndarray], windows: list[list[int]]) -> tuple[float, int]:
    """exp(mean negative log-likelihood) of each window's next tokens; (ppl, tokens scored)."""
    nll, n = 0.0, 0
    for lp, ids in zip(lps, windows):
        targets = np.array(ids[1:])
        nll -= float(lp[np.arange(len(targets)), targets].sum())
        n += len(targets)
    return float(np.exp(nll / n)), n


def kl_stats(ref: list[np.ndarray], model: list[np.ndarray]) -> tuple[float, float, float]:
    """Mean and max per-position KL(ref || model) and top-1 agreement, over all windows."""
    kls, agree, total = [], 0, 0
    for r, m in zip(ref, model):
        k = (np.exp(r) * (r - m)).sum(axis=-1)
        kls.append(k)
        agree += int((r.argmax(-1) == m.argmax(-1)).sum())
        total += len(k)
    allk = np.concatenate(kls)
    return float(allk.mean()), float(allk.max()), agree / total


def measure(model: Path | str, text: str = DEFAULT_TEXT, against: Path | str | None = None,
            threads: int = 0, window: int = 256, decode_tokens: int = 64,
            model_lora: str | None = None, against_lora: str | None = None,
            progress=lambda _: None) -> ModelQuality:
    """Size, perplexity and decode speed of model; KL and agreement against `against` if given."""
    from .registry import gguf_summary

    model = Path(model)
    progress(f"scoring {model.name}")
    sc = Scorer(model, threads, lora=model_lora)
    try:
        wins = sc.windows(text, window)
        lps = [sc.logprobs(w) for w in wins]
        ppl, n = perplexity(lps, wins)
        progress(f"timing decode on {model.name}")
        speed = sc.decode_speed(n_tokens=decode_tokens)
    finally:
        sc.close()
    q = ModelQuality(path=str(model), size_bytes=model.stat().st_size,
                     file_type=gguf_summary(model)["file_type"], perplexity=round(ppl, 4),
                     tokens_scored=n, decode_tokens_per_s=round(speed, 2))
    if model_lora:
        q.notes.append(f"with runtime LoRA {model_lora}")
    if against is not None:
        progress(f"scoring reference {Path(against).name}")
        ref = Scorer(against, threads, lora=against_lora)
        try:
            rwins = ref.windows(text, window)
            if rwins != wins:
                raise QuantError(f"{model} and {against} tokenize the text differently; KL needs "
                                 "two versions of the same model.")
            rlps = [ref.logprobs(w) for w in rwins]
        finally:
            ref.close()
        if rlps[0].shape[-1] != lps[0].shape[-1]:
            raise QuantError(f"{model} and {against} have different vocabularies; KL needs two "
                             "versions of the same model.")
        kl, klmax, agree = kl_stats(rlps, lps)
        q.kl_mean, q.kl_max, q.top1_agreement = round(kl, 6), round(klmax, 6), round(agree, 4)
        q.reference = str(against)
    return q
