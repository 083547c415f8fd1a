"""The standard comparison: every method on the same texts and K-shot examples, in order, stoppable, estimated."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from peftlab import autoprompt, standard
from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, run_grid
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.pet import PETConfig, PETEvent, pattern_prompts
from peftlab.report import compare
from peftlab.standard import (
    AUTOPROMPT,
    IN_CONTEXT,
    PET,
    STEP_COST,
    ZERO_SHOT,
    MeasuredCosts,
    StandardConfig,
    StandardEvent,
    estimate,
    estimate_seconds,
    grid_seconds,
    pet_seconds,
    plan,
    run_of,
    run_standard,
)
from peftlab.store import ResultRow
from peftlab.tuning import TrainSettings
from tests.test_tuning import TEMPLATE, VERBALIZER, easy_task

SETTINGS = TrainSettings(steps=2, eval_every=1)
# costs as `standard.measure` finds them; a text of a batch drawn at random costs 1.5 times one of a sorted run
MEASURED = MeasuredCosts(per_text=0.01, per_step=1.0, per_trained_text=0.02, padding=1.5, per_run=0.5, tokens=40)


def config(**changes) -> StandardConfig:
    values = dict(
        methods=(ZERO_SHOT, IN_CONTEXT, AUTOPROMPT, "lora", "head"),
        shots=2,
        seeds=(13, 21),
        test_limit=4,
        demonstrations_per_class=1,
        autoprompt_iterations=1,
    )
    return StandardConfig(**values | changes)


def test_every_method_runs_on_the_same_texts_and_lands_on_one_table(tiny_causal):
    items = list(run_standard(tiny_causal, tiny_causal, easy_task(), TEMPLATE, VERBALIZER, config(), SETTINGS))
    events = [i for i in items if isinstance(i, StandardEvent)]
    rows = [i for i in items if isinstance(i, ResultRow)]
    assert (
        [(e.method, e.seed) for e in events]
        == plan(config())
        == [
            (ZERO_SHOT, None),
            (IN_CONTEXT, 13),
            (IN_CONTEXT, 21),
            (AUTOPROMPT, 13),
            (AUTOPROMPT, 21),
            ("lora", 13),
            ("lora", 21),
            ("head", 13),
            ("head", 21),
        ]
    )
    assert [(r.method, r.seed) for r in rows] == [(e.method, e.seed) for e in events]
    assert len({r.test_fingerprint for r in rows}) == 1 and all(len(r.predictions) == 4 for r in rows)
    assert all(r.k == 2 for r in rows[1:]) and rows[1].settings["shots_in_context"] == 2  # one per class
    assert "[T]" in rows[3].settings["config"]["template"] and rows[3].settings["found_template"].startswith("Review:")
    (split,) = compare(rows)
    assert split.baseline == ZERO_SHOT and set(split.table["method"]) == {r.method for r in rows}
    assert split.table.set_index("method").loc["lora", "runs"] == 2


def test_autoprompt_is_timed_by_its_search_alone(tiny_causal, monkeypatch):
    """The baseline autoprompt_run scores after its search (the template without the trigger) is left out of the
    comparison, and of AutoPrompt's seconds: they are the search's, as the search stored them."""
    searched = {}

    def search_then_baseline(*args, **kwargs):
        for item in autoprompt.autoprompt_run(*args, **kwargs):
            if isinstance(item, autoprompt.AutoPromptResult):
                searched["seconds"] = item.rows[0].train_seconds
                time.sleep(0.5)  # a slow baseline, scored before the result comes
            yield item

    monkeypatch.setattr(standard, "autoprompt_run", search_then_baseline)
    rows = [
        i
        for i in run_standard(
            tiny_causal, tiny_causal, easy_task(), TEMPLATE, VERBALIZER, config(methods=(AUTOPROMPT,)), SETTINGS
        )
        if isinstance(i, ResultRow)
    ]
    assert [r.method for r in rows] == [AUTOPROMPT] * 2
    assert rows[-1].train_seconds == searched["seconds"] < 0.5


def test_stop_keeps_the_finished_runs_and_starts_no_other(tiny_causal):
    stop = threading.Event()
    rows = []
    for item in run_standard(tiny_causal, tiny_causal, easy_task(), TEMPLATE, VERBALIZER, config(), SETTINGS, stop):
        if isinstance(item, ResultRow):
            rows.append(item)
            if len(rows) == 3:
                stop.set()
    assert [r.method for r in rows] == [ZERO_SHOT, IN_CONTEXT, IN_CONTEXT]


def test_pet_runs_on_the_template_and_generic_patterns_with_what_the_pool_has_left(tiny_causal):
    task = easy_task()  # 48 training rows, none of its own patterns
    pet_only = config(methods=(ZERO_SHOT, PET), seeds=(13,))
    items = list(run_standard(tiny_causal, tiny_causal, task, TEMPLATE, VERBALIZER, pet_only, SETTINGS))
    rows = [i for i in items if isinstance(i, ResultRow)]
    assert [(r.method, r.seed) for r in rows] == [(ZERO_SHOT, None), ("pet ensemble", 13), ("pet", 13)]
    assert len({r.test_fingerprint for r in rows}) == 1
    pet = rows[-1].settings["pet"]
    assert pet["unlabelled"] == 48 - 2 * 2 * 2 and pet["shots"] == 2 and pet["test_limit"] == 4
    models = {i.model for i in items if isinstance(i, PETEvent)}
    assert models == {"pattern 1", "pattern 2", "pattern 3", "classifier"}  # the template and two generic ones
    # two rows, one run: the Compare tab counted rows and ended on "34 of 31 runs finished"
    assert [run_of(r) for r in rows] == [(ZERO_SHOT, None), (PET, 13), (PET, 13)]
    assert {run_of(r) for r in rows} == set(plan(pet_only))


def test_zero_shot_alone_draws_no_examples_so_any_k_runs(tiny_causal):
    """An upload with 10 rows per class and zero-shot alone was refused for the default K=16, which nothing used."""

    def standard(*methods):
        return run_standard(
            tiny_causal, tiny_causal, easy_task(), TEMPLATE, VERBALIZER, config(methods=methods, shots=100), SETTINGS
        )

    assert [r.method for r in standard(ZERO_SHOT) if isinstance(r, ResultRow)] == [ZERO_SHOT]
    with pytest.raises(PeftlabError, match=r"^K=100 needs"):
        next(standard(ZERO_SHOT, "lora"))


def test_pet_with_no_unlabelled_text_left_is_one_sentence_before_anything_runs(tiny_causal):
    task = easy_task()
    task.train = task.train[:4] + task.train[-4:]  # K=2 per class for training and dev takes all of it
    with pytest.raises(PeftlabError, match=r"^PET needs unlabelled texts, and the training pool of 'easy-sentiment'"):
        next(run_standard(tiny_causal, tiny_causal, task, TEMPLATE, VERBALIZER, config(methods=(PET,)), SETTINGS))


def test_the_estimate_adds_up_the_measured_costs():
    """Trained models score at the training model's cost (0.02 s a text), the rest at the scoring model's (0.01); a
    text of a batch drawn at random (dev evaluations, AutoPrompt's batches) costs 1.5 times one of a sorted run."""
    task = easy_task()
    measured = MEASURED
    costs = estimate_seconds(config(), SETTINGS, task, measured, patterns=[1.0] * 4)
    n_test, dev, evaluations = 4, 2 * 2, 2  # steps 1 and 2
    assert costs[ZERO_SHOT] == pytest.approx(n_test * 0.01)
    assert costs[IN_CONTEXT] == pytest.approx(2 * 0.01 * (2 + n_test * (1 + 0.1 * 2)))  # demonstrations run once
    assert costs[AUTOPROMPT] == pytest.approx(2 * (1 * (3 * 16 + dev) * 1.5 + 2 * n_test) * 0.01)
    assert costs["lora"] == pytest.approx(
        2 * (0.5 + 2 * 1.0 * STEP_COST["lora"] + evaluations * dev * 1.5 * 0.02 + n_test * 0.02)
    )
    assert set(costs) == set(config().methods)
    pet = estimate_seconds(config(methods=(PET,)), SETTINGS, task, measured, patterns=[1.0] * 4)[PET]
    unlabelled = 48 - 2 * dev
    pattern = 0.5 + 2 * 1.0 * STEP_COST["lora"] + (evaluations * dev * 1.5 + n_test + dev + unlabelled) * 0.02
    distil_steps = PETConfig().distil_steps
    classifier = 0.5 + distil_steps * 1.0 + (distil_steps * dev * 1.5 + n_test) * 0.02
    assert pet == pytest.approx(2 * (4 * pattern + classifier))


def measured_on(lm, task) -> MeasuredCosts:
    """MEASURED with the tokens `standard.measure` finds a test text of `task` costs with TEMPLATE."""
    prompt = ClozeSetup.build(task, TEMPLATE, VERBALIZER).prompts[0]
    tokens = standard._tokens_per_text(lm, prompt, task.test_subset(standard.SCALE_SAMPLE))
    return dataclasses.replace(MEASURED, tokens=tokens)


def test_the_estimate_prices_pet_with_as_many_patterns_as_it_runs(tiny_causal, monkeypatch):
    """A task without patterns of its own gets the template and two generic ones: three pattern models, the template's
    at the measured cost."""
    task = easy_task()
    measured = measured_on(tiny_causal, task)
    monkeypatch.setattr(standard, "measure", lambda *args: measured)
    costs = estimate(tiny_causal, tiny_causal, task, TEMPLATE, VERBALIZER, config(methods=(PET,)), SETTINGS)
    patterns = standard.pattern_costs(tiny_causal, task, standard._pet_prompts(task, TEMPLATE, VERBALIZER), measured)
    assert len(patterns) == 3 and patterns[0] == 1.0
    assert costs == estimate_seconds(config(methods=(PET,)), SETTINGS, task, measured, patterns=patterns)


def test_a_pattern_that_scores_more_tokens_a_text_is_priced_higher(tiny_causal):
    """Three of rt-sentiment's PET patterns read two queries a text where its template reads one, in training and
    scoring: priced at the template's cost, PET's pattern models were priced at 474 s a seed where they took 628."""
    task = easy_task()
    longer = pattern_prompts(
        task, [TEMPLATE, "A long review follows here for you: {text} All in all, it was{mask}."], [VERBALIZER]
    )
    same, more = standard.pattern_costs(tiny_causal, task, longer, measured_on(tiny_causal, task))
    assert same == 1.0 and more > 1.5
    measured = MEASURED
    pet = PETConfig(shots=2, seeds=(13,), unlabelled=10, test_limit=4)
    doubled = pet_seconds(pet, SETTINGS, task, measured, [2.0]) - pet_seconds(pet, SETTINGS, task, measured, [1.0])
    n_test, dev, evaluations = 4, 2 * 2, 2  # steps 1 and 2
    # the steps and every text scored cost twice as much; the run's setup stays
    assert doubled == pytest.approx(2 * 1.0 * STEP_COST["lora"] + (evaluations * dev * 1.5 + n_test + dev + 10) * 0.02)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            dict(methods=("lora", "magic")),
            r"^The standard comparison has no method 'magic'; choose from zero-shot, in-context, autoprompt, ",
        ),
        (dict(demonstrations_per_class=3), r"^3 demonstrations per class cannot come from 2 examples per class"),
        (dict(seeds=()), r"^The standard comparison needs at least one method and one seed\.$"),
    ],
)
def test_bad_settings_are_one_sentence(changes, message):
    with pytest.raises(PeftlabError, match=message):
        config(**changes)


def test_demonstrations_are_checked_only_when_in_context_runs():
    """K of 1 with the head alone was refused: "2 demonstrations per class cannot come from 1 examples per class"."""
    assert config(methods=(ZERO_SHOT, "head"), shots=1, demonstrations_per_class=2).shots == 1
    with pytest.raises(PeftlabError) as raised:
        config(methods=(IN_CONTEXT,), shots=1, demonstrations_per_class=2)
    assert str(raised.value) == "2 demonstrations per class cannot come from 1 example per class; use at most 1."


def test_typed_names_without_the_middle_dot_are_the_stored_methods():
    assert config(methods=("zero-shot", "in-context", "lora")).methods == (ZERO_SHOT, IN_CONTEXT, "lora")


def test_virtual_tokens_in_front_of_each_input_lengthen_every_text_scored():
    """Prompt tuning's 20 virtual tokens made rt-sentiment's 31-token texts cost 1.5 times LoRA's to score, priced alike
    (217 s against 155 estimated); prefix tuning's keys and values cost about nothing."""
    from peftlab.standard import run_seconds

    n_test, dev, evaluations = 4, 4, 2  # steps 1 and 2
    scoring = (evaluations * dev * 1.5 + n_test) * 0.02
    lora = run_seconds("lora", SETTINGS, dev, n_test, MEASURED)
    assert run_seconds("prompt-tuning", SETTINGS, dev, n_test, MEASURED) - lora == pytest.approx(
        2 * 1.0 * (STEP_COST["prompt-tuning"] - 1) + scoring * 20 / 40
    )
    assert run_seconds("prefix-tuning", SETTINGS, dev, n_test, MEASURED) - lora == pytest.approx(
        2 * 1.0 * (STEP_COST["prefix-tuning"] - 1)
    )


def test_a_grid_estimate_adds_the_zero_shot_prompt_and_every_run():
    """Two methods x K in (1, 2) x 3 seeds, each run priced like the standard comparison's trained methods; the head
    reads each dev text once, and the test texts in its first run only."""
    task = easy_task()
    measured = MEASURED
    n_test, evaluations = 4, 2  # steps 1 and 2
    lora = 3 * sum(0.5 + 2 * 1.0 * STEP_COST["lora"] + (evaluations * k * 2 * 1.5 + n_test) * 0.02 for k in (1, 2))
    head = 3 * sum(0.5 + 2 * 1.0 * STEP_COST["head"] + k * 2 * 1.5 * 0.02 for k in (1, 2)) + n_test * 0.02
    assert grid_seconds(["lora", "head"], [1, 2], 3, SETTINGS, task, 4, measured) == pytest.approx(
        n_test * 0.01 + lora + head
    )
    # a sweep's values name the head twice: still one scoring of the test texts
    assert grid_seconds(["head", "head"], [1, 2], 3, SETTINGS, task, 4, measured) == pytest.approx(
        n_test * 0.01 + 2 * head - n_test * 0.02
    )


def test_the_head_reads_the_test_texts_through_the_model_in_its_first_run_only(tiny_causal, monkeypatch):
    """What `runs_seconds` prices the head by: its frozen features are memoised, so later seeds score no test text."""
    task = easy_task()
    read, mask_representations = [], autoprompt.mask_representations
    monkeypatch.setattr(
        autoprompt,
        "mask_representations",
        lambda lm, prompt, rows: read.append(rows) or mask_representations(lm, prompt, rows),
    )
    setup = ClozeSetup.build(task, "Some words first. " + TEMPLATE, VERBALIZER)  # features no other test memoised
    test = {row["text"] for row in task.test_subset(4)}
    first_run = []
    for item in run_grid(tiny_causal, task, setup, [method_config("head")], [13, 21, 42], [2], SETTINGS, test_limit=4):
        if isinstance(item, GridRow) and item.values["method"] == "head" and not first_run:
            first_run = list(read)
    later = read[len(first_run) :]
    assert test <= {row["text"] for rows in first_run for row in rows}
    assert later and not test & {row["text"] for rows in later for row in rows}


def test_the_pet_estimate_counts_each_ipet_generation_and_its_classifier():
    task = easy_task()
    measured = MEASURED
    pet = PETConfig(shots=2, seeds=(13,), unlabelled=10, test_limit=4)
    n_test, dev, evaluations = 4, 2 * 2, 2  # steps 1 and 2
    pattern = 0.5 + 2 * 1.0 * STEP_COST["lora"] + (evaluations * dev * 1.5 + n_test) * 0.02 + (dev + 10) * 0.02
    # the classifier's steps evaluate on dev as a pattern model's do, here at every step
    classifier = 0.5 + pet.distil_steps * 1.0 + (pet.distil_steps * dev * 1.5 + n_test) * 0.02
    assert pet_seconds(pet, SETTINGS, task, measured, patterns=[1.0] * 3) == pytest.approx(3 * pattern + classifier)
    ipet = dataclasses.replace(pet, ipet_generations=2)
    assert pet_seconds(ipet, SETTINGS, task, measured, patterns=[1.0] * 3) == pytest.approx(
        3 * 3 * pattern + 2 * classifier
    )


def test_zero_shot_alone_is_priced_without_timing_a_training_run(tiny_causal):
    """A comparison of zero-shot alone on an upload with one training row of a class said "K=1 needs 2 examples of
    class 'negative'" after measuring: the measurement timed a LoRA run it had no use for."""
    task = easy_task()
    task.train = [row for row in task.train if row["label"] == 1] + [next(r for r in task.train if r["label"] == 0)]
    with pytest.raises(PeftlabError, match=r"^K=1 needs 2 examples of class"):
        standard.measure(tiny_causal, tiny_causal, task, TEMPLATE, VERBALIZER)
    *said, costs = standard.measuring(tiny_causal, tiny_causal, task, TEMPLATE, VERBALIZER, training=False)
    assert said == [f"scoring {len(task.test_subset(16))} test texts"]
    assert costs.per_text > 0 and costs.per_step != costs.per_step  # NaN: nothing trained
    seconds = estimate_seconds(config(methods=(ZERO_SHOT,)), SETTINGS, task, costs, patterns=[])
    assert seconds == {ZERO_SHOT: pytest.approx(len(task.test_subset(4)) * costs.per_text)}


def test_pet_is_priced_on_the_unlabelled_texts_it_will_score(tiny_causal):
    """An uploaded file of 1,000 unlabelled texts was priced as the 32 the task's training pool leaves, about 490 s of
    scoring missing, and the job started without the estimate's second press."""
    task = easy_task()
    few, many = (PETConfig(shots=2, seeds=(13,), unlabelled=n, test_limit=4) for n in (20, 1000))
    extra = standard.pet_seconds(many, SETTINGS, task, MEASURED, [1.0, 1.0]) - standard.pet_seconds(
        few, SETTINGS, task, MEASURED, [1.0, 1.0]
    )
    assert extra == pytest.approx(2 * 980 * MEASURED.per_trained_text)  # each pattern's model scores 980 more


def test_pet_s_estimate_prices_a_full_classifier_and_the_lm_loss(tiny_causal):
    """The estimate priced PET's classifier as LoRA with LoRA off, and left out the auxiliary LM loss, which took a
    rt-sentiment seed from about 500 s to 621-643."""
    task = easy_task()
    base = PETConfig(shots=2, seeds=(13,), unlabelled=20, test_limit=4)

    def seconds(**changes) -> float:
        return standard.pet_seconds(dataclasses.replace(base, **changes), SETTINGS, task, MEASURED, [1.0, 1.0])

    distil = base.distil_steps * MEASURED.per_step  # the classifier's steps at LoRA's cost
    assert seconds(distil_lora=False) - seconds() == pytest.approx(distil * (STEP_COST["full"] - 1))
    steps = SETTINGS.steps * MEASURED.per_step * STEP_COST["lora"]  # one pattern model's steps
    assert seconds(lm_loss_weight=1e-4) - seconds() == pytest.approx(2 * steps)  # a second batch a step, 2 patterns
