"""The math of RLHF's PPO stage as small pure torch functions, with no model code.

Conventions shared by every function:
- B = batch (responses), T = token positions. Per-token tensors are (B, T); position t of `logprobs`
  is the log-probability the policy gave to the response token at position t (the caller aligns logits
  and tokens).
- `mask` (B, T) is 1 on response tokens and 0 elsewhere (prompt tokens, padding); it may be bool, int
  or float. The response tokens of a row are contiguous; rows may have different lengths.
- Losses are masked means over response tokens, so a long response does not count more than the
  tokens it has, and padding never counts.

References: PPO-clip (Schulman et al. 2017), GAE (Schulman et al. 2016), per-token KL penalty to the
reference (SFT) model and the adaptive KL coefficient (Ziegler et al. 2019), pairwise reward loss of
InstructGPT (Ouyang et al. 2022).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from peftlab.errors import PeftlabError

WHITEN_EPS = 1e-8
ADAPTIVE_KL_ERROR_CLIP = 0.2  # Ziegler et al. 2019 clip the proportional error to [-0.2, 0.2]


# ---------------------------------------------------------------- masks


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (a 0-dim tensor)."""
    mask = mask.to(x.dtype)
    count = mask.sum()
    if count.item() == 0:
        raise PeftlabError("The mask selects no token at all; every batch needs at least one response token.")
    return (x * mask).sum() / count


def last_token_indices(mask: torch.Tensor) -> torch.Tensor:
    """The position of each row's last response token (B,), for a (B, T) mask; every row needs one."""
    present = mask.to(torch.bool)  # (B, T)
    if not present.any(dim=1).all():
        raise PeftlabError("A row of the mask has no response token; every response needs at least one token.")
    T = present.shape[1]
    return T - 1 - present.flip(dims=[1]).to(torch.int8).argmax(dim=1)  # (B,): first 1 from the right


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise `x` to mean 0 and variance 1 over the masked positions; padding becomes 0.

    The variance is the population variance (divided by the number of tokens). With
    `shift_mean=False` the mean is added back, so only the scale changes.
    """
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(variance + WHITEN_EPS)  # (B, T)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


# ---------------------------------------------------------------- rollout: rewards and advantages


@torch.no_grad()
def kl_penalized_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * KL estimate on every response token, plus the score on the last one.

    The KL estimate of a token is logprob - ref_logprob (policy vs reference model, on the sampled
    token); it is unbiased only when the tokens were sampled from the policy itself (see
    `sampling_kl_problem`).

    Args: scores (B,) reward-model scores; logprobs, ref_logprobs, mask (B, T); beta >= 0.
    Returns: (rewards (B, T), kl (B, T)), both 0 outside the mask.
    """
    if not math.isfinite(beta) or beta < 0:
        raise PeftlabError(f"The KL coefficient beta must be a number of at least 0, got {beta!r}.")
    _check_shapes(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    B = logprobs.shape[0]
    if scores.shape != (B,):
        raise PeftlabError(f"The scores must have shape ({B},), one per response, got {tuple(scores.shape)}.")
    mask = mask.to(logprobs.dtype)
    kl = (logprobs - ref_logprobs) * mask  # (B, T)
    rewards = -beta * kl  # (B, T)
    rewards[torch.arange(B), last_token_indices(mask)] += scores.to(rewards.dtype)
    return rewards, kl


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response tokens of each row.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A after a
    row's last response token taken as 0 (the episode ends there). Returns = A + V.

    Args: rewards, values, mask (B, T); 0 <= gamma, lam <= 1.
    Returns: (advantages (B, T), returns (B, T)), both 0 outside the mask.
    """
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0 <= value <= 1:
            raise PeftlabError(f"The GAE parameter {name} must be between 0 and 1, got {value!r}.")
    _check_shapes(rewards=rewards, values=values, mask=mask)
    mask = mask.to(values.dtype)
    values = values * mask  # (B, T): padding after a row's end has value 0
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value, next_advantage = values[:, t], advantages[:, t]
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------- optimisation: losses


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO-clip surrogate loss: masked mean of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    ratio = exp(logprobs - old_logprobs), new policy over the policy that sampled the rollout.

    Args: logprobs (B, T) with gradient; old_logprobs, advantages, mask (B, T); clip_range eps > 0.
    Returns: (loss, clip_fraction, approx_kl), 0-dim tensors. clip_fraction is the share of tokens
    where the clipped term is the larger one (its gradient is cut off); approx_kl is the k3 estimate
    of KL(old || new), the mean of (ratio - 1) - log ratio, which is never negative.
    """
    _check_clip_range(clip_range)
    _check_shapes(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)  # (B, T)
    unclipped = -advantages * ratio  # (B, T)
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)  # (B, T)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = masked_mean(ratio - 1 - log_ratio, mask)
    return loss, clip_fraction, approx_kl


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """Clipped value loss: 0.5 * masked mean of max((V - R)^2, (V_clipped - R)^2).

    V_clipped = old_V + clip(V - old_V, -eps, eps) keeps the value head near its rollout estimate.

    Args: values (B, T) with gradient; old_values, returns, mask (B, T); clip_range eps > 0.
    Returns: the loss, a 0-dim tensor.
    """
    _check_clip_range(clip_range)
    _check_shapes(values=values, old_values=old_values, returns=returns, mask=mask)
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)  # (B, T)
    squared_errors = torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)  # (B, T)
    return 0.5 * masked_mean(squared_errors, mask)


def pairwise_reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward model's loss on N comparisons: mean of -log sigmoid(r_chosen - r_rejected).

    Args: r_chosen, r_rejected (N,) rewards of the preferred and the other response of each pair.
    Returns: (loss, accuracy), 0-dim tensors; accuracy is the mean `preference_credit`.
    """
    if r_chosen.ndim != 1 or r_chosen.shape != r_rejected.shape or r_chosen.shape[0] == 0:
        raise PeftlabError(
            f"The chosen and rejected rewards must be two equally long, non-empty 1-D tensors, "
            f"got shapes {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)}."
        )
    margin = r_chosen - r_rejected  # (N,)
    loss = -F.logsigmoid(margin).mean()
    return loss, preference_credit(margin.detach()).mean()


def preference_credit(margin: torch.Tensor) -> torch.Tensor:
    """Per comparison, whether the reward model agrees with it, from margin = r_chosen - r_rejected (any shape):
    1 above 0, 0 below, and 1/2 for a tie, where it states no preference and a coin would be right half the time.
    A fresh reward model (zero head) ties every pair and so scores 50 %, not 0 %.
    """
    return (margin > 0).to(margin.dtype) + 0.5 * (margin == 0).to(margin.dtype)


# ---------------------------------------------------------------- the KL coefficient


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. (2019): steer the observed KL towards a target.

    After each batch: error = clip(KL / target - 1, -0.2, 0.2) and beta <- beta * (1 + error * n_steps / horizon),
    so beta grows while the policy drifts further from the reference than `target` and shrinks otherwise.
    """

    def __init__(self, init_beta: float, target: float, horizon: float):
        if not math.isfinite(init_beta) or init_beta < 0:
            raise PeftlabError(f"The initial KL coefficient must be a number of at least 0, got {init_beta!r}.")
        if init_beta == 0:  # the update multiplies beta: from 0 it would stay 0, the penalty silently off
            raise PeftlabError(
                "The adaptive KL coefficient cannot start at 0: it is steered by multiplying it, so it would stay 0; "
                "start β above 0 (0.3 is the default) or turn adaptive β off."
            )
        if not math.isfinite(target) or target <= 0:
            raise PeftlabError(f"The target KL must be a number above 0, got {target!r}.")
        if not math.isfinite(horizon) or horizon <= 0:
            raise PeftlabError(f"The KL horizon must be a number above 0, got {horizon!r}.")
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust beta after `n_steps` samples with mean KL `current_kl`; returns the new beta."""
        error = min(max(float(current_kl) / self.target - 1, -ADAPTIVE_KL_ERROR_CLIP), ADAPTIVE_KL_ERROR_CLIP)
        self.value *= 1 + error * n_steps / self.horizon
        return self.value


class FixedKLController:
    """A constant KL coefficient with the same interface as `AdaptiveKLController`."""

    def __init__(self, beta: float):
        if not math.isfinite(beta) or beta < 0:
            raise PeftlabError(f"The KL coefficient beta must be a number of at least 0, got {beta!r}.")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Leave beta unchanged; returns it."""
        return self.value


# ---------------------------------------------------------------- sampling settings


def sampling_kl_problem(temperature: float | None, top_k: int | None, top_p: float | None) -> str | None:
    """Why these sampling settings would bias the KL penalty, in one sentence, or None if they are fine.

    The per-token KL estimate logprob - ref_logprob is unbiased only for tokens sampled from the policy
    as it is. Temperature, top-k and top-p sample from a reshaped distribution instead, so the estimate
    is biased and often negative, and PPO learns to exploit it.
    """
    reshaping = []
    if temperature is not None and temperature != 1:
        reshaping.append(f"temperature {temperature}")
    if top_k not in (None, 0):
        reshaping.append(f"top_k {top_k}")
    if top_p is not None and top_p < 1:
        reshaping.append(f"top_p {top_p}")
    if not reshaping:
        return None
    return (
        f"Sampling with {' and '.join(reshaping)} draws responses from a reshaped distribution, not from the "
        "policy, which biases the per-token KL estimate (it can turn negative); for PPO sample with "
        "temperature 1, top_k 0 and top_p 1."
    )


# ---------------------------------------------------------------- checks


def _check_shapes(**tensors: torch.Tensor) -> None:
    """All tensors must share one (B, T) shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(shape != first for shape in shapes.values()):
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise PeftlabError(f"These tensors must all have one (batch, tokens) shape, got {listed}.")


def _check_clip_range(clip_range: float) -> None:
    if not math.isfinite(clip_range) or clip_range <= 0:
        raise PeftlabError(f"The clip range must be a number above 0, got {clip_range!r}.")
