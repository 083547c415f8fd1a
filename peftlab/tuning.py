"""Few-shot training methods, one config dataclass each in one registry, and the shared trainer.

Prompt-based methods (prompt tuning, P-tuning, prefix tuning, LoRA, full fine-tuning) all train the
same objective: cross-entropy over the verbalizer's label-word scores at the mask, computed by the
Cloze tab's scoring code (`peftlab.cloze.word_scores`), so comparisons between them are fair. The
head-only baseline trains a linear classifier on the frozen model's mask representation instead.

Papers: prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021), prefix tuning (Li & Liang
2021), LoRA (Hu et al. 2021), prompt-based fine-tuning (Gao et al. 2021, LM-BFF).
"""

from __future__ import annotations

import copy
import math
import random
import resource
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch

from peftlab.cloze import ClozeSetup, word_scores, words_to_label_log_probs
from peftlab.errors import PeftlabError
from peftlab.metrics import accuracy, macro_f1
from peftlab.models import LM, cpu_supports_bf16
from peftlab.prompts import Prompt
from peftlab.tasks import Task

# PEFT prompt learning drops position ids (and says so on every forward); Llama-style rotary
# positions are relative, so left padding plus virtual tokens still scores correctly.
warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")  # raised inside PEFT

PROMPT_INITS = ("text", "label-words", "vocab", "random")


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class MethodConfig:
    """What every method has: a name, a learning rate that trains on the embedded model."""

    name: ClassVar[str] = ""
    prompt_based: ClassVar[bool] = True
    positive_fields: ClassVar[tuple[str, ...]] = ()  # integer settings that must be at least 1
    learning_rate: float = 1e-3

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise PeftlabError(f"The learning rate of {self.name} must be above 0, not {self.learning_rate}.")
        for name in self.positive_fields:
            if getattr(self, name) < 1:
                raise PeftlabError(f"{self.name}: {name.replace('_', ' ')} must be at least 1, not {getattr(self, name)}.")

    def build(self, lm: LM, prompt: Prompt, train: Sequence[dict]):
        """Return (model to score with, trainable parameters); the cached LM is never modified."""
        raise NotImplementedError


@dataclass
class PromptTuningConfig(MethodConfig):
    name: ClassVar[str] = "prompt-tuning"
    positive_fields: ClassVar[tuple[str, ...]] = ("num_virtual_tokens",)
    learning_rate: float = _help("Adam learning rate (soft prompts need a large one)", 3e-2)
    num_virtual_tokens: int = _help("soft tokens put before the input", 20)
    init: str = _help("initialise from text, the label words, sampled vocabulary, or random", "text")
    init_text: str = _help("text whose token embeddings start the prompt (repeated to fill)", "Classify the sentiment of this review:")

    def __post_init__(self):
        super().__post_init__()
        if self.init not in PROMPT_INITS:
            raise PeftlabError(f"Prompt init must be one of {', '.join(PROMPT_INITS)}, not {self.init!r}.")

    def build(self, lm, prompt, train):
        from peft import PromptTuningConfig as PeftPromptTuning

        model = _peft_model(lm, PeftPromptTuning(task_type="CAUSAL_LM", num_virtual_tokens=self.num_virtual_tokens))
        embedding = model.prompt_encoder["default"].embedding.weight  # (virtual tokens, H)
        with torch.no_grad():
            embedding.copy_(self._initial_embeddings(lm, prompt))
        return model, [embedding]

    def _initial_embeddings(self, lm, prompt) -> torch.Tensor:
        vocabulary = lm.model.get_input_embeddings().weight.detach()
        generator = torch.Generator().manual_seed(0)
        if self.init == "random":  # scaled like real embeddings so the LM is not pushed off its range
            return torch.randn(self.num_virtual_tokens, vocabulary.shape[1], generator=generator) * vocabulary.std()
        if self.init == "vocab":
            ids = torch.randint(0, min(5000, vocabulary.shape[0]), (self.num_virtual_tokens,), generator=generator)
        else:
            text = self.init_text if self.init == "text" else " ".join(w for ws in prompt.verbalizer.words.values() for w in ws)
            ids = torch.tensor(lm.tokenizer(text, add_special_tokens=False).input_ids or [0])
            ids = ids.repeat(math.ceil(self.num_virtual_tokens / len(ids)))[: self.num_virtual_tokens]
        return vocabulary[ids].float()


@dataclass
class PTuningConfig(MethodConfig):
    name: ClassVar[str] = "p-tuning"
    positive_fields: ClassVar[tuple[str, ...]] = ("num_virtual_tokens", "encoder_hidden_size")
    learning_rate: float = _help("Adam learning rate", 1e-3)
    num_virtual_tokens: int = _help("soft tokens produced by the prompt encoder", 20)
    encoder: str = _help("prompt encoder: MLP or LSTM", "MLP")
    encoder_hidden_size: int = _help("hidden size of the prompt encoder", 128)

    def __post_init__(self):
        super().__post_init__()
        if self.encoder.upper() not in ("MLP", "LSTM"):
            raise PeftlabError(f"The P-tuning encoder must be MLP or LSTM, not {self.encoder!r}.")

    def build(self, lm, prompt, train):
        from peft import PromptEncoderConfig

        config = PromptEncoderConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=self.num_virtual_tokens,
            encoder_reparameterization_type=self.encoder.upper(), encoder_hidden_size=self.encoder_hidden_size,
        )
        model = _peft_model(lm, config)
        return model, [p for p in model.parameters() if p.requires_grad]


@dataclass
class PrefixTuningConfig(MethodConfig):
    name: ClassVar[str] = "prefix-tuning"
    positive_fields: ClassVar[tuple[str, ...]] = ("num_virtual_tokens",)
    learning_rate: float = _help("Adam learning rate", 1e-2)
    num_virtual_tokens: int = _help("prefix length: key/value vectors put before the input in every layer", 10)
    prefix_projection: bool = _help("reparameterise the prefix through an MLP (Li & Liang) or train it directly (P-tuning v2)", False)

    def build(self, lm, prompt, train):
        from peft import PrefixTuningConfig as PeftPrefixTuning

        if self.num_virtual_tokens + 16 > lm.max_length:
            raise PeftlabError(f"A prefix of {self.num_virtual_tokens} tokens leaves no room in the model's {lm.max_length}-token input.")
        config = PeftPrefixTuning(
            task_type="CAUSAL_LM", num_virtual_tokens=self.num_virtual_tokens, prefix_projection=self.prefix_projection,
        )
        model = _peft_model(lm, config)
        return model, [p for p in model.parameters() if p.requires_grad]


@dataclass
class LoraMethodConfig(MethodConfig):
    name: ClassVar[str] = "lora"
    positive_fields: ClassVar[tuple[str, ...]] = ("r", "alpha")
    learning_rate: float = _help("Adam learning rate", 1e-3)
    r: int = _help("rank of the low-rank update", 8)
    alpha: int = _help("scaling numerator (update scaled by alpha / r)", 16)
    target_modules: tuple[str, ...] = _help("modules that get a LoRA update", ("q_proj", "v_proj"))

    def build(self, lm, prompt, train):
        from peft import LoraConfig

        _require_causal(lm, "LoRA")  # before the module check, which would blame the names instead
        names = [n for n, _ in lm.model.named_modules()]
        # PEFT's own rule: a target names a whole dotted suffix ("q_proj" matches "...self_attn.q_proj", "proj" nothing)
        missing = [m for m in self.target_modules if not any(n == m or n.endswith("." + m) for n in names)]
        if missing:
            raise PeftlabError(f"LoRA target module(s) {', '.join(missing)} do not exist in {lm.name}.")
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, target_modules=list(self.target_modules), lora_dropout=0.0)
        model = _peft_model(lm, config)
        return model, [p for p in model.parameters() if p.requires_grad]


@dataclass
class FullFineTuningConfig(MethodConfig):
    name: ClassVar[str] = "full"
    learning_rate: float = _help("Adam learning rate (LM-BFF prompt-based fine-tuning used 1e-5)", 1e-5)

    def build(self, lm, prompt, train):
        model = copy.deepcopy(lm.model)  # stays in eval mode: no dropout, deterministic
        model.requires_grad_(True)
        return model, list(model.parameters())


@dataclass
class HeadOnlyConfig(MethodConfig):
    """A linear classifier on the frozen model's mask representation (no verbalizer involved)."""

    name: ClassVar[str] = "head"
    prompt_based: ClassVar[bool] = False
    learning_rate: float = _help("Adam learning rate", 1e-2)

    def build(self, lm, prompt, train):
        hidden = lm.model.get_output_embeddings().weight.shape[1]
        linear = torch.nn.Linear(hidden, len(prompt.verbalizer.words))
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
        # Features are standardised per example (no trainable parameters) so one learning rate fits any model.
        head = torch.nn.Sequential(torch.nn.LayerNorm(hidden, elementwise_affine=False), linear)
        return head, list(linear.parameters())


METHODS: dict[str, type[MethodConfig]] = {
    cls.name: cls for cls in (PromptTuningConfig, PTuningConfig, PrefixTuningConfig, LoraMethodConfig, HeadOnlyConfig, FullFineTuningConfig)
}


def parse_learning_rates(items: Sequence[str]) -> dict[str, float]:
    """["lora=1e-3", "head=0.01"] -> {"lora": 0.001, "head": 0.01}; blank items are skipped."""
    rates = {}
    for item in items:
        if not item.strip():
            continue
        name, _, value = item.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise PeftlabError(f"A learning rate is given as method=number, not {item.strip()!r}.") from None
    return rates


def method_config(name: str, **overrides) -> MethodConfig:
    """The registered config for `name` with its working defaults, optionally overridden."""
    if name not in METHODS:
        raise PeftlabError(f"Unknown method {name!r}; choose from {', '.join(METHODS)}.")
    return METHODS[name](**overrides)


def _require_causal(lm: LM, what: str) -> None:
    if lm.kind != "causal":
        raise PeftlabError(f"{what} is wired for causal LMs in this version; {lm.name} is a masked LM.")


def _peft_model(lm: LM, config):
    from peft import get_peft_model

    _require_causal(lm, type(config).__name__)
    return get_peft_model(copy.deepcopy(lm.model), config)  # a copy: LoRA edits the model it wraps


@dataclass
class TrainSettings:
    """Trainer settings shared by every method, so a comparison runs them on equal terms."""

    steps: int = _help("optimiser steps", 40)
    batch_size: int = _help("training examples per step", 8)
    eval_every: int = _help("steps between dev evaluations", 10)
    patience: int = _help("dev evaluations without improvement before stopping early", 3)
    seed: int = _help("seed for initialisation and batch order", 13)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise PeftlabError(f"{name.replace('_', ' ').capitalize()} must be at least 1, not {getattr(self, name)}.")


@dataclass
class TrainEvent:
    """What the trainer yields: one per step, with dev accuracy on evaluation steps."""

    method: str
    seed: int
    step: int
    train_loss: float
    dev_accuracy: float  # nan between evaluations
    learning_rate: float
    elapsed: float
    peak_memory_mb: float


@dataclass
class TrainedMethod:
    """A trained method: classifies examples and knows its size."""

    config: MethodConfig
    lm: LM
    prompt: Prompt
    model: torch.nn.Module
    trainable_params: int
    train_seconds: float = 0.0
    steps_done: int = 0
    history: list[TrainEvent] = field(default_factory=list)

    def log_probs(self, examples: Sequence[dict], batch_size: int = 32) -> torch.Tensor:
        """(N, L) label log-probs, no gradient."""
        with torch.inference_mode(), _autocast(self.lm):
            parts = [_label_log_probs(self, examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]
        return torch.cat(parts).float().cpu()

    def evaluate(self, examples: Sequence[dict]) -> dict:
        gold = np.array([e["label"] for e in examples])
        predicted = self.log_probs(examples).argmax(1).numpy()
        n_labels = len(self.prompt.verbalizer.words)
        return {"accuracy": accuracy(gold, predicted), "macro_f1": macro_f1(gold, predicted, n_labels)}


def _label_log_probs(trained: TrainedMethod, examples: Sequence[dict]) -> torch.Tensor:
    """(B, L) differentiable label log-probs: verbalizer scoring, or the linear head on mask features."""
    if trained.config.prompt_based:
        query_lists = [trained.prompt.queries(trained.lm, e) for e in examples]
        scores = word_scores(trained.lm, query_lists, len(trained.prompt.verbalizer.flat_words), model=trained.model)
        return words_to_label_log_probs(scores, trained.prompt.verbalizer)
    return trained.model(_mask_features(trained.lm, trained.prompt, examples)).log_softmax(-1)


_feature_cache: dict[tuple, torch.Tensor] = {}


def _mask_features(lm: LM, prompt: Prompt, examples: Sequence[dict]) -> torch.Tensor:
    """Frozen mask representations for the head-only baseline, cached per text (the LM never changes)."""
    from peftlab.autoprompt import mask_representations

    keys = [(id(lm), prompt.template.text, e["text"]) for e in examples]
    missing = [e for key, e in zip(keys, examples) if key not in _feature_cache]
    if missing:
        with torch.inference_mode():
            for key, row in zip([k for k in keys if k not in _feature_cache], mask_representations(lm, prompt, missing)):
                _feature_cache[key] = row
    return torch.stack([_feature_cache[key] for key in keys])


def _autocast(lm: LM):
    """bf16 autocast on CPUs with native bf16 (about 2x), a no-op elsewhere."""
    enabled = lm.device.type == "cpu" and lm.dtype == torch.float32 and cpu_supports_bf16()
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak resident set


def train_method(
    lm: LM, task: Task, setup: ClozeSetup, config: MethodConfig, train: Sequence[dict], dev: Sequence[dict],
    settings: TrainSettings, stop: threading.Event | None = None,
) -> Iterator[TrainEvent | TrainedMethod]:
    """Train one method on (train, dev), yielding a TrainEvent per step and the TrainedMethod last.

    Keeps the trainable weights of the best dev evaluation (LM-BFF's model selection) and stops early
    after `patience` evaluations without improvement.
    """
    torch.manual_seed(settings.seed)
    prompt = setup.prompts[0]
    model, parameters = config.build(lm, prompt, train)
    trained = TrainedMethod(config, lm, prompt, model, sum(p.numel() for p in parameters))
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / settings.steps)  # linear decay
    order = random.Random(settings.seed)  # same batches for every method at a given seed
    best = (-1.0, None)
    evaluations_without_gain = 0
    started = time.perf_counter()
    for step in range(1, settings.steps + 1):
        if stop is not None and stop.is_set():
            break
        batch = order.sample(list(train), min(settings.batch_size, len(train)))
        gold = torch.tensor([e["label"] for e in batch])
        with _autocast(lm):
            log_probs = _label_log_probs(trained, batch)
        loss = torch.nn.functional.nll_loss(log_probs.float().cpu(), gold)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        learning_rate = schedule.get_last_lr()[0]
        schedule.step()
        dev_accuracy = float("nan")
        if step % settings.eval_every == 0 or step == settings.steps:
            dev_accuracy = trained.evaluate(dev)["accuracy"]
            if dev_accuracy > best[0]:
                best = (dev_accuracy, [p.detach().clone() for p in parameters])
                evaluations_without_gain = 0
            else:
                evaluations_without_gain += 1
        event = TrainEvent(config.name, settings.seed, step, loss.item(), dev_accuracy, learning_rate,
                           time.perf_counter() - started, peak_memory_mb(lm.device))
        trained.history.append(event)
        trained.steps_done = step
        yield event
        if evaluations_without_gain >= settings.patience:
            break
    if best[1] is not None:
        with torch.no_grad():
            for parameter, saved in zip(parameters, best[1]):
                parameter.copy_(saved)
    trained.train_seconds = time.perf_counter() - started
    yield trained


def loss_is_flat(history: Sequence[TrainEvent], tolerance: float = 0.05) -> bool:
    """True when the last quarter of the steps has not lowered the loss by `tolerance` (relative) from the first."""
    if len(history) < 4:
        return False
    quarter = max(1, len(history) // 4)
    first = np.mean([e.train_loss for e in history[:quarter]])
    last = np.mean([e.train_loss for e in history[-quarter:]])
    return bool(last > first * (1 - tolerance))


def flat_loss_message(trained: TrainedMethod) -> str:
    return (f"The training loss of {trained.config.name} stayed flat over {trained.steps_done} steps: try a larger "
            f"learning rate than {trained.config.learning_rate:g} or more steps.")
