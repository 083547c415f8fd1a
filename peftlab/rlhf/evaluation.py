"""Stage 4, evaluation: the SFT model and every trained route (PPO, PPO-ptx, DPO) answer the same held-out prompts.

Each response gets the labeler's score, the reward model's score (when one was trained) and, for a trained
policy, its KL to the SFT model: the sum over its tokens of log π − log π_SFT, an unbiased estimate of
KL(π ‖ π_SFT) per response because the tokens were sampled from π itself (up to the rounding of bf16 autocast
on a CPU: the log-probs at sampling and at scoring differ by up to about 0.02 nats a token there). Every policy
samples with the same seed, so an untrained policy gives the SFT model's answers exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from peftlab.config import counted
from peftlab.rlhf.crossing import is_lora
from peftlab.rlhf.generation import check_response_scores_fit, counted_on, response_forward, sample_responses
from peftlab.rlhf.labelers import Labeler
from peftlab.rlhf.reward import RewardModel
from peftlab.rlhf.stored import REFERENCE, route_key
from peftlab.store import ResultRow, fingerprint

# A route this far from the SFT model (mean KL per response, nats) has diverged rather than learnt: PPO's default
# fixed beta holds it near 2, the RLHF benchmark's bound is 5; a learning rate of 1000 gave 80 nats and gibberish.
DIVERGED_KL = 20.0


def route_seconds(reward: float, ppo: float, dpo: float) -> dict[str, float]:
    """Each route's own training seconds after SFT and the shared comparisons, as both the CLI and the app store them:
    PPO's include the reward model it needs, DPO needs none."""
    return {"ppo": reward + ppo, "dpo": dpo}


def route_methods(ptx_coef: float) -> dict[str, str]:
    """The stored method of a route that its name does not say: PPO with an LM-loss mix (PPO-ptx, γ > 0; InstructGPT
    §3.5 mixes pretraining data, this one the demonstrations, `ppo`) stands apart from plain PPO, which the app
    stored it as, so Compare averaged the two."""
    return {"ppo": "ppo-ptx" if ptx_coef else "ppo"}


@dataclass
class PolicyComparison:
    """One row per (prompt, sample): every route's response and scores; `summary` their means per route."""

    table: pd.DataFrame
    summary: dict
    routes: list[str]  # the trained policies' names, in order ("ppo", "dpo", ...); "sft" is the reference
    adapter_sizes: dict[str, int] = field(default_factory=dict)  # each route's LoRA weights: what training changed

    def kl_note(self) -> str | None:
        """What the KLs cannot say by themselves, or None: a route's mean KL to the SFT model below 0, which a true
        KL never is (the sampling error of the responses: the policy cannot be told apart from SFT), and a response
        word for word SFT's with a KL (DPO gave SFT's answers at a KL of 0.11: the KL is of the probabilities)."""
        s, notes = self.summary, []
        if any(s[f"{route}_mean_kl"] < 0 for route in self.routes):
            notes.append(
                f"A KL below 0 is the sampling error of {counted(s['prompts'] * s['samples_per_prompt'], 'response')}: "
                "that policy cannot be told apart from SFT on these prompts."
            )
        table = self.table

        def same_words_with_a_kl(route: str) -> bool:
            same = table[f"{route}_response"] == table[f"{REFERENCE}_response"]
            return bool((same & (table[f"{route}_kl"].abs() >= 0.005)).any())

        same = [route for route in self.routes if len(table) and same_words_with_a_kl(route)]
        if same:
            notes.append(
                f"A response word for word SFT's still has a KL ({' and '.join(r.upper() for r in same)}): it "
                "measures how much likelier or less likely the policy made those words, not whether they differ."
            )
        for route in self.routes:
            if s[f"{route}_mean_kl"] > DIVERGED_KL:
                notes.append(
                    f"{route.upper()} is {s[f'{route}_mean_kl']:.1f} nats per response from SFT, where a tuned run "
                    f"drifts a few: its training diverged (its answers need not read as text any more), so its "
                    "scores say little; train it again with a smaller learning rate."
                )
        return " ".join(notes) or None

    def result_rows(
        self,
        model: str,
        settings: dict,
        seconds: Mapping[str, float],
        device: str = "cpu",
        methods: Mapping[str, str] | None = None,
    ) -> list[ResultRow]:
        """One results-store row per route, its method `methods[route]` (default: the route's name): no accuracy,
        the route's and the SFT model's labeler and reward-model scores and KL in `metrics`, the held-out prompts
        as the test fingerprint, `seconds[route]` as its training time."""
        prompts = [{"prompt": p} for p in dict.fromkeys(self.table["prompt"])]
        rows = []
        for route in self.routes:
            metrics = {k: v for k, v in self.summary.items() if not route_key(k) or route_key(k) in (route, REFERENCE)}
            rows.append(
                ResultRow(
                    kind="rlhf",
                    model=model,
                    task=f"rlhf {self.summary['labeler']}",
                    test_fingerprint=fingerprint(prompts),
                    method=(methods or {}).get(route, route),
                    settings=settings,
                    accuracy=None,
                    macro_f1=None,
                    train_seconds=float(seconds.get(route, 0.0)),
                    trainable_params=self.adapter_sizes.get(route, 0),
                    device=device,
                    metrics=metrics,
                )
            )
        return rows


def check_evaluation_fits(model: torch.nn.Module, prompts: int, samples_per_prompt: int, max_new_tokens: int) -> None:
    """Refuse an evaluation whose KL pass, over every sample at once, would not fit in memory
    (`generation.check_response_scores_fit`).

    Raises:
        PeftlabError: too many samples for the free memory.
    """
    lower = "the evaluation samples per prompt or the longest response"
    check_response_scores_fit(model, prompts * samples_per_prompt, max_new_tokens, "The evaluation", lower)


@torch.no_grad()
def compare_policies(
    reference: torch.nn.Module,
    policies: Mapping[str, torch.nn.Module],
    tokenizer,
    reward_model: RewardModel | None,
    labeler: Labeler,
    prompts: Sequence[str],
    samples_per_prompt: int = 2,
    max_new_tokens: int = 24,
    seed: int = 1234,
    progress: Callable[[int, int], None] | None = None,
) -> PolicyComparison:
    """The SFT model (`reference`) and each policy of `policies` (route name -> model) sample every prompt
    `samples_per_prompt` times with the same seed; each response is scored by the labeler and the reward model
    (None: no reward column), and each policy's KL to the reference is estimated on its own samples (nats).
    `progress(done, total)` follows the sampling: responses sampled so far, of every model's.

    Raises:
        PeftlabError: more samples than memory holds (`check_evaluation_fits`), or a sampling problem
            (`generation.sample_responses`).
    """
    if policies:
        check_evaluation_fits(reference, len(prompts), samples_per_prompt, max_new_tokens)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    columns: dict[str, list] = {"prompt": repeated}
    summary: dict = {"labeler": labeler.name, "prompts": len(prompts), "samples_per_prompt": samples_per_prompt}
    models = {REFERENCE: reference, **policies}
    total = len(models) * len(repeated)
    for number, (route, model) in enumerate(models.items()):
        follow = counted_on(progress, number * len(repeated), total)  # after the models before it
        samples = sample_responses(model, tokenizer, repeated, max_new_tokens, seed, progress=follow)
        columns[f"{route}_response"] = samples.responses
        columns[f"{route}_labeler_score"] = [labeler.score(p, r) for p, r in zip(repeated, samples.responses)]
        summary[f"{route}_mean_score"] = round(float(pd.Series(columns[f"{route}_labeler_score"]).mean()), 4)
        if reward_model is not None:
            columns[f"{route}_reward"] = reward_model.score(repeated, samples.responses).numpy()
            summary[f"{route}_mean_reward"] = round(float(columns[f"{route}_reward"].mean()), 4)
        if route != REFERENCE:
            mask = samples.response_mask.float()
            log_ratio = response_forward(model, samples).cpu() - response_forward(reference, samples).cpu()
            columns[f"{route}_kl"] = (log_ratio * mask).sum(1).numpy()  # (N,) nats per response
            summary[f"{route}_mean_kl"] = round(float(columns[f"{route}_kl"].mean()), 4)
    order = ["prompt"] + [
        f"{route}_{what}"
        for what in ("response", "labeler_score", "reward", "kl")
        for route in (REFERENCE, *policies)
        if f"{route}_{what}" in columns
    ]
    sizes = {
        route: sum(p.numel() for name, p in model.named_parameters() if is_lora(name))
        for route, model in policies.items()
    }
    return PolicyComparison(pd.DataFrame(columns)[order], summary, list(policies), sizes)
