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
from peftlab.ui import rlhf_stages


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
        f"The stored RLHF result {broken.id[:8]} lacks its scores or KL; delete it under Stored results."
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
    rm = dict(source="simulated labeler", labeler="vader-positive", k=4, rm_pairs=60, rm_lora_r=0, rm_steps=3)
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
    rm = dict(source="simulated labeler", labeler="vader-positive", k=4, rm_pairs=60, rm_lora_r=0, rm_steps=1)
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
    form = {"source": rlhf_stages.RANKING_SOURCES[0], "labeler": "vader-positive", "rm_pairs": 16, "k": 4, "seed": 0}
    form |= {"rm_lora_r": 0, "rm_steps": 10}
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
    assert (row.method, row.train_seconds, row.settings["ptx_coef"]) == ("ppo-ptx", 130.0, 0.5)
