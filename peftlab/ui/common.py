"""Pieces every tab shares: model and task pickers, queues, caps, jobs, and bad input as one clear UI message."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import time
from collections.abc import Iterator

import gradio as gr
import pandas as pd

from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL, LM, load_lm, unavailable_reason
from peftlab.prompts import suggested_prompt
from peftlab.serving import JobStop, current_caps, heavy_job_limit, public_mode
from peftlab.standard import MeasuredCosts, measure
from peftlab.tasks import EMBEDDED_TASKS, UPLOAD_SUFFIXES, load_task
from peftlab.ui.sessions import SESSIONS, Session

MODEL_CHOICES = [DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "roberta-large", "bert-base-uncased", "gpt2"]
TEMPLATE_SEPARATOR = "---"
START_TEMPLATE, START_VERBALIZER = suggested_prompt("rt-sentiment", ["negative", "positive"])


PERCENT_WORDS = ("accuracy", "acc", "confidence", "share", "right")  # a column named with one holds a fraction


def readable(frame: pd.DataFrame) -> pd.DataFrame:
    """A table as people read it (the downloads keep full precision): fractions in percent, with one decimal, or
    three significant digits for shares below 0.1 % (LoRA's 0.00857 %); other floats with at most 3 decimals and no
    trailing zeros (1, 0.844, 12,345.6), or 3 significant digits below 0.01 (a learning rate of 0.0003); empty cells
    blank.

    A fraction column is a float column whose name holds one of PERCENT_WORDS as a word ("test_accuracy", "dev acc",
    "trainable_share").
    """
    shown = frame.copy()
    for column in shown.columns:
        if not pd.api.types.is_float_dtype(shown[column]):
            continue
        words = str(column).lower().replace("_", " ").replace("-", " ").split()
        if any(word in PERCENT_WORDS for word in words):
            shown[column] = shown[column].map(_percent)
        else:
            shown[column] = shown[column].map(_number)
    return shown


def _number(value: float) -> str:
    if pd.isna(value):
        return ""
    if value != 0 and abs(value) < 0.01:
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _percent(value: float) -> str:
    if pd.isna(value):
        return ""
    return f"{value:.1%}" if value == 0 or abs(value) >= 1e-3 else f"{100 * value:.3g}%"


def user_errors(fn):
    """Show a PeftlabError as a gr.Error (one sentence in the UI); the app keeps serving."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except PeftlabError as exc:
                raise gr.Error(str(exc)) from None

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PeftlabError as exc:
            raise gr.Error(str(exc)) from None

    return wrapper


def heavy() -> dict:
    """Event options of a heavy job (evaluation, search, training): one queue for all of them, sized by the hardware."""
    return dict(concurrency_id="heavy", concurrency_limit=heavy_job_limit())


def light() -> dict:
    """Event options of a cheap click on a model (classify one text, load or download a method): never behind heavy."""
    return dict(concurrency_id="light", concurrency_limit=4)


INSTANT = dict(concurrency_limit=None)  # Stop buttons and pure UI updates: no queue at all


def load_model(name: str, dtype: str = "auto") -> LM:
    """load_lm for a visitor: on a public Space only the models its caps allow."""
    current_caps().check_model(name)
    return load_lm(name, dtype=dtype)


@contextlib.contextmanager
def job(request: gr.Request | None, kind: str) -> Iterator[tuple[Session, JobStop]]:
    """A heavy job of the caller's session: its stop flag (Stop, the visitor leaving, the caps' time limit)."""
    session = SESSIONS.get(request)
    stop = session.start_job(kind)
    try:
        yield session, stop
    finally:
        session.end_job(kind, stop)


def stop_handler(kind: str, what: str):
    """A Stop button's handler: the session's running job of `kind` ends after its current step, keeping its work."""

    def stop(request: gr.Request) -> str:
        if SESSIONS.get(request).stop_job(kind, "you pressed Stop"):
            return f"Stopping {what} after its current step; what it finished is kept."
        return f"Nothing to stop: {what} is not running."

    return stop


def keep_results(request: gr.Request | None, rows) -> None:
    """Add finished results to the results store: the visitor's own on a public Space, everyone's locally."""
    from peftlab.store import ResultStore

    owner = getattr(request, "session_hash", "") if public_mode() else ""
    ResultStore(owner=owner or "").add(rows)


CONFIRM_ABOVE_S = 120.0  # a job expected to run longer starts on a second press, after its estimate was shown
_COSTS: dict[tuple[str, str, str], MeasuredCosts] = {}  # measured once per model, task and template in this process


def measured_costs(lm: LM, task, template: str, verbalizer) -> MeasuredCosts:
    """This machine's cost of one text and one training step for `lm` (`standard.measure`, a few seconds the first
    time), kept for the process: the hardware does not change between a visitor's presses."""
    key = (lm.name, task.name, template)
    if key not in _COSTS:
        _COSTS[key] = measure(lm, lm, task, template, verbalizer)
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


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h': how long, in the unit people think in."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_left(started: float, fraction: float) -> str:
    """', about 4 min left' from the wall time since `started` (time.perf_counter) and the fraction done; '' at 0."""
    if fraction <= 0:
        return ""
    elapsed = time.perf_counter() - started
    return f", about {duration(elapsed * (1 - fraction) / fraction)} left"


def stopped_note(stop: JobStop) -> str:
    return f"Stopped because {stop.reason}." if stop.is_set() else ""


def upload_limit_note() -> str:
    """ " (at most N MB)" on a public Space, for the labels of upload inputs."""
    return f" (at most {current_caps().upload_mb:g} MB)" if public_mode() else ""


def model_picker() -> gr.Dropdown:
    caps = current_caps()
    if caps.models is not None:
        return gr.Dropdown(
            list(caps.models), value=DEFAULT_MODEL, label="Model", info="This public Space offers these models."
        )
    return gr.Dropdown(
        model_choices(),
        value=DEFAULT_MODEL,
        allow_custom_value=True,
        label="Model",
        info="The embedded default works offline; Hub ids and local folders load where reachable.",
    )


def model_choices() -> list[tuple[str, str]]:
    """MODEL_CHOICES as (label, name): a model that cannot load here says why in its label (a dropdown cannot grey
    one choice out)."""
    return [(name if (why := unavailable_reason(name)) is None else f"{name} ({why})", name) for name in MODEL_CHOICES]


def model_and_task_inputs() -> dict[str, gr.components.Component]:
    """The model picker, the task dropdown (embedded name or Hub id), a CSV/JSONL upload and its columns, by name,
    in one row (a tab's primary actions then fit on the first screen)."""
    with gr.Row(equal_height=True):
        model = model_picker()
        task = gr.Dropdown(
            list(EMBEDDED_TASKS),
            value="rt-sentiment",
            allow_custom_value=True,
            label="Task",
            info="Embedded task or a Hub dataset id; an upload takes precedence.",
        )
        upload = gr.File(
            label="Or upload CSV / JSONL" + upload_limit_note(), file_types=[".csv", ".jsonl", ".json"], height=110
        )
        with gr.Column(min_width=160):
            text_column = gr.Textbox("text", label="Text column", max_lines=1)
            label_column = gr.Textbox(
                "label",
                label="Label column",
                max_lines=1,
                info="A 'split' column (train, dev, test) is honoured; else 20 % of each class is the test split.",
            )
    return dict(model=model, task=task, upload=upload, text_column=text_column, label_column=label_column)


def action_row() -> gr.Row:
    """A row of a tab's primary buttons that stays in sight: it sticks to the bottom of the window while the form
    above it is longer than the screen (the app's CSS, class "actions")."""
    return gr.Row(elem_classes="actions")


def on_task_change(source: dict, handler, outputs: list, **kwargs) -> None:
    """When the visitor picks a task or uploads data, `handler(task, upload, text_column, label_column)` fills
    `outputs` (the prompt boxes the task suggests); `source` is `model_and_task_inputs()`'s dict."""
    columns = [source["task"], source["upload"], source["text_column"], source["label_column"]]

    @functools.wraps(handler)
    def suggestion(*args):
        # A task or file that cannot be read is said once, as a warning; the boxes it would fill keep their text
        # and get no error badge: they are not what is wrong (the run buttons say it again, as an error).
        try:
            return handler(*args)
        except gr.Error as exc:
            gr.Warning(exc.message)
            return [gr.skip()] * len(outputs)

    gr.on([source["task"].input, source["upload"].change], suggestion, columns, outputs, **INSTANT, **kwargs)


def task_from_form(form: dict):
    """The Task of a form made with `model_and_task_inputs`."""
    return resolve_task(form["task"], form["upload"], form["text_column"], form["label_column"])


def check_test_texts(task, limit: int | None, what: str = "Test texts", split: str = "test") -> None:
    """On a public Space, the texts one evaluation scores (all rows of `split` when no limit is given) stay within
    the cap."""
    available = len(task.rows(split))
    current_caps().check("test_texts", min(limit or available, available), what)


def verbalizer_box() -> gr.Textbox:
    """The verbalizer as editable `label: words` lines, starting from the default task's words."""
    return gr.Textbox(
        verbalizer_lines(START_VERBALIZER),
        lines=3,
        label="Verbalizer",
        info="One line per label: `label: word1, word2` (or JSON).",
    )


def resolve_task(task_name: str, upload, text_column: str, label_column: str):
    """The Task the user picked: the uploaded file when there is one, else the dropdown's name.

    On a public Space a typed name is never read as a path on the server: files come only as uploads.
    """
    source = upload if upload else task_name
    if not source:
        raise PeftlabError("Pick a task or upload a CSV/JSONL file.")
    if not upload and public_mode() and str(task_name).strip().lower().endswith(UPLOAD_SUFFIXES):
        raise PeftlabError("On this public Space, give your own data as an upload, not as a file name.")
    return load_task(
        str(source), text_column=(text_column or "text").strip(), label_column=(label_column or "label").strip()
    )


@user_errors
def suggest(task_name, upload, text_column, label_column):
    """The task's suggested template and verbalizer, for the template and verbalizer boxes."""
    task = resolve_task(task_name, upload, text_column, label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    return template, verbalizer_lines(verbalizer)


def split_templates(text: str) -> list[str]:
    """Templates separated by a line holding only `---` (several templates form an ensemble)."""
    parts, current = [], []
    for line in (text or "").split("\n"):
        if line.strip() == TEMPLATE_SEPARATOR:
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    return [p.strip(" ") for p in parts if p.strip()]


def verbalizer_lines(verbalizer: dict) -> str:
    """A verbalizer as the editable `label: word1, word2` lines the UI shows."""
    return "\n".join(f"{label}: {', '.join(words)}" for label, words in verbalizer.items())
