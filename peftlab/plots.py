"""Plotly figures built from plain numbers or DataFrames; the UI and notebooks show them as they are."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import plotly.io as pio

# plotly_white with transparent backgrounds: a chart sits on the page's own colour, light or dark (the app's CSS
# recolours the text and grid lines in dark mode, where plotly's own stay dark grey).
TEMPLATE = go.layout.Template(pio.templates["plotly_white"])
TEMPLATE.layout.update(paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")


def themed(build: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
    """A figure builder whose figures use TEMPLATE (set per figure: the global plotly default stays the user's)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> go.Figure:
        figure = build(*args, **kwargs)
        figure.update_layout(template=TEMPLATE)
        _counts_in_whole_ticks(figure)
        _hover_in_tenths(figure)
        return figure

    return wrapper


def _hover_in_tenths(figure: go.Figure) -> None:
    """A percent axis's hover (and its error bars') in tenths of a percent: plotly formats hover values as the ticks,
    so 83.3 % and 82.6 % both read "83%" beside a table that tells them apart."""

    def in_tenths(axis) -> None:
        if axis.tickformat == ".0%":
            axis.hoverformat = ".1%"

    figure.for_each_xaxis(in_tenths)
    figure.for_each_yaxis(in_tenths)


def _counts_in_whole_ticks(figure: go.Figure) -> None:
    """An x axis of whole numbers spanning at most 10 (steps of a short run) gets a tick at each, and half a step of
    room at either end: plotly's own ticks fell at 1.5 and 2.5, steps no run has, and a lone iteration 0 (a search
    stopped at once) stood on an axis from -1 to 1."""
    values: dict[str, list] = {}
    for trace in figure.data:
        if getattr(trace, "x", None) is not None and len(trace.x):
            values.setdefault(getattr(trace, "xaxis", None) or "x", []).extend(trace.x)
    for axis, xs in values.items():
        layout = figure.layout["xaxis" + axis[1:]]
        if any(isinstance(x, str) for x in xs):  # label names, even "1" to "5": a categorical axis (TEMPLATE's
            continue  # strict number types), whose range counts columns; set as numbers, it hid the first
        try:
            numbers = np.asarray(xs, dtype=float)
        except (TypeError, ValueError):  # values of no number type: plotly's own ticks
            continue
        whole = np.all(np.isfinite(numbers)) and np.all(numbers == np.round(numbers))
        if layout.type in (None, "-", "linear") and whole and numbers.max() - numbers.min() <= 10:
            layout.dtick = 1
            if layout.range is None:
                layout.range = [numbers.min() - 0.5, numbers.max() + 0.5]


@themed
def label_probability_bars(label_probs: dict[str, float], title: str = "Label probabilities") -> go.Figure:
    """Horizontal bars, one per label, each annotated with its probability in percent."""
    labels = list(label_probs)
    values = [label_probs[label] for label in labels]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            text=[f"{label} {v:.1%}" for label, v in zip(labels, values)],
            textposition="auto",
            marker_color="#4f7cac",
        )
    )
    figure.update_layout(
        title=title,
        xaxis=dict(range=[0, 1.02], tickformat=".0%", tickvals=[0, 0.25, 0.5, 0.75, 1]),
        yaxis=dict(autorange="reversed"),
        height=120 + 40 * len(labels),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


@themed
def confusion_heatmap(confusion: np.ndarray, label_names: Sequence[str], title: str = "Confusion matrix") -> go.Figure:
    """Counts with gold labels as rows and predictions as columns, each cell annotated."""
    figure = go.Figure(
        go.Heatmap(
            z=confusion,
            x=list(label_names),
            y=list(label_names),
            colorscale="Blues",
            text=confusion,
            texttemplate="%{text}",
            hovertemplate="gold %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
        )
    )
    figure.update_layout(
        title=title,
        xaxis_title="predicted",
        yaxis_title="gold",
        yaxis=dict(autorange="reversed"),
        height=200 + 40 * len(label_names),
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


@themed
def metric_curve(
    history: pd.DataFrame, x: str, ys: Sequence[str], title: str, y_title: str = "", y_format: str = ""
) -> go.Figure:
    """One line per column in `ys` against `x` (e.g. dev accuracy per iteration), markers on each point; `y_format`
    the y ticks' d3 format (".0%" for fractions, which a table beside it shows in percent)."""
    figure = go.Figure()
    for y in ys:
        figure.add_trace(
            go.Scatter(
                x=history[x] if len(history) else [], y=history[y] if len(history) else [], mode="lines+markers", name=y
            )
        )
    figure.update_layout(
        title=title,
        xaxis_title=x,
        yaxis=dict(title=y_title, tickformat=y_format, range=_share_range(history, ys) if "%" in y_format else None),
        height=300,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


def _share_range(history: pd.DataFrame, ys: Sequence[str]) -> list[float] | None:
    """A y range for shares (0 to 1) around the values, never past 0 or 100 %: one point of 47 % had an axis from
    -50 % to 100 %."""
    values = history[list(ys)].to_numpy(dtype=float).ravel() if len(history) else np.zeros(0)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    pad = max(0.05, 0.1 * (values.max() - values.min()))
    return [max(0.0, values.min() - pad), min(1.02, values.max() + pad)]  # 2 % above 100 % for its marker


@themed
def accuracy_vs_parameters(summary: pd.DataFrame) -> go.Figure:
    """Mean test accuracy against trainable parameters (log x), error bars = std over seeds, one point per method."""
    return _accuracy_scatter(
        summary, "trainable_params", "trainable parameters", "Test accuracy vs trainable parameters"
    )


@themed
def accuracy_vs_seconds(summary: pd.DataFrame) -> go.Figure:
    """Mean test accuracy against seconds per run (training and scoring, log x), error bars = std over seeds."""
    return _accuracy_scatter(summary, "seconds", "seconds per run", "Test accuracy vs time")


# Each method the tabs train or score has a colour of its own, the same in every chart: by order of appearance,
# LoRA was red in the training curves and green in the scatter beside them (the curves have no zero-shot line),
# purple on the Compare tab. Other names (a calibration's "zero-shot · mean") get a colour from the rest by a hash.
COLOURED_METHODS = (
    "zero-shot",
    "prompt-tuning",
    "lora",
    "head",
    "p-tuning",
    "prefix-tuning",
    "adapter",
    "bitfit",
    "full",
    "classifier",
    "in-context",
    "autoprompt",
    "pet ensemble",
    "pet",
    "ipet",
    "sft",
    "ppo",
    "ppo-ptx",
    "dpo",
)
PALETTE = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
# PET's pattern models, by number: apart from each other and from the classifier's yellow (by a hash, patterns 1, 3
# and 4 drew in near-identical blue, navy and purple)
PATTERN_PALETTE = px.colors.qualitative.Set1


def method_colour(method: str) -> str:
    """The colour of `method` in every chart: COLOURED_METHODS', also of a variant told apart after one ("lora,
    K=16", "lora (learning_rate 0.001)"); PET's "pattern N" by its number (its iPET generations too);
    else one of the remaining colours by a hash of the name, stable across processes."""
    variant = re.fullmatch(r"(.+?)(?: \(.*\)|, K=\d+)", method)  # as reports and `_named_with_k` tell lines apart
    base = variant[1] if variant and variant[1] in COLOURED_METHODS else method
    if base in COLOURED_METHODS:
        return PALETTE[COLOURED_METHODS.index(base)]
    if pattern := re.match(r"pattern (\d+)\b", method):
        return PATTERN_PALETTE[(int(pattern[1]) - 1) % len(PATTERN_PALETTE)]
    rest = PALETTE[len(COLOURED_METHODS) :]
    return rest[int(hashlib.sha256(method.encode()).hexdigest(), 16) % len(rest)]


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """A colour for each of `methods`, apart within the chart: its `method_colour`, or where a name before it took
    that (two variants of one method, two names of one hash), the first of the remaining colours that no name of the
    chart has or wants. Variants of LoRA at two learning rates, or iPET's generations of two patterns, drew in one
    colour."""
    wanted = {method: method_colour(method) for method in dict.fromkeys(methods)}
    colours: dict[str, str] = {}
    for method, colour in wanted.items():
        if colour in colours.values():
            taken = set(wanted.values()) | set(colours.values())
            colour = next((c for c in PALETTE[len(COLOURED_METHODS) :] if c not in taken), colour)
        colours[method] = colour
    return colours


# Labels are placed apart on the narrowest plot the app draws (a phone's, about 300 x 280 pixels inside the axes):
# apart there, they are apart on any wider screen. Pixels of plotly's 12 px font.
LABEL_PLOT_PX = (300.0, 280.0)
LABEL_CHAR_PX, LABEL_LINE_PX, MARKER_RADIUS_PX = 7.0, 16.0, 6.0  # a line of text with 2 px apart
# Characters of a label's line: a line named by its settings ('zero-shot (templates "Review: {text}\nSentiment:
# {mask}", verbalizer ...)', 60 characters and more) was wider than a phone's plot and covered its neighbours wherever
# it went; wrapped, it stood 8 lines high. A chart shows the start of a name, and its hover the whole name.
LABEL_LINE_CHARS = 28


def clipped(name: str) -> str:
    """`name` cut to LABEL_LINE_CHARS characters, with "…" where it was cut."""
    return name if len(name) <= LABEL_LINE_CHARS else name[: LABEL_LINE_CHARS - 1].rstrip() + "…"


def clipped_apart(names: Sequence[str]) -> list[str]:
    """Each name `clipped`, except where two names clip to one label: those show their start, "…", and the word where
    they first differ with what comes before it ("prompt-tuning…tokens 8)"): two sweep points were both labelled
    "prompt-tuning (num_virtual_…"."""
    alike: dict[str, set[str]] = {}  # each clipped label -> the names it stands for
    for name in names:
        alike.setdefault(clipped(name), set()).add(name)
    labels = {}
    for label, same in alike.items():
        if len(same) < 2:
            labels.update(dict.fromkeys(same, label))
            continue
        differ = len(os.path.commonprefix(sorted(same)))
        for name in same:
            end = name.find(" ", differ)
            end = len(name) if end < 0 else end
            tail = name[max(0, end - LABEL_LINE_CHARS // 2) : end]
            cut = re.search(r"[ _(/]", tail)  # the tail starts at a word
            tail = tail[cut.end() :] if cut and cut.end() < len(tail) - 1 else tail
            tail += "…" if end < len(name) else ""
            labels[name] = f"{name[: max(1, LABEL_LINE_CHARS - len(tail) - 1)].rstrip()}…{tail}"
    return [labels[name] for name in names]


def _shared_label(names: Sequence[str]) -> str:
    """One label for the methods of one line: their names when they fit LABEL_LINE_CHARS, else the first one's start
    and how many more ("zero-shot · mean, zero-shot…" hid that a second method stood there)."""
    joined = ", ".join(names)
    if len(joined) <= LABEL_LINE_CHARS or len(names) == 1:
        return clipped(joined)
    more = f" +{len(names) - 1} more"
    first = names[0] if len(names[0]) + len(more) <= LABEL_LINE_CHARS else names[0][: LABEL_LINE_CHARS - len(more) - 1]
    return f"{first.rstrip()}{'' if first == names[0] else '…'}{more}"


def _label_size(label: str) -> tuple[float, float]:
    """(width, height) in pixels of a label (its lines split at <br>)."""
    lines = label.split("<br>")
    return max(len(line) for line in lines) * LABEL_CHAR_PX, len(lines) * LABEL_LINE_PX


Box = tuple[float, float, float, float]  # (left, bottom, right, top) in pixels from the plot's bottom left corner


def _overlap(a: Box, b: Box) -> float:
    """Area in square pixels shared by two boxes."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def _placed_apart(candidates: Sequence[dict[str, Box]], obstacles: Sequence[Box]) -> list[str]:
    """The spot of each label in turn: the first of its candidate boxes that covers no obstacle, no label placed
    before it and nothing outside the plot, else the one covering least."""
    plot = (0.0, 0.0, *LABEL_PLOT_PX)
    taken, spots = list(obstacles), []
    for boxes in candidates:

        def covered(spot, boxes=boxes):
            box = boxes[spot]
            outside = (box[2] - box[0]) * (box[3] - box[1]) - _overlap(box, plot)
            return outside + sum(_overlap(box, other) for other in taken)

        spot = min(boxes, key=covered)  # min keeps the first of equals: the usual spot when nothing is in the way
        spots.append(spot)
        taken.append(boxes[spot])
    return spots


def label_spots(
    points: Sequence[tuple[float, float, str]],
    lines: Sequence[tuple[float, str]],
    x_range: Sequence[float],
    y_range: Sequence[float],
) -> tuple[list[str], list[str]]:
    """Where each label goes so that labels cover neither each other nor the markers: plotly's `textposition` of
    each point's label and `annotation_position` of each horizontal line's.

    `points` are (x, y, label) and `lines` (y, label), labels `clipped`, in the axes' own units (log10 on a log axis),
    the ranges those of the axes. Boxes are estimated in pixels of LABEL_PLOT_PX. The lines' labels are placed first, at
    the left or the right, above or below their line, off the markers; then each point's label, above, below, beside
    or across a corner of its point. Plotly places none apart: two methods at nearly one point (prompt tuning and
    P-tuning, LoRA and the adapter) printed their names over each other, as did zero-shot's and in-context's dashed
    lines half a point apart.
    """
    width, height = LABEL_PLOT_PX
    x_span, y_span = (x_range[1] - x_range[0]) or 1.0, (y_range[1] - y_range[0]) or 1.0

    def pixel_y(y):
        return (y - y_range[0]) / y_span * height

    gap = MARKER_RADIUS_PX
    pixels = [((x - x_range[0]) / x_span * width, pixel_y(y), label) for x, y, label in points]
    markers = [(x - gap, y - gap, x + gap, y + gap) for x, y, _ in pixels]
    line_boxes = []
    for y, label in lines:
        y, (w, h) = pixel_y(y), _label_size(label)
        line_boxes.append(
            {
                "top left": (0.0, y, w, y + h),
                "bottom left": (0.0, y - h, w, y),
                "top right": (width - w, y, width, y + h),
                "bottom right": (width - w, y - h, width, y),
            }
        )
    line_spots = _placed_apart(line_boxes, markers)
    point_boxes = []
    for x, y, label in pixels:
        w, h = _label_size(label)
        point_boxes.append(
            {
                "top center": (x - w / 2, y + gap, x + w / 2, y + gap + h),
                "bottom center": (x - w / 2, y - gap - h, x + w / 2, y - gap),
                "middle right": (x + gap, y - h / 2, x + gap + w, y + h / 2),
                "middle left": (x - gap - w, y - h / 2, x - gap, y + h / 2),
                "top right": (x, y + gap, x + w, y + gap + h),
                "bottom right": (x, y - gap - h, x + w, y - gap),
                "top left": (x - w, y + gap, x, y + gap + h),
                "bottom left": (x - w, y - gap - h, x, y - gap),
            }
        )
    taken_by_lines = [boxes[spot] for boxes, spot in zip(line_boxes, line_spots)]
    return _placed_apart(point_boxes, markers + taken_by_lines), line_spots


def _accuracy_scatter(summary: pd.DataFrame, x_column: str, x_title: str, title: str) -> go.Figure:
    """One point per method at its `x_column` (log x); a method at 0 there (zero-shot trains nothing) is a dashed
    line at its accuracy: a log axis has no 0, and a point drawn at 1 read as one parameter. Labels go where they
    cover no other (`label_spots`)."""
    figure = go.Figure()
    summary = _named_with_k(summary)
    # a method whose every run failed has no accuracy: it vanished from the chart beside a table that lists it
    failed, summary = summary[summary["accuracy_mean"].isna()], summary[summary["accuracy_mean"].notna()]
    if len(failed):
        title += f" (not drawn, no run finished: {', '.join(failed['method'])})"
    colours = method_colours(summary["method"])  # of every method, placed or not: the two charts agree on colours
    placed, zero = summary[summary[x_column] > 0], summary[summary[x_column] <= 0]
    # Room around the points for their labels (above each) and error bars: plotly's autorange clips both.
    log_x = np.log10(placed[x_column].to_numpy(dtype=float)) if len(placed) else np.zeros(1)
    low = (summary["accuracy_mean"] - summary["accuracy_std"].fillna(0)).min() if len(summary) else 0.5
    high = (summary["accuracy_mean"] + summary["accuracy_std"].fillna(0)).max() if len(summary) else 0.5
    bottom, top = max(low - 0.05, 0), min(high + 0.08, 1.1)
    x_range = [log_x.min() - 0.7, log_x.max() + 0.5]
    # methods at one accuracy share a line and its label: two labels at one height were printed over each other. Its
    # second line says what the line stands for, unless the axis says it of every method (none placed)
    what = f"<br>(0 {x_title})" if len(placed) else ""
    lines = [
        (y, f"{_shared_label(list(rows['method']))}{what}") for y, rows in zero.groupby("accuracy_mean", sort=False)
    ]
    names = clipped_apart(list(placed["method"]))
    points = list(zip(log_x, placed["accuracy_mean"], names)) if len(placed) else []
    spots, line_spots = label_spots(points, lines, x_range, [bottom, top])
    for (_, row), name, spot in zip(placed.iterrows(), names, spots):
        figure.add_trace(
            go.Scatter(
                x=[row[x_column]],
                y=[row["accuracy_mean"]],
                error_y=dict(type="data", array=[row["accuracy_std"]]),
                mode="markers+text",
                text=[name],
                hovertext=[row["method"]],  # the whole name
                hoverinfo="text+x+y",
                textposition=spot,
                name=row["method"],
                marker=dict(size=12, color=colours[row["method"]]),
            )
        )
    for (accuracy, label), spot in zip(lines, line_spots):
        figure.add_hline(
            y=accuracy, line_dash="dash", line_color="gray", annotation_text=label, annotation_position=spot
        )
    for _, row in zero[zero["accuracy_std"].fillna(0) > 0].iterrows():  # its spread over seeds, as a point's bars
        mean, std = row["accuracy_mean"], row["accuracy_std"]
        figure.add_hrect(y0=mean - std, y1=mean + std, fillcolor="gray", opacity=0.12, line_width=0)
    step = 0.1 if top - bottom > 0.3 else 0.05
    ticks = [t for t in np.round(np.arange(0, 1 + 1e-9, step), 2) if t >= bottom]  # the room above 100 % is for labels
    # no method placed (zero-shot rows alone): the axis had a lone "1" tick under the dashed lines
    x_axis = dict(title=x_title if len(placed) or not len(zero) else f"{x_title}: none here (the dashed lines)")
    figure.update_layout(
        title=title,
        # a tick at each power of ten: within one decade plotly labelled 2 3 4 ... 9 1 2 3, which reads as nothing
        xaxis=dict(type="log", range=x_range, dtick=1, showticklabels=bool(len(placed))) | x_axis,
        yaxis=dict(title="test accuracy", tickformat=".0%", range=[bottom, top], tickvals=ticks),
        showlegend=False,
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


def _named_with_k(summary: pd.DataFrame) -> pd.DataFrame:
    """`summary` with "K=k" in the name of each line of a method that has lines at several K: "lora" at K=4 and 16
    were two points of one name, colour and hover."""
    if "K" not in summary or not len(summary):
        return summary
    several = summary.groupby("method", sort=False)["K"].transform("nunique") > 1
    named = summary["method"].where(~several, summary["method"] + ", K=" + summary["K"].astype(str))
    return summary.assign(method=named)


@themed
def training_curves(events: pd.DataFrame) -> go.Figure:
    """Training loss (lines) and dev accuracy (dotted, right axis) per step: one colour and one legend entry per
    method, whose click shows or hides all its seeds; the seed is in each point's hover.

    The legend sits under the plot: at its right it covered the dev-accuracy axis, and one entry per method, seed
    and curve (18 for 3 methods and 3 seeds) repeated plotly's 10 colours.
    """
    figure = go.Figure()
    colours = method_colours(events["method"])
    for (method, seed), run in events.groupby(["method", "seed"], sort=False):
        first = not any(trace.legendgroup == method for trace in figure.data)
        style = dict(legendgroup=method, line_color=colours[method])
        figure.add_trace(
            go.Scatter(
                x=run["step"],
                y=run["train_loss"],
                mode="lines" if len(run) > 1 else "markers",  # a run stopped after one step drew no line at all
                name=method,
                showlegend=first,
                hovertemplate=f"{method}, seed {seed}, step %{{x}}: loss %{{y:.3f}}<extra></extra>",
                **style,
            )
        )
        dev = run.dropna(subset=["dev_accuracy"])
        figure.add_trace(
            go.Scatter(
                x=dev["step"],
                y=dev["dev_accuracy"],
                mode="markers+lines",
                yaxis="y2",
                line_dash="dot",
                name=f"{method} s{seed} dev acc",
                showlegend=False,
                customdata=dev.get("dev_log_likelihood"),  # what picks the kept weights by default
                # PET's events have none: its hover ended "log-likelihood -"
                hovertemplate=f"{method}, seed {seed}, step %{{x}}: dev accuracy %{{y:.1%}}"
                + (", log-likelihood %{customdata:.3f}" if "dev_log_likelihood" in dev else "")
                + "<extra></extra>",
                **style,
            )
        )
    figure.update_layout(
        title="Training loss (lines) and dev accuracy (dotted)",
        xaxis_title="step",
        yaxis=dict(title="train loss"),
        yaxis2=dict(
            title="dev accuracy",
            overlaying="y",
            side="right",
            range=[0, 1],
            tickmode="linear",
            dtick=0.2,
            tickformat=".0%",
            showgrid=False,
        ),
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.2, yanchor="top"),
        height=420,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


@themed
def sweep_curve(summary: pd.DataFrame, setting: str, zero_shot: float | None = None) -> go.Figure:
    """Mean test accuracy against one setting's value (error bars = std over seeds), zero-shot as a dashed line.

    The x axis is logarithmic when the values are positive and span more than a factor of 10 (prompt lengths 1..100).
    """
    summary = summary.sort_values(setting)
    values = summary[setting].astype(float)
    log_axis = bool(len(values) and values.min() > 0 and values.max() / values.min() > 10)
    figure = go.Figure(
        go.Scatter(
            x=values,
            y=summary["accuracy_mean"],
            error_y=dict(type="data", array=summary["accuracy_std"]),
            mode="lines+markers",
            name="trained",
            marker=dict(size=9),
        )
    )
    # the axis holds the error bars and the zero-shot line: a line at 95 % above points near 50 % was drawn past the
    # top of the axis, and its label did not give its value
    shown = pd.DataFrame(
        {
            "low": summary["accuracy_mean"] - summary["accuracy_std"],
            "high": summary["accuracy_mean"] + summary["accuracy_std"],
            "zero-shot": np.nan if zero_shot is None else zero_shot,
        }
    )
    if zero_shot is not None:
        figure.add_hline(
            y=zero_shot,
            line_dash="dash",
            annotation_text=f"zero-shot {zero_shot:.1%}",
            annotation_position="bottom right",
        )
    figure.update_layout(
        title=f"Test accuracy vs {setting}",
        xaxis=dict(title=setting, type="log" if log_axis else "linear"),
        yaxis=dict(title="test accuracy", tickformat=".0%", range=_share_range(shown, list(shown.columns))),
        height=380,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


@themed
def metric_panels(
    history: pd.DataFrame, x: str, panels: dict[str, Sequence[str]], title: str, shares: Sequence[str] = ()
) -> go.Figure:
    """Side-by-side panels (title -> columns), one line per column against `x`: e.g. PPO's reward, KL and losses.
    The panels named in `shares` hold fractions: their axis reads in percent, within 0 to 100 % (DPO's pairs ranked
    right, all 0 after a step, had an axis from -1 to 1). Only a panel of several lines names them in the legend: a
    panel's title names its one line (the legend of three panels sat under the first, as if it were that one's)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels))
    for col, (panel, columns) in enumerate(panels.items(), start=1):
        for column in columns:
            figure.add_trace(
                go.Scatter(
                    x=history[x],
                    y=history[column],
                    mode="lines+markers",
                    name=column,
                    marker=dict(size=4),
                    showlegend=len(columns) > 1,
                ),
                row=1,
                col=col,
            )
        figure.update_xaxes(title_text=x, row=1, col=col)
        if panel in shares:
            figure.update_yaxes(tickformat=".0%", range=_share_range(history, columns), row=1, col=col)
    figure.update_layout(
        title=title, height=320, margin=dict(l=10, r=10, t=60, b=10), legend=dict(orientation="h", y=-0.25)
    )
    return figure


@themed
def score_comparison(table: pd.DataFrame, columns: Sequence[str], title: str) -> go.Figure:
    """Box plots of score columns (e.g. the labeler's score of SFT, PPO and DPO responses), points shown."""
    figure = go.Figure()
    for column in columns:
        figure.add_trace(go.Box(y=table[column], name=column, boxpoints="all", jitter=0.4, boxmean=True))
    figure.update_layout(title=title, height=360, showlegend=False, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def route_label(route: str) -> str:
    """An RLHF route as the papers write it: "PPO", "DPO", "SFT", "PPO-ptx" (InstructGPT's name; "PPO-PTX" read as a
    fourth acronym), for the frontier's points and the table's lines alike; what tells a line apart stays as it is
    ("PPO (beta 0.2)")."""
    name, space, told = route.partition(" ")
    head, dash, rest = name.partition("-")
    return head.upper() + dash + rest + space + told


@themed
def score_kl_frontier(summary: dict, routes: Sequence[str], score_title: str) -> go.Figure:
    """The reward-KL frontier: each route's mean labeler score against its mean KL to the SFT model (nats per
    response), the SFT model at KL 0. Up and to the left is better: more score for less drift."""
    names = ["sft", *routes]
    scores = [summary[f"{r}_mean_score"] for r in names]
    kls = [0.0] + [summary[f"{r}_mean_kl"] for r in routes]
    # room around the points for their labels: autorange cut the top one's, and SFT's at the left edge
    room = max(0.05, 0.2 * (max(scores) - min(scores)))
    side = 0.12 * (max(kls) - min(kls) or 1.0)
    figure = go.Figure(
        go.Scatter(
            x=kls,
            y=scores,
            text=[route_label(r) for r in names],
            mode="markers+text",
            textposition="top center",
            marker=dict(size=12),
        )
    )
    figure.update_layout(
        title="Score against KL to the SFT model",
        xaxis=dict(title="mean KL to SFT (nats per response)", range=[min(kls) - side, max(kls) + side]),
        yaxis=dict(title=score_title, range=[min(scores) - room, max(scores) + 2 * room]),
        height=360,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure


@themed
def soft_label_histogram(soft_labels, label_names: Sequence[str]) -> go.Figure:
    """PET's soft labels: for each label, how sure the ensemble was (max_l q(l|x)) on the texts it gave that label.

    `soft_labels` is (N, L), rows summing to 1. Bars near 1 are confident labels; near 1/L, the patterns disagreed.
    """
    soft = np.asarray(soft_labels)
    predicted, confidence = soft.argmax(1), soft.max(1)
    # bins of 0.05 that end at 1, the last holding 1 itself: plotly's are half open, and texts at exactly 1 (a low
    # temperature) were left out of every bar, below the legend's count; from 1/L they ran past 1 for L = 3
    size = 0.05
    start = 1 - size * math.ceil(round((1 - 1 / len(label_names)) / size, 9))
    confidence = np.minimum(confidence, 1 - size / 2)
    figure = go.Figure()
    for index, name in enumerate(label_names):
        figure.add_trace(
            go.Histogram(
                x=confidence[predicted == index],
                name=f"{name} ({int((predicted == index).sum())})",
                xbins=dict(start=start, end=1.0, size=size),
            )
        )
    figure.update_layout(
        title="Soft labels of the unlabelled texts: the ensemble's confidence",
        barmode="stack",
        xaxis=dict(title="max over labels of q(label | text)", range=[start, 1]),
        yaxis=dict(title="texts"),
        height=360,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    return figure
