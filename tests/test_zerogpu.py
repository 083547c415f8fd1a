"""ZeroGPU's calls simulated on the CPU: a grid and PET split into one GPU call per run fit a short cap, give the
numbers of an unsplit run, and a run longer than its call is one sentence; the decorator is effect-free here."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from peftlab import zerogpu
from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, run_grid
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.models import load_lm
from peftlab.tuning import TrainSettings
from peftlab.zerogpu import MARGIN, MIN_DURATION_S, GPUCalls
from tests.test_backends import (
    TIMING,
    soft_prompts_tab_trains_elsewhere_and_classifies_with_what_was_saved,
    trained_rows,
)
from tests.test_compare import TEMPLATE, VERBALIZER, easy_task
from tests.test_pet import run_tiny

SETTINGS = TrainSettings(steps=3, batch_size=4, eval_every=3)


@pytest.fixture(scope="module")
def folder_lm(tiny_causal_folder):
    """The tiny Llama as a GPU call loads it back by name (from the process's model cache)."""
    return load_lm(tiny_causal_folder, dtype="fp32")


def grid(lm, backend=None, stop=None):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    methods = [method_config("prompt-tuning", num_virtual_tokens=4), method_config("lora", r=2, learning_rate=1e-2)]
    return run_grid(lm, task, setup, methods, [13, 21], [4], SETTINGS, 6, stop, backend)


def test_off_zero_gpu_the_decorator_returns_the_function_itself(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.on_zero_gpu()
    assert zerogpu.gpu_call is zerogpu._in_gpu_call  # spaces.GPU is effect-free off ZeroGPU


def test_a_grid_in_one_gpu_call_per_run_fits_a_short_cap_and_gives_the_unsplit_rows(folder_lm, tmp_path):
    local = list(grid(folder_lm))
    calls = GPUCalls(cap_s=30, first_s=30, save_dir=str(tmp_path))
    split = list(grid(folder_lm, calls))

    assert len(calls.calls) == 4  # one call per run, never the whole grid in one
    assert all(took <= asked <= 30 for asked, took in calls.calls), calls.calls
    # after the first call each asks for MARGIN x the longest before it, at least MIN_DURATION_S
    longest = calls.calls[0][1]
    assert calls.calls[1][0] == pytest.approx(min(30, max(MIN_DURATION_S, MARGIN * longest)))
    local_rows, split_rows = trained_rows(local), trained_rows(split)
    assert sorted(split_rows) == sorted(local_rows)
    for key, row in local_rows.items():
        other = split_rows[key]
        assert {k: v for k, v in other.values.items() if k not in TIMING} == {
            k: v for k, v in row.values.items() if k not in TIMING
        }
        assert other.result.predictions == row.result.predictions
        assert other.trained is None and other.saved.startswith(str(tmp_path))  # the weights come back as a file


def test_a_run_longer_than_its_call_is_one_sentence(folder_lm):
    calls = GPUCalls(cap_s=1e-4, first_s=1e-4)  # a cap no run can fit: ZeroGPU would abort the call
    with pytest.raises(PeftlabError, match=r"^A training run took \d+ s of GPU time, past the 0 s its call asked for"):
        list(grid(folder_lm, calls))
    assert len(calls.calls) == 1  # it stops at the first call that overran


def test_stop_takes_effect_between_calls(folder_lm):
    stop = threading.Event()
    rows = []
    for item in grid(folder_lm, GPUCalls(), stop):
        if isinstance(item, GridRow) and item.values["seed"]:
            rows.append(item)
            stop.set()
    # the call in progress runs to its end (no flag crosses into it); no other call starts
    assert [r.values["status"] for r in rows] == ["done"]


def test_pet_s_pattern_models_in_gpu_calls_give_the_unsplit_numbers(folder_lm, tiny_task):
    local = run_tiny(folder_lm, tiny_task)[-1]
    calls = GPUCalls(cap_s=30, first_s=30)
    split = run_tiny(folder_lm, tiny_task, backend=calls)[-1]
    assert len(calls.calls) == 4  # two patterns x (PET + one iPET generation)
    assert split.summary() | {"seconds": 0} == local.summary() | {"seconds": 0}
    assert np.array_equal(split.soft_labels, local.soft_labels)


def test_on_zero_gpu_the_soft_prompts_tab_trains_each_run_in_a_gpu_call(tiny_causal_folder, easy_csv, monkeypatch):
    from peftlab.ui.common import runs_backend

    monkeypatch.setenv("SPACES_ZERO_GPU", "true")  # what a ZeroGPU Space sets
    assert isinstance(runs_backend(), GPUCalls)
    soft_prompts_tab_trains_elsewhere_and_classifies_with_what_was_saved(tiny_causal_folder, easy_csv, monkeypatch)
