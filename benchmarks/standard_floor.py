"""The least time the standard comparison can take on this machine: its model work counted, divided by the machine's
measured matrix-multiply peak.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/standard_floor.py [--tasks rt-sentiment,bbc-topic]
        [--methods zero-shot,...,pet] [--seeds 13,21,42] [--test-limit 500]

The comparison (`peftlab.standard.run_standard`, `standard_comparison.py`'s settings) runs whole, every method and
seed, on a one-layer model with the embedded model's tokenizer and vocabulary: how many tokens each method runs
through the model, with and without gradients, depends on the tokenizer and the algorithms (batches, steps, dev
evaluations, queries, PET's pool), not on the model's depth or width, so it takes a minute instead of an hour. Each
token costs the embedded model 2 P multiply-adds' FLOPs forward (P its weights outside the token embeddings: the
layers, whose matrices are most of the work; the logits of the few read positions, attention scores and cached
prefixes are left out, so this is a floor), and a token with gradients 2 P more for its backward pass through every
layer (the gradient of a trigger, a soft prompt, a prefix or LoRA's inputs) or 4 P more when every weight trains
(full fine-tuning). The floor is those FLOPs at the peak of one 2048 x 2048 matrix multiply in the dtype the
comparison computes in on this CPU (bf16 where it runs bf16 natively, else fp32; `models.autocast_dtype`), best of
10 (`common.matmul_gflops`): no model runs faster than its largest matrix multiply. (On a GPU machine the floor is
still this CPU's.)

stdout gets one JSON object (indent 2): the peak, and per task each method's tokens and TFLOP, the total and the
floor in minutes beside the 30-minute target of the Compare issue.

Notes: on this project's 2-core AMD EPYC without AVX-512 (2026-12-06, nothing else running; fp32, as its bf16 runs
0.3 GFLOP/s emulated), fp32 peaked at 183 GFLOP/s. bbc-topic counted 722 TFLOP, a floor of 65.9 minutes: PET 362,
AutoPrompt 67, prompt tuning and P-tuning 53 each, full fine-tuning 45, prefix tuning, LoRA and adapters 37 each, the
head 14, in-context 13, zero-shot 5; the ten methods besides PET alone 360 TFLOP, 33 minutes. rt-sentiment counted
531 TFLOP, a floor of 48.5 minutes (PET 258). The whole bbc-topic comparison took 61.7 minutes on the earlier
machine's AVX-512 bf16 CPU, where the same count at its bf16 peak of 379 GFLOP/s makes a floor of 32 minutes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

from benchmarks.common import logger, matmul_gflops  # noqa: E402
from benchmarks.standard_comparison import TARGET_MINUTES  # noqa: E402
from peftlab.models import autocast_dtype, embedded_model_dir, load_lm, short_dtype_name  # noqa: E402
from peftlab.prompts import suggested_prompt  # noqa: E402
from peftlab.standard import StandardConfig, StandardEvent, run_standard  # noqa: E402
from peftlab.tasks import load_task  # noqa: E402
from peftlab.tuning import TrainSettings  # noqa: E402

MODEL = "smollm2-135m"
EVERY_WEIGHT_TRAINED = {"full"}  # methods whose backward pass also computes every weight's gradient
log = logger("standard_floor")


def one_layer_copy(folder: Path) -> int:
    """Save a one-layer model with the embedded model's config and tokenizer in `folder`; returns the embedded
    model's P, its weights outside the token embeddings."""
    lm = load_lm(MODEL, dtype="fp32")
    if not isinstance(lm.model, modeling_llama.LlamaForCausalLM):
        raise SystemExit(f"error: counting reads Llama models' forward passes; {MODEL} is {type(lm.model).__name__}.")
    weights = sum(p.numel() for name, p in lm.model.named_parameters() if "embed_tokens" not in name)
    config = AutoConfig.from_pretrained(embedded_model_dir(MODEL))
    config.update(dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, head_dim=16))
    config.update(dict(num_attention_heads=4, num_key_value_heads=2))
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return weights


def counted_tokens(folder: Path, name: str, config: StandardConfig) -> dict[str, collections.Counter]:
    """Per method, the tokens the comparison ran through the model without ("forward") and with gradients
    ("with_gradients"): every input position of every batch, padding included."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    method = ["set-up"]
    forward = modeling_llama.LlamaModel.forward

    def counting(self, input_ids=None, *args, inputs_embeds=None, **kwargs):
        shape = (input_ids if input_ids is not None else inputs_embeds).shape
        counts[method[0]]["with_gradients" if torch.is_grad_enabled() else "forward"] += shape[0] * shape[1]
        return forward(self, input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)

    task = load_task(name)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    scoring_lm, training_lm = load_lm(str(folder)), load_lm(str(folder), dtype="fp32")
    modeling_llama.LlamaModel.forward = counting
    try:
        for item in run_standard(scoring_lm, training_lm, task, template, verbalizer, config, TrainSettings()):
            if isinstance(item, StandardEvent):
                method[0] = item.method.split(" · ")[0]  # zero-shot's and in-context's calibration after the dot
                log(f"  {name}: {item.method} seed {item.seed}")
    finally:
        modeling_llama.LlamaModel.forward = forward
    return counts


def floor(counts: dict[str, collections.Counter], weights: int, gflops: float) -> dict:
    """The task's record: each method's tokens and TFLOP, and the floor at `gflops`."""
    methods = {}
    for method, tokens in counts.items():
        backward = 4 if method in EVERY_WEIGHT_TRAINED else 2
        flops = 2 * weights * tokens["forward"] + (2 + backward) * weights * tokens["with_gradients"]
        methods[method] = {**tokens, "tflop": round(flops / 1e12, 1)}
    total = sum(m["tflop"] for m in methods.values())
    minutes = total * 1e3 / gflops / 60
    return {"methods": methods, "tflop": round(total, 1), "floor_minutes": round(minutes, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="rt-sentiment,bbc-topic")
    parser.add_argument("--methods", help="only these methods, comma-separated (default: all)")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--test-limit", type=int, default=500)
    args = parser.parse_args()
    methods = {"methods": tuple(args.methods.split(","))} if args.methods else {}
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    config = StandardConfig(seeds=seeds, test_limit=args.test_limit, **methods)
    dtype = autocast_dtype(torch.zeros(1)) or torch.float32  # what an fp32 model computes in on this CPU
    gflops = matmul_gflops(dtype)
    log(f"{short_dtype_name(dtype)} matrix multiply: {gflops:.0f} GFLOP/s")
    folder = Path(tempfile.mkdtemp(prefix="peftlab-floor-"))
    weights = one_layer_copy(folder)
    tasks = {name: floor(counted_tokens(folder, name, config), weights, gflops) for name in args.tasks.split(",")}
    report = {
        "config": config.to_dict(),
        "model_weights_outside_embeddings": weights,
        "dtype": short_dtype_name(dtype),
        "peak_gflops": round(gflops, 1),
        "tasks": tasks,
        "target_minutes_per_task": TARGET_MINUTES,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
