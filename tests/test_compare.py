"""Tests for peftlab.compare (grids -> rows -> DataFrame -> summary) and the `compare` command's bad input."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
import time

import numpy as np
import pandas as pd
import pytest

import peftlab.models
from peftlab.cli import main
from peftlab.cloze import ClozeSetup, evaluate
from peftlab.compare import (
    RESULT_COLUMNS,
    GridRow,
    parse_sweep_values,
    results_frame,
    run_grid,
    run_record,
    run_sweep,
    summarize,
    sweepable_settings,
    validate_grid,
)
from peftlab.config import parse_list
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.tasks import Task
from peftlab.tuning import TrainedMethod, TrainEvent, TrainSettings

LABELS = ["negative", "positive"]
TEMPLATE = "Review: {text} Sentiment:{mask}"
VERBALIZER = {"negative": ["negative"], "positive": ["positive"]}
SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the story", "the cast", "the ending", "the script"]


def easy_task() -> Task:
    """24 training rows per class and 8 test rows, from words the tiny tokenizers know."""
    rows = [
        (f"{s} was {w}", y)
        for y, words in ((1, ["great", "good", "fun"]), (0, ["bad", "awful", "boring"]))
        for s in SUBJECTS
        for w in words
    ]
    test = [(f"i {verb} {s}", y) for y, verb in ((1, "loved"), (0, "hated")) for s in SUBJECTS[:4]]
    return Task(
        "easy-sentiment",
        LABELS,
        ["text"],
        [{"text": t, "label": y} for t, y in rows],
        [{"text": t, "label": y} for t, y in test],
    )


@pytest.fixture(scope="module")
def grid(tiny_causal):
    """prompt-tuning and LoRA x seeds 13, 21 x K=4 on the tiny Llama: (events, rows, total params)."""
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    methods = [method_config("prompt-tuning", num_virtual_tokens=4), method_config("lora", r=2, learning_rate=1e-2)]
    settings = TrainSettings(steps=3, batch_size=4, eval_every=3, seed=999)  # run_grid replaces the seed
    items = list(run_grid(tiny_causal, task, setup, methods, [13, 21], [4], settings, test_limit=6))
    events = [i for i in items if isinstance(i, TrainEvent)]
    rows = [i for i in items if isinstance(i, GridRow)]
    assert len(events) + len(rows) == len(items)
    return task, setup, events, rows, sum(p.numel() for p in tiny_causal.model.parameters())


# ------------------------------------------------------------------ run_grid


def test_grid_yields_zero_shot_first_then_one_row_per_method_and_seed(grid, tiny_causal):
    task, setup, events, rows, total = grid
    assert [(r.values["method"], r.values["K"], r.values["seed"]) for r in rows] == [
        ("zero-shot", 0, None),
        ("prompt-tuning", 4, 13),
        ("lora", 4, 13),
        ("prompt-tuning", 4, 21),
        ("lora", 4, 21),
    ]
    for row in rows:
        assert list(row.values) == RESULT_COLUMNS
    zero = rows[0]
    assert zero.trained is None
    assert zero.values["trainable_params"] == 0 and zero.values["trainable_share"] == 0 and zero.values["steps"] == 0
    reference = evaluate(tiny_causal, task, TEMPLATE, VERBALIZER, limit=6)  # the same prompt on the same 6 texts
    assert zero.values["test_accuracy"] == pytest.approx(reference.accuracy)
    assert zero.values["macro_f1"] == pytest.approx(reference.macro_f1)

    H, layers, kv = 32, 2, 16
    expected_params = {"prompt-tuning": 4 * H, "lora": layers * (2 * (H + H) + 2 * (H + kv))}
    for row in rows[1:]:
        values = row.values
        assert isinstance(row.trained, TrainedMethod)
        assert values["trainable_params"] == expected_params[values["method"]] == row.trained.trainable_params
        assert values["trainable_share"] == pytest.approx(values["trainable_params"] / total)
        assert values["steps"] == 3 == row.trained.steps_done
        assert values["train_seconds"] >= 0 and values["peak_memory_mb"] > 0
        assert 0 <= values["test_accuracy"] <= 1 and 0 <= values["macro_f1"] <= 1
        # The row's accuracy is the trained method's, on the limited test split.
        assert values["test_accuracy"] == pytest.approx(row.trained.evaluate(task.test_subset(6))["accuracy"])
    # Every (seed, method) streamed its 3 steps, in grid order, with the grid's seed and not the settings' one.
    assert [(e.seed, e.method, e.step) for e in events] == [
        (seed, name, step) for seed in (13, 21) for name in ("prompt-tuning", "lora") for step in (1, 2, 3)
    ]


def test_grid_rows_become_a_frame_and_a_summary_computed_by_hand(grid):
    _, _, _, rows, _ = grid
    frame = results_frame([r.values for r in rows])
    assert list(frame.columns) == RESULT_COLUMNS and len(frame) == 5
    assert pd.api.types.is_integer_dtype(frame["seed"])
    assert frame["seed"].isna().tolist() == [True, False, False, False, False]
    assert frame["seed"].dropna().tolist() == [13, 13, 21, 21]
    assert frame["seed"].dropna().map(type).eq(int).all()  # 13, not 13.0 (CSV and JSON exports stay integers)
    assert "13.0" not in frame.to_csv(index=False)

    summary = summarize(frame)
    assert summary["method"].tolist() == ["zero-shot", "prompt-tuning", "lora"]  # first appearance order
    for method in ("prompt-tuning", "lora"):
        accuracies = np.array([r.values["test_accuracy"] for r in rows if r.values["method"] == method])
        f1s = np.array([r.values["macro_f1"] for r in rows if r.values["method"] == method])
        line = summary[summary["method"] == method].iloc[0]
        assert line["accuracy_mean"] == pytest.approx(accuracies.mean())
        assert line["accuracy_std"] == pytest.approx(accuracies.std(ddof=1))  # sample std over the seeds
        assert line["macro_f1_mean"] == pytest.approx(f1s.mean())
        assert line["runs"] == 2
    zero = summary[summary["method"] == "zero-shot"].iloc[0]
    assert zero["runs"] == 1 and zero["accuracy_std"] == 0.0  # one run: 0, not NaN


def test_summarize_by_hand_on_made_up_rows():
    rows = [
        {
            "method": "a",
            "K": 4,
            "seed": 1,
            "test_accuracy": 0.5,
            "macro_f1": 0.4,
            "trainable_params": 10,
            "trainable_share": 0.1,
            "train_seconds": 1.0,
            "seconds_per_step": 0.1,
            "steps": 10,
            "peak_memory_mb": 1.0,
        },
        {
            "method": "a",
            "K": 4,
            "seed": 2,
            "test_accuracy": 0.7,
            "macro_f1": 0.6,
            "trainable_params": 10,
            "trainable_share": 0.1,
            "train_seconds": 3.0,
            "seconds_per_step": 0.3,
            "steps": 10,
            "peak_memory_mb": 1.0,
        },
        {
            "method": "a",
            "K": 4,
            "seed": 3,
            "test_accuracy": 0.9,
            "macro_f1": 0.8,
            "trainable_params": 10,
            "trainable_share": 0.1,
            "train_seconds": 2.0,
            "seconds_per_step": 0.2,
            "steps": 10,
            "peak_memory_mb": 1.0,
        },
        {
            "method": "a",
            "K": 8,
            "seed": 1,
            "test_accuracy": 0.6,
            "macro_f1": 0.6,
            "trainable_params": 10,
            "trainable_share": 0.1,
            "train_seconds": 2.0,
            "seconds_per_step": 0.2,
            "steps": 10,
            "peak_memory_mb": 1.0,
        },
    ]
    summary = summarize(results_frame(rows))
    assert summary[["method", "K"]].values.tolist() == [["a", 4], ["a", 8]]
    first = summary.iloc[0]
    assert first["accuracy_mean"] == pytest.approx(0.7)
    assert first["accuracy_std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1)) == pytest.approx(0.2)
    assert first["macro_f1_mean"] == pytest.approx(0.6)
    assert first["train_seconds_mean"] == pytest.approx(2.0)
    assert first["runs"] == 3 and summary.iloc[1]["runs"] == 1 and summary.iloc[1]["accuracy_std"] == 0.0
    # a failed run (`backends.failed_row`), first of its group: counted in none of the figures
    failed = {**rows[0], "seed": 4, "test_accuracy": math.nan, "macro_f1": math.nan, "trainable_params": 0}
    failed |= {"trainable_share": math.nan, "train_seconds": 0.0, "status": "failed: out of memory"}
    again = summarize(results_frame([failed, *rows])).iloc[0]
    assert (again["runs"], again["trainable_params"], again["train_seconds_mean"]) == (3, 10, pytest.approx(2.0))
    assert again["accuracy_mean"] == pytest.approx(0.7) and again["accuracy_std"] == pytest.approx(0.2)
    (only_failed,) = summarize(results_frame([{**failed, "method": "b"}])).itertuples()  # not "<NA>" parameters
    assert (only_failed.runs, only_failed.trainable_params) == (0, 0)


def test_results_frame_of_zero_shot_only_and_of_nothing():
    only = results_frame(
        [
            {
                "method": "zero-shot",
                "K": 0,
                "seed": None,
                "test_accuracy": 0.5,
                "macro_f1": 0.5,
                "trainable_params": 0,
                "trainable_share": 0.0,
            }
        ]
    )
    assert pd.api.types.is_integer_dtype(only["seed"]) and only["seed"].isna().all()
    assert math.isnan(only["peak_memory_mb"].iloc[0])  # missing columns are filled, not dropped
    empty = results_frame([])
    assert list(empty.columns) == RESULT_COLUMNS and empty.empty


def test_grid_stop_flag_keeps_the_run_in_progress_as_a_stopped_row(tiny_causal):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    stop = threading.Event()
    items = []
    for item in run_grid(
        tiny_causal,
        task,
        setup,
        [method_config("head"), method_config("lora")],
        [13, 21],
        [4],
        TrainSettings(steps=10, eval_every=5),
        test_limit=4,
        stop=stop,
    ):
        items.append(item)
        if isinstance(item, TrainEvent) and item.step == 2:
            stop.set()
    rows = [i for i in items if isinstance(i, GridRow)]
    assert [r.values["method"] for r in rows] == ["zero-shot", "head"]  # no run starts after the stop
    assert [(e.method, e.step) for e in items if isinstance(e, TrainEvent)] == [("head", 1), ("head", 2)]
    stopped = rows[1]
    assert stopped.values["status"] == "stopped at step 2 of 10" and stopped.values["steps"] == 2
    assert rows[0].values["status"] == "done"
    assert stopped.trained.stopped and stopped.trained.steps_done == 2
    assert stopped.values["test_accuracy"] == stopped.trained.evaluate(task.test[:4])["accuracy"]


def test_a_stop_before_the_first_step_keeps_no_row(tiny_causal):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    stop = threading.Event()
    stop.set()
    items = list(
        run_grid(
            tiny_causal,
            task,
            setup,
            [method_config("head")],
            [13],
            [4],
            TrainSettings(steps=3),
            test_limit=4,
            stop=stop,
        )
    )
    assert [i.values["method"] for i in items if isinstance(i, GridRow)] == ["zero-shot"]


def test_a_method_that_cannot_train_on_the_model_fails_before_the_grid_starts(tiny_causal):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    items = run_grid(
        tiny_causal, task, setup, [method_config("head"), method_config("bitfit")], [13], [4], TrainSettings()
    )
    with pytest.raises(PeftlabError, match=r"BitFit trains only bias terms, and tiny-llama has none"):
        next(items)  # not even the zero-shot row: nothing runs before the error


def test_a_template_that_leaves_no_room_beside_virtual_tokens_fails_before_the_grid_starts(tiny_causal):
    """The template fits the model's input alone (its zero-shot row scored), but not beside 200 virtual tokens:
    prompt tuning trained on texts cut to nothing."""
    task = easy_task()
    setup = ClozeSetup.build(task, "{text} " + "word " * 30 + "It was{mask}.", VERBALIZER)
    plan = [method_config("prompt-tuning", num_virtual_tokens=200)]
    items = run_grid(tiny_causal, task, setup, plan, [13], [4], TrainSettings())
    with pytest.raises(PeftlabError) as error:
        next(items)  # not even the zero-shot row
    assert re.fullmatch(
        r"The template '\{text\} word .*…' takes (\d+) of the 56 tokens tiny-llama reads beside 200 virtual "
        r"tokens, leaving the text fewer than 16; shorten it to at most about 40 tokens with its label words\.",
        str(error.value),
    ), str(error.value)


# ------------------------------------------------------------------ sweeps


@pytest.fixture(scope="module")
def sweep(tiny_causal):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    items = list(
        run_sweep(
            tiny_causal,
            task,
            setup,
            "prompt-tuning",
            "num_virtual_tokens",
            [1, 3],
            [13, 21],
            4,
            TrainSettings(steps=2, batch_size=4, eval_every=2),
            test_limit=4,
        )
    )
    return [i for i in items if isinstance(i, TrainEvent)], [i for i in items if isinstance(i, GridRow)]


def test_sweep_trains_each_value_for_each_seed_and_rows_carry_the_value(sweep):
    events, rows = sweep
    assert [(r.values["method"], r.values.get("num_virtual_tokens"), r.values["seed"]) for r in rows] == [
        ("zero-shot", None, None),
        ("prompt-tuning", 1, 13),
        ("prompt-tuning", 1, 21),
        ("prompt-tuning", 3, 13),
        ("prompt-tuning", 3, 21),
    ]
    assert [r.values["trainable_params"] for r in rows[1:]] == [32, 32, 96, 96]  # n virtual tokens x H = 32
    assert [r.trained.config.num_virtual_tokens for r in rows[1:]] == [1, 1, 3, 3]
    # Curves of the variants stay apart: each event is labelled with its value.
    assert sorted({(e.method, e.seed) for e in events}) == [
        ("prompt-tuning num_virtual_tokens=1", 13),
        ("prompt-tuning num_virtual_tokens=1", 21),
        ("prompt-tuning num_virtual_tokens=3", 13),
        ("prompt-tuning num_virtual_tokens=3", 21),
    ]


def test_sweep_frame_keeps_the_setting_column_and_summarizes_per_value(sweep):
    _, rows = sweep
    frame = results_frame([r.values for r in rows])
    assert list(frame.columns) == RESULT_COLUMNS + ["num_virtual_tokens"]
    summary = summarize(frame[frame["method"] != "zero-shot"], by=["num_virtual_tokens"])
    assert summary["num_virtual_tokens"].tolist() == [1, 3]
    for value in (1, 3):
        accuracies = [r.values["test_accuracy"] for r in rows[1:] if r.values["num_virtual_tokens"] == value]
        assert summary.set_index("num_virtual_tokens").loc[value, "accuracy_mean"] == pytest.approx(np.mean(accuracies))


def test_sweep_settings_and_values_are_checked():
    assert "num_virtual_tokens" in sweepable_settings("prompt-tuning") and "init" not in sweepable_settings(
        "prompt-tuning"
    )
    assert "prefix_projection" not in sweepable_settings("prefix-tuning")  # booleans are not a sweep
    assert parse_sweep_values("prompt-tuning", "num_virtual_tokens", "1, 5,20") == [1, 5, 20]
    assert parse_sweep_values("lora", "learning_rate", "1e-4,1e-3") == [1e-4, 1e-3]
    with pytest.raises(
        PeftlabError,
        match=r"^prompt-tuning has no numeric setting 'init' to sweep; choose from learning_rate, num_virtual_tokens",
    ):
        parse_sweep_values("prompt-tuning", "init", "1")
    with pytest.raises(
        PeftlabError, match=r"values of num_virtual_tokens must be comma-separated whole numbers, not '1,2.5'"
    ):
        parse_sweep_values("prompt-tuning", "num_virtual_tokens", "1,2.5")
    with pytest.raises(PeftlabError, match=r"Give at least one value of r to sweep"):
        parse_sweep_values("lora", "r", " ")
    with pytest.raises(PeftlabError, match=r"prompt-tuning: num virtual tokens must be at least 1, not 0"):
        next(
            run_sweep(None, easy_task(), None, "prompt-tuning", "num_virtual_tokens", [0, 5], [13], 4, TrainSettings())
        )
    with pytest.raises(PeftlabError, match=r"values of r repeat"):
        next(run_sweep(None, easy_task(), None, "lora", "r", [2, 2], [13], 4, TrainSettings()))


def test_run_record_is_json_with_settings_rows_and_curves(grid, tiny_causal):
    task, setup, events, rows, _ = grid
    frame = results_frame([r.values for r in rows])
    methods = [rows[1].trained.config, rows[2].trained.config]
    curves = [dataclasses.asdict(e) for e in events]
    # an infinite figure was written as a bare Infinity, which strict readers (jq, JSON.parse) refuse
    text = run_record(tiny_causal, task, setup, methods, TrainSettings(steps=3), frame, [*curves, {"loss": math.inf}])
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert record["curves"].pop() == {"loss": None}
    assert record["model"] == "tiny-llama" and record["task"] == "easy-sentiment" and record["templates"] == [TEMPLATE]
    assert [m["method"] for m in record["methods"]] == ["prompt-tuning", "lora"] and record["methods"][1]["r"] == 2
    assert record["train_settings"]["steps"] == 3
    # each run's seed is its row's own: its stored settings said "seed": 0 for a seed-13 run
    trained = [row.result for row in rows if row.result is not None and row.result.kind == "trained"]
    assert sorted(r.seed for r in trained) == [13, 13, 21, 21]
    assert all("seed" not in r.settings["trainer"] and r.settings["trainer"]["steps"] == 3 for r in trained)
    assert [r["method"] for r in record["results"]] == frame["method"].tolist()
    assert len(record["curves"]) == len(events)
    between = [c for c in record["curves"] if c["step"] % 3]
    assert between and all(c["dev_accuracy"] is None for c in between)  # NaN between evaluations -> null


# ------------------------------------------------------------------ validate_grid


@pytest.mark.parametrize(
    ("methods", "seeds", "shots", "message"),
    [
        ([], [13], [4], r"^Choose at least one method to train\.$"),
        (["lora"], [], [4], r"^Give at least one seed\.$"),
        (["lora"], [13], [], r"^Give at least one K \(examples per class\)\.$"),
        (
            ["lora"],
            [13],
            [13],
            r"^K=13 needs 26 examples of class 'negative' \(K for train and K for dev\) but the "
            r"training pool of 'easy-sentiment' \(the rows not held out for testing\) has only 24; use K <= 12\.$",
        ),
        (["lora"], [13], [4, 200], r"K=200 needs 400 examples"),
        (["lora"], [13], [0], r"K \(examples per class\) must be a whole number of at least 1, got 0"),
    ],
)
def test_validate_grid_rejects_bad_grids(methods, seeds, shots, message):
    configs = [method_config(m) for m in methods]
    with pytest.raises(PeftlabError, match=message):
        validate_grid(easy_task(), configs, seeds, shots)


def test_validate_grid_accepts_the_largest_k():
    validate_grid(easy_task(), [method_config("lora")], [13, 21], [12])


def test_run_grid_validates_before_any_work(tiny_causal):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    with pytest.raises(PeftlabError, match=r"K=50 needs 100 examples"):
        next(run_grid(tiny_causal, task, setup, [method_config("lora")], [13], [50], TrainSettings()))


def test_parse_list():
    assert parse_list("13, 21,42", int, "--seeds") == [13, 21, 42]
    assert parse_list("8,", int, "--shots") == [8]
    with pytest.raises(PeftlabError, match=r"^--seeds must be comma-separated whole numbers, not '13;21'\.$"):
        parse_list("13;21", int, "--seeds")


# ------------------------------------------------------------------ the compare command's bad input


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a model fails the test loudly instead of loading one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was rejected")

    monkeypatch.setattr(peftlab.models, "load_lm", refuse)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", ""], r"Choose at least one method"),
        (["--methods", " , "], r"Choose at least one method"),
        (["--steps", "0"], r"--steps must be at least 1, not 0"),
        (["--batch-size", "0"], r"--batch-size must be at least 1, not 0"),
        (["--eval-every", "-1"], r"--eval-every must be at least 1, not -1"),
        (["--methods", "lora", "--learning-rate", "lora=-1"], r"learning rate of lora must be above 0, not -1"),
        (["--methods", "lora", "--learning-rate", "lora=0"], r"learning rate of lora must be above 0, not 0"),
        (["--methods", "magic"], r"Unknown method 'magic'; choose from prompt-tuning, p-tuning"),
        (["--methods", "lora,magic"], r"Unknown method 'magic'"),
        (["--shots", "5000"], r"K=5000 needs 10000 examples of class"),
        (["--shots", "0"], r"at least 1, got 0"),
        (["--shots", "4,x"], r"--shots must be comma-separated whole numbers"),
        (["--seeds", ""], r"Give at least one seed"),
        (
            ["--learning-rate", "lora=abc", "--methods", "lora"],
            r"learning rate is given as method=number, not 'lora=abc'",
        ),
        (
            ["--learning-rate", "head=0.1", "--methods", "lora"],
            r"--learning-rate names head, which is not among --methods",
        ),
        (["--test-limit", "0"], r"--test-limit must be at least 1, not 0"),
        (["--steps", "many"], r"invalid int value: 'many'"),
        (["--select-by", "loss"], r"invalid choice: 'loss' \(choose from 'log-likelihood', 'accuracy'\)"),
        (["--template", "{text} no mask"], r"exactly one \{mask\}"),
    ],
)
def test_compare_bad_input_is_one_error_line_before_any_model_loads(capsys, no_model_loads, argv, message):
    started = time.perf_counter()
    code = main(["compare", *argv])
    seconds = time.perf_counter() - started
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert re.search(message, lines[0]), lines[0]
    assert seconds < 20  # validation only: no model, no training


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_training_commands_default_to_the_library_trainer_settings(command):
    from peftlab.cli import build_parser

    args = build_parser().parse_args([command])
    defaults = TrainSettings()
    assert (args.steps, args.batch_size, args.eval_every) == (defaults.steps, defaults.batch_size, defaults.eval_every)


def test_training_curves_show_dev_accuracy_with_its_log_likelihood_on_hover(grid):
    from dataclasses import asdict

    from peftlab.plots import training_curves

    _, _, events, _, _ = grid
    figure = training_curves(pd.DataFrame([asdict(e) for e in events]))
    dev_traces = [t for t in figure.data if t.name.endswith("dev acc")]
    assert len(dev_traces) == 4  # (prompt-tuning, lora) x seeds 13, 21, evaluated at step 3 only
    evaluated = [e for e in events if e.step == 3]
    assert [t.y[0] for t in dev_traces] == [e.dev_accuracy for e in evaluated]
    assert [t.customdata[0] for t in dev_traces] == [e.dev_log_likelihood for e in evaluated]


# ------------------------------------------------------------------ the compare and sweep commands, end to end


@pytest.fixture(scope="module")
def tiny_model_and_csv(tiny_causal, tmp_path_factory):
    """The tiny Llama saved as a local model folder, and the easy task as a CSV: what a user could pass the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    tiny_causal.model.save_pretrained(folder / "tiny-llama")
    tiny_causal.tokenizer.save_pretrained(folder / "tiny-llama")
    task = easy_task()
    pd.DataFrame(task.train + task.test).assign(label=lambda f: f["label"].map(dict(enumerate(LABELS)))).to_csv(
        folder / "easy.csv", index=False
    )
    return str(folder / "tiny-llama"), str(folder / "easy.csv")


def test_compare_command_writes_table_run_and_adapters(capsys, tmp_path, tiny_model_and_csv):
    model, csv = tiny_model_and_csv
    code = main(
        [
            "compare",
            "--model",
            model,
            "--task",
            csv,
            "--template",
            TEMPLATE,
            "--verbalizer",
            json.dumps(VERBALIZER),
            "--methods",
            "head,lora",
            "--shots",
            "2",
            "--seeds",
            "13",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--test-limit",
            "4",
            "--out",
            str(tmp_path / "r.csv"),
            "--run-json",
            str(tmp_path / "run.json"),
            "--save-adapters",
            str(tmp_path / "adapters"),
            "--json",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = json.loads(captured.out)
    assert [(r["method"], r["seed"]) for r in records] == [("zero-shot", None), ("head", 13), ("lora", 13)]
    # stdout holds the JSON alone, and the progress stays on stderr (with --json a 24-minute sweep said nothing)
    assert "head seed=13 step 2: loss " in captured.err and "lora K=2 seed=13: test accuracy " in captured.err
    assert pd.read_csv(tmp_path / "r.csv")["method"].tolist() == ["zero-shot", "head", "lora"]
    run = json.loads((tmp_path / "run.json").read_text())
    assert [m["method"] for m in run["methods"]] == ["head", "lora"] and len(run["curves"]) == 4
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["head-K2-seed13.zip", "lora-K2-seed13.zip"]
    assert f", saved as {tmp_path / 'adapters' / 'lora-K2-seed13.zip'}\n" in captured.err  # a rerun replaces it

    from peftlab.saving import load_trained
    from peftlab.tasks import load_task

    loaded = load_trained(tmp_path / "adapters" / "lora-K2-seed13.zip")  # loads the model folder it names
    scored = load_task(csv).test_subset(4)  # the texts the grid scored
    assert loaded.evaluate(scored)["accuracy"] == pytest.approx(records[2]["test_accuracy"])
    assert run["rows_scored"] == 4 and run["split"] == "test" and run["support"] == load_task(csv).support(scored)


def test_a_grid_refused_once_the_model_is_loaded_leaves_an_existing_results_file_as_it_was(
    capsys, tiny_model_and_csv, tmp_path
):
    """BitFit on a model without biases was refused after --out had been rewritten with an empty table: a results file
    pointed at by mistake lost its rows ("Written to keep.csv: the 0 runs finished before the stop")."""
    model, csv = tiny_model_and_csv
    out, run_json = tmp_path / "keep.csv", tmp_path / "keep.json"
    out.write_text("method,test_accuracy\nlora,0.8\n")
    run_json.write_text("{}")
    argv = ["compare", "--model", model, "--task", csv, "--template", TEMPLATE, "--verbalizer", json.dumps(VERBALIZER)]
    code = main(
        [*argv, "--methods", "lora,bitfit", "--shots", "2", "--seeds", "13", "--steps", "1"]
        + ["--out", str(out), "--run-json", str(run_json), "--no-store"]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith("error: BitFit trains only bias terms"), captured.err
    assert "Written to" not in captured.err
    assert out.read_text() == "method,test_accuracy\nlora,0.8\n" and run_json.read_text() == "{}"


def test_sweep_command_prints_one_row_per_value_and_seed(capsys, tiny_model_and_csv, tmp_path):
    """Each run's line names its value, and the table keeps whole numbers whole (they read "1.0, 2.0")."""
    model, csv = tiny_model_and_csv
    out = tmp_path / "sweep.csv"
    code = main(
        [
            "sweep",
            "--model",
            model,
            "--task",
            csv,
            "--template",
            TEMPLATE,
            "--verbalizer",
            json.dumps(VERBALIZER),
            "--method",
            "prompt-tuning",
            "--setting",
            "num_virtual_tokens",
            "--values",
            "1,2",
            "--shots",
            "2",
            "--seeds",
            "13,21",
            "--steps",
            "1",
            "--test-limit",
            "4",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = pd.read_csv(out, dtype=str, keep_default_na=False).to_dict("records")
    assert [(r["method"], r["num_virtual_tokens"], r["seed"]) for r in records] == [
        ("zero-shot", "", ""),
        ("prompt-tuning", "1", "13"),
        ("prompt-tuning", "1", "21"),
        ("prompt-tuning", "2", "13"),
        ("prompt-tuning", "2", "21"),
    ]
    runs = [line.split(":")[0].strip() for line in captured.err.splitlines() if "test accuracy" in line]
    assert runs == [
        "zero-shot",  # it trains on nothing: no K, no seed
        *[f"prompt-tuning num_virtual_tokens={v} K=2 seed={seed}" for v in (1, 2) for seed in (13, 21)],
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "magic"], r"Unknown method 'magic'"),
        (["--setting", "init"], r"prompt-tuning has no numeric setting 'init' to sweep"),
        (["--values", "1,x"], r"values of num_virtual_tokens must be comma-separated whole numbers"),
        (["--values", "0,5"], r"num virtual tokens must be at least 1, not 0"),
        (["--shots", "5000"], r"K=5000 needs 10000 examples"),
        (["--steps", "0"], r"--steps must be at least 1, not 0"),
    ],
)
def test_sweep_bad_input_is_one_error_line_before_any_model_loads(capsys, no_model_loads, argv, message):
    code = main(["sweep", *argv])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), captured.err


def test_virtual_tokens_on_a_model_with_64_positions_leave_room_for_long_texts(tmp_path):
    """A GPT-2-style model learns 64 positions; 20 virtual tokens plus a long text would index past them."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from peftlab.models import load_lm
    from tests.conftest import _causal_tokenizer

    tokenizer = _causal_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    lm = load_lm(str(tmp_path), dtype="fp32", device="cpu")
    assert lm.max_length == 64
    long = " ".join(["the film was good and the plot was great"] * 12)
    rows = [{"text": f"{long} {i}", "label": i % 2} for i in range(16)]
    task = Task("long", ["negative", "positive"], ["text"], train=rows[:12], test=rows[12:])
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    methods = [method_config(name, num_virtual_tokens=20) for name in ("prompt-tuning", "p-tuning", "prefix-tuning")]
    items = list(run_grid(lm, task, setup, methods, [13], [2], TrainSettings(steps=2, eval_every=1), test_limit=4))
    results = [i.values for i in items if isinstance(i, GridRow)]
    assert [r["method"] for r in results] == ["zero-shot", "prompt-tuning", "p-tuning", "prefix-tuning"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in results)
    with pytest.raises(PeftlabError, match=r"^50 virtual tokens of prompt-tuning leave no room in .*64-token input"):
        next(
            run_grid(
                lm,
                task,
                setup,
                [method_config("prompt-tuning", num_virtual_tokens=50)],
                [13],
                [2],
                TrainSettings(steps=1),
            )
        )


def test_a_grid_of_several_k_names_each_run_s_events_with_its_k(tiny_causal):
    """The training curves of LoRA at K=2 and K=3 were one line that went back to step 1 half-way: the events carried
    the method's name alone. With one K they keep it; the rows keep the method's own name whatever the K."""
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    settings = TrainSettings(steps=1, batch_size=2, eval_every=1)
    items = list(run_grid(tiny_causal, task, setup, [method_config("lora", r=2)], [13], [2, 3], settings, test_limit=2))
    assert [i.method for i in items if isinstance(i, TrainEvent)] == ["lora, K=2", "lora, K=3"]
    assert [(r.values["method"], r.values["K"]) for r in items if isinstance(r, GridRow)][1:] == [
        ("lora", 2),
        ("lora", 3),
    ]
