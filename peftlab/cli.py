"""The command line: one sub-command per tab, all calling the same library functions as the app.

Bad input prints one line `error: ...` on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from peftlab.errors import PeftlabError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line and exit code 2, like every other bad input."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        raise PeftlabError(message[0].upper() + message[1:] + f" (see `{self.prog} --help`).")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m peftlab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cloze = commands.add_parser("cloze", help="zero-shot / in-context cloze evaluation with a template and verbalizer")
    _add_model_and_task(cloze)
    cloze.add_argument("--template", action="append", help="template with one {mask}; repeat to ensemble (default: suggested for the task)")
    cloze.add_argument("--verbalizer", help='JSON such as {"negative": ["negative"], "positive": ["positive"]}')
    cloze.add_argument("--calibration", default="none", choices=["none", "contextual", "mean"])
    cloze.add_argument("--shots-in-context", type=int, default=0, help="labelled demonstrations put before each input")
    cloze.add_argument("--limit", type=int, help="evaluate only the first N test texts")
    cloze.add_argument("--seed", type=int, default=13, help="seed for picking demonstrations")
    cloze.add_argument("--batch-size", type=_positive_int, default=32)
    cloze.add_argument("--json", action="store_true", help="print one JSON object")
    cloze.set_defaults(run=run_cloze)

    auto = commands.add_parser("autoprompt", help="AutoPrompt: gradient-guided trigger search (and label-word search)")
    _add_model_and_task(auto)
    auto.add_argument("--template", default="{text} [T] [T] [T] [T] [T] {mask}", help="template with [T] slots before {mask}")
    auto.add_argument("--verbalizer", help="label words as JSON; omit to search label words automatically")
    auto.add_argument("--iterations", type=int, default=20)
    auto.add_argument("--candidates", type=int, default=20, help="top-k candidate words re-scored per iteration")
    auto.add_argument("--batch-size", type=int, default=16)
    auto.add_argument("--train-size", type=int, default=64, help="training examples (as many again for dev)")
    auto.add_argument("--positions", default="round-robin", choices=["round-robin", "random"])
    auto.add_argument("--keep-non-alphabetic", action="store_true", help="allow triggers that are not ASCII words")
    auto.add_argument("--seed", type=int, default=13)
    auto.add_argument("--test-limit", type=int, help="score only the first N test texts")
    auto.add_argument("--json", action="store_true", help="print one JSON object")
    auto.set_defaults(run=run_autoprompt)

    grid = commands.add_parser("compare", help="train few-shot methods over seeds and compare them on one table")
    _add_model_and_task(grid)
    grid.add_argument("--methods", default="prompt-tuning,lora", help="comma-separated: " + ", ".join(_method_names()))
    grid.add_argument("--shots", default="16", help="comma-separated K per class, e.g. 8,16")
    grid.add_argument("--seeds", default="13,21,42", help="comma-separated seeds")
    grid.add_argument("--steps", type=int, default=TRAIN_DEFAULTS["steps"])
    grid.add_argument("--batch-size", type=int, default=TRAIN_DEFAULTS["batch_size"])
    grid.add_argument("--eval-every", type=int, default=TRAIN_DEFAULTS["eval_every"])
    grid.add_argument("--learning-rate", action="append", default=[], metavar="METHOD=LR",
                      help="override one method's learning rate; repeat for several")
    grid.add_argument("--template", action="append", help="template (default: suggested for the task)")
    grid.add_argument("--verbalizer", help="label words as JSON (default: suggested for the task)")
    grid.add_argument("--test-limit", type=int, help="score only the first N test texts")
    grid.add_argument("--out", help="write the results table to this CSV file")
    grid.add_argument("--json", action="store_true", help="print one JSON list of records")
    grid.set_defaults(run=run_compare, dtype="fp32")
    return parser


TRAIN_DEFAULTS = {"steps": 40, "batch_size": 8, "eval_every": 10}


def _method_names() -> list[str]:
    from peftlab.tuning import METHODS

    return list(METHODS)


def _add_model_and_task(command: argparse.ArgumentParser) -> None:
    command.add_argument("--model", default="smollm2-135m", help="embedded name, local folder or Hub id")
    command.add_argument("--task", default="rt-sentiment", help="embedded task name, CSV/JSONL path or Hub dataset id")
    command.add_argument("--text-column", default="text", help="text column of a CSV/JSONL/Hub task")
    command.add_argument("--label-column", default="label", help="label column of a CSV/JSONL/Hub task")
    command.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU supports it), fp32 or bf16")


def _progress_printer(label: str):
    def report(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    return report


def run_cloze(args: argparse.Namespace) -> None:
    from peftlab.cloze import ClozeSetup, evaluate
    from peftlab.models import load_lm
    from peftlab.prompts import suggested_prompt
    from peftlab.tasks import load_task

    if args.limit is not None and args.limit < 1:
        raise PeftlabError(f"--limit must be at least 1, not {args.limit}.")
    task = load_task(args.task, text_column=args.text_column, label_column=args.label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    settings = dict(
        templates=args.template or template, verbalizer=args.verbalizer or verbalizer, calibration=args.calibration,
        shots_in_context=args.shots_in_context, seed=args.seed,
    )
    ClozeSetup.build(task, **settings)  # bad templates and verbalizers fail before a model loads
    lm = load_lm(args.model, dtype=args.dtype)
    result = evaluate(
        lm, task, **settings, limit=args.limit, batch_size=args.batch_size,
        progress=None if args.json else _progress_printer("scoring"),
    )
    if args.json:
        print(json.dumps(result.summary()))
        return
    print(f"accuracy {result.accuracy:.4f}  macro-F1 {result.macro_f1:.4f}  n {result.n}  {result.seconds:.1f} s")
    width = max(len(name) for name in result.label_names)
    print("confusion (rows gold, columns predicted):")
    for name, row in zip(result.label_names, result.confusion):
        print(f"  {name:>{width}}  " + " ".join(f"{count:5d}" for count in row))


def run_autoprompt(args: argparse.Namespace) -> None:
    from peftlab.autoprompt import AutoPromptConfig, run_autoprompt as search
    from peftlab.models import load_lm
    from peftlab.prompts import Verbalizer
    from peftlab.tasks import load_task

    if args.test_limit is not None and args.test_limit < 1:
        raise PeftlabError(f"--test-limit must be at least 1, not {args.test_limit}.")
    config = AutoPromptConfig(
        template=args.template, iterations=args.iterations, candidates=args.candidates, batch_size=args.batch_size,
        train_size=args.train_size, positions=args.positions, filter_non_alphabetic=not args.keep_non_alphabetic,
        seed=args.seed,
    )
    task = load_task(args.task, text_column=args.text_column, label_column=args.label_column)
    if args.verbalizer:
        Verbalizer.parse(args.verbalizer, task.label_names)  # fail before a model loads
    lm = load_lm(args.model, dtype=args.dtype)

    def report(event) -> None:
        if not args.json:
            row = event.row()
            print(f"iter {row['iteration']:3d}  dev acc {row['dev acc']:.3f}  trigger {row['trigger']!r}", file=sys.stderr)

    result = search(lm, task, args.verbalizer, config, test_limit=args.test_limit, on_event=report)
    if args.json:
        print(json.dumps(result.summary()))
        return
    print(f"template: {result.template!r}")
    print(f"verbalizer: {json.dumps(result.verbalizer)}")
    print(f"test accuracy {result.test_accuracy:.4f} (without triggers {result.manual_test_accuracy:.4f}), "
          f"dev {result.dev_accuracy:.4f}, {result.seconds:.0f} s")


def run_compare(args: argparse.Namespace) -> None:
    from peftlab.cloze import ClozeSetup
    from peftlab.compare import GridRow, parse_int_list, results_frame, run_grid, summarize, validate_grid
    from peftlab.models import load_lm
    from peftlab.prompts import suggested_prompt
    from peftlab.tasks import load_task
    from peftlab.tuning import TrainSettings, flat_loss_message, loss_is_flat, method_config, parse_learning_rates

    if args.test_limit is not None and args.test_limit < 1:
        raise PeftlabError(f"--test-limit must be at least 1, not {args.test_limit}.")
    rates = parse_learning_rates(args.learning_rate)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown_rates = sorted(set(rates) - set(names))
    if unknown_rates:
        raise PeftlabError(f"--learning-rate names {', '.join(unknown_rates)}, which is not among --methods.")
    methods = [method_config(name, **({"learning_rate": rates[name]} if name in rates else {})) for name in names]
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every)
    seeds, shots = parse_int_list(args.seeds, "--seeds"), parse_int_list(args.shots, "--shots")
    task = load_task(args.task, text_column=args.text_column, label_column=args.label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    setup = ClozeSetup.build(task, args.template or template, args.verbalizer or verbalizer)
    validate_grid(task, methods, seeds, shots)
    lm = load_lm(args.model, dtype=args.dtype)
    rows = []
    for item in run_grid(lm, task, setup, methods, seeds, shots, settings, args.test_limit):
        if isinstance(item, GridRow):
            rows.append(item.values)
            if item.trained is not None and loss_is_flat(item.trained.history):
                print(f"warning: {flat_loss_message(item.trained)}", file=sys.stderr)
            if not args.json:
                row = item.values
                print(f"{row['method']:>14} K={row['K']} seed={row['seed']}: test accuracy {row['test_accuracy']:.4f}",
                      file=sys.stderr)
        elif not args.json and item.step % args.eval_every == 0:
            print(f"{item.method:>14} seed={item.seed} step {item.step}: loss {item.train_loss:.3f}", file=sys.stderr)
    results = results_frame(rows)
    if args.out:
        results.to_csv(args.out, index=False)
    if args.json:
        print(results.to_json(orient="records"))
    else:
        print(summarize(results).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # weight-loading bars are noise on a command line
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except PeftlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
