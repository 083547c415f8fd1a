"""The launched Gradio app, driven over its API with gradio_client: the Cloze tab's endpoints and its errors."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from peftlab.rlhf.reward import INSTRUCTGPT_AGREEMENT
from peftlab.ui.cloze_tab import _quoted
from peftlab.ui.rlhf_stages import DPO_PANELS, MAX_RANKED
from tests.app_server import CALL_TIMEOUT_S, FIRST_CALL_TIMEOUT_S, running_app

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
TASK = "rt-sentiment"
TEMPLATE = "Review: {text}\nSentiment:{mask}"
VERBALIZER = "negative: negative\npositive: positive"
SOURCE = dict(model=MODEL, task=TASK, upload=None, text_column="text", label_column="label")  # every form's start
POSITIVE_TEXT = "A wonderful, moving and brilliantly acted film; I loved every minute of it."


def settings(**changes) -> dict:
    """Keyword arguments for /classify and /evaluate: the suggested rt-sentiment prompt, zero-shot."""
    values = dict(
        **SOURCE,
        templates=TEMPLATE,
        verbalizer=VERBALIZER,
        calibration="none",
        shots=0,
        seed=13,
    )
    values.update(changes)
    return values


def call(client: Client, api_name: str, *args, timeout: float = CALL_TIMEOUT_S):
    return client.submit(*args, api_name=api_name).result(timeout=timeout)


def classify(client: Client, text: str = POSITIVE_TEXT, timeout: float = CALL_TIMEOUT_S, **changes):
    return call(client, "/classify", *settings(**changes).values(), text, timeout=timeout)


def plot_bars(plot) -> dict:
    """The single bar trace of the label-probability figure a Plot output sends to the client."""
    assert isinstance(plot, dict) and plot.get("type") == "plotly", plot
    figure = json.loads(plot["plot"])
    (bars,) = figure["data"]
    assert bars["type"] == "bar"
    return bars


def plotly_array(value) -> np.ndarray:
    """A Plotly JSON array: a plain list, or Plotly 6+'s typed form {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(array))).split(",")]
        return array.reshape(shape)
    return np.asarray(value)


@pytest.fixture(scope="module")
def app_url():
    with running_app() as url:
        yield url


@pytest.fixture(autouse=True)
def start_without_confirmation(monkeypatch):
    """Long jobs here start on the first press (the app runs in this process); one test asks for the second."""
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))


@pytest.fixture(scope="module")
def client(app_url, tmp_path_factory):
    client = Client(app_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    # Load the model once with a generous timeout: the first load may convert the GGUF file.
    classify(client, timeout=FIRST_CALL_TIMEOUT_S)
    return client


def assert_still_answers(client: Client) -> None:
    bars = plot_bars(classify(client)[1])
    assert bars["y"] == ["negative", "positive"]


def test_evaluate_an_upload_without_split_column_scores_every_row(client):
    example = Path(__file__).resolve().parent.parent / "examples" / "custom_task.csv"
    form = settings(
        upload=handle_file(str(example)),
        templates="{text} This is a{mask}.",
        verbalizer="question: question\nstatement: statement",
    )
    summary, _confusion, _errors, csv_path = call(client, "/evaluate", *form.values(), None)
    assert "all 40 rows (the file has no split column and nothing was trained)" in summary
    assert len(pd.read_csv(csv_path)) == 40


def test_api_lists_the_cloze_endpoints(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/suggest_prompt", "/classify", "/evaluate", "/autoprompt", "/send_to_cloze"} <= set(endpoints)


def test_suggest_prompt_returns_the_rt_sentiment_template(client):
    # empty boxes (the template and verbalizer as the page has them come last)
    template, verbalizer = call(client, "/suggest_prompt", TASK, None, "text", "label", "", "")
    assert template == TEMPLATE
    assert verbalizer.splitlines() == ["negative: negative", "positive: positive"]


def test_a_bad_upload_leaves_the_prompt_boxes_alone(client, tmp_path):
    """Picking a file without the label column warns (a toast), and the template and verbalizer boxes keep their
    text with no error badge; the run buttons then refuse it with the error."""
    bad = tmp_path / "reviews.csv"
    bad.write_text("text,stars\nA fine film.,5\nA dull film.,1\n")
    # gr.skip(): updates that change nothing (no error raised, so no badge on the boxes)
    assert call(client, "/suggest_prompt", TASK, handle_file(str(bad)), "text", "label") == (
        {"__type__": "update"},
        {"__type__": "update"},
    )
    with pytest.raises(AppError, match=r"^The file 'reviews.csv' has no label column 'label' \(columns found"):
        call(client, "/evaluate", *settings(upload=handle_file(str(bad))).values(), 20)


def test_classify_an_obviously_positive_text(client):
    sentence, plot, top_tokens = classify(client)
    bars = plot_bars(plot)
    assert bars["y"] == ["negative", "positive"]
    probs = dict(zip(bars["y"], plotly_array(bars["x"]).tolist()))
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-3), probs
    assert probs["positive"] > probs["negative"], probs
    for label, text in zip(bars["y"], bars["text"]):
        assert re.fullmatch(rf"{label} \d+(\.\d)?%", text), bars["text"]
    # The top-tokens table: the model's own guesses at the mask, most likely first.
    assert top_tokens["headers"] == ["token at the mask", "probability"]
    assert len(top_tokens["data"]) == 10
    token_probs = [float(row[1].rstrip("%")) for row in top_tokens["data"]]  # in percent, as the chart beside it
    assert token_probs == sorted(token_probs, reverse=True) and all(row[1].endswith("%") for row in top_tokens["data"])
    assert sentence == f"**positive** with probability {probs['positive']:.0%}."  # the answer in a sentence


def test_the_top_tokens_are_quoted_once_with_a_partial_characters_note_outside():
    """repr() doubled token_text's escapes: an emoji's first bytes showed as '\\\\xf0\\\\x9f (part of a character)'."""
    assert _quoted(" great") == "' great'"
    assert _quoted("\\n") == "'\\n'"
    assert _quoted("\\xf0\\x9f (part of a character)") == "'\\xf0\\x9f' (part of a character)"


def test_start_tab_steps_give_results_in_one_click_each(client, monkeypatch):
    """Step 1 classifies the review on the defaults; step 2 scores the test sample with every calibration, each
    accuracy the library's own for the same prompt and texts."""
    from peftlab.cloze import CALIBRATIONS, evaluate
    from peftlab.models import DEFAULT_MODEL, load_lm
    from peftlab.tasks import load_task
    from peftlab.ui import start_tab

    verdict, plot = call(client, "/start_classify", start_tab.REVIEW)
    assert re.fullmatch(r"\*\*positive\*\* with probability \d+%\.", verdict), verdict
    assert plot_bars(plot)["y"] == ["negative", "positive"]

    monkeypatch.setattr(start_tab, "STEP_TEXTS", 24)  # the app runs in this process
    summary, table = call(client, "/start_score")
    assert [row[0] for row in table["data"]] == list(CALIBRATIONS)
    lm, task = load_lm(DEFAULT_MODEL), load_task(TASK)
    for calibration, accuracy, f1 in table["data"]:
        expected = evaluate(lm, task, [TEMPLATE], start_tab.START_VERBALIZER, calibration, limit=24)
        assert (accuracy, f1) == (f"{expected.accuracy:.1%}", f"{expected.macro_f1:.3f}"), calibration
    assert re.match(r"On 24 test reviews: \*\*\d+\.\d%\*\* raw(, \*\*|; none of the calibrations)", summary), summary
    assert re.search(
        r"The reviews were scored once, in \d+ s( when they were first scored on this server \(kept since\))?; each "
        r"calibration re-weights those scores",
        summary,
    ), summary


@pytest.mark.parametrize(
    "accuracies, sentence",
    [
        ((0.76, 0.81, 0.79), "**76.0%** raw, **81.0%** with calibration *contextual*, the best of them."),
        ((0.81, 0.76, 0.81), "**81.0%** raw; none of the calibrations beats it (the best, *mean*: 81.0%)."),  # a tie
        ((0.81, 0.76, 0.70), "**81.0%** raw; none of the calibrations beats it (the best, *contextual*: 76.0%)."),
    ],
)
def test_the_start_tab_compares_raw_scores_with_the_best_calibration_alone(accuracies, sentence, monkeypatch):
    """ "81.0 % raw, 81.0 % with calibration none" compared the raw row with itself."""
    from peftlab.ui import start_tab

    monkeypatch.setattr(start_tab, "STEP_TEXTS", 100)
    rows = [{"calibration": name, "accuracy": a} for name, a in zip(["none", "contextual", "mean"], accuracies)]
    assert start_tab.calibration_summary(rows) == f"On 100 test reviews: {sentence}"


def test_evaluate_on_20_test_texts(client):
    summary, confusion, errors, csv_path = call(client, "/evaluate", *settings().values(), 20)
    match = re.match(r"\*\*Accuracy (\d+(?:\.\d)?)%\*\*", summary)
    assert match, summary
    accuracy = float(match.group(1))
    assert 0 <= accuracy <= 100
    assert "20 of 1000 test texts" in summary  # a stratified subset of the test split
    predictions = pd.read_csv(csv_path)
    assert len(predictions) == 20
    assert {"text", "gold", "predicted", "confidence", "correct", "p(negative)", "p(positive)"} <= set(predictions)
    assert predictions["correct"].mean() * 100 == pytest.approx(accuracy, abs=0.05)
    heatmap = json.loads(confusion["plot"])["data"][0]
    assert heatmap["type"] == "heatmap"
    assert heatmap["x"] == heatmap["y"] == ["negative", "positive"]
    counts = plotly_array(heatmap["z"])
    assert counts.shape == (2, 2) and counts.sum() == 20
    assert np.trace(counts) == predictions["correct"].sum()
    assert len(errors["data"]) == min(10, int((~predictions["correct"]).sum()))
    # the short columns first, confidence in percent; the text last, where it may wrap
    assert errors["headers"] == ["gold", "predicted", "confidence", "text"]
    wrong = predictions[~predictions["correct"]].sort_values("confidence", ascending=False)
    assert [row[:3] for row in errors["data"]] == [
        [g, p, f"{c:.1%}"] for g, p, c in zip(wrong["gold"], wrong["predicted"], wrong["confidence"])
    ][:10]


@pytest.fixture
def single_class_csv(tmp_path):
    path = tmp_path / "one_class.csv"
    pd.DataFrame({"text": ["great film", "loved it", "a joy to watch"], "label": ["positive"] * 3}).to_csv(
        path,
        index=False,
    )
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("template without mask", r"The template must contain exactly one \{mask\}, but it has no \{mask\}\."),
        (
            "verbalizer with unknown label",
            r"The verbalizer names label\(s\) 'neutral' that the task lacks; its labels are 'negative', 'positive'\.",
        ),
        (
            "upload with a single class",
            r"The data set '[^']*one_class\.csv' has a single class \('positive'\); "
            r"a classification task needs at least two different labels\.",
        ),
        (
            "label word with a tokenizer marker",
            r"The label word 'Ġpositive' carries a tokenizer's own marker \(Ġ, ▁ or ##\); write the plain word "
            r"'positive': the space before it is added where the template needs one\.",
        ),
        (
            "upload in latin-1",
            r"The file 'latin\.csv' could not be read as UTF-8 text \(line 2 holds the byte 0xe9\); save it as UTF-8 "
            r"\(in Excel: 'CSV UTF-8'\), so that no character is read as another\.",
        ),
    ],
    ids=["template-without-mask", "verbalizer-unknown-label", "upload-single-class", "marker", "latin-1"],
)
def test_bad_input_is_one_clear_sentence_and_the_app_keeps_serving(client, single_class_csv, tmp_path, case, message):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé crème,positive\nthé,negative\n".encode("latin-1"))
    changes = {
        "template without mask": dict(templates="Review: {text}\nSentiment:"),
        "verbalizer with unknown label": dict(verbalizer=VERBALIZER + "\nneutral: neutral"),
        "upload with a single class": dict(upload=handle_file(str(single_class_csv))),
        "label word with a tokenizer marker": dict(verbalizer="negative: negative\npositive: Ġpositive"),
        "upload in latin-1": dict(upload=handle_file(str(latin))),
    }[case]
    with pytest.raises(AppError) as raised:
        classify(client, **changes)
    assert re.fullmatch(message, str(raised.value)), str(raised.value)
    assert_still_answers(client)


AUTOPROMPT_FORM = dict(  # /autoprompt's inputs in the tab's order: a 2-iteration search
    **SOURCE,
    template="{text} [T] [T] {mask}",
    verbalizer=VERBALIZER,
    search_words=False,
    iterations=2,
    candidates=4,
    batch_size=8,
    train_size=16,
    positions="round-robin",
    dev_check=True,
    seed=13,
    test_limit=20,
)


def autoprompt_args(**changes) -> list:
    """/autoprompt's inputs as a list, AUTOPROMPT_FORM with `changes`."""
    return list((AUTOPROMPT_FORM | changes).values())


def test_autoprompt_streams_iterations_and_sends_its_template_to_cloze(client):
    job = client.submit(*autoprompt_args(), api_name="/autoprompt")
    final = job.result(timeout=FIRST_CALL_TIMEOUT_S)
    statuses = [update[0] for update in job.outputs()]
    assert any(s.startswith("Iteration 2/2") for s in statuses), statuses  # streamed while it ran
    # the test scoring after the search is said, not left under the last iteration's line
    assert "Scoring the best trigger and the template without it on 20 test texts..." in statuses, statuses
    summary, history, _curve, template, verbalizer = final
    assert re.match(
        r"\*\*Test accuracy \d+(\.\d)?%\*\* with the trigger vs \d+(\.\d)?% without \(20 test texts\)", summary
    )
    assert [row[0] for row in history["data"]] == [0, 1, 2]
    # a search whose every swap was refused says so (its "found" template was the one it started from)
    accepted = [row[history["headers"].index("accepted")] for row in history["data"]]
    assert accepted[0] == "" and set(accepted[1:]) <= {"yes", "no"}  # none tried at the start; "true"/"false" read raw
    assert ("No swap was accepted in 2 iterations" in summary) == ("yes" not in accepted), (summary, accepted)
    assert "[T]" not in template and template.startswith("{text} ") and template.endswith(" {mask}")
    sent = call(client, "/send_to_cloze", MODEL, TASK, template, verbalizer)
    assert sent[2] == template and sent[3] == VERBALIZER


SECOND_PRESS = r"Press the button again to start, or make the job smaller\."
# an estimate as `display.duration` says it: a few seconds here, minutes on a busy machine
DURATION = r"\d+(?:\.\d)? (?:s|min|h)"


def test_a_long_search_stops_after_its_first_iteration_to_show_its_estimate(client, monkeypatch):
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", 1e-3)  # long on any machine (the app runs in-process)
    monkeypatch.setattr("peftlab.ui.estimates._PACES", {})  # nothing measured yet
    args = autoprompt_args(iterations=3)
    status, *_ = call(client, "/autoprompt", *args)
    assert re.fullmatch(
        rf"\*\*3 iterations and 20 test texts: about {DURATION} on this machine\*\* \(from its first steps just "
        rf"now\)\. {SECOND_PRESS}",
        status,
    ), status
    job = client.submit(*args, api_name="/autoprompt")  # the same form again: it runs to the end, with a time left
    summary, history, *_ = job.result(timeout=CALL_TIMEOUT_S)
    assert summary.startswith("**Test accuracy") and [row[0] for row in history["data"]] == [0, 1, 2, 3]
    statuses = [update[0] for update in job.outputs()]
    assert any(re.fullmatch(rf"Iteration 1/3 · best dev accuracy .*%, about {DURATION} left", s) for s in statuses), (
        statuses
    )


def test_autoprompt_bad_input_is_one_sentence(client):
    with pytest.raises(AppError, match=r"needs at least one trigger slot \[T\]"):
        call(client, "/autoprompt", *autoprompt_args(template="{text} {mask}"))
    with pytest.raises(AppError, match=r"^Candidates k must be at least 1, not 0\.$"):  # the UI field refuses it
        call(client, "/autoprompt", *autoprompt_args(candidates=0))


def compare_form(**changes) -> dict:
    """/compare's inputs by name, in the tab's order: one prompt-tuning run of 3 steps, K 4, 20 test texts."""
    values = dict(
        **SOURCE,
        templates=TEMPLATE,
        verbalizer=VERBALIZER,
        methods=["prompt-tuning"],
        shots="4",
        seeds="13",
        steps=3,
        select_by="accuracy",
        rates="prompt-tuning=0.03",
        test_limit=20,
    )
    values.update(changes)
    return values


def compare_args(**changes) -> list:
    return list(compare_form(**changes).values())


def test_soft_prompts_compare_streams_rows_and_classifies_with_the_trained_method(client, tmp_path):
    job = client.submit(*compare_args(), api_name="/compare")
    status, results, summary, _curves, _scatter, csv_path, run_path, picker = job.result(timeout=FIRST_CALL_TIMEOUT_S)
    assert status.startswith("1/1 runs finished")  # gr.State stays on the server
    assert "Each scored on 20 of 1000 test texts." in status
    methods = [row[0] for row in results["data"]]
    assert methods == ["zero-shot", "prompt-tuning"]
    assert len(pd.read_csv(csv_path)) == 2
    run = json.loads(open(run_path, encoding="utf-8").read())
    assert [r["method"] for r in run["results"]] == methods and len(run["curves"]) == 3
    assert run["train_settings"]["select_by"] == "accuracy"  # the tab's choice reached the trainer
    assert picker["value"] == "prompt-tuning"  # the trained method is offered for classifying and download
    bars = plot_bars(call(client, "/classify_trained", "prompt-tuning", POSITIVE_TEXT))
    assert list(bars["y"]) == ["negative", "positive"]
    trained_probs = plotly_array(bars["x"])
    assert math.isclose(sum(trained_probs), 1.0, abs_tol=1e-3)

    # Download the trained method, load the zip back, and classify with it: the same probabilities.
    zip_path = call(client, "/download_trained", "prompt-tuning")
    # the run's K and seed in the name: two runs of one method on one day got the same name
    assert re.search(r"/peftlab-smollm2-135m-prompt-tuning-K-4-seed-13-\d{4}-\d\d-\d\d-\d{6}\.zip$", zip_path), zip_path
    picker, message = call(client, "/load_trained", handle_file(zip_path))
    assert picker["value"] == "prompt-tuning (loaded)"
    assert message.startswith("Loaded prompt-tuning trained on smollm2-135m")
    loaded_bars = plot_bars(call(client, "/classify_trained", "prompt-tuning (loaded)", POSITIVE_TEXT))
    np.testing.assert_allclose(plotly_array(loaded_bars["x"]), trained_probs, atol=1e-6)
    # a second zip of the same method replaced the first in the picker; the same zip again keeps its name
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(zip_path) as saved, zipfile.ZipFile(other, "w") as copy:
        for name in saved.namelist():
            copy.writestr(name, saved.read(name) + (b"\nA note of mine." if name == "README.md" else b""))
    picker, message = call(client, "/load_trained", handle_file(str(other)))
    assert picker["value"] == "prompt-tuning (loaded 2)" and message.endswith(" as 'prompt-tuning (loaded 2)'.")
    shown = dict((value, label) for label, value in picker["choices"])
    assert shown["prompt-tuning (loaded)"] == "prompt-tuning (loaded) (K 4, seed 13)"  # the zip's run, as a grid's
    picker, _ = call(client, "/load_trained", handle_file(zip_path))
    assert picker["value"] == "prompt-tuning (loaded)" and len(picker["choices"]) == 3


def test_a_long_grid_shows_its_estimate_first_and_starts_on_the_second_press(client, monkeypatch):
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", 1.0)  # long on any machine (the app runs in-process)
    args = compare_args(steps=20_000, shots="4,8")
    status, *_ = call(client, "/compare", *args)
    assert re.fullmatch(
        r"\*\*2 training runs \(methods x K x seeds = 1 x 2 x 1\): about [\d.]+ (min|h|days|years) on this "
        rf"machine\*\* \(from a training step and a text measured just now\)\. {SECOND_PRESS}",
        status,
    ), status
    job = client.submit(*args, api_name="/compare")  # the same form again: it starts, with a time left
    wait_for(lambda: any("runs finished" in out[0] for out in job.outputs()), FIRST_CALL_TIMEOUT_S, "the grid to start")
    call(client, "/compare_stop")
    status, *_ = job.result(timeout=CALL_TIMEOUT_S)
    assert "Stopped because you pressed Stop" in status
    assert re.search(r"finished in [\d.]+ (s|min) \(estimated [\d.]+ (min|h|days|years)\)", status), status
    status, *_ = call(client, "/compare", *compare_args(steps=20_000))  # one run is one ("1 training runs")
    assert status.startswith("**1 training run (methods x K x seeds = 1 x 1 x 1): about"), status


def test_a_method_the_model_cannot_train_is_refused_at_the_first_press_before_any_estimate(client, monkeypatch):
    """BitFit on SmolLM2 (no bias terms) was refused after the estimate's measurement and a second press."""
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", 1.0)  # any grid would ask for a second press

    def measured(*_args, **_kwargs):
        raise AssertionError("the estimate was measured before the method was checked")

    monkeypatch.setattr("peftlab.ui.soft_prompts_tab.measured_costs", measured)
    with pytest.raises(AppError, match="BitFit trains only bias terms, and smollm2-135m has none"):
        call(client, "/compare", *compare_args(methods=["lora", "bitfit"], rates=""))
    with pytest.raises(AppError, match="BitFit trains only bias terms"):
        call(client, "/sweep", *compare_args()[:7], "bitfit", "learning_rate", "0.001,0.01", "4", "13", 2, 20)


def test_soft_prompts_sweep_trains_each_value(client):
    args = compare_args()[:7] + ["prompt-tuning", "num_virtual_tokens", "1,4", "4", "13", 5, 20]
    job = client.submit(*args, api_name="/sweep")
    status, table, plot = job.result(timeout=FIRST_CALL_TIMEOUT_S)
    # the time left is said again every 5 steps of a run, not only as a run ends ("about 72 s left" stood 170 s)
    statuses = [update[0] for update in job.outputs()]
    assert any(line.startswith("0/2 runs finished, about ") for line in statuses), statuses  # at step 5 of run 1
    assert re.fullmatch(  # took, then the estimate, then what each run scored
        r"2/2 runs finished in [\d.]+ (s|min) \(estimated \d+ (s|min)\)\. Each scored on 20 of 1000 test texts\.",
        status,
    ), status
    assert [row[0] for row in table["data"]] == [1, 4]  # whole numbers, as the setting is (they read "1.0")
    figure = json.loads(plot["plot"])
    assert figure["layout"]["xaxis"]["title"]["text"] == "num_virtual_tokens"
    with pytest.raises(AppError, match=r"prompt-tuning has no numeric setting 'r' to sweep"):
        call(client, "/sweep", *args[:8], "r", *args[9:])
    with pytest.raises(AppError, match=r"A sweep uses one K"):
        call(client, "/sweep", *args[:10], "4,8", *args[11:])


def test_loading_a_file_that_is_not_a_saved_method_is_one_sentence(client, tmp_path):
    bogus = tmp_path / "bogus.zip"
    bogus.write_text("not a zip")
    with pytest.raises(AppError, match=r"bogus.zip is not a zip file"):
        call(client, "/load_trained", handle_file(str(bogus)))
    assert_still_answers(client)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(methods=[]), r"Choose at least one method"),
        (dict(shots="5000"), r"K=5000 needs 10000 examples"),
        (dict(rates="prompt-tuning=-1"), r"learning rate of prompt-tuning must be above 0"),
        (dict(seeds="a,b"), r"Seeds must be comma-separated whole numbers"),
    ],
)
def test_soft_prompts_bad_input_is_one_sentence(client, changes, message):
    with pytest.raises(AppError, match=message):
        call(client, "/compare", *compare_args(**changes))


# ------------------------------------------------------------------ the PET tab


PET_FORM = dict(  # /pet's inputs in the tab's order: two rt-sentiment patterns, a seed, 2 shots, 8 unlabelled texts
    **SOURCE,
    patterns="Review: {text}\nSentiment:{mask}\n---\n{text} All in all, it was{mask}.",
    verbalizer=VERBALIZER,
    unlabelled_file=None,
    shots=2,
    seeds="13",
    unlabelled=8,
    ipet_generations=0,
    test_limit=10,
    method="lora",
    temperature=2.0,
    weighting="train-accuracy",
    distil_steps=2,
    distil_lora=True,
    growth=5.0,
    ipet_share=0.25,
    lm_loss_weight=0.0,
    steps=2,
)


def pet_args(**changes) -> list:
    """/pet's inputs as a list, PET_FORM with `changes`."""
    return list((PET_FORM | changes).values())


def test_pet_tab_trains_every_pattern_distils_a_classifier_and_offers_it(client):
    job = client.submit(*pet_args(), api_name="/pet")
    status, table, _curves, soft, picker = job.result(timeout=FIRST_CALL_TIMEOUT_S)
    # every step of every model said (a line per model stood unchanged for minutes on a busy CPU): 2 of each
    steps = [
        m.group(1, 2)
        for update in job.outputs()
        if (m := re.match(r"Seed 13: training (.+), step (\d) of 2", update[0]))
    ]
    models = ["pattern 1 (generation 0)", "pattern 2 (generation 0)", "classifier (generation 0)"]
    assert steps == [(model, step) for model in models for step in "12"], steps
    # after its last step, each pattern's model scores the pool and the test texts (minutes, where "step 2 of 2"
    # stood), then its accuracy shows in the seed's line as it runs (none showed until the whole seed ended)
    scoring = [u[0].split(" (estimated")[0] for u in job.outputs() if u[0].startswith("Seed 13: scoring ")]
    assert scoring == [
        f"Seed 13: scoring pattern {n}'s model (generation 0) on 8 unlabelled and 10 test texts" for n in (1, 2)
    ]
    tables = [u[1]["data"] for u in job.outputs() if isinstance(u[1], dict) and "data" in u[1]]
    running = [rows[-1] for rows in tables if rows and rows[-1][0] == "13 (running)"]
    assert running and re.fullmatch(r"\d+\.\d%", running[0][1]) and running[0][2:] == ["…"] * 3, tables
    # what the percentages are of (they read alone)
    said, _, warned = status.partition("\n\n")
    assert re.fullmatch(
        r"1 of 1 seeds finished in [\d.]+ (s|min) \(estimated [\d.]+ (s|min|h)\)\. Each scored on 10 of 1000 test "
        r"texts\. Each seed's soft labels are on 8 unlabelled texts\.",
        said,
    ), status
    # a classifier of 2 steps may lean to one label or not, by the CPU's arithmetic (it did in fp32, not in bf16): if
    # it does, the line says so
    assert not warned or warned.startswith("⚠️ Seed 13: PET's classifier predicted 'positive' for "), status
    assert table["headers"] == ["seed", "pattern 1", "pattern 2", "ensemble", "PET", "soft labels right"]
    (row,) = table["data"]
    assert row[0] == "13" and all(re.fullmatch(r"\d+\.\d%", cell) for cell in row[1:]), row
    histogram = json.loads(soft["plot"])
    assert sum(len(plotly_array(trace["x"])) for trace in histogram["data"]) == 8  # one soft label per text
    assert picker["value"] == "pet classifier" and ["pet classifier (seed 13)", "pet classifier"] in picker["choices"]

    bars = plot_bars(call(client, "/pet_classify", "pet classifier", POSITIVE_TEXT))
    assert list(bars["y"]) == ["negative", "positive"]
    assert math.isclose(sum(plotly_array(bars["x"])), 1.0, abs_tol=1e-3)
    path = call(client, "/pet_download", "pet classifier")
    assert re.search(r"/peftlab-smollm2-135m-pet-classifier-seed-13-\d{4}-\d\d-\d\d-\d{6}\.zip$", path), path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(patterns="Review: {text}\nSentiment:{mask}"), r"PET needs at least two patterns"),
        (dict(patterns="Review: {text}\n---\n{text} It was{mask}."), r"Pattern 1: .*\{mask\}"),
        (dict(unlabelled=100000), r"fewer than the 100000 unlabelled texts asked"),
        (dict(ipet_generations=-1), r"^iPET generations must be 0 or more, not -1\.$"),
    ],
)
def test_pet_bad_input_is_one_sentence(client, changes, message):
    with pytest.raises(AppError, match=message):
        call(client, "/pet", *pet_args(**changes))


def test_pet_unlabelled_file_without_the_patterns_column_is_one_sentence(client, tmp_path):
    bad = tmp_path / "unlabelled.csv"
    bad.write_text("review\nA fine film.\n")
    with pytest.raises(AppError, match=r"The unlabelled file 'unlabelled.csv' has no column 'text'"):
        call(client, "/pet", *pet_args(unlabelled_file=handle_file(str(bad))))
    assert_still_answers(client)


# ------------------------------------------------------------------ the RLHF tab, on the tiny Llama saved as a folder


def test_rlhf_tab_runs_every_step_in_order_with_a_person_ranking(client, tiny_causal_folder):
    # Out of order: PPO or DPO before anything asks for the first missing step, in one sentence.
    with pytest.raises(AppError, match=r"^Run step 1 \(SFT\) first\.$"):
        call(client, "/rlhf_ppo", "vader-positive", 1, 0.05, False, 4.0, 0.0, 1e-3, 0)
    with pytest.raises(AppError, match=r"^Run step 1 \(SFT\) first\.$"):
        call(client, "/rlhf_dpo", 2, 0.1, 1e-3, 0)

    status, _plot, samples = call(client, "/rlhf_sft", tiny_causal_folder, None, None, "lora", 2, 1e-3, 0)
    assert status.startswith("SFT done: loss") and len(samples["data"]) == 3  # 3 held-out prompts sampled at the end
    with pytest.raises(AppError, match=r"^Run step 2 \(reward model\) first\.$"):
        call(client, "/rlhf_ppo", "vader-positive", 1, 0.05, False, 4.0, 0.0, 1e-3, 0)
    with pytest.raises(AppError, match=r"^Run step 2 \(reward model\) first: DPO learns from the same comparisons\.$"):
        call(client, "/rlhf_dpo", 2, 0.1, 1e-3, 0)

    # The human labeler screen: each response shown whole with a rank to pick (1 = best, ties allowed); two
    # prompts ranked by a person become comparisons.
    for ranks in ([2, 1, 3], [1, 1, 2]):
        prompt, *slots = call(client, "/rlhf_sample_for_ranking", 3, 0)
        assert prompt.startswith("**Prompt:** Write a one-sentence review of the movie")
        texts, ranks_offered = slots[:MAX_RANKED], slots[MAX_RANKED:]  # the slots' columns send the client nothing
        assert [bool(text["value"]) for text in texts] == [True] * 3 + [False] * (MAX_RANKED - 3)
        assert ranks_offered[0]["choices"] == [["1", 1], ["2", 2], ["3", 3]]
        message, *_ = call(client, "/rlhf_save_ranking", *ranks, *[None] * (MAX_RANKED - 3))
    assert message.startswith("**2 rankings saved**: 5 comparisons on 2 prompts for the reward model"), message
    with pytest.raises(AppError, match=r"^Sample new responses to rank first \(2 rankings saved so far\)\.$"):
        call(client, "/rlhf_save_ranking", *[None] * MAX_RANKED)  # pressed again: the count stays in sight
    call(client, "/rlhf_sample_for_ranking", 3, 1)
    with pytest.raises(AppError, match=r"^Give response 2 a rank from 1 \(best\) to 3\.$"):
        call(client, "/rlhf_save_ranking", 1, None, 2, *[None] * (MAX_RANKED - 3))
    status, _plot, pairs, check = call(client, "/rlhf_reward", "my rankings", "vader-positive", 3, 10, 0, 3, 0, None)
    percent = r"\d+\.\d%"
    assert re.match(
        rf"Reward model: held-out pair accuracy \*\*{percent}\*\* \(95 % interval {percent} to {percent}\) on "
        r"(\d+) held-out comparisons? of \d+ prompts?"
        r"( \(the interval counts one prompt's comparisons as correlated\))?; it trained on \d+ other comparisons?\. ",
        status,
    ), status
    # a few held-out pairs cannot tell any reward model from a coin (3 of 3 right: 44 % to 100 %): said, not "Next: PPO"
    assert "⚠️ This reward model cannot be told apart from a coin toss on " in status and "Next" not in status, status
    # a person's rankings have no score margins: the whole held-out set, then InstructGPT's figures for scale
    assert [row[0] for row in check["data"]] == ["all held-out", *INSTRUCTGPT_AGREEMENT]
    assert len(pairs["data"]) >= 1

    job = client.submit("vader-positive", 2, 0.05, False, 4.0, 0.0, 1e-3, 0, api_name="/rlhf_ppo")
    status, plot, samples = job.result(timeout=CALL_TIMEOUT_S)
    assert status.startswith("PPO done") and len(samples["data"]) == 2
    assert [panel["text"] for panel in json.loads(plot["plot"])["layout"]["annotations"]] == [
        "reward",
        "KL to SFT (nats)",
        "losses",
        "clip fraction",
    ]

    # Stop ends PPO after its current step and keeps the policy trained so far, which the comparison below uses.
    job = client.submit("vader-positive", 10_000, 0.05, False, 4.0, 0.0, 1e-3, 0, api_name="/rlhf_ppo")
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while not job.outputs() and time.monotonic() < deadline:  # wait for the first streamed step
        time.sleep(0.1)
    assert call(client, "/rlhf_ppo_stop") == "Stopping PPO after its current step; what it finished is kept."
    status, _plot, samples = job.result(timeout=CALL_TIMEOUT_S)
    assert re.fullmatch(
        r"PPO stopped after \d+ of 10000 steps because you pressed Stop; the policy so far is kept \(\d+ s\)\. "
        r"Compare the SFT and PPO policies below\.",
        status,
    ), status
    assert len(samples["data"]) < 10_000

    # DPO from the same SFT model, on the comparisons the reward model learnt from
    status, plot = call(client, "/rlhf_dpo", 2, 0.1, 1e-3, 0)
    assert re.match(r"DPO done \(\d+ s, \d+ comparisons\)\. Compare it with SFT and PPO below\.", status), status
    assert [panel["text"] for panel in json.loads(plot["plot"])["layout"]["annotations"]] == list(DPO_PANELS)

    # the table alone, as every table's event sends it (its column widths follow in a change event of the page's)
    status, table, _scores, frontier = call(client, "/rlhf_evaluate", "vader-positive", 3, 0)
    number = r"\*\*[+-]\d\.\d{3}\*\* \(reward model [+-]\d\.\d{2}\)"
    assert re.match(
        rf"On 3 held-out prompts, mean vader-positive score: SFT {number}; PPO {number}, KL to SFT "
        rf"-?\d+\.\d\d nats per response; DPO {number}, KL to SFT -?\d+\.\d\d nats per response\."
        r"( A KL below 0 is the sampling error of 3 responses: that policy cannot be told apart from SFT on these "
        r"prompts\.)?"
        # the tiny model's routes may answer as SFT does (which one depends on how SFT trained)
        r"( A response word for word SFT's still has a KL \((PPO|DPO|PPO and DPO)\): it measures how much likelier or "
        r"less likely the policy made those words, not whether they differ\.)?$",
        status,
    ), status
    assert table["headers"][:4] == ["prompt", "SFT answer", "PPO answer", "DPO answer"]
    numbers = [f"{route} {what}" for what in ("score", "reward", "KL") for route in ("SFT", "PPO", "DPO")]
    assert table["headers"][4:] == [n for n in numbers if n != "SFT KL"]  # SFT's KL to itself is 0
    assert len(table["data"]) == 3
    # one format per kind of number ("0", "-0.572" and "-0.00677" stood in one column)
    for header, column in zip(table["headers"][4:], list(zip(*table["data"]))[4:]):
        pattern = {"score": r"[+-]\d+\.\d{3}", "reward": r"[+-]\d+\.\d\d", "KL": r"-?\d+\.\d\d"}[header.split()[-1]]
        assert all(re.fullmatch(pattern, cell) for cell in column), (header, column)
    assert json.loads(frontier["plot"])["data"][0]["text"] == ["SFT", "PPO", "DPO"]
    for stage, expected in (
        ("SFT adapter", "adapter_config.json"),
        ("reward model", "reward_head.safetensors"),
        ("PPO adapter", "value_head.safetensors"),
        ("DPO adapter", "adapter_model.safetensors"),
    ):
        import zipfile

        path, said = call(client, "/rlhf_download", stage)
        assert said == ""  # the line beside the file holds a refusal's sentence alone
        # the name says what it holds: the model (its folder's path, slugged), the stage, the date and the time
        assert re.fullmatch(
            rf"peftlab-.*tiny-llama-folder.*-rlhf-{stage.replace(' ', '-')}-\d{{4}}-\d\d-\d\d-\d{{6}}\.zip",
            Path(path).name,
        ), path
        assert expected in zipfile.ZipFile(path).namelist()
        if stage in ("PPO adapter", "DPO adapter"):  # the SFT adapter the policy was trained on comes along
            assert "sft/adapter_config.json" in zipfile.ZipFile(path).namelist()
    reward_zip = zipfile.ZipFile(call(client, "/rlhf_download", "reward model")[0])
    info = json.loads(reward_zip.read("reward_model.json"))
    assert info["backbone"] == tiny_causal_folder  # the head says which model it reads
    # ... and the SFT adapter it reads comes with it (the zip held the head alone)
    assert "sft/adapter_config.json" in reward_zip.namelist() and "in sft/" in info["reads"]

    # SFT pressed again: a student's whole pipeline went with a press meant to try a setting; the first press says
    # what it would drop and changes nothing
    status, *_ = call(client, "/rlhf_sft", tiny_causal_folder, None, None, "lora", 2, 1e-3, 0)
    assert status == (
        "⚠️ Running step 1 (SFT) again drops the reward model, PPO and DPO, trained on the current one: download "
        "what to keep first. Press the button again to go on."
    )
    assert "value_head.safetensors" in zipfile.ZipFile(call(client, "/rlhf_download", "PPO adapter")[0]).namelist()


def test_a_long_rlhf_stage_stops_after_its_first_steps_and_leaves_the_stages_as_they_were(
    app_url, tiny_causal_folder, monkeypatch
):
    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", 1e-3)  # long on any machine (the app runs in-process)
    monkeypatch.setattr("peftlab.ui.estimates._PACES", {})
    visitor = Client(app_url, verbose=False)  # a visitor of its own, with no RLHF stages yet
    sft = [tiny_causal_folder, None, None, "lora", 5, 1e-3, 0]
    status, *_ = call(visitor, "/rlhf_sft", *sft)
    assert re.fullmatch(
        rf"\*\*5 SFT steps: about {DURATION} on this machine\*\* \(from its first steps just now\)\. {SECOND_PRESS}",
        status,
    ), status
    with pytest.raises(AppError, match=r"^Run step 1 \(SFT\) first\.$"):  # the two steps it ran were dropped
        call(visitor, "/rlhf_sample_for_ranking", 2, 0)
    status, *_ = call(visitor, "/rlhf_sft", *sft)  # the second press runs it to the end
    assert status.startswith("SFT done") and "after 5 steps" in status, status

    # another method has no pace yet: it measures, asks, and the SFT model of the run before stays
    status, *_ = call(visitor, "/rlhf_sft", *sft[:3], "full", *sft[4:])
    assert status.startswith("**5 SFT steps: about") and "(from its first steps just now)" in status, status
    prompt, *_ = call(visitor, "/rlhf_sample_for_ranking", 2, 0)
    assert prompt.startswith("**Prompt:**")

    # the reward model prices the sampling before it samples: from one batch sampled just now
    reward = ["simulated labeler", "vader-positive", 3, 10, 0, 3, 0, None]  # no comparisons file
    status, *_ = call(visitor, "/rlhf_reward", *reward)
    # the samples counted as K per prompt, and the prompts as what the comparisons need and the held-out test
    plan = re.fullmatch(
        r"\*\*(\d+) samples to rank \(K = 3 for each of (\d+) prompts: (\d+) for 10 training comparisons, (\d+) held "
        rf"out to test the reward model\) and 3 steps: about {DURATION} on this machine\*\* \(from the paces measured "
        rf"so far\)\. {SECOND_PRESS}",
        status,
    )
    assert plan, status
    samples, prompts, training, held_out = map(int, plan.groups())
    assert (samples, prompts, training) == (3 * prompts, training + held_out, 5)  # 10 comparisons x 1.25 / 3 a prompt
    status, *_ = call(visitor, "/rlhf_reward", *reward)
    assert status.startswith("Reward model: held-out pair accuracy"), status

    # DPO trains in a thread of its own: a DPO stopped for its estimate leaves none running behind it
    status, *_ = call(visitor, "/rlhf_dpo", 400, 0.1, 1e-3, 0)
    assert status.startswith("**400 DPO steps: about") and "(from its first steps just now)" in status, status
    assert [t.name for t in threading.enumerate() if t.name == "peftlab-dpo"] == []


def test_rlhf_bad_input_is_one_sentence(client, tiny_causal_folder, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(AppError, match=r"has no demonstrations"):
        call(client, "/rlhf_sft", tiny_causal_folder, handle_file(str(empty)), None, "lora", 2, 1e-3, 0)
    same = tmp_path / "same.jsonl"
    same.write_text('{"prompt": "p", "chosen": "good", "rejected": "good"}\n')
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"prompt": "p", "response": "good"}\n{"prompt": "q", "response": "bad"}\n')
    with pytest.raises(AppError, match=r"same text for 'chosen' and 'rejected'"):
        call(
            client, "/rlhf_sft", tiny_causal_folder, handle_file(str(demos)), handle_file(str(same)), "lora", 2, 1e-3, 0
        )
    refused = r"^K samples ranked per prompt must be at least 2, not 1\.$"  # by the UI field
    with pytest.raises(AppError, match=refused):
        call(client, "/rlhf_sample_for_ranking", 1, 0)
    with pytest.raises(AppError, match=r"KL coefficient β must be 0 or more, not -0\.1\.$"):  # as every box says it
        call(client, "/rlhf_ppo", "vader-positive", 1, -0.1, False, 4.0, 0.0, 1e-3, 0)
    assert_still_answers(client)


# ------------------------------------------------------------------ many visitors: Stop, queues, caps, sessions


def wait_for(condition, timeout: float = CALL_TIMEOUT_S, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_stop_in_soft_prompts_keeps_the_run_in_progress_as_a_row(client, monkeypatch):
    job = client.submit(*compare_args(steps=500), api_name="/compare")
    wait_for(lambda: len(job.outputs()) >= 2, FIRST_CALL_TIMEOUT_S, "the first training steps")
    assert call(client, "/compare_stop") == "Stopping the comparison after its current step; what it finished is kept."
    status, results, _summary, _curves, _scatter, csv_path, run_path, picker = job.result(timeout=CALL_TIMEOUT_S)
    assert re.search(
        r"Stopped because you pressed Stop\. No run had finished; the stopped run \(prompt-tuning, K 4, seed 13\) is "
        r"the last row, stopped at step \d+ of 500, and the summary and the chart count it as it was then\.",
        status,
    ), status
    rows = pd.DataFrame(results["data"], columns=results["headers"])
    assert rows["method"].tolist() == ["zero-shot", "prompt-tuning"]
    assert re.fullmatch(r"stopped at step \d+ of 500", rows["status"].iloc[1]), rows["status"].tolist()
    assert pd.read_csv(csv_path)["status"].tolist() == rows["status"].tolist()  # the downloads keep it too
    assert json.loads(open(run_path, encoding="utf-8").read())["results"][1]["status"] == rows["status"].iloc[1]
    # the stopped run can classify and be downloaded, under a name of its own: it took the name of a finished run of
    # its method and was picked as that
    step = rows["status"].iloc[1].removeprefix("stopped ")
    assert picker["value"] == "prompt-tuning · stopped"
    assert picker["choices"][-1] == [f"prompt-tuning · stopped (K 4, seed 13, {step})", "prompt-tuning · stopped"]
    # Stop after the end leaves the final line and its notes (it said "Nothing to stop: ..." there; a toast says it)
    assert call(client, "/compare_stop") == {"__type__": "update"}


def test_a_stop_says_what_it_left_of_a_grid_and_never_keeps_a_run_that_took_no_step():
    """A Stop before the first step said "the stopped run's best weights are kept" over a table of zero-shot alone."""
    from peftlab.serving import JobStop
    from peftlab.ui.soft_prompts_tab import _stop_note

    stop = JobStop()
    stop.stop("you pressed Stop")
    zero_shot = {"method": "zero-shot", "status": "done"}
    done = {"method": "lora", "status": "done", "K": 16, "seed": 13}
    stopped = {"method": "head", "status": "stopped at step 3 of 30", "K": 16, "seed": 42}
    said = "Stopped because you pressed Stop."
    assert _stop_note(stop, [zero_shot], 2) == f"{said} No run had taken a step: nothing was trained."
    assert _stop_note(stop, [zero_shot, done, stopped], 2) == (
        f"{said} Finished runs are kept; the stopped run (head, K 16, seed 42) is the last row, stopped at step 3 of "
        "30, and the summary and the chart count it as it was then."
    )
    # none finished: it said "Finished runs are kept"
    assert _stop_note(stop, [zero_shot, stopped], 2).startswith(f"{said} No run had finished; the stopped run (head,")
    assert (
        _stop_note(stop, [zero_shot, done], 2) == f"{said} Finished runs are kept; the next run had not taken a step."
    )
    assert _stop_note(stop, [zero_shot, done, done], 2) == said  # pressed as the last run ended


def test_a_sweep_marks_its_stopped_run_in_its_values_row():
    """A sweep's table has a row per value, not per run: its Stop said the stopped run "is the last row", and no row
    of its table told that one of its runs stopped early."""
    from peftlab.serving import JobStop
    from peftlab.ui.soft_prompts_tab import _stop_note, _sweep_summary

    run = dict(method="prompt-tuning", K=4, macro_f1=0.5, trainable_params=2304, trainable_share=0.0, train_seconds=1.0)
    rows = [
        dict(method="zero-shot", status="done", test_accuracy=0.5),
        dict(run, seed=13, num_virtual_tokens=4, status="done", test_accuracy=0.7),
        dict(run, seed=21, num_virtual_tokens=4, status="done", test_accuracy=0.8),
        dict(run, seed=13, num_virtual_tokens=8, status="stopped at step 3 of 30", test_accuracy=0.6),
    ]
    summary = _sweep_summary(rows, "num_virtual_tokens")
    assert summary[["num_virtual_tokens", "runs", "stopped"]].values.tolist() == [
        [4, 2, ""],
        [8, 1, "seed 13 at step 3 of 30"],
    ]
    assert "stopped" not in _sweep_summary(rows[:3], "num_virtual_tokens")  # no column while nothing stopped
    stop = JobStop()
    stop.stop("you pressed Stop")
    assert _stop_note(stop, rows, 4, "num_virtual_tokens") == (
        "Stopped because you pressed Stop. Finished runs are kept; the stopped run (prompt-tuning, K 4, seed 13, "
        "num_virtual_tokens 8), stopped at step 3 of 30, is marked in its row, and the table and the chart count it as "
        "it was then."
    )


def test_stop_ends_a_cloze_evaluation_between_batches(client):
    """The Cloze tab had no Stop: an evaluation of every test text (with demonstrations, minutes) ran to its end."""
    job = client.submit(*settings().values(), None, api_name="/evaluate")  # all 1000 test texts: over a minute
    wait_for(lambda: job.status().code.value == "PROGRESS", FIRST_CALL_TIMEOUT_S, "the evaluation to start")
    assert call(client, "/evaluate_stop") == "Stopping the evaluation after its current batch of texts."
    summary, _confusion, _errors, csv_path = job.result(timeout=CALL_TIMEOUT_S)
    assert re.fullmatch(
        r"Stopped because you pressed Stop\. The evaluation was \d+% through its 1000 test texts; an accuracy needs "
        r"them all, so nothing was kept\.",
        summary,
    ), summary
    assert csv_path is None


def test_the_cloze_tabs_stop_ends_the_start_tabs_scoring_between_batches(client, monkeypatch):
    """The Start tab's scoring took the Cloze tab's stop flag but never read it: Stop answered "Stopping..." and the
    scoring ran on, holding the CPU's one heavy slot, after its visitor left too."""
    from peftlab.ui import start_tab

    monkeypatch.setattr(start_tab, "STEP_TEXTS", 900)  # scored by no other test: over a minute on this CPU
    job = client.submit(api_name="/start_score")
    wait_for(lambda: job.status().code.value == "PROGRESS", FIRST_CALL_TIMEOUT_S, "the scoring to start")
    assert call(client, "/evaluate_stop") == "Stopping the evaluation after its current batch of texts."
    summary, table = job.result(timeout=CALL_TIMEOUT_S)
    assert re.fullmatch(
        r"Stopped because you pressed Stop\. The scoring was \d+% through; nothing was kept\.", summary
    ), summary
    assert table is None or not table.get("data")


def test_cheap_clicks_never_wait_behind_heavy_jobs_and_a_queued_job_learns_its_place(app_url, client):
    trainer = Client(app_url, verbose=False)
    evaluator = Client(app_url, verbose=False)
    try:
        training = trainer.submit(*compare_args(steps=500), api_name="/compare")
        wait_for(lambda: len(training.outputs()) >= 2, FIRST_CALL_TIMEOUT_S, "the training to start")
        queued = evaluator.submit(*settings().values(), 20, api_name="/evaluate")
        wait_for(lambda: queued.status().code.value == "IN_QUEUE", 30, "the evaluation to wait in the heavy queue")
        place = queued.status()
        assert place.rank == 0 and place.queue_size == 1
        started = time.monotonic()
        assert_still_answers(client)  # a third visitor's click goes through while the heavy slot is taken
        assert time.monotonic() - started < 30 and not training.done() and not queued.done()
        call(trainer, "/compare_stop")
        training.result(timeout=CALL_TIMEOUT_S)
        summary = queued.result(timeout=CALL_TIMEOUT_S)[0]
        assert "20 of 1000 test texts" in summary
    finally:
        trainer.close()
        evaluator.close()


def test_public_mode_refuses_oversized_jobs_and_disallowed_models_with_one_sentence(
    client, monkeypatch, tmp_path, tiny_causal_folder
):
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    limit = "above this public Space's limit of {}; lower it, or run peftlab on your own machine for larger jobs."
    cases = [
        ("/compare", compare_args(steps=100), "Steps is 100, " + limit.format(60)),
        (
            "/compare",
            compare_args(methods=["prompt-tuning", "lora", "head", "full", "bitfit"], seeds="13,21,42"),
            "The number of training runs is 15, " + limit.format(12),
        ),
        ("/compare", compare_args(shots="64"), "K per class is 64, " + limit.format(32)),
        ("/evaluate", [*settings().values(), 900], "Test texts to evaluate is 900, " + limit.format(500)),
        (  # an emptied box means every test text: the message says so rather than quote a number nobody typed
            "/evaluate",
            [*settings().values(), None],
            "Test texts to evaluate is empty, which scores all 1000 test texts, above this public Space's limit of "
            "500; type 500 or fewer.",
        ),
        ("/autoprompt", autoprompt_args(iterations=31), "Iterations is 31, " + limit.format(30)),
        (
            "/classify",
            [*settings(model=tiny_causal_folder).values(), POSITIVE_TEXT],
            f"This public Space loads only these models: smollm2-135m, HuggingFaceTB/SmolLM2-135M-Instruct, gpt2, "
            f"bert-base-uncased, roberta-large; '{tiny_causal_folder}' is not one of them (run peftlab on your own "
            "machine for others).",
        ),
        (
            "/classify",
            [*settings(task="/etc/passwd.csv").values(), POSITIVE_TEXT],
            "On this public Space, give your own data as an upload, not as a file name.",
        ),
    ]
    for api_name, args, message in cases:
        with pytest.raises(AppError) as raised:
            call(client, api_name, *args)
        assert str(raised.value) == message, api_name
    assert_still_answers(client)


def test_loading_a_saved_method_never_pulls_a_model_the_caps_do_not_allow(client, monkeypatch, tmp_path):
    import zipfile

    saved = tmp_path / "elsewhere.zip"
    with zipfile.ZipFile(saved, "w") as archive:
        archive.writestr("peftlab_method.json", json.dumps({"method": "head", "model": "someone/huge-model"}))
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    with pytest.raises(
        AppError, match=r"^This public Space loads only these models: .*'someone/huge-model' is not one"
    ):
        call(client, "/load_trained", handle_file(str(saved)))


def test_a_closed_session_loses_its_jobs_objects_and_files(app_url):
    from peftlab.ui.sessions import SESSIONS

    visitor = Client(app_url, verbose=False)
    try:
        call(visitor, "/evaluate", *settings().values(), 8)
        job = visitor.submit(*compare_args(steps=500), api_name="/compare")
        wait_for(lambda: len(job.outputs()) >= 2, FIRST_CALL_TIMEOUT_S, "the training to start")
        session = SESSIONS.get(type("Request", (), {"session_hash": visitor.session_hash})())
        folder = session.folder
        assert any(folder.glob("peftlab-*-cloze-predictions-*.csv")) and session.running
        (stop,) = session._stops.values()
    finally:
        visitor.close()  # the heartbeat ends: Gradio runs the unload event
    wait_for(lambda: stop.is_set(), 30, "the session's job to be stopped")
    assert stop.reason == "the visitor left"
    wait_for(lambda: not folder.exists(), 30, "the session folder to go")
    assert session.values == {}
    wait_for(lambda: not session.running, CALL_TIMEOUT_S, "the stopped job to end")


# ------------------------------------------------------------------ the Compare tab


def test_results_of_every_tab_land_in_one_comparison_that_survives_a_reload(app_url, client):
    """Rows kept by the evaluation and the grid above (one store): a new visitor sees them on one table."""
    call(client, "/evaluate", *settings(calibration="mean").values(), 20)
    call(client, "/compare", *compare_args(steps=2))
    visitor = Client(app_url, verbose=False)  # a reload is a new session: the store is not session state
    try:
        task_choices, model_choices = call(visitor, "/compare_choices", None, None)
        assert TASK in [c[0] for c in task_choices["choices"]] and MODEL in [c[0] for c in model_choices["choices"]]
        status, table, by_params, by_seconds, apart, csv_path, report_path = call(visitor, "/compare_show", TASK, MODEL)
        assert status.startswith(f"**{TASK} · {MODEL}**") and "baseline: zero-shot · mean" in status
        methods = [row[0] for row in table["data"]]
        # lines of one method are named by the settings they differ in, as other tests stored theirs here too
        assert methods[0] == "zero-shot · mean" and any(m.split(" (")[0] == "prompt-tuning" for m in methods)
        every_split = pd.read_csv(csv_path)  # the main split first, then the others, each line naming its split
        assert every_split[every_split["split"] == every_split["split"][0]]["method"].tolist() == methods
        page = open(report_path, encoding="utf-8").read()
        assert "prompt-tuning" in page and "chart-0-0" in page
        for plot in (by_params, by_seconds):
            assert json.loads(plot["plot"])["data"], plot
        listed = call(visitor, "/results_list")
        assert len(listed["data"]) >= 3
    finally:
        visitor.close()
