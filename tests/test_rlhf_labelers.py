"""Tests for peftlab.rlhf.labelers: simulated annotators (VADER, length), human rankings, the registry."""

from __future__ import annotations

import pytest

from peftlab.errors import PeftlabError
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.labelers import (
    LABELERS,
    HumanRankings,
    LengthLabeler,
    VaderLabeler,
    labeler_by_name,
)

PROMPT = "Write a one-sentence review of the movie About a Boy."
POSITIVE = "A wonderful, funny and heartwarming film that I loved."
NEUTRAL = "The film is about a boy who lives in London."
NEGATIVE = "A terrible, boring mess and an awful waste of time."


# ---------------------------------------------------------------- VADER


def test_vader_positive_prefers_the_positive_review():
    labeler = labeler_by_name("vader-positive")
    assert labeler.name == "vader-positive"
    responses = [NEGATIVE, POSITIVE, NEUTRAL]
    assert labeler.rank(PROMPT, responses) == [1, 2, 0]
    assert labeler.score(PROMPT, POSITIVE) > 0.5 and labeler.score(PROMPT, NEGATIVE) < -0.5
    assert labeler.compare(PROMPT, responses) == [
        Comparison(PROMPT, POSITIVE, NEUTRAL),
        Comparison(PROMPT, POSITIVE, NEGATIVE),
        Comparison(PROMPT, NEUTRAL, NEGATIVE),
    ]


def test_vader_negative_prefers_the_negative_review():
    labeler = labeler_by_name("vader-negative")
    assert labeler.rank(PROMPT, [NEGATIVE, POSITIVE, NEUTRAL]) == [0, 2, 1]
    assert labeler.score(PROMPT, NEGATIVE) == -VaderLabeler("positive").score(PROMPT, NEGATIVE)
    assert labeler.compare(PROMPT, [POSITIVE, NEGATIVE]) == [Comparison(PROMPT, NEGATIVE, POSITIVE)]


def test_vader_labeler_refuses_an_unknown_goal():
    with pytest.raises(PeftlabError, match="goal must be 'positive' or 'negative'"):
        VaderLabeler("neutral")


# ---------------------------------------------------------------- length


def test_length_labeler_scores_the_distance_to_the_target():
    labeler = LengthLabeler(target_words=5)
    assert labeler.name == "concise"
    assert labeler.score("p", "one two three four five") == 0.0
    assert labeler.score("p", "one two three") == -2.0
    assert labeler.score("p", " ".join(["word"] * 8)) == -3.0
    assert labeler.score("p", "") == -5.0


def test_rank_is_stable_for_ties_and_compare_skips_them():
    labeler = LengthLabeler(target_words=3)
    # scores: -1, 0, -1, -3 (the first and third tie)
    responses = ["a b", "a b c", "x y", "a b c d e f"]
    assert labeler.rank("p", responses) == [1, 0, 2, 3]
    pairs = labeler.compare("p", responses)
    assert [(c.chosen, c.rejected) for c in pairs] == [
        ("a b c", "a b"),
        ("a b c", "x y"),
        ("a b c", "a b c d e f"),
        ("a b", "a b c d e f"),
        ("x y", "a b c d e f"),
    ]  # 4-choose-2 = 6 pairs minus the tie ("a b", "x y")


def test_compare_gives_k_choose_2_pairs_and_skips_identical_texts():
    labeler = LengthLabeler(target_words=1)
    assert len(labeler.compare("p", ["a", "a b", "a b c", "a b c d"])) == 6
    assert labeler.compare("p", ["same text", "same text"]) == []
    assert labeler.compare("p", ["only one"]) == []


@pytest.mark.parametrize("target", [0, -3, 2.5, True])
def test_length_labeler_refuses_a_bad_target(target):
    with pytest.raises(PeftlabError, match="target length must be a whole number of words"):
        LengthLabeler(target)


# ---------------------------------------------------------------- human rankings


def test_human_rankings_turn_into_all_pairs():
    rankings = HumanRankings()
    assert len(rankings) == 0 and rankings.comparisons() == []
    rankings.add("p1", ["x", "y", "z"], [2, 3, 1])  # z best, then x, then y
    rankings.add("p2", ["u", "v"], [1, 2])
    assert len(rankings) == 2
    assert rankings.comparisons() == [
        Comparison("p1", "z", "x"),
        Comparison("p1", "z", "y"),
        Comparison("p1", "x", "y"),
        Comparison("p2", "u", "v"),
    ]


def test_human_rankings_allow_ties_and_tied_responses_make_no_pair():
    rankings = HumanRankings()
    rankings.add("p", ["a", "b", "c", "d"], [2, 1, 2, 4])  # b best, a and c tied, d last
    assert rankings.comparisons() == [
        Comparison("p", "b", "a"),
        Comparison("p", "b", "c"),
        Comparison("p", "b", "d"),
        Comparison("p", "a", "d"),
        Comparison("p", "c", "d"),
    ]


def test_human_rankings_skip_pairs_of_identical_text():
    rankings = HumanRankings()
    rankings.add("p", ["same", "other", "same"], [1, 2, 3])
    assert rankings.comparisons() == [Comparison("p", "same", "other"), Comparison("p", "other", "same")]


@pytest.mark.parametrize(
    ("ranks", "message"),
    [
        ([1, None, 2], "Give response 2 a rank from 1 (best) to 3."),
        ([1, 2, 4], "The rank of response 3 must be a whole number from 1 to 3, not 4."),
        ([0, 1, 2], "The rank of response 1 must be a whole number from 1 to 3, not 0."),
        ([1, 2.0, 3], "The rank of response 2 must be a whole number from 1 to 3, not 2.0."),
        ([True, 2, 3], "The rank of response 1 must be a whole number from 1 to 3, not True."),
        ([1, 2], "Give each of the 3 responses a rank; 2 ranks were given."),
        ([2, 2, 2], "Every response has the same rank, so there is nothing to compare; rank one above another."),
    ],
)
def test_human_rankings_refuse_bad_ranks_naming_the_response_by_its_1_based_number(ranks, message):
    with pytest.raises(PeftlabError) as error:
        HumanRankings().add("p", ["a", "b", "c"], ranks)
    assert str(error.value) == message


def test_human_rankings_refuse_fewer_than_two_responses():
    with pytest.raises(PeftlabError, match="at least 2 responses"):
        HumanRankings().add("p", ["a"], [1])


# ---------------------------------------------------------------- registry


def test_registry_builds_every_labeler_by_name():
    assert list(LABELERS) == ["vader-positive", "vader-negative", "concise"]
    for name in LABELERS:
        labeler = labeler_by_name(name)
        assert labeler.name == name and labeler.description


def test_unknown_labeler_lists_the_choices():
    choices = "choose one of vader-positive, vader-negative, concise"
    with pytest.raises(PeftlabError, match=f"Unknown labeler 'gpt4'; {choices}"):
        labeler_by_name("gpt4")
