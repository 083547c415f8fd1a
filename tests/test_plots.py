"""Figures people read: axes of counts and of sizes."""

from __future__ import annotations

import pandas as pd
import pytest

from peftlab.plots import (
    accuracy_vs_parameters,
    clipped_apart,
    label_probability_bars,
    metric_curve,
    metric_panels,
    route_label,
    sweep_curve,
)


def test_a_short_runs_steps_get_one_tick_each_and_longer_ones_plotlys_own():
    """SFT, reward-model, PPO and DPO plots of 2 steps put ticks at 1.5 and 2.5."""
    short = pd.DataFrame({"step": [1, 2], "loss": [4.1, 4.0], "kl": [0.0, 0.1]})
    assert metric_curve(short, "step", ["loss"], "SFT loss").layout.xaxis.dtick == 1
    panels = metric_panels(short, "step", {"loss": ["loss"], "KL": ["kl"]}, "PPO")
    assert panels.layout.xaxis.dtick == 1 and panels.layout.xaxis2.dtick == 1
    long = pd.DataFrame({"step": range(1, 61), "loss": [1.0] * 60})
    assert metric_curve(long, "step", ["loss"], "SFT loss").layout.xaxis.dtick is None
    fractions = pd.DataFrame({"epoch": [0.5, 1.0], "loss": [1.0, 0.5]})
    assert metric_curve(fractions, "epoch", ["loss"], "loss").layout.xaxis.dtick is None


def test_the_search_s_accuracy_chart_reads_in_percent_as_its_table_does():
    """AutoPrompt's chart ticked "0.8" and "1" beside a table of "80.0%" and "100.0%"."""
    from peftlab.ui.autoprompt_tab import _plot

    history = pd.DataFrame({"iteration": [0, 1], "dev acc": [0.5, 0.8], "train acc": [0.5, 1.0]})
    figure = _plot(history)
    assert figure.layout.yaxis.tickformat == ".0%" and figure.layout.yaxis.title.text == "accuracy"
    assert metric_curve(history, "iteration", ["dev acc"], "t").layout.yaxis.tickformat in ("", None)
    assert label_probability_bars({"negative": 0.2, "positive": 0.8}).layout.xaxis.dtick is None


def test_the_log_axis_of_sizes_is_labelled_at_powers_of_ten():
    summary = pd.DataFrame(
        {"method": ["lora"], "accuracy_mean": [0.8], "accuracy_std": [0.01], "trainable_params": [40_000]}
    )
    assert accuracy_vs_parameters(summary).layout.xaxis.dtick == 1


def test_the_score_kl_frontier_leaves_room_for_every_label():
    """SFT's label at KL 0 was cut at the left edge, the highest point's at the top."""
    from peftlab.plots import score_kl_frontier

    summary = {"sft_mean_score": 0.12, "ppo_mean_score": 0.47, "ppo_mean_kl": 2.5, "dpo_mean_score": 0.51}
    figure = score_kl_frontier(summary | {"dpo_mean_kl": 2.0}, ["ppo", "dpo"], "score")
    # KL from 0 to 2.5: 0.3 on each side; scores 0.12 to 0.51: 0.078 below, twice that above
    assert figure.layout.xaxis.range == (-0.3, 2.8)
    assert figure.layout.yaxis.range[0] == pytest.approx(0.042) and figure.layout.yaxis.range[1] == pytest.approx(0.666)


def test_a_method_that_trains_nothing_is_a_line_not_a_point_at_one_parameter():
    """Zero-shot was drawn at x = 1 on the log axis of trainable parameters, which read as one parameter."""
    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "lora"],
            "accuracy_mean": [0.765, 0.805],
            "accuracy_std": [0.0, 0.01],
            "trainable_params": [0, 460_800],
        }
    )
    figure = accuracy_vs_parameters(summary)
    assert [list(trace.x) for trace in figure.data] == [[460_800]]
    (line,) = figure.layout.shapes
    assert (line.y0, line.y1, line.line.dash) == (0.765, 0.765, "dash")
    assert figure.layout.annotations[0].text == "zero-shot<br>(0 trainable parameters)"
    assert figure.layout.xaxis.showticklabels and figure.layout.xaxis.title.text == "trainable parameters"
    # zero-shot rows alone: no lone "1" under the dashed lines, and the axis says why it is empty
    alone = accuracy_vs_parameters(summary.iloc[:1])
    assert alone.data == () and alone.layout.xaxis.showticklabels is False
    assert alone.layout.xaxis.title.text == "trainable parameters: none here (the dashed lines)"
    assert [a.text for a in alone.layout.annotations] == ["zero-shot"]  # the axis says "0 trainable parameters"
    # two methods at one accuracy: one line, one label naming both (two labels were printed over each other)
    tied = pd.concat([summary, summary.iloc[:1].assign(method="zero-shot · mean")], ignore_index=True)
    figure = accuracy_vs_parameters(tied)
    assert len(figure.layout.shapes) == 1
    assert [a.text for a in figure.layout.annotations] == ["zero-shot, zero-shot · mean<br>(0 trainable parameters)"]
    # names too long to list: the first one's start and how many more ("zero-shot · mean, zero-shot…" hid the second)
    tied.loc[2, "method"] = 'zero-shot (templates "Review: {text}")'
    figure = accuracy_vs_parameters(tied)
    assert [a.text for a in figure.layout.annotations] == ["zero-shot +1 more<br>(0 trainable parameters)"]
    tied.loc[0, "method"] = "zero-shot · contextual (verbalizer bad / good)"
    assert [a.text for a in accuracy_vs_parameters(tied.iloc[[0, 2]]).layout.annotations] == [
        "zero-shot · context… +1 more"  # 28 characters, as every label line
    ]


def test_the_two_compare_charts_give_a_method_one_colour():
    """Zero-shot is a line on the parameters chart and a point on the time chart, so the points' order differed and
    'head' was blue in one chart and red in the other."""
    from peftlab.plots import accuracy_vs_seconds

    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "lora", "head"],
            "accuracy_mean": [0.7, 0.8, 0.75],
            "accuracy_std": [0.0, 0.01, 0.02],
            "trainable_params": [0, 460_800, 1_000],
            "seconds": [0.24, 60.0, 30.0],
        }
    )
    by_parameters, by_time = accuracy_vs_parameters(summary), accuracy_vs_seconds(summary)
    assert [t.name for t in by_parameters.data] == ["lora", "head"]
    assert [t.name for t in by_time.data] == ["zero-shot", "lora", "head"]

    def colours(figure):
        return {trace.name: trace.marker.color for trace in figure.data}

    assert colours(by_time) == colours(by_parameters) | {"zero-shot": colours(by_time)["zero-shot"]}
    assert len(set(colours(by_time).values())) == 3


def test_a_method_has_one_colour_in_every_chart_whatever_else_is_drawn():
    """LoRA was red in the training curves, green in the scatter beside them (which also has zero-shot) and purple on
    the Compare tab: colours went by order of appearance. Known methods differ from each other; any name keeps its
    colour from chart to chart."""
    from peftlab.plots import COLOURED_METHODS, method_colour, training_curves

    events = pd.DataFrame(
        {
            "method": ["head", "lora"],
            "seed": [13, 13],
            "step": [1, 1],
            "train_loss": [0.7, 0.6],
            "dev_accuracy": [0.5, 0.6],
        }
    )
    curves = {trace.name: trace.line.color for trace in training_curves(events).data if trace.showlegend}
    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "prompt-tuning", "lora", "head"],
            "accuracy_mean": [0.7, 0.8, 0.75, 0.6],
            "accuracy_std": [0.0, 0.01, 0.02, 0.0],
            "trainable_params": [0, 11_520, 460_800, 1_154],
        }
    )
    scatter = {trace.name: trace.marker.color for trace in accuracy_vs_parameters(summary).data}
    assert (
        curves
        == {"head": scatter["head"], "lora": scatter["lora"]}
        == {
            "head": method_colour("head"),
            "lora": method_colour("lora"),
        }
    )
    assert len({method_colour(m) for m in COLOURED_METHODS}) == len(COLOURED_METHODS)
    assert (
        method_colour("zero-shot · mean")
        == method_colour("zero-shot · mean")
        not in map(method_colour, COLOURED_METHODS)
    )


def test_a_search_stopped_at_its_start_has_axes_around_its_one_point():
    """AutoPrompt stopped at iteration 0: its chart ran from -50 % to 100 % and from iteration -1 to 1."""
    from peftlab.ui.autoprompt_tab import _plot

    one = _plot(pd.DataFrame({"iteration": [0], "dev acc": [0.469], "train acc": [float("nan")]}))
    assert one.layout.yaxis.range == pytest.approx((0.419, 0.519)) and one.layout.xaxis.range == (-0.5, 0.5)
    full = _plot(pd.DataFrame({"iteration": [0, 1, 2], "dev acc": [0.5, 0.9, 1.0], "train acc": [0.2, 0.4, 1.0]}))
    assert full.layout.yaxis.range == pytest.approx((0.12, 1.02)) and full.layout.xaxis.range == (-0.5, 2.5)
    assert metric_curve(pd.DataFrame({"step": [1], "loss": [4.0]}), "step", ["loss"], "l").layout.yaxis.range is None


def test_labels_of_methods_at_nearly_one_point_or_line_are_placed_apart():
    """Prompt tuning and P-tuning (and LoRA and the adapter) sit at nearly one point on both Compare charts, and
    plotly printed their names over each other, as it did the labels of zero-shot's and in-context's dashed lines
    half a point apart."""
    from peftlab.plots import label_spots

    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "in-context", "lora", "adapter", "head"],
            "accuracy_mean": [0.79, 0.785, 0.82, 0.82, 0.6],
            "accuracy_std": [0.0, 0.03, 0.01, 0.01, 0.02],
            "trainable_params": [0, 0, 460_800, 460_800, 1_154],
        }
    )
    figure = accuracy_vs_parameters(summary)
    spots = {trace.name: trace.textposition for trace in figure.data}
    assert spots["head"] == "top center"  # alone: above its point, as plotly puts it
    assert spots["lora"] != spots["adapter"]
    assert [a.text for a in figure.layout.annotations] == [
        "zero-shot<br>(0 trainable parameters)",
        "in-context<br>(0 trainable parameters)",
    ]
    first, second = (shape for shape in figure.layout.shapes if shape.type == "line")
    assert (first.y0, second.y0) == (0.79, 0.785)
    # the first line's label goes above it at the left, the second's where it covers neither
    assert [a.yanchor for a in figure.layout.annotations] == ["bottom", "top"]
    # by hand, on the 300 x 280 pixel plot (axes from 0 to 2 and 0 to 1): the points at x = 150 px, y = 140 and 154 px.
    # The first's label above it (140 + 6 to 140 + 6 + 16 px) would cover the second's marker (148 to 160 px): it goes
    # below (118 to 134). The second's above it (160 to 176) covers nothing.
    assert label_spots([(1.0, 0.5, "ab"), (1.0, 0.55, "cd")], [], [0, 2], [0, 1]) == (
        ["bottom center", "top center"],
        [],
    )


def test_pet_s_pattern_models_get_colours_apart_and_a_one_step_run_is_drawn():
    """PET's patterns 1, 3 and 4 drew in near-identical blue, navy and purple (colours by a hash of the name), and a
    run stopped after its first step drew an empty chart (a line of one point)."""
    from peftlab.plots import PATTERN_PALETTE, method_colour, training_curves

    colours = [method_colour(f"pattern {n}") for n in (1, 2, 3, 4)]
    assert colours == PATTERN_PALETTE[:4] and method_colour("classifier") not in colours
    events = pd.DataFrame({"method": ["lora"], "seed": [13], "step": [1], "train_loss": [0.7], "dev_accuracy": [0.5]})
    assert [trace.mode for trace in training_curves(events).data] == ["markers", "markers+lines"]


def test_a_chart_shows_the_start_of_a_long_name_and_its_hover_the_whole_name():
    """Lines named by their settings ('zero-shot (templates "Review: {text}\\nSentiment:{mask}", verbalizer ...)', 60
    characters and more) were wider than a phone's plot and covered their neighbours wherever they went."""
    long = 'zero-shot (templates "Review: {text}\\nSentiment:{mask}")'
    summary = pd.DataFrame(
        {
            "method": [long, f"prompt-tuning ({long[11:]}"],
            "accuracy_mean": [0.9, 0.8],
            "accuracy_std": [0.0, 0.01],
            "trainable_params": [0, 11_520],
        }
    )
    figure = accuracy_vs_parameters(summary)
    (point,) = figure.data
    assert point.text == ('prompt-tuning (templates "R…',) and point.hovertext == (summary["method"][1],)
    assert figure.layout.annotations[0].text == 'zero-shot (templates "Revie…<br>(0 trainable parameters)'


def test_names_that_clip_to_one_label_show_where_they_differ():
    """Two sweep points in Compare were both labelled "prompt-tuning (num_virtual_…": the value that told them apart
    was cut. Names that clip alike keep their start and the word where they first differ, within 28 characters."""
    names = ["prompt-tuning (num_virtual_tokens 4)", "prompt-tuning (num_virtual_tokens 128)", "lora"]
    summary = pd.DataFrame(
        {"method": names, "accuracy_mean": [0.6, 0.7, 0.8], "accuracy_std": 0.0, "trainable_params": [1, 2, 3]}
    )
    labels = [trace.text[0] for trace in accuracy_vs_parameters(summary).data]
    assert labels == ["prompt-tuning (num…tokens 4)", "prompt-tuning (n…tokens 128)", "lora"]
    assert max(map(len, labels)) <= 28
    # differing within the name: the differing word, then "…" for the rest
    assert clipped_apart(["lora (lora_alpha 8, lora_r 4, seed 1)", "lora (lora_alpha 8, lora_r 16, seed 1)"]) == [
        "lora (lora_alp…8, lora_r 4,…",
        "lora (lora_al…8, lora_r 16,…",
    ]


def test_a_sweep_s_axis_holds_its_zero_shot_line_whose_label_gives_its_value():
    """Zero-shot at 95 % above sweep points near 50 % was drawn past the top of the axis, labelled "zero-shot" with no
    value anywhere in the chart or table. The axis spans the error bars and the line, padded by 0.05 (or a tenth of
    the span): 0.5 - 0.05 to 0.95 + 0.05."""
    summary = pd.DataFrame(
        {"num_virtual_tokens": [8, 4], "accuracy_mean": [0.55, 0.5], "accuracy_std": [0.05, 0.0], "runs": [2, 1]}
    )
    figure = sweep_curve(summary, "num_virtual_tokens", 0.95)
    assert figure.layout.yaxis.range == pytest.approx((0.45, 1.0))
    (line,) = figure.layout.shapes
    (label,) = figure.layout.annotations
    assert line.y0 == 0.95 and label.text == "zero-shot 95.0%"
    assert list(figure.data[0].x) == [4, 8]  # in order of the setting
    assert sweep_curve(summary, "num_virtual_tokens").layout.yaxis.range == pytest.approx((0.45, 0.65))


def test_rlhf_routes_are_named_as_the_papers_write_them():
    """The frontier said "PPO-PTX" and Compare's table "ppo" beside it."""
    assert [route_label(r) for r in ("sft", "ppo", "ppo-ptx", "dpo")] == ["SFT", "PPO", "PPO-ptx", "DPO"]


def test_a_panel_of_fractions_reads_in_percent_within_0_and_100():
    """DPO's "pairs ranked right", 0 after one step, had an axis from -1 to 1; the legend named every panel's one
    line under the first panel."""
    history = pd.DataFrame({"step": [1, 2], "loss": [0.69, 0.7], "right": [0.0, 0.0], "a": [1, 2], "b": [2, 3]})
    panels = {"loss": ["loss"], "pairs ranked right": ["right"], "two": ["a", "b"]}
    figure = metric_panels(history, "step", panels, "DPO", shares=("pairs ranked right",))
    assert figure.layout.yaxis2.tickformat == ".0%" and list(figure.layout.yaxis2.range) == [0.0, 0.05]
    assert figure.layout.yaxis.range is None  # the loss is no fraction
    assert [trace.showlegend for trace in figure.data] == [False, False, True, True]


def test_label_names_that_are_numbers_keep_every_column_of_the_confusion_matrix():
    """Star ratings "1" to "5" were read as whole numbers: the x axis got the range 0.5 to 5.5, measured in columns
    on a categorical axis, which hid the first column and showed an empty one."""
    import numpy as np

    from peftlab.plots import confusion_heatmap

    figure = confusion_heatmap(np.eye(5, dtype=int), ["1", "2", "3", "4", "5"])
    assert figure.layout.xaxis.range is None and figure.layout.xaxis.dtick is None


def _summary(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_the_scatter_names_each_k_and_says_which_methods_it_cannot_draw():
    """LoRA at K=4 and K=16 were two points of one name and colour; a method whose every run failed vanished (and
    alone, it left an axis from NaN to NaN); in-context's spread over seeds had no mark; the hover rounded 83.3 % to
    83 %."""
    summary = _summary(
        method=["lora", "lora", "in-context", "full"],
        K=[4, 16, 16, 16],
        accuracy_mean=[0.833, 0.826, 0.7, float("nan")],
        accuracy_std=[0.01, 0.02, 0.03, 0.0],
        trainable_params=[12288, 12288, 0, 0],
    )
    figure = accuracy_vs_parameters(summary)
    assert [trace.name for trace in figure.data] == ["lora, K=4", "lora, K=16"]
    assert figure.data[0].marker.color != figure.data[1].marker.color
    assert figure.layout.title.text == "Test accuracy vs trainable parameters (not drawn, no run finished: full)"
    (band,) = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert (band.y0, band.y1) == pytest.approx((0.67, 0.73))
    assert figure.layout.yaxis.hoverformat == ".1%"
    alone = accuracy_vs_parameters(summary.iloc[[3]])
    assert all(0 <= y <= 1.1 for y in alone.layout.yaxis.range) and not alone.data


def test_the_soft_label_histogram_counts_texts_the_ensemble_is_sure_of():
    """Bins ended at 1 half open: texts at confidence exactly 1 (a low temperature) were in no bar, below the legend's
    count; for 3 labels the bins from 1/3 ran past 1."""
    import numpy as np

    from peftlab.plots import soft_label_histogram

    soft = np.array([[1.0, 0.0]] * 5 + [[0.6, 0.4], [0.2, 0.8]])
    figure = soft_label_histogram(soft, ["negative", "positive"])
    negative = figure.data[0]
    bins = negative.xbins
    assert negative.name == "negative (6)" and len(negative.x) == 6
    assert all(bins.start <= x < bins.end for x in negative.x) and bins.end == 1.0
    three = soft_label_histogram(np.array([[0.5, 0.3, 0.2]]), ["a", "b", "c"]).data[0].xbins
    steps = (1 - three.start) / three.size
    assert three.start <= 1 / 3 and steps == pytest.approx(round(steps))  # whole bins that end at 1


def test_variants_of_one_method_and_ipet_generations_each_get_a_colour_of_their_own():
    """ "lora (learning_rate 0.0001)" and "lora (learning_rate 0.001)" drew in one colour by their hash, and neither in
    LoRA's; so did iPET's generations of patterns 1 and 2."""
    from peftlab.plots import method_colour, method_colours

    names = ["lora (learning_rate 0.0001)", "lora (learning_rate 0.001)", "zero-shot"]
    colours = method_colours(names)
    assert colours[names[0]] == method_colour("lora") and len(set(colours.values())) == 3
    ipet = method_colours(["pattern 1 (iPET generation 1)", "pattern 2 (iPET generation 1)"])
    assert list(ipet.values()) == [method_colour("pattern 1"), method_colour("pattern 2")]


def test_pet_s_dev_accuracy_hover_names_no_log_likelihood_it_does_not_have():
    """PET's events carry no dev log-likelihood: its hover ended "log-likelihood -"."""
    from peftlab.plots import training_curves

    events = pd.DataFrame(
        {
            "method": ["pattern 1"] * 2,
            "seed": [13, 13],
            "step": [1, 2],
            "train_loss": [0.7, 0.6],
            "dev_accuracy": [0.5, 0.6],
        }
    )
    dev = training_curves(events).data[1]
    assert dev.hovertemplate == "pattern 1, seed 13, step %{x}: dev accuracy %{y:.1%}<extra></extra>"
