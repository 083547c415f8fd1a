"""Long jobs priced by their own pace: measured from their events, asked for a second press when long."""

from __future__ import annotations

import time

import pytest

from peftlab.autoprompt import AutoPromptConfig
from peftlab.rlhf.ppo import PPOConfig
from peftlab.standard import MeasuredCosts
from peftlab.tasks import Task
from peftlab.training import Event, Pace
from peftlab.ui import estimates
from peftlab.ui.estimates import Paced, cost_key


@pytest.fixture(autouse=True)
def fresh_paces(monkeypatch):
    monkeypatch.setattr(estimates, "_PACES", {})
    monkeypatch.setattr(estimates, "CONFIRM_ABOVE_S", 120.0)
    estimates.SESSIONS.get(None).values.clear()


def test_a_pace_is_read_from_two_events_by_hand():
    # step 0 at 1.5 s, step 4 at 9.5 s: 2 s a step, and 1.5 s before the first
    pace = Pace.between(Event(step=0, elapsed=1.5), Event(step=4, elapsed=9.5))
    assert pace == Pace(setup=1.5, per_step=2.0)
    # a first event at step 1 holds its own step too: 3.0 s at step 1, 5.5 s at step 2 -> 2.5 s a step, 0.5 s setup
    assert Pace.between(Event(step=1, elapsed=3.0), Event(step=2, elapsed=5.5)) == Pace(setup=0.5, per_step=2.5)
    assert Pace(setup=1.5, per_step=2.0).seconds(100) == 201.5


def press(steps: int = 100, form: dict | None = None) -> Paced:
    return Paced(None, "search", form or {"iterations": steps}, ("model",), steps, f"{steps} iterations")


def test_the_first_long_job_stops_after_its_first_steps_then_starts_on_the_second_press():
    first = press()
    assert first.refusal() is None  # nothing measured yet: it starts
    assert first.observe(Event(step=0, elapsed=1.0)) is None
    assert first.observe(Event(step=1, elapsed=4.0)) is None  # one step is too few to judge by
    # the faster of its two steps (3 s, then 2 s): 1 s setup + 100 x 2 s = 201 s, above 120 s
    message = first.observe(Event(step=2, elapsed=6.0))
    assert message == (
        "**100 iterations: about 3 min on this machine** (from its first steps just now). "
        "Press the button again to start, or make the job smaller."
    )

    second = press()  # the same form again: priced up front by the pace, and it goes on to the end
    assert second.refusal() is None
    for step, elapsed in ((0, 1.0), (1, 3.0), (2, 5.0), (3, 7.0)):
        assert second.observe(Event(step=step, elapsed=elapsed)) is None
    assert second.time_left(Event(step=3, elapsed=7.0)) == ", about 3 min left"  # 97 steps x 2 s
    # after the last step comes what is not priced (saving, merging an adapter): SFT said "about 0 s left" for 30 s
    assert second.time_left(Event(step=100, elapsed=201.0)) == ", finishing…"

    third = press()  # a later press of the same long job is priced before it starts
    assert third.refusal().startswith(
        "**100 iterations: about 3 min on this machine** (from the paces measured so far)"
    )


@pytest.mark.parametrize("public", [True, False])
def test_on_a_public_space_an_estimate_above_its_job_limit_says_the_job_will_be_stopped(monkeypatch, public):
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1" if public else "0")
    first = press()
    for step, elapsed in ((0, 1.0), (1, 16.0)):
        assert first.observe(Event(step=step, elapsed=elapsed)) is None
    message = first.observe(Event(step=2, elapsed=31.0))  # 1 s + 100 x 15 s = 25 min, above the 20 min limit
    limit = " This Space stops a job after 20 min; what has finished by then is kept." if public else ""
    assert message == (
        f"**100 iterations: about 25 min on this machine** (from its first steps just now).{limit} "
        "Press the button again to start, or make the job smaller."
    )


def test_a_short_job_never_asks_and_a_changed_form_asks_again():
    short = press(steps=10)
    short.refusal()
    short.observe(Event(step=0, elapsed=1.0))
    short.observe(Event(step=1, elapsed=3.0))
    assert short.observe(Event(step=2, elapsed=5.0)) is None  # 21 s
    assert press(steps=10).refusal() is None
    long = press(steps=100)
    assert long.refusal().startswith("**100 iterations: about 3 min")  # the pace of the short one prices it
    assert press(steps=100, form={"iterations": 100, "seed": 2}).refusal() is not None  # not the form shown


def test_extra_work_is_priced_from_the_pace_and_alone_when_nothing_was_measured():
    sampling = Paced(None, "reward", {}, ("model",), 10, "500 samples and 10 steps", extra=lambda pace: 300.0)
    assert sampling.refusal().startswith("**500 samples and 10 steps: about 5 min")  # the sampling alone is long
    confirmed = Paced(None, "reward", {}, ("model",), 10, "500 samples and 10 steps", extra=lambda pace: 300.0)
    assert confirmed.refusal() is None
    confirmed.observe(Event(step=1, elapsed=0.2))
    confirmed.observe(Event(step=2, elapsed=0.3))
    assert confirmed.observe(Event(step=3, elapsed=0.4)) is None  # confirmed: its steps never stop it


def test_one_slow_first_step_asks_for_no_second_press_a_short_job_does_not_need():
    warm_up = press(steps=10)
    warm_up.refusal()
    warm_up.observe(Event(step=1, elapsed=1.0))
    warm_up.observe(Event(step=2, elapsed=31.0))  # 30 s: a warm-up or a busy moment
    assert warm_up.observe(Event(step=3, elapsed=32.0)) is None  # by its faster step: about 10 s in all


def test_settings_that_do_not_change_a_steps_cost_share_its_pace():
    assert cost_key(PPOConfig(learning_rate=1e-4, beta=0.1, seed=3)) == cost_key(PPOConfig())
    assert cost_key(PPOConfig(batch_size=32)) != cost_key(PPOConfig())
    assert cost_key(AutoPromptConfig(iterations=5)) == cost_key(AutoPromptConfig(iterations=50))
    assert cost_key(AutoPromptConfig(candidates=5)) != cost_key(AutoPromptConfig())


def test_the_measurement_before_an_estimate_is_said_once(tiny_causal, tiny_task, monkeypatch):
    """The first press of a grid waited behind a bare timer while a step and a text were measured, then behind one
    line (110 s on a busy CPU): each part is said as it starts."""
    monkeypatch.setattr(estimates, "_COSTS", {})
    said = []

    def progress(fraction, desc=None):
        said.append((fraction, desc))

    verbalizer = {name: [name] for name in tiny_task.label_names}
    for _ in range(2):  # the second press reads the first one's measurement
        estimates.measured_costs(tiny_causal, tiny_task, "{text} It was{mask}.", verbalizer, progress)
    # no bar (None): a 0.0 % that stood a minute read as stuck; and why LoRA, when a visitor picked prompt tuning
    prefix = (
        "measuring this machine's speed once, to estimate the time (a LoRA step is the yardstick every method is "
        "priced from): "
    )
    assert said == [
        (None, f"{prefix}scoring 8 test texts"),
        (None, f"{prefix}4 LoRA training steps, then their model scoring 8 texts"),
    ]


def test_two_uploads_of_one_file_name_are_measured_apart(tiny_causal, tmp_path, monkeypatch):
    """Found by a review of many visitors at once: costs were kept by task name, and an upload's name is its file's,
    so a second visitor's different 'data.csv' was priced by the first one's texts."""
    from peftlab.tasks import load_task

    monkeypatch.setattr(estimates, "_COSTS", {})
    measured = []

    def measuring(scoring_lm, lm, task, template, verbalizer, training):
        measured.append(task.name)
        yield "scoring"
        yield MeasuredCosts(*[len(task.test[0]["text"]) / 100] * 6)  # as a longer text costs more

    monkeypatch.setattr(estimates, "measuring", measuring)
    tasks = []
    for folder, word in (("a", "short"), ("b", "a much longer review " * 20)):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "data.csv"
        path.write_text("text,label\n" + "".join(f"{word} {i},{'pos' if i % 2 else 'neg'}\n" for i in range(20)))
        tasks.append(load_task(str(path)))
    verbalizer = {"neg": ["bad"], "pos": ["good"]}
    costs = [
        estimates.measured_costs(tiny_causal, t, "{text} It was{mask}.", verbalizer, lambda *a, **k: None)
        for t in tasks * 2
    ]
    assert len(measured) == 2 and costs[0] != costs[1] and costs[:2] == costs[2:]


def test_on_a_gpu_the_measurement_warms_up_first_and_still_times_fresh_scoring(tiny_causal, tiny_task, monkeypatch):
    """Timed cold, a GPU's first calls (kernels loaded, library handles made) priced rt-sentiment's standard
    comparison at 37 minutes on an H200, where it ran in 3.5: there the models warm up untimed first."""
    from peftlab import standard

    monkeypatch.setattr(standard, "on_cuda", lambda lm: True)  # the tiny model stands in for one on a GPU
    verbalizer = {name: [name] for name in tiny_task.label_names}
    parts = list(standard.measuring(tiny_causal, tiny_causal, tiny_task, "{text} It was{mask}.", verbalizer))
    assert parts[:2] == ["warming the GPU up", "scoring 8 test texts"]
    costs = parts[-1]
    assert (
        costs.per_text > 0
        and costs.per_step > 0
        and costs.per_trained_text > 0
        and costs.per_run >= 0
        and costs.padding >= 1
    )
    monkeypatch.setattr(standard, "on_cuda", lambda lm: False)
    cpu_parts = standard.measuring(tiny_causal, tiny_causal, tiny_task, "{text} It was{mask}.", verbalizer)
    assert next(cpu_parts) == "scoring 8 test texts"


def test_a_measured_step_leaves_out_the_runs_setup_and_its_evaluation(tiny_causal, tiny_task, monkeypatch):
    """3 steps timed whole carried the adapter's build, a dev evaluation and a test text: one possible cause of the
    estimate pricing an H200's training at about 3 times its time. Here the build takes 1 s more and each evaluation
    3 s more, and only the run's setup grows by the build; a tiny model's step takes milliseconds, up to 0.85 s on a
    CPU that another process keeps busy (0.5 s and 1.5 s failed there). The setup is the wait for step 1 less the mean
    step of steps 1 to 3, so a first step quicker than the two after it (the machine freed between them) leaves it a
    little under the build's 1 s: 0.905 s in a full suite beside a benchmark; without the build it is about 0."""
    from peftlab import standard
    from peftlab.methods import LoraMethod
    from peftlab.tuning import TrainedMethod

    build, evaluate = LoraMethod.build, TrainedMethod.evaluate
    monkeypatch.setattr(LoraMethod, "build", lambda *args: time.sleep(1.0) or build(*args))
    monkeypatch.setattr(TrainedMethod, "evaluate", lambda *args: time.sleep(3.0) or evaluate(*args))
    verbalizer = {name: [name] for name in tiny_task.label_names}
    costs = standard.measure(tiny_causal, tiny_causal, tiny_task, "{text} It was{mask}.", verbalizer)
    assert costs.per_step < 1.5  # timed whole, 3 steps priced one at over (1 + 3 + 3) / 3 s
    assert 0.6 <= costs.per_run < 3.0


@pytest.mark.parametrize(("counts", "dev", "shots"), [((20, 20), False, 4), ((5, 5), False, 2), ((9, 1), True, 1)])
def test_the_measured_run_has_full_batches_where_the_classes_allow(counts, dev, shots):
    """K=2 of a 2-class task gave the measured steps 4 examples each, priced as the comparison's batches of 8."""
    from peftlab import standard

    rows = [{"text": f"text {i}", "label": label} for label, n in enumerate(counts) for i in range(n)]
    task = Task("t", ["a", "b"], ["text"], train=rows, test=rows[:2], dev=rows[:2] if dev else [])
    assert standard._measured_shots(task, batch_size=8) == shots


def test_the_measured_cost_of_a_text_is_scaled_to_the_texts_a_run_scores(tiny_causal, tiny_task):
    """The 16 measured texts go in one batch padded to its longest; a run's length-sorted batches pad little. Unscaled,
    rt-sentiment's zero-shot was priced at 30 s where it took 13."""
    from peftlab import standard
    from peftlab.cloze import ClozeSetup

    prompt = ClozeSetup.build(tiny_task, "{text} It was{mask}.", {"negative": ["bad"], "positive": ["good"]})
    short = [{"text": "a good film", "label": 1}, {"text": "a bad film", "label": 0}]
    long = {"text": " ".join(["a very good film with a fun plot"] * 4), "label": 1}
    sorted_run = standard._tokens_per_text(tiny_causal, prompt.prompts[0], short)
    assert standard._padding(tiny_causal, prompt.prompts[0], short) / sorted_run == 1.0
    assert standard._padding(tiny_causal, prompt.prompts[0], [*short, long]) / sorted_run > 2


def test_a_measurement_without_training_is_taken_again_for_a_job_that_trains(tiny_causal, tiny_task, monkeypatch):
    """Zero-shot alone is priced without timing a training run (`standard.measuring(training=False)`); a later job
    that trains needs the run timed, and a measurement with it serves both."""
    monkeypatch.setattr(estimates, "_COSTS", {})
    asked = []

    def measuring(scoring_lm, lm, task, template, verbalizer, training):
        asked.append(training)
        yield MeasuredCosts(0.01, 1.0 if training else float("nan"), 0.02, 1.5, 0.5, 40)

    monkeypatch.setattr(estimates, "measuring", measuring)
    verbalizer = {"negative": ["bad"], "positive": ["good"]}

    def costs(training: bool) -> MeasuredCosts:
        return estimates.measured_costs(
            tiny_causal, tiny_task, "{text} It was{mask}.", verbalizer, print, None, training
        )

    assert costs(False).per_step != costs(False).per_step and asked == [False]  # NaN, measured once
    assert costs(True).per_step == 1.0 and costs(False).per_step == 1.0 and asked == [False, True]
