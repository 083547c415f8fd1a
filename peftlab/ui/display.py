"""Numbers and times as people read them in the app: tables in percent and rounded, durations, time left."""

from __future__ import annotations

import html
import re
import time

import gradio as gr
import numpy as np
import pandas as pd

from peftlab.config import duration
from peftlab.report import share_text, short_figure
from peftlab.store import scored_note

# a column named with one of these words holds a fraction
PERCENT_WORDS = ("accuracy", "acc", "confidence", "probability", "share", "right")
# What the app calls the library's columns (the downloads keep the library's names, which scripts read)
HEADERS = {
    "test_accuracy": "test accuracy",
    "accuracy_mean": "accuracy (mean)",
    "accuracy_std": "accuracy (std)",
    "macro_f1": "macro-F1",
    "macro_f1_mean": "macro-F1 (mean)",
    "trainable_params": "trainable parameters",
    "trainable_share": "trainable share",
    "train_seconds": "training seconds",  # "train s" wrapped as "train / s"
    "train_seconds_mean": "training seconds (mean)",
    "seconds_per_step": "seconds per step",
    "peak_memory_mb": "peak MB",
}


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it (the downloads keep full precision): fractions in percent, with one decimal, or
    three significant digits below 0.1 %, trainable shares as every table writes them (`report.share_text`); other
    floats with at most 3 decimals and no trailing zeros (1, 0.844, 12,345.6), or 3 significant digits below 0.01 (a
    learning rate of 0.0003); whole numbers of 10,000 or more (not seeds) with thousands separators (460,800 trainable
    parameters); truth values as "yes" and "no"; empty cells blank, and a standard deviation over a single run (a
    table with a "runs" column) blank too.

    A fraction column is a float column whose name holds one of PERCENT_WORDS as a word ("test_accuracy", "dev acc",
    "trainable_share"); an F1 column keeps three decimals ("0.700"). The library's column names become the app's
    headers (HEADERS: "test_accuracy" is "test accuracy").
    """
    shown = frame.copy()
    for column in shown.columns:
        # counts of 10,000 or more get separators; a seed is a name, and short counts (steps, K) stay numbers, which
        # the table sorts as numbers
        # (a nullable column of K, all empty for zero-shot rows, has no maximum to compare: its cells stay as they are)
        integer = pd.api.types.is_integer_dtype(shown[column])
        if integer and column != "seed" and (shown[column].abs() >= 10_000).any():
            shown[column] = shown[column].map(lambda count: "" if pd.isna(count) else f"{count:,}")
        if _is_yes_no(shown[column]):  # the browser showed "true" and "false" (AutoPrompt's "accepted")
            shown[column] = shown[column].map(lambda value: "" if pd.isna(value) else "yes" if value else "no")
            continue
        if not pd.api.types.is_float_dtype(shown[column]):
            continue
        words = str(column).lower().replace("_", " ").replace("-", " ").split()
        if "share" in words:
            shown[column] = shown[column].map(lambda value: "" if pd.isna(value) else share_text(value))
        elif any(word in PERCENT_WORDS for word in words):
            shown[column] = shown[column].map(percent)
        elif "f1" in words:  # three decimals, as the Compare table writes it (the listing said "1" and "0.9")
            shown[column] = shown[column].map(lambda value: "" if pd.isna(value) else f"{value:.3f}")
        else:
            shown[column] = shown[column].map(_number)
        if "std" in words and "runs" in frame:  # one run has no spread: its 0 (kept for the downloads) read as one
            shown.loc[frame["runs"] < 2, column] = ""
    return shown.rename(columns=HEADERS)


def _is_yes_no(column: pd.Series) -> bool:
    """A column of truth values, empty cells aside (AutoPrompt's "accepted" is empty at its starting trigger)."""
    values = column.dropna()
    return len(values) > 0 and all(isinstance(value, (bool, np.bool_)) for value in values)


# a table's text is monospace at 14 px (8.4 px a character, 8.5 with room to spare); a cell adds its padding and border
CHAR_PX, CELL_PX = 8.5, 26


def column_widths(frame: pd.DataFrame, wrap_at: int = 32) -> list[str]:
    """A width per column of `frame`, in pixels, that its header fits in without breaking a word and its cells fit
    in up to `wrap_at` characters (longer text wraps at spaces)."""
    widths = []
    for column in frame.columns:
        header = max((len(word) for word in str(column).split()), default=0)
        longest = max((len(str(cell)) for cell in frame[column]), default=0)
        widths.append(f"{round(max(header, min(longest, wrap_at)) * CHAR_PX) + CELL_PX}px")
    return widths


def fitted_table(value=None, wrap_at: int = 32, **options) -> gr.Dataframe:
    """A read-only gr.Dataframe (`options` as gr.Dataframe takes them) whose columns take the widths their header and
    cells need (`column_widths`) each time its value changes. Left to gradio, a table with one long text column gave
    the others a few letters each: "accuracy" broke as "accura / cy" and "trainable" as one or two letters a line. A
    wide table scrolls sideways. The widths follow the value in a change event of their own, so the events that fill
    the table send API clients the table alone."""
    table = gr.Dataframe(value, interactive=False, wrap=True, **options)
    table.change(
        lambda frame: gr.Dataframe(column_widths=column_widths(frame, wrap_at)),
        table,
        table,
        queue=False,
        show_progress="hidden",
        api_visibility="private",
    )
    return table


def _number(value: float) -> str:
    if pd.isna(value):
        return ""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def percent(value: float, missing: str = "") -> str:
    """A share as a table shows it: "82.4%", "0.05%" for a tiny one, `missing` for NaN."""
    if pd.isna(value):
        return missing
    return f"{value:.1%}" if value == 0 or abs(value) >= 1e-3 else f"{100 * value:.3g}%"


def per_second(count: int, seconds: float) -> str:
    """A rate as people read it (`report.short_figure`): "12", or "0.31" (40 long texts in 128 s read "0")."""
    return short_figure(count / max(seconds, 1e-9))


def time_left(started: float, fraction: float, expected: float) -> str:
    """', about 4 min left', when `fraction` of a job estimated at `expected` seconds is done, `started` at a
    time.perf_counter(); '' at 0.

    What is left is the estimate's share of it, blended into the measured pace (the wall time so far over the fraction
    done) by that fraction: the first fraction holds loading and warm-up, and the pace alone said "0/9 runs finished,
    about 18 min left (estimated 6 min in all)" in a run that took 6.5.
    """
    if fraction <= 0:
        return ""
    measured = (time.perf_counter() - started) * (1 - fraction) / fraction
    estimated = expected * (1 - fraction)
    return left((1 - fraction) * estimated + fraction * measured)


def left(seconds: float) -> str:
    """', about 4 min left'; ', finishing…' under a second: what follows a job's last step (saving, merging an
    adapter, scoring) is not priced, and "about 0 s left" stood for half a minute after SFT's last step."""
    return f", about {duration(seconds)} left" if seconds >= 0.5 else ", finishing…"


def took(started: float, expected: float) -> str:
    """' in 4 min (estimated 5 min)': how long a job `started` at a time.perf_counter() took, beside its estimate of
    `expected` seconds, for its final status line (the estimate alone stayed there once it had finished)."""
    return f" in {duration(time.perf_counter() - started)} (estimated {duration(expected)})"


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|~#])")  # emphasis, code, links and images, tables, headings


def as_text(value) -> str:
    """`value` (a name from data: a task, model, method or label) as literal text inside Markdown: HTML's <, > and &
    as entities, Markdown's punctuation escaped. A task name in an imported results file drew a full-page form over
    the Compare tab: gradio's sanitiser keeps forms, styles and outside links (a security review's finding)."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(str(value), quote=False))


def warning_notes(notes) -> str:
    """Notes a status line ends with, each a paragraph of its own behind a warning sign ("" for none)."""
    return "".join(f"\n\n⚠️ {note}" for note in notes)


def verdict(label_probs: dict[str, float]) -> str:
    """One text's answer in a sentence, above its chart: "**positive** with probability 96%." """
    label, probability = max(label_probs.items(), key=lambda item: item[1])
    return f"**{as_text(label)}** with probability {probability:.0%}."  # a Hub dataset's label names are data


def scored_on(results: list, task) -> str:
    """What the `results` (ResultRows, all on one test subset) scored, for a status line's end: " Each scored on 20 of
    1000 test texts."; "" with none."""
    return f" Each scored on {scored_note(results[0].settings, task.left_out_words)}." if results else ""
