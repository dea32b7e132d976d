"""Continual-learning and drift metrics, and the promotion gate: pure numpy, no model.

Owns: the accuracy matrix R (after night i, accuracy on facts taught on night j), average
accuracy, backward transfer (BWT, as defined for GEM by Lopez-Paz & Ranzato 2017), per-fact
forgetting, mean KL divergence between next-token distributions, perplexity from token
log-probs, percentile bootstrap confidence intervals, and `gate()` with its `GateConfig`.
Does not know where the numbers come from: runtimes, probes and adapters live elsewhere, and
callers pass plain numbers and arrays in.

Conventions: accuracies are fractions in [0, 1]; the gate's thresholds are in percentage points
(1 point = 0.01) because that is how people state them. Nights are 1-based as in fact files;
R is indexed 0-based (R[0][0] is "after night 1, facts of night 1").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np


class MetricsError(ValueError):
    """Bad input to a metric; the message says what was wrong and what to pass instead."""


# --- continual learning across nights --------------------------------------------------------

@dataclass(frozen=True)
class FactOutcome:
    """One fact probed after one night: `correct` is 0/1 or the share of its questions right."""

    fact_id: str
    taught_night: int  # 1-based, the night the fact was told
    after_night: int  # 1-based, the night after whose sleep it was probed
    correct: float


def accuracy_matrix(outcomes: Iterable[FactOutcome], n_nights: int | None = None) -> np.ndarray:
    """R[i][j] = mean correctness, after night i+1, of the facts taught on night j+1.

    Cells with no outcome are NaN (e.g. a night that was not evaluated). Cells above the diagonal
    (facts not yet taught) are kept when given: they show what the model knew by chance.
    """
    outcomes = list(outcomes)
    if not outcomes and not n_nights:
        raise MetricsError("no outcomes given; pass at least one FactOutcome or n_nights.")
    seen = max([max(o.taught_night, o.after_night) for o in outcomes], default=0)
    T = n_nights or seen
    if seen > T:
        raise MetricsError(f"an outcome mentions night {seen} but n_nights is {T}; "
                           "raise n_nights or drop that outcome.")
    sums = np.zeros((T, T))
    counts = np.zeros((T, T))
    for o in outcomes:
        if o.taught_night < 1 or o.after_night < 1:
            raise MetricsError(f"fact {o.fact_id!r}: nights are 1-based, got taught_night="
                               f"{o.taught_night}, after_night={o.after_night}.")
        if not 0.0 <= o.correct <= 1.0 or math.isnan(o.correct):
            raise MetricsError(f"fact {o.fact_id!r}: correct must be in [0, 1], got {o.correct}.")
        sums[o.after_night - 1, o.taught_night - 1] += o.correct
        counts[o.after_night - 1, o.taught_night - 1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _square(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise MetricsError(f"R must be a non-empty square matrix (nights x nights), got shape {R.shape}.")
    return R


def average_accuracy(R) -> float:
    """GEM's ACC: mean accuracy after the last night over the facts of every night so far."""
    R = _square(R)
    last = R[-1]
    if np.all(np.isnan(last)):
        raise MetricsError("the last row of R has no measurements; evaluate after the last night.")
    return float(np.nanmean(last))


def backward_transfer(R) -> float:
    """GEM's BWT: mean over j < T-1 of R[T-1][j] - R[j][j]. Negative means forgetting.

    With one night there is nothing earlier to forget, so BWT is 0.0. Nights whose cells are
    NaN are left out of the mean.
    """
    R = _square(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    diffs = np.array([R[T - 1, j] - R[j, j] for j in range(T - 1)])
    diffs = diffs[~np.isnan(diffs)]
    return float(diffs.mean()) if diffs.size else 0.0


def forgetting(outcomes: Iterable[FactOutcome]) -> dict[str, float]:
    """Per fact: best accuracy on any night before the last one it was probed, minus the final.

    Only nights from the one it was taught on count (before that it was not yet learned). A fact
    probed on one night only has forgetting 0.0. Positive means it was known once and lost.
    """
    history: dict[str, dict[int, float]] = {}
    for o in outcomes:
        if o.after_night >= o.taught_night:
            history.setdefault(o.fact_id, {})[o.after_night] = o.correct
    out = {}
    for fid, by_night in history.items():
        nights = sorted(by_night)
        final = by_night[nights[-1]]
        earlier = [by_night[n] for n in nights[:-1]]
        out[fid] = float(max(earlier) - final) if earlier else 0.0
    return out


def matrix_to_lists(R) -> list[list[float | None]]:
    """R as nested lists for JSON: NaN (not measured) becomes None."""
    return [[None if math.isnan(x) else float(x) for x in row] for row in np.asarray(R, dtype=float)]


# --- drift --------------------------------------------------------------------------------

def mean_kl(base_logprobs: Sequence[np.ndarray], adapted_logprobs: Sequence[np.ndarray]) -> float:
    """Mean over all positions of KL(base || adapted) between next-token distributions.

    Each element is a [positions, vocab] array of log-probabilities for the same text under the
    two models; positions from all texts are pooled, so long texts weigh more.
    """
    if len(base_logprobs) != len(adapted_logprobs):
        raise MetricsError(f"{len(base_logprobs)} base arrays but {len(adapted_logprobs)} adapted "
                           "ones; pass one array per text for each model.")
    total, n = 0.0, 0
    for k, (b, a) in enumerate(zip(base_logprobs, adapted_logprobs)):
        b = np.asarray(b, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        if b.shape != a.shape or b.ndim != 2:
            raise MetricsError(f"text {k}: base shape {b.shape} vs adapted {a.shape}; both must be "
                               "[positions, vocab] over the same tokens.")
        p = np.exp(b)
        # 0 * log 0 is 0: mask positions where the base gives (numerically) zero mass
        kl = np.where(p > 0, p * (b - a), 0.0).sum(axis=-1)
        total += float(kl.sum())
        n += kl.shape[0]
    if n == 0:
        raise MetricsError("no positions to compare; give at least one non-empty text.")
    # tiny negative values are float noise (KL >= 0)
    return max(0.0, total / n)


def perplexity_from_logprobs(token_logprobs: Iterable[float] | np.ndarray) -> float:
    """exp of the mean negative log-likelihood (natural log) per predicted token."""
    lp = np.asarray(list(token_logprobs) if not isinstance(token_logprobs, np.ndarray)
                    else token_logprobs, dtype=np.float64).ravel()
    if lp.size == 0:
        raise MetricsError("no token log-probs given; perplexity needs at least one token.")
    if np.any(lp > 1e-9):
        raise MetricsError("log-probs must be <= 0; pass log p(token), not probabilities or logits.")
    return float(np.exp(-lp.mean()))


# --- bootstrap ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CI:
    """A point estimate with a percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    confidence: float = 0.95
    n: int = 0

    def to_list(self) -> list[float]:
        return [self.low, self.high]


def _resample_means(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    means = np.empty(n_resamples)
    # chunked so memory stays at ~1e6 indices whatever n is
    step = max(1, 1_000_000 // n)
    for start in range(0, n_resamples, step):
        k = min(step, n_resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        means[start:start + k] = x[idx].mean(axis=1)
    return means


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if n_resamples < 1:
        raise MetricsError(f"n_resamples must be >= 1, got {n_resamples}.")
    if not 0.0 < confidence < 1.0:
        raise MetricsError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}.")


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> CI:
    """Percentile bootstrap interval of the mean of values (seeded, so reports are reproducible)."""
    _check_bootstrap(n_resamples, confidence)
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise MetricsError("bootstrap_ci needs at least one value.")
    means = _resample_means(x, n_resamples, seed)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return CI(float(x.mean()), float(lo), float(hi), confidence, int(x.size))


def paired_bootstrap_ci(a: Sequence[float], b: Sequence[float], n_resamples: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> CI:
    """Interval of mean(a - b) where a[k] and b[k] are the same item under two conditions.

    Resampling items (not the two arms separately) keeps the pairing, which is what makes a
    small difference on a small probe set detectable at all.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise MetricsError(f"paired values differ in length ({a.size} vs {b.size}); score both "
                           "arms on the same items in the same order.")
    return bootstrap_ci(a - b, n_resamples, confidence, seed)


# --- the promotion gate ---------------------------------------------------------------------

@dataclass(frozen=True)
class GateConfig:
    """Thresholds an adapter must meet to be promoted. Points are percentage points."""

    min_personal_gain_points: float = 0.0  # adapter must beat base by strictly more than this
    max_general_drop_points: float = 1.0  # general accuracy may fall at most this much
    max_ppl_ratio: float = 1.05  # adapted / base perplexity on held-out text
    min_bwt_points: float = -5.0  # backward transfer across nights, at least this
    # With per-item results the general check asks whether the drop is *shown* to exceed the
    # budget: the one-sided lower confidence bound of the paired drop (bootstrap over items) must
    # stay within it. On a 60-item probe one item is 1.7 points, so a point estimate against a
    # 1-point budget rejects on one unlucky item; KL and perplexity catch small real drift.
    # 0 = the point estimate decides.
    general_confidence: float = 0.9
    # Short general questions the base model answered (greedy, the bundled factual set): the
    # adapter may lose at most this many percentage points of them more than the base model
    # itself loses when only its system prompt is reworded (the model's own noise floor: 11% of
    # its known answers on the 135M default). Losing what everyone knows ("capital of France")
    # is the damage users notice first.
    max_factual_lost_pct: float = 3.0

    def __post_init__(self):
        for name in ("min_personal_gain_points", "max_general_drop_points", "max_ppl_ratio",
                     "min_bwt_points", "general_confidence", "max_factual_lost_pct"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise MetricsError(f"GateConfig.{name} must be a finite number, got {v!r}.")
        if not -100 <= self.min_personal_gain_points < 100:
            raise MetricsError("GateConfig.min_personal_gain_points must be in [-100, 100) points, "
                               f"got {self.min_personal_gain_points}.")
        if not 0 <= self.max_general_drop_points <= 100:
            raise MetricsError("GateConfig.max_general_drop_points must be in [0, 100] points, "
                               f"got {self.max_general_drop_points}.")
        if self.max_ppl_ratio < 1.0:
            raise MetricsError(f"GateConfig.max_ppl_ratio must be >= 1.0 (1.0 = no change allowed), "
                               f"got {self.max_ppl_ratio}.")
        if not 0 <= self.general_confidence < 1:
            raise MetricsError("GateConfig.general_confidence must be in [0, 1) (0 = point estimate), "
                               f"got {self.general_confidence}.")
        if not 0 <= self.max_factual_lost_pct <= 100:
            raise MetricsError("GateConfig.max_factual_lost_pct must be in [0, 100] percent, "
                               f"got {self.max_factual_lost_pct}.")
        if not -100 <= self.min_bwt_points <= 0:
            raise MetricsError(f"GateConfig.min_bwt_points must be in [-100, 0] points, "
                               f"got {self.min_bwt_points}.")


@dataclass(frozen=True)
class GateInputs:
    """What the gate decides on. Accuracies and BWT are fractions; None means not measured."""

    personal_base: float  # personal accuracy without the adapter
    personal_adapted: float  # personal accuracy with it
    general_base: float
    general_adapted: float
    ppl_ratio: float | None = None  # adapted / base perplexity
    bwt: float | None = None  # backward transfer over nights (None for the first night)
    # per-item correctness on the general probe, same items in the same order (optional)
    general_base_correct: tuple | None = None
    general_adapted_correct: tuple | None = None
    # per bundled factual item: did the base answer it, and does the adapter (same order; an
    # item the base did not answer may be None: only answers the base knew can be lost)
    factual_base_correct: tuple | None = None
    factual_adapted_correct: tuple | None = None
    # percent of those answers the base itself loses under a reworded system prompt (0 if unknown)
    factual_noise_pct: float = 0.0


@dataclass
class GateCheck:
    name: str
    value: float
    threshold: float
    passed: bool
    message: str


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # one line per failed check, with numbers
    checks: list[GateCheck] = field(default_factory=list)  # every check run, passed or not

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": list(self.reasons),
                "checks": [vars(c).copy() for c in self.checks]}


def _fraction(name: str, v: float) -> float:
    if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
        raise MetricsError(f"GateInputs.{name} must be an accuracy in [0, 1], got {v!r}.")
    return float(v)


def _drop_lower_bound(inputs: GateInputs, confidence: float) -> float | None:
    """One-sided lower confidence bound (points) of the paired general-accuracy drop."""
    b, a = inputs.general_base_correct, inputs.general_adapted_correct
    if not confidence or b is None or a is None:
        return None
    if len(b) != len(a) or not b:
        raise MetricsError(f"per-item general results differ in length ({len(b)} vs {len(a)}) or "
                           "are empty; score base and adapter on the same items.")
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if abs(d.mean() * 100 - (inputs.general_base - inputs.general_adapted) * 100) > 1e-6:
        raise MetricsError("per-item general results do not match the general accuracies given.")
    means = _resample_means(d, 2000, 0)
    return float(np.quantile(means, 1.0 - confidence)) * 100


def gate(inputs: GateInputs, config: GateConfig | None = None) -> GateResult:
    """Promote an adapter only if it helps personally and stays inside the forgetting budget."""
    cfg = config or GateConfig()
    pb = _fraction("personal_base", inputs.personal_base)
    pa = _fraction("personal_adapted", inputs.personal_adapted)
    gb = _fraction("general_base", inputs.general_base)
    ga = _fraction("general_adapted", inputs.general_adapted)
    checks: list[GateCheck] = []

    gain = (pa - pb) * 100
    ok = gain > cfg.min_personal_gain_points + 1e-9
    checks.append(GateCheck(
        "personal_gain", gain, cfg.min_personal_gain_points, ok,
        f"personal accuracy gain {gain:+.1f} points ({pb:.3f} -> {pa:.3f}) "
        f"{'>' if ok else 'is not >'} {cfg.min_personal_gain_points:g} points"))

    drop = (gb - ga) * 100
    bound = _drop_lower_bound(inputs, cfg.general_confidence)
    if bound is None:
        ok = drop <= cfg.max_general_drop_points + 1e-9
        msg = (f"general accuracy drop {drop:.1f} points ({gb:.3f} -> {ga:.3f}) "
               f"{'<=' if ok else 'exceeds'} {cfg.max_general_drop_points:g} points")
    else:
        ok = bound <= cfg.max_general_drop_points + 1e-9
        n = len(inputs.general_base_correct)
        msg = (f"general accuracy drop {drop:.1f} points ({gb:.3f} -> {ga:.3f}, {n} items); "
               f"at {cfg.general_confidence:.0%} confidence it is at least {bound:.1f} points, "
               f"{'within' if ok else 'over'} the {cfg.max_general_drop_points:g}-point budget")
    checks.append(GateCheck("general_drop", drop, cfg.max_general_drop_points, ok, msg))

    fb, fa = inputs.factual_base_correct, inputs.factual_adapted_correct
    if fb is not None and fa is not None:
        if len(fb) != len(fa):
            raise MetricsError(f"per-item factual results differ in length ({len(fb)} vs {len(fa)}); "
                               "ask base and adapter the same items.")
        known = sum(1 for b in fb if b)
        lost = sum(1 for b, a in zip(fb, fa) if b and not a)
        pct = 100.0 * lost / known if known else 0.0
        noise = float(inputs.factual_noise_pct or 0.0)
        if not 0 <= noise <= 100:
            raise MetricsError(f"GateInputs.factual_noise_pct must be a percentage, got {noise!r}.")
        limit = noise + cfg.max_factual_lost_pct
        ok = pct <= limit + 1e-9
        floor = f"the base's own {noise:.1f}% under a reworded system prompt + " if noise else ""
        checks.append(GateCheck(
            "factual_lost", pct, limit, ok,
            f"lost {lost} of the {known} general questions the base model answered ({pct:.1f}%), "
            f"{'within' if ok else 'over'} {floor}the {cfg.max_factual_lost_pct:g}-point budget"))

    if inputs.ppl_ratio is not None:
        r = float(inputs.ppl_ratio)
        if not math.isfinite(r) or r <= 0:
            raise MetricsError(f"GateInputs.ppl_ratio must be a positive number, got {r!r}.")
        ok = r <= cfg.max_ppl_ratio + 1e-12
        checks.append(GateCheck(
            "ppl_ratio", r, cfg.max_ppl_ratio, ok,
            f"perplexity ratio {r:.3f} {'<=' if ok else 'exceeds'} {cfg.max_ppl_ratio:g}"))

    if inputs.bwt is not None:
        b = float(inputs.bwt)
        if not -1.0 <= b <= 1.0:
            raise MetricsError(f"GateInputs.bwt must be a fraction in [-1, 1], got {b!r}.")
        pts = b * 100
        ok = pts >= cfg.min_bwt_points - 1e-9
        checks.append(GateCheck(
            "bwt", pts, cfg.min_bwt_points, ok,
            f"backward transfer {pts:+.1f} points {'>=' if ok else 'is below'} "
            f"{cfg.min_bwt_points:g} points"))

    reasons = [c.message for c in checks if not c.passed]
    return GateResult(passed=not reasons, reasons=reasons, checks=checks)


__all__ = [
    "CI", "FactOutcome", "GateCheck", "GateConfig", "GateInputs", "GateResult", "MetricsError",
    "accuracy_matrix", "average_accuracy", "backward_transfer", "bootstrap_ci", "forgetting",
    "gate", "matrix_to_lists", "mean_kl", "paired_bootstrap_ci", "perplexity_from_logprobs",
]
