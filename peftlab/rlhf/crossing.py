"""How the RLHF pipeline's models cross into another process (a ZeroGPU call) and back: as what they were built from.

Every model of the pipeline is the base model plus what a stage trained: the SFT model is the base with its SFT
adapter merged (or fully fine-tuned weights), and the reward model, the PPO policy and the DPO policy are copies of
the SFT model with a small trained part (a LoRA adapter, a head). Pickled whole, each would carry a copy of the base
model's weights; pickled here, a stage's result carries the base model by name (`LM.__reduce__`), the SFT result it
grew from, and its own trained tensors, and the unpickling process rebuilds the model from them.

A result unpickled this way builds its model on first use (`Crossing`): the app's process on ZeroGPU reads a stage's
numbers (losses, accuracies, history) without building models it has no GPU for, and passes the result on to the next
GPU call as it came.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

# The SFT result each SFT model came from, by the model's id: the reward model and the policies find the SFT result
# to pickle by reference from the SFT model they hold.
_SFT_RESULTS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def remember_sft(model: torch.nn.Module, result) -> None:
    """Record that `model` is `result`'s SFT model."""
    _SFT_RESULTS[id(model)] = result


def sft_result_of(model: torch.nn.Module):
    """The SFTResult whose model `model` is (the model a later stage copied).

    Raises:
        ValueError: `model` is no SFT result's model (built outside `train_sft`).
    """
    result = _SFT_RESULTS.get(id(model))
    if result is None or result.__dict__.get("model") is not model:
        raise ValueError("This model is not an SFT result's model; only the pipeline's own models cross processes.")
    return result


def trainable_state(model: torch.nn.Module, keep: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """The tensors of `model`'s state dict whose names `keep` accepts, on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if keep(k)}


def is_lora(name: str) -> bool:
    """A LoRA adapter's tensor, by its state-dict name (PEFT's `lora_A`, `lora_B`)."""
    return ".lora_" in name


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put `state` (from `trainable_state`) into a model built the same way.

    Raises:
        ValueError: a name of `state` that `model` lacks.
    """
    missing = set(state) - set(model.state_dict())
    if missing:
        raise ValueError(f"The rebuilt model lacks {sorted(missing)[:3]}: it was built differently.")
    model.load_state_dict(state, strict=False)


class Crossing:
    """A stage result that pickles its model fields (`MODELS`) as `(build, arguments)` and, unpickled, builds each
    on first use. A subclass gives `_crossing(name)`: the build function and its arguments for its field `name`."""

    MODELS: tuple[str, ...] = ()

    def _crossing(self, name: str) -> tuple[Callable, tuple]:
        raise NotImplementedError

    def _built(self, name: str, value) -> None:
        """Called when the field `name` was built after a crossing (the SFT result records its model here)."""

    def __reduce__(self):
        pending = dict(self.__dict__.get("_pending", {}))  # fields not built since the last crossing cross as they came
        for name in self.MODELS:
            if name not in pending:
                pending[name] = self._crossing(name)
        fields = {k: v for k, v in self.__dict__.items() if k not in self.MODELS and k not in ("_pending", "_sources")}
        return arrived, (type(self), fields, pending)

    def __getattr__(self, name: str):
        # called only for attributes not set: a model field not yet built after a crossing
        pending = self.__dict__.get("_pending", {})
        if name not in pending:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        build, arguments = pending[name]
        value = build(*arguments)
        self.__dict__[name] = value
        # what it was built from stays alive with it: the SFT result a copy was made of is how it crosses again
        self.__dict__.setdefault("_sources", {})[name] = pending.pop(name)
        self._built(name, value)
        return value


def arrived(cls, fields: dict, pending: dict):
    """A Crossing result on this side: its plain fields set, its models to build on first use."""
    result = object.__new__(cls)
    result.__dict__.update(fields)
    result.__dict__["_pending"] = pending
    return result
