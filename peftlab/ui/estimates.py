"""Before a long job: its expected time from costs measured on this machine, and a second press to start it."""

from __future__ import annotations

import json

import gradio as gr

from peftlab.models import LM
from peftlab.standard import MeasuredCosts, measure
from peftlab.ui.display import duration
from peftlab.ui.sessions import SESSIONS

CONFIRM_ABOVE_S = 120.0  # a job expected to run longer starts on a second press, after its estimate was shown
_COSTS: dict[tuple, MeasuredCosts] = {}  # measured once per model, scoring dtype, task and template in this process


def measured_costs(lm: LM, task, template: str, verbalizer, scoring_lm: LM | None = None) -> MeasuredCosts:
    """This machine's cost of one text (scored with `scoring_lm`, default `lm`) and one training step of `lm`
    (`standard.measure`, a few seconds the first time), kept for the process: the hardware does not change between
    a visitor's presses, so the press that confirms a job does not measure again."""
    scoring_lm = scoring_lm or lm
    key = (lm.name, scoring_lm.model.dtype, task.name, template)
    if key not in _COSTS:
        _COSTS[key] = measure(scoring_lm, lm, task, template, verbalizer)
    return _COSTS[key]


def unconfirmed(request: gr.Request | None, kind: str, form: dict, seconds: float, plan: str) -> str | None:
    """The message that asks for a second press when a job of `kind` is expected to take over CONFIRM_ABOVE_S;
    None when it may start: it is short, or the same form was pressed again right after its estimate."""
    if seconds <= CONFIRM_ABOVE_S:
        return None
    values = SESSIONS.get(request).values
    key = json.dumps(form, default=str, sort_keys=True)
    if values.pop(f"confirm:{kind}", None) == key:
        return None
    values[f"confirm:{kind}"] = key
    return (
        f"**{plan}: about {duration(seconds)} on this machine** (from a training step and a text measured just now). "
        "Press the button again to start, or make the job smaller."
    )
