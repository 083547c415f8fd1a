"""The app's inputs come from the config fields: same defaults, ranges, choices and caps; values go back alike."""

from __future__ import annotations

import re

import pytest

from peftlab.compare import GridConfig
from peftlab.errors import PeftlabError
from peftlab.tuning import TrainSettings
from peftlab.ui.inputs import CREATED, config_from_form, config_input, is_bounded, out_of_range

# the reward model's form as the RLHF tab sends it, with the simulated labeler
REWARD_FORM = dict(source="simulated", comparisons=None, labeler="vader-positive", k=3, rm_pairs=10, rm_lora_r=0)
REWARD_FORM |= dict(rm_steps=3, seed=0)


def test_every_config_input_of_the_app_shows_its_fields_default():
    import gradio as gr

    from peftlab.ui import build_app

    CREATED.clear()
    build_app()
    assert len(CREATED) >= 40  # every tab builds its settings from the configs
    for cls, name, component in CREATED:
        default = getattr(cls(), name)
        expected = (
            (list(default) if isinstance(component, gr.CheckboxGroup) else ",".join(map(str, default)))
            if isinstance(default, tuple)
            else default
        )
        if isinstance(component, gr.Textbox) and not isinstance(default, (str, tuple)):
            expected = str(default)  # a number typed as text (a sweep's K)
        assert component.value == expected, (cls.__name__, name, component.value, expected)


def test_a_number_setting_that_defaults_to_none_gets_no_number_box():
    """gradio draws a number box whose value is None as 0 and sends 0 back: the PET tab's untouched "iPET
    generations" (then None, minimum 1) made Run PET fail on its defaults. Such a setting is refused when built."""
    import gradio as gr

    from peftlab.backends import BackendConfig

    assert BackendConfig().workers is None
    with (
        gr.Blocks(),
        pytest.raises(TypeError, match=r"^BackendConfig\.workers defaults to None, which a gradio"),
    ):
        config_input(BackendConfig, "workers")


def test_on_a_public_space_every_capped_input_starts_within_its_cap(monkeypatch):
    """The reward model's 150 default steps and DPO's 60 are above the public caps (60 steps, 40 PPO/DPO steps):
    there the inputs start at the cap, so pressing a button on the defaults runs instead of failing."""
    import gradio as gr

    from peftlab.rlhf.dpo import DPOConfig
    from peftlab.rlhf.reward import RewardConfig
    from peftlab.ui import build_app

    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    CREATED.clear()
    build_app()
    numbers = [(cls, name, c) for cls, name, c in CREATED if isinstance(c, gr.Number) and c.maximum is not None]
    assert numbers and all(c.value <= c.maximum for _, _, c in numbers), [
        (cls.__name__, name, c.value, c.maximum) for cls, name, c in numbers if c.value > c.maximum
    ]
    values = {(cls, name): c.value for cls, name, c in numbers}
    assert values[(RewardConfig, "steps")] == 60 and values[(DPOConfig, "steps")] == 40


def test_every_upload_of_a_public_space_says_its_size_limit(monkeypatch):
    """The Soft prompts tab's 'Load a saved method (zip)' did not: a zip over 5 MB (a full fine-tune's, about 540 MB)
    was refused there without the page having said why."""
    import gradio as gr

    from peftlab.ui import build_app

    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    files = [block for block in build_app().blocks.values() if isinstance(block, gr.File | gr.UploadButton)]
    uploads = [file for file in files if file.file_types]  # the others are downloads
    assert len(uploads) >= 8 and all("(at most 5 MB)" in (u.label or "") for u in uploads), [u.label for u in uploads]


def test_inputs_carry_the_fields_range_choices_and_help(monkeypatch):
    import gradio as gr

    with gr.Blocks():
        steps = config_input(TrainSettings, "steps")
        select_by = config_input(TrainSettings, "select_by")
        monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
        capped = config_input(TrainSettings, "steps")
    assert steps.minimum == 1 and steps.maximum is None and steps.precision == 0 and steps.label == "Steps"
    assert steps.info == "optimiser steps"
    assert [c[0] for c in select_by.choices] == ["log-likelihood", "accuracy"]
    assert capped.maximum == 60 and capped.info == "optimiser steps; at most 60 on this public Space"
    # Out of range, the input names itself as the library's messages do.
    assert isinstance(steps, gr.Number) and steps.preprocess(7) == 7
    with pytest.raises(gr.Error, match=r"Steps must be at least 1, not 0\."):
        steps.preprocess(0)
    with pytest.raises(gr.Error, match=r"Steps must be at most 60, not 61\."):
        capped.preprocess(61)
    with pytest.raises(gr.Error, match=r"Steps must be at most 60, not 99999999\."):  # it said 1e+08
        capped.preprocess(99999999.0)
    assert steps.preprocess(30.0) == 30  # a whole number typed as 30.0 is fine; 2.5 was silently rounded to 2
    with pytest.raises(gr.Error, match=r"Steps must be a whole number, not 2\.5\."):
        steps.preprocess(2.5)
    # the same sentences for a value as the browser sent it, which a press's status line repeats (`heavy_job`)
    assert is_bounded(steps) and not is_bounded(select_by)
    assert out_of_range(steps, 0) == "Steps must be at least 1, not 0."
    assert out_of_range(capped, 61) == "Steps must be at most 60, not 61."
    assert [out_of_range(steps, v) for v in (7, 30.0, None, "7")] == [None] * 4


def test_a_stages_inputs_say_whose_setting_they_are():
    """The RLHF tab has four "steps" (SFT, reward model, PPO, DPO): each input and its messages name its stage, as
    the library's own messages do; a method's settings, whose subject names the method, keep their label."""
    import gradio as gr

    from peftlab.methods import LoraMethod
    from peftlab.rlhf.dpo import DPOConfig
    from peftlab.rlhf.ppo import PPOConfig
    from peftlab.rlhf.reward import RewardConfig
    from peftlab.rlhf.sft import SFTConfig

    with gr.Blocks():
        labels = [config_input(cls, "steps").label for cls in (SFTConfig, RewardConfig, PPOConfig, DPOConfig)]
        beta = config_input(DPOConfig, "beta")
        rank = config_input(LoraMethod, "r")
    assert labels == ["SFT steps", "Reward model steps", "PPO steps", "DPO steps"]
    assert beta.label == "DPO β" and rank.label == "R"
    with pytest.raises(gr.Error, match=r"SFT steps must be at least 1, not 0\."):
        config_input(SFTConfig, "steps").preprocess(0)
    with pytest.raises(PeftlabError, match=r"^Reward model LoRA rank must be 0 \(head only\) or more, not -1\.$"):
        config_from_form(RewardConfig, {"lora_r": -1})


def test_form_values_become_a_config_and_bad_ones_name_the_input(monkeypatch):
    grid = config_from_form(GridConfig, {"methods": ["lora"], "shots": "8, 16", "seeds": "13", "test_limit": 50.0})
    assert grid == GridConfig(methods=("lora",), shots=(8, 16), seeds=(13,), test_limit=50)
    with pytest.raises(PeftlabError, match=r"^Seeds must be comma-separated whole numbers, not 'a,b'\.$"):
        config_from_form(GridConfig, {"seeds": "a,b"})
    with pytest.raises(PeftlabError, match=r"^Test texts must be at least 1, not 0\.$"):
        config_from_form(GridConfig, {"test_limit": 0})
    with pytest.raises(
        PeftlabError,
        match=r"^Keep the weights with the best dev must be one of log-likelihood, "
        r"accuracy, not 'loss'\.$",
    ):
        config_from_form(TrainSettings, {"select_by": "loss"})
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    with pytest.raises(PeftlabError, match=r"^K per class is 64, above this public Space's limit of 32"):
        config_from_form(GridConfig, {"shots": "16,64"})


def test_readable_tables_show_fractions_in_percent_and_round_the_rest():
    import pandas as pd

    from peftlab.ui.display import readable

    frame = pd.DataFrame(
        {
            "method": ["lora", "zero-shot"],
            "test_accuracy": [0.8512, float("nan")],
            "trainable_share": [0.00008564, 0.0],  # LoRA's share, and LoRA's 0.343 % as Compare writes it below
            "dev acc": [0.5, 1.0],
            "macro_f1": [0.84444444, 0.7],
            "trainable_params": [116736, 0],
            "seed": [12345, 13],
            "steps": [30, 3],
            "accurate_words": [1.23456, 2.0],  # "accurate" is not one of the fraction words
            "learning_rate": [0.0003, 12345.6],
        }
    )
    shown = readable(frame)
    assert shown.to_dict("list") == {  # the library's column names as the app's headers (they were snake_case)
        "method": ["lora", "zero-shot"],
        "test accuracy": ["85.1%", ""],
        "trainable share": ["0.00856%", "0%"],
        "dev acc": ["50.0%", "100.0%"],
        "macro-F1": ["0.844", "0.700"],
        "trainable parameters": ["116,736", "0"],  # it showed 116736 beside a peak memory of 3,846 MB
        "seed": [12345, 13],
        "steps": [30, 3],
        "accurate_words": ["1.235", "2"],
        "learning_rate": ["0.0003", "12,345.6"],
    }
    assert frame["test_accuracy"].iloc[0] == 0.8512  # the caller's frame (and its downloads) keep full precision
    # a share reads the same in every table: Soft prompts said "0.3%" beside Compare's "0.343%" for one LoRA run
    assert readable(pd.DataFrame({"trainable_share": [0.00343]}))["trainable share"].tolist() == ["0.343%"]
    # Stored results list K and parameters as nullable whole numbers: a store of zero-shot rows alone (K empty in
    # every row) made the Compare tab's listing fail with a bare "Error" (pandas: "boolean value of NA is ambiguous").
    stored = pd.DataFrame(
        {
            "k": pd.array([None, None], dtype="Int64"),
            "trainable_params": pd.array([None, 460800], dtype="Int64"),
        }
    )
    shown = readable(stored)
    assert shown["k"].isna().all() and shown["trainable parameters"].tolist() == ["", "460,800"]
    # one seed's run has no standard deviation: "0.0%" read as a method that never varies
    summary = pd.DataFrame({"accuracy_std": [0.0, 0.02], "runs": [1, 3]})
    assert readable(summary)["accuracy (std)"].tolist() == ["", "2.0%"]
    # truth values read "yes" and "no" (the browser showed AutoPrompt's "accepted" as "true" and "false")
    history = pd.DataFrame({"accepted": [None, True, False], "correct": [True, False, True]})
    assert readable(history).to_dict("list") == {"accepted": ["", "yes", "no"], "correct": ["yes", "no", "yes"]}


def test_a_shown_table_fits_each_header_word_and_wraps_long_text():
    import pandas as pd

    from peftlab.ui.display import CELL_PX, CHAR_PX, column_widths

    # a long method name beside short numbers: left to gradio, "accuracy" broke as "accura / cy"
    frame = pd.DataFrame(
        {
            "method": ['autoprompt (iterations 20, template "{text} [T] [T] [T] [T] [T] [T] [T] {mask}")', "lora"],
            "K": [16, 16],
            "accuracy": ["55.0%", "91.7% ± 2.1%"],
            "seconds (training + scoring)": ["4.6", "78"],
        }
    )
    chars = [32, 2, 12, len("(training")]  # wrapped; the longest cell (twice); the header's longest word
    assert column_widths(frame, wrap_at=32) == [f"{round(n * CHAR_PX) + CELL_PX}px" for n in chars]
    assert column_widths(pd.DataFrame(columns=["method", "K"])) == [f"{round(n * CHAR_PX) + CELL_PX}px" for n in (6, 1)]


def test_a_slider_typed_out_of_range_names_itself():
    import gradio as gr

    from peftlab.cloze import ClozeConfig

    with gr.Blocks():
        slider = config_input(ClozeConfig, "shots_in_context", gr.Slider, maximum=16, step=1)
    assert slider.preprocess(4) == 4
    with pytest.raises(gr.Error) as error:
        slider.preprocess(17)
    assert error.value.message == "Demonstrations in context must be at most 16, not 17."


def test_an_emptied_number_box_is_called_empty_not_none():
    """A cleared box sends None: "Steps must be a whole number, not None." spoke Python to the visitor."""
    with pytest.raises(PeftlabError, match=r"^Steps is empty; it must be at least 1\.$"):
        config_from_form(TrainSettings, {"steps": None})
    assert config_from_form(GridConfig, {"test_limit": None}).test_limit is None  # None is a value it takes


def test_every_verbalizer_box_takes_the_words_of_a_newly_picked_task():
    """The Soft prompts and AutoPrompt tabs kept the movie-review verbalizer after bbc-topic was picked, and their
    buttons then said the task has no label 'negative'. Every tab's verbalizer box is now filled on a task pick."""
    import gradio as gr

    from peftlab.ui import build_app

    app = build_app()
    tasks = {block._id for block in app.blocks.values() if isinstance(block, gr.Dropdown) and block.label == "Task"}
    boxes = {
        block._id for block in app.blocks.values() if isinstance(block, gr.Textbox) and block.label == "Verbalizer"
    }
    filled = {
        output._id
        for function in app.fns.values()
        if any(target[0] in tasks and target[1] == "input" for target in function.targets)
        for output in function.outputs
    }
    assert len(tasks) >= 5 and len(boxes) >= 4
    assert boxes <= filled, sorted(boxes - filled)


def test_no_table_of_the_app_shows_gradios_placeholder_headers():
    """Tables with no value showed gradio's placeholder headers "1 2 3" before their first result (PET, AutoPrompt,
    Soft prompts, Compare, RLHF and the Cloze tab's top tokens). Each now shows the columns its result will have."""
    import gradio as gr

    from peftlab.ui import build_app

    placeholder = gr.Dataframe().value["headers"]
    tables = [block for block in build_app().blocks.values() if isinstance(block, gr.Dataframe)]
    assert len(tables) >= 15
    shown = [table for table in tables if table.visible]  # the other test splits' table appears only when filled
    assert [table.label for table in shown if table.value["headers"] == placeholder] == []
    pet_table = next(table for table in tables if table.label == "Test accuracy per seed")
    assert pet_table.value["headers"] == ["seed", "pattern 1", "pattern 2", "pattern 3", "pattern 4", "ensemble", "PET"]


def test_no_emptying_clears_a_status_line_together_with_other_outputs():
    """An event with a status line among its outputs shows its progress and badges on the line alone
    (`spare_outputs_from_badges`): emptied together with the panel's status line, a trained method's chart kept the
    "Error" badge of a classify refused before any training. Each emptying now empties status lines or the other
    outputs, never both."""
    from peftlab.ui import build_app
    from peftlab.ui.presses import is_status_line

    # the emptyings of a new task or method (`forget_on`); a failed press's (`answer`) shows its progress on the
    # button pressed, and the failed event's badge stays where it was
    emptyings = [
        function
        for function in build_app().fns.values()
        if getattr(function.fn, "__name__", None) == "emptied" and (None, "failure") not in function.targets
    ]
    kinds = [{is_status_line(output) for output in function.outputs} for function in emptyings]
    assert len(emptyings) >= 15 and {True} in kinds and {False} in kinds
    assert [kind for kind in kinds if len(kind) > 1] == []


def test_opening_the_stored_results_shows_them_as_they_are_now():
    """The list of stored results kept what it showed at the last press of List, new results missing."""
    import gradio as gr

    from peftlab.ui import build_app

    app = build_app()
    (accordion,) = [b for b in app.blocks.values() if isinstance(b, gr.Accordion) and b.label.startswith("Stored res")]
    (listing,) = [b for b in app.blocks.values() if isinstance(b, gr.Dataframe) and b.label == "Stored results"]
    on_open = [f for f in app.fns.values() if (accordion._id, "expand") in [tuple(t) for t in f.targets]]
    assert [[o._id for o in f.outputs] for f in on_open] == [[listing._id]]


def _event(app, api_name: str):
    return next(fn for fn in app.fns.values() if fn.api_name == api_name)


def test_a_press_is_checked_before_it_waits_in_the_queue_and_stop_reaches_it_there(monkeypatch):
    """A visitor behind a 6-minute job typed K 0 into PET and heard of it after the wait; pressing Stop meanwhile
    said "Nothing to stop: PET is not running." and the job ran 4 minutes later. A press of a heavy job's button now
    first runs an instant look at it (`heavy_job`) that refuses the input the job would, and notes the job as
    queued, so Stop keeps it from starting. The job itself is the next step of the press (API clients call it alone).
    """
    import gradio as gr

    from peftlab.ui import build_app
    from peftlab.ui.presses import stop_handler
    from peftlab.ui.sessions import SESSIONS
    from tests.test_app import PET_FORM

    class Request:
        session_hash = "queued-visitor"

    app = build_app()
    look, run = _event(app, "pet_check").fn, _event(app, "pet").fn
    with pytest.raises(gr.Error) as refused:
        look(Request(), **PET_FORM | {"shots": 0})
    assert refused.value.message == "K per class must be at least 1, not 0."
    with pytest.raises(gr.Error) as refused:
        look(Request(), **PET_FORM | {"patterns": "Review: {text}\nSentiment:{mask}"})
    assert refused.value.message.startswith("PET needs at least two patterns")
    with pytest.raises(gr.Error) as refused:  # it was refused after a 15-minute estimate and the second press
        look(Request(), **PET_FORM | {"unlabelled": 100_000})
    assert re.fullmatch(
        r"The training pool of 'rt-sentiment' has \d+ texts besides the labelled examples, fewer than the 100000 "
        r"unlabelled texts asked; ask for at most \d+\.",
        refused.value.message,
    )

    # the button is off until the job ends, and the status line is the new press's (the last one's refusal stood under
    # "queue: 1/1")
    assert look(Request(), **PET_FORM) == ("", gr.update(interactive=False))
    stop = stop_handler("pet", "PET")
    assert stop(Request()) == "PET will not start: it was waiting in the queue behind other jobs."
    # its turn comes: it ends at once and leaves the tab's outputs as they are (an error read as a failure)
    assert list(run(Request(), **PET_FORM)) == [[gr.skip()] * 5]
    told = []
    monkeypatch.setattr(gr, "Info", told.append)
    assert stop(Request()) == gr.skip()  # the stopped press is gone; the status line keeps what it says
    assert told == ["Nothing to stop: PET is not running."]
    SESSIONS.close(Request.session_hash)


def test_time_left_starts_from_the_estimate_and_moves_to_the_measured_pace():
    """Soft prompts said "0/9 runs finished, about 18 min left (estimated 6 min in all)": the first run's loading and
    warm-up, extrapolated. Early on the estimate leads; the measured pace takes over as the job goes."""
    import time

    from peftlab.ui.display import time_left

    # 10 % done in 120 s of a 6-minute estimate: 0.9 x 324 s (estimate) + 0.1 x 1080 s (pace) = 399.6 s
    assert time_left(time.perf_counter() - 120, 0.1, 360) == ", about 7 min left"
    # 90 % done in 540 s: 0.1 x 36 s + 0.9 x 60 s = 57.6 s
    assert time_left(time.perf_counter() - 540, 0.9, 360) == ", about 58 s left"
    assert time_left(time.perf_counter(), 0.0, 360) == ""


def test_durations_are_said_in_the_unit_people_think_in():
    """99,999,999 SFT steps were estimated at "about 539270.7 h"."""
    from peftlab.config import duration

    assert [duration(s) for s in (45, 720, 9000, 47 * 3600)] == ["45 s", "12 min", "2.5 h", "47.0 h"]
    assert duration(3.2 * 86400) == "3.2 days" and duration(539270.7 * 3600) == "62 years"


def test_a_finished_job_says_how_long_it_took_beside_its_estimate():
    """A grid's last line kept "9/9 runs finished (estimated 6 min in all)." once it had finished: the time it took
    was nowhere on the page."""
    import time

    from peftlab.ui.display import took

    assert took(time.perf_counter() - 400, 360) == " in 7 min (estimated 6 min)"
    assert took(time.perf_counter() - 30, 5400) == " in 30 s (estimated 1.5 h)"


def test_a_cloze_evaluation_stops_at_the_job_time_limit(tiny_causal_folder, easy_csv, monkeypatch):
    """The Cloze tab's evaluation never read its stop flag: it had no Stop button and ran past a public Space's
    20-minute limit per job. It now stops between batches, and says so instead of an accuracy on part of the texts.
    """
    import dataclasses

    from peftlab.serving import LOCAL_CAPS
    from peftlab.ui import sessions
    from peftlab.ui.cloze_tab import run_evaluation
    from peftlab.ui.common import load_model
    from tests.test_zerogpu import cloze_form

    monkeypatch.setattr(sessions, "current_caps", lambda: dataclasses.replace(LOCAL_CAPS, job_minutes=1e-9))
    # scores an earlier test memoized (`cloze._scores`) would come back at once, with no batch to read the flag after
    load_model(tiny_causal_folder).derived.clear()
    summary, confusion, errors, predictions = run_evaluation(None, **cloze_form(tiny_causal_folder, easy_csv))
    assert summary == (
        # the flag is read after each batch: the first holds 4 of the 6 texts (batch_size 4)
        "Stopped because it reached this Space's limit of 1e-09 minutes per job. The evaluation was 67% through its "
        "6 test texts; an accuracy needs them all, so nothing was kept."
    )
    assert (confusion, errors, predictions) == (None, None, None)


def test_the_trained_method_picker_shows_the_method_trained_last_with_its_k_and_seed():
    """After a PET run and then a grid of prompt tuning, the grid's picker showed "pet classifier (seed 13)": it took
    the session's first trained method, and a retrained one kept its old place. And of a grid over three seeds it
    showed "prompt-tuning" without saying which run it kept."""
    from peftlab.ui.sessions import SESSIONS
    from peftlab.ui.soft_prompts_tab import keep_trained, method_choices, trained_methods

    class Request:
        session_hash = "picker-visitor"

    keep_trained(SESSIONS.get(Request()), "prompt-tuning", "first run", "K 16, seed 13")
    keep_trained(SESSIONS.get(Request()), "pet classifier (seed 13)", "PET's classifier")
    keep_trained(SESSIONS.get(Request()), "prompt-tuning", "second run", "K 16, seed 42")
    assert trained_methods(Request()) == {"pet classifier (seed 13)": "PET's classifier", "prompt-tuning": "second run"}
    picker = method_choices(Request())
    assert picker.value == "prompt-tuning"  # what "classify" and "download" get: the method's name
    assert picker.choices == [
        ("pet classifier (seed 13)", "pet classifier (seed 13)"),
        ("prompt-tuning (K 16, seed 42)", "prompt-tuning"),
    ]
    SESSIONS.close(Request.session_hash)


def test_classify_and_download_with_nothing_picked_say_so():
    """The PET tab's picker stays empty while the Soft prompts tab trains: its Classify said "None has not been
    trained in this session; pick one of prompt-tuning, lora", and its Download said to train a method first."""
    import gradio as gr

    from peftlab.ui.sessions import SESSIONS
    from peftlab.ui.soft_prompts_tab import classify_with, download_trained, keep_trained

    class Request:
        session_hash = "nothing-picked-visitor"

    with pytest.raises(gr.Error) as raised:
        classify_with(None, "a text", Request())
    assert raised.value.message == (
        "Nothing is trained yet: train one in this tab first, or load one with 'Load a saved method (zip)' (Soft "
        "prompts tab)."
    )
    keep_trained(SESSIONS.get(Request()), "lora", "a trained lora")
    for press, purpose in (
        (lambda m: classify_with(m, "a text", Request()), "classify with"),
        (lambda m: download_trained(m, Request()), "download"),
    ):
        with pytest.raises(gr.Error) as raised:
            press(None)
        assert raised.value.message == (
            f"Nothing is picked to {purpose}: train one in this tab, or load one with 'Load a saved method (zip)' "
            "(Soft prompts tab), then pick it in the list."
        )
        with pytest.raises(gr.Error) as raised:
            press("head")
        assert raised.value.message == "head has not been trained in this session; pick one of lora."
    SESSIONS.close(Request.session_hash)


def test_an_rlhf_stage_pressed_too_early_or_with_an_emptied_box_is_refused_before_the_queue():
    """The reward model, PPO, DPO and the evaluation pressed before SFT waited behind every other visitor's job to
    say "Run step 1 (SFT) first."; an emptied seed or prompts box failed as int(None), a bare "Error". Each stage's
    press is now looked at at once (`heavy_job`'s checks with the visitor's session), and every box is one sentence.
    """
    import gradio as gr

    from peftlab.models import DEFAULT_MODEL
    from peftlab.ui import build_app
    from peftlab.ui.rlhf_stages import sample_for_ranking
    from peftlab.ui.sessions import SESSIONS

    class Request:
        session_hash = "early-rlhf-visitor"

    def refusal(fn, *args, **form) -> str:
        with pytest.raises(gr.Error) as refused:
            fn(*args, **form)
        return refused.value.message

    app = build_app()
    evaluation = dict(labeler_name="vader-positive", prompts=3, seed=0)
    for api_name, form in [
        ("rlhf_reward", REWARD_FORM),
        ("rlhf_ppo", dict(seed=0)),
        ("rlhf_dpo", dict(seed=0)),
        ("rlhf_evaluate", evaluation),
    ]:
        assert refusal(_event(app, f"{api_name}_check").fn, Request(), **form) == "Run step 1 (SFT) first."
    evaluation["prompts"] = None
    assert refusal(_event(app, "rlhf_evaluate_check").fn, Request(), **evaluation) == (
        "Held-out prompts is empty; it must be at least 1."
    )
    sft = dict(model=DEFAULT_MODEL, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=5, seed=None)
    empty_seed = "Seed is empty; it must be a whole number from 0 to 4294967295."
    assert refusal(_event(app, "rlhf_sft_check").fn, Request(), **sft, sft_learning_rate=1e-3) == empty_seed
    assert refusal(lambda *args: next(sample_for_ranking(*args)), 3, None, Request()) == empty_seed
    SESSIONS.close(Request.session_hash)


def test_a_press_refused_for_a_job_still_running_leaves_the_last_answer_shown():
    """Cloze's Evaluate pressed while the Start tab's scoring ran was refused ("... is still running"), and the refusal
    emptied the evaluation shown before it: its confusion matrix, errors and predictions file, minutes of work."""
    import inspect

    import gradio as gr

    from peftlab.ui import build_app
    from peftlab.ui.sessions import SESSIONS
    from tests.test_app import settings

    class Request:
        session_hash = "too-early-visitor"

    app = build_app()
    emptying = next(
        fn.fn
        for fn in app.fns.values()
        if getattr(fn.fn, "__name__", "") == "emptied"
        and inspect.getclosurevars(fn.fn).nonlocals.get("spared_when") == "too early:evaluate"
    )
    session = SESSIONS.get(Request())
    session.start_job("cloze", "The Start tab's scoring")
    with pytest.raises(gr.Error) as refused:
        _event(app, "evaluate_check").fn(Request(), **settings() | {"limit": 20})
    assert refused.value.message.startswith("The Start tab's scoring is still running")

    def skipped(value) -> bool:
        return isinstance(value, dict) and value == gr.skip()

    assert all(skipped(value) for value in emptying(Request()))
    # a refusal of the input itself empties them: they do not answer what was pressed
    assert not any(skipped(value) for value in emptying(Request()))
    SESSIONS.close(Request.session_hash)


def test_a_stage_pressed_while_another_of_its_tab_runs_names_the_running_one():
    """The reward model pressed while SFT ran said "Run step 1 (SFT) first." (SFT drops its model as it starts), and
    PPO pressed while DPO ran queued a second job on the same session, sharing DPO's stop flag. A tab's job that runs
    or waits in the queue now refuses its tab's other presses, by its name."""
    import gradio as gr

    from peftlab.ui import build_app
    from peftlab.ui.sessions import SESSIONS

    class Request:
        session_hash = "busy-rlhf-visitor"

    app = build_app()
    session = SESSIONS.get(Request())
    session.queue_job("rlhf", "Step 1 (SFT)")
    session.start_job("rlhf")
    session.leave_queue("rlhf")  # the job started: it runs, no longer waits
    for api_name, form in [("rlhf_reward", REWARD_FORM), ("rlhf_ppo", dict(seed=0)), ("rlhf_dpo", dict(seed=0))]:
        with pytest.raises(gr.Error) as refused:
            _event(app, f"{api_name}_check").fn(Request(), **form)
        assert refused.value.message == "Step 1 (SFT) is still running: press this once it has finished, or stop it."
    assert session.busy("autoprompt") is None  # another tab's jobs go on as before
    SESSIONS.close(Request.session_hash)
    # a job that waits in the queue is named by the press that queued it
    waiting = SESSIONS.get(Request())
    _event(app, "rlhf_sft_check").fn(
        Request(), model="smollm2-135m", demonstrations=None, comparisons=None, sft_method="lora", sft_steps=5,
        sft_learning_rate=1e-3, seed=0,
    )  # fmt: skip
    assert waiting.busy("rlhf") == "Step 1 (SFT)"
    SESSIONS.close(Request.session_hash)


def test_a_template_without_a_mask_is_refused_as_an_evaluation_or_a_search_is_pressed():
    """The looks at Cloze's and AutoPrompt's presses checked the task and the settings, not the template: a template
    without {mask} (or with a field the task lacks) waited behind other visitors' jobs to be refused."""
    import gradio as gr

    from peftlab.ui import build_app
    from tests.test_app import AUTOPROMPT_FORM, settings

    app = build_app()
    with pytest.raises(gr.Error) as refused:
        _event(app, "evaluate_check").fn(None, **settings(templates="Review: {text}") | {"limit": 20})
    assert refused.value.message == "The template must contain exactly one {mask}, but it has no {mask}."
    for template, message in [
        ("{text} [T] [T]", "The template must contain exactly one {mask}, but it has no {mask}."),
        ("[T] {mask} {nope}", "The template uses {nope}, which the task lacks; available: {text}, {movie_name} and "),
    ]:
        with pytest.raises(gr.Error) as refused:
            _event(app, "autoprompt_check").fn(None, **AUTOPROMPT_FORM | {"template": template})
        assert refused.value.message.startswith(message)


def test_two_templates_on_one_line_are_told_how_to_separate_them():
    """ "Review: {text} Sentiment:{mask} --- {text} It was{mask}" was refused as "The template must contain exactly one
    {mask}, but it has 2 {mask} slots.": the --- separates templates only on a line of its own, which nothing said."""
    from peftlab.errors import PeftlabError
    from peftlab.ui.common import split_templates

    with pytest.raises(PeftlabError) as refused:
        split_templates("Review: {text} Sentiment:{mask} --- {text} It was{mask}")
    assert str(refused.value) == (
        "'Review: {text} Sentiment:{mask} --- {text} It was{mask}' reads as one template with 2 {mask} slots; to give "
        "several templates, put --- on a line of its own between them."
    )
    assert split_templates("Review: {text} Sentiment:{mask}\n ---\n{text} It was{mask}") == [
        "Review: {text} Sentiment:{mask}",
        "{text} It was{mask}",
    ]
    assert split_templates("Review --- {text} Sentiment:{mask}") == ["Review --- {text} Sentiment:{mask}"]  # one {mask}
    # written one per line, as PET's patterns often are: the same sentence
    with pytest.raises(PeftlabError) as refused:
        split_templates("{text} It was {mask}.\nJust {mask}! {text}")
    assert str(refused.value) == (
        "'{text} It was {mask}. / Just {mask}! {text}' reads as one template with 2 {mask} slots; to give several "
        "templates, put --- on a line of its own between them."
    )
    assert split_templates("Review: {text}\nSentiment:{mask}") == ["Review: {text}\nSentiment:{mask}"]  # two lines


def test_comparisons_uploaded_after_sft_are_told_to_run_sft_again():
    """A comparisons file uploaded after step 1 had run, with "uploaded comparisons" picked, was refused as "No
    comparisons were uploaded with the demonstrations in step 1." while the file showed in its box."""
    from peftlab.errors import PeftlabError
    from peftlab.rlhf.pipeline import RLHFData
    from peftlab.rlhf.session import RLHFSession

    session = RLHFSession(data=RLHFData.embedded(seed=0), sft="an SFT result")  # step 1 ran on the embedded data
    with pytest.raises(PeftlabError) as refused:
        session.check_source("uploaded comparisons")
    assert str(refused.value) == (
        "Step 1 (SFT) ran without a comparisons file; upload it beside the demonstrations and run step 1 again (it "
        "holds out prompts by the comparisons), or take the comparisons from another source."
    )
    session.check_source("simulated labeler")  # the other sources need nothing uploaded


def test_a_comparisons_file_replaced_after_sft_is_told_to_run_sft_again(tmp_path):
    """Comparisons replaced after step 1 read them: the reward model learnt from the file step 1 read, without a
    word of the one in the box (and SFT's held-out prompts were drawn by the old file)."""
    import json

    from peftlab.errors import PeftlabError
    from peftlab.rlhf.pipeline import RLHFData
    from peftlab.rlhf.session import RLHFSession

    demonstrations, first, second = (tmp_path / name for name in ("d.jsonl", "c1.jsonl", "c2.jsonl"))
    prompts = [f"Review {i}:" for i in range(6)]
    demonstrations.write_text("".join(json.dumps({"prompt": p, "response": " great"}) + "\n" for p in prompts))
    pairs = [{"prompt": p, "chosen": " great", "rejected": " bad"} for p in prompts[:4]]
    first.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    second.write_text("".join(json.dumps(pair) + "\n" for pair in pairs[:3]))
    session = RLHFSession(data=RLHFData.uploaded(demonstrations, first), sft="an SFT result")
    session.check_source("uploaded comparisons", str(first))
    (tmp_path / "again.jsonl").write_bytes(first.read_bytes())  # the same file uploaded again: another path
    session.check_source("uploaded comparisons", str(tmp_path / "again.jsonl"))
    with pytest.raises(PeftlabError) as refused:
        session.check_source("uploaded comparisons", str(second))
    assert str(refused.value) == (
        "The comparisons file is not the one step 1 (SFT) read: run step 1 again to use it (it holds out prompts by "
        "the comparisons), or upload the earlier file back."
    )
    session.check_source("simulated labeler", str(second))  # a file in the box that the stage does not read


def test_a_task_box_of_spaces_is_called_empty():
    """A Task box holding only spaces was looked up on the Hub: "Could not load the dataset '' from the Hugging Face
    Hub (the Hub is unreachable or has no such dataset)"."""
    from peftlab.errors import PeftlabError
    from peftlab.ui.common import resolve_task

    with pytest.raises(PeftlabError, match=r"^Pick a task or upload a CSV/JSONL file\.$"):
        resolve_task("   ", None, "text", "label")


def test_a_public_space_never_reads_a_typed_task_as_a_folder_on_the_server(monkeypatch, tmp_path):
    """datasets' load_dataset reads a folder by the name before it asks the Hub: a visitor typed the path of
    gradio's upload folder and read other visitors' uploaded files (a security review's finding)."""
    import peftlab.tasks
    from peftlab.errors import PeftlabError
    from peftlab.ui.common import resolve_task

    uploads = tmp_path / "gradio" / "4f2e"
    uploads.mkdir(parents=True)
    (uploads / "theirs.csv").write_text("text,label\nCard 4111 declined,urgent\nroutine check,routine\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    asked = []
    monkeypatch.setattr(peftlab.tasks, "_load_cached", lambda name, *args: asked.append(name))
    for name in [str(uploads), "gradio/4f2e", "gradio", "./gradio", "~/x", "owner/../gradio", "a/b/c", "/", "a" * 300]:
        with pytest.raises(PeftlabError) as raised:
            resolve_task(name, None, "text", "label")
        assert str(raised.value) == (
            "On this public Space, a task is an embedded one, an upload or a Hub dataset id such as 'owner/name'; "
            f"{name!r} is none of them."
        )
    for name in ["rt-sentiment", "owner/some-data.v2", "imdb"]:  # embedded tasks and Hub ids are looked up
        resolve_task(name, None, "text", "label")
    assert asked == ["rt-sentiment", "owner/some-data.v2", "imdb"]
    monkeypatch.delenv("PEFTLAB_PUBLIC")
    resolve_task("gradio/4f2e", None, "text", "label")  # on one's own machine a folder is one's own data
    assert asked[-1] == "gradio/4f2e"


def test_a_handler_that_fails_says_a_sentence_whatever_failed(capsys):
    """A fault of the app reached the visitor as a bare "Error" badge (the Compare tab's listing of zero-shot rows);
    it now names itself as the app's fault, running out of memory says what makes a job smaller, a visitor's
    mistake keeps its own sentence, and gradio's own errors pass unchanged, in plain and generator handlers."""
    import gradio as gr
    import torch

    from peftlab.ui.presses import user_errors

    def failing(exc):
        @user_errors
        def handler():
            raise exc

        @user_errors
        def generator():
            yield "started"
            raise exc

        return handler, generator

    cases = [
        (
            TypeError("boolean value of NA is ambiguous"),
            "Something failed inside peftlab (TypeError: boolean value of "
            "NA is ambiguous). That is a fault of the app, not of what you typed; the server's log has the details.",
        ),
        (
            torch.OutOfMemoryError("CUDA out of memory"),
            "The GPU ran out of memory: try fewer test texts, a smaller batch size or a smaller model.",
        ),
        (PeftlabError("K must be at least 1, not 0."), "K must be at least 1, not 0."),
        (gr.Error("ZeroGPU quota exceeded"), "ZeroGPU quota exceeded"),
    ]
    for exc, sentence in cases:
        handler, generator = failing(exc)
        with pytest.raises(gr.Error) as plain:
            handler()
        with pytest.raises(gr.Error) as streamed:
            list(generator())
        assert plain.value.message == streamed.value.message == sentence
    assert "TypeError: boolean value of NA is ambiguous" in capsys.readouterr().err  # the log keeps the traceback


def test_a_new_task_fills_only_the_boxes_the_visitor_did_not_write(tmp_path):
    """A file picked after the visitor wrote a template (or PET patterns) replaced it with the generic one; the
    verbalizer is kept while it names the task's labels (a column typed again reloads the same task)."""
    from peftlab.tasks import EMBEDDED_TASKS
    from peftlab.ui.common import suggest
    from peftlab.ui.pet_tab import suggest_patterns

    skip = {"__type__": "update"}
    upload = tmp_path / "pets.csv"
    upload.write_text("text,label\n" + "".join(f"pet {i},{'cat' if i % 2 else 'dog'}\n" for i in range(10)))
    own, rt = "My pet: {text}\nKind:{mask}", EMBEDDED_TASKS["rt-sentiment"]
    rt_words = "negative: negative\npositive: positive"
    assert suggest("rt-sentiment", str(upload), "text", "label", own, rt_words) == (skip, "cat: cat\ndog: dog")
    assert suggest("rt-sentiment", str(upload), "text", "label", rt.template, rt_words) == (
        "Text: {text}\nLabel:{mask}",
        "cat: cat\ndog: dog",
    )
    # the visitor's words for the file's own labels stay when the file is read again
    assert suggest("rt-sentiment", str(upload), "text", "label", own, "cat: kitten\ndog: puppy") == (skip, skip)
    # an ensemble of the suggested patterns is peftlab's; one written pattern among them keeps the box
    rt_patterns = "\n---\n".join(rt.patterns)
    bbc_patterns = "\n---\n".join(EMBEDDED_TASKS["bbc-topic"].patterns)
    assert suggest_patterns("bbc-topic", None, "text", "label", rt_patterns, rt_words)[0] == bbc_patterns
    assert suggest_patterns("bbc-topic", None, "text", "label", rt_patterns + "\n---\n" + own, rt_words)[0] == skip
    # an upload gets generic patterns (an emptied box was refused at the press), replaced again by a new task's
    generic = "Text: {text}\nLabel:{mask}\n---\n{text}\nAnswer:{mask}\n---\n{text} ({mask})"
    assert suggest_patterns("rt-sentiment", str(upload), "text", "label", rt_patterns, rt_words) == (
        generic,
        "cat: cat\ndog: dog",
    )
    assert suggest_patterns("bbc-topic", None, "text", "label", generic, "")[0] == bbc_patterns


def test_labels_with_the_lines_own_marks_get_a_verbalizer_that_parses_back():
    """Labels 'stars: 1' and 'good; fun' were suggested as lines ("stars: 1: stars: 1") that the box then refused."""
    from peftlab.prompts import Verbalizer
    from peftlab.ui.common import verbalizer_lines

    for labels in (["stars: 1", "stars: 5"], ["good; fun", "bad, dull"]):
        words = {label: [label] for label in labels}
        assert Verbalizer.parse(verbalizer_lines(words), labels).words == {label: (label,) for label in labels}
    assert verbalizer_lines({"cat": ["cat", "kitten"], "dog": ["dog"]}) == "cat: cat, kitten\ndog: dog"


def test_a_count_that_may_be_left_empty_says_what_empty_means():
    """Emptying "Test texts to evaluate" scored all 1000 texts, and nothing near the box said it would."""
    import gradio as gr

    from peftlab.cloze import ClozeConfig
    from peftlab.tuning import TrainSettings

    with gr.Blocks():
        limit, steps = config_input(ClozeConfig, "limit"), config_input(TrainSettings, "steps")
    assert "; empty: all of them" in limit.info
    assert "empty" not in steps.info


def test_an_emptied_table_keeps_its_column_names():
    """The sweep's table, emptied when a new task was picked, showed gradio's placeholder headers "1 2 3"."""
    import gradio as gr
    import pandas as pd

    from peftlab.ui.presses import _emptying

    with gr.Blocks():
        table, box = gr.Dataframe(pd.DataFrame(columns=["method", "accuracy"])), gr.Textbox("an answer")
    emptied_table, emptied_box = _emptying([table, box], ())(None)
    assert list(emptied_table.columns) == ["method", "accuracy"] and emptied_table.empty
    assert emptied_box is None


def test_a_method_the_loaded_model_cannot_train_is_refused_as_a_grid_or_a_sweep_is_pressed(monkeypatch):
    """BitFit on SmolLM2 (no bias terms) waited behind another visitor's 3-minute job to be refused. A grid's and a
    sweep's press are now checked on the model when the process holds it already (loading it in the look would keep
    every visitor's press waiting), and by the job once it has loaded it (`test_app`)."""
    import gradio as gr

    from peftlab.models import load_lm
    from peftlab.ui import build_app
    from peftlab.ui.sessions import SESSIONS
    from tests.test_app import MODEL, compare_form

    class Request:
        session_hash = "bitfit-visitor"

    app = build_app()
    grid = compare_form(methods=["lora", "bitfit"], rates="")
    sweep = {name: grid[name] for name in list(grid)[:7]} | dict(
        method="bitfit", varied="learning_rate", values="0.001,0.01", shots="4", seeds="13", steps=2, test_limit=20
    )
    looks = [(_event(app, "compare_check").fn, grid), (_event(app, "sweep_check").fn, sweep)]
    with monkeypatch.context() as patched:  # a model not loaded yet: the job checks it
        patched.setattr("peftlab.ui.soft_prompts_tab.loaded_lm", lambda *_args, **_kwargs: None)
        for look, form in looks:
            assert look(Request(), **form) == ("", gr.update(interactive=False))
    SESSIONS.close(Request.session_hash)
    load_lm(MODEL, dtype="fp32")  # the model a grid trains, as an earlier visitor's job left it
    for look, form in looks:
        with pytest.raises(gr.Error) as refused:
            look(Request(), **form)
        assert refused.value.message == (
            "BitFit trains only bias terms, and smollm2-135m has none; pick another method for this model."
        )
    SESSIONS.close(Request.session_hash)


def test_an_upload_whose_labels_look_mistaken_is_warned_of_as_it_is_read(tmp_path, monkeypatch):
    """A file with one row labelled 'postive' beside ten 'positive' ones was scored as three classes (macro-F1 0.62
    where 0.95 was earned), and one labelled 0/1 got the verbalizer '0: 0', '1: 1' (every review called '1'), both
    without a word."""
    import gradio as gr

    from peftlab.ui import build_app

    warned = []
    monkeypatch.setattr(gr, "Warning", warned.append)
    suggest = _event(build_app(), "suggest_prompt").fn
    reviews = [f"review number {i}" for i in range(20)]
    typo, numbers = tmp_path / "typo.csv", tmp_path / "numbers.csv"
    typo.write_text(
        "text,label\n"
        + "".join(f"{t},{('negative', 'positive')[i % 2]}\n" for i, t in enumerate(reviews))
        + "Pretty good overall,postive\n"
    )
    numbers.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(reviews)))
    suggest("rt-sentiment", None, "text", "label", "", "")  # an embedded task: nothing to say
    assert warned == []
    suggest("rt-sentiment", str(typo), "text", "label", "", "")
    assert warned == [
        "The label 'postive' is on 1 row and 'positive' on 10: if 'postive' is a typo of 'positive', correct it in "
        "the file; as it is, it is a class of its own in every score."
    ]
    template, verbalizer = suggest("rt-sentiment", str(numbers), "text", "label", "", "")
    assert verbalizer == "0: 0\n1: 1" and warned[1:] == [
        "The labels are numbers (0, 1): a cloze prompt scores the verbalizer's words, and a model rarely writes a "
        "digit there unless the prompt asks for one (a rating); give each label a word in the verbalizer."
    ]


def test_a_dropped_rlhf_or_pet_file_is_read_at_once(tmp_path, monkeypatch):
    """A latin-1 unlabelled file for PET and a demonstrations line without a 'response' were told only when Run PET
    or Run SFT was pressed: the file is read as it is dropped, and its count or its fault said."""
    import gradio as gr

    from peftlab.ui import build_app

    said = []
    monkeypatch.setattr(gr, "Info", lambda message: said.append(("info", message)))
    monkeypatch.setattr(gr, "Warning", lambda message: said.append(("warning", message)))
    app = build_app()
    told = [fn.fn for fn in app.fns.values() if getattr(fn.fn, "__name__", "") == "told"]
    unlabelled, demonstrations, comparisons = told  # in the order of the tabs: PET, then RLHF
    good, bad = tmp_path / "demos.jsonl", tmp_path / "bad.jsonl"
    good.write_text('{"prompt": "Review X.", "response": "Fine."}\n{"prompt": "Review Y.", "response": "Dull."}\n')
    bad.write_text('{"prompt": "Review X.", "response": "Fine."}\n{"prompt": "oops"}\n')
    ranked = tmp_path / "ranked.jsonl"
    ranked.write_text('{"prompt": "Review X.", "ranked": ["Great.", "Fine.", "Dull."]}\n')
    latin = tmp_path / "texts.csv"
    latin.write_bytes("text\ncafé crème\n".encode("latin-1"))
    demonstrations(str(good))
    demonstrations(str(bad))
    comparisons(str(ranked))
    unlabelled(str(latin))
    demonstrations(None)  # the box emptied: nothing to say
    assert said == [
        ("info", "'demos.jsonl': 2 demonstrations."),
        ("warning", "Line 2 of 'bad.jsonl' has no 'response' field; each line needs 'prompt' and 'response'."),
        ("info", "'ranked.jsonl': 3 comparisons."),
        (
            "warning",
            "The file 'texts.csv' could not be read as UTF-8 text (line 2 holds the byte 0xe9); save it as UTF-8 (in "
            "Excel: 'CSV UTF-8'), so that no character is read as another.",
        ),
    ]


def test_the_task_list_says_when_an_uploaded_file_is_the_data():
    """The list went on naming rt-sentiment while an uploaded file was what every button used."""
    import gradio as gr

    from peftlab.ui.common import TASK_INFO, model_and_task_inputs

    with gr.Blocks() as demo:
        source = model_and_task_inputs()
    (told,) = [
        d
        for d in demo.fns.values()
        if [t[0] for t in d.targets] == [source["upload"]._id] and d.outputs == [source["task"]]
    ]
    assert told.fn("/tmp/gradio/1a2b/reviews.csv")["info"] == (
        "Your file 'reviews.csv' is the data; picking a task here puts it aside."
    )
    assert told.fn(None)["info"] == TASK_INFO


def test_public_caps_bound_seeds_patterns_and_ipet_and_the_standard_comparison_checks_k_at_the_press(monkeypatch):
    """PET took 200 seeds and 300 patterns, iPET any generations and a growth d of 10^12 (8 million draws for a minute,
    then out of memory), the standard comparison 200 seeds (2,001 runs); and a K its classes could not supply was
    refused only after the model loaded, was timed and the estimate's second press."""
    import gradio as gr

    from peftlab.ui import build_app
    from tests.test_app import PET_FORM

    class Request:
        session_hash = "capped-visitor"

    app = build_app()
    look = _event(app, "pet_check").fn
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    monkeypatch.setenv("PEFTLAB_PUBLIC_MODELS", PET_FORM["model"])
    limit = "above this public Space's limit of {}; lower it, or run peftlab on your own machine for larger jobs."
    ten = "\n---\n".join(f"{{text}} In word {i}, it was{{mask}}." for i in range(10))
    for changes, said in [
        ({"seeds": "1,2,3,4,5,6"}, f"The number of seeds is 6, {limit.format(5)}"),
        ({"patterns": ten}, f"The number of patterns is 10, {limit.format(8)}"),
        ({"ipet_generations": 4}, f"iPET generations is 4, {limit.format(3)}"),
    ]:
        with pytest.raises(gr.Error) as refused:
            look(Request(), **PET_FORM | changes)
        assert refused.value.message == said
    monkeypatch.delenv("PEFTLAB_PUBLIC")
    with pytest.raises(gr.Error) as refused:  # anywhere: past 10 it outgrows any pool within two generations
        look(Request(), **PET_FORM | {"growth": 1e12})
    assert refused.value.message == "Growth must be a number above 1 and at most 10, not 1000000000000.0."

    standard = _event(app, "standard_comparison_check").fn
    form = {k: PET_FORM[k] for k in ("model", "task", "upload", "text_column", "label_column")}
    form |= dict(template="{text} All in all, it was{mask}.", verbalizer=PET_FORM["verbalizer"], methods=["lora"])
    form |= dict(shots=2, seeds="13", test_limit=10, demonstrations_per_class=1, autoprompt_iterations=2, steps=2)
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    with pytest.raises(gr.Error) as refused:
        standard(Request(), **form | {"seeds": ",".join(map(str, range(200)))})
    assert refused.value.message == f"The number of seeds is 200, {limit.format(5)}"
    monkeypatch.delenv("PEFTLAB_PUBLIC")
    with pytest.raises(gr.Error) as refused:
        standard(Request(), **form | {"shots": 10_000})
    assert re.fullmatch(r"K=10000 needs .* of class '\w+'.*", refused.value.message), refused.value.message
    from peftlab.ui.sessions import SESSIONS

    SESSIONS.close(Request.session_hash)
