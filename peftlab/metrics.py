"""Classification metrics on integer label arrays (kept tiny and dependency-free)."""

from __future__ import annotations

import numpy as np


def _labels(gold, predicted, n_labels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`gold` and `predicted` as (N,) integer arrays, checked: numpy broadcast one prediction over every text (an
    accuracy of 0.67 from 1 prediction for 3 texts, an F1 of 1.33 in the store) and indexed label -1 as the last.

    Raises:
        ValueError: lengths that differ, labels that are not integers, or a label outside 0..n_labels - 1 (or below 0
            without `n_labels`).
    """
    gold, predicted = (
        np.asarray(labels).reshape(-1) if len(labels) else np.zeros(0, int) for labels in (gold, predicted)
    )
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predicted labels for {len(gold)} gold labels")
    for name, labels in (("gold", gold), ("predicted", predicted)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} labels must be integer label indices, not {labels.dtype}")
        if len(labels) and (labels.min() < 0 or (n_labels is not None and labels.max() >= n_labels)):
            span = "at least 0" if n_labels is None else f"in 0 to {n_labels - 1}"
            raise ValueError(f"{name} labels must lie {span}; got {labels.min()} to {labels.max()}")
    return gold, predicted


def confusion_matrix(gold, predicted, n_labels: int) -> np.ndarray:
    """(L, L) counts: rows are gold labels, columns predicted labels.

    Raises:
        ValueError: `gold` and `predicted` of other lengths, labels that are not integers, or one outside 0..L - 1.
    """
    gold, predicted = _labels(gold, predicted, n_labels)
    matrix = np.zeros((n_labels, n_labels), dtype=int)
    np.add.at(matrix, (gold, predicted), 1)
    return matrix


def accuracy(gold, predicted) -> float:
    """The share of `predicted` equal to `gold` (0.0 for no texts).

    Raises:
        ValueError: `gold` and `predicted` of other lengths, labels that are not integers, or a negative label.
    """
    gold, predicted = _labels(gold, predicted)
    return float((gold == predicted).mean()) if len(gold) else 0.0


def mean_gold_log_prob(log_probs, gold) -> float:
    """Mean log-probability of each example's gold label, from (N, L) label log-probs.

    Raises:
        ValueError: `gold` of another length than N, or a label outside 0..L - 1.
    """
    log_probs = np.asarray(log_probs)
    gold, _ = _labels(gold, np.zeros(len(log_probs), dtype=int), log_probs.shape[-1])
    return float(log_probs[np.arange(len(gold)), gold].mean())


def label_f1(gold, predicted, n_labels: int) -> np.ndarray:
    """(L,) F1 of each label; a label never gold nor predicted counts as F1 = 0.

    Raises:
        ValueError: `gold` and `predicted` of other lengths, labels that are not integers, or one outside 0..L - 1.
    """
    matrix = confusion_matrix(gold, predicted, n_labels)
    true_positive = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)  # predicted + gold counts = 2TP + FP + FN
    return np.divide(2 * true_positive, denominator, out=np.zeros(n_labels), where=denominator > 0)


def macro_f1(gold, predicted, n_labels: int) -> float:
    """Unweighted mean of the F1 (`label_f1`) of the labels among the gold labels (scikit-learn's
    `f1_score(average="macro", labels=np.unique(gold))`); 0.0 without texts. A label no text has says nothing of a
    classifier: counted as 0, it held a perfect one on 3 texts of a 5-class task to 0.6. Every method scored on one
    test split averages the same labels, so their macro-F1s compare; a wrong prediction of an absent label still
    costs the recall of the text's own.

    Raises:
        ValueError: `gold` and `predicted` of other lengths, labels that are not integers, or one outside 0..L - 1.
    """
    f1 = label_f1(gold, predicted, n_labels)
    present = np.unique(_labels(gold, predicted, n_labels)[0])
    return float(f1[present].mean()) if len(present) else 0.0


# A label whose share of the predictions exceeds its share of the gold labels by this much (50 % gold, 80 %
# predicted) is a model leaning towards it, not one that read the texts: 4 in-context demonstrations ending on
# 'positive' made the embedded model call 100 of 100 rt-sentiment reviews positive (Zhao et al. 2021's recency bias).
LEANING_EXCESS = 0.3


def leaning_label(confusion: np.ndarray) -> tuple[int, float, float] | None:
    """The label predicted far more often than it is gold, from an (L, L) confusion matrix (rows gold, columns
    predicted): (label, its share of the predictions, its share of the gold labels) when the first exceeds the
    second by LEANING_EXCESS or more, else None (also with no texts)."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    if not total:
        return None
    excess = (confusion.sum(0) - confusion.sum(1)) / total  # (L,) predicted share minus gold share
    label = int(np.argmax(excess))
    if excess[label] < LEANING_EXCESS:
        return None
    return label, float(confusion[:, label].sum() / total), float(confusion[label].sum() / total)
