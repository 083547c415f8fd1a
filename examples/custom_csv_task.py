"""Your own data: a CSV with a text and a label column becomes a task (20 % of each class held out for testing
when there is no 'split' column), scored zero-shot with a template and verbalizer written for it.

    python examples/custom_csv_task.py [path/to/data.csv --text-column text --label-column label]

Without a path it uses examples/custom_task.csv: 40 sentences, each a question or a statement.
"""

import argparse
from pathlib import Path

from peftlab.cloze import evaluate
from peftlab.models import load_lm
from peftlab.tasks import load_task

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("path", nargs="?", default=str(Path(__file__).with_name("custom_task.csv")), help="a CSV file")
parser.add_argument("--text-column", default="text")
parser.add_argument("--label-column", default="label")
parser.add_argument("--template", default="Sentence: {text}\nType:{mask}", help="a template with {text} and {mask}")
args = parser.parse_args()

task = load_task(args.path, text_column=args.text_column, label_column=args.label_column)
split = task.cloze_split()  # nothing trained, no demonstrations: an upload without a split column is scored whole
print(f"task {task.name}: labels {task.label_names}, {len(task.rows(split))} texts to score")
verbalizer = {label: [label] for label in task.label_names}  # each label's own name as its word
for calibration in ("none", "mean"):
    result = evaluate(load_lm("smollm2-135m"), task, [args.template], verbalizer, calibration, split=split)
    print(f"zero-shot accuracy {result.accuracy:.1%} on {result.n} texts with calibration {calibration}")
print(result.predictions[["gold", "predicted", "text"]].head(5).to_string(index=False, max_colwidth=80))
