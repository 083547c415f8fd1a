"""The RLHF tab's outputs follow what the visitor's session holds."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from peftlab.errors import PeftlabError
from peftlab.rlhf.pipeline import RLHFData
from peftlab.rlhf.session import RLHFSession
from peftlab.ui import rlhf_tab


def test_outputs_of_stages_a_new_model_dropped_are_emptied(monkeypatch):
    """After a new SFT run (or reward model), the PPO and DPO lines still said "PPO done (49 s)" and "DPO done", while
    their buttons and downloads said "Run step 3 (PPO) or DPO first.": a new SFT model drops every later stage, a
    new reward model drops PPO and DPO. Their status lines and plots are emptied; stages still held are untouched."""
    session = RLHFSession(reward=object())  # a new reward model was trained: PPO and DPO are gone
    monkeypatch.setattr(rlhf_tab, "_session", lambda request: session)
    outputs = {"reward": ["status", "plot"], "ppo": ["status", "plot", "samples"], "dpo": ["status", "plot"]}
    outputs["evaluation"] = ["status", "table"]
    values = rlhf_tab.stages_left(None, outputs)
    assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in values[:2])  # gr.skip(): kept
    assert values[2:] == ["", None, None, "", None, "", None]
    session.dpo = object()  # DPO trained since: its line and the evaluation of it stay
    values = rlhf_tab.stages_left(None, outputs)
    assert values[2:5] == ["", None, None] and values[5:] == [gr.skip()] * 4


def test_asking_more_held_out_prompts_than_there_are_is_one_sentence():
    """99999 held-out prompts answered the 32 there are after about a minute, and said so only in its result."""
    data = RLHFData(["train me"], ["held 1", "held 2"], [])
    session = RLHFSession(data=data, ppo=SimpleNamespace(policy=SimpleNamespace(model="the PPO policy")))
    with pytest.raises(PeftlabError) as raised:
        session.evaluate("vader-positive", 99999, seed=0)
    assert str(raised.value) == "99999 held-out prompts were asked for; the data holds out 2, ask at most that."
