"""The CUDA paths, in one run on a GPU: what `scripts/gpu-check.sh` runs where `torch.cuda.is_available()`.

Run from the repository root:

    bash scripts/gpu-check.sh        # prints {"cuda": false} and stops where there is no GPU
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_check.py [--device cpu] [--texts 1000] [--test-limit 200]

1. Cloze: the embedded model in its fast inference dtype (bf16 on a GPU with it) scores `--texts` rt-sentiment
   test texts (`peftlab.cloze.evaluate`, mean calibration): accuracy and seconds; the first `--reference` of them
   are scored again on the CPU in fp32, for the share of equal predictions and the largest difference in a label's
   log-probability (the precision's tolerance, measured rather than assumed).
2. Grid: six methods (prompt tuning, P-tuning, prefix tuning, LoRA, head-only, full) x seed 13 at K=16 with their
   shipped defaults, fp32 weights under bf16 autocast, on `--test-limit` test texts: every row and the wall time.
3. ZeroGPU calls: the same grid as one GPU call per run (`peftlab.zerogpu.GPUCalls`) under a simulated cap of
   `--cap` seconds: every call's asked and taken seconds, whether any went past its ask, and whether the rows
   equal step 2's.
4. RLHF: the pipeline with both routes, shortened (`--sft-steps`, `--rm-steps`, `--ppo-steps`, `--dpo-steps`):
   each route's labeler score and KL, the reward model's held-out accuracy and every stage's seconds.
5. RLHF crossing (what a ZeroGPU call does to a session): a short session's stages pickled and rebuilt on the device
   (`peftlab.rlhf.crossing`), with PPO run in chunks of one step crossing between them: the pickle's size, the
   largest difference of each rebuilt model's outputs from the original's, and whether the chunked PPO's events
   equal an unbroken run's.

stdout gets one JSON object (indent 2); progress lines go to stderr. `--device cpu` runs the same on a CPU, to try
the script where there is no GPU (its figures are then the CPU's).

Notes: the first run on a GPU, 2026-12-04, one NVIDIA H200 (torch 2.11.0+cu130, transformers 5.23, peft 0.21.2, trl
1.16, Python 3.12), this script at its defaults while `rlhf_pipeline.py` and `standard_comparison.py` shared the GPU
and its 16 cores (others' CPU share 0.07 to 0.14), so the seconds are upper bounds.
- Cloze: 1,000 texts in 2.42 s in bf16, accuracy 0.807; the 100 reference texts got the same predictions as fp32 on
  the CPU, the largest label log-probability difference 0.115 (bf16's tolerance at this model's size).
- Grid: six methods x seed 13 in 29.1 s (train seconds 0.95 for the head to 6.94 for prompt tuning), test accuracy
  0.68 (head) to 0.82 (prefix tuning) on 200 texts; as six GPU calls under a 60 s cap, 19.4 s, no call past its ask
  (at most 4.35 s of the 20 to 60 s asked) and every row equal to the one-process grid's.
- RLHF shortened (20 / 50 / 8 / 20 steps): 79.9 s; crossing: the 59 MB session pickled and rebuilt with every
  model's outputs equal (largest difference 0.0), and PPO in one-step chunks equal to one run.
- The fault it found: with torch 2.11 on H100/H200, cuDNN is the default attention kernel, and its backward gives NaN
  gradients under an attention mask (pytorch/pytorch#196678). A LoRA reward model's loss was NaN from its third step
  (held-out accuracy then read 0.000 and PPO stopped on a device-side assert), and one of PET's four pattern models
  for seed 21 was left at 50 % (its ensemble too). Training the same reward model with the math or eager attention
  kernel, or in fp32, gave finite losses (0.693 -> 0.652 in 6 steps); so did turning cuDNN attention off, which
  `peftlab.models.avoid_cudnn_attention` now does for every model put on a GPU. After it, PET seed 21's patterns
  scored 0.805 / 0.825 / 0.795 / 0.795 (ensemble 0.810) on 200 test texts, where one had been at 0.500.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import torch  # noqa: E402

from benchmarks.common import Phase, forget_memos, logger  # noqa: E402
from peftlab.cloze import ClozeSetup, evaluate, label_log_probs  # noqa: E402
from peftlab.compare import GridRow, run_grid  # noqa: E402
from peftlab.errors import PeftlabError  # noqa: E402
from peftlab.methods import method_config  # noqa: E402
from peftlab.models import gpu_supports_bf16, load_lm  # noqa: E402
from peftlab.rlhf.dpo import DPOConfig  # noqa: E402
from peftlab.rlhf.pipeline import PipelineConfig, RLHFData, run_pipeline  # noqa: E402
from peftlab.rlhf.ppo import PPOConfig  # noqa: E402
from peftlab.rlhf.reward import RewardConfig  # noqa: E402
from peftlab.rlhf.sft import SFTConfig  # noqa: E402
from peftlab.tasks import load_task  # noqa: E402
from peftlab.tuning import TrainSettings  # noqa: E402
from peftlab.zerogpu import GPUCalls  # noqa: E402

TEMPLATE = "Review: {text}\nSentiment:{mask}"
VERBALIZER = {"negative": ["negative"], "positive": ["positive"]}
METHODS = ("prompt-tuning", "p-tuning", "prefix-tuning", "lora", "head", "full")
COMPARED = ("test_accuracy", "macro_f1", "steps", "status")
log = logger("gpu_check")


def cloze(task, args) -> dict:
    lm = load_lm(args.model, dtype="auto", device=args.device)
    with Phase(f"cloze, {args.texts} texts", log) as phase:
        result = evaluate(lm, task, TEMPLATE, VERBALIZER, "mean", limit=args.texts)
    texts = task.test_subset(args.reference)
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    here = label_log_probs(lm, setup.prompts[0], texts).float().cpu()
    cpu = label_log_probs(load_lm(args.model, dtype="fp32", device="cpu"), setup.prompts[0], texts).float()
    return {
        "dtype": str(lm.model.dtype),
        "texts": args.texts,
        "accuracy": round(result.accuracy, 4),
        "seconds": round(phase.seconds, 2),
        "reference_texts": len(texts),
        "same_predictions_as_cpu_fp32": round(float((here.argmax(-1) == cpu.argmax(-1)).float().mean()), 4),
        "largest_log_prob_difference": round(float((here - cpu).abs().max()), 4),
    }


def grid(lm, task, args, backend=None) -> tuple[dict, float]:
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER, calibration="mean")
    methods = [method_config(name) for name in METHODS]
    rows = {}
    forget_memos(lm)  # every grid pays for its own zero-shot scoring and frozen features
    with Phase("grid" + (" in GPU calls" if backend else ""), log) as phase:
        for item in run_grid(lm, task, setup, methods, [13], [16], TrainSettings(), args.test_limit, backend=backend):
            if isinstance(item, GridRow) and item.values["seed"] is not None:
                rows[item.values["method"]] = {c: item.values[c] for c in COMPARED + ("train_seconds",)}
                log(f"  {item.values['method']:>14}: {item.values['test_accuracy']:.4f}")
    return rows, phase.seconds


def rlhf(lm, args) -> dict:
    config = PipelineConfig(
        route="both",
        sft=SFTConfig(steps=args.sft_steps),
        reward=RewardConfig(steps=args.rm_steps),
        ppo=PPOConfig(steps=args.ppo_steps),
        dpo=DPOConfig(steps=args.dpo_steps),
    )
    with Phase("RLHF, both routes, shortened", log) as phase:
        result = run_pipeline(lm, RLHFData.embedded(seed=0), config)
    summary = result.summary
    keys = ("rm_heldout_accuracy", "sft_mean_score", "ppo_mean_score", "ppo_mean_kl", "dpo_mean_score", "dpo_mean_kl")
    return {
        "steps": {"sft": args.sft_steps, "rm": args.rm_steps, "ppo": args.ppo_steps, "dpo": args.dpo_steps},
        **{key: summary.get(key) for key in keys},
        "stage_seconds": summary["stage_seconds"],
        "seconds": round(phase.seconds, 1),
    }


def crossing(lm, args) -> dict:
    from peftlab.rlhf.generation import encode_pairs, response_forward
    from peftlab.rlhf.labelers import VaderLabeler
    from peftlab.rlhf.ppo import ppo_steps, start_ppo, train_ppo
    from peftlab.rlhf.session import RLHFSession

    data, session = RLHFData.embedded(seed=0), RLHFSession()
    ppo = PPOConfig(steps=3)
    with Phase("RLHF crossing", log) as phase:
        list(session.run_sft(lm, data, SFTConfig(steps=args.sft_steps)))
        train, heldout = session.comparisons("simulated labeler", PipelineConfig(rm_pairs=60))
        list(session.run_reward(train, heldout, RewardConfig(steps=args.rm_steps)))
        list(session.run_ppo("vader-positive", ppo))
        list(session.run_dpo(DPOConfig(steps=4)))
        pickled = pickle.dumps(session)
        other = pickle.loads(pickled)
        prompts, responses = data.heldout_prompts[:4], ["It was a wonderful film."] * 4
        batch = encode_pairs(lm.tokenizer, prompts, responses)
        with torch.no_grad():
            differences = {
                name: float((response_forward(mine(other), batch) - response_forward(mine(session), batch)).abs().max())
                for name, mine in (
                    ("sft", lambda s: s.sft.model),
                    ("ppo", lambda s: s.ppo.policy.model),
                    ("dpo", lambda s: s.dpo.policy),
                )
            }
            differences["reward"] = float(
                (other.reward.model.score(prompts, responses) - session.reward.model.score(prompts, responses))
                .abs()
                .max()
            )
        arguments = (lm.tokenizer, session.reward.model, data.train_prompts, ppo, VaderLabeler("positive"), ())
        *whole, _ = train_ppo(session.sft.model, *arguments)
        run, chunked = pickle.loads(pickle.dumps(start_ppo(session.sft.model, ppo))), []
        for until in range(1, ppo.steps + 1):
            chunked += list(ppo_steps(run, *arguments, until))
            run = pickle.loads(pickle.dumps(run))
    return {
        "pickled_bytes": len(pickled),
        "max_difference": differences,
        "ppo_chunks_equal_one_run": [(e.mean_reward, e.mean_kl, e.policy_loss) for e in chunked]
        == [(e.mean_reward, e.mean_kl, e.policy_loss) for e in whole],
        "seconds": round(phase.seconds, 1),
    }


def part(record: dict, name: str, run) -> None:
    """record[name] = run(), or the error it raised: one failing CUDA path must not hide the others' figures. Each
    part is logged as it ends, so a run cut short by its time limit still reports what finished."""
    try:
        record[name] = run()
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, with where it was raised
        record[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc().splitlines()[-12:]}
    log(f"{name}: {json.dumps(record[name], default=str)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="smollm2-135m", help="a name or a local model folder")
    parser.add_argument("--texts", type=int, default=1000, help="cloze: test texts scored")
    parser.add_argument("--reference", type=int, default=100, help="cloze: texts scored on the CPU too")
    parser.add_argument("--test-limit", type=int, default=200, help="grid: test texts every run is scored on")
    parser.add_argument("--cap", type=float, default=60, help="ZeroGPU: the simulated cap of one call, seconds")
    parser.add_argument("--sft-steps", type=int, default=20)
    parser.add_argument("--rm-steps", type=int, default=50)
    parser.add_argument("--ppo-steps", type=int, default=8)
    parser.add_argument("--dpo-steps", type=int, default=20)
    args = parser.parse_args()

    task = load_task("rt-sentiment")
    on_gpu = torch.device(args.device).type == "cuda"
    record = {
        "model": args.model,
        # "cuda:1" too (it read "cpu"): the name of the GPU the device string picks
        "device": torch.cuda.get_device_name(torch.device(args.device)) if on_gpu else "cpu",
        "torch": torch.__version__,
        "bf16": gpu_supports_bf16(args.device) if on_gpu else None,
    }
    part(record, "cloze", lambda: cloze(task, args))
    lm = load_lm(args.model, dtype="fp32", device=args.device)  # fp32 weights, bf16 autocast where the GPU has it
    rows: dict = {}

    def whole_grid() -> dict:
        found, seconds = grid(lm, task, args)
        rows.update(found)
        return {"seconds": round(seconds, 1), "rows": found}

    def grid_in_calls() -> dict:
        calls = GPUCalls(cap_s=args.cap, first_s=args.cap)
        try:
            split, split_seconds = grid(lm, task, args, calls)
            overran = None
        except PeftlabError as exc:  # a call past its ask: reported, and the RLHF check still runs
            split, split_seconds, overran = {}, None, str(exc)  # null in the JSON (NaN is not JSON)
        return {
            "cap_s": args.cap,
            "calls": [{"asked_s": round(a, 1), "took_s": round(t, 2)} for a, t in calls.calls],
            "overran": overran,
            "seconds": None if split_seconds is None else round(split_seconds, 1),
            "same_rows_as_one_process": {m: all(split.get(m, {}).get(c) == rows[m][c] for c in COMPARED) for m in rows},
        }

    part(record, "grid", whole_grid)
    part(record, "zerogpu_calls", grid_in_calls)
    part(record, "rlhf", lambda: rlhf(lm, args))
    part(record, "rlhf_crossing", lambda: crossing(lm, args))
    print(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
