"""The training loop's parts: progress reports, results, the schedule, data order, encoding, guards.

Owns: `TrainReport` (what the progress callback receives), `TrainResult`, the learning-rate
schedule, the step -> batch mapping (a pure function of seed and step, so a resumed run sees the
same batches), `encode` (a chat example -> token ids and answer-only labels), `SpikeGuard` (skip
a batch far above the running mean; abort on sustained divergence or NaN) and `EarlyStopper`.
The loop that uses them is lora.loop. Backend-free: no torch or mlx here.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .config import TrainConfig

SENTINEL = "\x00REVERIE_ANSWER\x00"


@dataclass
class TrainReport:
    step: int  # optimizer steps done (1-based after the first)
    total: int
    loss: float
    tokens_per_s: float
    peak_memory_mb: float
    skipped: int  # batches skipped so far as loss spikes
    learning_rate: float = 0.0
    holdout_loss: float | None = None
    event: str = "step"  # step | skip | eval | checkpoint | resume | stop | abort


@dataclass
class TrainResult:
    adapter_dir: Path | None  # None when the run aborted: the previous adapter stays in place
    steps: int
    final_loss: float
    tokens_per_s: float
    seconds: float
    aborted: bool = False
    abort_reason: str = ""
    stopped_early: bool = False
    interrupted: bool = False  # stopped on request (stop_at_step) with a checkpoint to resume from
    resumed_from: int = 0
    skipped: int = 0
    losses: list[float] = field(default_factory=list)
    holdout_losses: list[float] = field(default_factory=list)
    trainer: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adapter_dir"] = str(self.adapter_dir) if self.adapter_dir else None
        return d


Progress = Callable[[TrainReport], None]


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 10% of the peak (step is 0-based)."""
    peak = config.learning_rate
    if config.warmup_steps and step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    t = min(1.0, (step - config.warmup_steps) / span)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> list[int]:
    """Indices of the examples in batch `step`: epochs are seeded shuffles, concatenated."""
    out = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, i = divmod(pos, n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.append(order[i])
        pos += 1
    return out


def split_for_render(render: Callable[[list[dict]], str], messages: list[dict],
                     end_marker: str | None = None) -> tuple[str, str]:
    """(prompt, target) for a chat example, rendered by the serving format itself.

    The last message is the assistant answer; the prompt is everything the server would send
    before it (generation prefix included) and the target is the answer plus the end-of-turn
    marker, so the model learns to stop exactly where the server stops.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("a training example must end with an assistant message")
    probe = render(messages[:-1] + [{"role": "assistant", "content": SENTINEL}])
    if probe.count(SENTINEL) != 1:
        raise ValueError("render() must place the assistant content verbatim exactly once")
    prompt, after = probe.split(SENTINEL)
    if end_marker is None:
        end_marker = after.split("\n", 1)[0]  # "<|im_end|>", "<end_of_turn>"
    return prompt, messages[-1]["content"] + end_marker


def encode(tokenize: Callable[[str, bool], list[int]], render: Callable, example,
           max_seq_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for a chat example (an Example or its dict), labels -100 on the prompt.

    `tokenize(text, add_special)` is the backend's tokenizer; the prompt gets the special tokens
    (BOS), the target does not. A long target keeps its first half of the window; a long prompt
    keeps its first token (BOS) and loses its oldest context."""
    messages = example["messages"] if isinstance(example, dict) else example.messages
    prompt, target = split_for_render(render, messages)
    p_ids, t_ids = list(tokenize(prompt, True)), list(tokenize(target, False))
    if len(t_ids) >= max_seq_len:
        t_ids = t_ids[: max_seq_len // 2]
    room = max_seq_len - len(t_ids)
    if len(p_ids) > room:
        p_ids = p_ids[:1] + p_ids[len(p_ids) - room + 1:]
    return p_ids + t_ids, [-100] * len(p_ids) + t_ids


class SpikeGuard:
    """Decides per batch: train on it, skip it (a spike), or abort the run (divergence)."""

    def __init__(self, config: TrainConfig, window: int = 20):
        self.factor = config.spike_factor
        self.warmup = config.spike_warmup
        self.limit = config.max_consecutive_spikes
        self.window = window
        self.history: list[float] = []
        self.consecutive = 0
        self.skipped = 0

    @property
    def mean(self) -> float:
        return sum(self.history) / len(self.history) if self.history else float("nan")

    def check(self, loss: float) -> str:
        """'ok', 'skip' or 'abort:<reason>'."""
        if not math.isfinite(loss):
            return "abort:loss is NaN or infinite"
        if len(self.history) >= max(1, self.warmup) and loss > self.factor * self.mean:
            self.consecutive += 1
            self.skipped += 1
            if self.consecutive >= self.limit:
                return f"abort:{self.consecutive} consecutive loss spikes (> {self.factor} x running mean {self.mean:.3f})"
            return "skip"
        self.consecutive = 0
        self.history = (self.history + [loss])[-self.window:]
        return "ok"

    def state(self) -> dict:
        return {"history": self.history, "consecutive": self.consecutive, "skipped": self.skipped}

    def load(self, s: dict) -> None:
        self.history, self.consecutive, self.skipped = list(s["history"]), s["consecutive"], s["skipped"]


class EarlyStopper:
    """Stops after `patience` held-out evaluations without improvement; remembers the best step."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = float("inf")
        self.best_step = 0
        self.bad = 0

    def update(self, loss: float, step: int) -> tuple[bool, bool]:
        """(improved, should_stop)."""
        if loss < self.best - 1e-4:
            self.best, self.best_step, self.bad = loss, step, 0
            return True, False
        self.bad += 1
        return False, bool(self.patience) and self.bad >= self.patience

    def state(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad}

    def load(self, s: dict) -> None:
        self.best, self.best_step, self.bad = s["best"], s["best_step"], s["bad"]
