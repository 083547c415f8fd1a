"""Tests for peftlab.metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from peftlab.metrics import accuracy, confusion_matrix, leaning_label, macro_f1, mean_gold_log_prob

# Label 2 is gold twice and never predicted.
GOLD = [0, 0, 1, 1, 2, 2]
PREDICTED = [0, 1, 1, 1, 0, 0]


def test_confusion_matrix_rows_gold_columns_predicted():
    expected = np.array(
        [
            [1, 1, 0],  # gold 0: once right, once called 1
            [0, 2, 0],  # gold 1: both right
            [2, 0, 0],  # gold 2: both called 0
        ]
    )
    matrix = confusion_matrix(GOLD, PREDICTED, 3)
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype.kind == "i"
    # Repeated (gold, predicted) pairs are all counted (np.add.at, not fancy-index assignment).
    np.testing.assert_array_equal(confusion_matrix([1, 1, 1], [0, 0, 0], 2), [[0, 0], [3, 0]])


def test_accuracy():
    assert accuracy(GOLD, PREDICTED) == pytest.approx(3 / 6)
    assert accuracy(np.array([1, 0]), np.array([1, 0])) == 1.0
    assert accuracy([0, 1, 1], [1, 0, 0]) == 0.0
    assert accuracy([], []) == 0.0


def test_macro_f1_hand_computed():
    # label 0: TP 1, predicted 3, gold 2 -> F1 = 2*1 / (3 + 2) = 0.4
    # label 1: TP 2, predicted 3, gold 2 -> F1 = 2*2 / (3 + 2) = 0.8
    # label 2: never predicted -> F1 = 0
    assert macro_f1(GOLD, PREDICTED, 3) == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    # A fourth label no text has is left out of the mean (scikit-learn's labels=np.unique(gold)): counted as 0, a
    # perfect classifier on a 3-text subset of a 5-class task scored 0.6.
    assert macro_f1(GOLD, PREDICTED, 4) == pytest.approx((0.4 + 0.8 + 0.0) / 3)
    assert macro_f1([0, 3, 4], [0, 3, 4], 5) == pytest.approx(1.0)
    # predicting an absent label costs the recall of the text's own label: F1(0) = 2/3, F1(1) = 1, label 2 left out
    assert macro_f1([0, 0, 1], [0, 2, 1], 3) == pytest.approx((2 / 3 + 1) / 2)
    assert macro_f1([], [], 2) == 0.0
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], 2) == pytest.approx(1.0)
    # Always predicting 1 on balanced gold: F1(0) = 0, F1(1) = 2*2 / (4 + 2) = 2/3.
    assert macro_f1([0, 0, 1, 1], [1, 1, 1, 1], 2) == pytest.approx((0 + 2 / 3) / 2)


def test_mean_gold_log_prob_by_hand():
    log_probs = np.log([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    assert mean_gold_log_prob(log_probs, [1, 0, 0]) == pytest.approx((np.log(0.5) + np.log(0.9) + np.log(0.2)) / 3)


def test_leaning_label_by_hand():
    # 4 demonstrations ending on 'positive': 100 of 100 reviews called positive, half of them are (rows gold).
    assert leaning_label(np.array([[0, 50], [0, 50]])) == (1, 1.0, 0.5)
    # 60 % predicted negative against 50 % gold: a lean of 0.1, below LEANING_EXCESS.
    assert leaning_label(np.array([[40, 10], [20, 30]])) is None
    # 80 % against 50 %: exactly at the threshold counts.
    assert leaning_label(np.array([[20, 30], [0, 50]])) == (1, 0.8, 0.5)
    # Three labels, gold 20/30/50 %: label 0 predicted for 60 % of the texts (+0.4), label 2 for 40 % (-0.1).
    assert leaning_label(np.array([[20, 0, 0], [30, 0, 0], [10, 0, 40]])) == (0, 0.6, 0.2)
    # A skewed gold set predicted as it is is no lean.
    assert leaning_label(np.array([[90, 0], [0, 10]])) is None
    assert leaning_label(np.zeros((2, 2), dtype=int)) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # one prediction for 3 texts was broadcast: accuracy 0.67, macro-F1 0.4, a store row's F1 of 1.33
        (lambda: accuracy([0, 1, 1], [1]), "1 predicted labels for 3 gold labels"),
        (lambda: macro_f1([0, 1, 1], [1], 2), "1 predicted labels for 3 gold labels"),
        (lambda: mean_gold_log_prob(np.log([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]), [0]), "3 predicted labels for 1"),
        # label -1 was read as the last class: macro-F1 1.0 beside an accuracy of 0.5
        (lambda: macro_f1([-1, 0], [1, 0], 2), r"gold labels must lie in 0 to 1; got -1 to 0"),
        (lambda: confusion_matrix([0, 1], [0, 2], 2), r"predicted labels must lie in 0 to 1; got 0 to 2"),
        (lambda: accuracy([0.0, 1.0], [0, 1]), "gold labels must be integer label indices, not float64"),
    ],
)
def test_labels_of_other_lengths_or_outside_the_labels_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
