"""Benchmarks report what finished when a later part fails: a seed or a task can run for an hour."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from benchmarks import common


def test_a_failing_run_is_an_error_record_and_the_next_run_still_runs():
    def run(name):
        if name == "b":
            raise ValueError("bad things")
        return {"run": name, "accuracy": 0.5}

    records = common.kept_runs(["a", "b", "c"], run)
    assert records == [
        {"run": "a", "accuracy": 0.5},
        {"run": "b", "error": "ValueError: bad things"},
        {"run": "c", "accuracy": 0.5},
    ]
    assert common.exit_code(records) == 1 and common.exit_code(records[:1]) == 0


def test_ctrl_c_ends_the_runs_keeping_those_finished():
    def run(name):
        if name == "b":
            raise KeyboardInterrupt
        return {"run": name}

    assert common.kept_runs(["a", "b", "c"], run) == [{"run": "a"}, {"run": "b", "error": common.STOPPED}]
    # a run that caught Ctrl-C itself (to report its finished seeds) ends the runs too
    assert common.kept_runs(["a", "b"], lambda name: {"run": name, "error": common.STOPPED}) == [
        {"run": "a", "error": common.STOPPED}
    ]


def test_items_until_failure_end_as_if_exhausted_with_the_error_kept():
    def items():
        yield 1
        yield 2
        raise RuntimeError("diverged")

    failure: dict = {}
    assert list(common.until_failure(items(), failure)) == [1, 2]
    assert failure == {"error": "RuntimeError: diverged"}
    failure = {}
    assert list(common.until_failure(iter([1]), failure)) == [1] and failure == {}


def pet_fewshot_run(monkeypatch, fake_run, spec: str, seeds: str) -> dict:
    """pet_fewshot's record of `spec` (task:K) with `fake_run` for `pet.pet_run` and two patterns."""
    from benchmarks import pet_fewshot

    monkeypatch.setattr(pet_fewshot, "pet_run", fake_run)
    monkeypatch.setattr(pet_fewshot, "load_task", lambda name: None)
    monkeypatch.setattr(pet_fewshot, "default_patterns", lambda name: (["p1", "p2"], {"a": ["x"]}))
    monkeypatch.setattr(pet_fewshot, "pattern_prompts", lambda *args: None)
    args = argparse.Namespace(unlabelled=10, seeds=seeds, ipet_generations=0, lm_loss_weight=0.0, test_limit=5)
    return pet_fewshot.one_run(None, spec, args, pet_fewshot.TrainSettings())


def test_pet_fewshot_reports_the_seeds_before_the_one_that_failed(monkeypatch, capsys):
    """A NaN in the third seed's pattern model printed nothing of the first two seeds' 40 minutes."""
    from peftlab.pet import PETResult

    def fake_run(lm, task, prompts, config, settings):
        for seed, accuracies in zip(config.seeds[:2], ([0.8, 0.7], [0.6, 0.9])):
            yield PETResult(seed, ["p1", "p2"], [0.5, 0.5], accuracies, 0.85, 0.9, np.zeros((2, 2)), 0.8, None)
        raise ValueError("the loss is NaN")

    record = pet_fewshot_run(monkeypatch, fake_run, "rt-sentiment:16", "13,21,42")
    assert record["error"] == "ValueError: the loss is NaN"
    assert [seed["seed"] for seed in record["seeds"]] == [13, 21]
    assert record["summary"]["mean_single_pattern"] == {"mean": 0.75, "std": 0.0}
    assert record["summary"]["pet"] == {"mean": 0.9, "std": 0.0}
    assert record["targets"]["within_30_minutes"] is None  # a run cut short says nothing of the time target
    json.dumps(record)  # still one valid JSON record
    assert "the loss is NaN" in capsys.readouterr().err  # the traceback, for the engineer


def test_pet_fewshot_with_no_seed_finished_reports_the_error_alone(monkeypatch):
    def fake_run(*args):
        raise KeyboardInterrupt
        yield

    record = pet_fewshot_run(monkeypatch, fake_run, "bbc-topic:10", "13")
    assert record["run"] == "bbc-topic:10" and record["error"] == common.STOPPED and "seeds" not in record


@pytest.mark.parametrize("failing", ["zero-shot", "lora"])
def test_standard_comparison_keeps_the_methods_before_the_one_that_failed(monkeypatch, tmp_path, failing):
    from benchmarks import standard_comparison
    from peftlab.standard import StandardEvent
    from peftlab.store import ResultRow, ResultStore
    from peftlab.tasks import Task

    texts = [{"text": f"text {i}", "label": i % 2} for i in range(4)]
    task = Task("t", ["negative", "positive"], ["text"], train=[], test=texts)

    def row(method, predicted):
        return ResultRow.scored("trained", "m", task, method, {}, texts, predicted, seed=13, k=16)

    def fake_standard(*args):
        yield StandardEvent(step=1, elapsed=0.0, method="zero-shot", seed=None, runs=3)
        yield row("zero-shot", [0, 1, 0, 0])
        yield StandardEvent(step=2, elapsed=0.0, method="lora", seed=13, runs=3)
        if failing == "lora":
            yield row("lora", [0, 1, 0, 1])
            yield StandardEvent(step=3, elapsed=0.0, method="lora", seed=21, runs=3)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(standard_comparison, "estimated", lambda *args: (None,) * 5 + ({"zero-shot": 10.0},))
    monkeypatch.setattr(standard_comparison, "run_standard", fake_standard)
    store = ResultStore(tmp_path / "s.sqlite")
    record = standard_comparison.one_task("t", store, standard_comparison.StandardConfig(), None)
    assert record["error"] == "RuntimeError: out of memory" and record["within_target"] is None
    assert [line["method"] for line in record["table"]] == ["zero-shot"] + (["lora"] if failing == "lora" else [])
    json.dumps(record)


def grid_row(method, seed, accuracy):
    from peftlab.compare import GridRow

    values = dict(method=method, K=16, seed=seed, test_accuracy=accuracy, macro_f1=accuracy, trainable_params=10)
    return GridRow(values | dict(trainable_share=0.1, train_seconds=1.0, steps=3, status="done"))


@pytest.mark.parametrize("finished", [0, 1, 2])
def test_fewshot_compare_keeps_the_grid_rows_before_the_run_that_failed(monkeypatch, finished):
    from benchmarks import fewshot_compare

    def fake_grid(*args):
        yield from [grid_row("zero-shot", None, 0.7), grid_row("lora", 13, 0.8)][:finished]
        raise RuntimeError("out of memory")

    monkeypatch.setattr(fewshot_compare, "ClozeSetup", type("S", (), {"build": staticmethod(lambda *a, **k: None)}))
    monkeypatch.setattr(fewshot_compare, "run_grid", fake_grid)
    args = argparse.Namespace(methods="lora", seeds="13", shots=16, test_limit=10)
    record = fewshot_compare.grid_benchmark(None, None, args)
    assert record["error"] == "RuntimeError: out of memory"
    assert [line["method"] for line in record["rows"]] == ["zero-shot", "lora"][:finished]
    if finished == 2:
        assert record["gain_points_per_prompt_based_method"] == {"lora": 10.0}
    assert list(record["targets"].values())[0] is None  # a grid that failed did not run whole
    json.dumps(record)


def test_fewshot_compare_reports_a_finished_grid_without_prompt_based_methods(monkeypatch):
    """`--methods head` has no prompt-based method to compare with zero-shot: its figures were dropped."""
    from benchmarks import fewshot_compare

    def fake_grid(*args):
        yield from (grid_row("zero-shot", None, 0.7), grid_row("head", 13, 0.8))

    monkeypatch.setattr(fewshot_compare, "ClozeSetup", type("S", (), {"build": staticmethod(lambda *a, **k: None)}))
    monkeypatch.setattr(fewshot_compare, "run_grid", fake_grid)
    args = argparse.Namespace(methods="head", seeds="13", shots=16, test_limit=10)
    record = fewshot_compare.grid_benchmark(None, None, args)
    assert "error" not in record and [line["method"] for line in record["summary"]] == ["zero-shot", "head"]
    assert record["grid_seconds"] >= 0 and list(record["targets"].values()) == [True]


def test_the_floor_prices_a_token_with_gradients_at_twice_a_forward_and_every_weight_at_three_times():
    from collections import Counter

    from benchmarks.floor import floor

    weights = 10**11  # 2 W FLOPs forward: 0.2 TFLOP a token
    counts = {"lora": Counter(forward=10, with_gradients=4), "full": Counter(with_gradients=4)}
    record = floor(counts, weights, gflops=100)
    # LoRA: 10 tokens x 2 W + 4 x (2 W forward + 2 W backward) = 36 W; full: 4 x (2 W + 4 W) = 24 W
    assert record["phases"]["lora"]["tflop"] == 3.6 and record["phases"]["full"]["tflop"] == 2.4
    assert record["tflop"] == 6.0 and record["floor_minutes"] == 1.0  # 6 TFLOP at 100 GFLOP/s: 60 s
    assert record["phases"]["lora"]["floor_seconds"] == 36.0


def test_the_token_count_counts_every_input_position_of_a_forward_pass_and_whether_it_keeps_gradients(tiny_causal):
    from benchmarks.floor import TokenCount

    ids = torch.ones(3, 5, dtype=torch.long)
    with TokenCount("scoring") as count:
        with torch.no_grad():
            tiny_causal.model(input_ids=ids)  # 3 x 5 positions without gradients
        count.phase = "training"
        tiny_causal.model(input_ids=ids[:2, :4])  # 2 x 4 with
        generated = tiny_causal.model.generate(ids[:1], max_new_tokens=3, min_new_tokens=3, do_sample=False)
    tiny_causal.model(input_ids=ids)  # after the block: not counted
    assert generated.shape[1] == 8
    counts = count.tokens()
    # the first generation step reads the 5 prompt positions, each later one the 1 new token from the cache
    assert counts["scoring"] == {"forward": 15} and counts["training"] == {"with_gradients": 8, "forward": 5 + 1 + 1}


def test_the_rlhf_benchmark_counts_a_call_towards_the_stage_running_at_its_time():
    from benchmarks.floor import TokenCount
    from benchmarks.rlhf_pipeline import route_totals, stage_floors

    count = TokenCount()
    count.calls = [(100.5, "set-up", 10, True), (101.2, "set-up", 7, False), (102.9, "set-up", 4, False)]
    stage_seconds = {"sft": 1.0, "comparisons": 0.5, "evaluation": 1.5}  # from 100.0: ends at 101.0, 101.5, 103.0
    record = stage_floors(count, 100.0, stage_seconds, weights=10**11, gflops=100)
    assert {stage: dict(tokens) for stage, tokens in record["phases"].items()} == {
        "sft": {"with_gradients": 10, "tflop": 4.0, "floor_seconds": 40.0},  # 10 tokens x (2 + 2) x 1e11 FLOPs
        "comparisons": {"forward": 7, "tflop": 1.4, "floor_seconds": 14.0},
        "evaluation": {"forward": 4, "tflop": 0.8, "floor_seconds": 8.0},
    }
    stages = {"sft": 80.0, "comparisons": 14.0, "reward": 3.0, "ppo": 20.0, "dpo": 9.0, "evaluation": 6.0}
    assert route_totals(stages, dpo_share=0.5) == (80 + 14 + 3 + 20 + 4, 7 + 9 + 4)
