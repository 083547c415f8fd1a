"""The AutoPrompt tab: watch a discrete trigger being searched, then send it to the Cloze tab."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from peftlab.autoprompt import (
    HISTORY_COLUMNS,
    AutoPromptConfig,
    AutoPromptResult,
    FinalScoring,
    autoprompt_run,
    balanced_examples,
    fill_triggers,
    search_label_words,
)
from peftlab.config import counted
from peftlab.errors import PeftlabError
from peftlab.plots import metric_curve
from peftlab.prompts import Template, Verbalizer
from peftlab.serving import current_caps
from peftlab.ui.common import (
    action_row,
    check_test_texts,
    load_model,
    model_and_task_inputs,
    on_task_change,
    suggest,
    task_changed,
    task_from_form,
    verbalizer_box,
    verbalizer_lines,
)
from peftlab.ui.display import fitted_table, readable, warning_notes
from peftlab.ui.estimates import Paced, cost_key, task_key
from peftlab.ui.inputs import config_from_form, config_input
from peftlab.ui.presses import (
    INSTANT,
    forget_on,
    heavy_job,
    job,
    keep_results,
    status_line,
    stop_handler,
    stopped_note,
    user_errors,
)
from peftlab.zerogpu import call_on_gpu, on_gpu

INTRO = """**AutoPrompt** (Shin et al. 2020) fills the `[T]` slots with real words found by gradients: each
iteration takes the gradient of the label loss at one slot, proposes the top-k words by `-e_w · grad`,
re-scores them on a fresh batch and keeps the best if it beats the current word there and (with the dev
check) also raises the gold label's log-likelihood on the dev texts. The trigger with the best dev
log-likelihood wins; it is then compared on test texts with the same template without triggers."""


def _plot(history: pd.DataFrame):
    return metric_curve(history, "iteration", ["dev acc", "train acc"], "Accuracy during the search", "accuracy", ".0%")


def search_inputs(form: dict):
    """The task and search config of the form; a PeftlabError for any input the search would refuse before the
    model loads (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    task = task_from_form(form)
    config = config_from_form(AutoPromptConfig, form)
    check_test_texts(task, config.test_limit)
    # what the search checks before its first step needs no model: a template without {mask} is refused at once
    Template.parse(config.template, task.text_fields)
    balanced_examples(task, config.train_size, config.seed)
    if not form["search_words"]:
        Verbalizer.parse(form["verbalizer"], task.label_names)
    return task, config


@user_errors
def run_search(request: gr.Request, progress=gr.Progress(), **form):
    task, config = search_inputs(form)
    verbalizer = form["verbalizer"]
    lm = load_model(form["model"])
    n_test = len(task.test_subset(config.test_limit))
    paced = Paced(
        request,
        "autoprompt",
        form,
        (lm.name, str(lm.model.dtype), *task_key(task), *cost_key(config)),
        config.iterations,
        f"{config.iterations} iterations and {n_test} test texts",
        # after the search, both prompts score the test texts: priced as the setup's dev evaluation of train_size
        extra=lambda pace: pace.setup * 2 * n_test / config.train_size,
    )
    if message := paced.refusal():
        yield message, *[gr.skip()] * 4
        return
    with job(request, "autoprompt") as (session, stop):
        if form["search_words"]:
            yield "Searching label words (logistic probe on the mask representation)...", None, None, "", ""
            words = call_on_gpu(
                search_label_words,
                lm,
                task,
                config.template,
                train_size=config.train_size,
                seed=config.seed,
                kind=f"label-words:{lm.name}",
                what="The label-word search",
            )
            verbalizer = verbalizer_lines(words)
        rows, history = [], pd.DataFrame(columns=list(HISTORY_COLUMNS))
        search = on_gpu(
            autoprompt_run,
            lm,
            task,
            verbalizer,
            config,
            stop=stop,
            kind="autoprompt:" + json.dumps(paced.key),
            units=config.iterations + 1,  # its iterations, and scoring before and after them as about one more
            what=f"A search of {config.iterations} iterations",
            shorter="run fewer iterations (or fewer candidates per iteration)",
            measured_s=paced.measured(),
        )
        for item in search:
            if isinstance(item, AutoPromptResult):
                result = item  # the last item: the loop ends with the GPU call
                keep_results(session, result.rows)
                continue
            if isinstance(item, FinalScoring):
                progress(1.0, desc=f"scoring {item.texts} test texts")
                why = f"{stopped_note(stop)} " if stop.is_set() else ""
                yield (
                    f"{why}Scoring the best trigger and the template without it on {item.texts} test texts...",
                    *[gr.skip()] * 4,
                )
                continue
            if message := paced.observe(item):
                yield message, *[gr.skip()] * 4
                return
            rows.append(item.row())
            history = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
            progress(item.iteration / config.iterations, desc=f"iteration {item.iteration}/{config.iterations}")
            status = (
                f"Iteration {item.iteration}/{config.iterations} · best dev accuracy {item.best_dev_accuracy:.1%}"
                f"{paced.time_left(item)}"
            )
            yield (
                status,
                readable(history),
                _plot(history),
                fill_triggers(config.template, lm.tokenizer, item.best_trigger_ids),
                verbalizer,
            )
        stopped = stopped_note(stop) if result.stopped else ""
    summary = (
        f"**Test accuracy {result.test_accuracy:.1%}** with the trigger vs {result.manual_test_accuracy:.1%} without "
        f"({result.test_texts} test texts) · best dev accuracy {result.dev_accuracy:.1%} · {result.seconds:.0f} s"
    )
    if stopped:
        kept = (
            f"The best trigger of its {counted(result.iterations_done, 'iteration')} is kept and scored."
            if result.iterations_done
            else "The trigger it started from is scored (no iteration had finished)."
        )
        summary = f"{stopped} {kept} " + summary
    if result.iterations_done and not history["accepted"].any():  # the found template was the starting one
        summary += (
            f". No swap was accepted in {counted(result.iterations_done, 'iteration')}: the trigger is still the one "
            "it started from; try more iterations or candidates, or a larger train size."
        )
    # a trigger that makes every text 'negative' scores 50 % on a balanced split, and only the Compare tab said so
    summary += warning_notes(result.warnings(config.train_size, task))
    yield summary, readable(history), _plot(history), result.template, verbalizer


def suggested_verbalizer(task_name, upload, text_column, label_column, verbalizer: str = ""):
    """The task's suggested verbalizer lines, or gr.skip() for `verbalizer` that already names its labels
    (`common.suggest` without its template: AutoPrompt's has slots)."""
    return suggest(task_name, upload, text_column, label_column, "", verbalizer)[1]


def build_autoprompt_tab(cloze: dict, tabs: gr.Tabs, cloze_tab_id: str) -> None:
    gr.Markdown(INTRO)
    source = model_and_task_inputs()
    with gr.Row():
        template = config_input(AutoPromptConfig, "template", lines=2)
        with gr.Column():
            verbalizer = verbalizer_box()
            search_words = gr.Checkbox(False, label="Search label words automatically (ignores the verbalizer)")
    # the template's trigger slots are the visitor's: a new task changes only the verbalizer
    on_task_change(source, suggested_verbalizer, [verbalizer], read=[verbalizer])
    with gr.Row():
        settings = {
            name: config_input(AutoPromptConfig, name)
            for name in (
                "iterations",
                "candidates",
                "batch_size",
                "train_size",
                "positions",
                "dev_check",
                "seed",
                "test_limit",
            )
        }
    form = dict(**source, template=template, verbalizer=verbalizer, search_words=search_words, **settings)
    with action_row():
        run_button = gr.Button("Search", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    status = status_line()
    # the whole width: its nine columns did not fit beside the curve at 1280 px ("train acc" showed as "tr…")
    history = fitted_table(label="Trigger per iteration", headers=list(HISTORY_COLUMNS), max_height=320)
    curve = gr.Plot(label="Dev accuracy")
    with gr.Row():
        found_template = gr.Textbox(label="Found template", interactive=False)
        found_verbalizer = gr.Textbox(label="Verbalizer used", interactive=False, lines=3)
        send_button = gr.Button("Send to Cloze tab")

    heavy_job(
        run_button,
        run_search,
        inputs_kwargs=form,
        outputs=[status, history, curve, found_template, found_verbalizer],
        api_name="autoprompt",
        checks=search_inputs,
        kind="autoprompt",
    )
    stopping = stop_handler(
        "autoprompt", "the search", after="the stage it is in; its best trigger so far is then scored on the test texts"
    )
    stop_button.click(stopping, None, [status], api_name="autoprompt_stop", **INSTANT)
    forget_on(task_changed(source), [status, history, curve, found_template, found_verbalizer])

    @user_errors
    def send_to_cloze(model_name, task_name, template_text, verbalizer_text):
        if not template_text:
            raise PeftlabError("Run a search first: there is no trigger to send yet.")
        return model_name, task_name, template_text, verbalizer_text, gr.Tabs(selected=cloze_tab_id)

    send_button.click(
        send_to_cloze,
        [source["model"], source["task"], found_template, found_verbalizer],
        [cloze["model"], cloze["task"], cloze["templates"], cloze["verbalizer"], tabs],
        api_name="send_to_cloze",
        **INSTANT,
    )
