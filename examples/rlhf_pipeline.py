"""The InstructGPT-style pipeline (Ouyang et al. 2022) and DPO (Rafailov et al. 2023) beside it: SFT on
demonstrations, a simulated labeler ranks the SFT model's samples, a reward model learns the rankings, PPO optimises
against it, DPO learns the same comparisons, and all answer held-out prompts.

    python examples/rlhf_pipeline.py [--model smollm2-135m] [--sft-steps 60] [--ppo-steps 40] [--dpo-steps 60]

The defaults take about 10 to 15 minutes on a laptop CPU; smaller steps give a quick look.
"""

import argparse
from dataclasses import replace

from peftlab.models import load_lm
from peftlab.rlhf.pipeline import PipelineConfig, RLHFData, run_pipeline

defaults = PipelineConfig()
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", default="smollm2-135m", help="a causal LM: embedded name, Hub id or folder")
parser.add_argument("--labeler", default="vader-positive", help="vader-positive, vader-negative or concise")
parser.add_argument("--sft-steps", type=int, default=60)
parser.add_argument("--ppo-steps", type=int, default=40)
parser.add_argument("--dpo-steps", type=int, default=60)
parser.add_argument(
    "--comparisons", type=int, default=defaults.rm_pairs, help="training comparisons for the reward model"
)
parser.add_argument(
    "--prompts",
    type=int,
    default=defaults.rm_heldout_prompts,
    help="held-out ranking prompts that test the reward model",
)
args = parser.parse_args()

config = PipelineConfig(labeler=args.labeler, route="both", rm_pairs=args.comparisons, rm_heldout_prompts=args.prompts)
config = replace(
    config,
    sft=replace(config.sft, steps=args.sft_steps),
    ppo=replace(config.ppo, steps=args.ppo_steps),
    dpo=replace(config.dpo, steps=args.dpo_steps),
)


def show(stage, event):
    """Every 10th training step of each stage (the stages' results come through here too, without a step)."""
    step = getattr(event, "step", None)
    if step is not None and step % 10 == 0:
        print(f"  {stage} step {step}")


result = run_pipeline(load_lm(args.model, dtype="fp32"), RLHFData.embedded(seed=config.seed), config, show)
s = result.summary
print(f"reward model held-out pair accuracy {s['rm_heldout_accuracy']:.1%} ({s['rm_heldout_pairs']} pairs)")
for route in ("sft", "ppo", "dpo"):
    kl = f", KL to SFT {s[f'{route}_mean_kl']:.2f} nats" if route != "sft" else ""
    print(f"{route.upper()}: {s['labeler']} score {s[f'{route}_mean_score']:+.3f}{kl}")
print(result.comparison.table[["prompt", "sft_response", "ppo_response", "dpo_response"]].head(3).to_string())
