"""The PET tab: several patterns' models label unlabelled text, and one classifier learns from their soft labels.

The library (`peftlab.pet`) runs PET and iPET; this tab wires its inputs, shows every model's curve as it trains,
the table of each pattern next to the ensemble and the distilled classifier, the soft labels' histogram, and
offers the classifier to classify typed text and to download.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict

import gradio as gr
import pandas as pd

from peftlab.config import counted, duration
from peftlab.pet import (
    PatternScoring,
    PETConfig,
    PETEvent,
    check_pool_sizes,
    default_patterns,
    pattern_prompts,
    patterns_for,
    pet_run,
    read_unlabelled,
)
from peftlab.plots import soft_label_histogram, training_curves
from peftlab.prompts import suggested_prompt
from peftlab.serving import current_caps
from peftlab.standard import pattern_costs, pet_seconds
from peftlab.tuning import TrainSettings
from peftlab.ui.common import (
    CHART_MIN_WIDTH,
    action_row,
    backend_line,
    check_test_texts,
    intro,
    kept_if_fitting,
    kept_if_written,
    load_model,
    model_and_task_inputs,
    on_task_change,
    resolve_task,
    runs_backend,
    split_templates,
    task_changed,
    task_from_form,
    told_on_upload,
    upload_limit_note,
    verbalizer_box,
)
from peftlab.ui.display import fitted_table, percent, scored_on, time_left, took, warning_notes
from peftlab.ui.estimates import measured_costs, unconfirmed
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
from peftlab.ui.soft_prompts_tab import keep_trained, method_choices, trained_method_panel
from peftlab.uploads import DATA_SUFFIXES, read_table

SUMMARY = """**Pattern-Exploiting Training** ([Schick & Schütze 2021](https://aclanthology.org/2021.eacl-main.20/)):
(1) one model per pattern learns from the K labelled examples per class; (2) their ensemble, each pattern
weighted by its accuracy on those examples before training, gives the unlabelled texts soft labels
q = softmax(s / T); (3) one classifier, a head on the text inside the first pattern's words (no verbalizer),
learns those soft labels."""
DETAILS = """**iPET** repeats step 1 in generations, each pattern's model also learning from texts the others labelled
(d times more each generation), and distils the last generation. The unlabelled texts come from the task's
training pool, their labels hidden (they are only used to say how often the soft labels were right), or from
a file of your own: a CSV / JSONL file with the task's text column(s)."""

MAIN_SETTINGS = ("shots", "seeds", "unlabelled", "ipet_generations", "test_limit")
MORE_SETTINGS = (
    "method",
    "temperature",
    "weighting",
    "distil_steps",
    "distil_lora",
    "growth",
    "ipet_share",
    "lm_loss_weight",
)


def _table(results, patterns: int, running: tuple[int, dict[str, float]] | None = None) -> pd.DataFrame:
    """One line per seed (each of the `patterns` patterns, the ensemble, PET, iPET) in percent, and their mean ±
    std; before the first seed ends, the columns alone. `running` (a seed, and the test accuracy of each of its
    pattern models scored so far) adds that seed's line as it goes: no accuracy showed until a whole seed ended."""
    columns = ["seed", *(f"pattern {i}" for i in range(1, patterns + 1)), "ensemble", "PET"]
    rows = []
    for r in results:
        row = {f"pattern {i}": a for i, a in enumerate(r.pattern_accuracies, start=1)}
        row |= {"ensemble": r.ensemble_accuracy, "PET": r.distilled_accuracy}
        row |= {f"iPET ensemble g{g}": a for g, a in enumerate(r.ipet_accuracy, start=1)}  # finished generations
        if r.ipet_distilled_accuracy is not None:
            row["iPET"] = r.ipet_distilled_accuracy
        if r.soft_label_accuracy is not None:  # texts of the training pool, whose labels were hidden
            row["soft labels right"] = r.soft_label_accuracy
        if r.ipet_soft_label_accuracy is not None:
            row["iPET soft labels right"] = r.ipet_soft_label_accuracy
        rows.append(row)
    numbers = pd.DataFrame(rows, columns=columns[1:] if not rows else None)
    # a seed stopped during iPET has no iPET figures ("—", not "nan%"); the mean and std are over the seeds that have
    as_percent = functools.partial(percent, missing="—")
    shown = numbers.map(as_percent)
    if len(numbers) > 1:
        spread = numbers.mean().map(as_percent) + " ± " + numbers.std().map(as_percent)
        shown = pd.concat([shown, spread.to_frame().T])
    seeds = [str(r.seed) for r in results] + (["mean ± std"] if len(numbers) > 1 else [])
    if running and running[1]:
        seed, scored = running
        line = {column: f"{scored[column]:.1%}" if column in scored else "…" for column in shown.columns}
        shown, seeds = pd.concat([shown, pd.DataFrame([line])]), [*seeds, f"{seed} (running)"]
    shown.insert(0, "seed", seeds)
    return shown.reset_index(drop=True)


def classifier_name(result) -> str:
    """The picker's name of the classifier a seed keeps, the last one distilled: "ipet classifier" when iPET ran to its
    end (it was named PET's), else "pet classifier". The last seed's is kept under it (its seed shown beside it, as
    a grid keeps a method's last run): one per seed kept a whole model copy each in the visitor's session."""
    return f"{'ipet' if result.ipet_distilled_accuracy is not None else 'pet'} classifier"


@user_errors
def suggest_patterns(task_name, upload, text_column, label_column, patterns: str = "", words: str = ""):
    """The task's own patterns (--- between them) and verbalizer, or generic ones (`pet.patterns_for`); patterns the
    visitor wrote, and words that name the task's labels, stay (`common.kept_if_written`, `common.kept_if_fitting`)."""
    task = resolve_task(task_name, upload, text_column, label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names, task.identity)
    # an upload gets the generic template and two generic patterns: an empty box was refused at the press
    kept = kept_if_written(patterns, "\n---\n".join(patterns_for(task, template)))
    return kept, kept_if_fitting(words, verbalizer, task)


def pet_inputs(form: dict):
    """The task, pattern prompts, PET config, training settings and uploaded unlabelled texts (or None) of the form;
    a PeftlabError for any the run would refuse (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    task = task_from_form(form)
    prompts = pattern_prompts(task, split_templates(form["patterns"]), [form["verbalizer"]])
    config = config_from_form(PETConfig, form)
    settings = config_from_form(TrainSettings, form)
    caps = current_caps()  # each seed trains a model per pattern and generation: 200 seeds and 300 patterns passed
    caps.check("seeds", len(config.seeds), "The number of seeds")
    caps.check("patterns", len(prompts), "The number of patterns")
    check_test_texts(task, config.test_limit)
    unlabelled = read_unlabelled(form["unlabelled_file"], prompts) if form["unlabelled_file"] else None
    check_pool_sizes(task, config, unlabelled)
    return task, prompts, config, settings, unlabelled


@user_errors
def run_pet(request: gr.Request, progress=gr.Progress(), **form):
    task, prompts, config, settings, unlabelled = pet_inputs(form)
    lm = load_model(form["model"], dtype="fp32")
    costs = measured_costs(lm, task, prompts[0].template.text, form["verbalizer"], progress)
    patterns = pattern_costs(lm, task, prompts, costs)
    expected = pet_seconds(config, settings, task, costs, patterns)
    total = len(config.seeds) * ((1 + config.ipet_generations) * len(prompts) + config.classifiers)  # models trained
    if message := unconfirmed(request, "pet", form, expected, f"{total} models to train"):
        yield message, *[gr.skip()] * 4
        return
    results, events, notes, models, done = [], [], [], 0, 0.0  # models begun; the share of the job done
    scored: dict[str, float] = {}  # the seed in progress: the test accuracy of each pattern's model scored so far
    started = time.perf_counter()

    def said(status: str, running: bool = True) -> str:
        if running:
            left = time_left(started, done, expected)
            status = status.removesuffix(".") + f" (estimated {duration(expected)} in all{left})."
        return status + warning_notes(notes)

    def outputs(status: str, running: bool = True):
        curves = training_curves(pd.DataFrame(events)) if events else None
        soft = soft_label_histogram(results[-1].soft_labels, task.label_names) if results else None
        table = _table(results, len(prompts), (config.seeds[len(results)], scored) if running and scored else None)
        return said(status, running), table, curves, soft, method_choices(request)

    skipped = [gr.skip()] * 4  # the table, the plots and the picker, as they were
    with job(request, "pet") as (session, stop):
        for item in pet_run(lm, task, prompts, config, settings, stop, unlabelled, runs_backend()):
            if isinstance(item, PatternScoring):
                if item.test_accuracy is None:  # minutes on a CPU, where the model's last step stood as if it hung
                    what = f"Seed {item.seed}: scoring {item.model}'s model (generation {item.generation}) on"
                    yield said(f"{what} {item.pool:,} unlabelled and {item.test:,} test texts."), *skipped
                elif item.generation == 0:  # iPET's generations show in the seed's line once it ends
                    scored[item.model] = item.test_accuracy
                    yield outputs(f"Seed {item.seed}: {item.model}'s model scored.")
                continue
            if isinstance(item, PETEvent):
                name = item.model if item.generation == 0 else f"{item.model} (iPET generation {item.generation})"
                events.append({**asdict(item), "method": name})
                steps = item.steps
                models += item.step == 1
                done = (models - 1 + item.step / steps) / total
                # each step said: a line per model stood unchanged for minutes on a busy CPU, as if it hung
                training = f"Seed {item.seed}: training {item.model} (generation {item.generation}), step {item.step}"
                progress(done, desc=f"seed {item.seed}: {name}, step {item.step}/{steps}")
                if item.step % 5 and item.step != 1:  # the plots as each model starts and every few steps: they
                    yield said(f"{training} of {steps}."), *skipped  # cost more than a CPU step
                else:
                    yield outputs(f"{training} of {steps}.")
                continue
            results.append(item)
            scored.clear()
            notes += item.warnings(task.label_names, config.distil_steps)
            keep_results(session, item.rows)
            keep_trained(session, classifier_name(item), item.classifier, f"seed {item.seed}")
            yield outputs(f"{len(results)} of {len(config.seeds)} seeds finished.")
        partial = results[-1] if results and results[-1].ipet_stopped else None
        kept = (
            f"Seed {partial.seed} was in iPET: its PET numbers and classifier are kept, without iPET's"
            if partial
            else "The seed in progress was dropped"
        )
        note = f" {stopped_note(stop)} {kept}; finished seeds are kept." if stop.is_set() else ""
        # what the percentages are of: "100.0%" read alone, with no word of 10 test texts
        rows = [row for result in results for row in result.rows]
        pool = f" Each seed's soft labels are on {counted(config.unlabelled, 'unlabelled text')}." if results else ""
    yield outputs(
        f"{len(results)} of {len(config.seeds)} seeds finished{took(started, expected)}.{scored_on(rows, task)}"
        f"{pool}{note}",
        running=False,
    )


def build_pet_tab() -> None:
    intro(SUMMARY, DETAILS)
    backend_line()
    source = model_and_task_inputs()
    templates, _ = default_patterns("rt-sentiment")  # the pickers' first task; its verbalizer is verbalizer_box's
    with gr.Row():
        patterns = gr.Textbox(
            "\n---\n".join(templates),
            lines=8,
            label="Patterns",
            info="Templates with one {mask} each, separated by a line holding ---.",
        )
        words = verbalizer_box()
        unlabelled_file = gr.File(
            label="Unlabelled texts (optional)" + upload_limit_note(),
            file_types=list(DATA_SUFFIXES),
            height=120,
        )
    with gr.Row():
        settings = {name: config_input(PETConfig, name) for name in MAIN_SETTINGS}
        steps = config_input(TrainSettings, "steps")
    with gr.Accordion("More settings", open=False):
        more = {}
        for row in (MORE_SETTINGS[:4], MORE_SETTINGS[4:]):  # in one row of 8 the checkbox read "LoRA classi"
            with gr.Row():
                more |= {name: config_input(PETConfig, name) for name in row}
    told_on_upload(unlabelled_file, read_table, "row")  # its columns are checked against the patterns at the press
    form = dict(**source, patterns=patterns, verbalizer=words, unlabelled_file=unlabelled_file)
    form |= dict(**settings, **more, steps=steps)
    with action_row():
        run_button = gr.Button("Run PET", variant="primary")
        stop_button = gr.Button("Stop", variant="stop")
    status = status_line()
    table = fitted_table(_table([], len(templates)), label="Test accuracy per seed")
    with gr.Row():
        curves = gr.Plot(label="Training curves (every pattern's model and the classifier)", min_width=CHART_MIN_WIDTH)
        soft = gr.Plot(label="Soft labels (last seed)", min_width=CHART_MIN_WIDTH)
    gr.Markdown("### Use the distilled classifier")
    classifier, _ = trained_method_panel("classifier", "pet_classify", "pet_download")

    on_task_change(source, suggest_patterns, [patterns, words], read=[patterns, words])
    heavy_job(
        run_button,
        run_pet,
        inputs_kwargs=form,
        outputs=[status, table, curves, soft, classifier],
        api_name="pet",
        checks=pet_inputs,
        kind="pet",
    )
    stop_button.click(stop_handler("pet", "PET"), None, [status], api_name="pet_stop", **INSTANT)
    forget_on(task_changed(source), [status, table, curves, soft])  # the classifier stays: the session keeps it
