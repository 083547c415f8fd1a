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
