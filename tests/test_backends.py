"""Several runs on a local Ray (2 CPUs): a grid, the standard comparison and PET's pattern models give the same
numbers as in-process; a failing run in its own row; a lost worker's job retried once; Stop; the CLI."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load as load_safetensors

from peftlab.backends import BackendConfig, Failed, RayBackend
from peftlab.cli import main
from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, PlannedRun, run_grid, run_plan
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.models import load_lm
from peftlab.saving import zip_trained
from peftlab.standard import TRAINED_ON_BACKEND, ZERO_SHOT, StandardConfig, StandardEvent, run_standard
from peftlab.store import ResultRow
from peftlab.tuning import TrainSettings
from tests.test_compare import TEMPLATE, VERBALIZER, easy_task
from tests.test_pet import run_tiny

SETTINGS = TrainSettings(steps=3, batch_size=4, eval_every=3)
TIMING = {"train_seconds", "seconds_per_step", "peak_memory_mb"}  # differ between any two runs


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder_lm(tiny_causal_folder):
    """The tiny Llama loaded from its folder, as Ray's workers load it (by name)."""
    return load_lm(tiny_causal_folder, dtype="fp32")


def trained_rows(items) -> dict:
    return {(r.values["method"], r.values["seed"]): r for r in items if isinstance(r, GridRow) and r.values["seed"]}


def weights(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {
            name: load_safetensors(archive.read(name)) for name in archive.namelist() if name.endswith(".safetensors")
        }


@pytest.mark.parametrize("dispatch", ["actor", "task"])
def test_a_two_run_grid_on_ray_gives_the_local_rows_bit_for_bit(local_ray, folder_lm, tmp_path, dispatch):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    methods = [method_config("prompt-tuning", num_virtual_tokens=4), method_config("lora", r=2, learning_rate=1e-2)]
    local = list(run_grid(folder_lm, task, setup, methods, [13], [4], SETTINGS, test_limit=6))
    backend = RayBackend(threads=1, save_dir=str(tmp_path / "adapters"), dispatch=dispatch)
    remote = list(run_grid(folder_lm, task, setup, methods, [13], [4], SETTINGS, test_limit=6, backend=backend))

    assert remote[0].values == local[0].values  # the zero-shot row, scored here either way
    local_rows, remote_rows = trained_rows(local), trained_rows(remote)
    assert sorted(remote_rows) == sorted(local_rows) == [("lora", 13), ("prompt-tuning", 13)]
    for key, row in local_rows.items():
        other = remote_rows[key]
        assert {k: v for k, v in other.values.items() if k not in TIMING} == {
            k: v for k, v in row.values.items() if k not in TIMING
        }
        assert other.result.predictions == row.result.predictions
        assert other.trained is None  # the weights stay with the worker, or in save_dir:
        saved, here = (
            weights(tmp_path / "adapters" / f"{key[0]}-K4-seed13.zip"),
            weights(zip_trained(row.trained, tmp_path / f"local-{key[0]}.zip")),
        )
        assert saved.keys() == here.keys()
        for name, tensors in here.items():
            for tensor_name, tensor in tensors.items():
                assert tensor.equal(saved[name][tensor_name]), f"{key} {tensor_name} differs"  # fp32 on CPU: exact
    events = [item for item in remote if not isinstance(item, GridRow)]
    assert {(e.method, e.step) for e in events} == {(m, s) for m in ("prompt-tuning", "lora") for s in (1, 2, 3)}


def test_a_run_that_fails_is_reported_in_its_row_and_the_others_finish(local_ray, folder_lm):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    lora = method_config("lora", r=2)
    plan = [PlannedRun(lora, 4, 13, "lora"), PlannedRun(lora, 99, 21, "lora"), PlannedRun(lora, 4, 21, "lora")]
    items = run_plan(folder_lm, task, setup, plan, SETTINGS, 6, backend=RayBackend())
    rows = [r for r in items if isinstance(r, GridRow) and r.values["seed"]]
    statuses = {(r.values["K"], r.values["seed"]): r.values["status"] for r in rows}
    assert statuses[(99, 21)].startswith(
        "failed: K=99 needs 198 examples of class 'negative' (K for train and K for dev)"
    ), statuses
    assert statuses[(4, 13)] == statuses[(4, 21)] == "done"


def test_stop_sends_no_further_run_and_keeps_the_finished_ones(local_ray, folder_lm):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    plan = [PlannedRun(method_config("lora", r=2), 4, seed, "lora") for seed in (13, 21, 42, 87)]
    stop = threading.Event()
    rows = []
    for item in run_plan(folder_lm, task, setup, plan, SETTINGS, 6, stop, backend=RayBackend(workers=1)):
        if isinstance(item, GridRow) and item.values["seed"]:
            rows.append(item)
            stop.set()  # after the first run's row: the other three never start
    assert [r.values["seed"] for r in rows] == [13] and rows[0].values["status"] == "done"


def test_the_standard_comparison_trains_its_methods_side_by_side_on_ray_with_the_local_numbers(local_ray, folder_lm):
    config = StandardConfig(methods=(ZERO_SHOT, "lora", "head"), shots=2, seeds=(13, 21), test_limit=4)
    task = easy_task()
    local = list(run_standard(folder_lm, folder_lm, task, TEMPLATE, VERBALIZER, config, SETTINGS))
    remote = list(run_standard(folder_lm, folder_lm, task, TEMPLATE, VERBALIZER, config, SETTINGS, None, RayBackend()))

    events = [(e.step, e.method, e.seed) for e in remote if isinstance(e, StandardEvent)]
    assert events == [(1, ZERO_SHOT, None), (2, TRAINED_ON_BACKEND, None)]  # four runs, announced once

    def rows(items) -> dict:
        return {(r.method, r.seed): r for r in items if isinstance(r, ResultRow)}

    assert sorted(rows(remote), key=str) == sorted(rows(local), key=str)
    for key, row in rows(local).items():
        assert (rows(remote)[key].accuracy, rows(remote)[key].predictions) == (row.accuracy, row.predictions), key


def test_pet_trains_each_generation_s_pattern_models_on_ray_with_the_local_numbers(local_ray, folder_lm, tiny_task):
    local = run_tiny(folder_lm, tiny_task)
    remote = run_tiny(folder_lm, tiny_task, backend=RayBackend(workers=1))  # a worker process per generation
    assert remote[-1].summary() | {"seconds": 0} == local[-1].summary() | {"seconds": 0}
    assert np.array_equal(remote[-1].soft_labels, local[-1].soft_labels)
    assert {(e.generation, e.model) for e in remote[:-1]} == {(e.generation, e.model) for e in local[:-1]}


def test_a_job_whose_worker_dies_is_tried_once_more_and_a_second_death_is_reported(local_ray, folder_lm, tmp_path):
    def dies(lm, folder, number, times, stop):
        """Kills its worker's process (as a lost node would) the first `times` times it runs, then yields."""
        tries = Path(folder) / f"job-{number}"
        tries.write_text(tries.read_text() + "x" if tries.exists() else "x")
        if len(tries.read_text()) <= times:
            os._exit(1)
        yield number

    once = list(RayBackend(workers=1).map(folder_lm, dies, (str(tmp_path),), [(1, 1), (2, 0)]))
    assert once == [(0, 1), (1, 2)]  # job 1 ran twice (its worker was restarted), job 2 on the restarted worker
    assert (tmp_path / "job-1").read_text() == "xx" and (tmp_path / "job-2").read_text() == "x"

    # a worker dead past its restarts is replaced: the jobs waiting after job 3 failed unrun, "worker lost"
    lost, *rest = RayBackend(workers=1).map(folder_lm, dies, (str(tmp_path),), [(3, 2), (4, 0), (5, 0)])
    assert lost[0] == 0 and isinstance(lost[1], Failed) and lost[1].reason.startswith("worker lost: "), lost
    assert (tmp_path / "job-3").read_text() == "xx"  # tried twice, never a third time
    assert rest == [(1, 4), (2, 5)] and (tmp_path / "job-4").read_text() == (tmp_path / "job-5").read_text() == "x"


def test_the_compare_command_runs_its_grid_on_ray(local_ray, tiny_causal_folder, easy_csv, capsys):
    args = ["compare", "--model", tiny_causal_folder, "--task", easy_csv, "--template", TEMPLATE]
    args += ["--verbalizer", json.dumps(VERBALIZER), "--methods", "prompt-tuning,lora", "--shots", "4"]
    args += ["--seeds", "13", "--steps", "2", "--eval-every", "2", "--json", "--backend", "ray"]
    assert main(args) == 0
    # The JSON's line: the command sends what else is printed during its run to stderr (`cli_core.run_command`), but
    # this process's Ray is older than the command; a raylet note ("A worker died ...") about a worker an earlier
    # test's Stop cancelled may reach stdout before the command starts.
    records = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert sorted(r["method"] for r in records) == ["lora", "prompt-tuning", "zero-shot"]
    assert all(r["status"] == "done" for r in records)


def test_backend_settings_are_checked_in_one_sentence(capsys):
    with pytest.raises(PeftlabError, match=r"^Backend must be one of local, ray, not 'spark'\.$"):
        BackendConfig(backend="spark")
    with pytest.raises(PeftlabError, match=r"^Workers must be at least 1, not 0\.$"):
        BackendConfig(backend="ray", workers=0)
    assert main(["compare", "--address", "auto"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: The address, workers, worker threads and worker GPUs are settings of the ray backend."
    )
    assert BackendConfig().build() is None  # local: compare.run_plan's own loop


def soft_prompts_tab_trains_elsewhere_and_classifies_with_what_was_saved(model: str, upload: str, monkeypatch):
    """The Soft prompts tab's grid with the backend the environment chose: one LoRA run, then "classify" with the
    method loaded back from the file the run wrote."""
    from peftlab.ui.soft_prompts_tab import classify_with, run_comparison

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    form = dict(model=model, task="", upload=upload, text_column="text", label_column="label")
    form |= dict(templates=TEMPLATE, verbalizer="negative: negative\npositive: positive", methods=["lora"])
    form |= dict(shots="4", seeds="13", steps=2, select_by="accuracy", rates="", test_limit=6)
    *_, last = run_comparison(None, **form)
    status, results = last[0], last[1]
    assert status.startswith("1/1 runs finished"), status
    assert list(results["method"]) == ["zero-shot", "lora"] and list(results["status"]) == ["done", "done"]
    bars = classify_with("lora", "the movie was great", None)  # the zip the run wrote, loaded back here
    probabilities = [float(p) for p in bars.data[0].x]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-5


def test_the_soft_prompts_tab_trains_on_ray_and_classifies_with_what_the_worker_saved(
    local_ray, tiny_causal_folder, easy_csv, monkeypatch
):
    monkeypatch.setenv("PEFTLAB_BACKEND", "ray")  # how whoever runs the app chooses Ray
    soft_prompts_tab_trains_elsewhere_and_classifies_with_what_was_saved(tiny_causal_folder, easy_csv, monkeypatch)


def test_workers_the_cluster_cannot_hold_are_refused_before_any_work(local_ray, capsys):
    """`--worker-threads 64` on 2 CPUs started Ray and waited for a worker Ray could never place, without a word,
    until Ctrl-C; more workers than fit waited the same way once the first ones held the CPUs."""
    for backend, message in [
        (
            RayBackend(threads=64),
            "Each Ray worker asks for 64 CPUs, but no node of the cluster (2 CPUs in all) has that many; ask for fewer "
            "worker threads or GPUs.",
        ),
        (
            RayBackend(gpus=0.5),
            "Each Ray worker asks for 1 CPU and 0.5 GPU, but no node of the cluster (2 CPUs and 0 GPUs in all) has "
            "that many; ask for fewer worker threads or GPUs.",
        ),
        (
            RayBackend(workers=3),
            "3 Ray workers of 1 CPU each do not fit on the cluster (2 CPUs), which holds 2; ask for at most 2.",
        ),
    ]:
        with pytest.raises(PeftlabError) as refused:
            backend.connect()
        assert str(refused.value) == message
    assert RayBackend(threads=2).worker_count(ray, jobs=5) == 1 and RayBackend().worker_count(ray, jobs=5) == 2
    # the command line says it before it loads a model or scores anything
    assert main(["compare", "--backend", "ray", "--worker-threads", "64", "--model", "./never-loaded"]) == 2
    assert capsys.readouterr().err.startswith("error: Each Ray worker asks for 64 CPUs, but no node")


def test_ray_that_cannot_start_or_be_reached_is_one_sentence(monkeypatch):
    """Ray's start-up timeout is a bare Exception, and a ray:// address without Ray Client a ValueError: both were
    reported as "this is a bug or a broken installation"."""

    def timed_out(**_kwargs):
        raise Exception("The current node timed out during startup. This could happen because some of the ...")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", timed_out)
    with pytest.raises(PeftlabError) as refused:
        RayBackend().connect()
    assert str(refused.value) == (
        "Could not start Ray on this machine (The current node timed out during startup. This could happen because "
        "some of the ...); try again, or train here (the local backend)."
    )
    with pytest.raises(PeftlabError, match=r"^Could not reach the Ray cluster at 'ray://10\.0\.0\.1:10001' \(The "):
        RayBackend(address="ray://10.0.0.1:10001").connect()


def test_a_job_s_fault_on_a_worker_is_told_apart_from_its_input_s(capsys):
    """Every exception of a job on a worker became Failed("OutOfMemoryError: ...") and PET said it as bad input
    ("Pattern 1's model failed on the backend", exit 2, no traceback anywhere): a PeftlabError is the input's, the rest
    a fault, its traceback printed on the worker (Ray shows it in the driver's log)."""
    from peftlab.backends import _guarded

    def job(error):
        def run(lm, *arguments):
            yield "a step"
            raise error

        return run

    bad_input = list(_guarded(job(PeftlabError("The loss turned NaN at step 2.")), None, None, ()))
    assert bad_input == ["a step", Failed("The loss turned NaN at step 2.", fault=False)]
    assert capsys.readouterr().err == ""
    fault = list(_guarded(job(torch.OutOfMemoryError("CUDA out of memory.")), None, None, ()))
    assert fault == ["a step", Failed("OutOfMemoryError: CUDA out of memory.", fault=True, memory="GPU")]
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value"), [("PEFTLAB_RAY_WORKER_THREADS", "two"), ("PEFTLAB_RAY_WORKER_GPUS", "half")]
)
def test_the_app_s_ray_settings_that_are_not_numbers_get_one_sentence(monkeypatch, name, value):
    """PEFTLAB_RAY_WORKER_THREADS=two was a raw ValueError as the app started."""
    from peftlab.backends import backend_from_env

    monkeypatch.setenv("PEFTLAB_BACKEND", "ray")
    monkeypatch.setenv(name, value)
    with pytest.raises(PeftlabError) as refused:
        backend_from_env()
    told = "a whole number" if name.endswith("THREADS") else "a number"
    assert str(refused.value) == f"{name} must be {told}, not {value!r}."
