"""Stage 2, the reward model: an LM with a scalar head, trained on ranked comparisons.

For each prompt, K responses are sampled from the SFT policy and a labeler ranks them; all K-choose-2 pairs are
kept, and the model learns -log sigmoid(r_chosen - r_rejected) (InstructGPT, Ouyang et al. 2022). As in
InstructGPT (§3.5), a batch is a few ranked prompts, each with all its comparisons, and each response is
forwarded once: K forwards give K-choose-2 pairs, and the pairs of one prompt are learnt together rather than
spread over steps (on validation prompts, 0.70 against 0.64 at equal compute for a LoRA reward model:
`benchmarks/rlhf_pipeline.py`'s notes). The backbone is a copy of the SFT model, frozen (only the head trains, on
features computed once) or with a LoRA update (`lora_r` > 0). The head reads the response's hidden states
averaged over its tokens at three depths (a quarter, three quarters and the top of the network), which ranked
held-out pairs better than the last token's or one layer's state (the figures are in the notes of
`benchmarks/rlhf_pipeline.py`).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from peftlab.config import Config, counted, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.models import autocast_for, save_adapter
from peftlab.rlhf.crossing import Crossing, is_lora, load_trainable_state, sft_result_of, trainable_state
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.generation import PAIR_RESPONSE_TOKENS, SequenceBatch, encode_pairs, read_alike, sample_responses
from peftlab.rlhf.labelers import Labeler
from peftlab.rlhf.ppo_math import pairwise_reward_loss, preference_credit
from peftlab.rlhf.sft import lora_config
from peftlab.seeding import drawing, seeded
from peftlab.stats import Proportion, clustered_proportion, proportion
from peftlab.training import Event, TrainingLoop

HEAD_FILE = "reward_head.safetensors"
INFO_FILE = "reward_model.json"


@dataclass
class RewardConfig(Config):
    subject: ClassVar[str] = "Reward model {label}"
    lora_r: int = setting(
        0,
        "rank of a LoRA update of the backbone; 0 trains the scalar head alone on frozen features",
        minimum=0,
        label="LoRA rank",
        requirement="0 (head only) or more",
    )
    steps: int = setting(150, "optimiser steps", minimum=1, cap="steps")
    batch_size: int = setting(4, "ranked prompts per step, each with all its comparisons", minimum=1)
    learning_rate: float = setting(3e-3, "Adam learning rate", above=0)
    eval_every: int = setting(25, "steps between held-out evaluations", minimum=1)
    seed: int = seed_setting(0, "seed for batches")


class RewardModel(torch.nn.Module):
    """backbone (a causal LM) + head: reward = head(LayerNorm(the response's hidden states averaged over its tokens,
    at three depths)), `features`."""

    def __init__(self, backbone: torch.nn.Module, tokenizer, sft_model: torch.nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.__dict__["sft_model"] = sft_model  # what the backbone copies; not a submodule (`RewardResult` crossing)
        hidden = backbone.get_output_embeddings().weight.shape[1]
        layers = backbone.config.num_hidden_layers
        self.depths = sorted(
            {max(1, round(layers / 4)), max(1, round(3 * layers / 4)), layers}
        )  # hidden_states indices
        # Features are standardised per response (no trainable parameters) so one learning rate fits any model.
        self.norm = torch.nn.LayerNorm(hidden * len(self.depths), elementwise_affine=False)
        self.head = torch.nn.Linear(hidden * len(self.depths), 1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        # PPO gets (reward - offset) / scale: mean 0 and spread 1 over held-out responses (set after training).
        self.register_buffer("offset", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def features(self, batch: SequenceBatch) -> torch.Tensor:
        """(B, depths x H) the response's hidden states averaged over its tokens, at each depth; differentiable."""
        device = self.head.weight.device
        width = batch.response_ids.shape[1]
        with autocast_for(self.backbone):
            hidden_states = self.backbone(
                input_ids=batch.input_ids.to(device),
                attention_mask=batch.attention_mask.to(device),
                position_ids=batch.position_ids.to(device),
                logits_to_keep=1,
                output_hidden_states=True,
            ).hidden_states  # layers + 1 tensors of (B, P + R, H)
        mask = batch.response_mask.to(device, torch.float32).unsqueeze(-1)  # (B, R, 1)
        means = [(hidden_states[d][:, -width:].float() * mask).sum(1) / mask.sum(1) for d in self.depths]  # (B, H) each
        return self.norm(torch.cat(means, -1))  # (B, depths x H)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """(B,) raw rewards."""
        return self.head(self.features(batch)).squeeze(-1)

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """(N,) normalised rewards of (prompt, response) texts."""
        parts = [
            self(encode_pairs(self.tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size]))
            for i in range(0, len(prompts), batch_size)
        ]
        return self.normalize(torch.cat(parts).cpu())

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.offset.to(raw.device)) / self.scale.to(raw.device)

    def save(
        self, folder: str | Path, backbone: str | None = None, reads: str = "the SFT model of the same run"
    ) -> Path:
        """The head and its normalisation (safetensors), the backbone's LoRA adapter if any (PEFT files), and
        INFO_FILE naming the `backbone` the head reads (default its config's path; a head alone is useless on any
        other model) and what it `reads` of it."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {
            "head.weight": self.head.weight,
            "head.bias": self.head.bias,
            "offset": self.offset,
            "scale": self.scale,
        }
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(folder / HEAD_FILE))
        if hasattr(self.backbone, "peft_config"):
            save_adapter(self.backbone, folder)
        info = {
            "backbone": backbone or self.backbone.config.name_or_path,
            "reads": f"{reads}: hidden states averaged over the response at layers {self.depths}",
        }
        (folder / INFO_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        return folder


@dataclass(kw_only=True)
class RewardEvent(Event):
    loss: float
    train_accuracy: float
    heldout_accuracy: float  # nan between evaluations


@dataclass(eq=False)  # comparing two results would build their models
class RewardResult(Crossing):
    """The reward model and its held-out accuracy. It crosses processes as the SFT result it copies, its LoRA
    adapter's configuration and its trained tensors (`crossing`)."""

    MODELS = ("model",)

    model: RewardModel = field(repr=False)
    heldout_accuracy: float
    seconds: float
    heldout_credit: list[float]  # per held-out comparison: 1 chosen response rewarded higher, 1/2 a tie, 0 lower

    def _crossing(self, name):
        backbone = self.model.backbone
        lora = backbone.peft_config["default"] if hasattr(backbone, "peft_config") else None
        state = trainable_state(self.model, lambda n: is_lora(n) or n.startswith("head.") or n in ("offset", "scale"))
        return _reward_model, (sft_result_of(self.model.sft_model), lora, state)


def _reward_model(sft, lora, state: dict) -> RewardModel:
    """The reward model rebuilt on this side of a crossing: a copy of the SFT model, the adapter, the head."""
    backbone = copy.deepcopy(sft.model).requires_grad_(False)
    with drawing():  # the adapter and the head are initialised, then replaced by `state`
        if lora is not None:
            from peft import get_peft_model

            backbone = get_peft_model(backbone, lora)
        model = RewardModel(backbone, sft.lm.tokenizer, sft.model).to(next(sft.model.parameters()).device)
    load_trainable_state(model, state)
    return model.requires_grad_(False).eval()


def collect_comparisons(
    model,
    tokenizer,
    prompts: Sequence[str],
    labeler: Labeler,
    k: int = 4,
    max_new_tokens: int = 32,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Comparison], SequenceBatch]:
    """Sample K responses per prompt from `model`; the labeler ranks them into all K-choose-2 pairs (ties dropped).
    `progress(done, total)` follows the sampling (`sample_responses`).

    Raises:
        PeftlabError: K below 2.
    """
    if k < 2:
        raise PeftlabError(f"A ranking needs K of at least 2 responses per prompt, not {k}.")
    repeated = [p for p in prompts for _ in range(k)]
    rollout = sample_responses(model, tokenizer, repeated, max_new_tokens, seed, progress=progress)
    pairs = []
    for i, prompt in enumerate(prompts):
        pairs += labeler.compare(prompt, rollout.responses[i * k : (i + 1) * k])
    return pairs, rollout


def train_reward_model(
    sft_model: torch.nn.Module,
    tokenizer,
    train_pairs: Sequence[Comparison],
    heldout_pairs: Sequence[Comparison],
    config: RewardConfig,
    stop: threading.Event | None = None,
) -> Iterator[RewardEvent | RewardResult]:
    """Train a reward model initialised from the SFT model; yield a RewardEvent per step and the RewardResult last.

    Raises:
        PeftlabError: no training or held-out comparisons, or a comparison whose two texts are the same.
    """
    for name, pairs in (("training", train_pairs), ("held-out", heldout_pairs)):
        if not pairs:
            raise PeftlabError(f"The reward model has no {name} comparisons; rank more prompts.")
        same = next((p for p in pairs if p.chosen.strip() == p.rejected.strip()), None)
        if same is not None:
            raise PeftlabError("A comparison has the same text as chosen and rejected; it carries no preference.")
    with seeded(config.seed):  # the adapter's initialisation
        backbone = copy.deepcopy(sft_model)
        backbone.requires_grad_(False)
        if config.lora_r:
            from peft import get_peft_model

            backbone = get_peft_model(backbone, lora_config(config.lora_r, backbone))
        model = RewardModel(backbone, tokenizer, sft_model).to(next(sft_model.parameters()).device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    features = _FeatureCache(model) if not config.lora_r else None  # frozen backbone: each text's features once
    loop = TrainingLoop(
        parameters,
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        eval_every=config.eval_every,
        evaluate=lambda: {"heldout_accuracy": _score_heldout()},
        # every ranked prompt once per pass before any twice (InstructGPT trains its reward models one pass; the
        # defaults here take several over their 90 ranked prompts: more steps than prompts in a pass)
        passes=True,
    )
    heldout_credit: list[float] = []  # of the last evaluation: the loop evaluates the final weights

    def _score_heldout() -> float:
        heldout_credit[:] = pair_credit(model, heldout_pairs, features)
        return sum(heldout_credit) / len(heldout_credit)

    batch_accuracy = [float("nan")]  # of the last training batch, for its event

    def batch_loss(batch: list[list[Comparison]]) -> torch.Tensor:
        chosen, rejected = _pair_rewards(model, features, [pair for ranking in batch for pair in ranking])  # (N,) each
        loss, accuracy = pairwise_reward_loss(chosen, rejected)
        batch_accuracy[0] = accuracy.item()
        return loss

    rankings: dict[str, list[Comparison]] = {}  # each prompt's comparisons: one batch element
    for pair in train_pairs:
        rankings.setdefault(pair.prompt, []).append(pair)
    started, evaluated_last = time.perf_counter(), False
    for record in loop.run(list(rankings.values()), batch_loss, stop):
        evaluated_last = record.scores is not None
        heldout = record.scores["heldout_accuracy"] if record.scores else float("nan")
        yield RewardEvent(
            step=record.step,
            loss=record.loss,
            train_accuracy=batch_accuracy[0],
            heldout_accuracy=heldout,
            elapsed=time.perf_counter() - started,
        )
    _set_normalization(model, heldout_pairs, features)
    model.requires_grad_(False)
    if not evaluated_last:  # stopped between evaluations (or before the first step): the weights kept are scored
        _score_heldout()
    accuracy = sum(heldout_credit) / len(heldout_credit)
    yield RewardResult(model.eval(), accuracy, time.perf_counter() - started, list(heldout_credit))


def cut_ties_note(tokenizer, pairs: Sequence[Comparison]) -> str | None:
    """A sentence when comparisons differ only after the response tokens the reward model and DPO read
    (`encode_pairs` and `read_texts` keep the first PAIR_RESPONSE_TOKENS - 1): the reward model sees them as ties,
    learns nothing from them and scores them half right; DPO leaves them out. Uploaded pairs sharing a 120-word
    opening trained at loss 0.693 throughout, and PPO then followed that reward model, with no word of why. None
    otherwise."""
    read = PAIR_RESPONSE_TOKENS - 1
    tied = sum(read_alike(tokenizer, p.chosen, p.rejected) for p in pairs)
    if not tied:
        return None
    return (
        f"{tied} of the {len(pairs)} comparisons differ only after the first {read} tokens of their responses, all "
        "the reward model and DPO read: they are ties there, and nothing is learnt from them; let the responses "
        "differ earlier."
    )


# Where InstructGPT's reward models stand (Ouyang et al. 2022, §4.1 and Appendix E.2), for scale: how often they
# agree with the labelers whose comparisons they learnt, with held-out labelers, and labelers with each other.
INSTRUCTGPT_AGREEMENT = {
    "InstructGPT reward models vs their training labelers": "72.4 ± 0.4 %",
    "InstructGPT reward models vs held-out labelers": "69.6 ± 0.9 %",
    "InstructGPT labelers with each other": "72.6 to 77.3 %",
}
MARGIN_GROUPS = ("near ties", "middle", "clear")
REPORT_COLUMNS = ("comparisons", "pairs", "accuracy", "95 % interval")  # of HeldoutReport.table's rows


@dataclass
class HeldoutReport:
    """How a reward model ranks held-out comparisons: its accuracy with a 95 % interval and, where the labeler's
    scores are known, its accuracy on near ties, middle and clear pairs (thirds by the labeler's score margin)."""

    accuracy: Proportion
    by_margin: list[dict]  # per third: {"group", "from", "to" (its margins), "accuracy": Proportion}; [] unknown

    def chance_note(self) -> str | None:
        """A sentence when the held-out accuracy's 95 % interval reaches 50 %, where a coin would rank as well, or
        lies below it: PPO against such a reward model follows noise or the opposite of the rankings (a run at 50 %
        said "Next: PPO"). None otherwise."""
        share = self.accuracy
        if share.low > 0.5:
            return None
        held_out = counted(share.trials, "held-out comparison")
        verdict = (
            f"ranks its {held_out} the wrong way round more often than not (its 95 % interval lies below 50 %): PPO "
            "against it would learn the opposite of the rankings"
            if share.high < 0.5
            else f"cannot be told apart from a coin toss on {held_out} (its 95 % interval reaches 50 %): PPO against "
            "it would follow noise"
        )
        return f"This reward model {verdict}. Train it for more steps or on more comparisons first."

    def table(self) -> list[dict]:
        """Rows for a table: the whole held-out set, each margin third, and InstructGPT's figures."""

        def row(name: str, share: Proportion) -> dict:
            interval = f"{share.low:.1%} to {share.high:.1%}"
            return dict(zip(REPORT_COLUMNS, (name, share.trials, f"{share.value:.1%}", interval)))

        rows = [row("all held-out", self.accuracy)]
        for group in self.by_margin:
            rows.append(row(f"{group['group']} (margin {group['from']:.2f} to {group['to']:.2f})", group["accuracy"]))
        rows += [dict(zip(REPORT_COLUMNS, (name, None, figure, ""))) for name, figure in INSTRUCTGPT_AGREEMENT.items()]
        return rows


def margin_report(
    credit: Sequence[float], margins: Sequence[float] | None, prompts: Sequence[str] | None = None
) -> HeldoutReport:
    """Accuracy over the pairs (`credit[i]`: 1 the chosen response got the higher reward, 1/2 a tie, 0 the lower;
    bools count as 1 and 0) and, with the labeler's score margins (chosen minus rejected), over the thirds of the
    pairs by margin, smallest first. With each pair's prompt, the 95 % intervals count the pairs of one prompt as
    correlated (`stats.clustered_proportion`); without, as independent (`stats.proportion`).

    Raises:
        ValueError: no pairs, or margins or prompts of another length.
    """
    credit = np.asarray(credit, dtype=float)
    if prompts is not None and len(prompts) != len(credit):
        raise ValueError(f"{len(prompts)} prompts for {len(credit)} pairs")
    clusters = None if prompts is None else np.asarray(prompts, dtype=object)

    def share(part) -> Proportion:
        if clusters is None:
            return proportion(float(credit[part].sum()), len(credit[part]))
        return clustered_proportion(credit[part], clusters[part])

    groups = []
    if margins is not None:
        margins = np.asarray(margins, dtype=float)
        if len(margins) != len(credit):
            raise ValueError(f"{len(margins)} margins for {len(credit)} pairs")
        order = np.argsort(margins, kind="stable")
        for name, part in zip(MARGIN_GROUPS, np.array_split(order, len(MARGIN_GROUPS))):
            if len(part):
                groups.append(
                    {
                        "group": name,
                        "from": float(margins[part].min()),
                        "to": float(margins[part].max()),
                        "accuracy": share(part),
                    }
                )
    return HeldoutReport(share(slice(None)), groups)


@torch.no_grad()
def heldout_report(result: RewardResult, pairs: Sequence[Comparison], labeler: Labeler | None) -> HeldoutReport:
    """`margin_report` of a trained reward model on the held-out `pairs` it was scored on, pairs of one prompt
    counted as correlated; the margins are the labeler's (None: a person's or uploaded comparisons, whose margins
    are unknown)."""
    margins = None
    if labeler is not None:
        margins = [labeler.score(p.prompt, p.chosen) - labeler.score(p.prompt, p.rejected) for p in pairs]
    return margin_report(result.heldout_credit, margins, [p.prompt for p in pairs])


class _FeatureCache:
    """Backbone features per (prompt, response) text, for a reward model whose backbone is frozen."""

    def __init__(self, model: RewardModel):
        self.model, self.rows = model, {}

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        keys = list(zip(prompts, responses))
        missing = list(dict.fromkeys(key for key in keys if key not in self.rows))
        with torch.no_grad():
            for start in range(0, len(missing), 32):
                chunk = missing[start : start + 32]
                batch = encode_pairs(self.model.tokenizer, [p for p, _ in chunk], [r for _, r in chunk])
                self.rows.update(zip(chunk, self.model.features(batch)))
        return torch.stack([self.rows[key] for key in keys])  # (N, H)


def _rewards(model: RewardModel, features: _FeatureCache | None, prompts, responses) -> torch.Tensor:
    if features is not None:
        return model.head(features(prompts, responses)).squeeze(-1)
    return model(encode_pairs(model.tokenizer, prompts, responses))


def _distinct_rewards(model, features, texts: Sequence[tuple[str, str]]) -> torch.Tensor:
    """(N,) raw rewards of (prompt, response) texts, each distinct one forwarded once, 32 at a time."""
    distinct = list(dict.fromkeys(texts))
    rewards = torch.cat(
        [
            _rewards(model, features, [p for p, _ in distinct[i : i + 32]], [r for _, r in distinct[i : i + 32]])
            for i in range(0, len(distinct), 32)
        ]
    )  # (D,)
    position = {text: i for i, text in enumerate(distinct)}
    return rewards[[position[text] for text in texts]]


def _pair_rewards(model, features, pairs: Sequence[Comparison]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) raw rewards of the chosen and of the rejected responses: a ranking of K responses gives its K-choose-2
    pairs from K forwards."""
    rewards = _distinct_rewards(
        model, features, [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    )  # (2N,)
    return rewards[: len(pairs)], rewards[len(pairs) :]


@torch.no_grad()
def pair_credit(model: RewardModel, pairs: Sequence[Comparison], features=None) -> list[float]:
    """For each comparison, 1 when its chosen response gets the higher reward, 1/2 a tie, 0 the lower
    (`preference_credit`)."""
    chosen, rejected = _pair_rewards(model, features, pairs)
    return preference_credit(chosen - rejected).tolist()


def pair_accuracy(model: RewardModel, pairs: Sequence[Comparison], features=None) -> float:
    """Share of comparisons whose chosen response gets the higher reward, ties counting half."""
    credit = pair_credit(model, pairs, features)
    return sum(credit) / len(credit)


@torch.no_grad()
def _set_normalization(model: RewardModel, pairs: Sequence[Comparison], features) -> None:
    raw = _distinct_rewards(model, features, sorted({(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)}))
    model.offset.fill_(float(raw.mean()))
    model.scale.fill_(max(float(raw.std()) if len(raw) > 1 else 1.0, 1e-6))
