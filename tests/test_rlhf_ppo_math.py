"""Tests for peftlab.rlhf.ppo_math: every function against numbers worked out by hand in the test."""

from __future__ import annotations

import math

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.rlhf.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    last_token_indices,
    masked_mean,
    pairwise_reward_loss,
    sampling_kl_problem,
    whiten,
)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------------------------- masks


def test_last_token_indices_finds_the_end_of_each_response():
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert last_token_indices(mask).tolist() == [2, 0, 3]
    assert last_token_indices(mask.bool()).tolist() == [2, 0, 3]


def test_last_token_indices_refuses_a_row_without_response():
    with pytest.raises(PeftlabError, match="has no response token"):
        last_token_indices(torch.tensor([[1, 1], [0, 0]]))


def test_masked_mean_ignores_padding_and_refuses_an_empty_mask():
    x = t([[1.0, 2.0, 99.0], [3.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx((1 + 2 + 3) / 3)
    with pytest.raises(PeftlabError, match="selects no token"):
        masked_mean(x, torch.zeros(2, 3))


def test_whiten_by_hand():
    x = t([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean = 2, population variance = (1 + 0 + 1) / 3 = 2/3, std = 0.816497; padding -> 0
    s = math.sqrt(2 / 3)
    assert torch.allclose(whiten(x, mask), t([[-1 / s, 0.0, 1 / s, 0.0]]), atol=1e-6)
    assert torch.allclose(whiten(x, mask, shift_mean=False), t([[2 - 1 / s, 2.0, 2 + 1 / s, 0.0]]), atol=1e-6)


# ---------------------------------------------------------------- KL-penalised rewards


def test_kl_penalized_rewards_by_hand_with_rows_of_different_lengths():
    # row 0: a prompt token (masked), then 3 response tokens; row 1: 2 response tokens, then padding.
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    logprobs = t([[-9.0, -1.0, -2.0, -0.5], [-0.7, -0.2, -5.0, -5.0]])
    ref_logprobs = t([[-3.0, -1.5, -1.0, -0.5], [-1.2, -0.3, -1.0, -1.0]])
    scores = t([1.5, -0.4])
    rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, beta=0.2)
    # kl = logprob - ref on response tokens: row 0: -1+1.5=0.5, -2+1=-1, -0.5+0.5=0; row 1: 0.5, 0.1
    assert torch.allclose(kl, t([[0.0, 0.5, -1.0, 0.0], [0.5, 0.1, 0.0, 0.0]]))
    # rewards = -0.2 * kl, plus the score on the last response token (row 0: position 3, row 1: position 1)
    assert torch.allclose(rewards, t([[0.0, -0.1, 0.2, 0.0 + 1.5], [-0.1, -0.02 - 0.4, 0.0, 0.0]]))


def test_kl_penalized_rewards_with_beta_zero_is_the_score_alone():
    mask = torch.tensor([[1, 1, 1]])
    rewards, _ = kl_penalized_rewards(t([2.0]), t([[-1.0, -1.0, -1.0]]), t([[-3.0, 0.0, -2.0]]), mask, beta=0.0)
    assert torch.allclose(rewards, t([[0.0, 0.0, 2.0]]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beta": -0.1}, "beta must be a number of at least 0"),
        ({"scores": t([1.0, 2.0, 3.0])}, r"scores must have shape \(2,\)"),
        ({"ref_logprobs": t([[0.0, 0.0]])}, "must all have one"),
        ({"mask": torch.tensor([[1, 1], [0, 0]])}, "has no response token"),
    ],
)
def test_kl_penalized_rewards_refuses_bad_input(kwargs, message):
    args = {
        "scores": t([1.0, 2.0]),
        "logprobs": t([[0.0, 0.0], [0.0, 0.0]]),
        "ref_logprobs": t([[0.0, 0.0], [0.0, 0.0]]),
        "mask": torch.tensor([[1, 1], [1, 0]]),
        "beta": 0.1,
    }
    with pytest.raises(PeftlabError, match=message):
        kl_penalized_rewards(**{**args, **kwargs})


# ---------------------------------------------------------------- GAE


def test_gae_by_hand_with_rows_of_different_lengths():
    gamma, lam = 0.9, 0.95  # gamma * lam = 0.855
    rewards = t([[0.0, 0.0, 1.0], [0.2, -1.0, 5.0]])
    values = t([[0.5, 0.4, 0.3], [0.1, 0.6, 9.0]])  # row 1's last position is padding: 5.0 and 9.0 must not leak
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # row 0: delta2 = 1.0 + 0.9*0 - 0.3 = 0.7                   A2 = 0.7
    #        delta1 = 0.0 + 0.9*0.3 - 0.4 = -0.13                A1 = -0.13 + 0.855*0.7 = 0.4685
    #        delta0 = 0.0 + 0.9*0.4 - 0.5 = -0.14                A0 = -0.14 + 0.855*0.4685 = 0.2605675
    # row 1: delta1 = -1.0 + 0.9*0 - 0.6 = -1.6 (episode ends)   A1 = -1.6
    #        delta0 = 0.2 + 0.9*0.6 - 0.1 = 0.64                 A0 = 0.64 + 0.855*(-1.6) = -0.728
    assert torch.allclose(advantages, t([[0.2605675, 0.4685, 0.7], [-0.728, -1.6, 0.0]]))
    # returns = A + V on response tokens: 0.2605675+0.5, 0.4685+0.4, 0.7+0.3; -0.728+0.1, -1.6+0.6
    assert torch.allclose(returns, t([[0.7605675, 0.8685, 1.0], [-0.628, -1.0, 0.0]]))


def test_gae_ignores_a_masked_prompt_before_the_response():
    rewards = t([[7.0, 0.0, 1.0]])
    values = t([[3.0, 0.2, 0.5]])
    advantages, returns = gae(rewards, values, torch.tensor([[0, 1, 1]]), gamma=1.0, lam=0.5)
    # A2 = 1 + 0 - 0.5 = 0.5; A1 = (0 + 0.5 - 0.2) + 0.5*0.5 = 0.55; the prompt position gets 0
    assert torch.allclose(advantages, t([[0.0, 0.55, 0.5]]))
    assert torch.allclose(returns, t([[0.0, 0.75, 1.0]]))


def test_gae_with_lambda_one_and_gamma_one_returns_the_rewards_to_go():
    rewards = t([[0.5, -0.25, 2.0, 0.0]])
    values = t([[10.0, -3.0, 0.7, 4.0]])
    _, returns = gae(rewards, values, torch.tensor([[1, 1, 1, 0]]), gamma=1.0, lam=1.0)
    # Monte Carlo: 0.5-0.25+2 = 2.25, -0.25+2 = 1.75, 2.0; the values cancel out
    assert torch.allclose(returns, t([[2.25, 1.75, 2.0, 0.0]]))


@pytest.mark.parametrize("gamma, lam, name", [(1.1, 0.95, "gamma"), (0.9, -0.1, "lam")])
def test_gae_refuses_parameters_outside_zero_one(gamma, lam, name):
    with pytest.raises(PeftlabError, match=f"parameter {name} must be between 0 and 1"):
        gae(t([[1.0]]), t([[0.0]]), torch.tensor([[1]]), gamma, lam)


# ---------------------------------------------------------------- PPO losses


def test_clipped_policy_loss_by_hand():
    # clip range 0.2, so the ratio is clipped to [0.8, 1.2]
    # a: A=+1.0, ratio 1.5: -1.5 vs clipped -1.2 -> -1.2 (clipped)
    # b: A=-1.0, ratio 0.5: 0.5 vs clipped 0.8  -> 0.8 (clipped)
    # c: A=+2.0, ratio 1.1: -2.2 vs -2.2       -> -2.2 (inside the range)
    # d: A=-0.5, ratio 1.5: 0.75 vs 0.6         -> 0.75 (the pessimistic unclipped term)
    # e: masked (ratio 10, A=100), then padding
    old = t([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    logprobs = torch.log(t([[1.5, 0.5, 1.1], [1.5, 10.0, 1.0]])).requires_grad_()
    advantages = t([[1.0, -1.0, 2.0], [-0.5, 100.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    loss, clip_fraction, approx_kl = clipped_policy_loss(logprobs, old, advantages, mask, clip_range=0.2)
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2 + 0.75) / 4)  # -0.4625
    assert clip_fraction.item() == pytest.approx(2 / 4)
    # k3 = (ratio - 1) - log ratio: a, d: 0.5 - 0.4054651; b: -0.5 + 0.6931472; c: 0.1 - 0.0953102
    assert approx_kl.item() == pytest.approx((0.0945349 * 2 + 0.1931472 + 0.0046898) / 4, abs=1e-6)
    loss.backward()
    # clipped tokens get no gradient; elsewhere d/dlogprob of -A * ratio / 4 is -A * ratio / 4
    assert torch.allclose(logprobs.grad, t([[0.0, 0.0, -2.0 * 1.1 / 4], [0.5 * 1.5 / 4, 0.0, 0.0]]))


def test_clipped_value_loss_by_hand():
    # clip range 0.2 around the old values
    # 1: old 1.0, V 1.5, R 2.0: (1.5-2)^2 = 0.25, clipped V 1.2: (1.2-2)^2 = 0.64 -> 0.64
    # 2: old 1.0, V 1.1, R 0.0: 1.21, within the range        -> 1.21
    # 3: old 0.0, V -0.5, R -1.0: 0.25, clipped V -0.2: 0.64  -> 0.64
    # 4: old 0.0, V 0.5, R -1.0: 2.25, clipped V 0.2: 1.44    -> 2.25
    values = t([[1.5, 1.1, 50.0], [-0.5, 0.5, 50.0]]).requires_grad_()
    old_values = t([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    returns = t([[2.0, 0.0, -50.0], [-1.0, -1.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    loss = clipped_value_loss(values, old_values, returns, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 1.21 + 0.64 + 2.25) / 4)  # 0.5925
    loss.backward()
    # 1 and 3 take the clipped term, whose value no longer moves: no gradient; 2: (1.1-0)/4; 4: (0.5+1)/4
    assert torch.allclose(values.grad, t([[0.0, 1.1 / 4, 0.0], [0.0, 1.5 / 4, 0.0]]))


@pytest.mark.parametrize("clip_range", [0.0, -0.2, float("nan")])
def test_losses_refuse_a_clip_range_that_is_not_positive(clip_range):
    x, mask = t([[0.0]]), torch.tensor([[1]])
    with pytest.raises(PeftlabError, match="clip range must be a number above 0"):
        clipped_policy_loss(x, x, x, mask, clip_range)
    with pytest.raises(PeftlabError, match="clip range must be a number above 0"):
        clipped_value_loss(x, x, x, mask, clip_range)


def test_losses_refuse_mismatched_shapes():
    with pytest.raises(PeftlabError, match=r"advantages \(2, 3\)"):
        clipped_policy_loss(t([[0.0, 0.0]]), t([[0.0, 0.0]]), torch.zeros(2, 3), torch.ones(1, 2), 0.2)


# ---------------------------------------------------------------- reward model loss


def test_pairwise_reward_loss_by_hand():
    r_chosen = t([2.0, 0.0, -1.0])
    r_rejected = t([1.0, 0.0, 1.0])
    loss, accuracy = pairwise_reward_loss(r_chosen, r_rejected)
    # margins 1, 0, -2: -log sigmoid(m) = log(1 + e^-m) = 0.3132617, 0.6931472, 2.1269280
    assert loss.item() == pytest.approx((0.3132617 + 0.6931472 + 2.1269280) / 3, abs=1e-6)
    assert accuracy.item() == pytest.approx((1 + 0.5 + 0) / 3)  # a tie states no preference: half, as a coin


def test_pairwise_reward_loss_is_finite_for_large_margins():
    loss, accuracy = pairwise_reward_loss(t([-100.0, 100.0]), t([100.0, -100.0]))
    assert loss.item() == pytest.approx((200.0 + 0.0) / 2)  # -log sigmoid(-200) = 200, -log sigmoid(200) = 0
    assert accuracy.item() == 0.5


def test_pairwise_reward_loss_refuses_mismatched_shapes():
    with pytest.raises(PeftlabError, match="equally long, non-empty 1-D"):
        pairwise_reward_loss(t([1.0, 2.0]), t([1.0]))
    with pytest.raises(PeftlabError, match="equally long, non-empty 1-D"):
        pairwise_reward_loss(t([]), t([]))


# ---------------------------------------------------------------- KL controllers


def test_adaptive_kl_controller_by_hand():
    controller = AdaptiveKLController(init_beta=0.2, target=6.0, horizon=10000)
    # KL 9: 9/6 - 1 = 0.5, clipped to 0.2; beta = 0.2 * (1 + 0.2 * 256/10000) = 0.2 * 1.00512
    assert controller.update(9.0, 256) == pytest.approx(0.201024)
    # KL 3: 3/6 - 1 = -0.5, clipped to -0.2; beta = 0.201024 * (1 - 0.00512)
    controller.update(3.0, 256)
    assert controller.value == pytest.approx(0.19999475712)
    # KL 6.6: error 0.1 (inside the clip); beta = 0.19999475712 * (1 + 0.1 * 1000/10000)
    controller.update(6.6, 1000)
    assert controller.value == pytest.approx(0.2019947046912)


def test_fixed_kl_controller_never_changes():
    controller = FixedKLController(0.05)
    assert controller.update(100.0, 256) == 0.05
    assert controller.value == 0.05


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"init_beta": -1.0}, "initial KL coefficient"),
        ({"target": 0.0}, "target KL must be a number above 0"),
        ({"horizon": -5.0}, "KL horizon must be a number above 0"),
    ],
)
def test_adaptive_kl_controller_refuses_bad_settings(kwargs, message):
    with pytest.raises(PeftlabError, match=message):
        AdaptiveKLController(**{"init_beta": 0.1, "target": 6.0, "horizon": 10000, **kwargs})


def test_fixed_kl_controller_refuses_negative_beta():
    with pytest.raises(PeftlabError, match="beta must be a number of at least 0"):
        FixedKLController(-0.1)


# ---------------------------------------------------------------- sampling settings


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, None, 1.0), (1, 0, None), (None, None, None)])
def test_sampling_kl_problem_accepts_plain_sampling(temperature, top_k, top_p):
    assert sampling_kl_problem(temperature, top_k, top_p) is None


@pytest.mark.parametrize(
    "temperature, top_k, top_p, named",
    [
        (0.7, None, 1.0, "temperature 0.7"),
        (1.0, 50, 1.0, "top_k 50"),
        (1.0, 0, 0.9, "top_p 0.9"),
        (1.3, 10, 0.95, "temperature 1.3 and top_k 10 and top_p 0.95"),
    ],
)
def test_sampling_kl_problem_names_what_reshapes_the_distribution(temperature, top_k, top_p, named):
    problem = sampling_kl_problem(temperature, top_k, top_p)
    assert named in problem and "KL" in problem and "temperature 1, top_k 0 and top_p 1" in problem
