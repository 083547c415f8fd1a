"""The RLHF tab's outputs follow what the visitor's session holds."""

from __future__ import annotations

import re
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from peftlab.errors import PeftlabError
from peftlab.rlhf.pipeline import RLHFData
from peftlab.rlhf.session import RLHFSession
from peftlab.rlhf.stored import SIMULATED
from peftlab.ui import rlhf_stages

# the reward model's form with the simulated labeler ranking 60 responses (15 prompts of K = 4); steps aside
LABELER_RANKS_60 = dict(source="simulated labeler", comparisons=None, labeler="vader-positive", k=4, rm_pairs=60)
LABELER_RANKS_60 |= dict(rm_lora_r=0)


def test_outputs_of_stages_a_new_model_dropped_are_emptied(monkeypatch):
    """After a new SFT run (or reward model), the PPO and DPO lines still said "PPO done (49 s)" and "DPO done", while
    their buttons and downloads said "Run step 3 (PPO) or DPO first.": a new SFT model drops every later stage, a
    new reward model drops PPO and DPO. Their status lines and plots are emptied; stages still held are untouched."""
    session = RLHFSession(reward=object())  # a new reward model was trained: PPO and DPO are gone
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    outputs = {"reward": ["status", "plot"], "ppo": ["status", "plot", "samples"], "dpo": ["status", "plot"]}
    outputs["evaluation"] = ["status", "table"]
    values = rlhf_stages.stages_left(None, outputs)
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in values[:2])  # gr.skip(): kept
    assert values[2:] == ["", None, None, "", None, "", None]
    session.dpo = object()  # DPO trained since: its line and the evaluation of it stay
    values = rlhf_stages.stages_left(None, outputs)
    assert values[2:5] == ["", None, None] and values[5:] == [gr.skip()] * 4


def test_asking_more_held_out_prompts_than_there_are_is_one_sentence():
    """99999 held-out prompts answered the 32 there are after about a minute, and said so only in its result."""
    data = RLHFData(["train me"], ["held 1", "held 2"], [])
    session = RLHFSession(data=data, ppo=SimpleNamespace(policy=SimpleNamespace(model="the PPO policy")))
    with pytest.raises(PeftlabError) as raised:
        session.evaluate("vader-positive", 99999, seed=0)
    assert str(raised.value) == "99999 held-out prompts were asked for; the data holds out 2, ask at most that."


def test_rlhf_results_are_shown_on_the_compare_tab(monkeypatch, tmp_path):
    """RLHF evaluations were stored but Compare neither listed their task nor showed them ("No stored results of
    that task and model yet"): they are one line per route, the labeler's score with its std over runs, the gain
    over SFT and the KL, computed here by hand, with the score-KL frontier as the chart."""
    import json

    from peftlab.rlhf.evaluation import PolicyComparison
    from peftlab.store import ResultStore
    from peftlab.ui import compare_tab

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    table = pd.DataFrame({"prompt": ["a", "b"]})

    def evaluation(ppo_score, dpo_score, seconds, dpo_seconds=10.0):
        summary = {"labeler": "vader-positive", "prompts": 2, "samples_per_prompt": 1, "sft_mean_score": 0.1}
        summary |= {"ppo_mean_score": ppo_score, "ppo_mean_reward": 0.5, "ppo_mean_kl": 2.0}
        summary |= {"dpo_mean_score": dpo_score, "dpo_mean_reward": 0.4, "dpo_mean_kl": 1.0}
        comparison = PolicyComparison(table, summary, ["ppo", "dpo"])
        return comparison.result_rows("tiny", {}, {"ppo": seconds, "dpo": dpo_seconds})

    # two runs; their DPO scores alike (an evaluation stored twice would be one run)
    ResultStore().add(evaluation(0.5, 0.3, 100.0) + evaluation(0.7, 0.3, 120.0, dpo_seconds=12.0))
    tasks, models = compare_tab._choices(ResultStore())
    assert tasks == ["rlhf vader-positive"] and models == ["tiny"]
    status, shown, frontier, second, _, csv_path, report = compare_tab.show_comparison(
        "rlhf vader-positive", "tiny", None
    )
    assert second is None  # one chart, the frontier: the second is hidden while empty (the browser test sees it)
    assert status == (
        "**rlhf vader-positive · tiny**: 4 RLHF results on the same 2 held-out prompts: the vader-positive score and "
        "the KL to the SFT model (RLHF has no accuracy)."
    )
    # PPO: scores 0.5 and 0.7 -> mean 0.6, std (sample) 0.1414; gain 0.6 - 0.1; seconds (100 + 120) / 2
    assert shown.values.tolist() == [
        ["PPO", 2, "+0.600 ± 0.141", "+0.100", "+0.500", "+0.50", "2.00", "110"],
        ["DPO", 2, "+0.300 ± 0.000", "+0.100", "+0.200", "+0.40", "1.00", "11"],
    ]
    assert json.loads(frontier.to_json())["data"][0]["text"] == ["SFT", "PPO", "DPO"]
    assert pd.read_csv(csv_path)["score_mean"].round(3).tolist() == [0.6, 0.3]
    page = open(report, encoding="utf-8").read()  # the report holds them too (it had nothing to offer)
    assert "<td>+0.600 ± 0.141</td>" in page and "chart-rlhf-0" in page
    (broken,) = evaluation(0.5, 0.3, 1.0)[:1]
    broken.metrics.pop("ppo_mean_kl")  # an edited import: a StopIteration was the answer
    ResultStore().add([broken])
    with pytest.raises(gr.Error) as raised:
        compare_tab.show_comparison("rlhf vader-positive", "tiny", None)
    assert raised.value.message == (
        f"The stored RLHF result {broken.id[:8]} lacks a route's KL (as 'ppo_mean_kl'); delete it (`results delete "
        f"{broken.id[:8]}`, or under Stored results in the Compare tab)."
    )


def test_the_sft_line_before_a_sampling_step_says_the_answers_come_next(tiny_causal_folder, monkeypatch):
    """The last step answers held-out prompts to show, which takes longer than a step: "SFT step 2/3 ... about 18 s
    left" stood unchanged for 100 s, as if the stage hung."""
    from peftlab.ui.sessions import SESSIONS

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    SESSIONS.get(None).values.pop("rlhf", None)
    sft = dict(model=tiny_causal_folder, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=3)
    lines = [item[0] for item in rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=0)]
    second = next(line for line in lines if line.startswith("SFT step 2/3"))
    assert re.fullmatch(
        r"SFT step 2/3, loss \d\.\d{3}; step 3 comes next, then answers to 3 held-out prompts to show", second
    ), lines
    assert not any("comes next" in line for line in lines if line.startswith("SFT step 1/3,")), lines


def test_the_sampling_for_the_rankings_shows_its_progress_and_stop_ends_it_before_training(
    tiny_causal_folder, monkeypatch
):
    """The reward model's default 720 responses to rank sampled for minutes with the progress bar at 0 % and Stop
    unread until they were all sampled. The sampling is followed batch by batch (32 responses), and Stop ends it
    there: no reward model is trained, and the line says how far it was."""
    from peftlab.ui.sessions import SESSIONS

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    SESSIONS.get(None).values.pop("rlhf", None)  # a new visitor
    sft = dict(model=tiny_causal_folder, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=1)
    list(rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=0))
    shown = []

    def progress(fraction, desc=""):
        shown.append(desc)
        if desc.startswith("sampling responses to rank"):
            SESSIONS.get(None).stop_job(rlhf_stages.JOB, "you pressed Stop")

    # 15 prompts of K = 4: 60 responses, two batches; Stop after the first
    rm = LABELER_RANKS_60 | dict(rm_steps=3)
    status, *_ = rlhf_stages.run_reward_stage(None, progress=progress, rm_heldout_prompts=2, **rm, seed=0)
    assert status == (
        "Stopped because you pressed Stop. The sampling was 53% through its 60 responses to rank; no reward model "
        "was trained."
    )
    assert [d for d in shown if d.startswith("sampling responses")] == ["sampling responses to rank: 32/60"]
    assert rlhf_stages._session(None).reward is None


def test_a_stage_stopped_before_its_first_step_keeps_nothing_and_leaves_the_stages_as_they_were(
    tiny_causal_folder, monkeypatch
):
    """PPO stopped before a step said "the policy so far is kept. Compare the SFT and PPO policies below", over a
    policy that was the SFT model; a reward model stopped after its sampling kept an untrained head PPO could use."""
    from peftlab.ui.sessions import SESSIONS

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    SESSIONS.get(None).values.pop("rlhf", None)  # a new visitor
    sft = dict(model=tiny_causal_folder, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=1)
    list(rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=0))
    # the ranking screen's sampling says so at once (10-30 s on a CPU showed nothing under the button), then the K
    saying, shown = rlhf_stages.sample_for_ranking(3, 0, None)
    assert saying[0] == "Sampling 3 responses of the SFT policy to one training prompt…"
    assert shown[0].startswith("**Prompt:** ") and [slot["visible"] for slot in shown[1:5]] == [True] * 3 + [False]

    def stop_at(when: str):
        def progress(fraction, desc=""):
            if desc.startswith(when):
                SESSIONS.get(None).stop_job(rlhf_stages.JOB, "you pressed Stop")

        return progress

    said = "stopped before its first step because you pressed Stop: nothing was trained, and every stage is as it was."
    rm = LABELER_RANKS_60 | dict(rm_steps=1)
    rm |= dict(rm_heldout_prompts=2, seed=0)
    status, *_ = rlhf_stages.run_reward_stage(None, progress=stop_at("sampling responses to rank: 60/60"), **rm)
    assert status == f"The reward model {said}" and rlhf_stages._session(None).reward is None
    _, plot, *_ = rlhf_stages.run_reward_stage(None, **rm)
    # the loss has its own axis; the accuracies read in percent within 0-100 %, as the table beside them does
    assert [a.text for a in plot.layout.annotations] == ["loss", "pairs ranked right"]
    assert [(t.name, t.xaxis) for t in plot.data] == [
        ("loss", "x"),
        ("training pairs", "x2"),
        ("held-out pairs", "x2"),
    ]
    assert plot.layout.yaxis.tickformat is None and plot.layout.yaxis2.tickformat == ".0%"
    assert 0 <= plot.layout.yaxis2.range[0] < plot.layout.yaxis2.range[1] <= 1.02
    reward = rlhf_stages._session(None).reward
    ppo = dict(ppo_steps=2, ppo_beta=0.05, ppo_adaptive_kl=False, ppo_target_kl=4.0, ppo_ptx_coef=0.0, seed=0)
    *_, (status, *_) = rlhf_stages.run_ppo_stage(
        None, progress=stop_at("PPO step 1"), labeler="vader-positive", **ppo, ppo_learning_rate=1e-3
    )
    assert status == f"PPO {said}"
    dpo = dict(dpo_steps=2, dpo_beta=0.1, dpo_learning_rate=1e-3, seed=0)
    *_, (status, _) = rlhf_stages.run_dpo_stage(None, progress=stop_at("DPO step 1"), **dpo)
    assert status == f"DPO {said}"
    session = rlhf_stages._session(None)
    assert session.ppo is None and session.dpo is None and session.reward is reward


def test_a_few_uploaded_prompts_ranked_by_the_labeler_keep_some_to_train_the_reward_model(monkeypatch):
    """12 uploaded prompts and the simulated labeler: 24 held-out ranking prompts took them all, and the reward model
    was refused after SFT with "lower the held-out prompts", a setting the app does not show. At most half the
    training prompts are held out now; the embedded data keeps its 24; one prompt is refused, as the reward model's
    button is pressed."""
    from peftlab.rlhf.pipeline import PipelineConfig, heldout_ranked_prompts, ranked_prompt_count

    config = PipelineConfig(rm_pairs=16, k=4)  # 16 pairs of 6 per prompt: 4 prompts, and 24 held out
    uploaded = RLHFData([f"prompt {i}" for i in range(12)], ["held"], [])
    assert (ranked_prompt_count(config, uploaded), heldout_ranked_prompts(config, uploaded)) == (10, 6)
    plenty = RLHFData([f"prompt {i}" for i in range(476)], ["held"], [])  # the embedded data's training prompts
    assert (ranked_prompt_count(config, plenty), heldout_ranked_prompts(config, plenty)) == (28, 24)
    assert heldout_ranked_prompts(config, RLHFData(["a", "b"], ["held"], [])) == 1
    session = RLHFSession(data=RLHFData(["the only one"], ["held"], []), sft=object())
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    form = {"source": SIMULATED, "labeler": "vader-positive", "rm_pairs": 16, "k": 4, "seed": 0}
    form |= {"rm_lora_r": 0, "rm_steps": 10, "comparisons": None}
    with pytest.raises(PeftlabError) as raised:
        rlhf_stages.reward_inputs(form, None)
    assert str(raised.value) == (
        "The reward model needs at least 2 training prompts to rank (one to train on, one held out to test it); the "
        "demonstrations leave 1. Upload demonstrations with more prompts."
    )


def test_a_dropped_comparisons_file_is_what_the_reward_model_learns_from():
    """The radio stayed on "simulated labeler" after a comparisons file was dropped, far above it: the file went
    unused unless the visitor found the radio."""
    import gradio as gr

    from peftlab.ui.rlhf_stages import comparisons_source

    assert comparisons_source("/tmp/comparisons.jsonl", "simulated labeler") == "uploaded comparisons"
    assert comparisons_source(None, "uploaded comparisons") == "simulated labeler"  # the file removed
    assert comparisons_source(None, "my rankings") == gr.skip()  # the visitor's own choice stays


def test_the_app_stores_ppo_ptx_apart_and_times_each_route_as_the_cli_does(monkeypatch):
    """The app stored a PPO-ptx run as "ppo" (Compare averaged it with plain PPO) and PPO's seconds without the reward
    model it needs, where the CLI stores "ppo-ptx" and the reward model's seconds with PPO's."""
    from peftlab.rlhf.evaluation import PolicyComparison

    session = RLHFSession(
        data=RLHFData(["train me"], ["held 1"], []),
        lm=SimpleNamespace(name="tiny", device="cpu"),
        reward=SimpleNamespace(seconds=30.0),
        ppo=SimpleNamespace(seconds=100.0, ptx_coef=0.5, policy=SimpleNamespace(model="the PPO policy")),
    )
    summary = {"labeler": "vader-positive", "prompts": 1, "samples_per_prompt": 1, "sft_mean_score": 0.1}
    summary |= {"sft_mean_reward": 0.2}
    summary |= {"ppo_mean_score": 0.5, "ppo_mean_reward": 0.5, "ppo_mean_kl": 2.0}
    table = {"prompt": ["held 1"], "sft_response": ["fine"], "sft_labeler_score": [0.1], "sft_reward": [0.2]}
    table |= {"ppo_response": ["great"], "ppo_labeler_score": [0.5], "ppo_reward": [0.5], "ppo_kl": [2.0]}
    comparison = PolicyComparison(pd.DataFrame(table), summary, ["ppo"])
    stored = []
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    monkeypatch.setattr(rlhf_stages, "session_call", lambda *args, **kwargs: (comparison,))
    monkeypatch.setattr(rlhf_stages, "keep_results", lambda session, rows: stored.extend(rows))
    rlhf_stages.evaluate_stage("vader-positive", 1, 0, None, progress=lambda *args, **kwargs: None)
    (row,) = stored
    assert (row.method, row.train_seconds) == ("ppo-ptx", 130.0)  # γ is in PPO's own settings


def test_a_sft_run_again_and_stopped_before_its_first_step_keeps_every_stage(tiny_causal_folder, monkeypatch):
    """SFT pressed again and stopped while its model loaded dropped the SFT model, the reward model and the policies,
    trained nothing, and said "SFT stopped before its first step, so there is no SFT model" while Stop had said what
    it finished is kept. The session is now as it was, as a stopped reward model, PPO or DPO leaves it."""
    import contextlib

    from peftlab.serving import JobStop
    from peftlab.ui.sessions import SESSIONS

    monkeypatch.setattr("peftlab.ui.estimates.CONFIRM_ABOVE_S", float("inf"))
    SESSIONS.get(None).values.pop("rlhf", None)
    sft = dict(model=tiny_causal_folder, demonstrations=None, comparisons=None, sft_method="lora", sft_steps=1)
    list(rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=0))
    session = rlhf_stages._session(None)
    trained, reward, settings = session.sft, object(), dict(session.settings)
    session.reward = reward

    @contextlib.contextmanager
    def stopped_job(request, kind, name=None):
        stop = JobStop()
        stop.stop("you pressed Stop")
        yield None, stop

    monkeypatch.setattr(rlhf_stages, "job", stopped_job)
    (warning, *_), *_ = rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=1)
    assert warning.startswith("⚠️ Running step 1 (SFT) again drops the reward model")  # the second press goes on
    *_, (status, plot, samples) = rlhf_stages.run_sft_stage(None, **sft, sft_learning_rate=1e-3, seed=1)
    assert status == (
        "SFT stopped before its first step because you pressed Stop: nothing was trained, and every stage is as it was."
    )
    assert (plot, samples) == (gr.skip(), gr.skip())  # the curve and samples of the SFT model still held
    assert session.sft is trained and session.reward is reward and session.settings == settings


def test_stop_reaches_a_job_while_it_loads_its_model_and_a_second_call_is_refused():
    """A job left the queue and ran its first seconds (loading the model, timing the sampling) as no job at all:
    Stop said "Nothing to stop", the job ran to its end, and the tab's other presses passed their checks. It is the
    session's running job from the moment it leaves the queue; an API call while it runs is refused."""
    from peftlab.ui.presses import _unless_stopped_in_queue, job
    from peftlab.ui.sessions import SESSIONS

    class Request:
        session_hash = "loading-visitor"

    seen = []

    def handler(request):
        session = SESSIONS.get(request)
        seen.append((session.busy("rlhf"), session.stop_job("rlhf", "you pressed Stop")))  # while the model loads
        with pytest.raises(gr.Error) as refused:  # an API client's second call meanwhile
            next(wrapped(request))
        seen.append(refused.value.message)
        with job(request, "rlhf") as (_, stop):
            yield stop.is_set(), stop.reason

    wrapped = _unless_stopped_in_queue(handler, "rlhf", 2)
    session = SESSIONS.get(Request())
    session.queue_job("rlhf", "Step 1 (SFT)")
    assert list(wrapped(Request())) == [(True, "you pressed Stop")]
    assert seen == [
        ("Step 1 (SFT)", "running"),
        "Step 1 (SFT) is still running: press this once it has finished, or stop it.",
    ]
    assert session.busy("rlhf") is None and not session.running
    session.queue_job("rlhf", "Step 1 (SFT)")
    session.stop_job("rlhf", "you pressed Stop")  # stopped while it waited: it does not start
    assert list(wrapped(Request())) == [[gr.skip(), gr.skip()]] and len(seen) == 2
    SESSIONS.close(Request.session_hash)

    # the page closed while the job loads its model: the job's flag is the closed session's, which says why
    def loading(request):
        SESSIONS.close(request.session_hash)
        with job(request, "rlhf") as (session, stop):
            yield session.left, stop.is_set(), stop.reason

    assert list(_unless_stopped_in_queue(loading, "rlhf", 3)(Request())) == [(True, True, "the visitor left")]
    assert not SESSIONS.get(Request()).running  # a returning page gets a session of its own, with no job
    SESSIONS.close(Request.session_hash)


def test_sampling_and_downloads_wait_for_a_running_stage_and_dpo_asks_for_the_reward_model_at_once(monkeypatch):
    """Sample and Download pressed while SFT ran said "Run step 1 (SFT) first." (SFT drops its model as it starts);
    DPO pressed before the reward model passed its press's check and was refused after the queue's wait."""
    from peftlab.ui.sessions import SESSIONS

    class Request:
        session_hash = "busy-ranking-visitor"

    visitor = SESSIONS.get(Request())
    stop = visitor.start_job(rlhf_stages.JOB, "Step 1 (SFT)")
    said = "Step 1 (SFT) is still running: press this once it has finished, or stop it."
    with pytest.raises(gr.Error) as refused:
        rlhf_stages.download_stage("SFT adapter", Request())
    assert refused.value.message == said
    with pytest.raises(gr.Error) as refused:
        list(rlhf_stages.sample_for_ranking(3, 0, Request()))
    assert refused.value.message == said
    visitor.end_job(rlhf_stages.JOB, stop)
    session = RLHFSession(sft=object(), lm=SimpleNamespace(model=None))
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    monkeypatch.setattr(rlhf_stages, "check_width", lambda *args: None)
    with pytest.raises(PeftlabError) as raised:
        rlhf_stages.dpo_inputs(dict(dpo_steps=2, dpo_beta=0.1, dpo_learning_rate=1e-3, seed=0), Request())
    assert str(raised.value) == "Run step 2 (reward model) first: DPO learns from the same comparisons."
    SESSIONS.close(Request.session_hash)


def test_a_new_policy_empties_the_evaluation_of_the_one_it_replaced(monkeypatch):
    """After PPO (or DPO) ran again, the side-by-side table still showed the policy it replaced, as if current."""
    session = RLHFSession(reward=object(), ppo=object())
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    outputs = {"evaluation": ["status", "table"]}
    assert rlhf_stages.stages_left(None, outputs) == [gr.skip(), gr.skip()]  # nothing new: the evaluation stands
    rlhf_stages.SESSIONS.get(None).values[rlhf_stages.NEW_POLICY] = True  # what a finished PPO or DPO stage sets
    assert rlhf_stages.stages_left(None, outputs) == ["", None]
    assert rlhf_stages.stages_left(None, outputs) == [gr.skip(), gr.skip()]  # said once


def test_the_comparison_is_capped_stoppable_and_stores_the_settings_of_each_stage(monkeypatch, tmp_path):
    """The evaluation had no public cap (2,000 held-out prompts of an upload were taken), no Stop, and stored only
    the labeler, seed and γ: two PPO runs of other settings were one line of "2 runs" in the Compare tab."""
    from peftlab.report import compare_routes
    from peftlab.rlhf.evaluation import PolicyComparison
    from peftlab.rlhf.pipeline import Sampled

    data = RLHFData(["train me"], [f"held {i}" for i in range(600)], [])
    session = RLHFSession(
        data=data,
        lm=SimpleNamespace(name="tiny", device="cpu"),
        reward=SimpleNamespace(seconds=30.0),
        ppo=SimpleNamespace(seconds=100.0, ptx_coef=0.0, policy=SimpleNamespace(model="the PPO policy")),
    )
    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    monkeypatch.setenv("PEFTLAB_PUBLIC", "1")
    with pytest.raises(PeftlabError) as raised:
        rlhf_stages.evaluation_inputs({"prompts": 501, "seed": 0}, None)
    assert str(raised.value).startswith("Held-out prompts is 501, above this public Space's limit of 500")
    monkeypatch.delenv("PEFTLAB_PUBLIC")
    monkeypatch.setattr(rlhf_stages, "session_call", lambda *args, **kwargs: (Sampled(32, 96), session))
    status, *outputs = rlhf_stages.evaluate_stage("vader-positive", 48, 0, None, progress=lambda *a, **k: None)
    assert status.endswith("The models had given 32 of their 96 answers; nothing was kept.") and outputs == [None] * 3

    summary = {"labeler": "vader-positive", "prompts": 1, "samples_per_prompt": 1, "sft_mean_score": 0.1}
    summary |= {"sft_mean_reward": 0.2, "ppo_mean_score": 0.5, "ppo_mean_reward": 0.5, "ppo_mean_kl": 2.0}
    table = {"prompt": ["held 1"], "sft_response": ["fine"], "sft_labeler_score": [0.1], "sft_reward": [0.2]}
    table |= {"ppo_response": ["great"], "ppo_labeler_score": [0.5], "ppo_reward": [0.5], "ppo_kl": [2.0]}
    comparison = PolicyComparison(pd.DataFrame(table), summary, ["ppo"])
    monkeypatch.setattr(rlhf_stages, "session_call", lambda *args, **kwargs: (comparison, session))
    stored = []
    monkeypatch.setattr(rlhf_stages, "keep_results", lambda visitor, rows: stored.extend(rows))
    for beta in (0.05, 0.5):
        session.settings = {"sft": {"steps": 30}, "comparisons": "my rankings", "reward": {"steps": 50}}
        session.settings["ppo"] = {"beta": beta, "steps": 30, "seed": 0}
        rlhf_stages.evaluate_stage("vader-positive", 1, 0, None, progress=lambda *a, **k: None)
    assert [row.settings["ppo"]["beta"] for row in stored] == [0.05, 0.5]
    assert stored[0].settings["comparisons"] == "my rankings" and stored[0].settings["sft"] == {"steps": 30}
    (routes,) = compare_routes(stored)
    assert list(routes.table["runs"]) == [1, 1]  # two lines, not one of "2 runs"


def test_rankings_on_prompts_now_held_out_are_left_out_of_the_reward_model():
    """Rankings stay when SFT runs again; under another seed 31 of the 32 held-out prompts had been rankable, and a
    reward model trained on "my rankings" learnt the prompts the evaluation then called held out."""
    from peftlab.rlhf.labelers import HumanRankings

    human = HumanRankings()
    for prompt in ("a", "b", "now held"):
        human.add(prompt, ["good", "bad"], [1, 2])
    session = RLHFSession(human=human, data=RLHFData(["a", "b"], ["now held"], []), sft=object())
    assert [pair.prompt for pair in session.ranked_pairs()] == ["a", "b"]
    train, heldout = session.comparisons("my rankings", None)
    assert {p.prompt for p in train + heldout} == {"a", "b"}
    assert rlhf_stages.ranking_count(session) == (
        '**3 rankings saved**: 2 comparisons on 2 prompts for the reward model (pick "my rankings" below to train on '
        "them); left out: 1 comparison on prompts now held out for the evaluation."
    )


def test_the_app_and_the_command_line_store_a_route_alike_and_a_refused_reward_model_keeps_its_settings(monkeypatch):
    """The app's rows named where the comparisons came from and the command line's did not, so a PPO run of the same
    settings from either made two lines ('ppo (comparisons "simulated labeler", eval_samples null)'); DPO's line was
    split by PPO's γ, stored beside it; and a reward model refused after its settings were reset kept the old model
    with none of its settings."""
    from peftlab.report import compare_routes
    from peftlab.rlhf.dpo import DPOConfig
    from peftlab.rlhf.pipeline import PipelineConfig
    from peftlab.rlhf.ppo import PPOConfig
    from peftlab.rlhf.reward import RewardConfig
    from peftlab.rlhf.session import ranking_settings
    from peftlab.rlhf.sft import SFTConfig
    from peftlab.store import ResultRow

    config = PipelineConfig(eval_samples=1)
    stages = {"sft": SFTConfig().to_dict(), "reward": RewardConfig().to_dict()}
    app = {**stages, **ranking_settings("simulated labeler", config), "seed": 3, "eval_samples": 1}
    command_line = {**config.to_dict(), "comparisons": "simulated labeler"}
    figures = {"labeler": "vader-positive", "prompts": 1, "sft_mean_score": 0.1}

    def row(method: str, settings: dict, score: float) -> ResultRow:
        route = "ppo" if method.startswith("ppo") else method
        metrics = figures | {f"{route}_mean_score": score, f"{route}_mean_reward": 0.2, f"{route}_mean_kl": 1.0}
        return ResultRow(
            kind="rlhf", model="tiny", task="rlhf vader-positive", test_fingerprint="0" * 16, method=method,
            settings=settings, accuracy=None, macro_f1=None, metrics=metrics,
        )  # fmt: skip

    rows = [
        row("ppo", {**app, "ppo": PPOConfig().to_dict()}, 0.5),
        row("ppo", {**command_line, "ptx_coef": 0.0}, 0.6),
        row("dpo", {**app, "dpo": DPOConfig().to_dict()}, 0.3),
        row("dpo", {**command_line, "ptx_coef": 0.5}, 0.4),
    ]
    (routes,) = compare_routes(rows)
    assert dict(zip(routes.table["method"], routes.table["runs"])) == {"ppo": 2, "dpo": 2}

    session = RLHFSession(sft=object(), lm=SimpleNamespace(tokenizer=None), reward="the old reward model")
    session.settings = {"sft": {"steps": 1}, "comparisons": "my rankings", "reward": {"steps": 5}, "ppo": {}}

    def refused(*args):
        raise PeftlabError("no training comparisons")
        yield

    monkeypatch.setattr("peftlab.rlhf.session.train_reward_model", refused)
    session.sft = SimpleNamespace(model=None)
    with pytest.raises(PeftlabError):
        list(session.run_reward([], [], RewardConfig(), None, {"comparisons": "simulated labeler"}))
    assert session.reward == "the old reward model"
    assert session.settings == {"sft": {"steps": 1}, "comparisons": "my rankings", "reward": {"steps": 5}}


def test_a_stage_pressed_while_the_ranking_screen_samples_waits_for_it(monkeypatch):
    """The ranking screen's sampling was no job: a stage could start beside it, and on ZeroGPU the session coming back
    from the sampling's call replaced what the stage made."""
    from peftlab.ui.sessions import SESSIONS

    class Request:
        session_hash = "sampling-visitor"

    session = RLHFSession(sft=object(), lm=SimpleNamespace(name="tiny"))
    seen = []

    def sampling(*args, **kwargs):
        seen.append(SESSIONS.get(Request()).busy(rlhf_stages.JOB))
        return iter([("a prompt", ["one", "two"]), session])

    monkeypatch.setattr(rlhf_stages, "_session", lambda request: session)
    monkeypatch.setattr(rlhf_stages, "session_call", sampling)
    *_, (prompt, *_) = rlhf_stages.sample_for_ranking(2, 0, Request())
    assert prompt == "**Prompt:** a prompt" and seen == ["The sampling to rank"]
    assert SESSIONS.get(Request()).busy(rlhf_stages.JOB) is None
    SESSIONS.close(Request.session_hash)
