"""Metrics on hand-made cases: every expected number here was worked out by hand."""
import math

import numpy as np
import pytest

from lora.metrics import (CI, FactOutcome, GateConfig, GateInputs, MetricsError, accuracy_matrix,
                          average_accuracy, backward_transfer, bootstrap_ci, forgetting, gate,
                          matrix_to_lists, mean_kl, paired_bootstrap_ci, perplexity_from_logprobs)


def _outcomes():
    # night 1 teaches f1, f2; night 2 teaches g; night 3 teaches h. Probed after every night.
    table = {
        # fact: (taught, [after n1, after n2, after n3])
        "f1": (1, [1.0, 0.6, 0.5]),
        "f2": (1, [0.6, 0.6, 0.5]),
        "g": (2, [0.1, 0.9, 0.7]),
        "h": (3, [0.0, 0.0, 1.0]),
    }
    return [FactOutcome(fid, taught, i + 1, c)
            for fid, (taught, accs) in table.items() for i, c in enumerate(accs)]


def test_accuracy_matrix_3x3_by_hand():
    R = accuracy_matrix(_outcomes())
    expected = np.array([[0.8, 0.1, 0.0],
                         [0.6, 0.9, 0.0],
                         [0.5, 0.7, 1.0]])
    np.testing.assert_allclose(R, expected)


def test_bwt_and_average_accuracy_by_hand():
    R = accuracy_matrix(_outcomes())
    # ((0.5 - 0.8) + (0.7 - 0.9)) / 2
    assert backward_transfer(R) == pytest.approx(-0.25)
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_bwt_positive_when_later_nights_help_and_zero_for_one_night():
    assert backward_transfer([[0.4, 0.0], [0.6, 1.0]]) == pytest.approx(0.2)
    assert backward_transfer([[0.7]]) == 0.0


def test_missing_cells_are_nan_and_json_none():
    R = accuracy_matrix([FactOutcome("a", 1, 1, 1.0), FactOutcome("b", 2, 2, 0.0)])
    assert math.isnan(R[0, 1]) and math.isnan(R[1, 0])
    assert matrix_to_lists(R) == [[1.0, None], [None, 0.0]]
    # BWT skips night 1 (no final measurement) rather than inventing one
    assert backward_transfer(R) == 0.0


def test_forgetting_per_fact():
    f = forgetting(_outcomes())
    assert f["f1"] == pytest.approx(0.5)  # max(1.0, 0.6) - 0.5
    assert f["f2"] == pytest.approx(0.1)
    assert f["g"] == pytest.approx(0.2)  # only nights >= 2 count: 0.9 - 0.7
    assert f["h"] == 0.0  # taught on the last night


def test_accuracy_matrix_rejects_bad_input():
    with pytest.raises(MetricsError, match="1-based"):
        accuracy_matrix([FactOutcome("a", 0, 1, 1.0)])
    with pytest.raises(MetricsError, match=r"\[0, 1\]"):
        accuracy_matrix([FactOutcome("a", 1, 1, 2.0)])
    with pytest.raises(MetricsError, match="n_nights"):
        accuracy_matrix([FactOutcome("a", 3, 3, 1.0)], n_nights=2)
    with pytest.raises(MetricsError, match="square"):
        backward_transfer([[1.0, 0.0]])


def test_kl_identical_is_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 11))
    lp = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    assert mean_kl([lp, lp[:2]], [lp, lp[:2]]) == pytest.approx(0.0, abs=1e-12)


def test_kl_two_tokens_by_hand():
    base = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    adapted = np.log(np.array([[0.25, 0.75], [0.9, 0.1]]))
    # position 1: 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln 2 + 0.5 ln(2/3); position 2: 0
    expected = (0.5 * math.log(2) + 0.5 * math.log(2 / 3) + 0.0) / 2
    assert mean_kl([base], [adapted]) == pytest.approx(expected)
    # KL is not symmetric: the direction matters
    assert mean_kl([adapted], [base]) != pytest.approx(expected)


def test_kl_shape_mismatch_is_an_error():
    with pytest.raises(MetricsError, match="shape"):
        mean_kl([np.zeros((2, 3))], [np.zeros((3, 3))])


def test_perplexity_of_uniform_model_is_vocab_size():
    V = 49152
    assert perplexity_from_logprobs(np.full(37, -math.log(V))) == pytest.approx(V)
    assert perplexity_from_logprobs([0.0, 0.0]) == pytest.approx(1.0)
    with pytest.raises(MetricsError):
        perplexity_from_logprobs([])
    with pytest.raises(MetricsError, match="<= 0"):
        perplexity_from_logprobs([0.5])


def test_bootstrap_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, size=20)
    large = rng.integers(0, 2, size=2000)
    a = bootstrap_ci(small, n_resamples=1000, seed=3)
    b = bootstrap_ci(large, n_resamples=1000, seed=3)
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert a.mean == pytest.approx(small.mean())
    assert (b.high - b.low) < (a.high - a.low) / 3  # ~sqrt(100) = 10x narrower in theory
    assert bootstrap_ci(small, n_resamples=1000, seed=3) == a  # seeded: reproducible


def test_bootstrap_of_constant_is_a_point_and_bad_args_fail():
    c = bootstrap_ci([1, 1, 1], n_resamples=50)
    assert (c.low, c.mean, c.high) == (1.0, 1.0, 1.0)
    with pytest.raises(MetricsError):
        bootstrap_ci([])
    with pytest.raises(MetricsError):
        bootstrap_ci([1.0], confidence=1.5)


def test_paired_bootstrap_difference():
    a = [1, 1, 1, 0, 1, 1, 0, 1]
    b = [0, 1, 0, 0, 1, 0, 0, 1]
    ci = paired_bootstrap_ci(a, b, n_resamples=500)
    assert isinstance(ci, CI)
    assert ci.mean == pytest.approx(3 / 8)
    assert ci.low <= ci.mean <= ci.high and ci.low >= 0.0  # b never beats a on an item
    with pytest.raises(MetricsError, match="length"):
        paired_bootstrap_ci([1, 0], [1])


def test_gate_passes_inside_budget():
    r = gate(GateInputs(personal_base=0.1, personal_adapted=0.6, general_base=0.40,
                        general_adapted=0.395, ppl_ratio=1.02, bwt=-0.04))
    assert r.passed and r.reasons == []
    assert [c.name for c in r.checks] == ["personal_gain", "general_drop", "ppl_ratio", "bwt"]


def test_gate_reasons_name_each_failure_with_numbers():
    r = gate(GateInputs(personal_base=0.5, personal_adapted=0.5, general_base=0.40,
                        general_adapted=0.37, ppl_ratio=1.10, bwt=-0.08))
    assert not r.passed
    assert len(r.reasons) == 4
    text = "\n".join(r.reasons)
    assert "gain +0.0 points" in text
    assert "drop 3.0 points" in text and "exceeds 1 points" in text
    assert "1.100 exceeds 1.05" in text
    assert "-8.0 points is below -5 points" in text


def test_gate_skips_unmeasured_and_uses_config():
    r = gate(GateInputs(0.2, 0.3, 0.5, 0.48), GateConfig(max_general_drop_points=2.5))
    assert r.passed and {c.name for c in r.checks} == {"personal_gain", "general_drop"}
    r = gate(GateInputs(0.2, 0.3, 0.5, 0.48))
    assert not r.passed and r.reasons[0].startswith("general accuracy drop 2.0 points")


def test_gate_general_check_is_noise_aware_with_per_item_results():
    base = (True,) * 42 + (False,) * 18  # 60 items, 0.700
    one_flip = (False,) + base[1:]  # one unlucky item: 1.7 points down
    r = gate(GateInputs(0.0, 0.8, 0.7, 41 / 60, None, None, base, one_flip))
    assert r.passed, r.reasons
    assert "at 90% confidence" in r.checks[1].message and "within" in r.checks[1].message
    # the same numbers without per-item results: the point estimate rejects
    assert not gate(GateInputs(0.0, 0.8, 0.7, 41 / 60)).passed
    # and so does confidence 0 with them
    assert not gate(GateInputs(0.0, 0.8, 0.7, 41 / 60, None, None, base, one_flip),
                    GateConfig(general_confidence=0)).passed
    # a real drop: 8 items lost, none gained (13 points) is shown beyond the budget
    eight = (False,) * 8 + base[8:]
    r = gate(GateInputs(0.0, 0.8, 0.7, 34 / 60, None, None, base, eight))
    assert not r.passed and "over the 1-point budget" in r.reasons[0]
    # losses offset by gains are no drop at all
    swapped = (False,) * 3 + base[3:42] + (True,) * 3 + base[45:]
    assert gate(GateInputs(0.0, 0.8, 0.7, 0.7, None, None, base, swapped)).passed
    with pytest.raises(MetricsError, match="differ in length"):
        gate(GateInputs(0.0, 0.8, 0.7, 0.7, None, None, base, base[:10]))
    with pytest.raises(MetricsError, match="do not match"):
        gate(GateInputs(0.0, 0.8, 0.7, 0.5, None, None, base, base))
    with pytest.raises(MetricsError, match="general_confidence"):
        GateConfig(general_confidence=1.0)


def test_gate_config_and_inputs_validated():
    with pytest.raises(MetricsError, match="max_ppl_ratio"):
        GateConfig(max_ppl_ratio=0.9)
    with pytest.raises(MetricsError, match="min_bwt_points"):
        GateConfig(min_bwt_points=3)
    with pytest.raises(MetricsError, match="finite"):
        GateConfig(max_general_drop_points=float("nan"))
    with pytest.raises(MetricsError, match="personal_adapted"):
        gate(GateInputs(0.2, 1.3, 0.5, 0.5))


def test_gate_factual_check_counts_answers_the_base_knew_and_the_adapter_lost():
    base = (True,) * 100 + (False,) * 60  # the base answered 100 of 160 short questions
    three = (False,) * 3 + (True,) * 97 + (None,) * 60  # 3 lost; base-wrong items not asked
    r = gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base, factual_adapted_correct=three))
    assert r.passed, r.reasons
    check = next(c for c in r.checks if c.name == "factual_lost")
    assert check.value == pytest.approx(3.0)
    assert "lost 3 of the 100 general questions the base model answered (3.0%)" in check.message
    four = (False,) * 4 + (True,) * 96 + (True,) * 60  # gains elsewhere do not buy losses back
    r = gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base, factual_adapted_correct=four))
    assert not r.passed and "lost 4 of the 100" in r.reasons[0] and "over the 3-point budget" in r.reasons[0]
    # the model's own noise floor raises the limit: 4% lost passes over a 2% floor, 6% does not
    r = gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base, factual_adapted_correct=four,
                        factual_noise_pct=2.0))
    assert r.passed and "the base's own 2.0% under a reworded system prompt" in r.checks[-1].message
    six = (False,) * 6 + (True,) * 154
    assert not gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base,
                               factual_adapted_correct=six, factual_noise_pct=2.0)).passed
    assert gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base, factual_adapted_correct=four),
                GateConfig(max_factual_lost_pct=5)).passed
    with pytest.raises(MetricsError, match="factual results differ in length"):
        gate(GateInputs(0.0, 0.8, 0.5, 0.5, factual_base_correct=base, factual_adapted_correct=base[:5]))
    with pytest.raises(MetricsError, match="max_factual_lost_pct"):
        GateConfig(max_factual_lost_pct=-1)


def test_the_gate_and_the_eval_share_one_bwt():
    """sleep's gate measures BWT on two nights (the promoted adapter, tonight's candidate) with
    the same function the eval applies to its whole accuracy matrix."""
    from assistant.sleep import gate_bwt

    before = {"f1": 1.0, "f2": 0.5, "f3": 1.0}
    after = {"f1": 0.5, "f2": 0.5, "f3": 1.0}
    R = [[sum(before.values()) / 3, float("nan")], [sum(after.values()) / 3, 1.0]]
    assert gate_bwt(before, after) == pytest.approx(backward_transfer(R)) == pytest.approx(-0.5 / 3)
