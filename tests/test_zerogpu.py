"""ZeroGPU's calls simulated on the CPU: a grid and PET split into one GPU call per run fit a short cap, give the
numbers of an unsplit run, and a run longer than its call is one sentence; every tab's model work goes through GPU
calls whose arguments and items are pickled as on a Space (the `zero_gpu` fixture) and gives the numbers it gives
without them; the decorator is effect-free here."""

from __future__ import annotations

import pickle
import re
import threading
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

from peftlab import zerogpu
from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, run_grid
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.models import load_lm
from peftlab.tuning import TrainSettings
from peftlab.zerogpu import MARGIN, MIN_DURATION_S, CallTimes, GPUCalls
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


ZERO_GPU_APP = """
import os, sys, anyio
os.environ["SPACES_ZERO_GPU"] = "true"
os.environ.setdefault("SPACES_ZERO_DEVICE_API_URL", "http://127.0.0.1:9")
import spaces  # first, as app.py imports it: it patches torch for the whole process
import torch
from peftlab.models import default_device, load_lm

def press():  # as gradio runs a press's handler: in a worker thread of anyio's pool
    lm = load_lm(sys.argv[1])
    return lm.device.type, lm.__reduce__()[1][2], torch.cuda.is_available(), lm.dtype

print("app", *anyio.run(anyio.to_thread.run_sync, press))
read, write = os.pipe()
if os.fork() == 0:  # as spaces forks a GPU call's worker from the app's process
    os.write(write, str(default_device()).encode())
    os._exit(0)
os.wait()
print("worker", os.read(read, 100).decode())
"""


def test_on_zero_gpu_a_press_loads_its_model_on_the_cpu_and_a_gpu_call_s_worker_on_its_gpu(tiny_causal_folder):
    """spaces emulates CUDA only in the thread that imported it, yet says CUDA is available everywhere: every press,
    whose handler runs in a worker thread, failed loading its model on "cuda" ("Low-level CUDA init (...) reached"),
    shown as a fault of the app (a review's finding, with spaces 0.51.3 as a ZeroGPU Space imports it)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", ZERO_GPU_APP, tiny_causal_folder], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # "auto" is the dtype of the GPU the model's calls run it on (the CPU's put their scoring in fp32)
    assert done.stdout.splitlines()[-2:] == ["app cpu None True torch.bfloat16", "worker cuda"]


def test_a_gpu_call_s_job_and_model_cross_as_bytes_read_inside_the_call(folder_lm, zero_gpu, monkeypatch):
    """spaces reads a call's arguments in its worker before it makes the GPU real: a model crossing as an argument
    was loaded there, reached the emulated CUDA and killed the worker, every call of every tab (a review's finding).
    The call gets its duration and bytes, and the model is read inside it."""
    run, seen = zerogpu.gpu_call, []

    def typed(*arguments):
        seen.append(tuple(type(a) for a in arguments))
        yield from run(*arguments)

    monkeypatch.setattr(zerogpu, "gpu_call", typed)
    assert zerogpu.call_on_gpu(getattr, folder_lm, "name", kind="name") == folder_lm.name
    assert [types[1:] for types in seen] == [(bytes,)]  # after the duration asked


def test_off_zero_gpu_the_decorator_returns_the_function_itself(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert not zerogpu.on_zero_gpu()
    assert zerogpu.gpu_call is zerogpu._in_gpu_call  # spaces.GPU is effect-free off ZeroGPU


def test_a_grid_in_one_gpu_call_per_run_fits_a_short_cap_and_gives_the_unsplit_rows(folder_lm, tmp_path, zero_gpu):
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


def test_pet_s_pattern_models_in_gpu_calls_give_the_unsplit_numbers(folder_lm, tiny_task, zero_gpu, monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU")
    local = run_tiny(folder_lm, tiny_task)[-1]
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    calls = GPUCalls(cap_s=30, first_s=30)
    split = run_tiny(folder_lm, tiny_task, backend=calls)[-1]
    assert len(calls.calls) == 4  # two patterns' models x (PET + one iPET generation), one call each
    assert len(zero_gpu) == 6  # and a call of its own for each distilled classifier (PET's, iPET's)
    assert split.summary() | {"seconds": 0} == local.summary() | {"seconds": 0}
    assert np.array_equal(split.soft_labels, local.soft_labels)


def test_on_zero_gpu_the_soft_prompts_tab_trains_each_run_in_a_gpu_call(
    tiny_causal_folder, easy_csv, monkeypatch, zero_gpu
):
    from peftlab.ui.common import runs_backend

    monkeypatch.setattr("peftlab.ui.estimates._COSTS", {})  # measured again, in a GPU call
    assert isinstance(runs_backend(), GPUCalls)
    soft_prompts_tab_trains_elsewhere_and_classifies_with_what_was_saved(tiny_causal_folder, easy_csv, monkeypatch)
    # measuring a text and a step, the zero-shot row (it scored on the app's CPU), the one run, classifying the text
    assert len(zero_gpu) == 4


def test_each_job_writes_its_trained_methods_into_a_folder_of_its_own_gone_when_it_ends(
    zero_gpu, tmp_path, monkeypatch
):
    """A grid and a sweep of one session running at once wrote `<method>-K<k>-seed<s>.zip` into one folder: the sweep's
    could replace the grid's before the grid loaded it, and the picker offered it under the grid's name."""
    from peftlab.ui.common import job_backend
    from peftlab.ui.sessions import Session

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    session = Session("two-jobs")
    with job_backend(session) as grid, job_backend(session) as sweep:
        assert grid.save_dir != sweep.save_dir
        for backend in (grid, sweep):
            Path(backend.save_dir).mkdir(parents=True)
            (Path(backend.save_dir) / "lora-K16-seed13.zip").write_text(backend.save_dir)
    assert not Path(grid.save_dir).exists() and not Path(sweep.save_dir).exists()
    monkeypatch.delenv("SPACES_ZERO_GPU")
    with job_backend(session) as here:
        assert here is None  # runs in this process: nothing is saved


def test_a_sweep_s_settings_of_an_unknown_method_are_one_sentence():
    """The Soft prompts tab's `sweep_settings` endpoint let a PeftlabError through: a bare "Error" to an API client."""
    from peftlab.ui.soft_prompts_tab import setting_choices

    with pytest.raises(gr.Error) as raised:
        setting_choices("nonsense")
    assert raised.value.message.startswith("Unknown method 'nonsense'")


VERBALIZER_LINES = "negative: negative\npositive: positive"


def off_zero_gpu_in_its_dtype(monkeypatch) -> None:
    """Off ZeroGPU from here on, with "auto" the dtype it meant on ZeroGPU's cards (bf16; `models._cache_key`): on a
    CPU without bf16 "auto" means fp32, and the same job's numbers differ by bf16's rounding (0.806 against 0.814)."""
    monkeypatch.delenv("SPACES_ZERO_GPU")
    monkeypatch.setattr("peftlab.models.cpu_supports_bf16", lambda: True)


def cloze_form(model: str, upload: str) -> dict:
    form = dict(model=model, task="", upload=upload, text_column="text", label_column="label")
    form |= dict(templates=TEMPLATE, verbalizer=VERBALIZER_LINES, calibration="mean")
    return form | dict(shots_in_context=0, seed=13, limit=6, batch_size=4, text="the movie was great")


def test_the_cloze_tab_classifies_and_evaluates_in_gpu_calls_with_the_numbers_it_gives_without(
    tiny_causal_folder, easy_csv, zero_gpu, monkeypatch
):
    from peftlab.ui.cloze_tab import classify, run_evaluation

    form = cloze_form(tiny_causal_folder, easy_csv)

    def evaluated() -> tuple:  # the predictions file read at once: the session's next download of it replaces it
        summary, plot, errors, predictions = run_evaluation(None, **form)
        return summary, plot, errors, open(predictions).read()

    on_space = classify(**form), evaluated()
    assert zero_gpu == [zerogpu.DEFAULT_DURATION_S] * 2  # one call each; the first of a kind asks the default
    again = evaluated()
    first = zerogpu._PACES[f"cloze-evaluate:{tiny_causal_folder}:0"].seen[:1]  # the call before: 6 texts
    assert zero_gpu[2] == pytest.approx(max(MIN_DURATION_S, MARGIN * CallTimes(first).seconds(6)))  # sized by it
    off_zero_gpu_in_its_dtype(monkeypatch)
    here = classify(**form), evaluated()

    for (sentence, bars, tokens), (other_sentence, other_bars, other_tokens) in [(on_space[0], here[0])]:
        assert list(bars.data[0].x) == pytest.approx(list(other_bars.data[0].x), abs=1e-6)
        assert tokens.equals(other_tokens) and sentence == other_sentence
    for result in (on_space[1], again):
        summary, _, errors, predictions = result
        assert summary.split(" · ")[:3] == here[1][0].split(" · ")[:3]  # accuracy, macro-F1, texts scored
        assert errors.equals(here[1][2])
        assert predictions == here[1][3]


def test_on_zero_gpu_a_job_longer_than_any_call_is_refused_before_it_starts(tiny_causal_folder, easy_csv, zero_gpu):
    from peftlab.ui.cloze_tab import run_evaluation

    form = cloze_form(tiny_causal_folder, easy_csv)
    zerogpu._PACES[f"cloze-evaluate:{tiny_causal_folder}:0"] = CallTimes([(6, 600.0)])  # as an earlier call of 6 texts
    with pytest.raises(gr.Error) as refused:
        run_evaluation(None, **form)
    assert refused.value.message == (
        "Scoring 6 texts would take about 600 s of GPU time, more than one GPU call may safely ask for on this Space "
        "(150 s of its 300 s); score fewer test texts (a limit) or fewer templates."
    )
    assert zero_gpu == []  # no call was made


def test_the_autoprompt_tab_searches_in_one_gpu_call_with_the_trigger_it_finds_without(
    tiny_causal_folder, easy_csv, zero_gpu, monkeypatch
):
    from peftlab.ui.autoprompt_tab import run_search

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    form = dict(model=tiny_causal_folder, task="", upload=easy_csv, text_column="text", label_column="label")
    form |= dict(template="{text} [T] [T] {mask}", verbalizer=VERBALIZER_LINES)
    form |= dict(search_words=True, iterations=2, candidates=4, batch_size=4, train_size=8, positions="round-robin")
    form |= dict(dev_check=True, seed=13, test_limit=6)
    on_space = list(run_search(None, **form))
    assert len(zero_gpu) == 2  # the label-word search, then the trigger search with its iterations streamed
    off_zero_gpu_in_its_dtype(monkeypatch)
    here = list(run_search(None, **form))
    assert len(on_space) == len(here)
    for space_update, local_update in zip(on_space[1:], here[1:]):
        assert space_update[0].split(" · ")[0] == local_update[0].split(" · ")[0]  # iteration or test accuracy
        assert space_update[3:] == local_update[3:]  # the trigger found so far and the verbalizer searched


def test_the_pet_tab_runs_in_gpu_calls_and_classifies_with_the_classifier_it_distilled(
    tiny_causal_folder, easy_csv, zero_gpu, monkeypatch
):
    from peftlab.ui.pet_tab import run_pet
    from peftlab.ui.soft_prompts_tab import classify_with

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    monkeypatch.setattr("peftlab.ui.estimates._COSTS", {})  # measured again, in a GPU call
    form = dict(model=tiny_causal_folder, task="", upload=easy_csv, text_column="text", label_column="label")
    form |= dict(patterns=f"{TEMPLATE}\n---\n{{text}} It was{{mask}}.", verbalizer=VERBALIZER_LINES)
    form |= dict(unlabelled_file=None, shots=2, seeds="13", unlabelled=6, ipet_generations=0, test_limit=6)
    form |= dict(method="lora", temperature=2.0, weighting="train-accuracy", distil_steps=2, distil_lora=True)
    form |= dict(growth=5.0, ipet_share=0.25, lm_loss_weight=0.0, steps=2)
    *_, (status, table, _, _, picker) = run_pet(None, **form)
    assert re.match(r"1 of 1 seeds finished in [\d.]+ (s|min) \(estimated [\d.]+ (s|min)\)\.", status), status
    # measuring a text and a step, each pattern's model, the distilled classifier: every one in a GPU call
    assert len(zero_gpu) == 4
    on_space = classify_with(picker.value, "the movie was great", None).data[0].x
    monkeypatch.delenv("SPACES_ZERO_GPU")
    *_, (_, here, _, _, _) = run_pet(None, **form)
    assert table.equals(here)  # every pattern's, the ensemble's and PET's accuracy
    assert list(on_space) == pytest.approx(list(classify_with(picker.value, "the movie was great", None).data[0].x))


def test_the_standard_comparison_runs_every_method_in_gpu_calls_with_the_rows_it_gives_without(
    tiny_causal_folder, easy_csv, zero_gpu, monkeypatch
):
    from peftlab.standard import AUTOPROMPT, IN_CONTEXT, PET, ZERO_SHOT
    from peftlab.ui.compare_tab import run_standard_comparison

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    monkeypatch.setattr("peftlab.ui.estimates._COSTS", {})  # measured again, in a GPU call
    form = dict(model=tiny_causal_folder, task="", upload=easy_csv, text_column="text", label_column="label")
    form |= dict(template=TEMPLATE, verbalizer=VERBALIZER_LINES, methods=[ZERO_SHOT, IN_CONTEXT, AUTOPROMPT])
    form["methods"] += ["lora", PET]
    form |= dict(shots=2, seeds="13", test_limit=6, demonstrations_per_class=1, autoprompt_iterations=1, steps=2)
    *_, (status, table) = run_standard_comparison(None, **form)
    # PET gives two rows, its ensemble's and its classifier's, from one run
    assert re.match(r"5 runs finished in [\d.]+ (s|min) \(estimated [\d.]+ (s|min)\)\.", status), status
    # measuring; zero-shot, in-context, AutoPrompt; LoRA's run; PET's 3 patterns' models and its classifier
    assert len(zero_gpu) == 1 + 3 + 1 + 3 + 1
    monkeypatch.delenv("SPACES_ZERO_GPU")
    *_, (_, here) = run_standard_comparison(None, **form)
    columns = [c for c in table.columns if "s" != c and "time" not in c and "second" not in c]
    assert "accuracy" in columns and table[columns].equals(here[columns])


def rlhf_tab_flow(model: str) -> list:
    """The RLHF tab's stages pressed in order by one visitor (SFT, a ranking screen, the reward model on a simulated
    labeler's comparisons, PPO, DPO, the comparison, a download); what each showed, times left out."""
    import peftlab.ui.rlhf_stages as tab
    from peftlab.ui.sessions import SESSIONS

    SESSIONS.get(None).values.pop("rlhf", None)  # a new visitor
    seed = dict(seed=0)
    sft = dict(model=model, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=3)
    *_, sft_shown = tab.run_sft_stage(None, **sft, sft_learning_rate=1e-3, **seed)
    shown = [sft_shown, list(tab.sample_for_ranking(3, 0, None))[-1][:4]]
    rm = dict(
        source="simulated labeler",
        comparisons=None,
        labeler="vader-positive",
        k=2,
        rm_pairs=12,
        rm_lora_r=0,
        rm_steps=3,
    )
    shown.append(tab.run_reward_stage(None, **rm, **seed)[::2])
    ppo = dict(ppo_steps=4, ppo_beta=0.05, ppo_adaptive_kl=False, ppo_target_kl=4.0, ppo_ptx_coef=0.0)
    *_, ppo_shown = tab.run_ppo_stage(None, labeler="vader-positive", **ppo, ppo_learning_rate=1e-3, **seed)
    *_, dpo_shown = tab.run_dpo_stage(None, dpo_steps=2, dpo_beta=0.1, dpo_learning_rate=1e-3, **seed)
    shown += [ppo_shown, dpo_shown, tab.evaluate_stage("vader-positive", 2, 0, None)[:2]]
    shown.append(tab.download_stage("PPO adapter", None)[0])  # the zip (and its status line, empty)
    return shown


def _without_times(value):
    import re

    if isinstance(value, str):
        return re.sub(r"\d+ s\b|\d+(\.\d+)? (s|min) in all", "T", value)
    return value


def test_the_rlhf_tab_runs_every_stage_in_gpu_calls_and_ppo_in_chunks_with_the_numbers_it_gives_without(
    tiny_causal_folder, zero_gpu, monkeypatch, tmp_path
):
    import zipfile

    from peftlab.store import ResultStore

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    monkeypatch.setattr("peftlab.ui.rlhf_calls.steps_per_call", lambda kind, remaining: min(2, remaining))
    on_space = rlhf_tab_flow(tiny_causal_folder)
    # SFT; a ranking's samples; the sampling's pace and step 2; PPO's 4 steps in 2 calls; DPO; the comparison; a zip
    assert len(zero_gpu) == 1 + 1 + 2 + 2 + 1 + 1 + 1
    # the comparison ran in a GPU call: its rows say so, not the device of the app's own copy of the model (the CPU)
    assert {row.device for row in ResultStore().rows()} == {"cuda"}
    with zipfile.ZipFile(on_space[-1]) as space_zip:  # read now: the session's next download of it replaces it
        space_head = space_zip.read("value_head.safetensors")
    monkeypatch.delenv("SPACES_ZERO_GPU")
    here = rlhf_tab_flow(tiny_causal_folder)

    for stage_on_space, stage_here in zip(on_space[:-1], here[:-1]):
        for a, b in zip(stage_on_space, stage_here):
            if isinstance(a, pd.DataFrame):
                assert a.equals(b)
            elif isinstance(a, str):
                assert _without_times(a) == _without_times(b)
    assert on_space[3][0].startswith("PPO done")
    with zipfile.ZipFile(here[-1]) as local_zip:
        assert space_head == local_zip.read("value_head.safetensors")


def test_the_start_tab_classifies_in_a_gpu_call_as_it_does_without(zero_gpu, monkeypatch):
    from peftlab.ui.start_tab import REVIEW, classify_review

    verdict, bars = classify_review(REVIEW)
    assert len(zero_gpu) == 1
    off_zero_gpu_in_its_dtype(monkeypatch)
    here, here_bars = classify_review(REVIEW)
    assert verdict == here and list(bars.data[0].x) == pytest.approx(list(here_bars.data[0].x), abs=1e-6)


def test_on_zero_gpu_a_stop_ends_ppo_between_chunks_with_the_policy_so_far(tiny_causal_folder, zero_gpu, monkeypatch):
    import threading

    import peftlab.ui.rlhf_stages as tab
    from peftlab.rlhf.ppo import PPOConfig, PPOEvent, PPOResult
    from peftlab.ui.rlhf_calls import ppo_in_chunks

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    monkeypatch.setattr("peftlab.ui.rlhf_calls.steps_per_call", lambda kind, remaining: 1)
    rlhf_tab_flow(tiny_causal_folder)  # SFT and a reward model (and the rest) in this visitor's session
    session, stop = tab._session(None), threading.Event()
    items = []
    for item in ppo_in_chunks(
        session, "vader-positive", PPOConfig(steps=5, batch_size=4, minibatch_size=2, max_new_tokens=6), stop
    ):
        items.append(item)
        stop.set()  # pressed during the first chunk: no flag crosses into the call, so it ends that chunk first
    assert [type(i) for i in items] == [PPOEvent, PPOResult] and session.ppo is items[-1]
    assert len(session.ppo.history) == 1 and session.ppo_run is None
    assert session.ppo.policy.value_head.weight.abs().sum() > 0  # the step's policy, built here when used


def test_on_zero_gpu_a_refused_later_chunk_of_ppo_keeps_the_policy_of_the_chunks_before(
    tiny_causal_folder, zero_gpu, monkeypatch
):
    """The second chunk of a PPO run asked for more than a visitor's quota had left: the step of the first chunk
    was lost with it, and the next press started PPO again (a ZeroGPU review's finding)."""
    import threading

    import peftlab.ui.rlhf_stages as tab
    from peftlab.rlhf.ppo import PPOConfig, PPOEvent, PPOResult
    from peftlab.ui.rlhf_calls import ppo_in_chunks

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    monkeypatch.setattr("peftlab.ui.rlhf_calls.steps_per_call", lambda kind, remaining: 1)
    rlhf_tab_flow(tiny_causal_folder)
    session = tab._session(None)
    run, calls = zerogpu.gpu_call, []

    def quota_after_one_call(seconds, crossing):
        calls.append(seconds)
        if len(calls) > 1:
            raise gr.Error("You have exceeded your free ZeroGPU quota (120s requested vs. 20s left).")
        yield from run(seconds, crossing)

    monkeypatch.setattr(zerogpu, "gpu_call", quota_after_one_call)
    items = []
    config = PPOConfig(steps=5, batch_size=4, minibatch_size=2, max_new_tokens=6)
    with pytest.raises(PeftlabError) as raised:
        for item in ppo_in_chunks(session, "vader-positive", config, threading.Event()):
            items.append(item)
    assert str(raised.value) == (
        "You have exceeded your free ZeroGPU quota (120s requested vs. 20s left). The policy after 1 PPO step is kept."
    )
    assert [type(i) for i in items] == [PPOEvent, PPOResult] and session.ppo is items[-1]
    assert len(session.ppo.history) == 1 and session.ppo_run is None


def test_a_job_measured_on_the_press_before_asks_for_its_measured_seconds_or_is_refused_before_it_starts(zero_gpu):
    """A 500-s stage, closed after its first steps to show its estimate, counted as taking its 60 s; the next two
    presses were aborted at 120 and 240 s (360 s of a free visitor's 300-s daily quota) before the third was refused
    (a ZeroGPU review's finding)."""
    list(zerogpu.on_gpu(counted_steps, 3, kind="stage", units=3, measured_s=40.0))
    assert zero_gpu == [MARGIN * 40.0]  # the kind's pace unknown: the measured seconds, not 60
    with pytest.raises(PeftlabError) as raised:
        list(zerogpu.on_gpu(counted_steps, 3, kind="stage", units=3, measured_s=500.0, what="100 SFT steps"))
    assert str(raised.value).startswith("100 SFT steps would take about 500 s of GPU time, more than one GPU call")
    assert len(zero_gpu) == 1  # refused before any call


def one_run(lm, name, stop):
    yield name


def test_a_grid_s_first_call_asks_from_the_runs_before_it_so_a_long_run_gets_through_on_a_second_press(
    folder_lm, zero_gpu, monkeypatch
):
    """Every press made a new GPUCalls whose first call asked 60 s: a grid whose first run needed 70 s was aborted on
    every press, each costing the visitor 60 s of quota (a ZeroGPU review's finding)."""
    run, asked = zerogpu.gpu_call, []
    timeout = aborted_after(1.0, asked, monkeypatch)

    def needs_70_s(seconds, crossing):
        if seconds < 70:
            yield from timeout(seconds, crossing)
        asked.append(seconds)
        yield from run(seconds, crossing)

    monkeypatch.setattr(zerogpu, "gpu_call", needs_70_s)
    with pytest.raises(PeftlabError) as raised:
        list(GPUCalls(kind="training run").map(folder_lm, one_run, (), [("a",)]))
    assert str(raised.value) == (
        "A training run needed more than the 60 s of GPU time its call asked for, and ZeroGPU ended it; press again "
        "to ask for more, up to 300 s, or make the runs shorter (fewer steps)."
    )
    assert list(GPUCalls(kind="training run").map(folder_lm, one_run, (), [("a",)])) == [(0, "a")]
    assert asked == [60, 120]
    # the latest runs, the aborted one counted as its 60 s: the next grid's first call asks for twice the longest
    assert GPUCalls(kind="training run").duration(folder_lm.name) == 120
    assert GPUCalls(kind="training run").duration("another-model") == 60  # its runs are its own


def test_a_long_job_goes_one_step_first_then_as_many_steps_as_fit_half_the_longest_call(zero_gpu, monkeypatch):
    assert zerogpu.steps_per_call("ppo", 40) == 1  # its pace unknown: one step measures it
    zerogpu._PACES["ppo"] = CallTimes([(1, 10.0)])  # as the call before found it
    assert zerogpu.steps_per_call("ppo", 40) == 15  # 300 s / 2 / 10 s
    assert zerogpu.steps_per_call("ppo", 4) == 4
    # the first call's 10 s held 8 s of set-up, as a call of 15 steps shows: 2 s a step; past the largest call seen a
    # chunk is priced at least at that call's 38 s / 15 steps, so 59 steps fit in 150 s (71 by the fit alone)
    zerogpu._PACES["ppo"].add(15, 38.0)
    fitted = zerogpu._PACES["ppo"].fit()
    assert (fitted.setup, fitted.per_step) == pytest.approx((8.0, 2.0))
    assert zerogpu.steps_per_call("ppo", 100) == 59
    # found by a review: a larger call that took no longer fitted 0 s a step, and every remaining step went in one
    # call, asking for twice the set-up alone (24 s for 188 s of steps)
    zerogpu._PACES["ppo"] = CallTimes([(1, 13.0), (11, 11.0)])
    assert zerogpu._PACES["ppo"].fit().per_step == 0.0 and zerogpu.steps_per_call("ppo", 188) == 150
    zerogpu._PACES["ppo"].add(1, float("nan"))  # a call whose time was never read: left out, not a failed fit
    assert len(zerogpu._PACES["ppo"].seen) == 2
    zerogpu._PACES["ppo"] = CallTimes([(1, 400.0)])  # a step longer than any call: still one, which on_gpu then refuses
    assert zerogpu.steps_per_call("ppo", 40) == 1
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert zerogpu.steps_per_call("ppo", 40) == 40  # off ZeroGPU: the whole job at once


def test_a_small_call_s_fixed_cost_never_refuses_a_large_job_and_the_pace_follows_faster_calls(zero_gpu, monkeypatch):
    """Found by a review of many visitors at once: the pace was a call's seconds over its units, the slowest seen. A
    visitor's 2-text evaluation with 1 s of fixed cost made it 0.51 s a text, and every later 400-text evaluation of
    every visitor was refused as "about 203 s" until the Space restarted."""
    took = {2: 1.02, 400: 5.0}  # 1 s of fixed cost, 0.01 s a text

    def timed(seconds, crossing):
        zero_gpu.append(seconds)
        job, arguments = pickle.loads(crossing)
        units = len(arguments[1])  # (len, the texts): `call_on_gpu`'s job
        yield from job(*arguments)
        yield zerogpu._CallEnded(took[units])

    monkeypatch.setattr(zerogpu, "gpu_call", timed)
    for units in (2, 400):
        zerogpu.call_on_gpu(len, ["a text"] * units, kind="evaluate", units=units)
    assert zero_gpu[1] == zerogpu.MAX_DURATION_S  # stretched from a smaller call alone: asked for, not refused
    pace = zerogpu._PACES["evaluate"]
    fitted = pace.fit()
    assert (fitted.setup, fitted.per_step) == pytest.approx((1.0, 0.01)) and pace.seconds(400) == pytest.approx(5.0)
    zerogpu.call_on_gpu(len, ["a text"] * 400, kind="evaluate", units=400)
    assert zero_gpu[2] == pytest.approx(max(MIN_DURATION_S, MARGIN * 5.0))
    # the latest PACE_MEMORY calls alone: a slow start is forgotten as faster calls come
    slow = CallTimes([(400, 100.0)])
    for _ in range(zerogpu.PACE_MEMORY):
        slow.add(400, 5.0)
    assert slow.seconds(400) == pytest.approx(5.0)


def refusing():
    raise PeftlabError("A sentence from inside the call.")


def test_a_sentence_raised_inside_a_gpu_call_reaches_the_visitor_whole(tiny_causal_folder, zero_gpu, monkeypatch):
    """spaces reports an error of a call by its class's name alone; peftlab's own sentences cross as items."""
    import peftlab.ui.rlhf_stages as tab
    from peftlab.ui.sessions import SESSIONS

    with pytest.raises(PeftlabError, match=r"^A sentence from inside the call\.$"):
        zerogpu.call_on_gpu(refusing, kind="refusing")
    # in the app: the person's own rankings are checked inside the reward model's call
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    SESSIONS.get(None).values.pop("rlhf", None)
    sft = dict(model=tiny_causal_folder, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=1)
    list(tab.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=0))
    with pytest.raises(gr.Error) as shown:
        tab.run_reward_stage(
            None,
            source="my rankings",
            comparisons=None,
            labeler="vader-positive",
            k=2,
            rm_pairs=4,
            rm_lora_r=0,
            rm_steps=1,
            seed=0,
        )
    assert shown.value.message.startswith("Rank responses for at least 2 prompts first")
    assert zerogpu._PACES.get("refusing") is None  # an error says nothing of a job's pace


class Clock:
    """The app's clock (`zerogpu.clock`), moved on by a simulated GPU call."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def aborted_after(fraction: float, asked: list, monkeypatch):
    """A GPU call that spaces reports as "GPU task aborted" after `fraction` of the duration it asked for: a timeout
    at 1, a worker that died before at less."""
    clock = Clock()
    monkeypatch.setattr(zerogpu, "clock", clock)

    def aborted(seconds, crossing):
        asked.append(seconds)
        clock.now += fraction * seconds
        raise gr.Error("GPU task aborted", title="ZeroGPU worker error")
        yield  # a generator, like the decorated call

    return aborted


def test_a_call_aborted_past_its_duration_makes_the_next_of_its_kind_ask_for_twice_as_long(zero_gpu, monkeypatch):
    monkeypatch.setattr(zerogpu, "gpu_call", aborted_after(1.0, zero_gpu, monkeypatch))
    for asked in (60, 120):  # spaces' "GPU task aborted" alone said neither what nor what to do
        with pytest.raises(PeftlabError) as raised:
            zerogpu.call_on_gpu(len, "texts", kind="slow", units=4, what="Scoring 4 texts", shorter="score fewer")
        assert str(raised.value) == (
            f"Scoring 4 texts needed more than the {asked} s of GPU time its call asked for, and ZeroGPU ended it; "
            "press again to ask for more, up to 300 s, or score fewer."
        )
    assert zero_gpu == [zerogpu.DEFAULT_DURATION_S, MARGIN * zerogpu.DEFAULT_DURATION_S]


def test_a_gpu_worker_that_dies_before_its_duration_is_no_timeout(zero_gpu, monkeypatch):
    """spaces says "GPU task aborted" of a worker that died too (killed for memory, crashed): counted as a timeout,
    it doubled the next call of its kind for every visitor and told them to ask for more time (a review's
    finding)."""
    monkeypatch.setattr(zerogpu, "gpu_call", aborted_after(0.1, zero_gpu, monkeypatch))
    with pytest.raises(PeftlabError) as raised:
        zerogpu.call_on_gpu(len, "texts", kind="dies", what="Scoring 4 texts", shorter="score fewer")
    assert str(raised.value) == (
        "Scoring 4 texts stopped after 6 s of the 60 s of GPU time its call asked for: its GPU worker ended (ZeroGPU "
        "says only 'GPU task aborted'; the Space's log may say why); press again, or score fewer."
    )
    assert "dies" not in zerogpu._PACES


def test_a_call_zerogpu_refuses_before_it_runs_leaves_every_visitor_s_pace_as_it_was(zero_gpu, monkeypatch):
    """A visitor with no quota left pressed five times: each refusal counted as a call that took all it asked, the
    kind's shared pace doubled each time, and from the fifth press every visitor's call of that kind was refused
    as too long for any call (a review's finding)."""
    zerogpu.call_on_gpu(len, "text", kind="classify")  # one call measured
    before = list(zerogpu._PACES["classify"].seen)
    run = zerogpu.gpu_call

    def refused(seconds, crossing):
        zero_gpu.append(seconds)
        raise gr.Error(
            "You have exceeded your free ZeroGPU quota (60s requested vs. 5s left).", title="ZeroGPU quota exceeded"
        )
        yield  # a generator, like the decorated call

    monkeypatch.setattr(zerogpu, "gpu_call", refused)
    for _ in range(5):
        with pytest.raises(gr.Error, match="exceeded your free ZeroGPU quota"):
            zerogpu.call_on_gpu(len, "text", kind="classify")
    assert zerogpu._PACES["classify"].seen == before
    monkeypatch.setattr(zerogpu, "gpu_call", run)
    zerogpu.call_on_gpu(len, "text", kind="classify")
    assert zero_gpu[-1] == zero_gpu[1]  # another visitor's call asks what it asked before the refusals


def out_of_memory():  # jobs cross into a GPU call pickled: defined at the module's top level
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def broken():
    return 1 / 0


def test_memory_run_out_and_a_fault_inside_a_gpu_call_are_told_as_off_zerogpu(zero_gpu):
    """spaces told any error of a call by its class's name alone: 'OutOfMemoryError' (title 'ZeroGPU worker error'),
    where off ZeroGPU a visitor reads what to make smaller."""
    with pytest.raises(PeftlabError) as raised:
        zerogpu.call_on_gpu(out_of_memory, kind="memory")
    assert (
        str(raised.value) == "The GPU ran out of memory: try fewer test texts, a smaller batch size or a smaller model."
    )
    with pytest.raises(RuntimeError) as raised:
        zerogpu.call_on_gpu(broken, kind="fault")
    assert str(raised.value) == "in a GPU call, ZeroDivisionError: division by zero"
    assert "memory" not in zerogpu._PACES and "fault" not in zerogpu._PACES


def counted_steps(n: int, stop=None):
    """A job of `n` steps that checks its stop flag before each, as every long loop of peftlab does."""
    for step in range(n):
        if stop is not None and stop.is_set():
            return
        yield step


def test_on_zero_gpu_a_stop_pressed_before_a_call_ends_its_job_at_its_first_check(zero_gpu):
    stop = threading.Event()
    assert list(zerogpu.on_gpu(counted_steps, 3, kind="steps", stop=stop)) == [0, 1, 2]
    # pressed before the call started (while the handler loaded a model, say): the call ran its whole job, the flag
    # being one that cannot be pickled into it; it now gets the flag's state at the call's start
    stop.set()
    assert list(zerogpu.on_gpu(counted_steps, 3, kind="steps", stop=stop)) == []
    assert len(zero_gpu) == 2  # both went through a (simulated) GPU call


def test_a_job_stopped_at_its_start_leaves_the_pace_of_its_kind_unmeasured(zero_gpu):
    """Found by a review: its few microseconds for the whole size priced every step of its kind at nothing, so the
    next run of that kind (any visitor's) went in one call of the shortest duration, which ZeroGPU aborts."""
    stop = threading.Event()
    stop.set()
    assert list(zerogpu.on_gpu(counted_steps, 100, kind="stopped-at-start", units=100, stop=stop)) == []
    assert "stopped-at-start" not in zerogpu._PACES
    assert zerogpu.steps_per_call("stopped-at-start", 100) == 1  # still unknown: one step measures it
