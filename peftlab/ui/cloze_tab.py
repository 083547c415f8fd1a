"""The Cloze tab: hand-written templates and verbalizers, zero-shot or with demonstrations."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from peftlab.cloze import ClozeConfig, ClozeSetup, classify_text, demonstrations_note, evaluate, evaluation_kind
from peftlab.plots import confusion_heatmap, label_probability_bars
from peftlab.prompts import PART_OF_A_CHARACTER
from peftlab.serving import current_caps
from peftlab.store import scored_note
from peftlab.ui.common import (
    CHART_MIN_WIDTH,
    START_TEMPLATE,
    TEXT_CELL_CHARS,
    action_row,
    check_test_texts,
    load_model,
    model_and_task_inputs,
    on_task_change,
    split_templates,
    suggest,
    task_changed,
    task_from_form,
    verbalizer_box,
)
from peftlab.ui.display import fitted_table, per_second, readable, verdict, warning_notes
from peftlab.ui.inputs import config_from_form, config_input
from peftlab.ui.presses import (
    INSTANT,
    StoppedBetweenBatches,
    answer,
    batch_progress,
    heavy_job,
    job,
    keep_results,
    light,
    status_line,
    stop_handler,
    stopped_note,
    user_errors,
)
from peftlab.zerogpu import call_on_gpu, on_zero_gpu

INTRO = """Score each label word at the `{mask}` of a template. A causal LM scores a mask at the end as
the next token, and a mask followed by more text by the likelihood of the whole filled sentence.
Several templates (separated by a line `---`) are averaged as an ensemble."""


ERROR_COLUMNS = ("gold", "predicted", "confidence", "text")  # the short columns first, in sight on any screen
TOKEN_COLUMNS = ("token at the mask", "probability")
SHOW_VERDICT = "() => document.getElementById('cloze-verdict')?.scrollIntoView({block: 'start', behavior: 'smooth'})"


@user_errors
def classify(**form):
    task = task_from_form(form)
    config = config_from_form(ClozeConfig, form)
    prediction = call_on_gpu(
        classify_text,
        load_model(form["model"]),
        task,
        form["text"],
        split_templates(form["templates"]),
        form["verbalizer"],
        config.calibration,
        config.shots_in_context,
        config.seed,
        kind=f"cloze-classify:{form['model']}",
        what="Classifying the text",
    )
    tokens = pd.DataFrame(prediction.top_tokens, columns=list(TOKEN_COLUMNS))
    tokens[TOKEN_COLUMNS[0]] = tokens[TOKEN_COLUMNS[0]].map(_quoted)
    answer = verdict(prediction.label_probs) + warning_notes(prediction.notes)
    return answer, label_probability_bars(prediction.label_probs), readable(tokens)


def _quoted(token: str) -> str:
    """A token (`prompts.token_text`: escaped already) in quotes, so that its leading space shows: "' great'"; a
    token holding part of a character keeps its note outside them. repr() quoted it too, and doubled every escape."""
    core = token.removesuffix(PART_OF_A_CHARACTER)
    return f"'{core}'{token[len(core) :]}"


def evaluation_inputs(form: dict):
    """The task and cloze config of the form; a PeftlabError for any input refused before the model loads (also
    checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    task = task_from_form(form)
    config = config_from_form(ClozeConfig, form)
    check_test_texts(task, config.limit, "Test texts to evaluate", task.cloze_split(config.shots_in_context))
    # the templates and the verbalizer need no model: a template without {mask} is refused before the queue too
    templates, verbalizer = split_templates(form["templates"]), form["verbalizer"]
    ClozeSetup.build(task, templates, verbalizer, config.calibration, config.shots_in_context, config.seed)
    return task, config


@user_errors
def run_evaluation(request: gr.Request, progress=gr.Progress(), **form):
    task, config = evaluation_inputs(form)
    templates = split_templates(form["templates"])
    texts = len(task.test_subset(config.limit, task.cloze_split(config.shots_in_context)))
    with job(request, "cloze") as (session, stop):  # Stop while the model loads stops it before the first batch
        progress(0, desc="loading the model")
        lm = load_model(form["model"])
        if on_zero_gpu():
            progress(0, desc=f"scoring {texts} texts in one GPU call")
        try:
            result = call_on_gpu(
                evaluate,
                lm,
                task,
                templates,
                form["verbalizer"],
                config.calibration,
                config.shots_in_context,
                limit=config.limit,
                seed=config.seed,
                split=task.cloze_split(config.shots_in_context),
                batch_size=config.batch_size,
                # a callback (and Stop) cannot cross into a GPU call
                progress=None if on_zero_gpu() else batch_progress(stop, progress),
                kind=evaluation_kind(lm.name, config.shots_in_context),
                units=texts * len(templates),
                what=f"Scoring {texts} texts",
                shorter="score fewer test texts (a limit) or fewer templates",
            )
        except StoppedBetweenBatches as stopped:
            # an accuracy over the texts scored so far would be one over another, smaller test set: none is shown
            return (
                f"{stopped_note(stop)} The evaluation was {stopped.fraction:.0%} through its {texts} test texts; "
                "an accuracy needs them all, so nothing was kept.",
                None,
                None,
                None,
            )
    keep_results(session, [result.row])
    summary = (
        f"**Accuracy {result.accuracy:.1%}** on {task.name} · macro-F1 {result.macro_f1:.3f} · "
        f"{scored_note(result.settings, task.left_out_words)} · {result.seconds:.1f} s "
        f"({per_second(result.n, result.seconds)} texts/s)"
        # a second look at the same texts and prompts reads the first one's scores: its seconds are that scoring's
        + (", when these texts were first scored with these prompts; kept since" if result.reused else "")
        + f" · calibration {config.calibration}"
    )
    summary += f" · {demonstrations_note(result.settings)}" if config.shots_in_context else ""
    summary += warning_notes(result.notes)
    predictions = session.download(task.name, "cloze-predictions", suffix="csv")
    result.predictions.to_csv(predictions, index=False)
    errors = readable(result.most_confident_errors(10)[list(ERROR_COLUMNS)])
    return summary, confusion_heatmap(result.confusion, result.label_names), errors, str(predictions)


def build_cloze_tab() -> dict[str, gr.components.Component]:
    """Build the tab; returns the components other tabs fill (AutoPrompt's "send to Cloze tab")."""
    gr.Markdown(INTRO)
    source = model_and_task_inputs()
    with gr.Row():
        templates = gr.Textbox(
            START_TEMPLATE, lines=3, label="Template(s)", info="{text} or any {column}, and one {mask}"
        )
        verbalizer = verbalizer_box()
    with gr.Row():
        settings = dict(
            calibration=config_input(ClozeConfig, "calibration"),
            shots_in_context=config_input(ClozeConfig, "shots_in_context", gr.Slider, maximum=16, step=1),
            seed=config_input(ClozeConfig, "seed"),
        )
        limit = config_input(ClozeConfig, "limit")
    form = dict(**source, templates=templates, verbalizer=verbalizer, **settings)

    with action_row():
        text = gr.Textbox("A gripping, beautifully acted film.", label="Try one text", lines=1, scale=3)
        classify_button = gr.Button("Classify", variant="primary")
        evaluate_button = gr.Button("Evaluate on the test split", variant="primary")
        stop_button = gr.Button("Stop", variant="stop", min_width=80, scale=0)
    with gr.Row():
        with gr.Column(min_width=CHART_MIN_WIDTH):
            text_verdict = gr.Markdown(elem_id="cloze-verdict")
            label_plot = gr.Plot(label="Label probabilities")
            top_tokens = fitted_table(label="Model's top tokens at the mask", headers=list(TOKEN_COLUMNS))
        with gr.Column(min_width=CHART_MIN_WIDTH):
            summary = status_line()
            confusion_plot = gr.Plot(label="Confusion matrix")
            predictions_file = gr.File(label="All predictions (CSV)")
    errors = fitted_table(
        label="Most confident errors",
        headers=list(ERROR_COLUMNS),
        max_chars=TEXT_CELL_CHARS,
        max_height=500,
        wrap_at=72,
    )

    on_task_change(source, suggest, [templates, verbalizer], api_name="suggest_prompt", read=[templates, verbalizer])
    new_task = task_changed(source)  # the answers below were about the task before
    classified = [text_verdict, label_plot, top_tokens]
    classified_event = classify_button.click(
        classify, inputs_kwargs=form | {"text": text}, outputs=classified, api_name="classify", **light()
    )
    # one text's answer is about the prompt it was given: it stood, with a note on label words no longer in the box,
    # beside an edited verbalizer (a press gives it again in a second; an evaluation's result stays to compare with)
    prompt_edited = [templates.input, verbalizer.input, settings["calibration"].input]
    answer(classified_event, classified, classify_button, stale_on=new_task + prompt_edited)
    # the answer is under the form and its sticky buttons, out of sight at 1280 x 800: nothing seemed to happen
    classified_event.success(None, js=SHOW_VERDICT)
    evaluated = [summary, confusion_plot, errors, predictions_file]
    answer(
        heavy_job(
            evaluate_button,
            run_evaluation,
            inputs_kwargs=form | {"limit": limit},
            outputs=evaluated,
            api_name="evaluate",
            checks=evaluation_inputs,
            kind="cloze",
        ),
        evaluated,
        evaluate_button,
        stale_on=new_task,
    )
    stopped = stop_handler("cloze", "the evaluation", after="its current batch of texts")
    stop_button.click(stopped, None, [summary], api_name="evaluate_stop", **INSTANT)
    return {"model": source["model"], "task": source["task"], "templates": templates, "verbalizer": verbalizer}
