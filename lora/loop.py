"""The one training loop: guard -> update -> held-out eval / early stop -> checkpoint -> report.

Owns: the training objective (`objective`, the only place the loss is composed), the step loop
over a `Backend`, resumable checkpoints (loop state in state.json, the backend's own tensors
beside it), the fingerprint that says whether a checkpoint belongs to this run, and turning the
trained weights into one of our adapter directories. Progress leaves through `on_report`
(a `TrainReport` per step, skip, eval, checkpoint, resume, stop, abort), as mlx-lm's trainer
hands reports to its callback.

A backend (peft on the transformers twin: lora.peft_trainer.PeftBackend; MLX QLoRA on the GGUF:
lora.mlx_trainer.MlxBackend) knows its tensors and nothing of this loop: it tokenizes, wraps the
base with LoRA layers, computes the loss terms the objective asks for, applies or discards an
update, saves/loads its own state, and reports weights in our canonical layout. Backend-free:
no torch or mlx here.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .adapter import AdapterSpec, Provenance, load_adapter, save_adapter
from .config import TrainConfig
from .dataset import Dataset, Example
from .errors import LoraError
from common.files import atomic_dir
from .training import (EarlyStopper, Progress, SpikeGuard, TrainReport, TrainResult, batch_indices,
                       encode, lr_at)

Row = tuple[list[int], list[int]]  # (input_ids, labels with -100 on the prompt)


class Backend(Protocol):
    """What the loop needs from a tensor library. Weights cross the boundary as numpy arrays in
    our canonical adapter names (lora.adapter.key); everything else stays backend-side."""

    name: str  # "peft" | "mlx": recorded in results, fingerprints and the adapter spec

    def load(self, config: TrainConfig) -> None: ...  # base model and tokenizer, if not given
    def tokenize(self, text: str, add_special: bool) -> list[int]: ...
    def setup(self, config: TrainConfig, init_weights: dict | None) -> None: ...  # LoRA + optimizer
    xp: Any  # the array namespace (torch, mlx.core) the objective's elementwise math runs in
    def batch(self, answers: list[Row], anchors: list[Row], pairs: list[Row]) -> Any: ...
    # ^ (answers, anchors, pairs) as tensors, outside autodiff; pairs: chosen rows then rejected
    def answer_ce(self, prepared) -> Any: ...  # mean cross-entropy on answer tokens
    def answer_logprobs(self, prepared) -> Any: ...  # per row: mean log-prob of its answer tokens
    def anchor_kl(self, prepared) -> Any: ...  # mean KL(base || adapted) over real positions
    def step_loss(self, loss_fn: Callable[[], Any]) -> float: ...  # its value; grads now or at update
    def update(self, lr: float) -> None: ...  # gradients, clip, optimizer step, clear
    def discard(self) -> None: ...  # clear gradients without updating
    def eval_loss(self, rows: list[Row]) -> float: ...  # mean answer loss, no dropout, no grad
    def weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict) -> None: ...
    def save_state(self, directory: Path) -> None: ...  # LoRA weights, optimizer, RNG
    def load_state(self, directory: Path, step: int) -> None: ...  # raises on a damaged state
    def peak_mb(self) -> float: ...
    def spec(self, config: TrainConfig) -> AdapterSpec: ...
    def close(self) -> None: ...  # hand the caller's model back as it came


class Batch:
    """One optimizer step's examples, split by what they teach, as the backend's tensors."""

    def __init__(self, answers, anchors, pairs=None, n_pairs: int = 0):
        self.answers = answers  # None or the backend's prepared answer rows
        self.anchors = anchors  # None or the backend's prepared anchor rows
        self.pairs = pairs  # None or n_pairs chosen rows followed by their n_pairs rejected rows
        self.n_pairs = n_pairs


def odds_ratio_loss(xp, chosen_lp, rejected_lp):
    """ORPO's preference term (Hong et al. 2024, eq. 6-7), averaged over pairs:
    -log sigmoid(log odds(chosen) - log odds(rejected)), where odds(y) = P(y) / (1 - P(y)) and
    log P(y) is the mean log-prob of the answer's tokens. `xp` is the array namespace of the
    inputs (numpy, torch, mlx.core): only exp, log1p and abs are used, so every backend runs
    this one formula. P is kept below 1 by a factor 1 - 1e-6 so log(1 - P) stays finite."""
    def log_odds(lp):
        return lp - xp.log1p(-xp.exp(lp) * (1 - 1e-6))

    z = log_odds(chosen_lp) - log_odds(rejected_lp)
    # -log sigmoid(z) = softplus(-z), in the form that never overflows
    softplus = (abs(z) - z) / 2 + xp.log1p(xp.exp(-abs(z)))
    return softplus.mean()


def objective(ops: Backend, batch: Batch, config: TrainConfig):
    """The training loss, composed once for every backend: cross-entropy on the answer tokens of
    facts, corrections and replay, plus `anchor_kl` x KL(base || adapted) on anchors (they keep
    the base model's whole next-token distribution), plus `preference_weight` x the odds-ratio
    term on (corrected, rejected) answer pairs (ORPO: the corrected answer's cross-entropy is
    already in the first term as a "correction" example). A new objective adds its term here,
    with the op each backend provides for it."""
    loss = None
    if batch.answers is not None:
        loss = ops.answer_ce(batch.answers)
    if batch.anchors is not None:
        kl = config.anchor_kl * ops.anchor_kl(batch.anchors)
        loss = kl if loss is None else loss + kl
    if batch.pairs is not None:
        lp, k = ops.answer_logprobs(batch.pairs), batch.n_pairs
        pref = config.preference_weight * odds_ratio_loss(ops.xp, lp[:k], lp[k:])
        loss = pref if loss is None else loss + pref
    return loss


def fingerprint(backend: str, data_hash: str, config: TrainConfig, init: str) -> str:
    """Identifies a run: a checkpoint from other data, config, start or backend is not resumed."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint_every", "device")}
    blob = json.dumps({"data": data_hash, "config": cfg, "init": init, "trainer": backend},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _save_checkpoint(ckpt: Path, backend: Backend, state: dict, best: dict | None) -> None:
    from safetensors.numpy import save_file

    with atomic_dir(ckpt) as tmp:
        backend.save_state(tmp)
        if best is not None:
            save_file(best, str(tmp / "best.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))


def _load_checkpoint(ckpt: Path, fp: str, backend: Backend):
    """(state, best weights) after restoring the backend, or None if absent, foreign or damaged."""
    from safetensors.numpy import load_file

    try:
        state = json.loads((ckpt / "state.json").read_text())
        if state.get("fingerprint") != fp:
            return None
        best = load_file(str(ckpt / "best.safetensors")) if (ckpt / "best.safetensors").exists() else None
        backend.load_state(ckpt, state["step"])
        return state, best
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


def train(backend: Backend, dataset: Dataset | Sequence[Example], config: TrainConfig,
          render: Callable, *, out_dir: Path, work_dir: Path, on_report: Progress | None = None,
          init_adapter: Path | None = None, provenance: Provenance | None = None,
          stop_at_step: int | None = None) -> TrainResult:
    """Train a LoRA with `backend` and save it to out_dir (atomically). A checkpoint in work_dir
    from the same data, config and backend is resumed. On divergence (NaN, sustained spikes) or
    a requested stop nothing is written to out_dir: the previous adapter stays in place."""
    train_set = dataset.train if isinstance(dataset, Dataset) else list(dataset)
    holdout = dataset.holdout if isinstance(dataset, Dataset) else []
    if not train_set:
        raise LoraError("nothing to train on: the dataset is empty. Add facts or feedback first.")
    data_hash = dataset.hash if isinstance(dataset, Dataset) else hashlib.sha256(
        json.dumps([e.to_dict() for e in train_set], sort_keys=True).encode()).hexdigest()
    backend.load(config)
    rows = [encode(backend.tokenize, render, e, config.max_seq_len) for e in train_set]
    kinds = [e.kind if isinstance(e, Example) else e.get("kind", "") for e in train_set]
    held = [encode(backend.tokenize, render, e, config.max_seq_len) for e in holdout]
    pairs = dataset.pairs if isinstance(dataset, Dataset) and config.preference_weight > 0 else []
    for p in pairs:  # a pair is one more item of the epoch: the chosen row and the rejected row
        rows.append(tuple(encode(backend.tokenize, render, e, config.max_seq_len)
                          for e in p.examples()))
        kinds.append("pair")
    total = config.total_steps(len(rows))
    init = load_adapter(Path(init_adapter)).weights if init_adapter is not None else None
    try:
        backend.setup(config, init)
        return _run(backend, config, rows, kinds, held, total, data_hash, Path(work_dir),
                    str(init_adapter or ""), on_report, stop_at_step, dataset, provenance,
                    Path(out_dir))
    finally:
        backend.close()


def _run(backend: Backend, config: TrainConfig, rows: list[Row], kinds: list[str], held: list[Row],
         total: int, data_hash: str, work_dir: Path, init: str, on_report, stop_at_step,
         dataset, provenance: Provenance | None, out_dir: Path) -> TrainResult:
    guard, stopper = SpikeGuard(config), EarlyStopper(config.patience)
    ckpt = work_dir / "checkpoint"
    fp = fingerprint(backend.name, data_hash, config, init)
    losses: list[float] = []
    holdout_losses: list[float] = []
    best: dict | None = None
    start = 0
    found = _load_checkpoint(ckpt, fp, backend) if config.checkpoint_every else None
    if found:
        state, best = found
        guard.load(state["guard"])
        stopper.load(state["stopper"])
        losses, holdout_losses, start = state["losses"], state["holdout_losses"], state["step"]
        if on_report:
            on_report(TrainReport(start, total, losses[-1] if losses else float("nan"), 0.0,
                                  backend.peak_mb(), guard.skipped, event="resume"))
    tokens, train_s = 0, 0.0

    def report(step, loss, event, hl=None):
        if on_report:
            on_report(TrainReport(step, total, loss, tokens / train_s if train_s > 0 else 0.0,
                                  backend.peak_mb(), guard.skipped, lr_at(step - 1, total, config),
                                  hl, event))

    t_start = time.perf_counter()
    aborted, reason, stopped_early, interrupted = False, "", False, False
    step = start
    while step < total:
        t0 = time.perf_counter()
        idx = batch_indices(step, len(rows), config.batch_size, config.seed)
        anchor = [i for i in idx if kinds[i] == "anchor"] if config.anchor_kl else []
        pair = [i for i in idx if kinds[i] == "pair"]
        plain = [i for i in idx if i not in anchor and i not in pair]
        both = [rows[i][0] for i in pair] + [rows[i][1] for i in pair]
        batch = Batch(*backend.batch([rows[i] for i in plain], [rows[i] for i in anchor], both),
                      n_pairs=len(pair))
        value = backend.step_loss(lambda: objective(backend, batch, config))
        verdict = guard.check(value)
        step += 1
        if verdict.startswith("abort"):
            aborted, reason = True, verdict.split(":", 1)[1]
            backend.discard()
            report(step, value, "abort")
            break
        if verdict == "skip":
            backend.discard()
            report(step, value, "skip")
            continue
        backend.update(lr_at(step - 1, total, config))
        train_s += time.perf_counter() - t0
        tokens += sum(len(rows[i][0][0]) + len(rows[i][1][0]) if kinds[i] == "pair"
                      else len(rows[i][0]) for i in idx)
        losses.append(value)
        report(step, value, "step")
        if held and (step % config.eval_every == 0 or step == total):
            hl = backend.eval_loss(held)
            holdout_losses.append(hl)
            improved, stop = stopper.update(hl, step)
            if improved:
                best = backend.weights()
            report(step, value, "eval", hl)
            if stop:
                stopped_early = True
                break
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
            _save_checkpoint(ckpt, backend, {
                "fingerprint": fp, "step": step, "guard": guard.state(), "stopper": stopper.state(),
                "losses": losses, "holdout_losses": holdout_losses}, best)
            report(step, value, "checkpoint")
        if stop_at_step is not None and step >= stop_at_step:
            interrupted = True
            report(step, value, "stop")
            break

    result = TrainResult(adapter_dir=None, steps=step, final_loss=losses[-1] if losses else float("nan"),
                         tokens_per_s=tokens / train_s if train_s > 0 else 0.0,
                         seconds=time.perf_counter() - t_start, aborted=aborted, abort_reason=reason,
                         stopped_early=stopped_early, interrupted=interrupted, resumed_from=start,
                         skipped=guard.skipped, losses=losses, holdout_losses=holdout_losses,
                         trainer=backend.name)
    if aborted or interrupted:
        return result
    if best is not None and holdout_losses and holdout_losses[-1] > stopper.best:
        backend.set_weights(best)  # early stopping keeps the best held-out state
    prov = provenance or Provenance()
    prov.dataset_hash = prov.dataset_hash or data_hash
    if isinstance(dataset, Dataset) and not prov.fact_ids:
        prov.fact_ids = list(dataset.fact_ids)
    prov.metrics = {**prov.metrics, "final_loss": result.final_loss, "steps": step,
                    "tokens_per_s": result.tokens_per_s, "skipped": guard.skipped,
                    "best_holdout_loss": stopper.best if holdout_losses else None}
    result.adapter_dir = save_adapter(out_dir, backend.weights(), backend.spec(config), prov)
    shutil.rmtree(ckpt, ignore_errors=True)  # done: a later run must not resume this one
    return result
