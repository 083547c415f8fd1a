"""One person's RLHF pipeline run stage by stage, as the app's RLHF tab runs it.

`run_pipeline` runs every stage in one go; a person instead runs SFT, looks, ranks a few samples, trains
the reward model, runs PPO and/or DPO (on the comparisons the reward model learnt from), compares.
`RLHFSession` keeps what each stage made and owns the rules between them: each stage needs the one before
("Run step 1 (SFT) first."), and a new stage makes the later ones stale (a new SFT model drops the reward
model and the policies trained on the old one; rankings stay).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from peftlab.config import counted
from peftlab.errors import PeftlabError
from peftlab.models import LM, model_card
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.dpo import DPOConfig, DPOEvent, DPOResult, train_dpo
from peftlab.rlhf.evaluation import PolicyComparison, compare_policies
from peftlab.rlhf.generation import sample_responses
from peftlab.rlhf.labelers import HumanRankings, labeler_by_name
from peftlab.rlhf.pipeline import (
    PipelineConfig,
    RLHFData,
    Sampled,
    SamplingStopped,
    file_digest,
    ranked_comparisons,
)
from peftlab.rlhf.ppo import PPOConfig, PPOEvent, PPOResult, PPORun, ppo_steps, start_ppo
from peftlab.rlhf.reward import RewardConfig, RewardEvent, RewardResult, train_reward_model
from peftlab.rlhf.sft import SFTConfig, SFTEvent, SFTResult, train_sft
from peftlab.rlhf.stored import MINE, RANKING_SETTINGS, RANKING_SOURCES, SIMULATED, UPLOADED

STAGES = {"sft": "step 1 (SFT)", "reward": "step 2 (reward model)", "ppo": "step 3 (PPO)", "dpo": "DPO"}
REQUIRES = {"sft": (), "reward": ("sft",), "ppo": ("sft", "reward"), "dpo": ("sft",)}  # the stages each builds on
DROPPED_NAMES = {"reward": "the reward model", "ppo": "PPO", "dpo": "DPO"}  # the later stages, as `dropped_by` says
SAMPLE_PROMPTS = 3  # held-out prompts the SFT stage answers while it trains


def ranking_settings(source: str, config: PipelineConfig) -> dict:
    """Where a reward model's comparisons came from, as stored settings: `source` (a RANKING_SOURCES) and the
    settings of `config` that make a simulated labeler's rankings, named as `PipelineConfig.to_dict()` names them, as
    the command line stores them (`stored.route_settings` reads them only for the simulated labeler)."""
    made = config.to_dict()
    return {"comparisons": source, **{name: made[name] for name in RANKING_SETTINGS}}


@dataclass
class RLHFSession:
    """The stages one person has run, and the samples and rankings they made."""

    human: HumanRankings = field(default_factory=HumanRankings)
    lm: LM | None = None
    data: RLHFData | None = None
    sft: SFTResult | None = None
    reward: RewardResult | None = None
    ppo: PPOResult | None = None
    dpo: DPOResult | None = None
    pairs: list[Comparison] | None = None  # the training comparisons of the reward model, which DPO learns from
    pending: tuple[str, list[str]] | None = None  # a prompt and the responses shown for ranking
    ppo_run: PPORun | None = None  # a PPO run between two chunks of steps (`continue_ppo`)
    # the settings of the stages held, keyed as `PipelineConfig.to_dict()` keys them ("sft", "reward", "ppo", "dpo",
    # and where the comparisons came from): stored with an evaluation, so that other runs are told apart
    settings: dict = field(default_factory=dict)

    def restore(self, kept: RLHFSession) -> None:
        """Put back the stages `kept` (a `dataclasses.replace` copy made before a stage) had: a stage that ends
        without a result (stopped before its first step, or for its estimate) leaves the session as it found it."""
        vars(self).update(vars(kept))

    def dropped_by(self, stage: str) -> str:
        """What running `stage` ("sft", "reward") again would drop of what this session holds, in words ("the reward
        model, PPO and DPO"), or "": a new SFT model drops every stage after it, a new reward model the policies."""
        later = {"sft": ("reward", "ppo", "dpo"), "reward": ("ppo", "dpo")}[stage]
        held = [DROPPED_NAMES[name] for name in later if getattr(self, name) is not None]
        return ", ".join(held[:-1]) + (" and " if len(held) > 1 else "") + held[-1] if held else ""

    def need(self, stage: str) -> None:
        """Raise a PeftlabError naming the first step to run when `stage` (a key of STAGES) or a stage it builds
        on has not run: PPO before anything asks for step 1, not step 2."""
        for earlier in (*REQUIRES[stage], stage):
            if getattr(self, earlier) is None:
                raise PeftlabError(f"Run {STAGES[earlier]} first.")

    def run_sft(
        self, lm: LM, data: RLHFData, config: SFTConfig, stop: threading.Event | None = None
    ) -> Iterator[SFTEvent | SFTResult]:
        """Stage 1 on `data`; the stages after it are dropped, the person's rankings kept. A stop before the first
        step (the last item an SFTResult without losses) leaves the session as it was: a re-run stopped while its
        model loaded dropped the SFT model and every stage after it, and kept nothing new.

        Raises:
            PeftlabError: bad data for SFT.
        """
        kept = replace(self)
        self.lm, self.data, self.pending = lm, data, None
        self.sft = self.reward = self.ppo = self.dpo = self.pairs = self.ppo_run = None
        for item in train_sft(lm, data.demonstrations, config, data.heldout_prompts[:SAMPLE_PROMPTS], stop):
            if isinstance(item, SFTResult):
                if item.losses:
                    self.sft, self.settings = item, {"sft": config.to_dict()}
                else:
                    self.restore(kept)
            yield item

    def sample_for_ranking(self, k: int, seed: int) -> tuple[str, list[str]]:
        """K responses of the SFT policy to one training prompt, kept as the pending ranking."""
        if k < 2:
            raise PeftlabError(f"A ranking needs K of at least 2 responses, not {k}.")
        self.need("sft")
        prompt = random.Random(seed + len(self.human)).choice(self.data.train_prompts)
        rollout = sample_responses(self.sft.model, self.lm.tokenizer, [prompt] * k, seed=seed + len(self.human))
        self.pending = (prompt, rollout.responses)
        return self.pending

    def save_ranking(self, ranks: Sequence[int | None]) -> None:
        """The pending responses' ranks, in the order they were shown: 1 the best, equal ranks tied
        (`HumanRankings.add`, whose errors it raises)."""
        if not self.pending:  # a second press after a save said "first", as if the saved ones were gone
            if not len(self.human):
                raise PeftlabError("Sample responses to rank first.")
            raise PeftlabError(
                f"Sample new responses to rank first ({counted(len(self.human), 'ranking')} saved so far)."
            )
        prompt, responses = self.pending
        self.human.add(prompt, responses, list(ranks))
        self.pending = None

    def ranked_pairs(self) -> list[Comparison]:
        """The person's comparisons on prompts the current data may train on: rankings stay when SFT runs again, and
        one made under another seed (or other data) may rank a prompt now held out for the evaluation, which the
        reward model would then have learnt."""
        held = set(self.data.heldout_prompts) if self.data else set()
        return [pair for pair in self.human.comparisons() if pair.prompt not in held]

    def check_source(self, source: str, comparisons_file: str | None = None) -> None:
        """Raise the PeftlabError `comparisons` would before any work: SFT not run, an unknown source, rankings of
        fewer than 2 prompts, or uploaded comparisons that step 1 did not get (a file uploaded after it ran, or one
        `comparisons_file` replaced after it: SFT's held-out prompts depend on it, and the reward model learnt from
        the file step 1 read without a word)."""
        self.need("sft")
        if source not in RANKING_SOURCES:
            raise PeftlabError(f"Comparisons come from {', '.join(RANKING_SOURCES)}, not {source!r}.")
        # before the press's warning that the stage drops DPO: it was asked to agree to that for a run that could not
        # start, and the two sentences took turns press after press
        if source == MINE and len({pair.prompt for pair in self.ranked_pairs()}) < 2:
            raise PeftlabError(
                "Rank responses for at least 2 prompts first: one part trains the reward model, one tests it."
            )
        if source == UPLOADED and self.data.comparisons is None:
            raise PeftlabError(
                "Step 1 (SFT) ran without a comparisons file; upload it beside the demonstrations and run step 1 "
                "again (it holds out prompts by the comparisons), or take the comparisons from another source."
            )
        uploaded = source == UPLOADED
        if uploaded and comparisons_file and file_digest(comparisons_file) != self.data.comparisons_digest:
            raise PeftlabError(
                "The comparisons file is not the one step 1 (SFT) read: run step 1 again to use it (it holds out "
                "prompts by the comparisons), or upload the earlier file back."
            )

    def comparisons(
        self, source: str, config: PipelineConfig, progress: Callable[[int, int], None] | None = None
    ) -> tuple[list[Comparison], list[Comparison]]:
        """(training, held-out) comparisons from `source`: a simulated labeler ranking SFT samples (`progress`
        follows its sampling, `ranked_comparisons`), the person's rankings, or the comparisons uploaded with the
        demonstrations (`check_source` says what it refuses)."""
        self.check_source(source)
        if source == MINE:
            pairs = self.ranked_pairs()
            prompts = list(dict.fromkeys(p.prompt for p in pairs))  # at least 2 (`check_source`)
            held = set(prompts[: max(1, len(prompts) // 5)])
            return [p for p in pairs if p.prompt not in held], [p for p in pairs if p.prompt in held]
        data = replace(self.data, comparisons=None) if source == SIMULATED else self.data
        labeler = labeler_by_name(config.labeler)
        return ranked_comparisons(self.sft.model, self.lm.tokenizer, data, config, labeler, progress)

    def run_reward(
        self,
        train_pairs: Sequence[Comparison],
        heldout_pairs: Sequence[Comparison],
        config: RewardConfig,
        stop: threading.Event | None = None,
        ranking: dict | None = None,
    ) -> Iterator[RewardEvent | RewardResult]:
        """Stage 2 on the SFT model; the policies trained against an older reward model or comparisons are dropped.
        `ranking`: where the comparisons came from, as settings (`ranking_settings`), kept in `settings`."""
        self.need("sft")
        self.ppo = self.dpo = self.ppo_run = None
        self.settings = {k: v for k, v in self.settings.items() if k not in ("ppo", "dpo")}
        for item in train_reward_model(self.sft.model, self.lm.tokenizer, train_pairs, heldout_pairs, config, stop):
            if isinstance(item, RewardResult):  # the settings of the reward model held, once it is new (a refusal
                self.reward, self.pairs = item, list(train_pairs)  # keeps the old one, and said its settings went)
                self.settings = {"sft": self.settings.get("sft"), **(ranking or {}), "reward": config.to_dict()}
            yield item

    def run_dpo(self, config: DPOConfig, stop: threading.Event | None = None) -> Iterator[DPOEvent | DPOResult]:
        """DPO from the SFT model on the reward model's training comparisons; Stop keeps the policy so far.

        Raises:
            PeftlabError: `check_dpo`'s.
        """
        self.check_dpo()
        for item in train_dpo(self.sft.model, self.lm.tokenizer, self.pairs, config, stop):
            if isinstance(item, DPOResult):
                self.dpo, self.settings = item, {**self.settings, "dpo": config.to_dict()}
            yield item

    def check_dpo(self) -> None:
        """Raise a PeftlabError naming the step to run first when DPO has no comparisons yet: SFT, or the reward model
        (DPO learns from its training comparisons)."""
        if self.pairs is None:
            self.need("sft")
            raise PeftlabError("Run step 2 (reward model) first: DPO learns from the same comparisons.")

    def run_ppo(
        self, labeler: str, config: PPOConfig, stop: threading.Event | None = None
    ) -> Iterator[PPOEvent | PPOResult]:
        """Stage 3 against the reward model; `stop` ends it after a step and the policy so far is kept."""
        self.start_ppo(config)
        yield from self.continue_ppo(labeler, config, None, stop)

    def start_ppo(self, config: PPOConfig) -> None:
        """A new PPO run (`ppo.start_ppo`), waiting for its steps in `ppo_run`."""
        self.need("reward")
        self.ppo_run = start_ppo(self.sft.model, config)

    def continue_ppo(
        self, labeler: str, config: PPOConfig, until: int | None = None, stop: threading.Event | None = None
    ) -> Iterator[PPOEvent | PPOResult]:
        """The started run's steps up to step `until` (all when None): a chunk of steps per call on ZeroGPU, the run
        waiting in `ppo_run` between chunks. After its last step or a stop, the PPOResult (kept in `ppo`).

        Raises:
            PeftlabError: no run was started.
        """
        if self.ppo_run is None:
            raise PeftlabError("Start PPO first: there is no PPO run to continue.")
        self.need("reward")
        yield from ppo_steps(
            self.ppo_run,
            self.lm.tokenizer,
            self.reward.model,
            self.data.train_prompts,
            config,
            labeler_by_name(labeler),
            self.data.demonstrations,
            until,
            stop,
            self.settings["sft"]["max_response_tokens"],  # PPO-ptx reads the demonstrations as SFT did
        )
        if until is None or self.ppo_run.steps_done >= config.steps or (stop is not None and stop.is_set()):
            yield self.finish_ppo(config)

    def finish_ppo(self, config: PPOConfig) -> PPOResult:
        """The started run (of `config`)'s policy so far becomes the stage's result (a Stop between chunks ends a run
        here)."""
        self.ppo, self.ppo_run = self.ppo_run.result(), None
        self.settings = {**self.settings, "ppo": config.to_dict()}
        return self.ppo

    def evaluate(
        self, labeler: str, prompts: int, seed: int, stop: threading.Event | None = None
    ) -> PolicyComparison | Sampled:
        """SFT and every trained policy (PPO, DPO) answer the first `prompts` held-out prompts, side by side. A `stop`
        set while they answer ends it after the batch of answers it is sampling: how far it was (Sampled), and
        nothing is kept.

        Raises:
            PeftlabError: no trained policy yet, or more prompts asked than the data holds out.
        """
        self.check_evaluation(prompts)

        def follow(done: int, total: int) -> None:
            if stop is not None and stop.is_set():
                raise SamplingStopped(Sampled(done, total))

        try:
            return compare_policies(
                self.sft.model,
                self.policies(),
                self.lm.tokenizer,
                self.reward.model,
                labeler_by_name(labeler),
                self.data.heldout_prompts[:prompts],
                samples_per_prompt=1,
                seed=seed,
                progress=follow,
            )
        except SamplingStopped as stopped:
            return stopped.sampled

    def check_evaluation(self, prompts: int) -> None:
        """Raise `evaluate`'s PeftlabError for a session with no trained policy yet (naming the first step to run)
        or for more prompts than the data holds out."""
        if not self.policies():
            self.need("sft")
            raise PeftlabError("Run step 3 (PPO) or DPO first.")
        held = len(self.data.heldout_prompts)
        if prompts > held:  # 99999 answered the 32 there are, and said so only in its result
            raise PeftlabError(
                f"{prompts} held-out prompts were asked for; the data holds out {held}, ask at most that."
            )

    def policies(self) -> dict:
        """The trained policies by route: "ppo" and/or "dpo"."""
        return {
            name: model
            for name, model in (
                ("ppo", self.ppo.policy.model if self.ppo else None),
                ("dpo", self.dpo.policy if self.dpo else None),
            )
            if model is not None
        }

    def _save_reward_model(self, folder: Path) -> Path:
        """The reward model with the SFT adapter it reads, in sft/ (its zip held the head alone, useless without
        them); full fine-tuning's SFT model is too large to repeat: its own download holds it."""
        if self.sft.adapter is not None:
            self._save_sft(Path(folder) / "sft")
            reads = "the backbone with the SFT adapter saved beside this file, in sft/"
        else:
            reads = "the SFT model of the same run (its own download: full fine-tuning)"
        return self.reward.model.save(folder, backbone=self.lm.hub_name, reads=reads)

    def _save_policy(self, route: str, save: Callable[[Path], Path], folder: Path) -> Path:
        """A policy's adapter (`save(folder)`: PPO's or DPO's) with the SFT adapter it was trained on, in sft/, and a
        model card saying how the two load: the adapter alone on the base model it names is not the policy that was
        trained and evaluated (its zip held that adapter alone)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.sft.adapter is not None:
            self._save_sft(folder / "sft")
        policy_card(route, self.lm, sft_beside=self.sft.adapter is not None).save(folder / "README.md")
        return save(folder)  # PEFT adds its metadata (library, version, base model) to the card

    def _save_sft(self, folder: Path) -> Path:
        """The SFT model's weights (`SFTResult.save`) with a card saying what they are and how they load (the
        adapter's was PEFT's blank template)."""
        folder = self.sft.save(folder)
        card = stage_card(
            "SFT",
            self.lm,
            "supervised fine-tuning on demonstrations (InstructGPT's first step)",
            ['sft = PeftModel.from_pretrained(base, ".")  # this folder']
            if self.sft.adapter is not None
            else ['sft = AutoModelForCausalLM.from_pretrained(".")  # this folder: every weight'],
            base=self.sft.adapter is not None,
        )
        card.data.library_name = "peft" if self.sft.adapter is not None else "transformers"
        card.save(folder / "README.md")
        return folder

    def save(self, stage: str, folder: Path) -> Path:
        """A stage's trained weights into `folder`: the SFT adapter, the reward model, the PPO or the DPO adapter
        (a policy with the SFT adapter it sits on, `_save_policy`)."""
        self.need(stage)
        savers = {
            "sft": lambda: self._save_sft(folder),
            "reward": lambda: self._save_reward_model(folder),
            "ppo": lambda: self._save_policy("PPO", self.ppo.policy.save, folder),
            "dpo": lambda: self._save_policy("DPO", self.dpo.save, folder),
        }
        return savers[stage]()


def policy_card(route: str, lm: LM, sft_beside: bool):
    """The model card of a `route` ("PPO", "DPO") policy's adapter trained on the SFT model of `lm`: how to load the
    two. `sft_beside`: the SFT adapter is in sft/; else SFT fine-tuned every weight, and its own download holds that
    model."""
    if sft_beside:
        sits_on = "the base model with the SFT adapter in `sft/` merged into it"
        sft_lines = ['sft = PeftModel.from_pretrained(base, "sft").merge_and_unload()  # the SFT adapter, in sft/']
    else:
        sits_on = "the SFT model of the same run (full fine-tuning: the SFT stage's own download holds it)"
        sft_lines = ['sft = AutoModelForCausalLM.from_pretrained("sft-download")  # the SFT zip, unzipped']
    how = "against a reward model" if route == "PPO" else "on ranked comparisons, with no reward model"
    what = (
        f"a policy trained with {route} ({how}) on {sits_on}. Loaded on `{lm.hub_name}` alone, this adapter is not "
        "the policy that was trained and evaluated"
    )
    if route == "PPO":
        what += ". `value_head.safetensors` is PPO's value head (the critic); generating needs only the policy"
    lines = [*sft_lines, 'policy = PeftModel.from_pretrained(sft, ".")  # this folder']
    return stage_card(f"{route} policy (LoRA adapter)", lm, what, lines, base=sft_beside)


def stage_card(title: str, lm: LM, what: str, code: list[str], base: bool):
    """A saved RLHF stage's model card (`huggingface_hub.ModelCard`): `title` on `lm`, `what` it is in words, and
    the Python `code` that loads it (after the base model's own line when `base`)."""
    lines = [
        f"# {title} on `{lm.hub_name}`",
        "",
        f"Made by peftlab's RLHF tab: {what}." + (f" {lm.weights_note}" if lm.weights_note else ""),
        "",
        "## Use it",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        *([f'base = AutoModelForCausalLM.from_pretrained("{lm.hub_name}")'] if base else []),
        *code,
        "```",
        "",
    ]
    return model_card(lm.hub_name, ["peftlab", "rlhf", title.split()[0].lower()], lines)
