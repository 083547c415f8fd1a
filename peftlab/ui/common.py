"""What every tab shows and reads: the model and task pickers, uploads, prompts and the caps beside them. How a press
runs (queues, jobs, Stop, bad input as one sentence) is in `peftlab.ui.presses`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import gradio as gr

from peftlab.backends import backend_from_env
from peftlab.config import counted
from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL, LM, load_lm, unavailable_reason
from peftlab.prompts import Verbalizer, is_suggested_template, suggested_prompt
from peftlab.serving import current_caps, public_mode
from peftlab.tasks import EMBEDDED_TASKS, load_task
from peftlab.ui.presses import INSTANT, light, shown_error, user_errors
from peftlab.ui.sessions import Session
from peftlab.uploads import DATA_SUFFIXES
from peftlab.zerogpu import GPUCalls, on_zero_gpu

MODEL_CHOICES = [DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "roberta-large", "bert-base-uncased", "gpt2"]
TEMPLATE_SEPARATOR = "---"
START_TEMPLATE, START_VERBALIZER = suggested_prompt("rt-sentiment", ["negative", "positive"])


def told_on_upload(upload: gr.File, read: Callable[[str], object], what: str) -> None:
    """When a file is dropped in `upload`, read it as its job will (`read(path)`, something with a length) and say at
    once how many `what`s it holds (a toast), or why it cannot be read (a warning): a latin-1 file, or a line
    without a 'response', was told only when the job's button was pressed."""

    def told(path) -> None:
        if not path:
            return
        try:
            items = read(path)
        except Exception as exc:  # a fault of the app's, as one too: a bare "Error" stood under the upload
            gr.Warning(shown_error(exc).message)
            return
        gr.Info(f"'{Path(path).name}': {counted(len(items), what)}.")

    upload.upload(told, [upload], None, api_visibility="private", show_progress="hidden", **light())


# A table cell holding a visitor's text shows its first characters, a click the rest: a 2,400-word review made its
# row taller than the screen, with the row's label, prediction and confidence out of sight beside it
TEXT_CELL_CHARS = 300
# px: two charts (or file boxes) in a row share a line from 640 px up and each takes its own on a phone (at 400 px two
# charts of 170 px cut their legends and labels to "zero-shot (templa…", two file boxes their names to ".c")
CHART_MIN_WIDTH = 320


def load_model(name: str, dtype: str = "auto", device: str | None = None) -> LM:
    """load_lm for a visitor: on a public Space only the models its caps allow."""
    current_caps().check_model(name)
    return load_lm(name, dtype=dtype, device=device)


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


TASK_INFO = "Embedded task or a Hub dataset id (owner/name, or owner/name:config); picking one puts an upload aside."


def _task_info(upload) -> dict:
    """The task list's note: which data is used while a file is uploaded."""
    if not upload:
        return gr.update(info=TASK_INFO)
    return gr.update(info=f"Your file '{Path(upload).name}' is the data; picking a task here puts it aside.")


def runs_backend():
    """Where a tab's several training runs go: Ray when the app was started with PEFTLAB_BACKEND=ray
    (`backends.backend_from_env`), one GPU call each on a ZeroGPU Space (`zerogpu.GPUCalls`), else None (one after
    another in this process)."""
    return backend_from_env() or (GPUCalls(kind="training run") if on_zero_gpu() else None)


@contextlib.contextmanager
def job_backend(session: Session):
    """`runs_backend()` for one job of `session` whose trained methods come back (a grid, a sweep): they are written
    into a folder of the job's own in the session's, and the tab loads each as it comes (`_kept`); the folder goes
    when the job ends. A grid and a sweep running at once wrote the same names into one folder, and the picker could
    offer the sweep's model under the grid's name."""
    backend = runs_backend()
    if backend is None:
        yield None
        return
    folder = session.folder / "trained-elsewhere" / uuid.uuid4().hex
    try:
        yield dataclasses.replace(backend, save_dir=str(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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

    On a public Space a typed name is never read as a path on the server: files come only as uploads
    (`check_public_task_name`).
    """
    source = upload if upload else str(task_name or "").strip()  # a box of spaces was looked up as Hub dataset ''
    if not source:
        raise PeftlabError("Pick a task or upload a CSV/JSONL file.")
    if not upload and public_mode():
        check_public_task_name(source)
    return load_task(
        str(source), text_column=(text_column or "text").strip(), label_column=(label_column or "label").strip()
    )


# the Hub's ids: a name, or an owner and a name, each at most 96 characters (a 300-character name was looked up on
# the server's disk, whose "File name too long" was shown as a fault of the app)
HUB_DATASET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?")


def check_public_task_name(name: str) -> None:
    """Refuse, on a public Space, a typed task that is not an embedded task or a Hub dataset id ('owner/name'):
    datasets' load_dataset reads a folder on the server by that name before it asks the Hub, and a visitor who typed
    the path of gradio's upload folder read the other visitors' uploaded files.

    Raises:
        PeftlabError: a file name, a path, or a name that is a file or folder on the server.
    """
    if name in EMBEDDED_TASKS:
        return
    if name.lower().endswith(DATA_SUFFIXES):
        raise PeftlabError("On this public Space, give your own data as an upload, not as a file name.")
    if not HUB_DATASET_ID.fullmatch(name) or ".." in name or Path(name).exists():
        raise PeftlabError(
            f"On this public Space, a task is an embedded one, an upload or a Hub dataset id such as 'owner/name'; "
            f"{name!r} is none of them."
        )


@user_errors
def suggest(task_name, upload, text_column, label_column, template: str = "", verbalizer: str = ""):
    """The task's suggested template and verbalizer, for the template and verbalizer boxes, each kept when the
    visitor's own still fits (`kept_if_written`, `kept_if_fitting`): a new file should not erase what they wrote."""
    task = resolve_task(task_name, upload, text_column, label_column)
    suggested, words = suggested_prompt(task.name, task.label_names, task.identity)
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
