"""Stage 4, evaluation: the SFT and the PPO policy answer the same held-out prompts, side by side.

Each response gets the reward model's score, the labeler's score and, for the PPO policy, its KL to the
reference: the sum over its tokens of log pi - log pi_ref, an unbiased estimate of KL(pi || pi_ref) per
response because the tokens were sampled from pi itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from peftlab.rlhf.generation import response_forward, sample_responses
from peftlab.rlhf.labelers import Labeler
from peftlab.rlhf.ppo import PolicyWithValueHead
from peftlab.rlhf.reward import RewardModel
from peftlab.store import ResultRow, fingerprint


@dataclass
class PolicyComparison:
    table: pd.DataFrame  # one row per (prompt, sample): both responses and their scores
    summary: dict

    def result_row(self, model: str, settings: dict, seconds: float = 0.0, device: str = "cpu") -> ResultRow:
        """The comparison as one row of the results store: no accuracy, the labeler's and reward model's scores
        and the KL in `metrics`, its held-out prompts as the test fingerprint."""
        prompts = [{"prompt": p} for p in dict.fromkeys(self.table["prompt"])]
        return ResultRow(
            kind="rlhf",
            model=model,
            task=f"rlhf {self.summary['labeler']}",
            test_fingerprint=fingerprint(prompts),
            method="ppo-ptx" if settings.get("ptx_coef") else "ppo",
            settings=settings,
            accuracy=None,
            macro_f1=None,
            train_seconds=seconds,
            device=device,
            metrics=dict(self.summary),
        )


@torch.no_grad()
def compare_policies(
    policy: PolicyWithValueHead,
    tokenizer,
    reward_model: RewardModel,
    labeler: Labeler,
    prompts: Sequence[str],
    samples_per_prompt: int = 2,
    max_new_tokens: int = 24,
    seed: int = 1234,
) -> PolicyComparison:
    """Sample from the SFT policy (the PPO policy's reference) and the PPO policy with the same seed, and score both."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    sft = sample_responses(policy.reference_model, tokenizer, repeated, max_new_tokens, seed)
    ppo = sample_responses(policy.model, tokenizer, repeated, max_new_tokens, seed)
    mask = ppo.response_mask.float()
    ppo_log_probs = response_forward(policy.model, ppo).cpu()
    ref_log_probs = response_forward(policy.reference_model, ppo).cpu()
    kl = ((ppo_log_probs - ref_log_probs) * mask).sum(1)  # (N,) nats per response
    table = pd.DataFrame(
        {
            "prompt": repeated,
            "sft_response": sft.responses,
            "ppo_response": ppo.responses,
            "sft_reward": reward_model.score(repeated, sft.responses).numpy(),
            "ppo_reward": reward_model.score(repeated, ppo.responses).numpy(),
            "sft_labeler_score": [labeler.score(p, r) for p, r in zip(repeated, sft.responses)],
            "ppo_labeler_score": [labeler.score(p, r) for p, r in zip(repeated, ppo.responses)],
            "ppo_kl": kl.numpy(),
        }
    )
    summary = {
        "labeler": labeler.name,
        "prompts": len(prompts),
        "samples_per_prompt": samples_per_prompt,
        "sft_mean_score": round(float(table["sft_labeler_score"].mean()), 4),
        "ppo_mean_score": round(float(table["ppo_labeler_score"].mean()), 4),
        "sft_mean_reward": round(float(table["sft_reward"].mean()), 4),
        "ppo_mean_reward": round(float(table["ppo_reward"].mean()), 4),
        "mean_kl": round(float(table["ppo_kl"].mean()), 4),
    }
    return PolicyComparison(table, summary)
