"""Stage 1, supervised fine-tuning (SFT): teach the policy to answer prompts like the demonstrations.

The loss is the mean negative log-likelihood of the response tokens only (the prompt is context, not a
target), as in InstructGPT (Ouyang et al. 2022). LoRA (default) trains a low-rank update that is merged
into a copy of the model afterwards; "full" trains every weight of a copy. Either way the cached LM is
never modified, and the result is a plain model: the SFT policy, and later PPO's frozen reference.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from peftlab.config import Config, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.models import LM, building, check_width, save_adapter
from peftlab.rlhf.crossing import Crossing, load_trainable_state, remember_sft, trainable_state
from peftlab.rlhf.data import Demonstration
from peftlab.rlhf.generation import check_response_scores_fit, encode_pairs, response_forward, sample_responses
from peftlab.saving import folder_with, saved_files, write_files
from peftlab.seeding import drawing, seeded
from peftlab.training import Event, TrainingLoop

SFT_METHODS = ("lora", "full")
SFT_RESPONSE_TOKENS = 48  # a demonstration's tokens SFT (and PPO-ptx's LM loss) trains on by default


@dataclass
class SFTConfig(Config):
    subject: ClassVar[str] = "SFT {label}"
    method: str = setting(
        "lora", "lora (a low-rank update, merged afterwards) or full (every weight)", choices=SFT_METHODS
    )
    steps: int = setting(60, "optimiser steps", minimum=1, cap="steps")
    batch_size: int = setting(8, "demonstrations per step", minimum=1)
    learning_rate: float = setting(1e-3, "Adam learning rate (full fine-tuning wants about 1e-5)", above=0)
    lora_r: int = setting(16, "LoRA rank", minimum=1, label="LoRA rank")
    # at 1 a cut response kept no token and, without its end token, left the loss an empty mean (NaN)
    max_response_tokens: int = setting(
        SFT_RESPONSE_TOKENS, "longest response trained on, its end token included (longer ones are cut)", minimum=2
    )
    sample_every: int = setting(20, "steps between sample generations shown while training", minimum=1)
    seed: int = seed_setting(0, "seed for batches and samples")


@dataclass(kw_only=True)
class SFTEvent(Event):
    loss: float
    learning_rate: float
    samples: list[tuple[str, str]] = field(default_factory=list)  # (prompt, response) on sampling steps


@dataclass(eq=False)  # comparing two results would build their models
class SFTResult(Crossing):
    """The SFT policy (a plain model, frozen) and what it learned. It crosses processes as the base model's name and
    its adapter's files, or its whole state after full fine-tuning (`crossing`)."""

    MODELS = ("model",)

    model: torch.nn.Module = field(repr=False)
    adapter: dict[str, bytes] | None  # the LoRA adapter's PEFT files, saved before merging; None after full fine-tuning
    losses: list[float]
    seconds: float
    lm: LM | None = field(default=None, repr=False)  # the base model it was trained from

    def __post_init__(self):
        remember_sft(self.model, self)

    def _built(self, name, value):
        remember_sft(value, self)

    def _crossing(self, name):
        full = None if self.adapter is not None else trainable_state(self.model, lambda name: True)
        return _sft_model, (self.lm, self.adapter, full)

    def save(self, folder: str | Path) -> Path:
        """The trained weights in `folder`: the LoRA adapter (PEFT files), or the whole model after full fine-tuning."""
        folder = Path(folder)
        if self.adapter is not None:
            write_files(self.adapter, folder)
        else:
            self.model.save_pretrained(folder)
        return folder


def _sft_model(lm: LM, adapter: dict[str, bytes] | None, full: dict | None) -> torch.nn.Module:
    """The SFT model rebuilt on this side of a crossing: `lm`'s weights with the adapter merged, or `full`."""
    model = copy.deepcopy(lm.model)
    if adapter is not None:  # PEFT initialises the adapter it then loads: `drawing`
        from peft import PeftModel

        with folder_with(adapter) as folder, drawing(), building():
            model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    else:
        load_trainable_state(model, full)
    return model.requires_grad_(False).eval()


def lora_config(r: int, model: torch.nn.Module, modules="all-linear"):
    """A LoRA update of rank r on every linear layer of `model` but the LM head (the usual choice for SFT and RLHF).

    Raises:
        PeftlabError: a rank above the model's hidden size (`models.check_width`).
    """
    from peft import LoraConfig

    check_width(model, r, "LoRA rank")
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=modules, lora_dropout=0.0, task_type="CAUSAL_LM")


def sft_loss(model, tokenizer, demonstrations: Sequence[Demonstration], max_response_tokens: int) -> torch.Tensor:
    """Mean NLL of the response tokens of a batch of demonstrations, the end-of-response token included unless the
    response was cut to `max_response_tokens` - 1 tokens."""
    # a cut response gets no end token: after its cut it taught the policy to stop mid-sentence
    prompts, responses = [d.prompt for d in demonstrations], [d.response for d in demonstrations]
    batch = encode_pairs(tokenizer, prompts, responses, max_response_tokens, close_cut=False)
    log_probs = response_forward(model, batch)  # (B, R)
    mask = batch.response_mask.to(log_probs.device, log_probs.dtype)
    return -(log_probs * mask).sum() / mask.sum()


def sft_samples_at(step: int, config: SFTConfig) -> bool:
    """Whether SFT answers its sample prompts after `step`: every `sample_every` steps, and after the last."""
    return step % config.sample_every == 0 or step == config.steps


def train_sft(
    lm: LM,
    demonstrations: Sequence[Demonstration],
    config: SFTConfig,
    sample_prompts: Sequence[str] = (),
    stop: threading.Event | None = None,
) -> Iterator[SFTEvent | SFTResult]:
    """Fine-tune a copy of `lm` on the demonstrations; yield an SFTEvent per step and the SFTResult last.

    Raises:
        PeftlabError: no demonstrations, a masked LM (it cannot write responses), or a batch whose word scores would
            not fit in memory (`generation.check_response_scores_fit`).
    """
    if not demonstrations:
        raise PeftlabError("SFT needs at least one demonstration (a prompt and the response to learn).")
    if lm.kind != "causal":
        raise PeftlabError(f"The RLHF pipeline needs a causal LM that writes text; {lm.name} is a masked LM.")
    # the longest response as encode_pairs cuts and closes it, in the largest batch the loop draws
    responses = lm.tokenizer([d.response for d in demonstrations], add_special_tokens=False).input_ids
    longest = min(max(map(len, responses)), config.max_response_tokens - 1) + 1
    rows = min(config.batch_size, len(demonstrations))
    lower = "the batch size or the longest response trained on"
    check_response_scores_fit(lm.model, rows, longest, "An SFT batch", lower)
    with seeded(config.seed):  # the adapter's initialisation
        model = copy.deepcopy(lm.model)
        if config.method == "lora":
            from peft import get_peft_model

            model = get_peft_model(model, lora_config(config.lora_r, model))
        else:
            model.requires_grad_(True)
    parameters = [p for p in model.parameters() if p.requires_grad]
    loop = TrainingLoop(
        parameters,
        steps=config.steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        seed=config.seed,
        max_grad_norm=1.0,
    )
    losses, started = [], time.perf_counter()
    for record in loop.run(
        demonstrations, lambda batch: sft_loss(model, lm.tokenizer, batch, config.max_response_tokens), stop
    ):
        losses.append(record.loss)
        samples = []
        if sample_prompts and sft_samples_at(record.step, config):
            rollout = sample_responses(model, lm.tokenizer, list(sample_prompts), seed=config.seed)
            samples = list(zip(rollout.prompts, rollout.responses))
        yield SFTEvent(
            step=record.step,
            loss=record.loss,
            learning_rate=record.learning_rate,
            elapsed=time.perf_counter() - started,
            samples=samples,
        )
    adapter = None
    if config.method == "lora":
        # merging below removes the adapter: its files are kept first
        adapter = saved_files(lambda folder: save_adapter(model, folder))
        model = model.merge_and_unload()
    model.requires_grad_(False)
    yield SFTResult(model.eval(), adapter, losses, time.perf_counter() - started, lm)
