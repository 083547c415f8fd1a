"""Serving many visitors from one process: public-mode caps, how many heavy jobs run at once, stop flags.

A public Space (`PEFTLAB_PUBLIC=1`, the default when `SPACE_ID` is set; `PEFTLAB_PUBLIC=0` turns it off)
caps what one visitor's job may ask for, so one visitor cannot hold the machine for hours or load a
model it has no memory for. Caps are checked where a job starts, with one sentence naming the input and
its limit; the app also shows them next to the inputs they limit. The command line is never capped.

Heavy jobs (evaluations, searches, training, RLHF stages) share one queue sized by the hardware:
`heavy_job_limit()` at once (1 on a CPU, 2 on a GPU; `PEFTLAB_HEAVY_JOBS` overrides). Cheap clicks
(classify one text, suggestions, downloads, Stop) have their own queues and never wait behind them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace

import torch

from peftlab.config import typed_number
from peftlab.errors import PeftlabError

PUBLIC_MODELS = ("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", "bert-base-uncased", "roberta-large")


def public_mode() -> bool:
    """True on a public Space: `PEFTLAB_PUBLIC` when set (0/false/no/off turn it off), else whether `SPACE_ID` is."""
    value = os.environ.get("PEFTLAB_PUBLIC")
    if value is not None:
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(os.environ.get("SPACE_ID"))


def heavy_job_limit() -> int:
    """Heavy jobs at once: `PEFTLAB_HEAVY_JOBS`, else 1 on a CPU (two would only share its cores) and 2 on a GPU."""
    value = os.environ.get("PEFTLAB_HEAVY_JOBS")
    if value:
        return max(1, int(value))
    return 2 if torch.cuda.is_available() else 1


@dataclass(frozen=True)
class Caps:
    """The most one visitor's job may ask for; None means no limit. Counts are per job."""

    steps: int | None = None  # optimiser steps of one training run (few-shot run, SFT, reward model)
    runs: int | None = None  # training runs of one grid or sweep (methods x seeds x K values, or values x seeds)
    shots: int | None = None  # K, labelled examples per class
    test_texts: int | None = None  # test texts scored by one evaluation
    iterations: int | None = None  # AutoPrompt iterations
    ppo_steps: int | None = None
    comparisons: int | None = None  # reward-model training comparisons (each is sampled and ranked first)
    unlabelled: int | None = None  # unlabelled texts PET's ensemble labels
    seeds: int | None = None  # seeds of one PET run or standard comparison (each trains every model again)
    patterns: int | None = None  # PET's patterns (a model each, per seed and generation)
    generations: int | None = None  # iPET generations
    job_minutes: float | None = None  # wall time after which a job stops itself, keeping what it finished
    upload_mb: float = 200.0  # largest uploaded file
    models: tuple[str, ...] | None = None  # the models a visitor may load; None: any embedded name, folder or Hub id

    def check(self, cap: str, value: float, what: str) -> None:
        """Raise a PeftlabError when `value` of the input called `what` exceeds the cap named `cap`."""
        limit = getattr(self, cap)
        if limit is not None and value > limit:
            raise PeftlabError(
                f"{what} is {typed_number(value)}, above this public Space's limit of {limit:g}; lower it, or run "
                "peftlab on your own machine for larger jobs."
            )

    def check_model(self, name: str) -> None:
        """Raise a PeftlabError when a visitor may not load the model `name` here."""
        if self.models is not None and (name or "").strip() not in self.models:
            raise PeftlabError(
                f"This public Space loads only these models: {', '.join(self.models)}; {name!r} is not "
                "one of them (run peftlab on your own machine for others)."
            )

    def note(self, cap: str) -> str:
        """What the UI shows next to an input this cap limits ("" when it is not capped)."""
        limit = getattr(self, cap)
        return f"at most {limit:g} on this public Space" if limit is not None else ""

    @property
    def job_seconds(self) -> float | None:
        return None if self.job_minutes is None else 60 * self.job_minutes


PUBLIC_CAPS = Caps(
    steps=60,
    runs=12,
    shots=32,
    test_texts=500,
    iterations=30,
    ppo_steps=40,
    comparisons=2000,
    unlabelled=1000,
    seeds=5,  # LM-BFF reports 5 seeds
    patterns=8,  # PET's tasks have 4 to 6
    generations=3,  # iPET's papers run 3
    job_minutes=20,
    upload_mb=5,
    models=PUBLIC_MODELS,
)
LOCAL_CAPS = Caps()


def current_caps() -> Caps:
    """PUBLIC_CAPS on a public Space (`PEFTLAB_PUBLIC_MODELS`, comma-separated, sets its models), else LOCAL_CAPS."""
    if not public_mode():
        return LOCAL_CAPS
    models = os.environ.get("PEFTLAB_PUBLIC_MODELS")
    if models:
        return replace(PUBLIC_CAPS, models=tuple(m.strip() for m in models.split(",") if m.strip()))
    return PUBLIC_CAPS


class JobStop(threading.Event):
    """A job's stop flag, read by every long loop between steps (`is_set()`).

    Set by the job's Stop button or when its visitor leaves (`stop(reason)`), and by itself once the job
    has run `seconds`. `reason` says which, for the job's final status.
    """

    def __init__(self, seconds: float | None = None):
        super().__init__()
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.seconds = seconds
        self.reason = ""

    def stop(self, reason: str) -> None:
        if not super().is_set():
            self.reason = reason
        self.set()

    def is_set(self) -> bool:
        if self.deadline is not None and not super().is_set() and time.monotonic() > self.deadline:
            self.stop(f"it reached this Space's limit of {self.seconds / 60:g} minutes per job")
        return super().is_set()
