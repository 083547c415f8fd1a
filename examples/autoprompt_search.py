"""AutoPrompt (Shin et al. 2020): search trigger tokens for a template's [T] slots by gradient, then compare the
found prompt with the same template without triggers on the test split.

    python examples/autoprompt_search.py [--iterations 20] [--texts 200]
"""

import argparse

from peftlab.autoprompt import AutoPromptConfig, AutoPromptEvent, AutoPromptResult, FinalScoring, autoprompt_run
from peftlab.models import load_lm
from peftlab.tasks import load_task

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--iterations", type=int, default=20, help="trigger updates to try")
parser.add_argument("--texts", type=int, default=200, help="test texts scored with and without the trigger")
args = parser.parse_args()

lm, task = load_lm("smollm2-135m"), load_task("rt-sentiment")
config = AutoPromptConfig(iterations=args.iterations, test_limit=args.texts)
for item in autoprompt_run(lm, task, {"negative": ["negative"], "positive": ["positive"]}, config):
    if isinstance(item, AutoPromptResult):
        print(f"found template: {item.template!r}")
        print(f"test accuracy {item.test_accuracy:.1%} with the trigger, {item.manual_test_accuracy:.1%} without")
    elif isinstance(item, FinalScoring):
        print(f"scoring the best trigger and the template without it on {item.texts} test texts")
    elif isinstance(item, AutoPromptEvent):
        trigger = " ".join(token.strip() for token in item.trigger_tokens)
        # iteration 0 is the starting trigger, before any update: --iterations 2 printed three lines
        when = f"iteration {item.iteration}" if item.iteration else "start"
        print(f"{when}: trigger {trigger!r}, dev accuracy {item.dev_accuracy:.1%}")
