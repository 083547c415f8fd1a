"""The Cloze tab: hand-written templates and verbalizers, zero-shot or with demonstrations."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from peftlab.cloze import CALIBRATIONS, classify_text, evaluate
from peftlab.plots import confusion_heatmap, label_probability_bars
from peftlab.prompts import suggested_prompt
from peftlab.serving import current_caps
from peftlab.ui.common import (
    INSTANT, START_TEMPLATE, capped_number, heavy, job, light, load_model, model_and_task_inputs, resolve_task,
    split_templates, user_errors, verbalizer_box, verbalizer_lines,
)

INTRO = """Score each label word at the `{mask}` of a template. A causal LM scores a mask at the end as
the next token, and a mask followed by more text by the likelihood of the whole filled sentence.
Several templates (separated by a line `---`) are averaged as an ensemble."""


@user_errors
def suggest(task_name, upload, text_column, label_column):
    task = resolve_task(task_name, upload, text_column, label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    return template, verbalizer_lines(verbalizer)


@user_errors
def classify(model_name, task_name, upload, text_column, label_column, templates, verbalizer, calibration, shots, seed, text):
    task = resolve_task(task_name, upload, text_column, label_column)
    lm = load_model(model_name)
    prediction = classify_text(
        lm, task, text, split_templates(templates), verbalizer, calibration, int(shots or 0), int(seed or 0),
    )
    tokens = pd.DataFrame(prediction.top_tokens, columns=["token at the mask", "probability"]).round(4)
    tokens["token at the mask"] = tokens["token at the mask"].map(repr)
    return label_probability_bars(prediction.label_probs), tokens


@user_errors
def run_evaluation(
    model_name, task_name, upload, text_column, label_column, templates, verbalizer, calibration, shots, seed, limit,
    request: gr.Request, progress=gr.Progress(),
):
    task = resolve_task(task_name, upload, text_column, label_column)
    limit = int(limit) if limit else None
    current_caps().check("test_texts", min(limit or len(task.test), len(task.test)), "Test texts to evaluate")
    progress(0, desc="loading the model")
    lm = load_model(model_name)
    with job(request, "cloze") as (session, _):
        result = evaluate(
            lm, task, split_templates(templates), verbalizer, calibration, int(shots or 0), limit=limit,
            seed=int(seed or 0), progress=lambda done, total: progress(done / total, desc=f"scoring {done}/{total}"),
        )
    summary = (
        f"**Accuracy {result.accuracy:.1%}** · macro-F1 {result.macro_f1:.3f} · {result.n} test texts · "
        f"{result.seconds:.1f} s ({result.n / max(result.seconds, 1e-9):.0f} texts/s) · calibration {calibration}"
    )
    predictions = session.path(f"peftlab-{task.name}-cloze-predictions.csv")
    result.predictions.to_csv(predictions, index=False)
    errors = result.most_confident_errors(10).round(3)
    return summary, confusion_heatmap(result.confusion, result.label_names), errors, str(predictions)


def build_cloze_tab() -> dict[str, gr.components.Component]:
    """Build the tab; returns the components other tabs fill (AutoPrompt's "send to Cloze tab")."""
    gr.Markdown(INTRO)
    model, task, upload, text_column, label_column = model_and_task_inputs()
    with gr.Row():
        templates = gr.Textbox(START_TEMPLATE, lines=3, label="Template(s)", info="{text} or any {column}, and one {mask}")
        verbalizer = verbalizer_box()
    with gr.Row():
        calibration = gr.Radio(list(CALIBRATIONS), value="none", label="Calibration")
        shots = gr.Slider(0, 16, value=0, step=1, label="Demonstrations in context")
        seed = gr.Number(13, precision=0, label="Seed (demonstrations)")
        limit = capped_number(200, "Test texts to evaluate", "test_texts")
    settings = [model, task, upload, text_column, label_column, templates, verbalizer, calibration, shots, seed]

    with gr.Row():
        with gr.Column():
            text = gr.Textbox("A gripping, beautifully acted film.", label="Try one text", lines=2)
            classify_button = gr.Button("Classify", variant="primary")
            label_plot = gr.Plot(label="Label probabilities")
            top_tokens = gr.Dataframe(label="Model's top tokens at the mask", interactive=False)
        with gr.Column():
            evaluate_button = gr.Button("Evaluate on the test split", variant="primary")
            summary = gr.Markdown()
            confusion_plot = gr.Plot(label="Confusion matrix")
            predictions_file = gr.File(label="All predictions (CSV)")
    errors = gr.Dataframe(
        label="Most confident errors", interactive=False, wrap=True,
        headers=["text", "gold", "predicted", "confidence", "correct"],
    )

    gr.on(
        [task.input, upload.change], suggest, [task, upload, text_column, label_column], [templates, verbalizer],
        api_name="suggest_prompt", **INSTANT,
    )
    classify_button.click(classify, settings + [text], [label_plot, top_tokens], api_name="classify", **light())
    evaluate_button.click(
        run_evaluation, settings + [limit], [summary, confusion_plot, errors, predictions_file], api_name="evaluate",
        **heavy(),
    )
    return {"model": model, "task": task, "templates": templates, "verbalizer": verbalizer}
