"""The Soft prompts tab: train several few-shot methods on the same K shots and seeds, side by side."""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict

import gradio as gr
import pandas as pd

from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, parse_int_list, results_frame, run_grid, summarize, validate_grid
from peftlab.models import load_lm
from peftlab.plots import accuracy_vs_parameters, label_probability_bars, training_curves
from peftlab.tuning import (
    METHODS, TrainSettings, flat_loss_message, loss_is_flat, method_config, parse_learning_rates,
)
from peftlab.ui.common import START_TEMPLATE, model_and_task_inputs, resolve_task, split_templates, user_errors, verbalizer_box

INTRO = """Train **prompt tuning**, **P-tuning**, **prefix tuning** and the baselines (LoRA, a linear head on
the frozen model, prompt-based full fine-tuning) on the same K examples per class and the same seeds.
Every prompt-based method learns through the Cloze tab's verbalizer scoring; the table gains a row as
each run finishes, and the zero-shot prompt is the first row."""

DEFAULT_METHODS = ["prompt-tuning", "lora", "head"]


def default_rates() -> str:
    return "\n".join(f"{name}={cls().learning_rate:g}" for name, cls in METHODS.items())


@user_errors
def run_comparison(
    model_name, task_name, upload, text_column, label_column, templates, verbalizer, methods, shots, seeds, steps,
    rates_text, test_limit, progress=gr.Progress(),
):
    task = resolve_task(task_name, upload, text_column, label_column)
    setup = ClozeSetup.build(task, split_templates(templates), verbalizer)
    rates = parse_learning_rates((rates_text or "").splitlines())
    configs = [method_config(m, **({"learning_rate": rates[m]} if m in rates else {})) for m in methods or []]
    seed_list, shot_list = parse_int_list(seeds, "Seeds"), parse_int_list(shots, "K")
    settings = TrainSettings(steps=int(steps))
    validate_grid(task, configs, seed_list, shot_list)
    lm = load_lm(model_name, dtype="fp32")  # trained in fp32 weights with bf16 autocast where the CPU has it
    rows, events, trained_by_method, notes = [], [], {}, []
    total_runs = len(configs) * len(seed_list) * len(shot_list)
    for item in run_grid(lm, task, setup, configs, seed_list, shot_list, settings, test_limit=int(test_limit) or None):
        if isinstance(item, GridRow):
            rows.append(item.values)
            if item.trained is not None:
                trained_by_method[item.values["method"]] = item.trained  # the latest run of each method
                if loss_is_flat(item.trained.history):
                    notes.append(flat_loss_message(item.trained))
        else:
            events.append(asdict(item))
            done = len(rows) - 1 + item.step / settings.steps
            progress(max(done, 0) / total_runs, desc=f"{item.method} seed {item.seed} step {item.step}")
            if item.step % 5 and item.step != settings.steps:
                continue  # redraw every few steps: plots cost more than a CPU step
        results = results_frame(rows)
        summary = summarize(results) if len(results) else pd.DataFrame()
        status = f"{max(len(rows) - 1, 0)}/{total_runs} runs finished." + "".join(f"\n\n⚠️ {n}" for n in notes)
        yield (status, results, summary, training_curves(pd.DataFrame(events)) if events else None,
               accuracy_vs_parameters(summary) if len(summary) else None, None, trained_by_method)
    with tempfile.NamedTemporaryFile("w", suffix="-peftlab-compare.csv", delete=False) as handle:
        results.to_csv(handle, index=False)
    yield status, results, summary, training_curves(pd.DataFrame(events)), accuracy_vs_parameters(summary), handle.name, trained_by_method


@user_errors
def classify_with(trained_by_method, method, text):
    if not trained_by_method:
        raise gr.Error("Train at least one method first.")
    if method not in trained_by_method:
        raise gr.Error(f"{method} has not been trained in this session; pick one of {', '.join(trained_by_method)}.")
    if not text or not text.strip():
        raise gr.Error("Type a text to classify.")
    trained = trained_by_method[method]
    columns = {"text"} | set(re.findall(r"\{(\w+)\}", trained.prompt.template.text)) - {"mask"}
    example = {name: text for name in columns} | {"label": 0}
    probs = trained.log_probs([example])[0].exp()
    return label_probability_bars(dict(zip(trained.prompt.verbalizer.words, map(float, probs))), method)


def build_soft_prompts_tab() -> None:
    gr.Markdown(INTRO)
    model, task, upload, text_column, label_column = model_and_task_inputs()
    with gr.Row():
        templates = gr.Textbox(START_TEMPLATE, lines=2, label="Template")
        verbalizer = verbalizer_box()
    with gr.Row():
        methods = gr.CheckboxGroup(list(METHODS), value=DEFAULT_METHODS, label="Methods to compare")
        rates = gr.Textbox(default_rates(), lines=6, label="Learning rate per method (defaults that train)")
    with gr.Row():
        shots = gr.Textbox("16", label="K per class (comma-separated)")
        seeds = gr.Textbox("13,21,42", label="Seeds")
        steps = gr.Number(TrainSettings().steps, precision=0, minimum=1, label="Steps")
        test_limit = gr.Number(200, precision=0, minimum=1, label="Test texts")
    with gr.Row():
        run_button = gr.Button("Train and compare", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    status = gr.Markdown()
    with gr.Row():
        curves = gr.Plot(label="Training curves")
        scatter = gr.Plot(label="Accuracy vs trainable parameters")
    summary = gr.Dataframe(label="Summary (mean ± std over seeds)", interactive=False)
    results = gr.Dataframe(label="Every run", interactive=False)
    results_file = gr.File(label="Results (CSV)")
    trained_state = gr.State({})
    with gr.Row():
        test_method = gr.Dropdown(list(METHODS), value="prompt-tuning", label="Classify with")
        test_text = gr.Textbox("A gripping, beautifully acted film.", label="Text")
        test_button = gr.Button("Classify")
    test_plot = gr.Plot(label="Label probabilities")

    run = run_button.click(
        run_comparison,
        [model, task, upload, text_column, label_column, templates, verbalizer, methods, shots, seeds, steps, rates,
         test_limit],
        [status, results, summary, curves, scatter, results_file, trained_state], api_name="compare",
    )
    stop_button.click(None, cancels=[run], api_name="compare_stop")
    test_button.click(classify_with, [trained_state, test_method, test_text], [test_plot], api_name="classify_trained")
