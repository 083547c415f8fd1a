"""Pieces every tab shares: model and task pickers, queues, caps, jobs, and bad input as one clear UI message."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import gradio as gr
import pandas as pd
import torch

from peftlab.backends import backend_from_env
from peftlab.config import capitalised, counted
from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL, LM, load_lm, unavailable_reason
from peftlab.prompts import Verbalizer, is_suggested_template, suggested_prompt
from peftlab.serving import JobStop, current_caps, heavy_job_limit, public_mode
from peftlab.tasks import EMBEDDED_TASKS, load_task
from peftlab.ui.inputs import is_bounded, out_of_range
from peftlab.ui.sessions import SESSIONS, UNNAMED_JOB, Session
from peftlab.uploads import DATA_SUFFIXES
from peftlab.zerogpu import GPUCalls, on_zero_gpu

MODEL_CHOICES = [DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "roberta-large", "bert-base-uncased", "gpt2"]
TEMPLATE_SEPARATOR = "---"
START_TEMPLATE, START_VERBALIZER = suggested_prompt("rt-sentiment", ["negative", "positive"])


def _shown(exc: Exception) -> gr.Error:
    """The one sentence a visitor sees for `exc`: a PeftlabError's own (a visitor's mistake: no traceback in the
    server's log); running out of memory, with what makes a job smaller; anything else, named as the app's fault,
    with its traceback in the log (gradio showed a bare "Error" badge and no word: a store of zero-shot rows alone
    failed the Compare tab's listing so)."""
    if isinstance(exc, PeftlabError):
        return gr.Error(str(exc), print_exception=False)
    traceback.print_exception(exc)
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        where = "GPU" if isinstance(exc, torch.OutOfMemoryError) else "machine"
        return gr.Error(
            f"The {where} ran out of memory: try fewer test texts, a smaller batch size or a smaller model.",
            print_exception=False,
        )
    return gr.Error(
        f"Something failed inside peftlab ({type(exc).__name__}: {exc}). That is a fault of the app, not of what you "
        "typed; the server's log has the details.",
        print_exception=False,
    )


def user_errors(fn):
    """A handler whose failures reach the visitor as one sentence (`_shown`, a gr.Error), never a bare "Error"
    badge; the app keeps serving. gradio's own errors (a ZeroGPU quota, say) pass as they are."""

    def shown(exc: Exception, args, kwargs):
        raise exc if isinstance(exc, gr.Error) else _shown(exc) from None

    return _on_failure(fn, shown)


def _on_failure(fn, handle: Callable[[Exception, tuple, dict], None]):
    """`fn` (a handler, plain or a generator) with `handle(exc, args, kwargs)` called on any exception it raises
    (handle raises it, or another), its arguments given for what it needs of them (the gr.Request)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:
                handle(exc, args, kwargs)

        return generator_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            handle(exc, args, kwargs)

    return wrapper


def heavy() -> dict:
    """Event options of a heavy job (evaluation, search, training): one queue for all of them, sized by the hardware."""
    return dict(concurrency_id="heavy", concurrency_limit=heavy_job_limit())


def heavy_job(
    button: gr.Button,
    fn,
    checks: Callable[[dict], object] | None = None,
    kind: str | None = None,
    name: str = UNNAMED_JOB,
    **event,
) -> gr.events.Dependency:
    """`button.click(fn, **event, **heavy())`, with the press looked at first, at once, before the job waits behind
    other visitors' jobs: `checks(form)`, when given, gets the event's `inputs_kwargs` values by name and raises a
    PeftlabError for input the job would refuse, so its sentence shows at once (a K of 0 was refused after a 6-minute
    wait); `checks(form, request)` when it takes two arguments, where the visitor's session decides (an RLHF stage
    pressed before the one it builds on was refused after the wait too). With `kind` (the job's kind, as its Stop
    button names it) the session notes the job as queued, so Stop can keep it from starting, and a press while a job
    of the same `kind` runs or waits (another of the tab's buttons) is refused, naming that job (`name`, as it
    starts a sentence). API clients call `fn` alone: it refuses the same input itself. The button is disabled from
    the look until the job has ended: a second press while the job waited in the queue ran the look again, which hid
    the job's place in the queue. Returns the job's event, whose `look` is the look's (`answer` empties the outputs
    when either fails).

    Not gradio's `validator=`, which does the same before the queue: its refusal reaches an API client as a bare
    "400 Bad Request", without the sentence.
    """

    # a refusal's "Error" badge goes where the job's own would, on its status line, and its sentence too (the toast
    # fades after 10 s, and the line said "Error" alone)
    status = [c for c in event["outputs"] if is_status_line(c)][:1]

    with_request = checks is not None and len(inspect.signature(checks).parameters) == 2
    refusal = f"refused:{event['api_name']}"  # the session's last refusal of this press, for its status line

    def look(request: gr.Request, *args, **form):
        session = SESSIONS.get(request)
        try:
            if kind is not None and (running := session.busy(kind)):
                raise PeftlabError(f"{running} is still running: press this once it has finished, or stop it.")
            if checks is not None:
                checks(form, request) if with_request else checks(form)
        except PeftlabError as exc:
            if status:  # for `refused`, which takes it at once
                session.values[refusal] = f"⚠️ {exc}"
            raise
        if kind is not None:
            session.queue_job(kind, name)
        disabled = gr.update(interactive=False)
        # the line is the new press's from here: the last one's refusal or result stood under "queue: 1/1"
        return ("", disabled) if status else disabled

    looked = button.click(
        user_errors(look),
        event.get("inputs"),
        [*status, button],
        inputs_kwargs=event.get("inputs_kwargs"),
        api_name=f"{event['api_name']}_check",
        api_visibility="private",
        show_progress="hidden",
        **INSTANT,
    )
    if status:
        # a box's out-of-range value is refused before the look runs (`inputs.named_bounds`): the line says it too,
        # from the values as sent (preprocessing them again would only refuse them again)
        given = event.get("inputs")
        given = [] if given is None else [given] if isinstance(given, gr.components.Component) else list(given)
        boxes = [c for c in dict.fromkeys([*given, *(event.get("inputs_kwargs") or {}).values()]) if is_bounded(c)]

        def refused(request: gr.Request, *values) -> str | None:  # the sentence, once
            said = SESSIONS.get(request).values.pop(refusal, None)
            return said or next((f"⚠️ {s}" for box, v in zip(boxes, values) if (s := out_of_range(box, v))), None)

        looked.refusal = refusal
        looked.failure(
            refused,
            boxes,
            status,
            preprocess=False,
            queue=False,
            show_progress="hidden",
            show_progress_on=[button],  # not the line: its "Error" badge stays
            api_visibility="private",
        )
    work = _unless_stopped_in_queue(fn, kind, len(event["outputs"])) if kind else fn
    job = looked.success(_keeping_failure(work, refusal) if status else work, **event, **heavy())
    job.success(None, js=WORK_DONE)  # the page now asks before it is left (LEAVE_GUARD)
    enabled = gr.update(interactive=True)
    job.success(lambda: enabled, None, [button], show_progress="hidden", api_visibility="private", **INSTANT)

    # A job that fails (input refused only once the model is loaded, PET's pool smaller than asked after the
    # estimate's second press) gets its button back too: gradio runs no `.then` after a failure, and the button
    # stayed disabled until a reload, which ends the session. Its sentence goes on the status line, as a look's.
    def failed(request: gr.Request):
        session = SESSIONS.get(request)
        if kind is not None:  # a job that failed before it left the queue (gradio's own refusal) is not running
            session.leave_queue(kind)
        said = session.values.pop(refusal, None)  # kept by `_keeping_failure`, with a status line
        return (said or gr.skip(), enabled) if status else enabled

    job.failure(
        failed,
        None,
        [*status, button],
        show_progress="hidden",
        show_progress_on=[button],
        api_visibility="private",
        **INSTANT,  # a page update: never behind another visitor's
    )
    job.look = looked
    if status:
        job.refusal = refusal  # `answer` leaves the status line to `failed`
    return job


def press_telling(button, fn, inputs, outputs: list, status, api_name: str, options: dict | None = None):
    """`button.click(fn, inputs, outputs, **options)` (default `light()`) whose refusal's sentence stays on `status`
    (a status line among `outputs` or beside them, which a success then empties) under its "Error" badge, as a
    heavy job's does: the toast fades after 10 s, and a chart, a file box or a line kept a bare "Error" (a download
    before training, a ranking saved before sampling). Returns the click's event."""
    refusal = f"refused:{api_name}"
    options = options or light()
    if status not in outputs:  # its badge beside its sentence: on a chart it stood alone, the sentence further down
        options = {"show_progress_on": [status], **options}
    pressed = button.click(_keeping_failure(fn, refusal), inputs, outputs, api_name=api_name, **options)

    def said(request: gr.Request):
        return SESSIONS.get(request).values.pop(refusal, None) or gr.skip()

    pressed.failure(
        said,
        None,
        [status],
        show_progress="hidden",
        show_progress_on=[button],  # not the line: its "Error" badge stays
        api_visibility="private",
        **INSTANT,
    )
    if status not in outputs:
        pressed.success(lambda: "", None, [status], show_progress="hidden", api_visibility="private", **INSTANT)
    pressed.refusal = refusal  # `answer` leaves the status line to `said`
    return pressed


def _keeping_failure(fn, refusal: str):
    """`fn`, whose gr.Error (a PeftlabError's sentence, through `user_errors`) is kept in the visitor's session
    under `refusal` for the status line, then raised again."""

    def keep(exc: Exception, args, kwargs):
        if isinstance(exc, gr.Error):
            SESSIONS.get(_request_in(args, kwargs)).values[refusal] = f"⚠️ {exc.message}"
        raise exc

    return _on_failure(fn, keep)


def _request_in(args: tuple, kwargs: dict) -> gr.Request | None:
    """The gr.Request among a handler's arguments (gradio passes it where the handler's signature asks)."""
    return next((a for a in (*args, *kwargs.values()) if hasattr(a, "session_hash")), None)


# What a visitor finished lives in their session, which a reload or a closed tab ends (`sessions`): once a heavy job
# has finished on the page, the browser asks before leaving it. Launch's `head`; `heavy_job` sets the flag.
LEAVE_GUARD = """<script>
window.addEventListener("beforeunload", (event) => {
  if (window.peftlabWorkDone) { event.preventDefault(); event.returnValue = ""; }
});
</script>"""
WORK_DONE = "() => { window.peftlabWorkDone = true; }"


def _unless_stopped_in_queue(fn, kind: str, outputs: int):
    """`fn`, which first takes its job off the session's queue (`Session.leave_queue`): when its visitor pressed Stop
    while it waited, it returns at once and leaves every output as it is (the status line says it will not start;
    an error there read as if something had failed)."""

    def stopped(args, kwargs) -> bool:
        queued = SESSIONS.get(_request_in(args, kwargs)).leave_queue(kind)
        return queued is not None and queued.is_set()

    unchanged = [gr.skip()] * outputs if outputs > 1 else gr.skip()
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            if stopped(args, kwargs):
                yield unchanged
                return
            yield from fn(*args, **kwargs)

        return generator

    @functools.wraps(fn)
    def call(*args, **kwargs):
        return unchanged if stopped(args, kwargs) else fn(*args, **kwargs)

    return call


def light() -> dict:
    """Event options of a cheap click on a model (classify one text, load or download a method): never behind heavy."""
    return dict(concurrency_id="light", concurrency_limit=4)


def told_on_upload(upload: gr.File, read: Callable[[str], object], what: str) -> None:
    """When a file is dropped in `upload`, read it as its job will (`read(path)`, something with a length) and say at
    once how many `what`s it holds (a toast), or why it cannot be read (a warning): a latin-1 file, or a line
    without a 'response', was told only when the job's button was pressed."""

    def told(path) -> None:
        if not path:
            return
        try:
            items = read(path)
        except PeftlabError as exc:
            gr.Warning(str(exc))
            return
        gr.Info(f"'{Path(path).name}': {counted(len(items), what)}.")

    upload.upload(told, [upload], None, api_visibility="private", show_progress="hidden", **light())


STATUS_LINE = "status-line"


def is_status_line(component) -> bool:
    return STATUS_LINE in (getattr(component, "elem_classes", None) or [])


def status_line(value: str | None = None, **kwargs) -> gr.Markdown:
    """The line that says where a tab's job stands. An event with one among its outputs shows its progress and its
    "Error" badge there alone (`peftlab.ui.spare_outputs_from_badges`)."""
    return gr.Markdown(value, elem_classes=[STATUS_LINE], **kwargs)


def answer(event, outputs: list, pressed: gr.components.Component, hidden: tuple = (), stale_on: list = ()) -> None:
    """Mark `outputs` of `event` (the Dependency of a press of `pressed`) as the answer to one press (a
    classification, an evaluation, a table, a download): when a later press fails they are emptied, and those in
    `hidden` (shown only when they have rows) hidden, instead of keeping the answer to the press before under
    gradio's "Error" badge as if it answered the inputs that failed. The emptying shows its progress on `pressed`,
    so the failed event's badge stays (on its status line, or on the outputs). Not for a stage whose outputs show
    what the session keeps (an RLHF stage: that stays true after a failed press). A `cancels=` on another event
    would empty them too (gradio counts a cancelled event as failed); the app's Stop buttons set the session's stop
    flag instead. The events in `stale_on` (a new task picked) empty them too: they answered a press on other data.
    A `heavy_job`'s press that its look refuses empties them as well.
    """

    for failed in (event, getattr(event, "look", None)):
        if failed is not None:
            # a heavy job's look and job write their refusal on its status line themselves (`heavy_job`)
            emptied = [c for c in outputs if not (getattr(failed, "refusal", None) and is_status_line(c))]
            if not emptied:
                continue
            failed.failure(
                _emptying(emptied, hidden),
                None,
                emptied,
                queue=False,
                show_progress="hidden",
                show_progress_on=[pressed],
                api_visibility="private",
            )
    if stale_on:
        forget_on(stale_on, outputs, hidden)


def forget_on(events: list, outputs: list, hidden: tuple = ()) -> None:
    """Empty `outputs` (and hide those in `hidden`) when one of `events` fires (a new task picked or uploaded): they
    answered a press on other data. For a long job's results, which a failed press leaves readable (`answer` would
    empty them), this alone: a grid trained on movie reviews stood beside the Error of an upload it never saw."""
    # a status line's emptying apart from the rest: an event with one among its outputs clears the badges of it
    # alone (`spare_outputs_from_badges`), and a refused press's "Error" stayed on a chart emptied beside it
    statuses = [component for component in outputs if is_status_line(component)]
    others = [component for component in outputs if not is_status_line(component)]
    for emptied in (statuses, others):
        if emptied:
            gr.on(
                events,
                _emptying(emptied, hidden),
                None,
                emptied,
                queue=False,
                show_progress="hidden",
                api_visibility="private",
            )


def _emptying(outputs: list, hidden: tuple):
    def emptied():
        values = [gr.update(value=None, visible=False) if any(c is h for h in hidden) else _empty(c) for c in outputs]
        return values if len(values) > 1 else values[0]

    return emptied


def _empty(component):
    """An output's empty value: None, but a table keeps the column names it started with (None drew gradio's
    placeholder headers "1 2 3" over the emptied rows)."""
    if isinstance(component, gr.Dataframe) and isinstance(component.value, dict):
        return pd.DataFrame(columns=component.value["headers"])
    return None


# A table cell holding a visitor's text shows its first characters, a click the rest: a 2,400-word review made its
# row taller than the screen, with the row's label, prediction and confidence out of sight beside it
TEXT_CELL_CHARS = 300
# px: two charts (or file boxes) in a row share a line from 640 px up and each takes its own on a phone (at 400 px two
# charts of 170 px cut their legends and labels to "zero-shot (templa…", two file boxes their names to ".c")
CHART_MIN_WIDTH = 320
INSTANT = dict(concurrency_limit=None)  # Stop buttons and pure UI updates: no queue at all


def load_model(name: str, dtype: str = "auto", device: str | None = None) -> LM:
    """load_lm for a visitor: on a public Space only the models its caps allow."""
    current_caps().check_model(name)
    return load_lm(name, dtype=dtype, device=device)


@contextlib.contextmanager
def job(request: gr.Request | None, kind: str, name: str | None = None) -> Iterator[tuple[Session, JobStop]]:
    """A heavy job of the caller's session: its stop flag (Stop, the visitor leaving, the caps' time limit); `name`
    as `Session.start_job` takes it."""
    session = SESSIONS.get(request)
    stop = session.start_job(kind, name)
    try:
        yield session, stop
    finally:
        session.end_job(kind, stop)


def stop_handler(kind: str, what: str, after: str = "its current step; what it finished is kept"):
    """A Stop button's handler, for the job's status line: the session's running job of `kind` ends `after` (its
    current step, keeping its work), a waiting one will not start. With neither, the line is left as it is (a
    finished job's result and notes stay) and a toast says there is nothing to stop."""

    def stop(request: gr.Request):
        state = SESSIONS.get(request).stop_job(kind, "you pressed Stop")
        if state == "running":
            return f"Stopping {what} after {after}."
        if state == "queued":
            return f"{capitalised(what)} will not start: it was waiting in the queue behind other jobs."
        gr.Info(f"Nothing to stop: {what} is not running.")
        return gr.skip()

    return stop


def keep_results(request: gr.Request | None, rows) -> None:
    """Add finished results to the results store: the visitor's own on a public Space, everyone's locally."""
    from peftlab.store import ResultStore

    owner = getattr(request, "session_hash", "") if public_mode() else ""
    ResultStore(owner=owner or "").add(rows)


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
            info=TASK_INFO,
        )
        upload = gr.File(label="Or upload CSV / JSONL" + upload_limit_note(), file_types=list(DATA_SUFFIXES))
        # the last choice is the data: an upload kept after a task was picked went on being scored under the
        # picked task's name in the list (`on_task_change` suggests for the picked task without the upload)
        task.input(lambda: None, None, upload, queue=False, show_progress="hidden", api_visibility="private")
        # the list went on naming rt-sentiment while the uploaded file was the data
        upload.change(_task_info, upload, task, queue=False, show_progress="hidden", api_visibility="private")
        with gr.Column(min_width=160):
            # an emptied box means the default column (`task_source`): the placeholder shows which
            text_column = gr.Textbox("text", label="Text column", max_lines=1, placeholder="text")
            label_column = gr.Textbox(
                "label",
                label="Label column",
                max_lines=1,
                placeholder="label",
                info="A 'split' column (train, dev, test) is honoured; else training holds out 20 % of each class "
                "for testing (zero-shot scores every row).",
            )
    return dict(model=model, task=task, upload=upload, text_column=text_column, label_column=label_column)


TASK_INFO = "Embedded task or a Hub dataset id; picking one puts an upload aside."


def _task_info(upload) -> dict:
    """The task list's note: which data is used while a file is uploaded."""
    if not upload:
        return gr.update(info=TASK_INFO)
    return gr.update(info=f"Your file '{Path(upload).name}' is the data; picking a task here puts it aside.")


def runs_backend(session: Session | None = None):
    """Where a tab's several training runs go: Ray when the app was started with PEFTLAB_BACKEND=ray
    (`backends.backend_from_env`), one GPU call each on a ZeroGPU Space (`zerogpu.GPUCalls`), else None (one after
    another in this process). With a `session`, trained methods are written into its folder, where "classify" and
    "download" read them back."""
    backend = backend_from_env() or (GPUCalls() if on_zero_gpu() else None)
    if backend is not None and session is not None:
        backend = dataclasses.replace(backend, save_dir=str(session.folder / "trained-elsewhere"))
    return backend


def backend_line() -> None:
    """Under a tab's introduction, where its training runs go when not one after another in this process."""
    if backend := runs_backend():
        gr.Markdown(backend.describe())


def intro(summary: str, details: str) -> None:
    """A tab's opening: what it does in a sentence or two, and how, folded, so the form starts on the first
    screen (on a phone, too)."""
    gr.Markdown(summary)
    with gr.Accordion("How it works", open=False):
        gr.Markdown(details)


def action_row() -> gr.Row:
    """A row of a tab's primary buttons that stays in sight: it sticks to the bottom of the window while the form
    above it is longer than the screen (the app's CSS, class "actions")."""
    return gr.Row(elem_classes="actions")


def task_changed(source: dict) -> list:
    """The events of a new task: one picked in the list, or data uploaded (`source` is `model_and_task_inputs()`'s
    dict)."""
    return [source["task"].input, source["upload"].change]


def on_task_change(source: dict, handler, outputs: list, read: Sequence = (), **kwargs) -> None:
    """When the visitor picks a task, uploads data or types a column name, `handler(task, upload, text_column,
    label_column, *read)` fills `outputs` (the prompt boxes the task suggests); `source` is
    `model_and_task_inputs()`'s dict, `read` the boxes whose text the handler also needs (the visitor's template)."""
    columns = [source["task"], source["upload"], source["text_column"], source["label_column"]]
    handler = user_errors(handler)  # any failure as one sentence

    def suggesting(warn: bool):
        # A task or file that cannot be read is said once, as a warning; the boxes it would fill keep their text
        # and get no error badge: they are not what is wrong (the run buttons say it again, as an error). A column
        # name half typed says nothing: once the typed names are the file's columns, its labels fill the boxes.
        # A file read, its labels a person likely did not mean ('postive' beside 'positive', digits) are said too.
        @functools.wraps(handler)
        def suggestion(*args):
            try:
                suggested = handler(*args)
            except gr.Error as exc:
                if warn:
                    gr.Warning(exc.message)
                return [gr.skip()] * len(outputs)
            if warn:
                for sentence in resolve_task(*args[:4]).label_warnings():
                    gr.Warning(sentence)
            return suggested

        return suggestion

    inputs = columns + list(read)
    gr.on([source["upload"].change], suggesting(warn=True), inputs, outputs, **INSTANT, **kwargs)
    # a picked task puts the upload aside (`model_and_task_inputs`): read as gone already, or a suggestion for the
    # file could land after the picked task's
    picked = [source["task"], gr.State(None), *columns[2:], *read]
    gr.on([source["task"].input], suggesting(warn=True), picked, outputs, api_visibility="private", **INSTANT)
    column_edits = [source["text_column"].change, source["label_column"].change]
    gr.on(
        column_edits,
        suggesting(warn=False),
        inputs,
        outputs,
        trigger_mode="always_last",
        show_progress="hidden",
        api_visibility="private",
        **INSTANT,
    )


def task_from_form(form: dict):
    """The Task of a form made with `model_and_task_inputs`."""
    return resolve_task(form["task"], form["upload"], form["text_column"], form["label_column"])


def check_test_texts(task, limit: int | None, what: str = "Test texts", split: str = "test") -> None:
    """On a public Space, the texts one evaluation scores (all rows of `split` when no limit is given) stay within
    the cap.

    Raises:
        PeftlabError: above the cap. An emptied box (`limit` None) is called empty: the visitor typed no number, so
            "is 1000" would name one they never saw.
    """
    available, caps = len(task.rows(split)), current_caps()
    cap = caps.test_texts
    if limit is None and cap is not None and available > cap:
        texts = "rows" if split == "all" else f"{split} texts"
        raise PeftlabError(
            f"{what} is empty, which scores all {available} {texts}, above this public Space's limit of {cap:g}; "
            f"type {cap:g} or fewer."
        )
    caps.check("test_texts", min(limit or available, available), what)


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
    source = upload if upload else str(task_name or "").strip()  # a box of spaces was looked up as Hub dataset ''
    if not source:
        raise PeftlabError("Pick a task or upload a CSV/JSONL file.")
    if not upload and public_mode() and str(task_name).strip().lower().endswith(DATA_SUFFIXES):
        raise PeftlabError("On this public Space, give your own data as an upload, not as a file name.")
    return load_task(
        str(source), text_column=(text_column or "text").strip(), label_column=(label_column or "label").strip()
    )


@user_errors
def suggest(task_name, upload, text_column, label_column, template: str = "", verbalizer: str = ""):
    """The task's suggested template and verbalizer, for the template and verbalizer boxes, each kept when the
    visitor's own still fits (`kept_if_written`, `kept_if_fitting`): a new file should not erase what they wrote."""
    task = resolve_task(task_name, upload, text_column, label_column)
    suggested, words = suggested_prompt(task.name, task.label_names)
    kept = kept_if_written(template, suggested)
    return kept, kept_if_fitting(verbalizer, words, task)


def kept_if_written(box: str, suggestion: str):
    """The value of a template box for a new task: its `suggestion`, or gr.skip() when the visitor wrote any of the
    box's templates themselves (one peftlab suggests for no task), which a new file should not erase. Kept silently:
    a notice stacked up on every keystroke of a column box; a template that uses a field the task lacks is told at
    the press."""
    try:
        written = not all(is_suggested_template(template) for template in split_templates(box))
    except PeftlabError:  # a malformed box was typed, too
        written = True
    return gr.skip() if written else suggestion


def kept_if_fitting(box: str, suggestion: dict, task):
    """The value of a verbalizer box for a new `task`: gr.skip() while it names exactly the task's labels (a
    column typed again, a file with the same labels: the words may be the visitor's), else `suggestion`'s lines."""
    try:
        Verbalizer.parse(box, task.label_names)
    except PeftlabError:
        return verbalizer_lines(suggestion)
    return gr.skip()


def split_templates(text: str) -> list[str]:
    """Templates separated by a line holding only `---` (several templates form an ensemble).

    Raises:
        PeftlabError: a template with more than one {mask} that reads as several: `---` inside a line (two templates
            on one line), or a {mask} on more than one of its lines (templates written one per line). The template's
            own check called it "2 {mask} slots" without saying how to separate them.
    """
    parts, current = [], []
    for line in (text or "").split("\n"):
        if line.strip() == TEMPLATE_SEPARATOR:
            parts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    templates = [p.strip(" ") for p in parts if p.strip()]
    for template in templates:
        masked_lines = sum("{mask}" in line for line in template.split("\n"))
        if template.count("{mask}") > 1 and (TEMPLATE_SEPARATOR in template or masked_lines > 1):
            shown = template.replace("\n", " / ")  # its lines apart ("\n" read as two characters of the template)
            raise PeftlabError(
                f"'{shown}' reads as one template with {template.count('{mask}')} {{mask}} slots; to give several "
                f"templates, put {TEMPLATE_SEPARATOR} on a line of its own between them."
            )
    return templates


def verbalizer_lines(verbalizer: dict) -> str:
    """A verbalizer as the editable `label: word1, word2` lines the UI shows, or as JSON when a label or word holds a
    character the lines use (labels 'stars: 1' or 'good; fun' gave lines the box then refused)."""
    if any(mark in text for label, words in verbalizer.items() for text in (label, *words) for mark in ":;,\n"):
        return json.dumps(verbalizer, ensure_ascii=False)
    return "\n".join(f"{label}: {', '.join(words)}" for label, words in verbalizer.items())
