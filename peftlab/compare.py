"""Grids of methods x seeds x shots, and sweeps of one setting, on one task -> one DataFrame and its summary."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import pandas as pd

from peftlab.backends import run_on
from peftlab.cli_core import strict_json
from peftlab.cloze import ClozeSetup, evaluate, evaluation_kind
from peftlab.config import Config, parse_list, scored_texts_setting, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.methods import METHODS, MethodConfig, cut_note, method_config
from peftlab.models import LM
from peftlab.report import leaning_notes
from peftlab.store import STOPPED, ResultRow
from peftlab.tasks import DEFAULT_SEEDS, Task
from peftlab.tuning import Scored, TrainedMethod, TrainEvent, TrainSettings, train_method
from peftlab.zerogpu import call_on_gpu

RESULT_COLUMNS = [
    "method",
    "K",
    "seed",
    "test_accuracy",
    "macro_f1",
    "trainable_params",
    "trainable_share",
    "train_seconds",
    "seconds_per_step",
    "steps",
    "peak_memory_mb",
    "status",
]


@dataclass
class GridConfig(Config):
    """What a grid trains: methods x K x seeds, scored on the same test texts (how each run trains: TrainSettings)."""

    methods: tuple[str, ...] = setting(
        ("prompt-tuning", "lora", "head"),
        "methods to train, comma-separated: " + ", ".join(METHODS),
        label="methods to compare",
    )
    shots: tuple[int, ...] = setting(
        (16,),
        "K, labelled examples per class for training (as many again for dev), comma-separated",
        label="K per class",
        cap="shots",
    )
    seeds: tuple[int, ...] = seed_setting(DEFAULT_SEEDS[:3], "seeds, comma-separated: each draws its own K examples")
    test_limit: int | None = scored_texts_setting("test texts every run is scored on")


PROMPT_LENGTHS = "1,5,20,50,100"  # the default sweep's values: prompt lengths (num_virtual_tokens)


@dataclass
class SweepConfig(Config):
    """One method trained at several values of one of its numeric settings (an ablation), on one K."""

    method: str = setting("prompt-tuning", "the method whose setting varies: " + ", ".join(METHODS))
    varied: str = setting("num_virtual_tokens", "the numeric setting to vary", flag="setting", label="setting")
    values: str = setting(PROMPT_LENGTHS, "comma-separated values of the setting", label="values (comma-separated)")
    shots: int = setting(16, "K, labelled examples per class", minimum=1, cap="shots", label="K per class")
    seeds: tuple[int, ...] = seed_setting(DEFAULT_SEEDS[:1], "seeds, comma-separated")
    test_limit: int | None = scored_texts_setting("test texts every run is scored on")


@dataclass
class GridRow:
    """One finished (method, K, seed): its result row and, for trained methods, the trained model."""

    values: dict  # RESULT_COLUMNS, plus the swept setting in a sweep
    trained: TrainedMethod | None = None
    result: ResultRow | None = None  # the same, as the results store keeps it (with every test prediction)
    saved: str | None = None  # where a Ray worker wrote the trained method (`backends.RayBackend.save_dir`)


@dataclass
class PlannedRun:
    """One training run of a grid or sweep; `extra` goes into its result row."""

    config: MethodConfig
    k: int
    seed: int
    label: str
    extra: dict = dataclasses.field(default_factory=dict)


def run_grid(
    lm: LM,
    task: Task,
    setup: ClozeSetup,
    methods: Sequence[MethodConfig],
    seeds: Sequence[int],
    shots: Sequence[int],
    settings: TrainSettings,
    test_limit: int | None = None,
    stop: threading.Event | None = None,
    backend=None,
) -> Iterator[TrainEvent | GridRow]:
    """Yield training events and one GridRow per finished (method, K, seed), trained by `backend` (`run_plan`).

    The first row is the zero-shot cloze result of the same prompt on the same test texts. With several K, the
    events' method says its K ("lora, K=16", as `plots` names such lines): the training curves of K=4 and K=16 were
    one zigzag line.
    """
    validate_grid(task, methods, seeds, shots)
    plan = [
        PlannedRun(config, k, seed, f"{config.name}, K={k}" if len(shots) > 1 else config.name)
        for k in shots
        for seed in seeds
        for config in methods
    ]
    yield from run_plan(lm, task, setup, plan, settings, test_limit, stop, backend)


def run_sweep(
    lm: LM,
    task: Task,
    setup: ClozeSetup,
    method: str,
    setting: str,
    values: Sequence,
    seeds: Sequence[int],
    k: int,
    settings: TrainSettings,
    test_limit: int | None = None,
    stop: threading.Event | None = None,
    backend=None,
) -> Iterator[TrainEvent | GridRow]:
    """Train one method at each value of one setting (e.g. prompt length 1..100) x seeds; rows carry the value."""
    configs = sweep_configs(method, setting, values)
    validate_grid(task, configs, seeds, [k])
    plan = [
        PlannedRun(config, k, seed, f"{method} {setting}={value}", {setting: value})
        for config, value in zip(configs, values)
        for seed in seeds
    ]
    yield from run_plan(lm, task, setup, plan, settings, test_limit, stop, backend)


def run_plan(
    lm: LM,
    task: Task,
    setup: ClozeSetup,
    plan: Sequence[PlannedRun],
    settings: TrainSettings,
    test_limit: int | None = None,
    stop: threading.Event | None = None,
    backend=None,
) -> Iterator[TrainEvent | GridRow]:
    """The zero-shot row, then each planned run trained and scored on the same test texts: one after another in
    this process, or by `backend` (a `backends.RayBackend` or a `zerogpu.GPUCalls`), whose rows come in the order
    runs finish.

    `stop` ends the plan: the run in progress keeps its best weights so far and still gets its row, with
    status "stopped at step N of M"; runs not started are dropped.
    """
    for run in plan:  # a method that cannot train on this model, or on this template, fails before anything trains
        run.config.check(lm)
        run.config.prompt_for(setup.prompts[0]).check_room(lm)
    test = task.test_subset(test_limit)
    total_params = lm.num_parameters
    zero_shot = call_on_gpu(  # a GPU call on ZeroGPU, as the Cloze tab's: it scored on the app's CPU there
        evaluate,
        lm,
        task,
        [p.template.text for p in setup.prompts],
        setup.prompts[0].verbalizer.to_json(),
        setup.calibration,
        limit=len(test),
        kind=evaluation_kind(lm.name, 0),
        units=len(test) * len(setup.prompts),
        what=f"Scoring {len(test)} test texts zero-shot",
        shorter="score fewer test texts",
    )
    metrics = {"accuracy": zero_shot.accuracy, "macro_f1": zero_shot.macro_f1}
    yield GridRow(_row("zero-shot", 0, None, metrics, 0, total_params), result=zero_shot.row)
    if backend is not None:
        yield from run_on(backend, lm, task, setup, plan, settings, test, stop)
        return
    for run in plan:
        if stop is not None and stop.is_set():
            return
        row = None
        for item in train_and_score(lm, task, setup, run, settings, test, stop):
            row = item
            yield item
        if not isinstance(row, GridRow) or row.trained.stopped:
            return  # stopped: the run in progress has its row (or trained nothing), no other run starts


def train_and_score(
    lm: LM,
    task: Task,
    setup: ClozeSetup,
    run: PlannedRun,
    settings: TrainSettings,
    test: Sequence[dict],
    stop: threading.Event | None = None,
) -> Iterator[TrainEvent | GridRow]:
    """One planned run: its training events, then its GridRow scored on `test` (none when `stop` came first)."""
    train, dev = task.few_shot(run.k, run.seed)
    trained = None
    for item in train_method(lm, setup, run.config, train, dev, replace(settings, seed=run.seed), stop, run.label):
        if isinstance(item, TrainedMethod):
            trained = item
        else:
            yield item
    if trained.stopped and not trained.steps_done:
        return  # stopped before its first step: nothing trained to keep
    started = time.perf_counter()
    metrics = trained.evaluate(test)
    scoring_seconds = time.perf_counter() - started
    total_params = lm.num_parameters
    row = _row(run.config.name, run.k, run.seed, metrics, trained.trainable_params, total_params, trained)
    if trained.stopped:
        row["status"] = f"{STOPPED}at step {trained.steps_done} of {settings.steps}"
    prompt = setup.prompts[0]
    result = ResultRow.scored(
        "trained",
        lm.name,
        task,
        run.config.name,
        {
            "method": dataclasses.asdict(run.config),
            "trainer": settings.without_seed(),
            "templates": [p.template.text for p in setup.prompts],
            "verbalizer": prompt.verbalizer.to_json(),
            **run.extra,
        },
        test,
        metrics["predictions"],
        k=run.k,
        seed=run.seed,
        trainable_params=trained.trainable_params,
        train_seconds=trained.train_seconds,
        scoring_seconds=scoring_seconds,
        peak_memory_mb=row["peak_memory_mb"],
        device=str(lm.device),
        metrics={"model_params": total_params, "steps": row["steps"], "status": row["status"]},
    )
    trained.scored = Scored.of(result)
    yield GridRow(row | run.extra, trained, result)


def sweepable_settings(method: str) -> list[str]:
    """The numeric settings of a method that a sweep can vary."""
    config = method_config(method)
    return [
        f.name
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), (int, float)) and not isinstance(getattr(config, f.name), bool)
    ]


def _require_sweepable(method: str, setting: str) -> None:
    settings = sweepable_settings(method)
    if setting not in settings:
        raise PeftlabError(f"{method} has no numeric setting {setting!r} to sweep; choose from {', '.join(settings)}.")


def parse_sweep_values(method: str, setting: str, text: str) -> list:
    """ "1, 5, 20" -> [1, 5, 20] in the setting's own type (whole numbers for counts).

    Raises:
        PeftlabError: a setting the method cannot sweep, values that are not numbers of its type, or the default
            values (prompt lengths) for another setting: a sweep of learning rates 1 to 100 trained without a word.
    """
    _require_sweepable(method, setting)
    if text.strip() == PROMPT_LENGTHS and setting != "num_virtual_tokens":
        raise PeftlabError(
            f"The values {PROMPT_LENGTHS} are prompt lengths, the default setting's (num_virtual_tokens); give the "
            f"values of {setting} to try."
        )
    values = parse_list(text, type(getattr(method_config(method), setting)), f"The values of {setting}")
    if not values:
        raise PeftlabError(f"Give at least one value of {setting} to sweep.")
    return values


def sweep_configs(method: str, setting: str, values: Sequence) -> list[MethodConfig]:
    """One config per value; each value is validated by the method's own config (e.g. a length of 0 fails).

    Raises:
        PeftlabError: a setting the method cannot sweep, repeated values, or a value the method refuses.
    """
    _require_sweepable(method, setting)
    if len(set(values)) != len(values):
        raise PeftlabError(f"The values of {setting} repeat; give each value once.")
    return [method_config(method, **{setting: value}) for value in values]


def validate_grid(task: Task, methods: Sequence[MethodConfig], seeds: Sequence[int], shots: Sequence[int]) -> None:
    """Bad grids fail here, before a model is loaded or trained.

    Raises:
        PeftlabError: no method, seed or K, or a K the smallest class cannot supply twice over.
    """
    if not methods:
        raise PeftlabError("Choose at least one method to train.")
    if not seeds:
        raise PeftlabError("Give at least one seed.")
    if not shots:
        raise PeftlabError("Give at least one K (examples per class).")
    for k in shots:
        task.few_shot(k, seeds[0])  # K too large for the smallest class raises a clear error


def results_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Result rows as a DataFrame, RESULT_COLUMNS first. Whole numbers stay whole next to zero-shot's empty cell: the
    seed, and a sweep's whole-number setting (num_virtual_tokens read "1.0, 2.0, 4.0")."""
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in RESULT_COLUMNS]
    frame = pd.DataFrame(list(rows), columns=RESULT_COLUMNS + extra)
    frame["seed"] = frame["seed"].astype("Int64")
    for column in extra:
        values = [row[column] for row in rows if row.get(column) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            frame[column] = frame[column].astype("Int64")
    return frame


def _row(
    method: str, k: int, seed, metrics: dict, trainable: int, total: int, trained: TrainedMethod | None = None
) -> dict:
    steps = trained.steps_done if trained else 0
    seconds = trained.train_seconds if trained else 0.0
    # NaN where not measured: no step, or another run's window overlapped (`tuning.MemoryWindow`)
    peak = trained.history[-1].peak_memory_mb if trained and trained.history else math.nan
    return {
        "method": method,
        "K": k,
        "seed": seed,
        "test_accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "trainable_params": trainable,
        "trainable_share": trainable / total,
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 3) if steps else 0.0,
        "steps": steps,
        "peak_memory_mb": None if math.isnan(peak) else round(peak, 1),
        "status": "done",
    }


def summarize(results: pd.DataFrame, by: Sequence[str] = ("method", "K")) -> pd.DataFrame:
    """Mean and std of test accuracy and macro-F1 per group (default: method and K), with sizes and times.

    A failed run's row (`backends.failed_row`: no score, 0 parameters, 0 s) counts in none of them: two finished
    runs and a failed one read "3 runs", and the failed row, when it came first, gave the method 0 parameters."""
    failed = results["test_accuracy"].isna()
    measured = ["trainable_params", "trainable_share", "train_seconds"]
    results = results.assign(**{column: results[column].mask(failed) for column in measured})
    grouped = results.groupby(list(by), sort=False, dropna=False)
    summary = grouped.agg(
        accuracy_mean=("test_accuracy", "mean"),
        accuracy_std=("test_accuracy", "std"),
        macro_f1_mean=("macro_f1", "mean"),
        runs=("test_accuracy", "count"),
        trainable_params=("trainable_params", "first"),
        trainable_share=("trainable_share", "first"),
        train_seconds_mean=("train_seconds", "mean"),
    ).reset_index()
    # whole, where masking made floats; 0 for a method whose every run failed, as a failed row says
    summary["trainable_params"] = summary["trainable_params"].fillna(0).astype("int64")
    return summary.fillna({"accuracy_std": 0.0})


def run_record(
    lm: LM,
    task: Task,
    setup: ClozeSetup,
    methods: Sequence[MethodConfig],
    settings: TrainSettings,
    results: pd.DataFrame,
    curves: Sequence[dict],
    test_limit: int | None = None,
) -> str:
    """The whole run as JSON: what was trained how, the test texts scored per label (`support`), every result row,
    and every training step (TrainEvent dicts)."""
    record = {
        "model": lm.name,
        "task": task.name,
        "split": "test",
        "rows_scored": len(task.test_subset(test_limit)),
        "support": task.support(task.test_subset(test_limit)),
        "templates": [p.template.text for p in setup.prompts],
        "verbalizer": json.loads(setup.prompts[0].verbalizer.to_json()),
        "calibration": setup.calibration,
        "methods": [{"method": c.name, **dataclasses.asdict(c)} for c in methods],
        "train_settings": settings.without_seed(),
        "results": json.loads(results.to_json(orient="records")),
        "curves": list(curves),
    }
    return strict_json(record, indent=1)  # dev accuracy between evaluations (NaN) as null


def grid_notes(
    lm: LM, task: Task, setup: ClozeSetup, methods: Sequence[MethodConfig], scored, test_limit: int | None
) -> list[str]:
    """What the end of a grid warns of, in the tab and the command: `scored` results (ResultRows) leaning on one
    label (`report.leaning_notes`), test texts cut to fit the methods (`methods.cut_note`), and a field of the task
    the template leaves out (`Task.unread_note`)."""
    notes = leaning_notes(scored, task.label_names)
    if methods:
        prompt = setup.prompts[0]
        notes += [cut_note(lm, prompt, methods, task.test_subset(test_limit)), task.unread_note([prompt.template])]
    return [note for note in notes if note]
