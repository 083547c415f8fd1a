"""Statistics that compare results scored on the same test texts: paired differences and their uncertainty.

Two results are comparable only on the same texts (the results store keys them by a fingerprint of those
texts), and then per text: the difference of two methods' accuracies is the mean over texts of
(correct_a - correct_b). Several seeds of one method are pooled as the literature reports them (LM-BFF:
mean over seeds): each text's correctness is averaged over the seeds first.

- `paired_difference`: that mean difference with a 95 % paired bootstrap interval (percentile method, a fixed
  seed). One run a side: texts resampled (`scipy.stats.bootstrap`). Several seeds: a two-stage bootstrap
  (Davison & Hinkley 1997, §3.8, hierarchical data) that also resamples each side's seeds, so that the interval
  holds what another draw of seeds would change. Simulated on 1,000 texts, a method equal to zero-shot on average
  with a 5-point std over 3 seeds: texts alone called it "better" or "worse" in 30 of 100 comparisons, the two
  stages in 9 (above the nominal 5: three seeds are few to resample); 8 points better at a 1-point std, "better"
  in 50 of 50 either way.
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
# Resampled values held at once by either bootstrap: resamples x texts of them (32 MB of int64).
RESAMPLED_COUNTS = 4_000_000


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
    return _correct(gold, predictions).mean(axis=0)  # (N,)


def _correct(gold: Sequence[int], predictions: Sequence[Sequence[int]]) -> np.ndarray:
    """(runs, N) 1.0 where a run got a text right."""
    gold = np.asarray(gold)
    runs = np.asarray(predictions)
    if runs.ndim != 2 or runs.shape[0] == 0 or runs.shape[1] != len(gold):
        raise ValueError(f"predictions must be runs of {len(gold)} labels each, got shape {runs.shape}")
    return (runs == gold[None, :]).astype(float)


def paired_difference(
    gold: Sequence[int],
    runs_a: Sequence[Sequence[int]],
    runs_b: Sequence[Sequence[int]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedDifference:
    """Accuracy of A (its runs pooled) minus B's on the same texts, with a 95 % paired bootstrap interval: over the
    texts, and over each side's runs (seeds) too where a side has several (`_two_stage_interval`).

    Raises:
        ValueError: no texts, a side with no run, runs of another length than `gold`, or fewer than 1 resample.
    """
    if not len(gold) or resamples < 1:  # an IndexError, or numpy's "need at least one array to concatenate"
        raise ValueError(f"need at least one text and one resample, got {len(gold)} texts and {resamples} resamples")
    correct_a, correct_b = _correct(gold, runs_a), _correct(gold, runs_b)
    differences = correct_a.mean(axis=0) - correct_b.mean(axis=0)  # (N,)
    value = float(differences.mean())
    if len(correct_a) > 1 or len(correct_b) > 1:
        low, high = _two_stage_interval(correct_a, correct_b, resamples, np.random.default_rng(seed))
        return PairedDifference(value, low, high, len(differences))
    if np.all(differences == differences[0]):  # no spread: every resample gives the same mean
        return PairedDifference(value, value, value, len(differences))
    result = scipy_stats.bootstrap(
        (differences,),
        np.mean,
        n_resamples=resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
        # resamples drawn in batches of RESAMPLED_COUNTS values at most (the same draws): all at once, an imported
        # pair of rows on 120,000 texts took 3.7 GB, and a 5 MB file could ask for 18 GB (a security review's finding)
        batch=max(1, RESAMPLED_COUNTS // len(differences)),
    )
    interval = result.confidence_interval
    return PairedDifference(value, float(interval.low), float(interval.high), len(differences))


def _two_stage_interval(
    correct_a: np.ndarray, correct_b: np.ndarray, resamples: int, rng: np.random.Generator
) -> tuple[float, float]:
    """The percentile interval of mean-over-seeds accuracy of A minus B's, each resample drawing the N texts with
    replacement (the same texts for both sides: paired) and each side's runs with replacement, on their own (B is
    zero-shot, with no seeds, in every comparison peftlab makes). `correct_*` are (runs, N)."""
    texts = correct_a.shape[1]
    chunk, differences = max(1, RESAMPLED_COUNTS // texts), []
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        counts = rng.multinomial(texts, np.full(texts, 1 / texts), size=n)  # (n, N): each text's draws
        side = []
        for correct in (correct_a, correct_b):
            accuracies = counts @ correct.T / texts  # (n, runs): each run's accuracy on the drawn texts
            runs = len(correct)
            weights = rng.multinomial(runs, np.full(runs, 1 / runs), size=n) / runs  # (n, runs): the drawn runs
            side.append((weights * accuracies).sum(axis=1))  # (n,)
        differences.append(side[0] - side[1])
    low, high = np.quantile(np.concatenate(differences), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def mcnemar(gold: Sequence[int], predicted_a: Sequence[int], predicted_b: Sequence[int]) -> float:
    """Exact McNemar p-value (two-sided) of two runs on the same texts: a binomial test on the texts one run
    gets right and the other wrong (McNemar 1947; exact form as in Edwards 1948).

    Raises:
        ValueError: a run of another length than `gold` (numpy would have broadcast one prediction over every text).
    """
    a, b = _correct(gold, [predicted_a])[0], _correct(gold, [predicted_b])[0]
    only_a = int(((a == 1) & (b == 0)).sum())
    only_b = int(((a == 0) & (b == 1)).sum())
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
    return Proportion(successes / trials, *_wilson(successes / trials, trials), trials)


def clustered_proportion(credit: Sequence[float], clusters: Sequence) -> Proportion:
    """The share of `credit` (one value in [0, 1] a trial: 1 a success, 1/2 half of one) with a 95 % interval for
    trials drawn in clusters (`clusters[i]` names trial i's): a reward model's held-out comparisons are every pair of
    each prompt's K responses, which share their responses and the model's skill on that prompt. Wilson's interval
    on them as independent trials covered a simulated reward model's true accuracy in 67 % of runs, not 95 % (24
    prompts, K = 8, all 28 pairs each; InstructGPT, Ouyang et al. 2022, §3.5: comparisons of one prompt "are very
    correlated").

    The interval is Wilson's on the effective number of trials (Kish's design effect, as Korn & Graubard 1998 use
    it for proportions from clustered samples): n_eff = p̂(1 − p̂) / v̂, where p̂ = Σ_c s_c / Σ_c n_c over the m
    clusters and v̂ = m / (m − 1) · Σ_c (s_c − p̂ n_c)² / (Σ_c n_c)² is the ratio estimate's between-cluster
    variance, times (z / t_{m−1})² (their degrees-of-freedom correction: m clusters measure the spread). Before
    that factor n_eff is at most n (a design effect below 1 is noise) and n where v̂ is 0 (p̂ of 0 or 1 among them);
    with one cluster n_eff is 1 (its spread unknown). `trials` of the result is n. Simulated (K = 8, all pairs of a
    prompt, a reward-model skill varying by prompt), it covered the truth in 94-95 % of 1,000 runs with 24 or 72
    prompts, 93.5 % with 8 and 99 % with 3, where Wilson's on the pairs covered it in 60-67 %.

    Raises:
        ValueError: no trials, credit outside [0, 1], or clusters of another length.
    """
    credit = np.asarray(credit, dtype=float)
    if len(credit) < 1 or len(clusters) != len(credit) or not ((credit >= 0) & (credit <= 1)).all():
        raise ValueError(f"need credit in [0, 1] for each of >= 1 trials and one cluster each, got {len(credit)} "
                         f"trials and {len(clusters)} clusters")  # fmt: skip
    names, which = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    successes, trials = np.bincount(which, weights=credit), np.bincount(which).astype(float)
    n, m = len(credit), len(names)
    share = float(successes.sum() / n)
    if m == 1:
        return Proportion(share, *_wilson(share, 1.0), n)
    variance = m / (m - 1) * float(((successes - share * trials) ** 2).sum()) / n**2
    # a share of 0 or 1 has no spread to measure, nor a design effect (Korn & Graubard take it as 1 there)
    effective = n if variance == 0 else min(float(n), share * (1 - share) / variance)
    # Korn & Graubard's degrees-of-freedom correction, everywhere: skipped at 0 or 1, 56 of 56 pairs of 2 prompts
    # read "from 93.6 %" and 55 of 56 "from 24.5 %"
    z, t = scipy_stats.norm.ppf((1 + CONFIDENCE) / 2), scipy_stats.t.ppf((1 + CONFIDENCE) / 2, m - 1)
    return Proportion(share, *_wilson(share, effective * float(z / t) ** 2), n)


def _wilson(share: float, trials: float) -> tuple[float, float]:
    """The 95 % Wilson score interval of a share of `trials` (a float: an effective number of trials may be one)."""
    z = float(scipy_stats.norm.ppf((1 + CONFIDENCE) / 2))
    spread = z * z / trials
    centre = (share + spread / 2) / (1 + spread)
    half = z * np.sqrt(share * (1 - share) / trials + spread / (4 * trials)) / (1 + spread)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))
