"""Few-shot comparison: prompt tuning, LoRA and a classification head trained on the same K examples per class and
seeds, next to the zero-shot prompt, on the same test texts (the Soft prompts tab's grid).

    python examples/fewshot_compare.py [--k 16] [--seeds 13,21] [--steps 60] [--texts 200]
"""

import argparse

from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow, results_frame, run_grid, summarize
from peftlab.methods import method_config
from peftlab.models import load_lm
from peftlab.tasks import load_task
from peftlab.tuning import TrainSettings

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--k", type=int, default=16, help="training examples per class")
parser.add_argument("--seeds", default="13,21", help="comma-separated seeds")
parser.add_argument("--steps", type=int, default=60, help="training steps per run")
parser.add_argument("--texts", type=int, default=200, help="test texts (a stratified subset)")
args = parser.parse_args()

lm, task = load_lm("smollm2-135m", dtype="fp32"), load_task("rt-sentiment")
setup = ClozeSetup.build(task, "Review: {text}\nSentiment:{mask}", {"negative": ["negative"], "positive": ["positive"]})
methods = [method_config(name) for name in ("prompt-tuning", "lora", "head")]
seeds = [int(seed) for seed in args.seeds.split(",")]
rows = []
for item in run_grid(lm, task, setup, methods, seeds, [args.k], TrainSettings(steps=args.steps), args.texts):
    if isinstance(item, GridRow):
        rows.append(item.values)
        row = item.values
        trained = f" seed {row['seed']}" if row["seed"] is not None else ""  # zero-shot trains nothing: no seed
        print(f"{row['method']:<14}{trained}: test accuracy {row['test_accuracy']:.1%}")
    elif item.step == 1 or item.step % 20 == 0:  # a run takes minutes on a CPU: said as it starts and as it goes
        print(f"  {item.method} seed {item.seed} step {item.step}/{args.steps}: loss {item.train_loss:.3f}")
summary = summarize(results_frame(rows))
print(summary[["method", "K", "accuracy_mean", "accuracy_std", "runs", "trainable_params"]].to_string(index=False))
