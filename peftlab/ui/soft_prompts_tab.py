"""The Soft prompts tab: train several few-shot methods on the same K shots and seeds, side by side.

Below the comparison: classify typed text with any trained (or uploaded) method, download a trained
method as a zip, and sweep one setting of one method (e.g. the prompt length).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict

import gradio as gr
import pandas as pd

from peftlab.cloze import ClozeSetup
from peftlab.compare import (
    GridConfig,
    GridRow,
    SweepConfig,
    grid_notes,
    parse_sweep_values,
    results_frame,
    run_grid,
    run_record,
    run_sweep,
    summarize,
    sweep_configs,
    sweepable_settings,
    validate_grid,
)
from peftlab.config import counted, duration, parse_list
from peftlab.errors import PeftlabError
from peftlab.methods import METHODS, cut_note, method_config, parse_learning_rates
from peftlab.models import LM, loaded_lm
from peftlab.plots import accuracy_vs_parameters, label_probability_bars, sweep_curve, training_curves
from peftlab.prompts import typed_example
from peftlab.saving import load_trained, saved_model_name, zip_trained
from peftlab.serving import current_caps
from peftlab.standard import grid_seconds
from peftlab.store import stopped_at
from peftlab.tuning import TrainSettings
from peftlab.ui.common import (
    CHART_MIN_WIDTH,
    START_TEMPLATE,
    action_row,
    backend_line,
    check_test_texts,
    intro,
    job_backend,
    load_model,
    model_and_task_inputs,
    on_task_change,
    split_templates,
    suggest,
    task_changed,
    task_from_form,
    upload_limit_note,
    verbalizer_box,
)
from peftlab.ui.display import fitted_table, readable, scored_on, time_left, took, warning_notes
from peftlab.ui.estimates import measured_costs, unconfirmed
from peftlab.ui.inputs import config_from_form, config_input
from peftlab.ui.presses import (
    INSTANT,
    answer,
    forget_on,
    heavy_job,
    job,
    keep_results,
    light,
    press_telling,
    status_line,
    stop_handler,
    stopped_note,
    user_errors,
)
from peftlab.ui.sessions import SESSIONS, Session
from peftlab.zerogpu import call_on_gpu

SUMMARY = """Train **prompt tuning**, **P-tuning**, **prefix tuning** and the baselines (LoRA, adapters, BitFit,
a linear head on the frozen model, prompt-based full fine-tuning) on the same K examples per class and the
same seeds, side by side."""
DETAILS = f"""Every prompt-based method learns through the Cloze tab's verbalizer scoring; the table gains
a row as each run finishes, and the zero-shot prompt is the first row. Each run scores its K dev examples
per class every {TrainSettings().eval_every} steps and keeps the weights whose dev log-likelihood was
best (hover a dev point to see it), or, as LM-BFF did, whose dev accuracy was best."""

TRAINING_DTYPE = "fp32"  # trained in fp32 weights with bf16 autocast where the CPU has it; saved methods load so too

SWEEP_INTRO = """Vary one setting of one method, as the Prompt Tuning and Prefix-tuning papers' length
ablations do: each value is trained on the same K shots and seeds, and plotted against zero-shot."""


def default_rates() -> str:
    return "\n".join(f"{name}={cls().learning_rate:g}" for name, cls in METHODS.items())


def _prepare(form: dict):
    """What every training run of a grid or sweep shares, validated within the caps before the model loads."""
    task = task_from_form(form)
    setup = ClozeSetup.build(task, split_templates(form["templates"]), form["verbalizer"])
    return task, setup, config_from_form(TrainSettings, form)


def _finished(rows: list[dict]) -> int:
    """Trained runs that ran all their steps: a stopped run's row ("stopped at step 7 of 30") is not one of them."""
    return sum(row["method"] != "zero-shot" and row["status"] == "done" for row in rows)


def _stop_note(stop, rows: list[dict], total: int, varied: str | None = None) -> str:
    """What a Stop left of a grid's or sweep's `total` runs: a run stopped after a step has its row, with its best
    weights; one stopped before its first step has none ("best weights are kept" was said of runs never trained).
    A sweep (`varied`: its setting) shows no run's row, only each value's: the stopped run is marked in its value's
    (`_sweep_summary`); "the last row" named a row its table does not have."""
    trained = [row for row in rows if row["method"] != "zero-shot"]
    if not trained:
        return f"{stopped_note(stop)} No run had taken a step: nothing was trained."
    last = trained[-1]
    if stopped_at(last["status"]):
        # "Finished runs are kept" was said with none finished, and the stopped run stood in the summary, the chart
        # and the picker as if it had trained to its end
        kept = "Finished runs are kept" if _finished(rows) else "No run had finished"
        run = f"{last['method']}, K {last['K']}, seed {last['seed']}"
        if varied is not None:
            return (
                f"{stopped_note(stop)} {kept}; the stopped run ({run}, {varied} {last[varied]}), {last['status']}, "
                f"is marked in its row, and the table and the chart count it as it was then."
            )
        return (
            f"{stopped_note(stop)} {kept}; the stopped run ({run}) is the last row, {last['status']}, and the summary "
            "and the chart count it as it was then."
        )
    if len(trained) < total:
        return f"{stopped_note(stop)} Finished runs are kept; the next run had not taken a step."
    return stopped_note(stop)


def _running_line(stop, finished: int, total: int, started: float, fraction: float, expected: float) -> str:
    """A grid's or sweep's status while it runs: its finished runs and the time left at `fraction` done, or that it
    is stopping (after "Stopping the comparison after its current step", "about 16 min left" stood)."""
    if stop.is_set():
        return f"{finished}/{total} runs finished; stopping after the current step."
    left = time_left(started, fraction, expected) if finished < total else ""
    return f"{finished}/{total} runs finished{left} (estimated {duration(expected)} in all)."


def trained_name(values: dict) -> tuple[str, str]:
    """The name a grid's run is kept under in the session, and what the picker shows beside it: ("lora", "K 16, seed
    42"); a stopped run's is its own ("lora · stopped", "K 16, seed 42, at step 3 of 30"), or it took the name of the
    finished run before it and was picked as that."""
    about = f"K {values['K']}, seed {values['seed']}"
    if step := stopped_at(values["status"]):
        return f"{values['method']} · stopped", f"{about}, {step}"
    return values["method"], about


def trained_methods(request) -> dict:
    """The session's trained (or loaded) methods, by name, the latest last."""
    return SESSIONS.get(request).values.setdefault("trained", {})


def keep_trained(session: Session, name: str, trained, about: str = "") -> None:
    """Keep `trained` as `session`'s method `name` (the latest of that name), last: the pickers show the last one,
    not an older method that was first trained under a name before it. `about` (the run's K and seed) shows beside
    the name: a grid over three seeds keeps each method's last run, and the picker did not say which. Nothing is
    kept in a closed session (`Session.left`)."""
    if session.left:
        return
    kept = session.values.setdefault("trained", {})
    kept.pop(name, None)
    kept[name] = trained
    session.values.setdefault("trained_about", {})[name] = about


def method_choices(request) -> gr.Dropdown:
    """The picker of the session's trained methods ("prompt-tuning (K 16, seed 42)" shown, "prompt-tuning" picked),
    showing the one trained or loaded last."""
    kept, about = trained_methods(request), SESSIONS.get(request).values.get("trained_about", {})
    choices = [(f"{name} ({about[name]})" if about.get(name) else name, name) for name in kept]
    return gr.Dropdown(choices=choices, value=next(reversed(kept), None))


def _kept(row: GridRow, lm):
    """The trained method of a grid row: in the row (in-process) or loaded from where a Ray worker saved it."""
    return row.trained if row.trained is not None or row.saved is None else load_trained(row.saved, lm)


def _check_on(lm: LM | None, configs) -> None:
    """Each method checked on `lm` (BitFit refuses a model without bias terms); none when the model is not loaded: a
    press is looked at with the model only when the process holds it already, as loading it there would keep every
    other visitor's press waiting, and the job checks again once it has loaded it."""
    if lm is not None:
        for config in configs:
            config.check(lm)


def grid_inputs(form: dict):
    """The task, cloze setup, training settings, grid and method configs of the comparison form; a PeftlabError for
    any the run would refuse (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    task, setup, settings = _prepare(form)
    grid = config_from_form(GridConfig, form)
    check_test_texts(task, grid.test_limit)
    rates = parse_learning_rates((form["rates"] or "").splitlines())
    configs = [method_config(m, **({"learning_rate": rates[m]} if m in rates else {})) for m in grid.methods]
    validate_grid(task, configs, grid.seeds, grid.shots)
    current_caps().check("runs", len(configs) * len(grid.seeds) * len(grid.shots), "The number of training runs")
    _check_on(loaded_lm(form["model"], dtype=TRAINING_DTYPE), configs)  # as the job does, once the model is loaded
    return task, setup, settings, grid, configs


@user_errors
def run_comparison(request: gr.Request, progress=gr.Progress(), **form):
    task, setup, settings, grid, configs = grid_inputs(form)
    seed_list, shot_list, test_limit = grid.seeds, grid.shots, grid.test_limit
    total_runs = len(configs) * len(seed_list) * len(shot_list)
    lm = load_model(form["model"], dtype=TRAINING_DTYPE)
    _check_on(lm, configs)  # before the estimate: BitFit on a model without biases was refused after a second press
    costs = measured_costs(lm, task, split_templates(form["templates"])[0], form["verbalizer"], progress)
    expected = grid_seconds(grid.methods, shot_list, len(seed_list), settings, task, test_limit, costs)
    sizes = f"{len(configs)} x {len(shot_list)} x {len(seed_list)}"
    plan = f"{counted(total_runs, 'training run')} (methods x K x seeds = {sizes})"
    if message := unconfirmed(request, "soft-prompts", form, expected, plan):
        yield message, *[gr.skip()] * 7
        return
    rows, events, notes, scored = [], [], [], []
    started, done = time.perf_counter(), 0.0

    def outputs(files=(None, None)):
        results = results_frame(rows)
        summary = summarize(results)
        finished = _finished(rows)
        if files[0]:  # the last update: how long it took, and on what (an upload's test split is small)
            status = f"{finished}/{total_runs} runs finished{took(started, expected)}.{scored_on(scored, task)}"
        else:
            status = _running_line(stop, finished, total_runs, started, done / total_runs, expected)
        status += warning_notes(notes)
        return (
            status,
            readable(results),
            readable(summary),
            training_curves(pd.DataFrame(events)) if events else None,
            accuracy_vs_parameters(summary) if len(summary) else None,
            *files,
            method_choices(request),
        )

    with job(request, "soft-prompts") as (session, stop), job_backend(session) as backend:
        for item in run_grid(lm, task, setup, configs, seed_list, shot_list, settings, test_limit, stop, backend):
            if isinstance(item, GridRow):
                rows.append(item.values)
                if item.result is not None:  # a run that failed on Ray has no scores
                    keep_results(session, [item.result])
                    scored.append(item.result)
                if (trained := _kept(item, lm)) is not None:
                    name, about = trained_name(item.values)
                    keep_trained(session, name, trained, about)  # the latest run of each method
                    if warning := trained.loss_warning():
                        notes.append(warning)
            else:
                events.append(asdict(item))
                done = max(len(rows) - 1 + item.step / settings.steps, 0)
                progress(done / total_runs, desc=f"{item.method} seed {item.seed} step {item.step}")
                if item.step % 5 and item.step != settings.steps:
                    continue  # redraw every few steps: plots cost more than a CPU step
            yield outputs()
        if stop.is_set():
            notes.insert(0, _stop_note(stop, rows, total_runs))
        notes += grid_notes(lm, task, setup, configs, scored, test_limit)
        results = results_frame(rows)
        csv_file = session.download(task.name, "soft-prompts-runs", suffix="csv")
        csv_file.write_text(results.to_csv(index=False), encoding="utf-8")
        json_file = session.download(task.name, "soft-prompts-run", suffix="json")
        json_file.write_text(
            run_record(lm, task, setup, configs, settings, results, events, test_limit), encoding="utf-8"
        )
        yield outputs((str(csv_file), str(json_file)))


LOAD_SAVED = "Load a saved method (zip)"


def picked_method(method, request, purpose: str):
    """The session's trained method picked as `method`, to `purpose` ("classify with", "download").

    Raises:
        PeftlabError: none trained or loaded yet, none picked, or a name the session does not keep.
    """
    trained_by_method = trained_methods(request)
    if not trained_by_method:
        # said on both tabs: "(or load a saved one in Soft prompts)" read oddly on that tab, where the box has a name
        raise PeftlabError(
            f"Nothing is trained yet: train one in this tab first, or load one with {LOAD_SAVED!r} (Soft prompts tab)."
        )
    if not method:  # the PET tab's picker stays empty while the Soft prompts tab trains (it said "None has not ...")
        # the PET tab loads nothing and calls its method a classifier: the words fit both tabs
        raise PeftlabError(
            f"Nothing is picked to {purpose}: train one in this tab, or load one with {LOAD_SAVED!r} (Soft prompts "
            "tab), then pick it in the list."
        )
    if method not in trained_by_method:
        raise PeftlabError(
            f"{method} has not been trained in this session; pick one of {', '.join(trained_by_method)}."
        )
    return trained_by_method[method]


@user_errors
def classify_with(method, text, request: gr.Request):
    trained = picked_method(method, request, "classify with")
    example = typed_example(text, trained.prompt.template.fields)
    log_probs = call_on_gpu(
        trained.log_probs, [example], kind=f"trained-classify:{trained.lm.name}:{method}", what="Classifying the text"
    )
    if note := cut_note(trained.lm, trained.prompt, [trained.config], [example]):
        gr.Warning(note)  # the chart alone would not say the method read only part of the text
    return label_probability_bars(dict(zip(trained.prompt.verbalizer.words, map(float, log_probs[0].exp()))), method)


def trained_method_panel(noun: str, classify_api: str, download_api: str) -> tuple[gr.Dropdown, gr.Row]:
    """A picker of the session's trained methods, a text to classify with the picked one, its label
    probabilities and its download, wired; returns the picker (runs set its choices) and the download row."""
    with gr.Row():
        picker = gr.Dropdown([], label=noun.capitalize(), allow_custom_value=True)
        text = gr.Textbox("A gripping, beautifully acted film.", label="Text")
        classify_button = gr.Button("Classify")
    # a refused press's sentence, which the chart and the file cannot hold: under the buttons, in sight of the one
    # pressed (below the downloads it was out of sight of Classify)
    said = status_line()
    probabilities = gr.Plot(label="Label probabilities")
    with gr.Row() as downloads:
        download_button = gr.Button(f"Download the {noun} (zip)")
        download_file = gr.File(label=noun.capitalize())
    answer(
        press_telling(classify_button, classify_with, [picker, text], [probabilities], said, classify_api),
        [probabilities],
        classify_button,
    )
    answer(
        press_telling(download_button, download_trained, [picker], [download_file], said, download_api),
        [download_file],
        download_button,
    )
    # another method picked (or trained, or loaded): the chart and the file were about the method before, and a
    # refusal's "Error" badge from before any training stood over them as if the new method had failed
    forget_on([picker.change], [said, probabilities, download_file])
    return picker, downloads


@user_errors
def download_trained(method, request: gr.Request):
    trained = picked_method(method, request, "download")
    # "pet classifier" of seed 13 -> peftlab-smollm2-135m-pet-classifier-seed-13-2026-11-30-142501.zip; a grid's run
    # says its K and seed ("lora" -> ...-lora-K-16-seed-42-...): the latest of each kept run has its own download
    about = SESSIONS.get(request).values.get("trained_about", {}).get(method, "")
    path = SESSIONS.get(request).download(trained.lm.name, method, about, suffix="zip")
    return str(zip_trained(trained, path))


def loaded_name(request, method: str, path: str) -> str:
    """The name a loaded zip of `method` is kept under: "lora (loaded)", then "lora (loaded 2)", ... for other zips
    (a second zip of the same method replaced the first in the picker), and its earlier name for the same zip loaded
    again (each name holds a model built for it)."""
    names = SESSIONS.get(request).values.setdefault("loaded_zips", {})  # zip digest -> its name
    hashed = hashlib.sha256()
    with open(path, "rb") as file:  # in blocks, not read whole (hashlib.file_digest is Python 3.11's; Spaces run 3.10)
        for block in iter(lambda: file.read(2**20), b""):
            hashed.update(block)
    digest = hashed.hexdigest()
    if digest not in names:
        taken, count, name = set(trained_methods(request)) | set(names.values()), 1, f"{method} (loaded)"
        while name in taken:
            count += 1
            name = f"{method} (loaded {count})"
        names[digest] = name
    return names[digest]


@user_errors
def load_saved(path, request: gr.Request):
    if not path:
        raise PeftlabError("Upload a zip that 'Download' gave you.")
    lm = load_model(saved_model_name(path), dtype=TRAINING_DTYPE)  # only a model this Space allows
    trained = load_trained(path, lm)
    name, scored = loaded_name(request, trained.config.name, path), trained.scored
    about = f"K {scored.k}, seed {scored.seed}" if scored is not None and scored.k is not None else ""
    keep_trained(SESSIONS.get(request), name, trained, about)
    return (
        method_choices(request),
        f"Loaded {trained.config.name} trained on {trained.lm.name} ({trained.trainable_params:,} trained parameters) "
        f"as '{name}'.",
    )


@user_errors
def setting_choices(method):
    settings = sweepable_settings(method)
    preferred = "num_virtual_tokens" if "num_virtual_tokens" in settings else settings[0]
    return gr.Dropdown(choices=settings, value=preferred)


def _sweep_summary(rows: list[dict], setting: str) -> pd.DataFrame:
    """The trained runs' mean ± std per value of the varied setting; its columns even before a trained run ends.
    A value counting a stopped run says so in its "stopped" column ("seed 42 at step 3 of 30"); the column is there
    only when a run was stopped."""
    results = results_frame(rows)
    if setting not in results:  # only the zero-shot row so far, which has no value of the setting
        results[setting] = None
    trained = results[results["method"] != "zero-shot"]
    summary = summarize(trained, by=[setting])
    stopped = trained[trained["status"].map(stopped_at) != ""]
    if len(stopped):
        marks = {
            value: "; ".join(f"seed {run.seed} {stopped_at(run.status)}" for run in group.itertuples())
            for value, group in stopped.groupby(setting, sort=False)
        }
        summary["stopped"] = summary[setting].map(marks).fillna("")
    return summary


def sweep_inputs(form: dict):
    """The K, task, cloze setup, training settings, sweep config, values and each value's method config of the sweep
    form; a PeftlabError for any the run would refuse (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    k = parse_list(form["shots"], int, "K per class")
    if len(k) != 1:
        raise PeftlabError("A sweep uses one K; give a single number of examples per class.")
    task, setup, settings = _prepare(form)
    sweep = config_from_form(SweepConfig, form, shots=k[0])
    check_test_texts(task, sweep.test_limit)
    values = parse_sweep_values(sweep.method, sweep.varied, sweep.values)
    configs = sweep_configs(sweep.method, sweep.varied, values)
    validate_grid(task, configs, sweep.seeds, k)
    current_caps().check("runs", len(values) * len(sweep.seeds), "The number of training runs")
    current_caps().check("shots", k[0], "K per class")
    _check_on(loaded_lm(form["model"], dtype=TRAINING_DTYPE), configs)
    return k, task, setup, settings, sweep, values, configs


@user_errors
def run_sweep_ui(request: gr.Request, progress=gr.Progress(), **form):
    k, task, setup, settings, sweep, values, configs = sweep_inputs(form)
    method, setting, seed_list, test_limit = sweep.method, sweep.varied, sweep.seeds, sweep.test_limit
    total = len(values) * len(seed_list)
    lm = load_model(form["model"], dtype=TRAINING_DTYPE)
    _check_on(lm, configs)  # before the estimate, as a grid's
    costs = measured_costs(lm, task, split_templates(form["templates"])[0], form["verbalizer"], progress)
    expected = grid_seconds([method] * len(values), k, len(seed_list), settings, task, test_limit, costs)
    if message := unconfirmed(request, "sweep", form, expected, counted(total, "training run")):
        yield message, gr.skip(), gr.skip()
        return
    rows, started, shown = [], time.perf_counter(), (gr.skip(), gr.skip())  # shown: the table and the plot
    scored = []  # the runs' results
    with job(request, "sweep") as (session, stop), job_backend(session) as backend:
        runs = run_sweep(lm, task, setup, method, setting, values, seed_list, k[0], settings, test_limit, stop, backend)
        for item in runs:
            if not isinstance(item, GridRow):
                fraction = max(len(rows) - 1 + item.step / settings.steps, 0) / total
                progress(fraction, desc=f"{item.method} seed {item.seed} step {item.step}")
                if item.step % 5 == 0:  # the time left every few steps, as a grid's: it stood for minutes on a run
                    yield _running_line(stop, _finished(rows), total, started, fraction, expected), gr.skip(), gr.skip()
                continue
            rows.append(item.values)
            if item.result is not None:
                keep_results(session, [item.result])
                scored.append(item.result)
            summary = _sweep_summary(rows, setting)
            zero_shot = float(rows[0]["test_accuracy"])
            shown = readable(summary), sweep_curve(summary, setting, zero_shot) if len(summary) else None
            finished = _finished(rows)
            yield _running_line(stop, finished, total, started, finished / total, expected), *shown
    status = f"{_finished(rows)}/{total} runs finished{took(started, expected)}.{scored_on(scored, task)}"
    if stop.is_set():
        status += f" {_stop_note(stop, rows, total, setting)}"
    yield status, *shown  # an API client's result is the last update: the table and plot again


def build_soft_prompts_tab() -> None:
    intro(SUMMARY, DETAILS)
    backend_line()
    source = model_and_task_inputs()
    with gr.Row():
        templates = gr.Textbox(START_TEMPLATE, lines=2, label="Template")
        verbalizer = verbalizer_box()
    prompt = dict(**source, templates=templates, verbalizer=verbalizer)
    on_task_change(source, suggest, [templates, verbalizer], read=[templates, verbalizer])
    with gr.Row():
        methods = config_input(
            GridConfig, "methods", gr.CheckboxGroup, choices=list(METHODS), info="each trained once per K and seed"
        )
        rates = gr.Textbox(default_rates(), lines=8, label="Learning rate per method (defaults that train)")
    with gr.Row():
        shots, seeds = config_input(GridConfig, "shots"), config_input(GridConfig, "seeds")
        steps, select_by = config_input(TrainSettings, "steps"), config_input(TrainSettings, "select_by")
        test_limit = config_input(GridConfig, "test_limit")
    form = dict(
        **prompt,
        methods=methods,
        shots=shots,
        seeds=seeds,
        steps=steps,
        select_by=select_by,
        rates=rates,
        test_limit=test_limit,
    )
    with action_row():
        run_button = gr.Button("Train and compare", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    status = status_line()
    with gr.Row():
        curves = gr.Plot(label="Training curves", min_width=CHART_MIN_WIDTH)
        scatter = gr.Plot(label="Accuracy vs trainable parameters", min_width=CHART_MIN_WIDTH)
    summary = fitted_table(readable(summarize(results_frame([]))), label="Summary (mean ± std over seeds)")
    results = fitted_table(readable(results_frame([])), label="Every run")
    with gr.Row():
        # each on its own line on a phone, where side by side their names were cut to the first letter
        results_file = gr.File(label="Results (CSV)", min_width=CHART_MIN_WIDTH)
        run_file = gr.File(label="Whole run (JSON)", min_width=CHART_MIN_WIDTH)

    gr.Markdown("### Use a trained method")
    trained_method, downloads = trained_method_panel("trained method", "classify_trained", "download_trained")
    with downloads:
        # a public Space's cap, as beside every upload: a full fine-tune's zip (about 540 MB) cannot come back there
        upload_trained = gr.File(label=LOAD_SAVED + upload_limit_note(), file_types=[".zip"])
    load_status = status_line()

    heavy_job(
        run_button,
        run_comparison,
        inputs_kwargs=form,
        outputs=[status, results, summary, curves, scatter, results_file, run_file, trained_method],
        api_name="compare",
        checks=grid_inputs,
        kind="soft-prompts",
    )
    stop_button.click(
        stop_handler("soft-prompts", "the comparison"), None, [status], api_name="compare_stop", **INSTANT
    )
    new_task = task_changed(source)  # the grid's and the sweep's results were about the task before
    forget_on(new_task, [status, results, summary, curves, scatter, results_file, run_file])
    answer(
        upload_trained.upload(
            load_saved, [upload_trained], [trained_method, load_status], api_name="load_trained", **light()
        ),
        [load_status],  # not the picker: it lists the methods the session keeps
        upload_trained,
    )

    with gr.Accordion("Sweep one setting", open=False):
        gr.Markdown(SWEEP_INTRO)
        with gr.Row():
            sweep_method = config_input(SweepConfig, "method", gr.Dropdown, choices=list(METHODS))
            sweep_setting = config_input(
                SweepConfig,
                "varied",
                gr.Dropdown,
                choices=sweepable_settings(SweepConfig().method),
                allow_custom_value=True,
            )  # any name reaches the library, which explains a bad one
            sweep_values = config_input(SweepConfig, "values")
        with gr.Row():
            sweep_form = dict(
                **prompt,
                method=sweep_method,
                varied=sweep_setting,
                values=sweep_values,
                shots=config_input(SweepConfig, "shots", gr.Textbox),
                seeds=config_input(SweepConfig, "seeds"),
                steps=config_input(TrainSettings, "steps"),
                test_limit=config_input(SweepConfig, "test_limit"),
            )
        with gr.Row():
            sweep_button = gr.Button("Run the sweep", variant="primary")
            sweep_stop = gr.Button("Stop", variant="stop")
        sweep_status = status_line()
        sweep_plot = gr.Plot(label="Accuracy vs the setting")
        sweep_table = fitted_table(
            readable(_sweep_summary([], SweepConfig.varied)), label="Per value (mean ± std over seeds)"
        )
        sweep_method.change(setting_choices, [sweep_method], [sweep_setting], api_name="sweep_settings", **INSTANT)
        heavy_job(
            sweep_button,
            run_sweep_ui,
            inputs_kwargs=sweep_form,
            outputs=[sweep_status, sweep_table, sweep_plot],
            api_name="sweep",
            checks=sweep_inputs,
            kind="sweep",
        )
        sweep_stop.click(stop_handler("sweep", "the sweep"), None, [sweep_status], api_name="sweep_stop", **INSTANT)
        forget_on(new_task, [sweep_status, sweep_table, sweep_plot])
