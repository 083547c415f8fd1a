"""The least time a workload can take on this machine: the tokens it runs through the model, counted, priced in
FLOPs, divided by the machine's measured matrix-multiply peak.

Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/floor.py standard [--tasks rt-sentiment,bbc-topic]
        [--methods zero-shot,...,pet] [--seeds 13,21,42] [--test-limit 500]
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/floor.py pet [--runs rt-sentiment:16,bbc-topic:16,bbc-topic:10]
        [--ipet-generations 2] [--seeds 13,21,42] [--test-limit 500] [--unlabelled 1000]

`standard` is the Compare issue's comparison (`peftlab.standard.run_standard`, `standard_comparison.py`'s settings),
`pet` the PET issue's runs (`peftlab.pet.pet_run`, `pet_fewshot.py`'s settings). Each runs whole, every method and
seed, on a one-layer model with the embedded model's tokenizer and vocabulary: how many tokens a method runs through
the model, with and without gradients, depends on the tokenizer and the algorithms (batches, steps, dev evaluations,
queries, PET's pool and iPET's added sets), not on the model's depth or width, so it takes minutes instead of hours.
Each token costs the embedded model 2 P multiply-adds' FLOPs forward (P its weights outside the token embeddings:
the layers, whose matrices are most of the work; the logits of the few read positions, attention scores and cached
prefixes are left out, so this is a floor), and a token with gradients 2 P more for its backward pass through every
layer (the gradient of a trigger, a soft prompt, a prefix or LoRA's inputs) or 4 P more when every weight trains
(full fine-tuning). The floor is those FLOPs at the peak of one 2048 x 2048 matrix multiply in the dtype the work
computes in on this CPU (bf16 where it runs bf16 natively, else fp32; `models.autocast_dtype`), best of 10
(`common.matmul_gflops`): no model runs faster than its largest matrix multiply. (On a GPU machine the floor is
still this CPU's.) `rlhf_pipeline.py` counts its own run with `TokenCount` on the embedded model itself: a random
one-layer model's samples would run to their longest, which the trained policy's do not.

stdout gets one JSON object (indent 2): the peak, and per task (or run) each method's tokens and TFLOP, the total and
the floor in minutes beside the issue's 30-minute target.

Notes: on this project's 2-core AMD EPYC without AVX-512 (2026-12-06, nothing else running; fp32, as its bf16 runs
0.3 GFLOP/s emulated), fp32 peaked at 183 GFLOP/s.
- standard: bbc-topic counted 722 TFLOP, a floor of 65.9 minutes: PET 362, AutoPrompt 67, prompt tuning and
  P-tuning 53 each, full fine-tuning 45, prefix tuning, LoRA and adapters 37 each, the head 14, in-context 13,
  zero-shot 5; the ten methods besides PET alone 360 TFLOP, 33 minutes. rt-sentiment counted 531 TFLOP, a floor of
  48.5 minutes (PET 258). The whole bbc-topic comparison took 61.7 minutes on the earlier machine's AVX-512 bf16
  CPU, where the same count at its bf16 peak of 379 GFLOP/s makes a floor of 32 minutes.
- pet (the same day and machine, nothing else running, peak 174 GFLOP/s): rt-sentiment K=16 counted 727 TFLOP, a
  floor of 69.7 minutes (PET 263 TFLOP, 25.3 minutes; iPET's two generations 464, 44.5 minutes); bbc-topic K=16 995
  TFLOP, 95.4 minutes (PET 358, 34.3); bbc-topic K=10 995 TFLOP, 95.4 minutes (PET 374, 35.9). Scoring the pool and
  the test texts with every pattern's model is half of it (rt-sentiment: 139 TFLOP a generation against 71 to 75 for
  training the four models; the classifier 49 to 52).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

from benchmarks.common import logger, matmul_gflops  # noqa: E402
from peftlab.models import autocast_dtype, embedded_model_dir, load_lm, short_dtype_name  # noqa: E402

MODEL = "smollm2-135m"
TARGET_MINUTES = 30  # the Compare and PET issues' time a task
EVERY_WEIGHT_TRAINED = {"full"}  # methods whose backward pass also computes every weight's gradient
log = logger("floor")


def weights_outside_embeddings(model: torch.nn.Module) -> int:
    """P: the weights a token's forward pass multiplies by (the tied token embeddings are a lookup)."""
    if not isinstance(model, modeling_llama.LlamaForCausalLM):
        raise SystemExit(f"error: counting reads Llama models' forward passes; not {type(model).__name__}.")
    return sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)


def one_layer_copy(folder: Path) -> int:
    """Save a one-layer model with the embedded model's config and tokenizer in `folder`; returns the embedded
    model's P."""
    lm = load_lm(MODEL, dtype="fp32")
    weights = weights_outside_embeddings(lm.model)
    config = AutoConfig.from_pretrained(embedded_model_dir(MODEL))
    config.update(dict(num_hidden_layers=1, hidden_size=64, intermediate_size=128, head_dim=16))
    config.update(dict(num_attention_heads=4, num_key_value_heads=2))
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return weights


class TokenCount:
    """Inside `with TokenCount() as count:` every Llama model's forward pass is counted: each input position of
    each batch, padding included, as `(time.perf_counter(), phase, tokens, with_gradients)` in `calls`, where phase
    is what `count.phase` said at the call."""

    def __init__(self, phase: str = "set-up"):
        self.phase, self.calls = phase, []

    def __enter__(self) -> TokenCount:
        self.forward = forward = modeling_llama.LlamaModel.forward

        def counting(model, input_ids=None, *args, inputs_embeds=None, **kwargs):
            shape = (input_ids if input_ids is not None else inputs_embeds).shape
            self.calls.append((time.perf_counter(), self.phase, shape[0] * shape[1], torch.is_grad_enabled()))
            return forward(model, input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)

        modeling_llama.LlamaModel.forward = counting
        return self

    def __exit__(self, *exc) -> None:
        modeling_llama.LlamaModel.forward = self.forward

    def tokens(self, phase_of: Callable[[float, str], str] = lambda at, phase: phase) -> dict[str, collections.Counter]:
        """Per phase (`phase_of(time, phase)` of each call; default the phase it was counted in), the tokens run
        without ("forward") and with gradients ("with_gradients")."""
        counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for at, phase, tokens, with_gradients in self.calls:
            counts[phase_of(at, phase)]["with_gradients" if with_gradients else "forward"] += tokens
        return counts


def floor(counts: dict[str, collections.Counter], weights: int, gflops: float) -> dict:
    """The record of counted work: each phase's tokens and TFLOP, and the floor at `gflops` (GFLOP/s)."""
    phases = {}
    for phase, tokens in counts.items():
        backward = 4 if phase in EVERY_WEIGHT_TRAINED else 2
        flops = 2 * weights * tokens["forward"] + (2 + backward) * weights * tokens["with_gradients"]
        phases[phase] = {**tokens, "tflop": round(flops / 1e12, 1), "floor_seconds": round(flops / gflops / 1e9, 1)}
    total = sum(p["tflop"] for p in phases.values())
    minutes = total * 1e3 / gflops / 60
    return {"phases": phases, "tflop": round(total, 1), "floor_minutes": round(minutes, 1)}


def peak() -> tuple[str, float]:
    """The dtype an fp32 model computes in on this CPU, and its matrix-multiply peak in GFLOP/s."""
    dtype = autocast_dtype(torch.zeros(1)) or torch.float32
    gflops = matmul_gflops(dtype)
    log(f"{short_dtype_name(dtype)} matrix multiply: {gflops:.0f} GFLOP/s")
    return short_dtype_name(dtype), gflops


def counted(events: Iterable, method_of: Callable[[object], str | None]) -> dict[str, collections.Counter]:
    """The tokens of running `events` (an iterator of a workload's events) whole, per method: a call counts towards
    the method of the last event `method_of` named (`None`: an event that names none), so a method's first training
    step, whose event comes after it, counts towards what ran before it; the totals are exact."""
    with TokenCount() as count:
        for event in events:
            method = method_of(event)
            if method is not None and method != count.phase:
                count.phase = method
                log(f"  {method}")
    return count.tokens()


def standard(folder: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """The standard comparison of each of `args.tasks`: (its config, per task its counts)."""
    from peftlab.prompts import suggested_prompt
    from peftlab.standard import StandardConfig, StandardEvent, run_standard
    from peftlab.tasks import load_task
    from peftlab.tuning import TrainSettings

    methods = {"methods": tuple(args.methods.split(","))} if args.methods else {}
    seeds = tuple(int(seed) for seed in args.seeds.split(","))
    config = StandardConfig(seeds=seeds, test_limit=args.test_limit, **methods)
    scoring_lm, training_lm = load_lm(str(folder)), load_lm(str(folder), dtype="fp32")
    counts = {}
    for name in args.tasks.split(","):
        task = load_task(name)
        template, verbalizer = suggested_prompt(task.name, task.label_names)
        events = run_standard(scoring_lm, training_lm, task, template, verbalizer, config, TrainSettings())
        # zero-shot's and in-context's calibration come after the dot
        counts[name] = counted(events, lambda e: e.method.split(" · ")[0] if isinstance(e, StandardEvent) else None)
    return config.to_dict(), counts


def pet(folder: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """pet_fewshot.py's runs (`args.runs`, task:K): (each run's config, per run its counts per `_pet_phase`)."""
    from benchmarks.pet_fewshot import pet_config
    from peftlab.pet import default_patterns, pattern_prompts, pet_run
    from peftlab.tasks import load_task
    from peftlab.tuning import TrainSettings

    lm = load_lm(str(folder), dtype="fp32")
    configs, counts = {}, {}
    for spec in args.runs.split(","):
        name, shots = spec.split(":")
        config = pet_config(int(shots), args)
        task = load_task(name)
        templates, verbalizer = default_patterns(name)
        events = pet_run(lm, task, pattern_prompts(task, templates, [verbalizer]), config, TrainSettings())
        configs[spec], counts[spec] = config.to_dict(), counted(events, _pet_phase)
    return configs, counts


def _pet_phase(event) -> str | None:
    """PET's (generation 0) or an iPET generation's pattern models training or scoring the pool and test texts, or
    its classifier learning the soft labels (and scoring the test texts)."""
    from peftlab.pet import PatternScoring, PETEvent

    if isinstance(event, PETEvent):
        doing = "classifier" if event.model == "classifier" else "pattern models training"
    elif isinstance(event, PatternScoring):
        doing = "pattern models scoring"
    else:
        return None
    return f"{'PET' if event.generation == 0 else f'iPET generation {event.generation}'} {doing}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    workloads = parser.add_subparsers(dest="workload", required=True)
    one = workloads.add_parser("standard", help="the standard comparison (standard_comparison.py)")
    one.add_argument("--tasks", default="rt-sentiment,bbc-topic")
    one.add_argument("--methods", help="only these methods, comma-separated (default: all)")
    other = workloads.add_parser("pet", help="PET and iPET (pet_fewshot.py)")
    other.add_argument("--runs", default="rt-sentiment:16,bbc-topic:16,bbc-topic:10", help="task:K, comma-separated")
    other.add_argument("--unlabelled", type=int, default=1000)
    other.add_argument("--ipet-generations", type=int, default=2)
    other.add_argument("--lm-loss-weight", type=float, default=0.0)
    for sub in (one, other):
        sub.add_argument("--seeds", default="13,21,42")
        sub.add_argument("--test-limit", type=int, default=500)
    args = parser.parse_args()
    dtype, gflops = peak()
    folder = Path(tempfile.mkdtemp(prefix="peftlab-floor-"))
    weights = one_layer_copy(folder)
    config, counts = (standard if args.workload == "standard" else pet)(folder, args)
    report = {
        "workload": args.workload,
        "config": config,
        "model_weights_outside_embeddings": weights,
        "dtype": dtype,
        "peak_gflops": round(gflops, 1),
        "tasks": {name: floor(task_counts, weights, gflops) for name, task_counts in counts.items()},
        "target_minutes_per_task": TARGET_MINUTES,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
