"""The shared few-shot trainer: every method of `peftlab.methods` trains here on equal terms.

Prompt-based methods (prompt tuning, P-tuning, prefix tuning, LoRA, adapters, BitFit, full fine-tuning)
all train the same objective: cross-entropy over the verbalizer's label-word scores at the mask,
computed by the Cloze tab's scoring code (`peftlab.scoring.word_scores`), so comparisons between them
are fair. The head-only baseline trains a linear classifier on the frozen model's mask representation.
"""

from __future__ import annotations

import contextlib
import math
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from peftlab.cloze import ClozeSetup, label_log_probs, words_to_label_log_probs
from peftlab.config import Config, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.forking import held_across_fork
from peftlab.methods import MethodConfig
from peftlab.metrics import accuracy, macro_f1, mean_gold_log_prob
from peftlab.models import LM, autocast_for
from peftlab.prompts import Prompt
from peftlab.scoring import word_scores
from peftlab.seeding import drawing, seeded
from peftlab.training import Event, TrainingLoop

SELECTION_SCORES = {"log-likelihood": "log_likelihood", "accuracy": "accuracy"}  # choice -> TrainedMethod.evaluate key


@dataclass
class TrainSettings(Config):
    """Trainer settings shared by every method, so a comparison runs them on equal terms."""

    steps: int = setting(30, "optimiser steps", minimum=1, cap="steps")
    batch_size: int = setting(8, "training examples per step", minimum=1)
    eval_every: int = setting(10, "steps between dev evaluations", minimum=1)
    patience: int = setting(3, "dev evaluations without improvement before stopping early", minimum=1)
    seed: int = seed_setting(13, "seed for initialisation and batch order (a grid sets it per run)", cli=False)
    select_by: str = setting(
        "log-likelihood",
        "dev score that picks the kept weights and stops early: log-likelihood (the gold label's "
        "mean log-probability, smoother than accuracy on a few dozen dev texts) or accuracy",
        choices=tuple(SELECTION_SCORES),
        label="keep the weights with the best dev",
        subject="Select by",
    )

    def without_seed(self) -> dict:
        """The settings as a result keeps them: its seed is the result's own (a grid sets it per run; a seed-13
        run's settings said "seed": 0)."""
        return {name: value for name, value in self.to_dict().items() if name != "seed"}


@dataclass(kw_only=True)
class TrainEvent(Event):
    """What the trainer yields: one per step, with dev scores on evaluation steps."""

    method: str
    seed: int
    train_loss: float
    dev_accuracy: float  # nan between evaluations
    learning_rate: float
    peak_memory_mb: float
    dev_log_likelihood: float = float("nan")  # the gold label's mean log-probability on dev; nan between evaluations


@dataclass(frozen=True)
class Scored:
    """A trained method's test result as a saved method carries it (`saving.save_trained`), so a downloaded zip says
    what it was trained on and how it scored: the task, K, seed, split, rows scored of the split's, accuracy,
    macro-F1 and F1 per class, the store's row id and the trainer's settings (a PET classifier's: the whole PET
    run's, under "pet", "patterns" and "trainer")."""

    task: str
    k: int | None
    seed: int | None
    split: str
    rows_scored: int
    rows_in_split: int
    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    result_id: str
    trainer: dict | None

    @classmethod
    def of(cls, result) -> Scored:
        """What `result` (the `store.ResultRow` of the method's test scores) says of its data and score."""
        settings = result.settings
        return cls(
            task=result.task,
            k=result.k,
            seed=result.seed,
            split=settings.get("split", "test"),
            rows_scored=settings.get("rows_scored", len(result.predictions)),
            rows_in_split=settings.get("rows_in_split", len(result.predictions)),
            accuracy=result.accuracy,
            macro_f1=result.macro_f1,
            per_class_f1=result.per_class_f1,
            result_id=result.id,
            trainer=settings.get("trainer"),
        )


@dataclass
class TrainedMethod:
    """A trained method: classifies examples and knows its size."""

    config: MethodConfig
    lm: LM
    prompt: Prompt
    model: torch.nn.Module
    trainable_params: int
    train_seconds: float = 0.0
    steps_done: int = 0
    history: list[TrainEvent] = field(default_factory=list)
    stopped: bool = False  # a stop flag ended training before its steps (or early stopping) did
    scored: Scored | None = None  # its test result, saved and loaded with it

    def __reduce__(self):
        """Pickled as its saved files (the method's own `save`: trainable weights only) and what rebuilds the rest
        from the cached model: a method crosses into a GPU call (`zerogpu`) without its frozen copy of the model
        (`LM` pickles by reference)."""
        from peftlab.saving import saved_files  # saving builds on this module

        files = saved_files(lambda folder: self.config.save(self.model, folder))
        kept = (self.trainable_params, self.train_seconds, self.steps_done, self.history, self.stopped, self.scored)
        return _rebuilt, (self.config, self.lm, self.prompt, files, kept)

    def loss_warning(self) -> str | None:
        """The warning its training loss calls for, if it rose or stayed flat (`loss_note`), or None."""
        return loss_note(self.config.name, [e.train_loss for e in self.history], self.config.learning_rate)

    def log_probs(self, examples: Sequence[dict], batch_size: int = 32) -> torch.Tensor:
        """(N, L) label log-probs, no gradient; prompt-based methods score through cloze's length-sorted batches.

        Raises:
            PeftlabError: an example without a field the template reads (a bare KeyError 'hypothesis' before).
        """
        fields = self.prompt.template.fields
        if lacking := next((e for e in examples if any(f not in e for f in fields)), None):
            missing = " and ".join(f"'{f}'" for f in fields if f not in lacking)
            raise PeftlabError(
                f"An example has no {missing}, which the method's template ({self.prompt.template.text!r}) reads; "
                "give every example each of its fields."
            )
        if not examples:  # torch.cat of no batches raised for the methods with a head of their own
            return torch.empty(0, len(self.prompt.verbalizer.words))
        with torch.inference_mode(), autocast_for(self.lm.model):
            if self.config.prompt_based:
                return label_log_probs(self.lm, self.prompt, examples, batch_size, model=self.model).float()
            batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
            return torch.cat([self.config.classify(self.lm, self.prompt, self.model, b).float().cpu() for b in batches])

    def evaluate(self, examples: Sequence[dict]) -> dict:
        """Accuracy, macro-F1, the gold label's mean log-probability, and each example's predicted label index.

        Raises:
            PeftlabError: an example without its gold "label" (a label index), or one `log_probs` refuses.
        """
        if any("label" not in e for e in examples):
            raise PeftlabError("An example has no 'label'; evaluate needs each example's gold label index.")
        gold = np.array([e["label"] for e in examples])
        log_probs = self.log_probs(examples)
        predicted = log_probs.argmax(1).numpy()
        n_labels = len(self.prompt.verbalizer.words)
        return {
            "accuracy": accuracy(gold, predicted),
            "macro_f1": macro_f1(gold, predicted, n_labels),
            "log_likelihood": mean_gold_log_prob(log_probs, gold),
            "predictions": predicted.tolist(),
        }


def _rebuilt(config: MethodConfig, lm: LM, prompt: Prompt, files: dict[str, bytes], kept: tuple) -> TrainedMethod:
    """A TrainedMethod from its pickle (`TrainedMethod.__reduce__`)."""
    from peftlab.saving import folder_with  # saving builds on this module

    with folder_with(files) as folder, drawing():
        model = config.load(lm, prompt, folder)
    return TrainedMethod(config, lm, prompt, model, *kept)


def training_log_probs(trained: TrainedMethod, examples: Sequence[dict]) -> torch.Tensor:
    """(B, L) differentiable label log-probs: verbalizer scoring, or the method's own classifier."""
    if trained.config.prompt_based:
        query_lists = [trained.prompt.queries(trained.lm, e) for e in examples]
        scores = word_scores(trained.lm, query_lists, len(trained.prompt.verbalizer.flat_words), model=trained.model)
        return words_to_label_log_probs(scores, trained.prompt.verbalizer)
    return trained.config.classify(trained.lm, trained.prompt, trained.model, examples)


def gold_label_loss(trained: TrainedMethod, batch: Sequence[dict]) -> torch.Tensor:
    """The mean cross-entropy of the batch's gold labels under the method's label distribution (a scalar)."""
    gold = torch.tensor([e["label"] for e in batch])
    with autocast_for(trained.lm.model):
        log_probs = training_log_probs(trained, batch)  # (B, L)
    return torch.nn.functional.nll_loss(log_probs.float().cpu(), gold)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window, so each run of a grid reports its own peak, not the largest so far.

    CUDA resets its counter; on Linux, writing 5 to /proc/self/clear_refs resets the process's resident
    high-water mark. Elsewhere the CPU peak stays the process's lifetime peak.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last `reset_peak_memory`: CUDA allocations, or the process's resident set (VmHWM)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's lifetime peak


class MemoryWindow:
    """One training run's peak-memory window. Its measures are the process's (CUDA's counter per device, Linux's
    VmHWM): a run that started while another trained reset the other's peak, and each counted the other's memory as
    its own (a LoRA run read 1,273 MB beside another job, 874 MB alone). A window that overlaps another's on the
    same device reports NaN (not measured) rather than the process's number. Memory of work that is no training run
    (scoring, RLHF stages, a visitor loading a saved method) still counts in a run's peak, and a run its caller
    leaves unfinished keeps its window open until the generator is closed or collected."""

    _lock = held_across_fork(threading.Lock(), rank=3)
    _open: set[MemoryWindow] = set()

    def __init__(self, device: torch.device):
        self.device = device
        with MemoryWindow._lock:
            beside = [other for other in MemoryWindow._open if other.device == device]
            for other in beside:
                other.overlapped = True
            self.overlapped = bool(beside)
            MemoryWindow._open.add(self)
            reset_peak_memory(device)

    def peak_mb(self) -> float:
        """MB at most since the window opened, NaN once another run's window overlapped it."""
        return math.nan if self.overlapped else peak_memory_mb(self.device)

    def close(self) -> None:
        """The run ended: a run that starts later no longer overlaps it."""
        with MemoryWindow._lock:
            MemoryWindow._open.discard(self)

    def __enter__(self) -> MemoryWindow:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def train_method(
    lm: LM,
    setup: ClozeSetup,
    config: MethodConfig,
    train: Sequence[dict],
    dev: Sequence[dict],
    settings: TrainSettings,
    stop: threading.Event | None = None,
    label: str | None = None,
    loss: Callable[[TrainedMethod, list[dict]], torch.Tensor] | None = None,
) -> Iterator[TrainEvent | TrainedMethod]:
    """Train one method on (train, dev), yielding a TrainEvent per step and the TrainedMethod last.

    Events carry `label` as their method (default: the config's name), so curves of several variants
    of one method (a sweep) stay apart. The loss of a batch is the cross-entropy of its gold labels, or
    `loss(trained, batch)` (PET's distillation and auxiliary language-modelling losses).

    Keeps the trainable weights of the best dev evaluation (LM-BFF's model selection), by the dev score
    `settings.select_by` names, and stops early after `patience` evaluations without improvement.
    When `stop` is set, training ends after the current step and keeps the best weights so far (the
    current ones are scored on dev first if that step had no evaluation); `TrainedMethod.stopped` says so.
    """
    with MemoryWindow(lm.device) as memory:  # closed however the run ends, or is left unfinished by its caller
        prompt = config.prompt_for(setup.prompts[0])
        with seeded(settings.seed):  # the new weights' initialisation
            model, parameters = config.build(lm, prompt)
        trained = TrainedMethod(config, lm, prompt, model, sum(p.numel() for p in parameters))
        loop = TrainingLoop(
            parameters,
            steps=settings.steps,
            batch_size=settings.batch_size,
            learning_rate=config.learning_rate,
            seed=settings.seed,
            eval_every=settings.eval_every,
            evaluate=lambda: trained.evaluate(dev),
            select=SELECTION_SCORES[settings.select_by],
            patience=settings.patience,
        )

        def batch_loss(batch: list[dict]) -> torch.Tensor:
            if loss is not None:
                return loss(trained, batch)
            return gold_label_loss(trained, batch)

        started = time.perf_counter()
        for record in loop.run(train, batch_loss, stop):
            scores = record.scores or {"accuracy": float("nan"), "log_likelihood": float("nan")}
            event = TrainEvent(
                method=label or config.name,
                seed=settings.seed,
                step=record.step,
                train_loss=record.loss,
                dev_accuracy=scores["accuracy"],
                dev_log_likelihood=scores["log_likelihood"],
                learning_rate=record.learning_rate,
                elapsed=record.elapsed,
                peak_memory_mb=memory.peak_mb(),
            )
            trained.history.append(event)
            trained.steps_done = record.step
            yield event
        trained.stopped = loop.stopped
        trained.train_seconds = time.perf_counter() - started
        yield trained


def loss_trend(losses: Sequence[float], tolerance: float = 0.05) -> str | None:
    """How a run's training loss went, from the mean of its first quarter of steps to that of its last: "rose" (up
    by more than `tolerance`, relative: a learning rate too large), "flat" (not down by `tolerance`: one too small,
    or too few steps), or None (it fell). A run of 2 or 3 steps is too noisy to call flat; it rose when its last
    loss is above 1.5 times its first (a learning rate of 5 took SFT from 4.1 to 29.7 in 2 steps)."""
    if len(losses) < 4:
        return "rose" if len(losses) >= 2 and losses[-1] > 1.5 * losses[0] else None
    quarter = max(1, len(losses) // 4)
    first, last = np.mean(losses[:quarter]), np.mean(losses[-quarter:])
    if last > first * (1 + tolerance):
        return "rose"
    return "flat" if last > first * (1 - tolerance) else None


def loss_note(name: str, losses: Sequence[float], learning_rate: float) -> str | None:
    """The warning `loss_trend` calls for, naming the run and its learning rate, or None. (A loss that rose was
    called flat, with the advice of a larger learning rate, which made it worse.)"""
    trend = loss_trend(losses)
    if trend == "rose":
        return (
            f"The training loss of {name} rose over {len(losses)} steps: try a smaller learning rate than "
            f"{learning_rate:g}."
        )
    if trend == "flat":
        return (
            f"The training loss of {name} stayed flat over {len(losses)} steps: try a larger learning rate than "
            f"{learning_rate:g} or more steps."
        )
    return None
