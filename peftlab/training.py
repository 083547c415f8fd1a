"""The one training loop of peftlab (few-shot methods, SFT, the reward model), and the base of every event.

One optimiser step draws a batch (`random.Random(seed)`: everything trained with one seed sees the same batches;
each drawn independently, or with `passes` the next of a walk through a fresh shuffle, so that every example is
seen once per pass), computes the caller's loss, backpropagates (the loss scaled under fp16 autocast:
`models.loss_scaler`), optionally clips the gradient norm, takes an AdamW step (no weight decay) and decays the
learning rate linearly to 0 over the steps. Every `eval_every` steps and at the last one, `evaluate()` scores the
current weights. With `select` naming one of those scores, the weights with the best score are kept (LM-BFF's
model selection; a later tie does not replace an earlier best), training stops after `patience` evaluations
without gain, and the best weights are put back at the end. A stop flag ends training between steps; the current
weights are scored first when the last step had no evaluation, so the best so far is known.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from peftlab.errors import PeftlabError
from peftlab.models import check_trainable, loss_scaler


def check_finite(loss: torch.Tensor, where: str, learning_rate: float, before_any_update: bool = False) -> None:
    """Raises PeftlabError when `loss` is NaN or infinite, before more steps spread it through the weights: training
    then went on without a word (on an H200 a reward model's NaN loss read as 0 % held-out accuracy, and PPO on it ended
    in a CUDA device-side assert; a PET pattern model scored every text alike). `where` says the step ("step 3 of
    45"). With `before_any_update` (step 1) the loss is the starting model's own: no learning rate of this training
    made it, so the sentence points to that model."""
    if not torch.isfinite(loss).all():
        value = "NaN" if torch.isnan(loss).any() else "infinite"
        if before_any_update:  # a reward model on an SFT model that diverged said to lower its own learning rate
            raise PeftlabError(
                f"The training loss is {value} at {where}, before any update: the model it starts from already gives "
                f"{value} values (did its own training diverge?). Train that model again with a smaller learning rate."
            )
        raise PeftlabError(
            f"The training loss became {value} at {where}, where training stopped: the steps after it would only "
            f"spread NaN through the weights. Lower the learning rate ({learning_rate:g} now) and run again."
        )


@dataclass(kw_only=True)
class Event:
    """What long work yields as it goes (training steps, search iterations): the step and seconds since it began.

    Every trainer's event extends it with its own measurements, always built with keywords, so the app, the
    command line and the benchmarks read any of them the same way (`dataclasses.asdict`).
    """

    step: int
    elapsed: float


@dataclass(frozen=True)
class Pace:
    """A job's setup seconds (before its first step) and seconds per step, measured on this machine."""

    setup: float
    per_step: float

    @classmethod
    def between(cls, first: Event, later: Event) -> Pace:
        """The pace from two of a job's events (`later.step > first.step`; `Event.elapsed` counts from its start)."""
        per_step = (later.elapsed - first.elapsed) / (later.step - first.step)
        return cls(max(first.elapsed - first.step * per_step, 0.0), per_step)

    def seconds(self, steps: int) -> float:
        return self.setup + steps * self.per_step


@dataclass
class LoopStep:
    """One step of `TrainingLoop.run`: its loss, the learning rate it used, and the evaluation's scores (or None)."""

    step: int
    loss: float
    learning_rate: float
    elapsed: float
    scores: dict | None = None


def evaluation_count(steps: int, eval_every: int) -> int:
    """Dev evaluations a TrainingLoop of `steps` makes, none stopping it early: every `eval_every` steps and at the
    last step, once."""
    return -(-steps // eval_every)


class TrainingLoop:
    """Trains `parameters` by minimising a caller's batch loss; see the module docstring for what a step does.

    Read `steps_done`, `stopped` (a stop flag ended it) and `best_score` during or after `run`.
    """

    def __init__(
        self,
        parameters: Sequence[torch.nn.Parameter],
        *,
        steps: int,
        batch_size: int,
        learning_rate: float,
        seed: int,
        eval_every: int | None = None,
        evaluate: Callable[[], dict] | None = None,
        select: str | None = None,
        patience: int | None = None,
        max_grad_norm: float | None = None,
        passes: bool = False,
    ):
        self.parameters = list(parameters)
        check_trainable(self.parameters)
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.eval_every, self.evaluate, self.select, self.patience = eval_every, evaluate, select, patience
        self.max_grad_norm, self.passes = max_grad_norm, passes
        self.optimizer = torch.optim.AdamW(self.parameters, lr=learning_rate, weight_decay=0.0)
        self.scaler = loss_scaler(self.parameters[0])
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1 - step / steps)  # linear decay
        self.steps_done, self.stopped = 0, False
        self.best_score, self._best_weights = -math.inf, None

    def run(
        self, examples: Sequence, batch_loss: Callable[[list], torch.Tensor], stop: threading.Event | None = None
    ) -> Iterator[LoopStep]:
        """Yield a LoopStep per optimiser step; afterwards the best weights (with `select`) are in place."""
        order = random.Random(self.seed)
        started = time.perf_counter()
        evaluations_without_gain, evaluated_last = 0, False
        walk: list = []  # with `passes`: the examples still to come in this pass, in order
        for step in range(1, self.steps + 1):
            if stop is not None and stop.is_set():
                self.stopped = True
                if self.select and self.steps_done and not evaluated_last:
                    self._keep_if_best(self.evaluate())  # the weights of the last step, scored before they are judged
                break
            size = min(self.batch_size, len(examples))
            if not self.passes:
                batch = order.sample(list(examples), size)
            else:
                if len(walk) < size:  # a pass ends: the next one starts from a fresh shuffle
                    walk += order.sample(list(examples), len(examples))
                batch, walk = walk[:size], walk[size:]
            loss = batch_loss(batch)
            where, learning_rate = f"step {step} of {self.steps}", self.optimizer.param_groups[0]["initial_lr"]
            check_finite(loss, where, learning_rate, before_any_update=step == 1)
            self.optimizer.zero_grad()
            self.scaler.scale(loss).backward()
            if self.max_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
                torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
            self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed; the scale then shrinks
            self.scaler.update()
            learning_rate = self.schedule.get_last_lr()[0]
            self.schedule.step()
            scores, evaluated_last = None, False
            # every eval_every steps and at the last one, as `evaluation_count` counts them
            if self.evaluate is not None and (step % self.eval_every == 0 or step == self.steps):
                scores, evaluated_last = self.evaluate(), True
                if self.select:
                    evaluations_without_gain = 0 if self._keep_if_best(scores) else evaluations_without_gain + 1
            self.steps_done = step
            yield LoopStep(step, loss.item(), learning_rate, time.perf_counter() - started, scores)
            if self.patience is not None and evaluations_without_gain >= self.patience:
                break
        if self._best_weights is not None:
            with torch.no_grad():
                for parameter, saved in zip(self.parameters, self._best_weights):
                    parameter.copy_(saved)

    def _keep_if_best(self, scores: dict) -> bool:
        if scores[self.select] > self.best_score:  # a later tie does not replace an earlier best
            self.best_score, self._best_weights = scores[self.select], [p.detach().clone() for p in self.parameters]
            return True
        return False
