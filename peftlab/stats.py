"""Statistics that compare results scored on the same test texts: paired differences and their uncertainty.

Two results are comparable only on the same texts (the results store keys them by a fingerprint of those
texts), and then per text: the difference of two methods' accuracies is the mean over texts of
(correct_a - correct_b). Several seeds of one method are pooled as the literature reports them (LM-BFF:
mean over seeds): each text's correctness is averaged over the seeds first.

- `paired_difference`: that mean difference with a 95 % paired bootstrap interval over texts
  (`scipy.stats.bootstrap`, percentile method, a fixed seed), and whether 0 lies inside it.
- `mcnemar`: the exact McNemar test of two single runs (a binomial test on the discordant texts,
  `scipy.stats.binomtest`), when one wants a p-value rather than an interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same texts, in accuracy units (0.01 = one point)."""

    difference: float
    low: float
    high: float
    texts: int

    @property
    def distinguishable(self) -> bool:
        """False when the interval includes 0: the data do not tell the two apart."""
        return not (self.low <= 0 <= self.high)


def correctness(gold: Sequence[int], predictions: Sequence[Sequence[int]]) -> np.ndarray:
    """(N,) each text's correctness averaged over runs (seeds): `predictions` holds one (N,) vector per run.

    Raises:
        ValueError: no run, or runs of another length than `gold`.
    """
    gold = np.asarray(gold)
    runs = np.asarray(predictions)
    if runs.ndim != 2 or runs.shape[0] == 0 or runs.shape[1] != len(gold):
        raise ValueError(f"predictions must be runs of {len(gold)} labels each, got shape {runs.shape}")
    return (runs == gold[None, :]).mean(axis=0)  # (N,)


def paired_difference(
    gold: Sequence[int],
    runs_a: Sequence[Sequence[int]],
    runs_b: Sequence[Sequence[int]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedDifference:
    """Accuracy of A (its runs pooled) minus B's on the same texts, with a 95 % paired bootstrap interval."""
    differences = correctness(gold, runs_a) - correctness(gold, runs_b)  # (N,)
    if np.all(differences == differences[0]):  # no spread: every resample gives the same mean
        value = float(differences[0])
        return PairedDifference(value, value, value, len(differences))
    result = scipy_stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return PairedDifference(float(differences.mean()), float(interval.low), float(interval.high), len(differences))


def mcnemar(gold: Sequence[int], predicted_a: Sequence[int], predicted_b: Sequence[int]) -> float:
    """Exact McNemar p-value (two-sided) of two runs on the same texts: a binomial test on the texts one run
    gets right and the other wrong (McNemar 1947; exact form as in Edwards 1948)."""
    gold, a, b = np.asarray(gold), np.asarray(predicted_a), np.asarray(predicted_b)
    only_a = int(((a == gold) & (b != gold)).sum())
    only_b = int(((a != gold) & (b == gold)).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(scipy_stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


@dataclass(frozen=True)
class Proportion:
    """A share of successes (0.72 = 72 %) with its 95 % Wilson score interval."""

    value: float
    low: float
    high: float
    trials: int


def proportion(successes: float, trials: int) -> Proportion:
    """`successes` / `trials` with the 95 % Wilson score interval (Wilson 1927), which stays inside [0, 1] and is
    honest on the few dozen comparisons a person ranks. `successes` may be a half count (a reward model's tie counts
    half), so the interval is the closed form, p̂ = s/n, z the normal quantile:
    (p̂ + z²/2n ± z √(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n); on whole counts it equals
    `scipy.stats.binomtest(s, n).proportion_ci(method="wilson")` (tested).

    Raises:
        ValueError: no trials, or successes outside 0..trials.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}")
    z = float(scipy_stats.norm.ppf((1 + CONFIDENCE) / 2))
    share, spread = successes / trials, z * z / trials
    centre = (share + spread / 2) / (1 + spread)
    half = z * np.sqrt(share * (1 - share) / trials + spread / (4 * trials)) / (1 + spread)
    return Proportion(share, max(0.0, float(centre - half)), min(1.0, float(centre + half)), trials)
