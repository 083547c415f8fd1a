"""Pieces every tab shares: model and task pickers, and turning bad input into one clear UI message."""

from __future__ import annotations

import functools
import inspect

import gradio as gr

from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL
from peftlab.prompts import suggested_prompt
from peftlab.tasks import EMBEDDED_TASKS, load_task

MODEL_CHOICES = [DEFAULT_MODEL, "HuggingFaceTB/SmolLM2-135M-Instruct", "roberta-large", "bert-base-uncased", "gpt2"]
TEMPLATE_SEPARATOR = "---"
START_TEMPLATE, START_VERBALIZER = suggested_prompt("rt-sentiment", ["negative", "positive"])


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


def model_picker() -> gr.Dropdown:
    return gr.Dropdown(
        MODEL_CHOICES, value=DEFAULT_MODEL, allow_custom_value=True, label="Model",
        info="Embedded default works offline; Hub ids and local folders load where reachable.",
    )


def model_and_task_inputs() -> tuple[gr.Dropdown, gr.Dropdown, gr.File, gr.Textbox, gr.Textbox]:
    """The model picker, then the task dropdown (embedded name or Hub id), a CSV/JSONL upload and its columns."""
    with gr.Row():
        model = model_picker()
    with gr.Row():
        task = gr.Dropdown(
            list(EMBEDDED_TASKS), value="rt-sentiment", allow_custom_value=True, label="Task",
            info="Embedded task or a Hub dataset id; an uploaded file takes precedence.",
        )
        upload = gr.File(label="Or upload CSV / JSONL", file_types=[".csv", ".jsonl", ".json"], height=120)
        text_column = gr.Textbox("text", label="Text column")
        label_column = gr.Textbox("label", label="Label column")
    return model, task, upload, text_column, label_column


def verbalizer_box() -> gr.Textbox:
    """The verbalizer as editable `label: words` lines, starting from the default task's words."""
    return gr.Textbox(
        verbalizer_lines(START_VERBALIZER), lines=3, label="Verbalizer",
        info="One line per label: `label: word1, word2` (or JSON).",
    )


def resolve_task(task_name: str, upload, text_column: str, label_column: str):
    """The Task the user picked: the uploaded file when there is one, else the dropdown's name."""
    source = upload if upload else task_name
    if not source:
        raise PeftlabError("Pick a task or upload a CSV/JSONL file.")
    return load_task(str(source), text_column=(text_column or "text").strip(), label_column=(label_column or "label").strip())


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
