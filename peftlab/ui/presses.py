"""How a press runs in every tab: bad input as one sentence on the job's status line (never a bare "Error"), the
heavy and light queues, jobs the visitor's session can stop, and outputs emptied once they no longer answer the
inputs. What a tab shows and reads (model and task pickers, prompts) is in `peftlab.ui.common`."""

from __future__ import annotations

import contextlib
import functools
import inspect
import traceback
from collections.abc import Callable, Iterator

import gradio as gr
import pandas as pd

from peftlab.config import capitalised
from peftlab.errors import PeftlabError, out_of_memory, out_of_memory_sentence
from peftlab.serving import JobStop, heavy_job_limit
from peftlab.ui.inputs import is_bounded, out_of_range
from peftlab.ui.sessions import SESSIONS, UNNAMED_JOB, Session


def shown_error(exc: Exception) -> gr.Error:
    """The one sentence a visitor sees for `exc`: a PeftlabError's own (a visitor's mistake: no traceback in the
    server's log); running out of memory, with what makes a job smaller; anything else, named as the app's fault,
    with its traceback in the log (gradio showed a bare "Error" badge and no word: a store of zero-shot rows alone
    failed the Compare tab's listing so)."""
    if isinstance(exc, PeftlabError):
        return gr.Error(str(exc), print_exception=False)
    traceback.print_exception(exc)
    if where := out_of_memory(exc):
        return gr.Error(out_of_memory_sentence(where), print_exception=False)
    return gr.Error(
        f"Something failed inside peftlab ({type(exc).__name__}: {exc}). That is a fault of the app, not of what you "
        "typed; the server's log has the details.",
        print_exception=False,
    )


def user_errors(fn):
    """A handler whose failures reach the visitor as one sentence (`shown_error`, a gr.Error), never a bare "Error"
    badge; the app keeps serving. gradio's own errors (a ZeroGPU quota, say) pass as they are."""

    def shown(exc: Exception, args, kwargs):
        raise exc if isinstance(exc, gr.Error) else shown_error(exc) from None

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


INSTANT = dict(concurrency_limit=None)  # Stop buttons and pure UI updates: no queue at all


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
    too_early = f"too early:{event['api_name']}"  # the last look refused the press for a running job (`answer`)

    def look(request: gr.Request, *args, **form):
        session = SESSIONS.get(request)
        session.values.pop(too_early, None)
        try:
            if kind is not None and session.busy(kind):
                session.values[too_early] = True
                session.refuse_while_busy(kind)
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
    looked.too_early = too_early
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
    """`fn` as a job of the session from the moment it leaves the queue (`Session.open_job`): Stop pressed while it
    loads its model reaches it. When its visitor pressed Stop while it waited, it returns at once and leaves every
    output as it is (the status line says it will not start; an error there read as if something had failed)."""

    def opened(args, kwargs) -> tuple[Session, JobStop | None]:
        try:
            return SESSIONS.open_job(_request_in(args, kwargs), kind)
        except PeftlabError as exc:
            raise shown_error(exc) from None

    unchanged = [gr.skip()] * outputs if outputs > 1 else gr.skip()
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args, **kwargs):
            session, stop = opened(args, kwargs)
            if stop is None:
                yield unchanged
                return
            try:
                yield from fn(*args, **kwargs)
            finally:
                SESSIONS.close_job(session, kind, stop)

        return generator

    @functools.wraps(fn)
    def call(*args, **kwargs):
        session, stop = opened(args, kwargs)
        if stop is None:
            return unchanged
        try:
            return fn(*args, **kwargs)
        finally:
            SESSIONS.close_job(session, kind, stop)

    return call


def light() -> dict:
    """Event options of a cheap click on a model (classify one text, load or download a method): never behind heavy."""
    return dict(concurrency_id="light", concurrency_limit=4)


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
    A `heavy_job`'s press that its look refuses empties them as well, unless it was refused for a job still running:
    that says nothing of the inputs, and the last answer (minutes of work) went with it.
    """

    for failed in (event, getattr(event, "look", None)):
        if failed is not None:
            # a heavy job's look and job write their refusal on its status line themselves (`heavy_job`)
            emptied = [c for c in outputs if not (getattr(failed, "refusal", None) and is_status_line(c))]
            if not emptied:
                continue
            failed.failure(
                _emptying(emptied, hidden, getattr(failed, "too_early", None)),
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


def _emptying(outputs: list, hidden: tuple, spared_when: str | None = None):
    """A handler emptying `outputs`; with `spared_when`, one leaving them as they are when the session holds that
    key."""

    def emptied(request: gr.Request):
        if spared_when is not None and SESSIONS.get(request).values.pop(spared_when, None):
            values = [gr.skip()] * len(outputs)
        else:
            values = [
                gr.update(value=None, visible=False) if any(c is h for h in hidden) else _empty(c) for c in outputs
            ]
        return values if len(values) > 1 else values[0]

    return emptied


def _empty(component):
    """An output's empty value: None, but a table keeps the column names it started with (None drew gradio's
    placeholder headers "1 2 3" over the emptied rows)."""
    if isinstance(component, gr.Dataframe) and isinstance(component.value, dict):
        return pd.DataFrame(columns=component.value["headers"])
    return None


@contextlib.contextmanager
def job(request: gr.Request | None, kind: str, name: str | None = None) -> Iterator[tuple[Session, JobStop]]:
    """A heavy job of the caller's session (the one its press opened, `Sessions.opener`): its stop flag (Stop, the
    visitor leaving, the caps' time limit); `name` as `Session.start_job` takes it."""
    session = SESSIONS.opener(request, kind)
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


def keep_results(session: Session, rows) -> None:
    """Add finished results of a job of `session` to the results store: the visitor's own on a public Space (none
    once the session was closed: its rows went as the visitor left, and a job finishing after that kept its rows for
    good), everyone's locally."""
    from peftlab.store import ResultStore

    if session.left and session.owner:
        return
    store = ResultStore(owner=session.owner)
    store.add(rows)
    if session.left and session.owner:  # closed while the rows were written
        store.forget_owner()


class StoppedBetweenBatches(Exception):
    """Raised by `batch_progress`'s callback between batches of a job whose stop flag is set (Stop, the visitor
    leaving, the time cap)."""

    def __init__(self, fraction: float):
        self.fraction = fraction  # of the batches done when it stopped


def batch_progress(stop: JobStop, progress: gr.Progress, doing: str = "scoring"):
    """A `progress(done, total)` callback for a scoring loop: it moves the bar ("scoring 3/10") and raises
    StoppedBetweenBatches once `stop` is set."""

    def shown(done: int, total: int) -> None:
        if stop.is_set():
            raise StoppedBetweenBatches(done / total)
        progress(done / total, desc=f"{doing} {done}/{total}")

    return shown


def stopped_note(stop: JobStop) -> str:
    return f"Stopped because {stop.reason}." if stop.is_set() else ""
