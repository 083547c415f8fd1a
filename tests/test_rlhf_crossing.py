"""The RLHF pipeline's models crossing into another process (a ZeroGPU call) by pickle: each stage's result carries
the base model by name and its own trained tensors, builds its model on first use on the other side, and predicts
what it predicted; a PPO run split into chunks of steps, pickled between them, gives the numbers of an unbroken run."""

from __future__ import annotations

import pickle

import pytest
import torch

from peftlab.models import load_lm
from peftlab.rlhf.data import Demonstration
from peftlab.rlhf.dpo import DPOConfig
from peftlab.rlhf.generation import encode_pairs, response_forward
from peftlab.rlhf.labelers import VaderLabeler
from peftlab.rlhf.pipeline import RLHFData
from peftlab.rlhf.ppo import PPOConfig, PPOResult, ppo_steps, start_ppo, train_ppo
from peftlab.rlhf.reward import RewardConfig
from peftlab.rlhf.session import RLHFSession
from peftlab.rlhf.sft import SFTConfig
from tests.test_rlhf_stages import BAD, GOOD, PROMPTS, preference_pairs, run

PPO = PPOConfig(steps=4, batch_size=4, minibatch_size=2, max_new_tokens=6, lora_r=4, learning_rate=1e-2)
BATCH = dict(prompts=PROMPTS[:2], responses=["it was great", "it was bad"])


def crossed(value):
    """`value` as the other side of a GPU call receives it."""
    return pickle.loads(pickle.dumps(value))


@pytest.fixture(scope="module", params=["lora", "full"])
def session(request, tiny_causal_folder) -> RLHFSession:
    """SFT (LoRA or full), a reward model with a LoRA adapter, PPO and DPO, on the tiny Llama loaded from a folder
    (the base model crosses by name)."""
    lm = load_lm(tiny_causal_folder, dtype="fp32")
    data = RLHFData(PROMPTS[:6], PROMPTS[6:], [Demonstration(p, r) for p in PROMPTS for r in GOOD + BAD])
    session = RLHFSession()
    learning_rate = 1e-2 if request.param == "lora" else 1e-4
    run(session.run_sft(lm, data, SFTConfig(method=request.param, steps=6, learning_rate=learning_rate, lora_r=4)))
    reward = RewardConfig(lora_r=2, steps=6, batch_size=8, learning_rate=3e-2)
    run(session.run_reward(preference_pairs(PROMPTS[:6]), preference_pairs(PROMPTS[6:]), reward))
    run(session.run_ppo("vader-positive", PPO))
    run(session.run_dpo(DPOConfig(steps=2, batch_size=2, lora_r=2)))
    return session


def test_every_stage_crosses_as_its_trained_tensors_and_predicts_the_same(session):
    data = pickle.dumps(session)
    other = pickle.loads(data)
    assert other.lm is session.lm  # the base model by name, from this process's cache
    # nothing was built on arrival: the app's process on ZeroGPU reads the numbers without a model
    for stage in (other.sft, other.reward, other.ppo, other.dpo):
        assert stage.__dict__["_pending"]
    assert other.sft.losses == session.sft.losses and other.ppo.history == session.ppo.history
    assert other.reward.heldout_credit == session.reward.heldout_credit
    if session.sft.adapter is not None:  # a LoRA pipeline crosses without a copy of the model's weights
        assert len(data) < session.lm.nbytes  # four stages in less than one copy of the (tiny) model

    tokenizer = session.lm.tokenizer
    batch = encode_pairs(tokenizer, BATCH["prompts"], BATCH["responses"])
    with torch.no_grad():
        for mine, theirs in [
            (session.sft.model, other.sft.model),
            (session.ppo.policy.model, other.ppo.policy.model),
            (session.dpo.policy, other.dpo.policy),
        ]:
            torch.testing.assert_close(response_forward(theirs, batch), response_forward(mine, batch))
        torch.testing.assert_close(
            other.reward.model.score(BATCH["prompts"], BATCH["responses"]),
            session.reward.model.score(BATCH["prompts"], BATCH["responses"]),
        )
    # the later stages are built on the one SFT model that crossed with them
    assert other.ppo.policy.reference_model is other.sft.model and other.dpo.sft_model is other.sft.model
    assert not any(p.requires_grad for p in other.ppo.policy.parameters())
    again = crossed(other)  # a result that arrived crosses on, built or not
    torch.testing.assert_close(
        again.reward.model.score(BATCH["prompts"], BATCH["responses"]),
        session.reward.model.score(BATCH["prompts"], BATCH["responses"]),
    )


def test_ppo_in_chunks_of_steps_crossing_between_them_gives_an_unbroken_run_s_numbers(session):
    tokenizer, labeler = session.lm.tokenizer, VaderLabeler("positive")
    arguments = (tokenizer, session.reward.model, session.data.train_prompts, PPO, labeler, ())
    *whole, result = train_ppo(session.sft.model, *arguments)

    chunked = crossed(start_ppo(session.sft.model, PPO))  # started in one call
    events = []
    for until in (1, 3, 4):  # three calls, the run crossing back and forth between them
        chunked = crossed(chunked)
        events += [crossed(e) for e in ppo_steps(chunked, *arguments, until)]
        chunked = crossed(chunked)
    assert chunked.steps_done == 4
    assert [(e.mean_reward, e.mean_kl, e.policy_loss, e.value_loss, e.beta) for e in events] == [
        (e.mean_reward, e.mean_kl, e.policy_loss, e.value_loss, e.beta) for e in whole
    ]
    final = chunked.result()
    assert isinstance(final, PPOResult) and "policy" in final.__dict__["_pending"]  # still unbuilt, as it came
    batch = encode_pairs(tokenizer, BATCH["prompts"], BATCH["responses"])
    with torch.no_grad():
        torch.testing.assert_close(
            final.policy.response_outputs(batch)[1], result.policy.response_outputs(batch)[1], atol=0, rtol=0
        )


def test_no_stage_result_has_a_class_attribute_that_would_hide_its_unbuilt_model():
    """Crossing builds a model field on first use through __getattr__, which a class-level default would bypass."""
    from peftlab.rlhf.crossing import Crossing
    from peftlab.rlhf.dpo import DPOResult
    from peftlab.rlhf.ppo import PPORun
    from peftlab.rlhf.reward import RewardResult
    from peftlab.rlhf.sft import SFTResult

    for cls in (SFTResult, RewardResult, PPOResult, PPORun, DPOResult):
        assert issubclass(cls, Crossing) and cls.MODELS
        assert not any(hasattr(cls, name) for name in cls.MODELS), cls
