"""The AutoPrompt tab: watch a discrete trigger being searched, then send it to the Cloze tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from peftlab.autoprompt import (
    POSITION_ORDERS, AutoPromptConfig, fill_triggers, remove_triggers, search_label_words, search_triggers, test_accuracy,
)
from peftlab.plots import metric_curve
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.serving import current_caps
from peftlab.ui.common import (
    INSTANT, capped_number, heavy, job, load_model, model_and_task_inputs, resolve_task, stop_handler, stopped_note,
    user_errors, verbalizer_box, verbalizer_lines,
)

INTRO = """**AutoPrompt** (Shin et al. 2020) fills the `[T]` slots with real words found by gradients: each
iteration takes the gradient of the label loss at one slot, proposes the top-k words by `-e_w · grad`,
re-scores them on a fresh batch and keeps the best if it beats the current word there and (with the dev
check) also raises the gold label's log-likelihood on the dev texts. The trigger with the best dev
log-likelihood wins; it is then compared on test texts with the same template without triggers."""


def _plot(history: pd.DataFrame):
    return metric_curve(history, "iteration", ["dev acc", "train acc"], "Accuracy during the search", "accuracy")


@user_errors
def run_search(
    model_name, task_name, upload, text_column, label_column, template, verbalizer, search_words, iterations,
    candidates, batch_size, train_size, positions, dev_check, seed, test_limit, request: gr.Request,
    progress=gr.Progress(),
):
    task = resolve_task(task_name, upload, text_column, label_column)
    config = AutoPromptConfig(
        template=template, iterations=int(iterations), candidates=int(candidates), batch_size=int(batch_size),
        train_size=int(train_size), positions=positions, dev_check=bool(dev_check), seed=int(seed),
    )
    test = task.test[: int(test_limit)] if test_limit else task.test
    caps = current_caps()
    caps.check("iterations", config.iterations, "Iterations")
    caps.check("test_texts", len(test), "Test texts")
    if not search_words:
        Verbalizer.parse(verbalizer, task.label_names)  # a bad verbalizer fails before the model loads
    lm = load_model(model_name)
    with job(request, "autoprompt") as (_, stop):
        if search_words:
            yield "Searching label words (logistic probe on the mask representation)...", None, None, "", ""
            verbalizer = verbalizer_lines(search_label_words(lm, task, template, seed=int(seed)))
        history = pd.DataFrame()
        last = None
        for event in search_triggers(lm, task, verbalizer, config, stop):
            last = event
            history = pd.concat([history, pd.DataFrame([event.row()])], ignore_index=True)
            progress(event.iteration / config.iterations, desc=f"iteration {event.iteration}/{config.iterations}")
            status = f"Iteration {event.iteration}/{config.iterations} · best dev accuracy {event.best_dev_accuracy:.1%}"
            yield status, history, _plot(history), fill_triggers(template, lm.tokenizer, event.best_trigger_ids), verbalizer
        stopped = stopped_note(stop)
    verbalizer_obj = Verbalizer.parse(verbalizer, task.label_names)
    found = Prompt(Template.parse(template, task.text_fields), verbalizer_obj, trigger_ids=tuple(last.best_trigger_ids))
    manual = Prompt(Template.parse(remove_triggers(template), task.text_fields), verbalizer_obj)
    progress(1.0, desc="scoring test texts")
    found_accuracy, manual_accuracy = test_accuracy(lm, found, test), test_accuracy(lm, manual, test)
    summary = (
        f"**Test accuracy {found_accuracy:.1%}** with the trigger vs {manual_accuracy:.1%} without "
        f"({len(test)} test texts) · best dev accuracy {last.best_dev_accuracy:.1%} · {last.elapsed:.0f} s of search"
    )
    if stopped:
        summary = f"{stopped} The best trigger of iterations 0-{last.iteration} is kept and scored. " + summary
    yield summary, history, _plot(history), fill_triggers(template, lm.tokenizer, last.best_trigger_ids), verbalizer


def build_autoprompt_tab(cloze: dict, tabs: gr.Tabs, cloze_tab_id: str) -> None:
    gr.Markdown(INTRO)
    model, task, upload, text_column, label_column = model_and_task_inputs()
    with gr.Row():
        template = gr.Textbox(AutoPromptConfig().template, label="Template with trigger slots [T]", lines=2)
        with gr.Column():
            verbalizer = verbalizer_box()
            search_words = gr.Checkbox(False, label="Search label words automatically (ignores the verbalizer)")
    defaults = AutoPromptConfig()
    with gr.Row():
        iterations = capped_number(defaults.iterations, "Iterations", "iterations")
        candidates = gr.Number(defaults.candidates, precision=0, minimum=1, label="Candidates k")
        batch_size = gr.Number(defaults.batch_size, precision=0, minimum=1, label="Batch size")
        train_size = gr.Number(defaults.train_size, precision=0, minimum=2, label="Train size")
        positions = gr.Radio(list(POSITION_ORDERS), value=defaults.positions, label="Slot order")
        dev_check = gr.Checkbox(defaults.dev_check, label="Accept a swap only if dev log-likelihood rises")
        seed = gr.Number(defaults.seed, precision=0, label="Seed")
        test_limit = capped_number(200, "Test texts", "test_texts")
    with gr.Row():
        run_button = gr.Button("Search", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    status = gr.Markdown()
    with gr.Row():
        history = gr.Dataframe(label="Trigger per iteration", interactive=False, max_height=320)
        curve = gr.Plot(label="Dev accuracy")
    with gr.Row():
        found_template = gr.Textbox(label="Found template", interactive=False)
        found_verbalizer = gr.Textbox(label="Verbalizer used", interactive=False)
        send_button = gr.Button("Send to Cloze tab")

    run_button.click(
        run_search,
        [model, task, upload, text_column, label_column, template, verbalizer, search_words, iterations, candidates,
         batch_size, train_size, positions, dev_check, seed, test_limit],
        [status, history, curve, found_template, found_verbalizer], api_name="autoprompt", **heavy(),
    )
    stop_button.click(stop_handler("autoprompt", "the search"), None, [status], api_name="autoprompt_stop", **INSTANT)

    @user_errors
    def send_to_cloze(model_name, task_name, template_text, verbalizer_text):
        if not template_text:
            raise gr.Error("Run a search first: there is no trigger to send yet.")
        return model_name, task_name, template_text, verbalizer_text, gr.Tabs(selected=cloze_tab_id)

    send_button.click(
        send_to_cloze, [model, task, found_template, found_verbalizer],
        [cloze["model"], cloze["task"], cloze["templates"], cloze["verbalizer"], tabs], api_name="send_to_cloze",
        **INSTANT,
    )
