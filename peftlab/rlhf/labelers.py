"""Labelers: who ranks the K responses sampled for a prompt, as InstructGPT's human labelers did.

A simulated labeler scores each response (higher = preferred), ranks the K responses by score, and
turns the ranking into preference pairs for the reward model. Ties are not preferences: pairs whose
scores are exactly equal, or whose texts are identical, are left out. `HumanRankings` collects the
rankings a person gives in the app (tied ranks allowed) and turns them into pairs the same way.

Registered simulated labelers (`labeler_by_name`):
- "vader-positive" / "vader-negative": the VADER sentiment lexicon (Hutto & Gilbert 2014) prefers
  more positive (or more negative) reviews; the classic "make the reviews positive" RLHF demo.
- "concise": prefers responses close to 12 words, a stand-in for a style preference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from peftlab.errors import PeftlabError
from peftlab.rlhf.data import Comparison


class Labeler:
    """A simulated annotator: `score` a response, `rank` K responses, `compare` them into pairs."""

    name: str = "labeler"
    description: str = ""

    def score(self, prompt: str, response: str) -> float:
        """How much this labeler likes `response` as an answer to `prompt` (higher = preferred)."""
        raise NotImplementedError

    def scores(self, prompt: str, responses: Sequence[str]) -> list[float]:
        """`score` of each response, in order."""
        return [float(self.score(prompt, response)) for response in responses]

    def rank(self, prompt: str, responses: Sequence[str]) -> list[int]:
        """Indices of `responses`, best first; equal scores keep their original order."""
        return _best_first(self.scores(prompt, responses))

    def compare(self, prompt: str, responses: Sequence[str]) -> list[Comparison]:
        """All (better, worse) pairs from the ranking, without exact score ties or identical texts."""
        scores = self.scores(prompt, responses)
        return _pairs(prompt, responses, _best_first(scores), scores)


class VaderLabeler(Labeler):
    """Prefers responses whose VADER compound sentiment (in [-1, 1]) is higher, or lower for goal "negative"."""

    GOALS = ("positive", "negative")

    def __init__(self, goal: str = "positive"):
        if goal not in self.GOALS:
            raise PeftlabError(f"The VADER labeler's goal must be 'positive' or 'negative', got {goal!r}.")
        self.goal = goal
        self.name = f"vader-{goal}"
        self.description = f"Prefers more {goal} reviews (VADER sentiment lexicon)."
        self._analyzer = _vader_analyzer()

    def score(self, prompt: str, response: str) -> float:
        compound = self._analyzer.polarity_scores(response)["compound"]
        return compound if self.goal == "positive" else -compound


class LengthLabeler(Labeler):
    """Prefers concise responses: score = -|number of words - target_words|, so exactly on target scores 0.

    Words are whitespace-separated pieces; the prompt is ignored.
    """

    name = "concise"

    def __init__(self, target_words: int = 12):
        if isinstance(target_words, bool) or not isinstance(target_words, int) or target_words < 1:
            raise PeftlabError(
                f"The target length must be a whole number of words of at least 1, got {target_words!r}."
            )
        self.target_words = target_words
        self.description = f"Prefers responses close to {target_words} words long."

    def score(self, prompt: str, response: str) -> float:
        return -float(abs(len(response.split()) - self.target_words))


class HumanRankings:
    """Rankings a person gives in the app, one per prompt; `len` is the number of rankings collected."""

    def __init__(self):
        self._rankings: list[tuple[str, tuple[str, ...], tuple[int, ...]]] = []

    def add(self, prompt: str, responses: Sequence[str], ranks: Sequence[int | None]) -> None:
        """Record a person's ranks of the K `responses` to `prompt`: `ranks[i]` is response i's rank, 1 the best.

        Equal ranks are ties, as InstructGPT's labelers could mark them: tied responses make no pair.

        Raises:
            PeftlabError: fewer than 2 responses, a response without a rank, a rank outside 1..K, or every
                response tied (no comparison at all), each naming the response by its 1-based number.
        """
        k = len(responses)
        if k < 2:
            raise PeftlabError(f"A ranking needs at least 2 responses to compare, got {k}.")
        if len(ranks) != k:
            raise PeftlabError(f"Give each of the {k} responses a rank; {len(ranks)} ranks were given.")
        for number, rank in enumerate(ranks, 1):
            if rank is None:
                raise PeftlabError(f"Give response {number} a rank from 1 (best) to {k}.")
            if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= k:
                raise PeftlabError(f"The rank of response {number} must be a whole number from 1 to {k}, not {rank!r}.")
        if len(set(ranks)) == 1:
            raise PeftlabError(
                "Every response has the same rank, so there is nothing to compare; rank one above another."
            )
        self._rankings.append((prompt, tuple(responses), tuple(ranks)))

    def comparisons(self) -> list[Comparison]:
        """All (better, worse) pairs of every ranking, leaving out pairs of identical texts."""
        pairs = []
        for prompt, responses, ranks in self._rankings:
            scores = [-rank for rank in ranks]  # rank 1 scores highest; equal ranks tie, as equal scores do
            pairs += _pairs(prompt, responses, _best_first(scores), scores)
        return pairs

    def __len__(self) -> int:
        return len(self._rankings)


LABELERS: dict[str, Callable[[], Labeler]] = {
    "vader-positive": lambda: VaderLabeler("positive"),
    "vader-negative": lambda: VaderLabeler("negative"),
    "concise": LengthLabeler,
}


def labeler_by_name(name: str) -> Labeler:
    """A new simulated labeler from the registry `LABELERS`.

    Raises:
        PeftlabError: an unknown labeler.
    """
    if name not in LABELERS:
        raise PeftlabError(f"Unknown labeler {name!r}; choose one of {', '.join(LABELERS)}.")
    return LABELERS[name]()


def _best_first(scores: Sequence[float]) -> list[int]:
    """Indices sorted by descending score; a stable sort keeps tied indices in their original order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _pairs(
    prompt: str, responses: Sequence[str], order: Sequence[int], scores: Sequence[float] | None = None
) -> list[Comparison]:
    """(better, worse) pairs for every two positions of `order` (best first), leaving out identical
    texts and, when `scores` are given, exact score ties."""
    return [
        Comparison(prompt, responses[better], responses[worse])
        for k, better in enumerate(order)
        for worse in order[k + 1 :]
        if responses[better] != responses[worse] and (scores is None or scores[better] != scores[worse])
    ]


@functools.lru_cache(maxsize=1)
def _vader_analyzer():
    """The VADER analyzer, built once per process (it reads its lexicon file)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        raise PeftlabError(
            "The VADER labelers need the package 'vaderSentiment', which is not installed; run `bash scripts/setup.sh`."
        ) from exc
    return SentimentIntensityAnalyzer()
