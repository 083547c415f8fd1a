"""Before a long job: its expected time from costs measured on this machine, and a second press to start it.

Grids, sweeps and PET are priced from one text and one training step measured up front (`measured_costs`).
A job of its own kind (an AutoPrompt search, an RLHF stage) is priced by its own pace (`Paced`): the seconds of its
setup and of each step, read from its events; the first run of a kind on this machine measures its first steps
and, when the whole would be long, stops there and asks for the second press, which the pace then prices up front.
"""

from __future__ import annotations

import json

import gradio as gr

from peftlab.config import duration
from peftlab.models import LM
from peftlab.serving import current_caps
from peftlab.standard import MeasuredCosts, measuring
from peftlab.store import fingerprint
from peftlab.training import Event, Pace
from peftlab.ui.display import left
from peftlab.ui.sessions import SESSIONS
from peftlab.zerogpu import on_gpu

CONFIRM_ABOVE_S = 120.0  # a job expected to run longer starts on a second press, after its estimate was shown
_COSTS: dict[tuple, MeasuredCosts] = {}  # measured once per model, scoring dtype, task and template in this process


def measured_costs(
    lm: LM, task, template: str, verbalizer, progress, scoring_lm: LM | None = None, training: bool = True
) -> MeasuredCosts:
    """This machine's cost of one text (scored with `scoring_lm`, default `lm`) and, with `training`, one training
    step of `lm` (`standard.measuring`, a few seconds the first time, said on `progress`, the press's gr.Progress),
    kept for the process: the hardware does not change between a visitor's presses, so the press that confirms a
    job does not measure again."""
    scoring_lm = scoring_lm or lm
    key = (lm.name, scoring_lm.model.dtype, *task_key(task), template)
    trained = (*key, True)
    key = trained if training or trained in _COSTS else (*key, False)  # a measurement with training serves both
    if key not in _COSTS:
        # the first press waited here behind a bare timer, 110 s on a busy CPU: each part is said as it starts
        parts = on_gpu(
            measuring,
            scoring_lm,
            lm,
            task,
            template,
            verbalizer,
            training,
            kind=f"measure:{lm.name}",
            what="Measuring a text and a step",
        )
        for part in parts:
            if isinstance(part, MeasuredCosts):
                _COSTS[key] = part
            else:
                # no bar: a 0.0 % that stood for a minute read as stuck; LoRA's steps price every method (a visitor
                # who picked prompt tuning wondered why LoRA was measured)
                progress(
                    None,
                    desc=f"measuring this machine's speed once, to estimate the time (a LoRA step is the "
                    f"yardstick every method is priced from): {part}",
                )
    return _COSTS[key]


def task_key(task) -> tuple:
    """What tells a task's costs apart: its name, and a fingerprint of a few of its test texts. Two visitors'
    uploads of the same file name shared one measurement by name alone, the second's priced by the first's texts
    (a 20-minute job could then start without the second press its estimate asks for)."""
    return task.name, fingerprint(task.test_subset(16))


def unconfirmed(
    request: gr.Request | None,
    kind: str,
    form: dict,
    seconds: float,
    plan: str,
    source: str = "a training step and a text measured just now",
    warning: str = "",
) -> str | None:
    """The message that asks for a second press when a job of `kind` is expected to take over CONFIRM_ABOVE_S, or
    would do what `warning` says (an RLHF stage run again drops the stages trained after it: a press meant to try a
    setting took a student's whole pipeline); None when it may start: it is short and warns of nothing, or the same
    form was pressed again right after the message."""
    if seconds <= CONFIRM_ABOVE_S and not warning:
        return None
    values = SESSIONS.get(request).values
    key = json.dumps(form, default=str, sort_keys=True)
    if values.pop(f"confirm:{kind}", None) == key:
        return None
    values[f"confirm:{kind}"] = key
    if seconds <= CONFIRM_ABOVE_S:
        gr.Info(f"{warning} Press the button again to go on.")
        return f"⚠️ {warning} Press the button again to go on."
    estimate = f"{plan}: about {duration(seconds)} on this machine"
    limit = current_caps().job_seconds
    # Said before the second press: PET drops a seed unfinished at the limit, so its defaults (estimated at 67 and
    # 78 min on a 2-core CPU, over 20 min a seed) would end with nothing to show.
    over = (
        f" This Space stops a job after {duration(limit)}; what has finished by then is kept."
        if limit is not None and seconds > limit
        else ""
    )
    also = f" {warning}" if warning else ""
    gr.Info(f"{estimate}.{over}{also} Press the button again to start.")  # in sight even when the line is not
    return f"**{estimate}** (from {source}).{over}{also} Press the button again to start, or make the job smaller."


_PACES: dict[tuple, Pace] = {}  # by kind of job and what sets its cost (model, batch size, ...), for the process
# settings that change what a step learns but not what it costs: a new value is priced by the pace already measured
COST_FREE = {"steps", "iterations", "seed", "learning_rate", "beta", "gamma", "lam", "clip_range", "value_clip_range"}
COST_FREE |= {"value_coef", "target_kl", "kl_horizon", "adaptive_kl", "positions", "init_token", "test_limit"}


def cost_key(config) -> tuple:
    """The settings of `config` (a Config) that set the cost of a step, as a key of measured paces."""
    return tuple(sorted((k, json.dumps(v)) for k, v in config.to_dict().items() if k not in COST_FREE))


def known_pace(key: tuple) -> Pace | None:
    return _PACES.get(key)


def record_pace(key: tuple, pace: Pace) -> None:
    """Keep a pace measured outside `Paced` (the seconds per sampled response of a whole sampling, say)."""
    _PACES[key] = pace


class Paced:
    """One press of a job of `steps` steps priced by its own pace: `refusal()` before it starts, `observe(event)`
    on each of its events (it measures; on the first measurement of a job of this `key` it may answer the refusal
    instead, and the caller ends the job and drops what it made), `time_left` for the status.

    `extra(pace)` adds what the job does besides its steps (scoring test texts, sampling), priced from the pace."""

    def __init__(self, request, kind: str, form: dict, key: tuple, steps: int, plan: str, extra=lambda pace: 0.0):
        self.request, self.kind, self.form, self.plan = request, kind, form, plan
        self.key, self.steps, self.extra = (kind, *key), steps, extra
        self.events: list[Event] = []  # the job's first three events: they price it
        self.decided = self.key in _PACES  # the job was priced by a measured pace before it started
        self.confirmed = False  # this press is the second one, after the estimate

    def seconds(self, pace: Pace) -> float:
        return pace.seconds(self.steps) + self.extra(pace)

    def measured(self) -> float | None:
        """The job's seconds by the pace measured for its key (a press before it), or None before any: what its GPU
        call asks for at least on ZeroGPU (`zerogpu.on_gpu`'s `measured_s`)."""
        pace = _PACES.get(self.key)
        return None if pace is None else self.seconds(pace)

    def refusal(self, warning: str = "") -> str | None:
        """The second-press message when the job is priced above CONFIRM_ABOVE_S or does what `warning` says
        (`unconfirmed`), else None: priced by its measured pace, or before any was measured by its `extra` alone
        (its steps are priced when they run, in `observe`)."""
        seconds = self.seconds(_PACES.get(self.key, Pace(0.0, 0.0)))
        message = unconfirmed(
            self.request, self.kind, self.form, seconds, self.plan, "the paces measured so far", warning
        )
        self.confirmed = message is None and (seconds > CONFIRM_ABOVE_S or bool(warning))
        return message

    def record(self, event: Event) -> bool:
        """Measure the pace from `event` and the job's first event; whether it could (a step after the first)."""
        if len(self.events) < 3:
            self.events.append(event)
        first = self.events[0]
        if event.step <= first.step:
            return False
        _PACES[self.key] = Pace.between(first, event)
        return True

    def observe(self, event: Event) -> str | None:
        """Record the pace from `event`; the second-press message when this is the job's kind's first measurement
        and it prices the whole above CONFIRM_ABOVE_S (the job should stop now). It decides on the job's third
        event, by the faster of its first two steps: one slow step (a warm-up, a busy machine) asks for no
        second press that the job does not need."""
        if not self.record(event) or self.decided or self.confirmed or len(self.events) < 3:
            return None
        self.decided = True
        first, second, third = self.events[:3]
        per_step = min(second.elapsed - first.elapsed, third.elapsed - second.elapsed) / (second.step - first.step)
        fastest = Pace(max(first.elapsed - first.step * per_step, 0.0), per_step)
        return unconfirmed(
            self.request, self.kind, self.form, self.seconds(fastest), self.plan, "its first steps just now"
        )

    def time_left(self, event: Event) -> str:
        """', about 3 min left' from the measured pace and the steps still to run ('' before it is known)."""
        pace = _PACES.get(self.key)
        if pace is None:
            return ""
        return left((self.steps - event.step) * pace.per_step + self.extra(pace))
