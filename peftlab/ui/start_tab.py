"""The Start tab: what peftlab shows, three one-click steps on the defaults, and each method with its paper.

The steps run on the embedded model and the embedded movie reviews with the Cloze tab's starting template, so a
first visitor gets a result without reading a form: one review classified, then the test split scored raw and
calibrated, then a pointer to the comparison of every method.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from peftlab.cloze import CALIBRATIONS, ProgressFn, classify_text, evaluate, evaluation_kind
from peftlab.models import DEFAULT_MODEL
from peftlab.plots import label_probability_bars
from peftlab.tasks import load_task
from peftlab.ui.common import START_TEMPLATE, START_VERBALIZER, load_model
from peftlab.ui.display import fitted_table, readable, verdict, warning_notes
from peftlab.ui.presses import (
    StoppedBetweenBatches,
    answer,
    batch_progress,
    heavy_job,
    job,
    keep_results,
    light,
    stopped_note,
    user_errors,
)
from peftlab.zerogpu import call_on_gpu, on_zero_gpu

TASK = "rt-sentiment"
REVIEW = "A gripping, beautifully acted film."
STEP_TEXTS = 100  # test reviews step 2 scores: a stratified subset, seconds on a CPU
SCORING = "The Start tab's scoring"  # what a press of the Cloze tab is told runs, and its Stop stops

ABOUT = f"""**peftlab** puts prompt-based learning methods side by side on one language model and your data: a
hand-written prompt with no training, a searched prompt, a few thousand trained parameters, full fine-tuning. The
model (`{DEFAULT_MODEL}`) and the data (Rotten Tomatoes reviews, `{TASK}`) are embedded: it all works offline, on a
CPU. **Try this first**, one click each:"""

STEP_1 = """**1. Classify one review**, zero-shot: the model fills `Review: … Sentiment: ___` and the verbalizer
reads the probabilities of *positive* and *negative* there."""
STEP_2 = """**2. Score test reviews**, raw and with each calibration (which removes the model's bias towards one
label word), on a stratified sample of the test split."""
STEP_3 = """**3. Compare every method**: zero-shot, demonstrations, AutoPrompt, soft prompts, LoRA, adapters, PET,
... trained on the same few examples, on one table with confidence intervals."""

# (method, where, what it does, paper, link)
METHODS = [
    (
        "Cloze prompting",
        "Cloze",
        "Classify by the words a model predicts at a blank in a template; the verbalizer maps words to labels.",
        "Schick & Schütze 2021",
        "https://arxiv.org/abs/2001.07676",
    ),
    (
        "Calibration",
        "Cloze",
        "Divide out the label words' prior (a content-free input's scores, or the mean over texts).",
        "Zhao et al. 2021",
        "https://arxiv.org/abs/2102.09690",
    ),
    (
        "Demonstrations in context",
        "Cloze",
        "Put labelled examples, one per class, in front of each input; no training.",
        "Gao et al. 2021 (LM-BFF)",
        "https://arxiv.org/abs/2012.15723",
    ),
    (
        "AutoPrompt",
        "AutoPrompt",
        "Search discrete trigger tokens by their gradient to raise the right label word's probability.",
        "Shin et al. 2020",
        "https://arxiv.org/abs/2010.15980",
    ),
    (
        "Prompt tuning",
        "Soft prompts",
        "Train a few virtual token embeddings in front of the input; the model stays frozen.",
        "Lester et al. 2021",
        "https://arxiv.org/abs/2104.08691",
    ),
    (
        "P-tuning",
        "Soft prompts",
        "Virtual tokens produced by a small prompt encoder (an MLP or LSTM) over trainable embeddings.",
        "Liu et al. 2021",
        "https://arxiv.org/abs/2103.10385",
    ),
    (
        "Prefix tuning",
        "Soft prompts",
        "Trainable key and value vectors at every layer's attention (P-tuning v2 is the same for classification).",
        "Li & Liang 2021; Liu et al. 2022",
        "https://arxiv.org/abs/2101.00190",
    ),
    (
        "LoRA",
        "Soft prompts",
        "Train low-rank updates of the attention weights.",
        "Hu et al. 2021",
        "https://arxiv.org/abs/2106.09685",
    ),
    (
        "Adapters",
        "Soft prompts",
        "Train a small bottleneck layer after every block's feed-forward.",
        "Pfeiffer et al. 2021, after Houlsby et al. 2019",
        "https://arxiv.org/abs/2005.00247",
    ),
    (
        "BitFit",
        "Soft prompts",
        "Train only the bias terms.",
        "Ben Zaken et al. 2022",
        "https://arxiv.org/abs/2106.10199",
    ),
    (
        "Head, full fine-tuning",
        "Soft prompts",
        "The baselines: a classification head on the frozen model, or every weight trained.",
        "Gao et al. 2021 (LM-BFF)",
        "https://arxiv.org/abs/2012.15723",
    ),
    (
        "PET / iPET",
        "PET",
        "One model per pattern, their ensemble labels unlabelled text, a classifier is distilled from it.",
        "Schick & Schütze 2021",
        "https://arxiv.org/abs/2009.07118",
    ),
    (
        "RLHF: SFT, reward model, PPO",
        "RLHF",
        "Fine-tune on demonstrations, learn a reward from rankings, optimise against it with a KL penalty.",
        "Ouyang et al. 2022",
        "https://arxiv.org/abs/2203.02155",
    ),
    (
        "DPO",
        "RLHF",
        "Learn the same rankings directly, without a reward model or sampling.",
        "Rafailov et al. 2023",
        "https://arxiv.org/abs/2305.18290",
    ),
]


def methods_markdown() -> str:
    """The methods as a Markdown table: method, tab, what it does, and its paper as a link."""
    lines = ["| Method | Tab | What it does | Paper |", "|---|---|---|---|"]
    lines += [f"| {name} | {tab} | {what} | [{paper}]({link}) |" for name, tab, what, paper, link in METHODS]
    return "\n".join(lines)


@user_errors
def classify_review(review: str):
    """Step 1: the default prompt's label probabilities for one review."""
    prediction = call_on_gpu(
        classify_text,
        load_model(DEFAULT_MODEL),
        load_task(TASK),
        review,
        [START_TEMPLATE],
        START_VERBALIZER,
        "none",
        kind=f"cloze-classify:{DEFAULT_MODEL}",
        what="Classifying the review",
    )
    return verdict(prediction.label_probs) + warning_notes(prediction.notes), label_probability_bars(
        prediction.label_probs
    )


def each_calibration(lm, task, progress: ProgressFn | None = None) -> list:
    """The default prompt's evaluation on STEP_TEXTS test reviews with each calibration, in one call (one GPU call on
    ZeroGPU): the reviews are scored once, and each calibration re-weights those scores (`cloze._scores`).
    `progress(done, total)` is called between batches (and may raise to stop)."""
    return [
        evaluate(lm, task, [START_TEMPLATE], START_VERBALIZER, calibration, limit=STEP_TEXTS, progress=progress)
        for calibration in CALIBRATIONS
    ]


@user_errors
def score_test_reviews(request: gr.Request, progress=gr.Progress()):
    """Step 2: `each_calibration`; the rows go to the store."""
    task, lm = load_task(TASK), load_model(DEFAULT_MODEL)
    with job(request, "cloze", SCORING) as (session, stop):  # the Cloze tab's Stop ends it, and names it
        progress(0, desc=f"scoring {STEP_TEXTS} reviews")
        try:
            results = call_on_gpu(
                each_calibration,
                lm,
                task,
                progress=None if on_zero_gpu() else batch_progress(stop, progress),  # a callback cannot cross
                kind=evaluation_kind(DEFAULT_MODEL, 0),
                units=STEP_TEXTS,
                what=f"Scoring {STEP_TEXTS} reviews",
            )
        except StoppedBetweenBatches as stopped:
            return f"{stopped_note(stop)} The scoring was {stopped.fraction:.0%} through; nothing was kept.", None
        keep_results(session, [result.row for result in results])
    rows = [
        {"calibration": name, "accuracy": r.accuracy, "macro-F1": r.macro_f1} for name, r in zip(CALIBRATIONS, results)
    ]
    # a press after another visitor's (or one's own) reads the scores kept from the first: its seconds are that one's
    when = " when they were first scored on this server (kept since)" if results[0].reused else ""
    summary = (
        f"{calibration_summary(rows)} The reviews were scored once, in {results[0].seconds:.0f} s{when}; each "
        "calibration re-weights those scores. Next: step 3, or the Cloze tab to write your own template."
    )
    return summary, readable(pd.DataFrame(rows))


def calibration_summary(rows: list[dict]) -> str:
    """Step 2's sentence: raw accuracy (the first row, calibration "none") against the best calibration's; "81.0 %
    raw, 81.0 % with calibration none" once compared raw with itself, a tie won by the raw row."""
    raw, calibrated = rows[0], rows[1:]
    best = max(calibrated, key=lambda row: row["accuracy"])
    texts = f"On {STEP_TEXTS} test reviews: **{raw['accuracy']:.1%}** raw"
    if best["accuracy"] > raw["accuracy"]:
        return f"{texts}, **{best['accuracy']:.1%}** with calibration *{best['calibration']}*, the best of them."
    # "no calibration does better" read as the row named none
    return f"{texts}; none of the calibrations beats it (the best, *{best['calibration']}*: {best['accuracy']:.1%})."


def build_start_tab(tabs: gr.Tabs, compare_tab_id: str) -> None:
    """Build the tab; step 3's button selects the tab `compare_tab_id` of `tabs`."""
    gr.Markdown(ABOUT)
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown(STEP_1)
            review = gr.Textbox(REVIEW, label="A review", lines=1)
            classify_button = gr.Button("1. Classify this review", variant="primary")
            verdict = gr.Markdown()
            probabilities = gr.Plot(label="Label probabilities")
        with gr.Column():
            gr.Markdown(STEP_2)
            score_button = gr.Button(f"2. Score {STEP_TEXTS} test reviews", variant="primary")
            scores_summary = gr.Markdown()
            scores = fitted_table(label="Accuracy by calibration", headers=["calibration", "accuracy", "macro-F1"])
        with gr.Column():
            gr.Markdown(STEP_3)
            compare_button = gr.Button("3. Open the Compare tab", variant="primary")
            gr.Markdown(
                "There, open *Run the standard comparison*, keep the defaults (or fewer methods and seeds for a "
                "quicker first table) and press Run; it measures this machine first and shows its estimate of the time."
            )
    with gr.Accordion("Every method, in one sentence, with its paper", open=False):
        gr.Markdown(methods_markdown())

    classified = [verdict, probabilities]
    answer(
        classify_button.click(classify_review, [review], classified, api_name="start_classify", **light()),
        classified,
        classify_button,
    )
    # a job of the Cloze tab's kind: a press while that tab's evaluation runs is refused, naming it, and the Cloze
    # tab's Stop stops this one (it took over that tab's stop flag, and the evaluation could no longer be stopped)
    scoring = heavy_job(
        score_button,
        score_test_reviews,
        kind="cloze",
        name=SCORING,
        inputs=None,
        outputs=[scores_summary, scores],
        api_name="start_score",
    )
    answer(scoring, [scores_summary, scores], score_button)
    compare_button.click(lambda: gr.Tabs(selected=compare_tab_id), None, [tabs], queue=False)
