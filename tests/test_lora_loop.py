"""lora.loop on a numpy fake backend: the loop's logic without torch or mlx (fast).

The real backends are tested on the real model in test_lora_peft_trainer.py and
test_lora_mlx_trainer.py; this pins what the loop itself decides: the objective, spike skips,
divergence aborts, early stopping on held-out loss, checkpoints and resume, the reports, and
handing the model back on every way out.
"""
import math

import numpy as np
import pytest

from lora.adapter import AdapterSpec, key, load_adapter
from lora.config import TrainConfig
from lora.dataset import Dataset, Example, PreferencePair
from lora.errors import LoraError
from lora.loop import Batch, fingerprint, objective, odds_ratio_loss, train


def ex(q, a, kind="fact"):
    return Example([{"role": "user", "content": q}, {"role": "assistant", "content": a}], kind, "f")


def render(messages):
    return "".join(f"<{m['role']}>{m['content']}</s>" for m in messages) + "<assistant>"


class Fake:
    """One scalar weight w (stored as a 1x1 LoRA A and B of layer 0's q_proj); the answer loss is
    (w - 1)^2 + 1 scaled by `scale[step]`, the anchor term is w^2. Gradients by hand."""

    name = "fake"

    def __init__(self, scale=None):
        self.scale = scale or {}
        self.calls, self.closed, self.evals = 0, False, 0
        self.holdout_target = 1.0

    def load(self, config):
        self.config = config

    def tokenize(self, text, add_special):
        return ([0] if add_special else []) + [ord(c) % 50 + 1 for c in text]

    def setup(self, config, init_weights):
        self.w = float(init_weights[key(0, "q_proj", "a")][0, 0]) if init_weights else 0.0

    def batch(self, answers, anchors, pairs=()):
        return (answers or None), (anchors or None), (list(pairs) or None)

    def answer_ce(self, rows):
        return ((self.w - 1) ** 2 + 1, 2 * (self.w - 1))

    def anchor_kl(self, rows):
        return (self.w ** 2, 2 * self.w)

    def step_loss(self, loss_fn):
        self.calls += 1
        value, self.grad = loss_fn()
        return value * self.scale.get(self.calls, 1.0)

    def update(self, lr):
        self.w -= 0.25 * self.grad

    def discard(self):
        self.grad = None

    def eval_loss(self, rows):
        self.evals += 1
        return abs(self.w - self.holdout_target)

    def weights(self):
        return {key(0, "q_proj", "a"): np.array([[self.w]], np.float32),
                key(0, "q_proj", "b"): np.array([[1.0]], np.float32)}

    def set_weights(self, weights):
        self.w = float(weights[key(0, "q_proj", "a")][0, 0])

    def save_state(self, directory):
        (directory / "fake.txt").write_text(repr(self.w))

    def load_state(self, directory, step):
        self.w = float((directory / "fake.txt").read_text())

    def peak_mb(self):
        return 1.0

    def spec(self, config):
        return AdapterSpec(trainer="fake", rank=1, alpha=1.0, targets=["q_proj"], n_layers=1,
                           base_dims={"q_proj": [1, 1]}, train_config=config.to_dict())

    def close(self):
        self.closed = True


class Pair:  # objective() only adds and scales what the backend returns
    def __init__(self, v):
        self.v = v

    def __add__(self, o):
        return Pair(self.v + o.v)

    def __rmul__(self, k):
        return Pair(k * self.v)


class Ops:
    def answer_ce(self, rows):
        return Pair(2.0)

    def anchor_kl(self, rows):
        return Pair(0.5)


DATA = [ex("Where do I live?", "Tromsø."), ex("Dog?", "Biscuit.")]


def cfg(**kw):
    base = dict(rank=1, alpha=1, steps=6, batch_size=2, max_seq_len=64, warmup_steps=0,
                checkpoint_every=0, spike_warmup=2, seed=0)
    return TrainConfig(**{**base, **kw})


def test_objective_is_answer_ce_plus_weighted_anchor_kl():
    c = TrainConfig(anchor_kl=0.4)
    assert objective(Ops(), Batch([1], None), c).v == 2.0
    assert objective(Ops(), Batch(None, [1]), c).v == pytest.approx(0.2)
    assert objective(Ops(), Batch([1], [1]), c).v == pytest.approx(2.2)


def test_odds_ratio_loss_matches_values_computed_by_hand():
    """ORPO's term on two pairs. Pair 1: P(chosen) = 0.5 (odds 1), P(rejected) = 0.2 (odds 1/4):
    z = ln 4, -log sigmoid(z) = ln(1 + 1/4). Pair 2 swaps them: ln(1 + 4). Mean of the two."""
    chosen, rejected = np.log([0.5, 0.2]), np.log([0.2, 0.5])
    want = (math.log(1.25) + math.log(5.0)) / 2
    assert odds_ratio_loss(np, chosen, rejected) == pytest.approx(want, rel=1e-5)
    assert odds_ratio_loss(np, np.log([0.9]), np.log([0.9])) == pytest.approx(math.log(2), rel=1e-5)
    # a chosen answer far more likely than the rejected one costs ~0; the reverse costs ~z
    assert odds_ratio_loss(np, np.log([0.999]), np.log([1e-6])) < 1e-6
    assert odds_ratio_loss(np, np.log([1e-6]), np.log([0.999])) == pytest.approx(
        math.log(0.999 / 0.001) - math.log(1e-6 / (1 - 1e-6)), rel=1e-3)
    # P = 1 exactly (log-prob 0) stays finite
    assert math.isfinite(odds_ratio_loss(np, np.array([0.0]), np.log([0.5])))


class ArrayOps:  # objective() over numpy: the pair term is weighted and added once
    xp = np

    def answer_ce(self, rows):
        return np.float64(2.0)

    def anchor_kl(self, rows):
        return np.float64(0.5)

    def answer_logprobs(self, rows):
        return np.log(np.array(rows, dtype=np.float64))


def test_objective_adds_the_weighted_odds_ratio_term_on_pairs():
    c = TrainConfig(anchor_kl=0.4, preference_weight=0.5)
    probs = [0.5, 0.2]  # one chosen row, then its rejected row
    orpo = math.log(1.25)
    assert objective(ArrayOps(), Batch(None, None, probs, 1), c) == pytest.approx(0.5 * orpo, rel=1e-5)
    assert objective(ArrayOps(), Batch([1], [1], probs, 1), c) == pytest.approx(2.2 + 0.5 * orpo, rel=1e-5)


def test_pairs_are_items_of_the_epoch_and_reach_the_objective(tmp_path):
    class PairFake(Fake):
        xp = np

        def __init__(self):
            super().__init__()
            self.pair_rows = []

        def batch(self, answers, anchors, pairs=()):
            self.pair_rows.append(len(pairs))
            return (answers or None), None, (list(pairs) or None)

        def answer_ce(self, rows):
            return np.float64((self.w - 1) ** 2 + 1)

        def answer_logprobs(self, rows):  # chosen rows P = 0.5, rejected rows P = 0.2
            k = len(rows) // 2
            return np.log(np.array([0.5] * k + [0.2] * k))

        def step_loss(self, loss_fn):
            self.grad = 2 * (self.w - 1)
            return float(loss_fn())

    pair = PreferencePair("fb1", "Weather?", "In short: rain.", "It might rain or not.", "Be brief.")
    ds = Dataset(train=DATA, holdout=[], pairs=[pair], fact_ids=["f"])
    b = PairFake()
    r = train(b, ds, cfg(steps=0, epochs=2, batch_size=3, preference_weight=0.25), render,
              out_dir=tmp_path / "a", work_dir=tmp_path / "w")
    assert r.steps == 2  # 2 examples + 1 pair = one batch of 3 per epoch
    assert b.pair_rows == [2, 2]  # every step carries the pair's chosen and rejected rows
    assert r.losses[0] == pytest.approx(2.0 + 0.25 * math.log(1.25), rel=1e-5)
    b = PairFake()
    off = train(b, ds, cfg(steps=0, epochs=2, batch_size=3, preference_weight=0), render,
                out_dir=tmp_path / "b", work_dir=tmp_path / "w2")
    assert off.steps == 2 and b.pair_rows == [0, 0] and off.losses[0] == pytest.approx(2.0)


def test_trains_reports_and_saves_an_adapter(tmp_path):
    reports = []
    b = Fake()
    r = train(b, DATA, cfg(), render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
              on_report=reports.append)
    assert r.steps == 6 and r.trainer == "fake" and not r.aborted and b.closed
    assert r.losses == sorted(r.losses, reverse=True) and r.losses[-1] < r.losses[0]
    assert [x.step for x in reports if x.event == "step"] == list(range(1, 7))
    a = load_adapter(r.adapter_dir)
    assert a.spec.trainer == "fake" and a.provenance.metrics["steps"] == 6
    assert a.weights[key(0, "q_proj", "a")][0, 0] == pytest.approx(b.w)


def test_spike_is_skipped_divergence_and_nan_abort_without_writing(tmp_path):
    b = Fake(scale={4: 50.0})
    events = []
    r = train(b, DATA, cfg(steps=5), render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
              on_report=lambda x: events.append(x.event))
    assert r.skipped == 1 and events.count("skip") == 1 and len(r.losses) == 4 and r.adapter_dir

    b = Fake(scale={i: 1e3 for i in range(4, 20)})
    r = train(b, DATA, cfg(steps=8, max_consecutive_spikes=2), render, out_dir=tmp_path / "b",
              work_dir=tmp_path / "w")
    assert r.aborted and "consecutive" in r.abort_reason and r.adapter_dir is None
    assert not (tmp_path / "b").exists() and b.closed

    b = Fake(scale={1: math.nan})
    r = train(b, DATA, cfg(), render, out_dir=tmp_path / "c", work_dir=tmp_path / "w")
    assert r.aborted and "NaN" in r.abort_reason and r.steps == 1 and b.closed


def test_early_stopping_keeps_the_best_held_out_weights(tmp_path):
    b = Fake()
    b.holdout_target = 0.5  # w rises from 0 towards 1: held-out loss is best near w = 0.5
    ds = Dataset(train=DATA, holdout=[ex("Where is home?", "Tromsø.")], pairs=[], fact_ids=["f"])
    r = train(b, ds, cfg(steps=20, eval_every=1, patience=2), render, out_dir=tmp_path / "a",
              work_dir=tmp_path / "w")
    assert r.stopped_early and r.steps < 20 and len(r.holdout_losses) == r.steps
    best = min(r.holdout_losses)
    saved = load_adapter(r.adapter_dir).weights[key(0, "q_proj", "a")][0, 0]
    assert abs(saved - 0.5) == pytest.approx(best, abs=1e-6)
    assert load_adapter(r.adapter_dir).provenance.metrics["best_holdout_loss"] == pytest.approx(best)


def test_a_stopped_run_resumes_from_its_checkpoint_and_a_foreign_one_is_ignored(tmp_path):
    full = train(Fake(), DATA, cfg(), render, out_dir=tmp_path / "full", work_dir=tmp_path / "wf")
    c = cfg(checkpoint_every=2)
    r1 = train(Fake(), DATA, c, render, out_dir=tmp_path / "a", work_dir=tmp_path / "w", stop_at_step=4)
    assert r1.interrupted and r1.adapter_dir is None and (tmp_path / "w" / "checkpoint" / "state.json").exists()
    events = []
    r2 = train(Fake(), DATA, c, render, out_dir=tmp_path / "a", work_dir=tmp_path / "w",
               on_report=lambda x: events.append(x.event))
    assert r2.resumed_from == 4 and events[0] == "resume" and r2.losses == pytest.approx(full.losses)
    assert not (tmp_path / "w" / "checkpoint").exists()

    train(Fake(), DATA, c, render, out_dir=tmp_path / "b", work_dir=tmp_path / "w2", stop_at_step=2)
    other = train(Fake(), DATA, cfg(checkpoint_every=2, learning_rate=5e-4), render,
                  out_dir=tmp_path / "b", work_dir=tmp_path / "w2")
    assert other.resumed_from == 0  # another config's checkpoint is not this run's
    assert fingerprint("peft", "h", c, "") != fingerprint("mlx", "h", c, "")


def test_empty_data_and_a_failing_setup_hand_the_model_back(tmp_path):
    with pytest.raises(LoraError, match="nothing to train"):
        train(Fake(), [], cfg(), render, out_dir=tmp_path / "a", work_dir=tmp_path / "w")

    class Broken(Fake):
        def setup(self, config, init_weights):
            raise LoraError("initial adapter lacks tensors")

    b = Broken()
    with pytest.raises(LoraError, match="lacks"):
        train(b, DATA, cfg(), render, out_dir=tmp_path / "a", work_dir=tmp_path / "w")
    assert b.closed
