"""Stage 3, PPO against the reward model, with a per-token KL penalty to the SFT model (and PPO-ptx).

Policy = a copy of the SFT model with a trainable LoRA adapter plus a value head on its last hidden
state; the reference is the SFT model itself (it computes what the policy with its adapter disabled
would, and it is kept anyway), read-only, so nothing switches the policy's adapter off and on.
Each step samples responses to a batch of prompts (temperature 1, no top-k/top-p: the KL estimate is
unbiased only for samples from the policy itself), scores them with the reward model, subtracts
beta * (log pi - log pi_ref) per token, computes GAE advantages and runs a few epochs of the clipped
PPO objective (Schulman et al. 2017) with a clipped value loss. With `ptx_coef` > 0 the policy also
keeps gamma * the LM loss on demonstrations: InstructGPT's PPO-ptx (Ouyang et al. 2022, Eq. 2) mixes in its
pretraining distribution, which nothing offline ships, so the SFT demonstrations stand in for it here (they keep the
policy near SFT's language as the pretraining term kept InstructGPT's near GPT-3's). The math lives in
`peftlab.rlhf.ppo_math`; this module only runs it.
"""

from __future__ import annotations

import copy
import random
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from peftlab.config import Config, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.models import check_trainable, loss_scaler, save_adapter
from peftlab.rlhf.crossing import Crossing, arrived, is_lora, load_trainable_state, sft_result_of, trainable_state
from peftlab.rlhf.data import Demonstration
from peftlab.rlhf.generation import SequenceBatch, check_response_scores_fit, response_forward, sample_responses
from peftlab.rlhf.labelers import Labeler
from peftlab.rlhf.ppo_math import (
    ADAPTIVE_KL_ERROR_CLIP,
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    sampling_kl_problem,
    whiten,
)
from peftlab.rlhf.reward import RewardModel
from peftlab.rlhf.sft import SFT_RESPONSE_TOKENS, lora_config, sft_loss
from peftlab.seeding import drawing, seeded
from peftlab.training import Event, check_finite

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class PPOConfig(Config):
    """PPO settings, every one checked before any stage starts. How the defaults were chosen is in the notes
    of `benchmarks/rlhf_pipeline.py`."""

    subject: ClassVar[str] = "PPO {label}"
    steps: int = setting(30, "PPO iterations: sample a batch, score it, optimise on it", minimum=1, cap="ppo_steps")
    batch_size: int = setting(16, "prompts sampled per iteration", minimum=1)
    epochs: int = setting(2, "optimisation passes over each batch", minimum=1)
    minibatch_size: int = setting(8, "responses per gradient step", minimum=1, label="minibatch size")
    learning_rate: float = setting(3e-4, "Adam learning rate of the LoRA adapter and the value head", above=0)
    lora_r: int = setting(16, "rank of the policy's LoRA adapter", minimum=1, label="LoRA rank")
    beta: float = setting(
        0.3,
        "KL coefficient: reward - beta * (log pi - log pi_ref) per token (the start value when adaptive)",
        minimum=0,
        label="KL coefficient β",
        subject="The KL coefficient β",
    )
    adaptive_kl: bool = setting(False, "steer beta towards target_kl (Ziegler et al. 2019)", label="adaptive β")
    target_kl: float = setting(
        2.0, "KL per response (nats) the adaptive controller aims at", above=0, label="target KL"
    )
    kl_horizon: float = setting(
        16.0, "responses over which the adaptive controller corrects beta", above=0, label="KL horizon"
    )
    gamma: float = setting(1.0, "discount", minimum=0, maximum=1)
    lam: float = setting(0.95, "GAE lambda", minimum=0, maximum=1, label="GAE lambda")
    clip_range: float = setting(0.2, "PPO ratio clip", above=0, label="clip range")
    value_clip_range: float = setting(0.2, "value clip around the rollout's values", above=0, label="value clip range")
    value_coef: float = setting(0.1, "weight of the value loss", minimum=0, label="value loss coefficient")
    ptx_coef: float = setting(
        0.0,
        "gamma of PPO-ptx: weight of the LM loss on demonstrations (0 = plain PPO)",
        minimum=0,
        label="PPO-ptx coefficient γ",
        subject="The PPO-ptx coefficient",
    )
    max_new_tokens: int = setting(24, "longest sampled response", minimum=1)
    temperature: float = setting(1.0, "sampling temperature (must be 1 for an unbiased KL)", cli=False)
    top_k: int = setting(0, "top-k sampling (must be 0, off)", cli=False)
    top_p: float = setting(1.0, "nucleus sampling (must be 1, off)", cli=False)
    seed: int = seed_setting(0, "seed for prompts and samples")

    def check_settings(self):
        if self.minibatch_size > self.batch_size:
            raise PeftlabError(
                f"The PPO minibatch ({self.minibatch_size}) cannot be larger than the batch ({self.batch_size})."
            )
        if problem := sampling_kl_problem(self.temperature, self.top_k, self.top_p):
            raise PeftlabError(problem)
        self.kl_controller()  # beta < 0 and bad adaptive settings fail here, with the controller's own message
        # A batch far below the target KL (the first: the new adapter changes nothing) multiplies β by
        # 1 - 0.2 n / horizon: at n = 5 horizons β became 0 for good, past it negative and the next step failed.
        floor = ADAPTIVE_KL_ERROR_CLIP * self.batch_size
        if self.adaptive_kl and self.kl_horizon <= floor:
            raise PeftlabError(
                f"With adaptive β, the KL horizon ({self.kl_horizon:g}) must be above {floor:g} responses "
                f"({ADAPTIVE_KL_ERROR_CLIP:g} × the batch of {self.batch_size}): a batch far below the target KL "
                f"multiplies β by 1 − {ADAPTIVE_KL_ERROR_CLIP:g} × batch / horizon, which would be 0 or less."
            )

    def kl_controller(self):
        if self.adaptive_kl:
            return AdaptiveKLController(self.beta, self.target_kl, self.kl_horizon)
        return FixedKLController(self.beta)


class PolicyWithValueHead(torch.nn.Module):
    """A copy of the SFT model with a trainable LoRA adapter, and a value head; `reference_model` is the SFT model."""

    def __init__(self, sft_model: torch.nn.Module, lora):
        """`lora`: the adapter's PEFT LoraConfig (`sft.lora_config`)."""
        super().__init__()
        from peft import get_peft_model

        # A copy, so the SFT result stays a plain model: the frozen reference for the KL penalty.
        self.model = get_peft_model(copy.deepcopy(sft_model), lora)
        self.__dict__["reference_model"] = sft_model  # not a submodule: never trained, saved or moved with the policy
        hidden = self.model.get_output_embeddings().weight.shape[1]
        self.value_head = torch.nn.Linear(hidden, 1).to(next(sft_model.parameters()).device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def response_outputs(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probs, values) of the response tokens, (B, R) each."""
        log_probs, hidden = response_forward(self.model, batch, with_hidden=True)
        return log_probs, self.value_head(hidden).squeeze(-1)

    def save(self, folder: str | Path) -> Path:
        """The LoRA adapter (PEFT files) and the value head (safetensors)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        save_adapter(self.model, folder)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, str(folder / VALUE_HEAD_FILE))
        return folder


@dataclass(kw_only=True)
class PPOEvent(Event):
    mean_reward: float  # the reward model's normalised score of the sampled responses
    mean_labeler_score: float  # the labeler's own score of them (what the reward model stands in for)
    mean_kl: float  # sum over a response's tokens of log pi - log pi_ref, averaged over responses
    beta: float
    policy_loss: float
    value_loss: float
    clip_fraction: float
    approx_kl: float
    ptx_loss: float
    response_tokens: float
    sample: tuple[str, str] = ("", "")


@dataclass(eq=False)  # comparing two results would build their policies
class PPOResult(Crossing):
    """The PPO policy and its steps. It crosses processes as the SFT result it copies, its adapter's configuration
    and its trained tensors (`crossing`)."""

    MODELS = ("policy",)

    policy: PolicyWithValueHead = field(repr=False)
    history: list[PPOEvent] = field(default_factory=list)
    seconds: float = 0.0
    ptx_coef: float = 0.0  # γ of PPO-ptx it trained with (0: plain PPO), which names its stored route

    def _crossing(self, name):
        return _policy_crossing(self.policy, trainable=False)


@dataclass(eq=False)
class PPORun(Crossing):
    """PPO between two steps: the policy, the optimiser's and the loss scaler's state, the KL controller, the batch
    sampler's random state, the steps done and their events. A run stopped after any step goes on from here in this
    process or, after crossing, in another (a chunk of steps per ZeroGPU call), with the numbers of an unbroken run."""

    MODELS = ("policy",)

    policy: PolicyWithValueHead = field(repr=False)
    optimizer_state: dict | None
    scaler_state: dict | None
    controller: AdaptiveKLController | FixedKLController
    rng_state: tuple
    history: list[PPOEvent] = field(default_factory=list)
    seconds: float = 0.0
    ptx_coef: float = 0.0

    @property
    def steps_done(self) -> int:
        return len(self.history)

    def _crossing(self, name):
        return _policy_crossing(self.policy, trainable=True)

    def result(self) -> PPOResult:
        """The policy so far, frozen, with its steps; a policy not built on this side (after a crossing) stays
        unbuilt: the result crosses on as it came."""
        pending = self.__dict__.get("_pending", {})
        if "policy" in pending:
            build, (sft, lora, state, _) = pending["policy"]
            fields = {"history": list(self.history), "seconds": self.seconds, "ptx_coef": self.ptx_coef}
            return arrived(PPOResult, fields, {"policy": (build, (sft, lora, state, False))})
        result = PPOResult(self.policy.requires_grad_(False), list(self.history), self.seconds, self.ptx_coef)
        result.__dict__["_sources"] = self.__dict__.get("_sources", {})  # keeps the SFT result it crosses by alive
        return result


def _policy_crossing(policy: PolicyWithValueHead, trainable: bool) -> tuple:
    state = trainable_state(policy, lambda n: is_lora(n) or n.startswith("value_head."))
    return _policy, (sft_result_of(policy.reference_model), policy.model.peft_config["default"], state, trainable)


def _policy(sft, lora, state: dict, trainable: bool) -> PolicyWithValueHead:
    """The policy rebuilt on this side of a crossing: trainable (a run's) or frozen (a result's)."""
    with drawing():  # the adapter and the value head are initialised, then replaced by `state`
        policy = PolicyWithValueHead(sft.model, lora)
    load_trainable_state(policy, state)
    return policy if trainable else policy.requires_grad_(False)


def check_batch_fits(model: torch.nn.Module, config: PPOConfig) -> None:
    """Refuse a batch whose word scores would not fit in memory (`generation.check_response_scores_fit`).

    Raises:
        PeftlabError: the batch too large for the free memory.
    """
    lower = "the batch size or the longest response"
    check_response_scores_fit(model, config.batch_size, config.max_new_tokens, "A PPO batch", lower)


def start_ppo(sft_model: torch.nn.Module, config: PPOConfig) -> PPORun:
    """A PPO run before its first step: a new adapter (seeded) on a copy of the SFT model and a zero value head."""
    with seeded(config.seed):  # the adapter's initialisation
        policy = PolicyWithValueHead(sft_model, lora_config(config.lora_r, sft_model))
    rng_state = random.Random(config.seed).getstate()
    return PPORun(policy, None, None, config.kl_controller(), rng_state, ptx_coef=config.ptx_coef)


def train_ppo(
    sft_model: torch.nn.Module,
    tokenizer,
    reward_model: RewardModel,
    prompts: Sequence[str],
    config: PPOConfig,
    labeler: Labeler | None = None,
    demonstrations: Sequence[Demonstration] = (),
    stop: threading.Event | None = None,
    demonstration_tokens: int = SFT_RESPONSE_TOKENS,
) -> Iterator[PPOEvent | PPOResult]:
    """Optimise a LoRA adapter on the SFT model against the reward model; yield PPOEvents, the PPOResult last.
    PPO-ptx reads each demonstration's first `demonstration_tokens` response tokens, as SFT did (its
    `max_response_tokens`).

    Raises:
        PeftlabError: no prompts, or PPO-ptx without demonstrations.
    """
    run = start_ppo(sft_model, config)
    yield from ppo_steps(
        run, tokenizer, reward_model, prompts, config, labeler, demonstrations, config.steps, stop, demonstration_tokens
    )
    yield run.result()


def ppo_steps(
    run: PPORun,
    tokenizer,
    reward_model: RewardModel,
    prompts: Sequence[str],
    config: PPOConfig,
    labeler: Labeler | None = None,
    demonstrations: Sequence[Demonstration] = (),
    until: int | None = None,
    stop: threading.Event | None = None,
    demonstration_tokens: int = SFT_RESPONSE_TOKENS,
) -> Iterator[PPOEvent]:
    """`run`'s next steps, up to step `until` (default `config.steps`) or a stop, each yielded as its PPOEvent;
    `run` then holds what the following step needs.

    Raises:
        PeftlabError: no prompts, PPO-ptx without demonstrations, or a batch whose word scores would not fit in
            memory (`generation.check_response_scores_fit`).
    """
    if not prompts:
        raise PeftlabError("PPO needs prompts to sample responses for.")
    if config.ptx_coef and not demonstrations:
        raise PeftlabError("PPO-ptx (ptx coefficient above 0) needs demonstrations for its LM loss.")
    policy = run.policy
    check_batch_fits(policy.model, config)
    parameters = [p for p in policy.parameters() if p.requires_grad]
    check_trainable(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    scaler = loss_scaler(parameters[0])
    if run.optimizer_state is not None:
        optimizer.load_state_dict(run.optimizer_state)
        scaler.load_state_dict(run.scaler_state)
    controller, rng = run.controller, random.Random()
    rng.setstate(run.rng_state)
    started = time.perf_counter() - run.seconds
    try:
        for step in range(run.steps_done + 1, min(until or config.steps, config.steps) + 1):
            if stop is not None and stop.is_set():
                break
            batch_prompts = [rng.choice(prompts) for _ in range(config.batch_size)]
            rollout = sample_responses(
                policy.model,
                tokenizer,
                batch_prompts,
                config.max_new_tokens,
                seed=config.seed * 100_003 + step,
                temperature=config.temperature,
                top_k=config.top_k,
                top_p=config.top_p,
                for_ppo=True,
            )
            with torch.no_grad():
                old_log_probs, old_values = policy.response_outputs(rollout)  # (B, R) each
                ref_log_probs = response_forward(policy.reference_model, rollout)  # (B, R)
                scores = reward_model.score(rollout.prompts, rollout.responses).to(old_log_probs.device)  # (B,)
            mask = rollout.response_mask.to(old_log_probs.device, old_log_probs.dtype)  # (B, R)
            rewards, kl = kl_penalized_rewards(scores, old_log_probs, ref_log_probs, mask, controller.value)
            advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
            advantages = whiten(advantages, mask)
            losses = _optimise(
                policy,
                optimizer,
                scaler,
                parameters,
                rollout,
                mask,
                old_log_probs,
                old_values,
                advantages,
                returns,
                config,
                rng,
                # PPO-ptx's demonstrations drawn from their own seed: drawn from `rng`, they moved the prompts of
                # every later step, and PPO and PPO-ptx of one seed trained on different prompts
                random.Random(f"ppo-ptx:{config.seed}:{step}"),
                tokenizer,
                demonstrations,
                demonstration_tokens,
            )
            mean_kl = float(kl.sum(1).mean())
            beta = controller.value
            controller.update(mean_kl, config.batch_size)
            labeler_scores = (
                [labeler.score(p, r) for p, r in zip(rollout.prompts, rollout.responses)] if labeler else [float("nan")]
            )
            event = PPOEvent(
                step=step,
                mean_reward=float(scores.mean()),
                mean_labeler_score=sum(labeler_scores) / len(labeler_scores),
                mean_kl=mean_kl,
                beta=beta,
                **losses,
                response_tokens=float(mask.sum(1).mean()),
                elapsed=time.perf_counter() - started,
                sample=(rollout.prompts[0], rollout.responses[0]),
            )
            run.history.append(event)
            yield event
    finally:  # after the last step, a stop, or the caller closing the chunk after a step
        # what the next step needs, on the CPU: it may cross into another process (crossing)
        run.optimizer_state = _on_cpu(optimizer.state_dict())
        run.scaler_state = scaler.state_dict()
        run.rng_state = rng.getstate()
        run.seconds = time.perf_counter() - started


def _on_cpu(state):
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_on_cpu(v) for v in state)
    return state


PPO_STEP_MEASURES = ("policy_loss", "value_loss", "clip_fraction", "approx_kl", "ptx_loss")  # _optimise's means


def _optimise(
    policy,
    optimizer,
    scaler,
    parameters,
    rollout,
    mask,
    old_log_probs,
    old_values,
    advantages,
    returns,
    config: PPOConfig,
    rng: random.Random,
    ptx_rng: random.Random,
    tokenizer,
    demonstrations,
    demonstration_tokens: int,
) -> tuple[float, ...]:
    """`epochs` passes of minibatch PPO updates; returns the losses, clip fraction and approx KL by PPOEvent field
    name, each the mean over every minibatch of every epoch, as TRL logs them: the last minibatch's alone came after
    every other update, and its clip fraction ran high (0.75 against a mean of 0.46 over a step's 8 minibatches, at a
    high learning rate)."""
    rows = list(range(len(rollout.prompts)))
    measured: dict[str, list[float]] = {name: [] for name in PPO_STEP_MEASURES}
    for _ in range(config.epochs):
        rng.shuffle(rows)
        for start in range(0, len(rows), config.minibatch_size):
            minibatch = rows[start : start + config.minibatch_size]
            log_probs, values = policy.response_outputs(rollout.select(minibatch))
            policy_loss, clip_fraction, approx_kl = clipped_policy_loss(
                log_probs, old_log_probs[minibatch], advantages[minibatch], mask[minibatch], config.clip_range
            )
            value_loss = clipped_value_loss(
                values, old_values[minibatch], returns[minibatch], mask[minibatch], config.value_clip_range
            )
            loss = policy_loss + config.value_coef * value_loss
            ptx_loss = torch.zeros(())
            if config.ptx_coef:
                ptx_batch = ptx_rng.sample(list(demonstrations), min(config.minibatch_size, len(demonstrations)))
                ptx_loss = sft_loss(policy.model, tokenizer, ptx_batch, demonstration_tokens)
                loss = loss + config.ptx_coef * ptx_loss
            check_finite(loss, "a PPO update", config.learning_rate)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients (a pass-through unless fp16: models.loss_scaler)
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            scaler.step(optimizer)
            scaler.update()
            for name, value in zip(PPO_STEP_MEASURES, (policy_loss, value_loss, clip_fraction, approx_kl, ptx_loss)):
                measured[name].append(value.item())
    return {name: sum(values) / len(values) for name, values in measured.items()}
