"""The Compare tab: every stored result of a task and model on one table and two charts, with paired intervals.

Results come from every tab and command (the results store); they survive a reload. On a public Space each
visitor sees their own. The library does the grouping, the statistics and the report (`peftlab.report`).
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow
from peftlab.config import counted, duration
from peftlab.errors import PeftlabError
from peftlab.plots import accuracy_vs_parameters, accuracy_vs_seconds
from peftlab.report import DISPLAY_COLUMNS, compare, compare_routes, display_table, report_html
from peftlab.serving import current_caps, public_mode
from peftlab.standard import (
    STANDARD_METHODS,
    StandardConfig,
    StandardEvent,
    check_sizes,
    estimate,
    plan,
    run_of,
    run_standard,
    trains,
)
from peftlab.store import LIST_COLUMNS, ResultRow, ResultStore
from peftlab.tuning import TrainSettings
from peftlab.ui.common import (
    CHART_MIN_WIDTH,
    START_TEMPLATE,
    action_row,
    backend_line,
    check_test_texts,
    load_model,
    model_and_task_inputs,
    on_task_change,
    runs_backend,
    suggest,
    task_changed,
    task_from_form,
    upload_limit_note,
    verbalizer_box,
)
from peftlab.ui.display import as_text, fitted_table, readable, time_left, took, warning_notes
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
    status_line,
    stop_handler,
    stopped_note,
    user_errors,
)
from peftlab.ui.sessions import SESSIONS, results_owner

INTRO = """Every result you ran in the other tabs{} lands here, on the test texts it was scored on. Pick a task and
a model: each method is one line (mean ± sample std over seeds, n − 1), with its difference from zero-shot
(calibrated where stored; the line above the table names the baseline) as accuracy points and a 95 % paired
bootstrap interval over the same test texts (and over the seeds, where a method has several); a method whose
interval includes 0 is *not distinguishable* from zero-shot. Results on another set of test texts are listed apart,
never mixed, each with its own baseline. RLHF results (task "rlhf" and the labeler's name) have no accuracy: each
route is a line with its labeler score and KL to the SFT model, and the chart is their score-KL frontier."""
PUBLIC_NOTE = """On this public Space your results are yours alone and last as long as this page: before you
reload or leave, export them (Stored results below), and import the file to get them back."""

# Characters a comparison's cell takes before it wraps: at 32, a method named by its settings ("zero-shot (templates
# "{text} {mask}")") widened its column until the verdict was cut to "not distinguis" on a 1280-pixel screen.
COMPARE_WRAP = 20


def _store(request: gr.Request | None) -> ResultStore:
    return ResultStore(owner=results_owner(request))


def _choices(store: ResultStore) -> tuple[list[str], list[str]]:
    table = store.frame()
    table = table[table["accuracy"].notna() | (table["kind"] == "rlhf")]  # what show_comparison can show
    return sorted(table["task"].unique()), sorted(table["model"].unique())


@user_errors
def refresh_choices(task, model, request: gr.Request):
    """The tasks and models with stored results; a picked one stays picked while it has results."""
    tasks, models = _choices(_store(request))
    return (
        gr.Dropdown(choices=tasks, value=task if task in tasks else (tasks[0] if tasks else None)),
        gr.Dropdown(choices=models, value=model if model in models else (models[0] if models else None)),
    )


def _labelled(table: pd.DataFrame, split) -> pd.DataFrame:
    """`table` (a `report.compare` split's, or its display) with the columns that say which test split it is, what
    was scored and against what baseline."""
    return table.assign(split=split.fingerprint, scored=split.scored, baseline=split.baseline or "none")


@user_errors
def show_comparison(task, model, request: gr.Request):
    store = _store(request)
    if not task or not model:
        if not store.rows():
            raise PeftlabError(
                "Nothing is stored yet: run a method in any tab (or the standard comparison below), then press "
                "Refresh the lists."
            )
        raise PeftlabError("Pick a task and a model: the lists hold those with stored results (Refresh the lists).")
    rows = store.rows(task=task, model=model)
    splits = compare(rows)
    if not splits:
        if evaluations := [row for row in rows if row.kind == "rlhf"]:
            return _rlhf_comparison(task, model, evaluations, request)
        raise PeftlabError("No stored results of that task and model yet: run something in another tab first.")
    main, others = splits[0], splits[1:]
    support = ", ".join(f"{count} {label}" for label, count in main.support.items())
    # the names and notes come from the stored rows, an imported file's too: literal text (`as_text`)
    status = (
        f"**{as_text(main.task)} · {as_text(main.model)}**: {counted(len(rows), 'result')}. Test split "
        # "5 results" over a table of 3 lines: a line pools a method's seeds, and other splits are listed apart
        f"{main.fingerprint} ({counted(len(main.table), 'line')} from {counted(int(main.table['runs'].sum()), 'run')}"
        f"): {as_text(main.scored)}; {as_text(support)}; baseline: {as_text(main.baseline_said)}."
    )
    if others:
        verb = "is" if len(others) == 1 else "are"
        status += f" {counted(len(others), 'other test split')} {verb} listed below, apart."
    status += warning_notes(as_text(note) for note in main.notes)
    apart = pd.concat([_labelled(display_table(s.table), s) for s in others]) if others else pd.DataFrame()
    summary = main.table.rename(columns={"seconds_mean": "seconds"})
    session = SESSIONS.get(request)
    csv_path = session.download(task, model, "compare", suffix="csv")
    # every split, each line saying which and against what baseline (the file held the main table alone)
    pd.concat([_labelled(s.table, s) for s in splits], ignore_index=True).to_csv(csv_path, index=False)
    report_path = session.download(task, model, "report", suffix="html")
    report_path.write_text(report_html(splits, rows), encoding="utf-8")
    return (
        status,
        display_table(main.table),
        accuracy_vs_parameters(summary),
        accuracy_vs_seconds(summary),
        gr.Dataframe(apart, visible=bool(others)),
        str(csv_path),
        str(report_path),
    )


def _rlhf_comparison(task: str, model: str, rows: list[ResultRow], request: gr.Request):
    """The RLHF tab's evaluations: each route's labeler score and KL to the SFT model (they have no accuracy), on
    the held-out prompts most of them answered; the score-KL frontier as the chart, and the report."""
    main, *others = compare_routes(rows)
    status = f"**{as_text(task)} · {as_text(model)}**: {as_text(main.status)}"
    if others:
        status += f" {counted(sum(o.results for o in others), 'result')} on other held-out prompts not shown."
    session = SESSIONS.get(request)
    csv_path = session.download(task, model, "compare", suffix="csv")
    main.table.to_csv(csv_path, index=False)
    report_path = session.download(task, model, "report", suffix="html")
    report_path.write_text(report_html([], rows), encoding="utf-8")
    hidden = gr.Dataframe(pd.DataFrame(), visible=False)
    # one chart: the second (accuracy against time) is hidden while empty (`build_compare_tab`)
    return status, main.display(), main.frontier(), None, hidden, str(csv_path), str(report_path)


def standard_inputs(form: dict):
    """The task, standard-comparison config and training settings of the form; a PeftlabError for any input refused
    before the models load (also checked as the button is pressed, `heavy_job`)."""
    current_caps().check_model(form["model"])
    task = task_from_form(form)
    config = config_from_form(StandardConfig, form)
    settings = config_from_form(TrainSettings, form)
    current_caps().check("seeds", len(config.seeds), "The number of seeds")  # 200 seeds passed as 2,001 runs
    check_test_texts(task, config.test_limit)
    ClozeSetup.build(task, form["template"], form["verbalizer"])
    check_sizes(task, config)
    return task, config, settings


@user_errors
def run_standard_comparison(request: gr.Request, progress=gr.Progress(), **form):
    task, config, settings = standard_inputs(form)
    scoring_lm, training_lm = load_model(form["model"]), load_model(form["model"], dtype="fp32")
    yield "Measuring this machine's speed on one text and one training step...", _table([])
    measured = measured_costs(
        training_lm,
        task,
        form["template"],
        form["verbalizer"],
        progress,
        scoring_lm=scoring_lm,
        training=trains(config),
    )
    costs = estimate(scoring_lm, training_lm, task, form["template"], form["verbalizer"], config, settings, measured)
    # "Estimated 29 min for 31 runs (zero-shot · mean: 12 s; in-context: 48 s; ...)"
    each = "; ".join(f"{name}: {duration(seconds)}" for name, seconds in costs.items())
    expected = f"Estimated {duration(sum(costs.values()))} for {counted(len(plan(config)), 'run')} ({each})"
    if message := unconfirmed(request, "standard", form, sum(costs.values()), counted(len(plan(config)), "run")):
        yield message, gr.skip()
        return
    rows, finished, failed, backend = [], set(), [], runs_backend()  # finished: (method, seed) of each finished run
    # each run's share of the whole, by its method's estimate over the method's runs: the time left follows it
    runs = plan(config)
    shares = [costs[m] / sum(1 for other, _ in runs if other == m) / max(sum(costs.values()), 1e-9) for m, _ in runs]
    clock = time.perf_counter()
    with job(request, "standard") as (session, stop):
        for item in run_standard(
            scoring_lm, training_lm, task, form["template"], form["verbalizer"], config, settings, stop, backend
        ):
            if isinstance(item, StandardEvent):
                started = item
                seed = f", seed {item.seed}" if item.seed is not None else ""
                progress((item.step - 1) / item.runs, desc=f"{item.method}{seed}")
                yield (
                    f"{expected}. Run {item.step}/{item.runs}: {item.method}{seed}"
                    + f"{time_left(clock, sum(shares[: item.step - 1]), sum(costs.values()))}...",
                    _table(rows),
                )
            elif isinstance(item, ResultRow):
                rows.append(item)
                finished.add(run_of(item))
                keep_results(session, [item])
                yield f"{expected}. {len(finished)} of {started.runs} runs finished.", _table(rows)
            elif isinstance(item, GridRow):  # a run that failed on Ray; the others go on
                failed.append(f"{item.values['method']} seed {item.values['seed']}: {item.values['status']}")
        note = f" {stopped_note(stop)} Finished runs are kept." if stop.is_set() else ""
    note += "".join(f" Not finished: {line}." for line in failed)
    yield (
        (
            f"{counted(len(finished), 'run')} finished{took(clock, sum(costs.values()))}.{note} Press Compare above "
            f"(task {task.name}, model {form['model']}) to see them with every earlier result."
        ),
        _table(rows),
    )


def _table(rows: list[ResultRow]) -> pd.DataFrame:
    splits = compare(rows)
    return display_table(splits[0].table) if splits else pd.DataFrame(columns=list(DISPLAY_COLUMNS))


@user_errors
def list_results(request: gr.Request):
    return readable(_store(request).listing())  # accuracy in percent, macro-F1 rounded


@user_errors
def delete_results(ids_text, request: gr.Request):
    ids = [part for part in str(ids_text or "").replace(",", " ").split() if part]
    if not ids:
        raise PeftlabError("Give the ids of the results to delete (their first 4 characters or more are enough).")
    deleted = _store(request).delete(ids)
    return f"{counted(deleted, 'result')} deleted.", list_results(request)


@user_errors
def export_results(request: gr.Request):
    path = SESSIONS.get(request).download("results", suffix="jsonl")
    _store(request).export(path)
    return str(path)


@user_errors
def import_results(path, request: gr.Request):
    if not path:
        raise PeftlabError("Upload a rows.jsonl or rows.csv that an export gave you.")
    return _store(request).import_(path).sentence(), list_results(request)


def shown_again(task, model, status, request: gr.Request):
    """The comparison on show (its status line not empty) drawn again from the store as it is now, after an import
    or a delete: it went on counting the deleted result, and its downloads held it. Its outputs empty with a
    sentence when none of its results is left; nothing changes when none was shown."""
    return drawn(task, model, request) if status else [gr.skip()] * 7


def drawn(task, model, request: gr.Request):
    """The comparison of `task` and `model` as the store holds it now, or a sentence of why there is none; drawn too
    as the tab opens (`refresh_choices` picks them): the tab stood blank until Compare was pressed, with no word when
    nothing was stored."""
    try:
        return show_comparison(task, model, request)
    except gr.Error as exc:  # the last of its results deleted, or none of that task with that model
        return exc.message, None, None, None, gr.Dataframe(pd.DataFrame(), visible=False), None, None


def build_compare_tab(tab: gr.Tab) -> None:
    """The tab's inputs and events; its task and model lists refresh whenever `tab` is opened."""
    # the command line's results land in the store of the machine it runs on: a public Space's visitors have none
    intro = INTRO.format("" if public_mode() else " (and with the command line on this machine)")
    gr.Markdown(intro + ("\n\n" + PUBLIC_NOTE if public_mode() else ""))
    with action_row():
        task = gr.Dropdown([], label="Task", allow_custom_value=True)
        model = gr.Dropdown([], label="Model", allow_custom_value=True)
        refresh = gr.Button("Refresh the lists")
        show = gr.Button("Compare", variant="primary")
    status = status_line()
    table = fitted_table(
        label="One line per method (mean ± sample std over seeds)",
        headers=list(DISPLAY_COLUMNS),
        wrap_at=COMPARE_WRAP,
        max_height=1200,  # the standard comparison's 11 lines: at gradio's 500 px the last ones hid inside the box
    )
    with gr.Row():
        # no labels: each figure has its title, and RLHF results put their score-KL frontier in the first
        by_parameters = gr.Plot(label="Accuracy vs trainable parameters", show_label=False, min_width=CHART_MIN_WIDTH)
        by_seconds = gr.Plot(label="Accuracy vs time", show_label=False, min_width=CHART_MIN_WIDTH)
    apart = fitted_table(
        label="Results on other test splits (not comparable with the table above)", visible=False, wrap_at=COMPARE_WRAP
    )
    with gr.Row():
        # each on its own line on a phone: side by side, their file names were cut to ".c" and ".h"
        table_file = gr.File(label="The table (CSV)", min_width=CHART_MIN_WIDTH)
        report_file = gr.File(
            label="One-page report (HTML: table, charts, every row's settings)", min_width=CHART_MIN_WIDTH
        )
    with gr.Accordion("Run the standard comparison: every method at K per class over the seeds", open=False):
        gr.Markdown(
            "Calibrated zero-shot, in-context demonstrations, AutoPrompt and every trained method on the "
            "same K examples per class and test texts. It first measures this machine and says how long "
            "it will take; Stop keeps the finished runs. Each result is stored as it finishes."
        )
        backend_line()
        source = model_and_task_inputs()
        with gr.Row():
            template = gr.Textbox(START_TEMPLATE, lines=2, label="Template")
            verbalizer = verbalizer_box()
        with gr.Row():
            methods = config_input(
                StandardConfig,
                "methods",
                gr.CheckboxGroup,
                choices=list(STANDARD_METHODS),
                info="each run once per seed, all scored on the same test texts",
            )
            settings = {
                name: config_input(StandardConfig, name)
                for name in ("shots", "seeds", "test_limit", "demonstrations_per_class", "autoprompt_iterations")
            }
            steps = config_input(TrainSettings, "steps")
        with gr.Row():
            run_button = gr.Button("Run the standard comparison", variant="primary")
            stop_button = gr.Button("Stop", variant="stop")
        run_status = status_line()
        run_table = fitted_table(label="This run so far", headers=list(DISPLAY_COLUMNS), wrap_at=COMPARE_WRAP)
    form = dict(**source, template=template, verbalizer=verbalizer, methods=methods, **settings, steps=steps)
    with gr.Accordion("Stored results: list, export, import, delete", open=False) as stored:
        listing = fitted_table(label="Stored results", headers=LIST_COLUMNS)
        with gr.Row():
            list_button = gr.Button("List")
            export_button = gr.Button("Export all (JSON Lines)")
            export_file = gr.File(label="Export", min_width=CHART_MIN_WIDTH)
            import_file = gr.File(
                label="Import rows.jsonl or rows.csv" + upload_limit_note(),
                file_types=[".jsonl", ".csv"],
                min_width=CHART_MIN_WIDTH,
            )
        with gr.Row():
            ids = gr.Textbox(label="Ids to delete (space-separated; their first 4 characters or more are enough)")
            delete_button = gr.Button("Delete", variant="stop")
        manage_status = status_line()

    refresh.click(refresh_choices, [task, model], [task, model], api_name="compare_choices", **INSTANT)
    opened = tab.select(refresh_choices, [task, model], [task, model], **INSTANT)
    on_task_change(source, suggest, [template, verbalizer], read=[template, verbalizer])
    heavy_job(
        run_button,
        run_standard_comparison,
        inputs_kwargs=form,
        outputs=[run_status, run_table],
        api_name="standard_comparison",
        checks=standard_inputs,
        kind="standard",
    )
    stop_button.click(
        stop_handler("standard", "the standard comparison"),
        None,
        [run_status],
        api_name="standard_comparison_stop",
        **INSTANT,
    )
    # a comparison of another task stood under a newly picked one (its rows stay in the store, for the table below)
    forget_on(task_changed(source), [run_status, run_table])
    shown = [status, table, by_parameters, by_seconds, apart, table_file, report_file]
    # an RLHF comparison draws one chart, its score-KL frontier: the second stood beside it as an empty frame
    by_seconds.change(
        lambda figure: gr.Plot(visible=figure is not None),
        by_seconds,
        by_seconds,
        api_visibility="private",
        show_progress="hidden",
        **INSTANT,
    )
    answer(show.click(show_comparison, [task, model], shown, api_name="compare_show", **light()), shown, show, (apart,))
    opened.success(drawn, [task, model], shown, api_visibility="private", **light())
    list_button.click(list_results, None, [listing], api_name="results_list", **INSTANT)
    # opened (the accordion or the tab): as the store is now, with what other tabs stored since
    stored.expand(list_results, None, [listing], api_visibility="private", **INSTANT)
    tab.select(list_results, None, [listing], api_visibility="private", **INSTANT)
    answer(
        export_button.click(export_results, None, [export_file], api_name="results_export", **light()),
        [export_file],
        export_button,
    )
    # the listing stays: it shows the store, which a failed import or delete leaves as it was
    imported = import_file.upload(
        import_results, [import_file], [manage_status, listing], api_name="results_import", **light()
    )
    deleted = delete_button.click(delete_results, [ids], [manage_status, listing], api_name="results_delete", **INSTANT)
    for changed, pressed in ((imported, import_file), (deleted, delete_button)):
        answer(changed, [manage_status], pressed)
        # an imported task or model joins the lists (it showed only after "Refresh the lists"), then the comparison
        # on show is drawn again
        changed.success(refresh_choices, [task, model], [task, model], api_visibility="private", **INSTANT).then(
            shown_again, [task, model, status], shown, api_visibility="private", **light()
        )
