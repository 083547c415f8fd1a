"""Grids of methods x seeds x shots on one task -> one DataFrame, plus its per-method summary."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import pandas as pd

from peftlab.cloze import ClozeSetup, evaluate
from peftlab.errors import PeftlabError
from peftlab.models import LM
from peftlab.tasks import Task
from peftlab.tuning import MethodConfig, TrainedMethod, TrainEvent, TrainSettings, train_method

RESULT_COLUMNS = [
    "method", "K", "seed", "test_accuracy", "macro_f1", "trainable_params", "trainable_share", "train_seconds",
    "seconds_per_step", "steps", "peak_memory_mb",
]


@dataclass
class GridRow:
    """One finished (method, K, seed): its result row and, for trained methods, the trained model."""

    values: dict  # RESULT_COLUMNS
    trained: TrainedMethod | None = None


def run_grid(
    lm: LM, task: Task, setup: ClozeSetup, methods: Sequence[MethodConfig], seeds: Sequence[int], shots: Sequence[int],
    settings: TrainSettings, test_limit: int | None = None, stop: threading.Event | None = None,
) -> Iterator[TrainEvent | GridRow]:
    """Yield training events and one GridRow per finished (method, K, seed).

    The first row is the zero-shot cloze result of the same prompt on the same test texts.
    """
    validate_grid(task, methods, seeds, shots)
    test = task.test[:test_limit] if test_limit else task.test
    total_params = sum(p.numel() for p in lm.model.parameters())
    zero_shot = evaluate(lm, task, [p.template.text for p in setup.prompts], setup.prompts[0].verbalizer.to_json(),
                         setup.calibration, limit=len(test))
    yield GridRow(_row("zero-shot", 0, None, {"accuracy": zero_shot.accuracy, "macro_f1": zero_shot.macro_f1}, 0, total_params))
    for k in shots:
        for seed in seeds:
            train, dev = task.few_shot(k, seed)
            for config in methods:
                trained = None
                for item in train_method(lm, task, setup, config, train, dev, replace(settings, seed=seed), stop):
                    if isinstance(item, TrainedMethod):
                        trained = item
                    else:
                        yield item
                if stop is not None and stop.is_set():
                    return
                metrics = trained.evaluate(test)
                yield GridRow(_row(config.name, k, seed, metrics, trained.trainable_params, total_params, trained), trained)


def parse_int_list(text: str, what: str) -> list[int]:
    """"13, 21,42" -> [13, 21, 42]; anything else is one clear error naming `what`."""
    try:
        return [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise PeftlabError(f"{what} must be comma-separated whole numbers, not {text!r}.") from None


def validate_grid(task: Task, methods: Sequence[MethodConfig], seeds: Sequence[int], shots: Sequence[int]) -> None:
    """Bad grids fail here, before a model is loaded or trained."""
    if not methods:
        raise PeftlabError("Choose at least one method to train.")
    if not seeds:
        raise PeftlabError("Give at least one seed.")
    if not shots:
        raise PeftlabError("Give at least one K (examples per class).")
    for k in shots:
        task.few_shot(k, seeds[0])  # K too large for the smallest class raises a clear error


def results_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Result rows as a DataFrame in RESULT_COLUMNS order (seed stays an integer next to zero-shot's empty one)."""
    frame = pd.DataFrame(list(rows), columns=RESULT_COLUMNS)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _row(method: str, k: int, seed, metrics: dict, trainable: int, total: int, trained: TrainedMethod | None = None) -> dict:
    steps = trained.steps_done if trained else 0
    seconds = trained.train_seconds if trained else 0.0
    return {
        "method": method, "K": k, "seed": seed, "test_accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
        "trainable_params": trainable, "trainable_share": trainable / total, "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / steps, 3) if steps else 0.0, "steps": steps,
        "peak_memory_mb": round(trained.history[-1].peak_memory_mb, 1) if trained and trained.history else None,
    }


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of test accuracy and macro-F1 per (method, K), with sizes and times."""
    grouped = results.groupby(["method", "K"], sort=False)
    summary = grouped.agg(
        accuracy_mean=("test_accuracy", "mean"), accuracy_std=("test_accuracy", "std"),
        macro_f1_mean=("macro_f1", "mean"), runs=("test_accuracy", "size"),
        trainable_params=("trainable_params", "first"), trainable_share=("trainable_share", "first"),
        train_seconds_mean=("train_seconds", "mean"),
    ).reset_index()
    return summary.fillna({"accuracy_std": 0.0})
