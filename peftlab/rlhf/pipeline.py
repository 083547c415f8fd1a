"""The whole pipeline in order: SFT -> ranked comparisons -> a route -> evaluation.

Routes from the same SFT model and the same comparisons: "ppo" (InstructGPT's: a reward model, then PPO
against it), "dpo" (DPO on the comparisons directly, no reward model) or "both". `run_pipeline` is what the
command line and the benchmark run; the app runs the same stage functions one button at a time. Data comes
from the embedded movie-review prompts (`RLHFData.embedded`) or from uploaded JSONL demonstrations and,
optionally, comparisons (`RLHFData.uploaded`).
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peftlab.config import Config, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.models import LM, check_width
from peftlab.rlhf.data import (
    MAX_RANKED_K,
    Comparison,
    Demonstration,
    embedded_review_data,
    load_comparisons,
    load_demonstrations,
)
from peftlab.rlhf.dpo import DPOConfig, DPOResult, train_dpo
from peftlab.rlhf.evaluation import (
    PolicyComparison,
    check_evaluation_fits,
    compare_policies,
    route_methods,
    route_seconds,
)
from peftlab.rlhf.generation import counted_on
from peftlab.rlhf.labelers import Labeler, labeler_by_name
from peftlab.rlhf.ppo import PPOConfig, PPOResult, check_batch_fits, train_ppo
from peftlab.rlhf.reward import (
    HeldoutReport,
    RewardConfig,
    RewardResult,
    collect_comparisons,
    heldout_report,
    train_reward_model,
)
from peftlab.rlhf.sft import SFTConfig, SFTResult, train_sft
from peftlab.rlhf.stored import SIMULATED, UPLOADED
from peftlab.store import ResultRow

ROUTES = ("ppo", "dpo", "both")
HELDOUT_PROMPTS = 32  # embedded movies whose prompts the policies answer in the evaluation, never trained on


def file_digest(path) -> str:
    """The SHA-256 of a file's bytes, in hexadecimal: the same file uploaded twice (two temporary paths) is one."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class RLHFData:
    """Prompts for training and for held-out evaluation, SFT demonstrations, and optional given comparisons."""

    train_prompts: list[str]
    heldout_prompts: list[str]
    demonstrations: list[Demonstration]
    comparisons: list[Comparison] | None = None  # None: the labeler ranks samples of the SFT policy
    comparisons_digest: str = ""  # of the comparisons file's bytes (`file_digest`), to tell it from one uploaded later

    @classmethod
    def embedded(cls, heldout_prompts: int = HELDOUT_PROMPTS, seed: int = 0) -> RLHFData:
        data = embedded_review_data(seed, heldout_prompts)
        return cls(data.train_prompts, data.heldout_prompts, data.demonstrations)

    @classmethod
    def uploaded(
        cls,
        demonstrations_path,
        comparisons_path=None,
        heldout_fraction: float = 0.2,
        seed: int = 0,
        reward_model: bool = True,
        comparisons_limit: int | None = None,
    ) -> RLHFData:
        """User files: their prompts split into training and held-out ones, before any training.

        A `heldout_fraction` of the prompts (at least one) is held out: SFT and PPO never see them, the evaluation
        answers them. With comparisons, that fraction of the prompts that have comparisons (at least one, leaving at
        least one to train on) is held out to test the reward model, and the rest of the held-out prompts are drawn
        among those without comparisons. Without a reward model to test (`reward_model=False`: DPO alone),
        comparisons on one prompt are enough: it is kept to train on.

        Raises:
            PeftlabError: unreadable files, more comparisons than `comparisons_limit` (`load_comparisons`), fewer than
                2 different prompts, comparisons on fewer than 2 prompts for a reward model, or no demonstration left
                for training.
        """
        demonstrations = load_demonstrations(demonstrations_path)
        comparisons = load_comparisons(comparisons_path, comparisons_limit) if comparisons_path else None
        prompts = list(dict.fromkeys([d.prompt for d in demonstrations] + [c.prompt for c in comparisons or []]))
        if len(prompts) < 2:
            raise PeftlabError("The data needs at least 2 different prompts: some to train on and some held out.")
        held = max(1, round(heldout_fraction * len(prompts)))
        rng = random.Random(seed)
        if comparisons is None:
            heldout = set(rng.sample(prompts, held))
        else:
            ranked = list(dict.fromkeys(c.prompt for c in comparisons))
            if len(ranked) < 2 and reward_model:
                raise PeftlabError(
                    f"The comparisons file ranks responses to {len(ranked)} prompt; the reward model needs "
                    "comparisons on at least 2 different prompts, some to train on and some held out to test it."
                )
            # the fraction of the ranked prompts, not of all: 10 demonstrated prompts with 3 ranked held out 2 of
            # the 3, and the reward model and DPO learned from 1 comparison; the evaluation's other held-out prompts
            # come from those without comparisons
            from_ranked = min(max(1, round(heldout_fraction * len(ranked))), len(ranked) - 1)
            unranked = [p for p in prompts if p not in set(ranked)]
            heldout = set(rng.sample(ranked, from_ranked))
            heldout |= set(rng.sample(unranked, min(max(0, held - from_ranked), len(unranked))))
            held = len(heldout)
        kept = [d for d in demonstrations if d.prompt not in heldout]
        if not kept:
            raise PeftlabError(
                f"Every demonstration answers one of the {held} prompt(s) held out for the evaluation, so SFT would "
                "have none to learn; add demonstrations for more prompts."
            )
        train = [p for p in prompts if p not in heldout]
        digest = file_digest(comparisons_path) if comparisons_path else ""
        return cls(train, [p for p in prompts if p in heldout], kept, comparisons, digest)


@dataclass
class PipelineConfig(Config):
    labeler: str = setting(
        "vader-positive", "who ranks the samples: vader-positive, vader-negative or concise", label="simulated labeler"
    )
    rm_pairs: int = setting(
        2000,
        # 8 asked at K=2 gave 5, with no word: samples the labeler scores alike give no pair
        "training comparisons for the reward model, at most (samples the labeler ties give none)",
        minimum=1,
        label="training comparisons",
        cap="comparisons",
    )
    rm_heldout_prompts: int = setting(
        24,
        "prompts whose comparisons are held out to test the reward model",
        minimum=1,
        label="held-out ranking prompts",
    )
    k: int = setting(8, "responses sampled and ranked per prompt", minimum=2, label="K samples ranked per prompt")
    eval_samples: int = setting(
        2,
        "responses per held-out prompt in the final SFT-vs-PPO evaluation",
        minimum=1,
        label="evaluation samples per prompt",
    )
    max_new_tokens: int = setting(24, "longest sampled response", minimum=1)
    seed: int = seed_setting(0, "seed of every stage")
    route: str = setting("ppo", "ppo (a reward model, then PPO), dpo (DPO on the comparisons) or both", choices=ROUTES)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)

    def routes(self) -> list[str]:
        """The trained routes, in order: ["ppo"], ["dpo"] or both."""
        return ["ppo", "dpo"] if self.route == "both" else [self.route]

    def check_settings(self):
        labeler_by_name(self.labeler)  # an unknown labeler fails before any work
        if self.k > MAX_RANKED_K:
            raise PeftlabError(
                f"K is {self.k} responses per prompt; peftlab ranks at most {MAX_RANKED_K} (InstructGPT ranks 4 to 9), "
                "as each is sampled for every ranked prompt and ranked against every other."
            )


def ranked_prompt_count(config: PipelineConfig, data: RLHFData) -> int:
    """How many training prompts `ranked_comparisons` has the labeler rank (K samples each), held-out ones included.

    Raises:
        PeftlabError: too few training prompts (`heldout_ranked_prompts`).
    """
    per_prompt = config.k * (config.k - 1) // 2
    needed = math.ceil(1.25 * config.rm_pairs / per_prompt)
    return min(len(data.train_prompts), needed + heldout_ranked_prompts(config, data))


def heldout_ranked_prompts(config: PipelineConfig, data: RLHFData) -> int:
    """How many ranked prompts hold their comparisons out to test the reward model: `rm_heldout_prompts`, at most
    half the training prompts. 12 uploaded prompts and 24 held out left none to train on, and the reward model was
    refused after SFT ("lower the held-out prompts", a setting the app does not show). DPO alone tests no reward
    model, so one training prompt is enough there ("The reward model needs at least 2 training prompts" was said to
    a run that trains none).

    Raises:
        PeftlabError: fewer than 2 training prompts (one to train the reward model on, one held out), or none for
            DPO alone.
    """
    available = len(data.train_prompts)
    if "ppo" in config.routes() and available < 2:
        raise PeftlabError(
            f"The reward model needs at least 2 training prompts to rank (one to train on, one held out to test it); "
            f"the demonstrations leave {available}. Upload demonstrations with more prompts."
        )
    if available < 1:
        raise PeftlabError(
            "DPO needs at least 1 training prompt to rank; every prompt of the demonstrations is held out for the "
            "evaluation. Upload demonstrations with more prompts."
        )
    return min(config.rm_heldout_prompts, available // 2)


@dataclass
class Sampled:
    """How far a sampling is: responses sampled, of all (for the labeler's rankings in `ranked_comparisons`, for the
    evaluation in `compare_policies`)."""

    done: int
    total: int


class SamplingStopped(Exception):
    """Raised by a sampling's `progress` between batches once its stop flag is set: how far it was (`sampled`)."""

    def __init__(self, sampled: Sampled):
        self.sampled = sampled


def ranked_comparisons(
    sft_model,
    tokenizer,
    data: RLHFData,
    config: PipelineConfig,
    labeler: Labeler,
    progress: Callable[[int, int], None] | None = None,
    heldout: bool = True,
) -> tuple[list[Comparison], list[Comparison]]:
    """(training, held-out) comparisons: the uploaded ones split by prompt, or the labeler's rankings of SFT samples.

    Rankings of K samples give at most K-choose-2 pairs per prompt (fewer when scores tie), so a few more
    prompts than rm_pairs / K-choose-2 are ranked and the pairs cut to rm_pairs. `progress(done, total)` follows
    the sampling: responses sampled so far, of all the ranked prompts' (it may raise to stop). With
    `heldout=False` (no reward model to test: DPO alone) the held-out prompts are drawn but not sampled, and the
    held-out list is empty: the training comparisons are those of a run that tests a reward model.

    Raises:
        PeftlabError: too few training prompts to rank (`ranked_prompt_count`).
    """
    if data.comparisons is not None:
        heldout_prompts = set(data.heldout_prompts)
        return (
            [c for c in data.comparisons if c.prompt not in heldout_prompts],
            [c for c in data.comparisons if c.prompt in heldout_prompts],
        )
    prompts = random.Random(config.seed).sample(data.train_prompts, ranked_prompt_count(config, data))
    held = heldout_ranked_prompts(config, data)
    heldout_prompts, train_prompts = prompts[:held] if heldout else [], prompts[held:]
    total = (len(train_prompts) + len(heldout_prompts)) * config.k
    train, _ = collect_comparisons(
        sft_model,
        tokenizer,
        train_prompts,
        labeler,
        config.k,
        config.max_new_tokens,
        config.seed,
        counted_on(progress, 0, total),
    )
    if not heldout_prompts:
        return train[: config.rm_pairs], []
    heldout, _ = collect_comparisons(
        sft_model,
        tokenizer,
        heldout_prompts,
        labeler,
        config.k,
        config.max_new_tokens,
        config.seed + 1,
        counted_on(progress, len(train_prompts) * config.k, total),  # after the training prompts' sampling
    )
    return train[: config.rm_pairs], heldout


@dataclass
class PipelineResult:
    sft: SFTResult
    reward: RewardResult | None  # None on the DPO route alone
    ppo: PPOResult | None
    dpo: DPOResult | None
    comparison: PolicyComparison
    summary: dict
    rows: list[ResultRow]  # the evaluation, one results-store row per route
    reward_check: HeldoutReport | None = None  # the reward model's held-out report; None on the DPO route alone


def check_ranks(model, config: PipelineConfig, stages: tuple[str, ...] = ("sft", "reward", "ppo", "dpo")) -> None:
    """Refuse a LoRA rank above `model`'s hidden size in any of `stages` that `config` runs (`models.check_width`),
    before any work: the reward model's was told only after SFT and the sampling of the responses to rank.

    Raises:
        PeftlabError: the first stage whose rank is too large, named.
    """
    routes = config.routes()
    ranks = {
        "sft": ("SFT", config.sft.lora_r if config.sft.method == "lora" else 0),
        "reward": ("reward model's", config.reward.lora_r if "ppo" in routes else 0),
        "ppo": ("PPO", config.ppo.lora_r if "ppo" in routes else 0),
        "dpo": ("DPO", config.dpo.lora_r if "dpo" in routes else 0),
    }
    for stage in stages:
        name, rank = ranks[stage]
        if rank:
            check_width(model, rank, f"{name} LoRA rank")


def run_pipeline(
    lm: LM,
    data: RLHFData,
    config: PipelineConfig,
    on_event: Callable[[str, object], None] | None = None,
    stop: threading.Event | None = None,
) -> PipelineResult:
    """All stages of the configured route(s) in order; `on_event(stage, event)` sees every training event, and
    ("comparisons", Sampled) after each batch of responses sampled for the labeler to rank, ("evaluation", Sampled)
    after each batch sampled to compare the policies."""
    labeler = labeler_by_name(config.labeler)
    # what would not fit in memory, or data too small to rank, fails before SFT, not after it and the reward model
    if "ppo" in config.routes():
        check_batch_fits(lm.model, config.ppo)
    check_evaluation_fits(lm.model, len(data.heldout_prompts), config.eval_samples, config.max_new_tokens)
    if data.comparisons is None:
        ranked_prompt_count(config, data)  # and prompts too few to rank, before SFT
    check_ranks(lm.model, config)
    report = on_event or (lambda stage, event: None)
    started = time.perf_counter()
    seconds = {}

    def run_stage(name, events):
        stage_started = time.perf_counter()
        for item in events:
            report(name, item)
            last = item
        seconds[name] = round(time.perf_counter() - stage_started, 1)
        return last

    sft = run_stage("sft", train_sft(lm, data.demonstrations, config.sft, data.heldout_prompts[:2], stop))
    comparisons_started = time.perf_counter()
    train_pairs, heldout_pairs = ranked_comparisons(
        sft.model,
        lm.tokenizer,
        data,
        config,
        labeler,
        lambda done, total: report("comparisons", Sampled(done, total)),
        heldout="ppo" in config.routes(),  # only a reward model is tested on them: DPO alone sampled 192 for nothing
    )
    seconds["comparisons"] = round(time.perf_counter() - comparisons_started, 1)
    if not train_pairs and data.comparisons is None:  # "rank more prompts (or lower ties)" named no setting to change
        raise PeftlabError(
            f"The labeler scored every pair of the SFT model's sampled responses alike (tied pairs are dropped), so "
            f"there is no comparison to learn from; sample longer responses (max new tokens, {config.max_new_tokens} "
            f"now) or more of them per prompt (K, {config.k} now)."
        )
    reward = ppo = dpo = check = None
    policies = {}
    if "ppo" in config.routes():
        reward = run_stage(
            "reward", train_reward_model(sft.model, lm.tokenizer, train_pairs, heldout_pairs, config.reward, stop)
        )
        check = heldout_report(reward, heldout_pairs, labeler if data.comparisons is None else None)
        ppo = run_stage(
            "ppo",
            train_ppo(
                sft.model,
                lm.tokenizer,
                reward.model,
                data.train_prompts,
                config.ppo,
                labeler,
                data.demonstrations,
                stop,
                config.sft.max_response_tokens,
            ),
        )
        policies["ppo"] = ppo.policy.model
    if "dpo" in config.routes():
        dpo = run_stage("dpo", train_dpo(sft.model, lm.tokenizer, train_pairs, config.dpo, stop))
        policies["dpo"] = dpo.policy
    evaluation_started = time.perf_counter()
    comparison = compare_policies(
        sft.model,
        policies,
        lm.tokenizer,
        reward.model if reward is not None else None,
        labeler,
        data.heldout_prompts,
        config.eval_samples,
        config.max_new_tokens,
        config.seed + 2,
        lambda done, total: report("evaluation", Sampled(done, total)),
    )
    seconds["evaluation"] = round(time.perf_counter() - evaluation_started, 1)
    # each route's own training after SFT and the shared comparisons: PPO's includes its reward model
    spent = route_seconds(*(seconds.get(stage, 0.0) for stage in ("reward", "ppo", "dpo")))
    summary = {
        **(
            {
                "rm_heldout_accuracy": round(reward.heldout_accuracy, 4),
                "rm_heldout_interval": [round(check.accuracy.low, 4), round(check.accuracy.high, 4)],
                "rm_accuracy_by_margin": {g["group"]: round(g["accuracy"].value, 4) for g in check.by_margin},
                "rm_heldout_pairs": len(heldout_pairs),
            }
            if reward is not None
            else {}
        ),
        "rm_train_pairs": len(train_pairs),
        **comparison.summary,
        **{f"{route}_seconds": round(spent[route], 1) for route in config.routes()},
        "ptx_coef": config.ppo.ptx_coef,
        "stage_seconds": seconds,
        "seconds": round(time.perf_counter() - started, 1),
    }
    rows = comparison.result_rows(
        lm.name,
        # where the comparisons came from, as the app stores it (`session.ranking_settings`)
        {
            **config.to_dict(),
            "ptx_coef": config.ppo.ptx_coef,
            "comparisons": SIMULATED if data.comparisons is None else UPLOADED,
        },
        spent,
        str(lm.device),
        methods=route_methods(config.ppo.ptx_coef),
    )
    if reward is not None:
        for row in rows:
            row.metrics.update(rm_heldout_accuracy=summary["rm_heldout_accuracy"])
    return PipelineResult(sft, reward, ppo, dpo, comparison, summary, rows, check)
