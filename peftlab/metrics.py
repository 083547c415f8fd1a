"""Classification metrics on integer label arrays (kept tiny and dependency-free)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(gold, predicted, n_labels: int) -> np.ndarray:
    """(L, L) counts: rows are gold labels, columns predicted labels."""
    matrix = np.zeros((n_labels, n_labels), dtype=int)
    np.add.at(matrix, (np.asarray(gold), np.asarray(predicted)), 1)
    return matrix


def accuracy(gold, predicted) -> float:
    gold, predicted = np.asarray(gold), np.asarray(predicted)
    return float((gold == predicted).mean()) if len(gold) else 0.0


def mean_gold_log_prob(log_probs, gold) -> float:
    """Mean log-probability of each example's gold label, from (N, L) label log-probs."""
    gold = np.asarray(gold)
    return float(np.asarray(log_probs)[np.arange(len(gold)), gold].mean())


def macro_f1(gold, predicted, n_labels: int) -> float:
    """Unweighted mean of per-label F1; a label never gold nor predicted counts as F1 = 0."""
    matrix = confusion_matrix(gold, predicted, n_labels)
    true_positive = np.diag(matrix).astype(float)
    denominator = matrix.sum(0) + matrix.sum(1)  # predicted + gold counts = 2TP + FP + FN
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(n_labels), where=denominator > 0)
    return float(f1.mean())


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
