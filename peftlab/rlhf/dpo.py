"""The DPO route: the SFT policy learns the comparisons directly, without a reward model or sampling.

Direct Preference Optimization (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is
Secretly a Reward Model", §4, Eq. 7) minimises, over comparisons (x, y_w, y_l),

    L = −log σ(β [(log π_θ(y_w|x) − log π_ref(y_w|x)) − (log π_θ(y_l|x) − log π_ref(y_l|x))])

with π_ref the SFT model and log π(y|x) the sum over the response's tokens (end-of-response included). β is the
strength of the KL penalty to π_ref that the loss optimises implicitly, as PPO's β does explicitly; the
implicit reward of a response is β (log π_θ − log π_ref).

TRL's `DPOTrainer` trains it: a new LoRA adapter on a copy of the SFT model, so the reference is that copy with
the adapter disabled (TRL's PEFT route, no second model in memory). The trainer seeds torch's global generator and
initialises the adapter from it, so that set-up runs in a `seeded` block; the training itself draws from
generators of its own and runs beside other jobs' seeded work, in a thread whose logged steps this module yields
as events.
"""

from __future__ import annotations

import copy
import math
import queue
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from peftlab.config import Config, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.models import autocast_dtype, save_adapter
from peftlab.rlhf.crossing import Crossing, is_lora, load_trainable_state, sft_result_of, trainable_state
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.generation import (
    PAIR_RESPONSE_TOKENS,
    check_word_scores_fit,
    end_of_response,
    read_alike,
    read_texts,
)
from peftlab.rlhf.sft import lora_config
from peftlab.seeding import drawing, seeded
from peftlab.training import Event, check_finite


@dataclass
class DPOConfig(Config):
    subject: ClassVar[str] = "DPO {label}"
    steps: int = setting(60, "optimiser steps", minimum=1, cap="ppo_steps")
    batch_size: int = setting(8, "comparisons per step", minimum=1)
    # Chosen on 32 training prompts that neither the comparisons nor the held-out evaluation use (embedded model,
    # vader-positive, 60 steps): VADER gain over SFT / KL to SFT in nats was +0.162 / 0.31 at 1e-4, +0.403 / 2.68
    # at 2.5e-4, +0.603 / 8.98 at 5e-4 (β 0.5: +0.264 / 1.12); 2.5e-4 gains most within PPO's bound of 5 nats.
    learning_rate: float = setting(2.5e-4, "Adam learning rate of the LoRA adapter", above=0)
    beta: float = setting(
        0.1, "strength of the implicit KL penalty to the SFT model (the paper: 0.1 to 0.5)", above=0, label="β"
    )
    lora_r: int = setting(16, "LoRA rank", minimum=1, label="LoRA rank")
    seed: int = seed_setting(0, "seed for the adapter's initialisation and the batch order")


@dataclass(kw_only=True)
class DPOEvent(Event):
    """One optimiser step, as TRL logs it: the loss and the implicit rewards β (log π_θ − log π_ref) of the batch."""

    loss: float
    learning_rate: float
    reward_accuracy: float  # share of pairs whose chosen response has the larger implicit reward (TRL's: a tie is 0)
    reward_margin: float  # mean implicit reward of chosen minus rejected
    chosen_log_prob: float  # mean log π_θ(y_w|x) of the batch (DPO may lower it while it raises the margin)
    rejected_log_prob: float  # mean log π_θ(y_l|x)


@dataclass(eq=False)  # comparing two results would build their policies
class DPOResult(Crossing):
    """The DPO policy: a copy of the SFT model with the trained LoRA adapter (disable it for the reference). It
    crosses processes as the SFT result it copies, its adapter's configuration and its tensors (`crossing`)."""

    MODELS = ("policy", "sft_model")

    policy: torch.nn.Module = field(repr=False)
    history: list[DPOEvent] = field(default_factory=list)
    seconds: float = 0.0
    stopped: bool = False
    comparisons: int = 0  # trained on: those given, less the pairs alike in what is read
    # what the policy copies; a factory, not a default, so that no class attribute hides it from Crossing.__getattr__
    sft_model: torch.nn.Module | None = field(default_factory=lambda: None, repr=False)

    def _crossing(self, name):
        sft = sft_result_of(self.sft_model)
        if name == "sft_model":
            return _model_of, (sft,)
        return _dpo_policy, (sft, self.policy.peft_config["default"], trainable_state(self.policy, is_lora))

    def save(self, folder: str | Path) -> Path:
        """The DPO adapter's PEFT files (adapter_config.json, adapter_model.safetensors) in `folder`."""
        return save_adapter(self.policy, folder)


def _model_of(sft) -> torch.nn.Module:
    return sft.model


def _dpo_policy(sft, lora, state: dict) -> torch.nn.Module:
    """The DPO policy rebuilt on this side of a crossing: a copy of the SFT model with the adapter."""
    from peft import get_peft_model

    with drawing():  # the adapter is initialised, then replaced by `state`
        policy = get_peft_model(copy.deepcopy(sft.model), lora)
    load_trainable_state(policy, state)
    return policy.requires_grad_(False).eval()


def check_batch_fits(model, tokenizer, rows: Sequence[dict], batch_size: int) -> None:
    """Refuse a batch whose word scores would not fit in memory (`generation.check_word_scores_fit`): TRL scores the
    chosen and the rejected sequence of each comparison (prompt and response) at every position.

    Raises:
        PeftlabError: the batch too large for the free memory.
    """
    comparisons = min(batch_size, len(rows))
    lengths = map(
        len, tokenizer([row["prompt"] + row[side] for row in rows for side in ("chosen", "rejected")]).input_ids
    )
    longest = max(lengths)
    what = f"A DPO batch of {comparisons} comparisons ({2 * comparisons} sequences of up to {longest} tokens)"
    check_word_scores_fit(model, 2 * comparisons, longest, what, "the batch size")


def train_dpo(
    sft_model: torch.nn.Module,
    tokenizer,
    comparisons: Sequence[Comparison],
    config: DPOConfig,
    stop: threading.Event | None = None,
) -> Iterator[DPOEvent | DPOResult]:
    """DPO on a copy of the SFT model: a DPOEvent per step, the DPOResult last. The SFT model is never changed.

    It reads what the reward model reads (`generation.read_texts`): a prompt's last 256 tokens and a response's
    first 63; comparisons alike there are left out.

    Raises:
        PeftlabError: no comparisons, a comparison whose two responses are the same, every comparison alike in what
            is read, or a batch whose word scores would not fit in memory (`check_batch_fits`).
    """
    if not comparisons:
        raise PeftlabError("DPO needs at least one comparison (a prompt, a chosen and a rejected response).")
    for c in comparisons:
        if c.chosen == c.rejected:
            raise PeftlabError(f"A comparison for {c.prompt!r} has the same chosen and rejected response.")
    import datasets
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    eos = tokenizer.decode([end_of_response(tokenizer)])
    prompts, chosen = read_texts(tokenizer, [c.prompt for c in comparisons], [c.chosen for c in comparisons])
    _, rejected = read_texts(tokenizer, responses=[c.rejected for c in comparisons])
    rows = [
        # the prompt and responses as the reward model reads them, each response closed by the end-of-response token:
        # a cut one too, unlike SFT's (`sft_loss`), as TRL 1.16's DPOTrainer closes every text that lacks it (its
        # `add_eos`); the embedded comparisons are samples shorter than the cut, uploaded ones may not be
        {"prompt": prompt, "chosen": chosen_text + eos, "rejected": rejected_text + eos}
        for prompt, chosen_text, rejected_text, c in zip(prompts, chosen, rejected, comparisons)
        # a pair alike in what is read gives DPO's loss no gradient: left out (`cut_ties_note` says so beforehand)
        if not read_alike(tokenizer, c.chosen, c.rejected)
    ]
    if not rows:
        raise PeftlabError(
            f"Every comparison's responses differ only after their first {PAIR_RESPONSE_TOKENS - 1} tokens, all DPO "
            "reads; let the responses differ earlier."
        )
    check_batch_fits(sft_model, tokenizer, rows, config.batch_size)
    dataset = Dataset.from_list(rows)
    events: queue.Queue = queue.Queue()
    halt = threading.Event()  # the caller's stop, or the caller leaving this generator early
    started = time.perf_counter()

    class Relay(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                events.put(
                    DPOEvent(
                        step=state.global_step,
                        elapsed=time.perf_counter() - started,
                        loss=float(logs["loss"]),
                        learning_rate=float(logs.get("learning_rate", math.nan)),
                        reward_accuracy=float(logs.get("rewards/accuracies", math.nan)),
                        reward_margin=float(logs.get("rewards/margins", math.nan)),
                        chosen_log_prob=float(logs.get("logps/chosen", math.nan)),
                        rejected_log_prob=float(logs.get("logps/rejected", math.nan)),
                    )
                )

        def on_step_end(self, args, state, control, **kwargs):
            if halt.is_set() or (stop is not None and stop.is_set()):
                control.should_training_stop = True

    class OwnDrawsTrainer(DPOTrainer):
        """Training draws only from generators of its own, so no other visitor's seeded work waits for it: the
        comparisons' order from `data_seed`'s, and torch's draw of each pass's worker seed from the loader's (a held
        DPO held every seeded block in the process, other visitors' sampling and models, for its whole training)."""

        def get_train_dataloader(self):
            loader = super().get_train_dataloader()
            # accelerate's DataLoaderShard reads the attributes of the DataLoader it wraps
            getattr(loader, "base_dataloader", loader).generator = torch.Generator().manual_seed(config.seed)
            return loader

    def train() -> None:
        # TRL tokenises the comparisons with datasets' progress bars ("Tokenizing train dataset: 100%"), printed amid
        # the command line's own progress line; Relay reports the steps
        bars = not datasets.are_progress_bars_disabled()
        datasets.disable_progress_bars()
        try:
            with tempfile.TemporaryDirectory(prefix="peftlab-dpo-") as folder:
                device = next(sft_model.parameters()).device
                # the mixed precision every other stage trains in (models.autocast_dtype): bf16 where the hardware
                # has it, fp16 on older GPUs, where the Trainer scales the loss
                precision = autocast_dtype(next(sft_model.parameters()))
                with seeded(config.seed):  # the trainer seeds torch's global generator and initialises the adapter
                    trainer = OwnDrawsTrainer(
                        # TRL wraps a plain model in the new adapter itself; handed a PEFT model it would copy that
                        # model's adapter as the reference instead of disabling it
                        model=copy.deepcopy(sft_model),
                        peft_config=lora_config(config.lora_r, sft_model),
                        args=TRLConfig(
                            output_dir=folder,
                            max_steps=config.steps,
                            per_device_train_batch_size=config.batch_size,
                            learning_rate=config.learning_rate,
                            lr_scheduler_type="linear",
                            warmup_steps=0,
                            weight_decay=0.0,
                            beta=config.beta,
                            seed=config.seed,
                            data_seed=config.seed,  # the order of comparisons; else the global generator's seed then
                            max_length=None,
                            activation_checkpointing=False,  # TRL's default is on; the old name warns in the CLI
                            bf16=precision == torch.bfloat16,
                            fp16=precision == torch.float16,
                            use_cpu=device.type == "cpu",
                            logging_steps=1,
                            # the Trainer logs a NaN loss as 0 by default (a diverged run read as a perfect one)
                            logging_nan_inf_filter=False,
                            save_strategy="no",
                            report_to=[],
                            disable_tqdm=True,
                        ),
                        train_dataset=dataset,
                        processing_class=tokenizer,
                        callbacks=[Relay()],
                    )
                # its log lines would go to stdout, where the CLI's --json output goes: Relay reports the steps
                trainer.remove_callback(PrinterCallback)
                if not (halt.is_set() or (stop is not None and stop.is_set())):  # a stop came during the set-up
                    trainer.train()  # outside the seeded block: it draws from its own generators
            policy = trainer.model.requires_grad_(False)
            seconds = time.perf_counter() - started
            events.put(DPOResult(policy.eval(), seconds=seconds, comparisons=len(rows), sft_model=sft_model))
        except BaseException as exc:  # re-raised in the caller's thread
            events.put(exc)
        finally:
            if bars:
                datasets.enable_progress_bars()

    worker = threading.Thread(target=train, name="peftlab-dpo", daemon=True)
    worker.start()
    history = []
    try:
        while True:
            item = events.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, DPOResult):
                item.history = history
                item.stopped = stop is not None and stop.is_set() and len(history) < config.steps
                yield item
                return
            # TRL logs a step's loss after its update: stop there rather than train on NaN weights
            check_finite(torch.tensor(item.loss), f"DPO step {item.step} of {config.steps}", config.learning_rate)
            history.append(item)
            yield item
    finally:
        halt.set()
        worker.join()
