"""Every script in examples/ runs with tiny settings and prints what its docstring promises (so they never rot)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.slow


def run_example(name: str, *args: str) -> str:
    """The script's stdout; its stderr in the failure message when it exits with an error."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_has_a_test_here():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {
        "cloze_calibration_ensemble.py",
        "autoprompt_search.py",
        "fewshot_compare.py",
        "rlhf_pipeline.py",
        "custom_csv_task.py",
    }


def test_cloze_example_prints_the_library_accuracy_for_each_calibration():
    from peftlab.cloze import CALIBRATIONS, evaluate
    from peftlab.models import load_lm
    from peftlab.tasks import load_task

    out = run_example("cloze_calibration_ensemble.py", "--texts", "20")
    lm, task = load_lm("smollm2-135m"), load_task("rt-sentiment")
    verbalizer = {"negative": ["negative", "bad"], "positive": ["positive", "good"]}
    for calibration in CALIBRATIONS:
        accuracy = evaluate(lm, task, ["Review: {text}\nSentiment:{mask}"], verbalizer, calibration, limit=20).accuracy
        assert f"one template, calibration {calibration:<10} accuracy {accuracy:.1%}" in out, out
    # the texts are scored once: the first line's seconds are the scoring's, the others reuse its scores
    costs = re.findall(r"^one template, .*\((.*)\)$", out, re.MULTILINE)
    assert re.fullmatch(r"scored in \d+\.\d s", costs[0]) and costs[1:] == ["the same scores, calibrated"] * 2, out
    assert re.search(r"two-template ensemble, calibration mean  accuracy \d+\.\d% on 20 test texts", out), out


def test_custom_csv_example_scores_every_row_of_the_example_file():
    out = run_example("custom_csv_task.py")
    assert "labels ['question', 'statement'], 40 texts to score" in out, out
    assert re.search(r"zero-shot accuracy \d+\.\d% on 40 texts with calibration mean", out), out


def test_autoprompt_example_searches_and_compares_with_the_manual_template():
    out = run_example("autoprompt_search.py", "--iterations", "2", "--texts", "20")
    lines = re.findall(r"^(\w+(?: \d+)?): trigger '[^']+', dev accuracy \d+\.\d%$", out, re.MULTILINE)
    assert lines == ["start", "iteration 1", "iteration 2"], out  # the starting trigger was "iteration 0"
    assert re.search(r"test accuracy \d+\.\d% with the trigger, \d+\.\d% without", out), out


def test_fewshot_example_trains_each_method_and_summarises():
    out = run_example("fewshot_compare.py", "--k", "2", "--seeds", "13", "--steps", "2", "--texts", "20")
    assert re.search(r"^zero-shot +: test accuracy \d+\.\d%$", out, re.MULTILINE), out  # it said "seed None"
    for method in ("prompt-tuning", "lora", "head"):
        assert re.search(rf"^{method} +seed 13: test accuracy \d+\.\d%$", out, re.MULTILINE), out
        assert re.search(rf"^  {method} seed 13 step 1/2: loss \d+\.\d{{3}}$", out, re.MULTILINE), out  # training
    assert "accuracy_mean" in out


def test_rlhf_example_runs_both_routes_on_a_tiny_model(tiny_causal_folder):
    out = run_example(
        "rlhf_pipeline.py",
        "--model",
        tiny_causal_folder,
        *("--labeler", "concise"),  # a random tiny model's samples have no sentiment words: VADER ties them all
        *("--sft-steps", "2", "--ppo-steps", "1", "--dpo-steps", "1", "--comparisons", "6", "--prompts", "2"),
    )
    assert re.search(r"reward model held-out pair accuracy \d+\.\d% \(\d+ pairs\)", out), out
    for route in ("SFT", "PPO", "DPO"):
        assert re.search(rf"^{route}: concise score [+-]\d\.\d{{3}}", out, re.MULTILINE), out
