"""Numbers and times as people read them in the app: tables in percent and rounded, durations, time left."""

from __future__ import annotations

import time

import pandas as pd

PERCENT_WORDS = ("accuracy", "acc", "confidence", "share", "right")  # a column named with one holds a fraction


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it (the downloads keep full precision): fractions in percent, with one decimal, or
    three significant digits for shares below 0.1 % (LoRA's 0.00857 %); other floats with at most 3 decimals and no
    trailing zeros (1, 0.844, 12,345.6), or 3 significant digits below 0.01 (a learning rate of 0.0003); empty cells
    blank.

    A fraction column is a float column whose name holds one of PERCENT_WORDS as a word ("test_accuracy", "dev acc",
    "trainable_share").
    """
    shown = frame.copy()
    for column in shown.columns:
        if not pd.api.types.is_float_dtype(shown[column]):
            continue
        words = str(column).lower().replace("_", " ").replace("-", " ").split()
        if any(word in PERCENT_WORDS for word in words):
            shown[column] = shown[column].map(_percent)
        else:
            shown[column] = shown[column].map(_number)
    return shown


def _number(value: float) -> str:
    if pd.isna(value):
        return ""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _percent(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.1%}" if value == 0 or abs(value) >= 1e-3 else f"{100 * value:.3g}%"


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h': how long, in the unit people think in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_left(started: float, fraction: float) -> str:
    """', about 4 min left' from the wall time since `started` (time.perf_counter) and the fraction done; '' at 0."""
    if fraction <= 0:
        return ""
    elapsed = time.perf_counter() - started
    return f", about {duration(elapsed * (1 - fraction) / fraction)} left"
