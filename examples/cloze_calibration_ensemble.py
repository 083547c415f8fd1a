"""Cloze prompting on the embedded model and movie reviews: one template raw and calibrated, then an ensemble.

    python examples/cloze_calibration_ensemble.py [--texts 200]

Prints the test accuracy of each calibration (Zhao et al. 2021) for one template, then of a two-template ensemble
(the templates' label probabilities averaged), all on the same stratified test texts.
"""

import argparse

from peftlab.cloze import CALIBRATIONS, evaluate
from peftlab.models import load_lm
from peftlab.tasks import load_task

TEMPLATE = "Review: {text}\nSentiment:{mask}"
ENSEMBLE = [TEMPLATE, "{text} All in all, the movie was{mask}."]
VERBALIZER = {"negative": ["negative", "bad"], "positive": ["positive", "good"]}

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--texts", type=int, default=200, help="test texts to score (a stratified subset)")
args = parser.parse_args()

lm, task = load_lm("smollm2-135m"), load_task("rt-sentiment")
for number, calibration in enumerate(CALIBRATIONS):
    result = evaluate(lm, task, [TEMPLATE], VERBALIZER, calibration, limit=args.texts)
    # the texts are scored once; each calibration after the first rescales those scores (its seconds are the scoring's)
    cost = f"scored in {result.seconds:.1f} s" if number == 0 else "the same scores, calibrated"
    print(f"one template, calibration {calibration:<10} accuracy {result.accuracy:.1%}  ({cost})")
result = evaluate(lm, task, ENSEMBLE, VERBALIZER, "mean", limit=args.texts)
print(f"two-template ensemble, calibration mean  accuracy {result.accuracy:.1%} on {result.n} test texts")
errors = result.most_confident_errors(3)[["gold", "predicted", "confidence", "text"]]
print(errors.to_string(index=False, max_colwidth=80))
