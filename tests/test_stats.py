"""Paired differences on the same texts: against a hand computation and against scipy's own tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from peftlab.stats import clustered_proportion, correctness, mcnemar, paired_difference, proportion


def test_seeds_are_pooled_per_text_before_the_difference():
    gold = [0, 1, 1, 0]
    runs_a = [[0, 1, 0, 0], [0, 1, 1, 1]]  # per text: 1, 1, 0.5, 0.5
    assert correctness(gold, runs_a).tolist() == [1.0, 1.0, 0.5, 0.5]
    result = paired_difference(gold, runs_a, [[1, 1, 1, 1]])  # B: 0, 1, 1, 0
    assert result.difference == pytest.approx((1 + 0 - 0.5 + 0.5) / 4) and result.texts == 4


def test_the_bootstrap_interval_equals_a_hand_computation_of_the_same_resamples():
    rng = np.random.default_rng(7)
    gold = rng.integers(0, 2, 100)
    a = np.where(rng.random(100) < 0.9, gold, 1 - gold)
    b = np.where(rng.random(100) < 0.5, gold, 1 - gold)
    result = paired_difference(gold, [a], [b], resamples=500, seed=3)
    differences = (a == gold).astype(float) - (b == gold).astype(float)
    # scipy's percentile bootstrap: resample texts with replacement, take the mean, read the 2.5 and 97.5 percentiles.
    expected = scipy_stats.bootstrap(
        (differences,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(3)
    ).confidence_interval
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high))
    assert result.difference == pytest.approx(differences.mean())
    assert result.low < result.difference < result.high and result.distinguishable


def test_a_large_test_set_is_resampled_in_bounded_memory_with_the_same_interval():
    """scipy drew every resample at once: an imported pair of rows on 40,000 texts took 1.2 GB for its interval,
    and a 5 MB results file could ask for 18 GB (a security review's finding)."""
    import tracemalloc

    rng = np.random.default_rng(5)
    texts = 40_000
    gold = rng.integers(0, 2, texts)
    a = np.where(rng.random(texts) < 0.8, gold, 1 - gold)
    b = np.where(rng.random(texts) < 0.7, gold, 1 - gold)
    tracemalloc.start()
    result = paired_difference(gold, [a], [b])  # 2,000 resamples
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 150 * 2**20, peak  # all at once: 2,000 x 40,000 indices and values, 1.2 GB
    differences = (a == gold).astype(float) - (b == gold).astype(float)
    expected = scipy_stats.bootstrap(
        (differences,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    assert (result.low, result.high) == pytest.approx((expected.low, expected.high))


def test_a_difference_whose_interval_holds_zero_is_not_distinguishable():
    gold = [0, 1] * 10
    a = [0, 1] * 5 + [1, 0] * 5  # right on the first 10 texts
    b = [1, 0] * 5 + [0, 1] * 5  # right on the last 10
    result = paired_difference(gold, [a], [b])
    assert result.difference == 0 and result.low < 0 < result.high and not result.distinguishable
    same = paired_difference(gold, [a], [a])
    assert (same.difference, same.low, same.high) == (0, 0, 0) and not same.distinguishable


def test_several_seeds_are_resampled_too_so_seeds_either_side_of_the_baseline_are_not_distinguishable():
    """A's seed 1 gets every text right, seed 2 none; B gets every text right. Resampling texts changes no run's
    accuracy, so the two-stage bootstrap draws A's seeds alone: both seed 1 (A - B = 0) with probability 1/4, one of
    each (-0.5) 1/2, both seed 2 (-1) 1/4. Its 95 % interval is [-1, 0], which holds 0; texts alone gave [-0.5, -0.5]
    and "worse"."""
    gold = [0, 1] * 10
    wrong = [1 - g for g in gold]
    result = paired_difference(gold, [gold, wrong], [gold])
    assert result.difference == -0.5 and (result.low, result.high) == (-1.0, 0.0)
    assert not result.distinguishable
    same = paired_difference(gold, [gold, wrong], [gold, wrong])  # both sides draw the same texts: paired
    assert same.difference == 0 and same.low < 0 < same.high


def test_seeds_either_side_of_zero_shot_are_not_called_better_for_their_mean():
    """The review's case: 3 seeds at 63, 88 and 61 % beside zero-shot at 61 % on 1,000 texts; their mean is 9.6
    points above it, but a draw of seeds may land on the two near it. Texts alone said [+6.2, +13.1], "better"."""
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, 1000)

    def run(accuracy: float) -> np.ndarray:
        return np.where(rng.random(1000) < accuracy, gold, 1 - gold)

    zero_shot = run(0.627)
    seeds = [run(0.596), run(0.892), run(0.603)]
    result = paired_difference(gold, seeds, [zero_shot])
    assert result.difference == pytest.approx(0.0963, abs=1e-4)
    assert result.low < 0 < result.high and not result.distinguishable
    assert paired_difference(gold, seeds[1:2], [zero_shot]).distinguishable  # the good seed alone is better


def test_mcnemar_is_the_exact_binomial_test_on_discordant_texts():
    gold = [1] * 10
    a = [1] * 9 + [0]  # a alone right on 7 texts, b alone on 1
    b = [0] * 7 + [1, 1, 1]
    only_a = sum(x == g != y for x, y, g in zip(a, b, gold))
    only_b = sum(y == g != x for x, y, g in zip(a, b, gold))
    assert (only_a, only_b) == (7, 1)
    # by hand: P(X <= 1 or X >= 7) for X ~ Binomial(8, 1/2) = 2 * (1 + 8) / 256
    assert mcnemar(gold, a, b) == pytest.approx(2 * 9 / 256)
    assert mcnemar(gold, a, b) == pytest.approx(scipy_stats.binomtest(7, 8, 0.5).pvalue)
    assert mcnemar(gold, a, a) == 1.0
    with pytest.raises(ValueError, match="runs of 10 labels"):  # one label was broadcast over every text
        mcnemar(gold, a, [1])


def test_a_proportion_s_interval_is_wilson_s_score_interval_by_hand():
    """7 of 10: p̂ = 0.7, centre (p̂ + z²/2n) / (1 + z²/n), half-width z √(p̂(1 − p̂)/n + z²/4n²) / (1 + z²/n)."""
    z, n, p = 1.959963984540054, 10, 0.7
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    share = proportion(7, 10)
    assert share.value == 0.7 and share.trials == 10
    assert share.low == pytest.approx(centre - half, abs=1e-9) and share.high == pytest.approx(centre + half, abs=1e-9)
    assert proportion(0, 5).low == 0.0 and proportion(5, 5).high == 1.0  # never outside [0, 1]
    for k, n in ((0, 3), (2, 9), (13, 20), (40, 41)):  # the closed form is scipy's on whole counts
        expected = scipy_stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert (proportion(k, n).low, proportion(k, n).high) == pytest.approx((expected.low, expected.high), abs=1e-12)
    with pytest.raises(ValueError):
        proportion(3, 0)


def test_a_paired_difference_needs_texts_and_resamples():
    with pytest.raises(ValueError, match="need at least one text and one resample, got 0 texts"):
        paired_difference([], [[]], [[]])  # an IndexError
    with pytest.raises(ValueError, match="got 2 texts and 0 resamples"):
        paired_difference([0, 1], [[0, 1], [1, 1]], [[0, 0]], resamples=0)


def test_a_clustered_proportion_counts_a_cluster_s_trials_as_correlated_by_hand():
    """Prompt A's 3 pairs all right, B's all wrong: p̂ = 0.5, v̂ = 2/1 · (1.5² + 1.5²) / 6² = 0.25, n_eff =
    0.25 / 0.25 = 1, times (z / t_1)², and Wilson's interval on that: far wider than on 6 independent pairs."""
    z = 1.959963984540054

    def wilson(p, n):
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
        return pytest.approx((max(0, centre - half), min(1, centre + half)), abs=1e-9)

    share = clustered_proportion([1, 1, 1, 0, 0, 0], ["A", "A", "A", "B", "B", "B"])
    assert share.value == 0.5 and share.trials == 6
    assert (share.low, share.high) == wilson(0.5, (z / 12.706204736174707) ** 2)  # t_1's 97.5 % quantile
    assert share.high - share.low > 0.9 > proportion(3, 6).high - proportion(3, 6).low
    # clusters alike (each 2 of 4): no spread between them, so Wilson's on the 12 pairs (t_2's quantile)
    alike = clustered_proportion([1, 1, 0, 0] * 3, [c for c in "ABC" for _ in range(4)])
    assert (alike.low, alike.high) == wilson(0.5, 12 * (z / 4.302652729749464) ** 2)
    # all right: no spread to measure; one prompt counts as one trial, two as their pairs, t-corrected as ever (else
    # 56 of 56 pairs of 2 prompts read "from 93.6 %" and 55 of 56 "from 24.5 %")
    assert (clustered_proportion([1, 1], ["A", "A"]).low, 1.0) == wilson(1.0, 1)
    assert (clustered_proportion([1, 1], ["A", "B"]).low, 1.0) == wilson(1.0, 2 * (z / 12.706204736174707) ** 2)
    two = ["A"] * 28 + ["B"] * 28
    assert clustered_proportion([1] * 56, two).low < clustered_proportion([1] * 55 + [0], two).high
    with pytest.raises(ValueError):
        clustered_proportion([1, 0], ["A"])
