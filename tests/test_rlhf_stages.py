"""The RLHF stages on the tiny Llama: SFT's response-only loss, a reward model that learns a preference,
PPO steps that move the policy and never the reference, the whole pipeline, and bad input."""

from __future__ import annotations

import copy
import math
import threading

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from peftlab.errors import PeftlabError
from peftlab.rlhf.data import Comparison, Demonstration
from peftlab.rlhf.dpo import DPOConfig, train_dpo
from peftlab.rlhf.evaluation import compare_policies
from peftlab.rlhf.generation import encode_pairs, encode_prompts, format_prompts, response_forward, sample_responses
from peftlab.rlhf.labelers import VaderLabeler, labeler_by_name
from peftlab.rlhf.pipeline import (
    PipelineConfig,
    RLHFData,
    Sampled,
    ranked_comparisons,
    ranked_prompt_count,
    run_pipeline,
)
from peftlab.rlhf.ppo import PolicyWithValueHead, PPOConfig, PPOEvent, PPOResult, train_ppo
from peftlab.rlhf.reward import (
    RewardConfig,
    RewardEvent,
    RewardResult,
    collect_comparisons,
    heldout_report,
    margin_report,
    pair_accuracy,
    train_reward_model,
)
from peftlab.rlhf.sft import SFTConfig, SFTResult, lora_config, sft_loss, train_sft
from peftlab.seeding import seeded
from peftlab.stats import clustered_proportion

PROMPTS = [
    "Review: the movie",
    "Review: the film",
    "Review: the plot",
    "Review: the acting",
    "Review: the story",
    "Review: the cast",
    "Review: the ending",
    "Review: the script",
]
GOOD, BAD = ["it was great", "it was good", "it was fun"], ["it was bad", "it was awful", "it was boring"]


def run(events):
    *steps, result = list(events)
    return steps, result


@pytest.fixture(scope="module")
def sft(tiny_causal):
    demonstrations = [Demonstration(p, r) for p in PROMPTS for r in GOOD + BAD]
    before = [(p.detach().clone(), p.requires_grad) for p in tiny_causal.model.parameters()]
    steps, result = run(
        train_sft(
            tiny_causal, demonstrations, SFTConfig(steps=30, learning_rate=1e-2, lora_r=4), sample_prompts=PROMPTS[:2]
        )
    )
    unchanged = all(
        torch.equal(p, w) and p.requires_grad == g for p, (w, g) in zip(tiny_causal.model.parameters(), before)
    )
    return demonstrations, steps, result, unchanged


def test_sft_loss_counts_response_tokens_only(tiny_causal):
    demonstration = Demonstration("Review: the movie", "it was great")
    batch = encode_pairs(tiny_causal.tokenizer, [demonstration.prompt], [demonstration.response])
    ids = batch.input_ids[0][batch.attention_mask[0].bool()]  # prompt + response + EOS, no padding
    prompt_length = len(
        tiny_causal.tokenizer(
            format_prompts(tiny_causal.tokenizer, [demonstration.prompt])[0], add_special_tokens=False
        ).input_ids
    )
    with torch.no_grad():
        log_probs = tiny_causal.model(ids[None]).logits[0].float().log_softmax(-1)  # (T, V)
        by_hand = -np.mean([float(log_probs[t - 1, ids[t]]) for t in range(prompt_length, len(ids))])
        loss = float(sft_loss(tiny_causal.model, tiny_causal.tokenizer, [demonstration], 48))
    assert ids[-1] == tiny_causal.tokenizer.eos_token_id  # the response is closed, so SFT learns to stop
    assert loss == pytest.approx(by_hand, abs=0.05)  # bf16 autocast on CPUs that have it


def test_sft_learns_no_end_token_after_a_cut_response(tiny_causal):
    """A response cut to its first max - 1 tokens was closed by the end token all the same, and SFT (PPO-ptx, DPO)
    taught the policy to stop mid-sentence; a whole response still ends with it."""
    tokenizer = tiny_causal.tokenizer
    whole, cut = Demonstration("Review:", "it was great"), Demonstration("Review:", " ".join(["it was great"] * 20))
    batch = encode_pairs(tokenizer, ["Review:"] * 2, [whole.response, cut.response], 8, close_cut=False)
    read = [batch.input_ids[i, batch.prompt_width :][batch.response_mask[i].bool()].tolist() for i in range(2)]
    assert read[0][-1] == tokenizer.eos_token_id
    assert len(read[1]) == 7 and tokenizer.eos_token_id not in read[1]
    with torch.no_grad():
        log_probs = response_forward(tiny_causal.model, batch)
        mask = batch.response_mask.to(log_probs.dtype)
        by_hand = float(-(log_probs * mask).sum() / mask.sum())
        assert float(sft_loss(tiny_causal.model, tokenizer, [whole, cut], 8)) == pytest.approx(by_hand, abs=1e-6)


def test_sft_keeps_a_token_of_every_response_however_short_its_cut():
    """At 1 a cut response kept no token and, without its end token, the loss was the mean of nothing: NaN."""
    with pytest.raises(PeftlabError, match=r"^SFT max response tokens must be at least 2, not 1\.$"):
        SFTConfig(max_response_tokens=1)


def test_sft_lowers_the_loss_shows_samples_and_leaves_the_lm_alone(tiny_causal, sft):
    _, steps, result, _ = sft
    assert isinstance(result, SFTResult) and [e.step for e in steps] == list(range(1, 31))
    assert np.mean([e.loss for e in steps[-5:]]) < 0.7 * np.mean([e.loss for e in steps[:5]])
    assert [len(e.samples) for e in steps if e.samples] == [2, 2]  # steps 20 and 30
    assert result.adapter is not None and "adapter_config.json" in result.adapter
    assert not any(p.requires_grad for p in result.model.parameters())
    assert type(result.model) is type(tiny_causal.model)  # merged back into a plain model
    assert any(not torch.equal(a, b) for a, b in zip(result.model.parameters(), tiny_causal.model.parameters()))
    assert sft[3], "SFT changed the cached LM"


def preference_pairs(prompts):
    return [Comparison(p, g, b) for p in prompts for g in GOOD for b in BAD]


@pytest.mark.parametrize("lora_r", [0, 4])
def test_reward_model_learns_a_synthetic_preference(tiny_causal, sft, lora_r):
    _, _, sft_result, _ = sft
    train, heldout = preference_pairs(PROMPTS[:6]), preference_pairs(PROMPTS[6:])
    config = RewardConfig(lora_r=lora_r, steps=40, batch_size=16, learning_rate=3e-2, eval_every=20)
    before = {n: p.detach().clone() for n, p in sft_result.model.named_parameters()}
    steps, result = run(train_reward_model(sft_result.model, tiny_causal.tokenizer, train, heldout, config))
    assert all(isinstance(e, RewardEvent) for e in steps) and isinstance(result, RewardResult)
    assert [math.isnan(e.heldout_accuracy) for e in steps].count(False) == 2
    assert result.heldout_accuracy >= 0.9 and pair_accuracy(result.model, heldout) == result.heldout_accuracy
    # Normalised on the held-out responses: mean 0, spread 1.
    responses = [(c.prompt, r) for c in heldout for r in (c.chosen, c.rejected)]
    scores = result.model.score(*map(list, zip(*set(responses))))
    assert float(scores.mean()) == pytest.approx(0, abs=1e-4) and float(scores.std()) == pytest.approx(1, abs=1e-3)
    assert all(torch.equal(p, before[n]) for n, p in sft_result.model.named_parameters())  # the SFT model is untouched


def test_a_stopped_reward_model_reports_the_accuracy_of_the_weights_it_keeps(tiny_causal, sft, monkeypatch):
    """Stopped at step 3 of 10, evaluated every 2: its held-out accuracy, interval and margins were step 2's."""
    import peftlab.rlhf.reward as reward

    _, _, sft_result, _ = sft
    scored_with, pair_credit = [], reward.pair_credit
    monkeypatch.setattr(
        reward,
        "pair_credit",
        lambda model, *args: scored_with.append(model.head.weight.detach().clone()) or pair_credit(model, *args),
    )
    stop, items = threading.Event(), []
    config = RewardConfig(steps=10, batch_size=4, learning_rate=3e-2, eval_every=2)
    heldout = preference_pairs(PROMPTS[6:])
    for item in train_reward_model(
        sft_result.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:6]), heldout, config, stop
    ):
        items.append(item)
        if isinstance(item, RewardEvent) and item.step == 3:
            stop.set()
    *steps, result = items
    assert [e.step for e in steps] == [1, 2, 3]
    assert torch.equal(scored_with[-1], result.model.head.weight)  # scored last with the weights it keeps
    assert result.heldout_accuracy == pair_accuracy(result.model, heldout)


def test_a_reward_model_stopped_before_its_first_step_ranks_as_a_coin_not_the_wrong_way_round(tiny_causal, sft):
    """Its head starts at zero, so it ties every pair. Counted as wrong, it reported 0 % and "ranks its held-out
    comparisons the wrong way round ... PPO against it would learn the opposite"; a tie is half, as a coin's guess."""
    _, _, sft_result, _ = sft
    stop = threading.Event()
    stop.set()
    heldout = preference_pairs(PROMPTS[6:])
    steps, result = run(
        train_reward_model(
            sft_result.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:6]), heldout, RewardConfig(), stop
        )
    )
    assert steps == [] and result.heldout_credit == [0.5] * len(heldout) and result.heldout_accuracy == 0.5
    assert "cannot be told apart from a coin toss" in heldout_report(result, heldout, None).chance_note()


def test_a_reward_model_batch_forwards_each_ranked_response_once(tiny_causal, sft, monkeypatch):
    """InstructGPT's batches (§3.5): a step takes ranked prompts with all their comparisons, and the K responses of a
    ranking are forwarded once each for its K-choose-2 pairs."""
    import peftlab.rlhf.reward as reward

    _, _, sft_result, _ = sft
    ranked = [f"response {i}" for i in range(4)]  # best first: 6 pairs from 4 responses per prompt
    train = [Comparison(p, ranked[i], ranked[j]) for p in PROMPTS[:6] for i in range(4) for j in range(i + 1, 4)]
    forwarded = []
    encode = reward.encode_pairs
    monkeypatch.setattr(
        reward, "encode_pairs", lambda tok, p, r: forwarded.append(list(zip(p, r))) or encode(tok, p, r)
    )
    config = RewardConfig(lora_r=2, steps=3, batch_size=2, eval_every=10)
    run(train_reward_model(sft_result.model, tiny_causal.tokenizer, train, preference_pairs(PROMPTS[6:7]), config))
    steps = forwarded[:3]  # then the held-out evaluation and the normalisation
    assert [len(texts) for texts in steps] == [8, 8, 8]  # 2 prompts x 4 responses: 12 pairs from 8 forwards
    assert all(len(set(texts)) == 8 and len({p for p, _ in texts}) == 2 for texts in steps)
    assert sorted({p for texts in steps for p, _ in texts}) == sorted(PROMPTS[:6])  # one pass: every prompt once


def test_collected_comparisons_follow_the_labeler(tiny_causal, sft):
    _, _, sft_result, _ = sft
    labeler = VaderLabeler("positive")
    pairs, rollout = collect_comparisons(
        sft_result.model, tiny_causal.tokenizer, PROMPTS[:4], labeler, k=3, max_new_tokens=6
    )
    assert len(rollout.responses) == 12 and len(pairs) <= 4 * 3
    for pair in pairs:
        assert labeler.score(pair.prompt, pair.chosen) > labeler.score(pair.prompt, pair.rejected)


@pytest.fixture(scope="module")
def reward(tiny_causal, sft):
    _, _, sft_result, _ = sft
    config = RewardConfig(steps=30, batch_size=16, learning_rate=3e-2)
    return run(
        train_reward_model(
            sft_result.model,
            tiny_causal.tokenizer,
            preference_pairs(PROMPTS[:6]),
            preference_pairs(PROMPTS[6:]),
            config,
        )
    )[1]


@pytest.mark.parametrize("ptx_coef", [0.0, 0.5])
def test_ppo_steps_move_the_policy_but_never_the_reference(tiny_causal, sft, reward, ptx_coef):
    demonstrations, _, sft_result, _ = sft
    sft_weights = {n: p.detach().clone() for n, p in sft_result.model.named_parameters()}
    config = PPOConfig(
        steps=2, batch_size=4, minibatch_size=2, max_new_tokens=6, lora_r=4, learning_rate=1e-2, ptx_coef=ptx_coef
    )
    steps, result = run(
        train_ppo(
            sft_result.model,
            tiny_causal.tokenizer,
            reward.model,
            PROMPTS,
            config,
            VaderLabeler("positive"),
            demonstrations,
        )
    )
    assert isinstance(result, PPOResult) and all(isinstance(e, PPOEvent) for e in steps) and len(steps) == 2
    for event in steps:
        assert all(math.isfinite(v) for v in (event.mean_reward, event.mean_kl, event.policy_loss, event.value_loss))
        assert 0 <= event.clip_fraction <= 1 and event.response_tokens >= 1
        assert (event.ptx_loss > 0) == bool(ptx_coef)
    policy = result.policy
    lora = {n: p for n, p in policy.model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values()), "PPO did not move the adapter (B starts at 0)"
    assert policy.value_head.weight.abs().sum() > 0
    # The reference is the SFT result itself, untouched, and equals the policy with its adapter off.
    assert policy.reference_model is sft_result.model
    assert all(torch.equal(p, sft_weights[n]) for n, p in sft_result.model.named_parameters())
    base = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in policy.model.named_parameters()
        if "lora_" not in n
    }
    assert base.keys() == sft_weights.keys() and all(torch.equal(base[n], sft_weights[n]) for n in base)
    batch = encode_pairs(tiny_causal.tokenizer, PROMPTS[:2], ["it was great", "it was bad"])
    with torch.no_grad(), policy.model.disable_adapter():
        without_adapter = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = sft_result.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(without_adapter, expected)


def test_a_ppo_step_reports_its_measures_over_every_minibatch(tiny_causal, sft, reward, monkeypatch):
    """A step's losses, clip fraction and approx KL were its last minibatch's, taken after every other update (TRL
    logs their mean over the step's minibatches and epochs)."""
    import peftlab.rlhf.ppo as ppo

    demonstrations, _, sft_result, _ = sft
    seen, clipped = [], ppo.clipped_policy_loss

    def recording(*args):
        seen.append([value.item() for value in clipped(*args)])
        return clipped(*args)

    monkeypatch.setattr(ppo, "clipped_policy_loss", recording)
    config = PPOConfig(steps=1, batch_size=4, minibatch_size=1, epochs=2, max_new_tokens=6, lora_r=4, learning_rate=0.1)
    (event,), _ = run(
        train_ppo(sft_result.model, tiny_causal.tokenizer, reward.model, PROMPTS, config, VaderLabeler("positive"))
    )
    assert len(seen) == 8  # 4 minibatches of 1, twice
    policy_loss, clip_fraction, approx_kl = (sum(column) / 8 for column in zip(*seen))
    assert (event.policy_loss, event.clip_fraction, event.approx_kl) == pytest.approx(
        (policy_loss, clip_fraction, approx_kl)
    )
    assert event.approx_kl != pytest.approx(seen[-1][2])  # the last minibatch's alone differs


def test_ppo_ptx_trains_on_the_prompts_plain_ppo_of_its_seed_does(tiny_causal, sft, reward, monkeypatch):
    """PPO-ptx drew its demonstrations from the generator that draws the prompts: from step 2 on, PPO and PPO-ptx of
    one seed trained on different prompts, and their comparison mixed γ's effect with another data stream."""
    import peftlab.rlhf.ppo as ppo

    demonstrations, _, sft_result, _ = sft
    drawn, sample = [], ppo.sample_responses

    def recording(model, tokenizer, prompts, *args, **kwargs):
        drawn[-1].append(list(prompts))
        return sample(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(ppo, "sample_responses", recording)
    for ptx_coef in (0.0, 0.5):
        drawn.append([])
        config = PPOConfig(steps=3, batch_size=4, minibatch_size=2, max_new_tokens=4, lora_r=2, ptx_coef=ptx_coef)
        tokenizer, labeler = tiny_causal.tokenizer, VaderLabeler("positive")
        run(train_ppo(sft_result.model, tokenizer, reward.model, PROMPTS, config, labeler, demonstrations))
    assert len(drawn[0]) == 3 and drawn[0] == drawn[1]


def test_ppo_ptx_reads_the_demonstrations_as_sft_did(tiny_causal, sft, reward, monkeypatch):
    """PPO-ptx cut every demonstration at 48 tokens, whatever SFT's max response tokens were."""
    import peftlab.rlhf.ppo as ppo

    demonstrations, _, sft_result, _ = sft
    read = []
    monkeypatch.setattr(ppo, "sft_loss", lambda model, tok, batch, tokens: read.append(tokens) or torch.ones(()))
    config = PPOConfig(steps=1, batch_size=2, minibatch_size=2, max_new_tokens=4, lora_r=2, ptx_coef=0.5)
    labeler = VaderLabeler("positive")
    run(
        train_ppo(
            sft_result.model, tiny_causal.tokenizer, reward.model, PROMPTS, config, labeler, demonstrations, None, 12
        )
    )
    assert read and set(read) == {12}


def test_policy_comparison_scores_every_route_on_the_same_prompts(tiny_causal, sft, reward):
    _, _, sft_result, _ = sft
    policy = PolicyWithValueHead(sft_result.model, lora_config(2, sft_result.model))  # untrained adapter: PPO = SFT
    comparison = compare_policies(
        sft_result.model,
        {"ppo": policy.model, "dpo": copy.deepcopy(sft_result.model)},
        tiny_causal.tokenizer,
        reward.model,
        VaderLabeler("positive"),
        PROMPTS[:3],
        samples_per_prompt=2,
        max_new_tokens=6,
    )
    table = comparison.table
    assert len(table) == 6 and table["prompt"].tolist() == [p for p in PROMPTS[:3] for _ in range(2)]
    assert list(table.columns) == ["prompt"] + [
        f"{route}_{what}"
        for what in ("response", "labeler_score", "reward", "kl")
        for route in ("sft", "ppo", "dpo")
        if (route, what) != ("sft", "kl")
    ]
    for route in ("ppo", "dpo"):  # same seed, same weights: the SFT model's answers, KL 0
        assert table[f"{route}_response"].tolist() == table["sft_response"].tolist()
        assert np.allclose(table[f"{route}_kl"], 0, atol=1e-5)
        assert comparison.summary[f"{route}_mean_score"] == comparison.summary["sft_mean_score"]
    rows = comparison.result_rows("tiny", {"seed": 0}, {"ppo": 3.0, "dpo": 2.0}, methods={"ppo": "ppo-ptx"})
    assert [(r.method, r.train_seconds) for r in rows] == [("ppo-ptx", 3.0), ("dpo", 2.0)]
    # the stored rows said 0 trainable parameters for LoRA-trained routes; this DPO stand-in has no adapter
    adapter = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)  # LoRA alone trains here
    assert adapter > 0 and [r.trainable_params for r in rows] == [adapter, 0]
    assert "dpo_mean_kl" not in rows[0].metrics and rows[1].metrics["dpo_mean_kl"] == comparison.summary["dpo_mean_kl"]


@pytest.mark.parametrize("route", ["ppo", "dpo", "both"])
def test_the_whole_pipeline_runs_each_route_on_the_tiny_model(tiny_causal, route):
    data = RLHFData(PROMPTS[:6], PROMPTS[6:], [Demonstration(p, r) for p in PROMPTS[:6] for r in GOOD + BAD])
    config = PipelineConfig(
        labeler="concise",
        rm_pairs=12,
        rm_heldout_prompts=2,
        k=3,
        eval_samples=1,
        max_new_tokens=8,
        route=route,
        sft=SFTConfig(steps=3, lora_r=2, sample_every=3),
        reward=RewardConfig(steps=3, eval_every=3),
        ppo=PPOConfig(steps=2, batch_size=2, minibatch_size=2, lora_r=2, max_new_tokens=5),
        dpo=DPOConfig(steps=2, batch_size=2, lora_r=2),
    )
    events = []
    result = run_pipeline(tiny_causal, data, config, on_event=lambda stage, event: events.append((stage, event)))
    stages = [stage for stage, _ in events]
    # the sampling for the rankings is followed per batch of 32: the training prompts' in one, the 2 held-out ones'
    # in another, which only a reward model is tested on: DPO alone does not sample them
    ranked = ranked_prompt_count(config, data)
    sampled = [event for stage, event in events if stage == "comparisons"]
    if route == "dpo":
        assert sampled == [Sampled((ranked - 2) * 3, (ranked - 2) * 3)]
    else:
        assert sampled == [Sampled((ranked - 2) * 3, ranked * 3), Sampled(ranked * 3, ranked * 3)]
    routes = config.routes()
    trained = {"sft": 4, "reward": 4 if "ppo" in routes else 0, "ppo": 3 if "ppo" in routes else 0}
    assert {stage: stages.count(stage) for stage in trained} == trained
    assert stages.count("dpo") == (3 if "dpo" in routes else 0)
    summary = result.summary
    keys = ["sft_mean_score", "seconds"] + [
        f"{r}_{what}" for r in routes for what in ("mean_score", "mean_kl", "seconds")
    ]
    for key in keys + (["rm_heldout_accuracy"] if "ppo" in routes else []):
        assert math.isfinite(summary[key]), key
    assert ("rm_heldout_accuracy" in summary) == ("rm_heldout_pairs" in summary) == ("ppo" in routes)
    assert summary["prompts"] == 2 and set(summary["stage_seconds"]) == {"sft", "comparisons", "evaluation"} | (
        {"reward", "ppo"} if "ppo" in routes else set()
    ) | ({"dpo"} if "dpo" in routes else set())
    assert [row.method for row in result.rows] == routes


def test_without_a_reward_model_to_test_the_same_comparisons_are_ranked_and_none_held_out(tiny_causal):
    data = RLHFData(PROMPTS[:6], PROMPTS[6:], [])
    config = PipelineConfig(labeler="concise", rm_pairs=6, rm_heldout_prompts=2, k=3, max_new_tokens=6)
    tested = ranked_comparisons(tiny_causal.model, tiny_causal.tokenizer, data, config, labeler_by_name("concise"))
    untested = ranked_comparisons(
        tiny_causal.model, tiny_causal.tokenizer, data, config, labeler_by_name("concise"), heldout=False
    )
    assert tested[1] and untested == (tested[0], [])


def test_ppo_sampling_is_pure_ancestral_sampling(tiny_causal):
    with pytest.raises(PeftlabError, match=r"Sampling with temperature 0.7 .* biases the per-token KL estimate"):
        sample_responses(tiny_causal.model, tiny_causal.tokenizer, PROMPTS[:1], temperature=0.7, for_ppo=True)
    sample_responses(
        tiny_causal.model, tiny_causal.tokenizer, PROMPTS[:1], max_new_tokens=2, temperature=0.7
    )  # fine outside PPO


def test_a_response_longer_than_the_context_allows_is_one_sentence_before_sampling(tiny_causal):
    """max_new_tokens=100000000 would have sampled until the model's 256 positions ran out, or the memory."""
    prompts = PROMPTS[:3]
    longest = encode_prompts(tiny_causal.tokenizer, prompts)[0].shape[1]
    with pytest.raises(PeftlabError) as error:
        sample_responses(tiny_causal.model, tiny_causal.tokenizer, prompts, max_new_tokens=100_000_000)
    assert str(error.value) == (
        f"The longest response is 100000000 tokens; after a prompt of {longest} tokens the model reads at most 256, "
        f"so use at most {256 - longest}."
    )
    sample_responses(tiny_causal.model, tiny_causal.tokenizer, prompts, max_new_tokens=256 - longest)  # the most


@pytest.mark.parametrize(
    "what, changes, responses_of, lower",
    [
        ("A PPO batch", lambda n: {"ppo": PPOConfig(batch_size=n, max_new_tokens=24)}, lambda n: n, "the batch size"),
        (  # the held-out prompts (2 of PROMPTS) times the samples per prompt
            "The evaluation",
            lambda n: {"eval_samples": n, "max_new_tokens": 24},
            lambda n: 2 * n,
            "the evaluation samples per prompt",
        ),
    ],
)
def test_a_pass_whose_word_scores_exceed_the_free_memory_is_refused_before_any_training(
    tiny_causal, monkeypatch, what, changes, responses_of, lower
):
    """batch_size=100000000 once went straight to sampling; its (B, R + 1, V) scores alone are petabytes."""
    import peftlab.rlhf.generation as generation

    vocabulary = tiny_causal.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: 2**30)  # 1 GB free, whatever this machine has
    fits = 2**30 // (3 * 25 * vocabulary * 4)  # 3 fp32 copies of (B, 24 + 1, V) in 1 GB
    generation.check_response_scores_fit(tiny_causal.model, fits, 24, what, lower)
    n = fits // responses_of(1) + 1  # the smallest setting above it
    needed = 3 * responses_of(n) * 25 * vocabulary * 4 / 2**30
    data = RLHFData(PROMPTS[:6], PROMPTS[6:8], [Demonstration(p, r) for p in PROMPTS[:6] for r in GOOD + BAD])
    stages = []
    with pytest.raises(PeftlabError) as error:
        run_pipeline(
            tiny_causal, data, PipelineConfig(labeler="concise", **changes(n)), lambda stage, _: stages.append(stage)
        )
    assert str(error.value) == (
        f"{what} of {responses_of(n)} responses of up to 24 tokens needs about {needed:,.1f} GB for the model's word "
        f"scores ({vocabulary} per token), more than the 1.0 GB free here; lower {lower} or the longest response."
    )
    assert stages == []  # refused before SFT


def test_sft_and_dpo_batches_whose_word_scores_exceed_the_free_memory_are_one_sentence(tiny_causal, monkeypatch):
    """batch_size=100000000: every demonstration or comparison in one forward pass, on a Space up to 2000 of them."""
    import peftlab.rlhf.generation as generation

    vocabulary = tiny_causal.model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(generation, "free_memory_bytes", lambda device: 2**20)  # 1 MB free
    demonstrations = [Demonstration(p, " ".join([r] * 30)) for p in PROMPTS[:6] for r in GOOD + BAD]
    # the longest response, cut to max_response_tokens - 1 and closed with the end-of-response token
    longest = max(len(tiny_causal.tokenizer(d.response, add_special_tokens=False).input_ids) for d in demonstrations)
    longest = min(longest, 64 - 1) + 1
    needed = 3 * len(demonstrations) * (longest + 1) * vocabulary * 4
    with pytest.raises(PeftlabError) as error:
        next(train_sft(tiny_causal, demonstrations, SFTConfig(batch_size=100_000_000, max_response_tokens=64)))
    assert str(error.value) == (
        f"An SFT batch of {len(demonstrations)} responses of up to {longest} tokens needs about "
        f"{needed / 2**20:,.0f} MB for the model's word scores ({vocabulary} per token), more than the 1 MB free here; "
        "lower the batch size or the longest response trained on."
    )
    comparisons = [Comparison(p, " ".join([GOOD[0]] * 30), " ".join([BAD[0]] * 30)) for p in PROMPTS[:6]]
    with pytest.raises(
        PeftlabError, match=r"^A DPO batch of 6 comparisons \(12 sequences of up to \d+ tokens\) needs "
    ):
        next(train_dpo(tiny_causal.model, tiny_causal.tokenizer, comparisons, DPOConfig(batch_size=100_000_000)))


def _shipping(model, **generation_options):
    """A copy of `model` whose own generation_config carries `generation_options`, as a Hub model may ship them."""
    shipped = copy.deepcopy(model)
    for name, value in generation_options.items():
        setattr(shipped.generation_config, name, value)
    return shipped


SHIPPED_SAMPLING = {"repetition_penalty": 5.0, "min_new_tokens": 6, "min_p": 0.5, "no_repeat_ngram_size": 1}


def test_samples_ignore_the_sampling_options_a_model_ships(tiny_causal):
    """generate() applies a model's own generation_config to every option left unset; rollouts must not."""
    shipped = _shipping(tiny_causal.model, **SHIPPED_SAMPLING)
    plain = sample_responses(tiny_causal.model, tiny_causal.tokenizer, PROMPTS, max_new_tokens=8, seed=3)
    sampled = sample_responses(shipped, tiny_causal.tokenizer, PROMPTS, max_new_tokens=8, seed=3, for_ppo=True)
    assert torch.equal(sampled.input_ids, plain.input_ids) and sampled.responses == plain.responses
    # the shipped options do change what generate() draws when it is left to fill them in
    input_ids, attention_mask = encode_prompts(tiny_causal.tokenizer, PROMPTS)
    with seeded(3):
        bent = shipped.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=GenerationConfig(
                do_sample=True, top_k=0, max_new_tokens=8, pad_token_id=tiny_causal.tokenizer.pad_token_id
            ),
        )
    assert not torch.equal(bent[:, input_ids.shape[1] :], plain.response_ids[:, : bent.shape[1] - input_ids.shape[1]])


@pytest.mark.parametrize("do_sample", [True, False])
def test_a_shipped_do_sample_is_overridden_not_refused(tiny_causal, do_sample):
    """Qwen2.5- and Llama-3-Instruct ship do_sample=true, and every stage refused them: "sets do_sample=True, which
    changes how responses are sampled"; rollouts always sample, whatever the model ships."""
    plain = sample_responses(tiny_causal.model, tiny_causal.tokenizer, PROMPTS, max_new_tokens=8, seed=3)
    shipped = _shipping(tiny_causal.model, do_sample=do_sample)
    sampled = sample_responses(shipped, tiny_causal.tokenizer, PROMPTS, max_new_tokens=8, seed=3, for_ppo=True)
    assert sampled.responses == plain.responses


def test_a_shipped_min_length_is_refused_unless_it_is_off(tiny_causal):
    """min_new_tokens = 0 turns the minimum off; min_length is left unset (both set make transformers warn at every
    call), so a model's own min_length must be 0."""
    sample_responses(_shipping(tiny_causal.model, min_length=0), tiny_causal.tokenizer, PROMPTS[:1], max_new_tokens=2)
    with pytest.raises(PeftlabError, match=r"^The model's generation config sets min_length=40, which changes how"):
        sample_responses(_shipping(tiny_causal.model, min_length=40), tiny_causal.tokenizer, PROMPTS[:1])


def test_a_shipped_sampling_option_without_an_off_value_is_refused(tiny_causal):
    shipped = _shipping(tiny_causal.model, bad_words_ids=[[5]])
    with pytest.raises(PeftlabError) as error:
        sample_responses(shipped, tiny_causal.tokenizer, PROMPTS[:1], max_new_tokens=2)
    assert str(error.value) == (
        "The model's generation config sets bad_words_ids=[[5]], which changes how responses are sampled, so they "
        "would not be the policy's own samples; remove bad_words_ids from its generation_config.json."
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda lm: list(train_sft(lm, [], SFTConfig())), r"SFT needs at least one demonstration"),
        (lambda lm: SFTConfig(method="qlora"), r"SFT method must be one of lora, full, not 'qlora'"),
        (
            lambda lm: list(
                train_reward_model(
                    lm.model,
                    lm.tokenizer,
                    [Comparison("p", "same", "same ")],
                    [Comparison("p", "a", "b")],
                    RewardConfig(),
                )
            ),
            r"same text as chosen and rejected",
        ),
        (
            lambda lm: list(
                train_reward_model(lm.model, lm.tokenizer, [], [Comparison("p", "a", "b")], RewardConfig())
            ),
            r"no training comparisons",
        ),
        (
            lambda lm: collect_comparisons(lm.model, lm.tokenizer, PROMPTS[:1], VaderLabeler(), k=1),
            r"K of at least 2 responses per prompt, not 1",
        ),
        (lambda lm: PipelineConfig(k=1), r"^K samples ranked per prompt must be at least 2, not 1\.$"),
        # the box's own sentence, as every other box says it (the KL controller said "... beta must be a number of
        # at least 0, got -0.1")
        (lambda lm: PPOConfig(beta=-0.1, adaptive_kl=False), r"^The KL coefficient β must be 0 or more, not -0\.1\.$"),
        (lambda lm: PPOConfig(beta=-0.1, adaptive_kl=True), r"^The KL coefficient β must be 0 or more, not -0\.1\.$"),
        (
            lambda lm: PPOConfig(beta=0, adaptive_kl=True),
            r"^The adaptive KL coefficient cannot start at 0: it is steered by multiplying it, so it would stay 0; ",
        ),
        (  # the first batch (KL 0, far below the target) multiplied β by 1 - 0.2 x 16 / 3.2 = 0: the penalty off
            lambda lm: PPOConfig(adaptive_kl=True, batch_size=16, minibatch_size=8, kl_horizon=3.2),
            r"^With adaptive β, the KL horizon \(3\.2\) must be above 3\.2 responses \(0\.2 × the batch of 16\): a "
            r"batch far below the target KL multiplies β by 1 − 0\.2 × batch / horizon, which would be 0 or less\.$",
        ),
        (lambda lm: PPOConfig(top_p=0.9), r"Sampling with top_p 0.9 draws responses from a reshaped distribution"),
        (
            lambda lm: PPOConfig(minibatch_size=32, batch_size=16),
            r"minibatch \(32\) cannot be larger than the batch \(16\)",
        ),
        (lambda lm: PPOConfig(ptx_coef=-1), r"PPO-ptx coefficient must be 0 or more"),
        (lambda lm: PipelineConfig(labeler="grumpy"), r"Unknown labeler 'grumpy'; choose one of vader-positive"),
        (  # it would have sampled K responses for each of 25 prompts and listed their K(K-1)/2 pairs
            lambda lm: PipelineConfig(k=1_000_000),
            r"^K is 1000000 responses per prompt; peftlab ranks at most 64 \(InstructGPT ranks 4 to 9\), as each is "
            r"sampled for every ranked prompt and ranked against every other\.$",
        ),
        (lambda lm: PipelineConfig(k=65), r"^K is 65 responses per prompt; peftlab ranks at most 64 "),
        (lambda lm: RewardConfig(lora_r=-1), r"LoRA rank must be 0 \(head only\) or more"),
    ],
)
def test_bad_rlhf_input_is_one_clear_sentence(tiny_causal, make, message):
    with pytest.raises(PeftlabError, match=message):
        make(tiny_causal)


def test_the_largest_k_and_more_pairs_per_prompt_than_comparisons_are_accepted():
    assert PipelineConfig(k=64).k == 64 and PipelineConfig(k=8, rm_pairs=6).k == 8  # the pairs are then cut


def test_the_held_out_report_splits_pairs_into_thirds_by_the_labeler_s_margin():
    """Nine pairs, margins 0.1..0.9: the three smallest are the near ties, wrong twice; the clear ones all right."""
    correct = [False, True, False, True, True, False, True, True, True]
    margins = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    report = margin_report(correct[::-1], margins[::-1])  # order does not matter
    assert report.accuracy.value == pytest.approx(6 / 9)
    assert [(g["group"], g["from"], g["to"], g["accuracy"].value) for g in report.by_margin] == [
        ("near ties", 0.1, 0.3, pytest.approx(1 / 3)),
        ("middle", 0.4, 0.6, pytest.approx(2 / 3)),
        ("clear", 0.7, 0.9, 1.0),
    ]
    assert [row["comparisons"] for row in report.table()][:4] == [
        "all held-out",
        "near ties (margin 0.10 to 0.30)",
        "middle (margin 0.40 to 0.60)",
        "clear (margin 0.70 to 0.90)",
    ]
    assert margin_report(correct, None).by_margin == []  # a person's rankings: no margins


def test_the_held_out_report_counts_one_prompt_s_pairs_as_correlated():
    """Every pair of a prompt's K responses shares them and the model's skill on that prompt: Wilson's interval on
    them as independent covered a simulated reward model's accuracy in 67 % of runs. Two prompts, one all right and
    one all wrong, are nearly nothing to go on."""
    credit, prompts = [1.0] * 6 + [0.0] * 6, ["p1"] * 6 + ["p2"] * 6
    clustered = margin_report(credit, None, prompts).accuracy
    assert clustered == clustered_proportion(credit, prompts) and clustered.trials == 12
    independent = margin_report(credit, None).accuracy
    assert clustered.low < 0.05 < independent.low and clustered.high > 0.95 > independent.high
    thirds = margin_report(credit, [0.1 * i for i in range(12)], prompts).by_margin
    assert [g["accuracy"] for g in thirds] == [
        clustered_proportion([1.0] * 4, ["p1"] * 4),
        clustered_proportion([1, 1, 0, 0], ["p1", "p1", "p2", "p2"]),
        clustered_proportion([0.0] * 4, ["p2"] * 4),
    ]
    with pytest.raises(ValueError, match="11 prompts for 12 pairs"):
        margin_report(credit, None, prompts[1:])


def test_a_tie_counts_half_in_the_held_out_report():
    """Credits 1, 1, 1/2, 0: 2.5 of 4. Wilson's interval on a half count is the same closed form as on whole ones."""
    z, n, p = 1.959963984540054, 4, 2.5 / 4
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    share = margin_report([1.0, 1.0, 0.5, 0.0], None).accuracy
    assert share.value == 0.625 and share.trials == 4
    assert share.low == pytest.approx(centre - half, abs=1e-9) and share.high == pytest.approx(centre + half, abs=1e-9)


def test_a_reward_model_no_better_than_a_coin_toss_is_said_to_be_one():
    """A reward model at 50 % on its held-out pairs said "Next: PPO". Wilson's 95 % interval (scipy's binomtest) of
    6 of 9 is 35 % to 88 %: a coin; of 19 of 20 it starts at 76 %; of 1 of 20 it ends at 24 %, below a coin."""
    coin = margin_report([True] * 6 + [False] * 3, None)
    assert coin.chance_note() == (
        "This reward model cannot be told apart from a coin toss on 9 held-out comparisons (its 95 % interval reaches "
        "50 %): PPO against it would follow noise. Train it for more steps or on more comparisons first."
    )
    assert margin_report([True] * 19 + [False], None).chance_note() is None
    reversed_ = margin_report([True] + [False] * 19, None).chance_note()
    assert reversed_.startswith(
        "This reward model ranks its 20 held-out comparisons the wrong way round more often than not (its 95 % "
        "interval lies below 50 %): PPO against it would learn the opposite of the rankings."
    )


def test_a_saved_policy_holds_the_sft_adapter_it_sits_on_and_loads_as_its_card_says(tiny_causal, sft, tmp_path):
    """The PPO and DPO zips held their adapter alone, which names the base model: loaded there it was not the policy
    trained on the SFT model. The SFT adapter comes along in sft/, and the card's recipe gives the policy back."""
    from huggingface_hub import ModelCard
    from peft import PeftModel

    from peftlab.rlhf.session import RLHFSession

    _, _, sft_result, _ = sft
    config = DPOConfig(steps=2, batch_size=2, lora_r=2, learning_rate=1e-2)
    dpo = run(train_dpo(sft_result.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:4]), config))[1]
    folder = RLHFSession(lm=tiny_causal, sft=sft_result, dpo=dpo).save("dpo", tmp_path / "dpo")

    card = ModelCard.load(folder / "README.md")
    assert {"peftlab", "rlhf", "dpo"} <= set(card.data.tags) and card.data.library_name == "peft"
    assert 'sft = PeftModel.from_pretrained(base, "sft").merge_and_unload()' in card.text
    assert "with no reward model" in card.text  # DPO's card once said "SFT -> reward model -> DPO"
    sft_card = ModelCard.load(folder / "sft" / "README.md")  # PEFT's blank template before
    assert sft_card.text.startswith("\n# SFT on `tiny-llama`\n\nMade by peftlab's RLHF tab: supervised fine-tuning")
    assert sft_card.data.library_name == "peft" and 'PeftModel.from_pretrained(base, ".")' in sft_card.text
    # the card's recipe, with the tiny model standing in for from_pretrained(base model)
    base = copy.deepcopy(tiny_causal.model)
    merged = PeftModel.from_pretrained(base, str(folder / "sft")).merge_and_unload()
    policy = PeftModel.from_pretrained(merged, str(folder)).eval()
    input_ids, attention_mask = encode_prompts(tiny_causal.tokenizer, PROMPTS[:2])
    real = attention_mask.bool()  # the padding's logits are whatever the attention implementation leaves there

    def logits(model):
        with torch.no_grad():
            return model(input_ids=input_ids, attention_mask=attention_mask).logits[real]

    # in fp32: the trained policy's own forward runs under the Trainer's mixed precision where the CPU has bf16
    trained = dpo.policy.get_base_model()  # the model with the adapter in place
    torch.testing.assert_close(logits(policy), logits(trained), atol=1e-5, rtol=0)
    alone = PeftModel.from_pretrained(copy.deepcopy(tiny_causal.model), str(folder)).eval()
    assert not torch.allclose(logits(alone), logits(trained), atol=1e-3)  # the adapter alone is another model


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"reward": RewardConfig(lora_r=100_000)}, "reward model's"),
        ({"route": "dpo", "dpo": DPOConfig(lora_r=100_000)}, "DPO"),
        ({"ppo": PPOConfig(lora_r=100_000)}, "PPO"),
        ({"sft": SFTConfig(lora_r=100_000)}, "SFT"),
    ],
)
def test_a_lora_rank_above_the_hidden_size_is_refused_before_sft(tiny_causal, changes, named):
    """A reward model's LoRA rank of 100000 was refused only after SFT and the sampling of the responses to rank (a
    23-minute wait at the app's defaults); every stage's rank is looked at before any work."""
    data = RLHFData(PROMPTS[:6], PROMPTS[6:], [Demonstration(p, r) for p in PROMPTS[:6] for r in GOOD])
    config = PipelineConfig(labeler="concise", rm_pairs=12, rm_heldout_prompts=2, k=3, **changes)
    hidden = tiny_causal.model.config.hidden_size
    events = []
    with pytest.raises(PeftlabError) as raised:
        run_pipeline(tiny_causal, data, config, on_event=lambda stage, event: events.append(stage))
    assert str(raised.value) == (
        f"The {named} LoRA rank is 100000, above the model's hidden size of {hidden}; use at most {hidden}."
    )
    assert events == []


def test_samples_the_labeler_scores_all_alike_are_told_with_the_settings_to_change(tiny_causal, monkeypatch):
    """One-token answers all scored 0 by VADER: "The reward model has no training comparisons; rank more prompts (or
    lower ties)" named no setting there is."""
    monkeypatch.setattr(VaderLabeler, "score", lambda self, prompt, response: 0.0)
    data = RLHFData(PROMPTS[:6], PROMPTS[6:], [Demonstration(p, r) for p in PROMPTS[:6] for r in GOOD])
    config = PipelineConfig(rm_pairs=12, rm_heldout_prompts=2, k=3, max_new_tokens=1, sft=SFTConfig(steps=1))
    with pytest.raises(PeftlabError) as raised:
        run_pipeline(tiny_causal, data, config)
    assert str(raised.value) == (
        "The labeler scored every pair of the SFT model's sampled responses alike (tied pairs are dropped), so there "
        "is no comparison to learn from; sample longer responses (max new tokens, 1 now) or more of them per prompt "
        "(K, 3 now)."
    )


def test_comparisons_that_differ_only_past_what_the_reward_model_reads_are_said(tiny_causal):
    """Pairs sharing a 120-word opening trained the reward model at loss 0.693 throughout, with no word of why: it
    reads a response's first 63 tokens."""
    from peftlab.rlhf.reward import cut_ties_note

    opening = " ".join(["The film opens slowly and the cast is large."] * 15)
    pairs = [
        Comparison(PROMPTS[0], f"{opening} I loved it.", f"{opening} I hated it."),
        Comparison(PROMPTS[1], "I loved it.", "I hated it."),
    ]
    assert cut_ties_note(tiny_causal.tokenizer, pairs) == (
        "1 of the 2 comparisons differ only after the first 63 tokens of their responses, all the reward model and "
        "DPO read: they are ties there, and nothing is learnt from them; let the responses differ earlier."
    )
    assert cut_ties_note(tiny_causal.tokenizer, pairs[1:]) is None
    # as the reward model reads them: one batch row each, the same tokens
    batch = encode_pairs(tiny_causal.tokenizer, [PROMPTS[0]] * 2, [pairs[0].chosen, pairs[0].rejected])
    assert torch.equal(batch.input_ids[0], batch.input_ids[1])


def test_a_stage_run_again_says_what_it_would_drop():
    from peftlab.rlhf.session import RLHFSession

    held = object()  # any trained stage
    assert RLHFSession(sft=held).dropped_by("sft") == ""
    assert RLHFSession(sft=held, reward=held).dropped_by("sft") == "the reward model"
    assert RLHFSession(sft=held, reward=held, dpo=held).dropped_by("sft") == "the reward model and DPO"
    session = RLHFSession(sft=held, reward=held, ppo=held, dpo=held)
    assert session.dropped_by("sft") == "the reward model, PPO and DPO"
    assert session.dropped_by("reward") == "PPO and DPO"


def test_rankings_too_few_to_train_a_reward_model_are_refused_before_the_stage_s_warnings():
    """With DPO trained and no rankings saved, "Train the reward model" from "my rankings" first asked to agree to
    drop DPO, then said to rank first, in turns press after press: the source is looked at before any warning."""
    from peftlab.rlhf.session import RLHFSession

    session = RLHFSession(sft=object(), dpo=object())
    with pytest.raises(PeftlabError, match=r"^Rank responses for at least 2 prompts first: one part trains"):
        session.check_source("my rankings")
    session.human.add("Write a review of Film 1.", ["Great.", "Dull."], [1, 2])
    with pytest.raises(PeftlabError, match=r"^Rank responses for at least 2 prompts first"):
        session.check_source("my rankings")  # one prompt: nothing left to test on
    session.human.add("Write a review of Film 2.", ["Fine.", "Awful."], [1, 2])
    session.check_source("my rankings")


def test_a_kl_below_zero_is_explained_the_same_in_the_app_and_on_the_command_line():
    """The CLI printed "KL to the SFT model -0.14 nats" without the app's sentence on what a negative KL means."""
    import pandas as pd

    from peftlab.rlhf.evaluation import PolicyComparison

    summary = {"prompts": 4, "samples_per_prompt": 2, "ppo_mean_kl": 0.8, "dpo_mean_kl": -0.14}
    comparison = PolicyComparison(pd.DataFrame(), summary, ["ppo", "dpo"])
    assert comparison.kl_note() == (
        "A KL below 0 is the sampling error of 8 responses: that policy cannot be told apart from SFT on these prompts."
    )
    assert PolicyComparison(pd.DataFrame(), summary | {"dpo_mean_kl": 0.0}, ["ppo", "dpo"]).kl_note() is None

    # DPO answered word for word as SFT, at a KL of 0.11: said, as the KL is of the probabilities, not the words
    table = pd.DataFrame(
        {"sft_response": ["Great.", "Fine."], "dpo_response": ["Great.", "Good."], "dpo_kl": [0.11, 0.4]}
    )
    same = PolicyComparison(table, {"prompts": 2, "samples_per_prompt": 1, "dpo_mean_kl": 0.25}, ["dpo"])
    assert same.kl_note() == (
        "A response word for word SFT's still has a KL (DPO): it measures how much likelier or less likely the policy "
        "made those words, not whether they differ."
    )
    table["dpo_kl"] = [0.0, 0.4]  # the same words at the same probabilities: nothing to explain
    assert PolicyComparison(table, same.summary, ["dpo"]).kl_note() is None


def test_a_route_far_past_any_tuned_kl_is_called_diverged():
    """PPO and DPO at learning rate 1000 said "done" and scored gibberish at 80.7 nats from SFT with no word."""
    import pandas as pd

    from peftlab.rlhf.evaluation import DIVERGED_KL, PolicyComparison

    summary = {"prompts": 2, "samples_per_prompt": 2, "ppo_mean_kl": 80.74, "dpo_mean_kl": 2.0}
    assert PolicyComparison(pd.DataFrame(), summary, ["ppo", "dpo"]).kl_note() == (
        "PPO is 80.7 nats per response from SFT, where a tuned run drifts a few: its training diverged (its answers "
        "need not read as text any more), so its scores say little; train it again with a smaller learning rate."
    )
    at_bound = summary | {"ppo_mean_kl": DIVERGED_KL}
    assert PolicyComparison(pd.DataFrame(), at_bound, ["ppo", "dpo"]).kl_note() is None
