"""The command line: one sub-command per tab, all calling the same library functions as the app.

Bad input prints one line `error: ...` on stderr and exits with code 2; any other failure prints one
`error: ...` line too and exits with code 1 (`--debug` shows its traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import traceback

from peftlab.autoprompt import POSITION_ORDERS, AutoPromptConfig
from peftlab.errors import PeftlabError
from peftlab.rlhf.pipeline import PipelineConfig
from peftlab.rlhf.ppo import PPOConfig
from peftlab.rlhf.sft import SFTConfig
from peftlab.tuning import SELECTION_SCORES, TrainSettings


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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")
    # Accepted after the sub-command too; SUPPRESS keeps a sub-command from resetting it to False.
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser = functools.partial(commands.add_parser, parents=[debug])

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
    auto_defaults = AutoPromptConfig()  # the same defaults as the AutoPrompt tab and the library
    auto.add_argument("--template", default=auto_defaults.template, help="template with [T] slots before {mask}")
    auto.add_argument("--verbalizer", help="label words as JSON; omit to search label words automatically")
    auto.add_argument("--iterations", type=int, default=auto_defaults.iterations)
    auto.add_argument("--candidates", type=int, default=auto_defaults.candidates,
                      help="top-k candidate words re-scored per iteration")
    auto.add_argument("--batch-size", type=int, default=auto_defaults.batch_size)
    auto.add_argument("--train-size", type=int, default=auto_defaults.train_size,
                      help="training examples (as many again for dev)")
    auto.add_argument("--positions", default=auto_defaults.positions, choices=list(POSITION_ORDERS))
    auto.add_argument("--dev-check", action=argparse.BooleanOptionalAction, default=auto_defaults.dev_check,
                      help="accept a swap only if it also raises the dev log-likelihood (default: on)")
    auto.add_argument("--keep-non-alphabetic", action="store_true", help="allow triggers that are not ASCII words")
    auto.add_argument("--seed", type=int, default=auto_defaults.seed)
    auto.add_argument("--test-limit", type=int, help="score only the first N test texts")
    auto.add_argument("--json", action="store_true", help="print one JSON object")
    auto.set_defaults(run=run_autoprompt)

    grid = commands.add_parser("compare", help="train few-shot methods over seeds and compare them on one table")
    _add_model_and_task(grid)
    _add_training_options(grid)
    grid.add_argument("--methods", default="prompt-tuning,lora", help="comma-separated: " + ", ".join(_method_names()))
    grid.add_argument("--shots", default="16", help="comma-separated K per class, e.g. 8,16")
    grid.add_argument("--learning-rate", action="append", default=[], metavar="METHOD=LR",
                      help="override one method's learning rate; repeat for several")
    grid.add_argument("--save-adapters", metavar="DIR", help="save every trained method as DIR/<method>-K<k>-seed<s>.zip")
    grid.set_defaults(run=run_compare, dtype="fp32")

    sweep = commands.add_parser("sweep", help="train one method at several values of one setting (e.g. prompt length)")
    _add_model_and_task(sweep)
    _add_training_options(sweep)
    sweep.add_argument("--method", default="prompt-tuning", help="one of " + ", ".join(_method_names()))
    sweep.add_argument("--setting", default="num_virtual_tokens", help="the numeric setting to vary")
    sweep.add_argument("--values", default="1,5,20,50,100", help="comma-separated values of the setting")
    sweep.add_argument("--shots", type=int, default=16, help="K per class")
    sweep.set_defaults(run=run_sweep_command, dtype="fp32")

    rlhf = commands.add_parser("rlhf", help="SFT -> reward model -> PPO (InstructGPT-style), then SFT vs PPO on held-out prompts")
    rlhf.add_argument("--model", default="smollm2-135m", help="embedded name, local folder or Hub id (a causal LM)")
    rlhf.add_argument("--labeler", default="vader-positive", help="who ranks samples: vader-positive, vader-negative, concise")
    rlhf.add_argument("--demonstrations", help="JSONL of {prompt, response} (default: the embedded movie-review data)")
    rlhf.add_argument("--comparisons", help="JSONL of {prompt, chosen, rejected} or {prompt, ranked} instead of a labeler's rankings")
    rlhf.add_argument("--sft-steps", type=int, default=SFTConfig.steps)
    rlhf.add_argument("--rm-pairs", type=int, default=PipelineConfig.rm_pairs, help="training comparisons for the reward model")
    rlhf.add_argument("--k", type=int, default=PipelineConfig.k, help="responses sampled and ranked per prompt")
    rlhf.add_argument("--ppo-steps", type=int, default=PPOConfig.steps)
    rlhf.add_argument("--beta", type=float, default=PPOConfig.beta, help="KL coefficient")
    rlhf.add_argument("--adaptive-kl", action=argparse.BooleanOptionalAction, default=PPOConfig.adaptive_kl,
                      help="steer beta towards --target-kl (--no-adaptive-kl: beta stays fixed)")
    rlhf.add_argument("--target-kl", type=float, default=PPOConfig.target_kl)
    rlhf.add_argument("--ptx-coef", type=float, default=PPOConfig.ptx_coef, help="PPO-ptx: weight of the LM loss on demonstrations")
    rlhf.add_argument("--seed", type=int, default=0)
    rlhf.add_argument("--samples", help="write the held-out SFT-vs-PPO responses to this CSV file")
    rlhf.add_argument("--json", action="store_true", help="print one JSON object")
    rlhf.set_defaults(run=run_rlhf, dtype="fp32")
    return parser


def _add_training_options(command: argparse.ArgumentParser) -> None:
    """What every training command shares: seeds, trainer settings, the prompt, the test split and the outputs."""
    command.add_argument("--seeds", default="13,21,42", help="comma-separated seeds")
    defaults = TrainSettings()  # the same defaults as the Soft prompts tab and the library
    command.add_argument("--steps", type=int, default=defaults.steps)
    command.add_argument("--batch-size", type=int, default=defaults.batch_size)
    command.add_argument("--eval-every", type=int, default=defaults.eval_every)
    command.add_argument("--select-by", choices=list(SELECTION_SCORES), default=defaults.select_by,
                         help="dev score that picks the kept weights and stops early")
    command.add_argument("--template", action="append", help="template (default: suggested for the task)")
    command.add_argument("--verbalizer", help="label words as JSON (default: suggested for the task)")
    command.add_argument("--test-limit", type=int, help="score only the first N test texts")
    command.add_argument("--out", help="write the results table to this CSV file")
    command.add_argument("--run-json", help="write the whole run (settings, rows, training curves) to this JSON file")
    command.add_argument("--json", action="store_true", help="print one JSON list of records")


def _method_names() -> list[str]:
    from peftlab.methods import METHODS

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
    from peftlab.autoprompt import run_autoprompt as search
    from peftlab.models import load_lm
    from peftlab.prompts import Verbalizer
    from peftlab.tasks import load_task

    if args.test_limit is not None and args.test_limit < 1:
        raise PeftlabError(f"--test-limit must be at least 1, not {args.test_limit}.")
    config = AutoPromptConfig(
        template=args.template, iterations=args.iterations, candidates=args.candidates, batch_size=args.batch_size,
        train_size=args.train_size, positions=args.positions, filter_non_alphabetic=not args.keep_non_alphabetic,
        dev_check=args.dev_check, seed=args.seed,
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
    from peftlab.compare import parse_int_list, run_grid, summarize, validate_grid
    from peftlab.methods import method_config, parse_learning_rates

    rates = parse_learning_rates(args.learning_rate)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown_rates = sorted(set(rates) - set(names))
    if unknown_rates:
        raise PeftlabError(f"--learning-rate names {', '.join(unknown_rates)}, which is not among --methods.")
    methods = [method_config(name, **({"learning_rate": rates[name]} if name in rates else {})) for name in names]
    shots = parse_int_list(args.shots, "--shots")
    task, setup, settings, seeds = _training_inputs(args)
    validate_grid(task, methods, seeds, shots)
    lm = _load_lm(args)
    results = _stream_training(args, lm, task, setup, methods, settings,
                               run_grid(lm, task, setup, methods, seeds, shots, settings, args.test_limit))
    if not args.json:
        print(summarize(results).to_string(index=False))


def run_sweep_command(args: argparse.Namespace) -> None:
    from peftlab.compare import parse_sweep_values, run_sweep, summarize, sweep_configs, validate_grid
    from peftlab.methods import method_config

    method_config(args.method)  # an unknown method fails first
    values = parse_sweep_values(args.method, args.setting, args.values)
    configs = sweep_configs(args.method, args.setting, values)
    task, setup, settings, seeds = _training_inputs(args)
    validate_grid(task, configs, seeds, [args.shots])
    lm = _load_lm(args)
    results = _stream_training(args, lm, task, setup, configs, settings, run_sweep(
        lm, task, setup, args.method, args.setting, values, seeds, args.shots, settings, args.test_limit))
    if not args.json:
        trained = results[results["method"] != "zero-shot"]
        print(summarize(trained, by=[args.setting]).to_string(index=False))


def _training_inputs(args: argparse.Namespace):
    """(task, cloze setup, trainer settings, seeds) from the shared training options, validated without a model."""
    from peftlab.cloze import ClozeSetup
    from peftlab.compare import parse_int_list
    from peftlab.prompts import suggested_prompt
    from peftlab.tasks import load_task

    if args.test_limit is not None and args.test_limit < 1:
        raise PeftlabError(f"--test-limit must be at least 1, not {args.test_limit}.")
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                             select_by=args.select_by)
    seeds = parse_int_list(args.seeds, "--seeds")
    task = load_task(args.task, text_column=args.text_column, label_column=args.label_column)
    template, verbalizer = suggested_prompt(task.name, task.label_names)
    setup = ClozeSetup.build(task, args.template or template, args.verbalizer or verbalizer)
    return task, setup, settings, seeds


def _load_lm(args: argparse.Namespace):
    from peftlab.models import load_lm

    return load_lm(args.model, dtype=args.dtype)


def _stream_training(args, lm, task, setup, methods, settings, items):
    """Print progress of a grid or sweep to stderr, write the requested files, and return the results table."""
    from dataclasses import asdict
    from pathlib import Path

    from peftlab.compare import GridRow, results_frame, run_record
    from peftlab.saving import zip_trained
    from peftlab.tuning import flat_loss_message, loss_is_flat

    rows, curves = [], []
    save_dir = Path(args.save_adapters) if getattr(args, "save_adapters", None) else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    for item in items:
        if isinstance(item, GridRow):
            rows.append(item.values)
            row = item.values
            if item.trained is not None and loss_is_flat(item.trained.history):
                print(f"warning: {flat_loss_message(item.trained)}", file=sys.stderr)
            if item.trained is not None and save_dir:
                zip_trained(item.trained, save_dir / f"{row['method']}-K{row['K']}-seed{row['seed']}.zip")
            if not args.json:
                print(f"{row['method']:>14} K={row['K']} seed={row['seed']}: test accuracy {row['test_accuracy']:.4f}",
                      file=sys.stderr)
        else:
            curves.append(asdict(item))
            if not args.json and item.step % args.eval_every == 0:
                print(f"{item.method:>14} seed={item.seed} step {item.step}: loss {item.train_loss:.3f}, "
                      f"dev accuracy {item.dev_accuracy:.3f}, dev log-likelihood {item.dev_log_likelihood:.3f}",
                      file=sys.stderr)
    results = results_frame(rows)
    if args.out:
        results.to_csv(args.out, index=False)
    if args.run_json:
        Path(args.run_json).write_text(run_record(lm, task, setup, methods, settings, results, curves), encoding="utf-8")
    if args.json:
        print(results.to_json(orient="records"))
    return results


def run_rlhf(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from peftlab.rlhf.pipeline import RLHFData, run_pipeline

    defaults = PipelineConfig()
    config = PipelineConfig(
        labeler=args.labeler, rm_pairs=args.rm_pairs, k=args.k, seed=args.seed,
        sft=replace(defaults.sft, steps=args.sft_steps, seed=args.seed),
        reward=replace(defaults.reward, seed=args.seed),
        ppo=replace(defaults.ppo, steps=args.ppo_steps, beta=args.beta, adaptive_kl=args.adaptive_kl,
                    target_kl=args.target_kl, ptx_coef=args.ptx_coef, seed=args.seed),
    )
    if args.comparisons and not args.demonstrations:
        raise PeftlabError("--comparisons needs --demonstrations too (SFT learns from them first).")
    data = (RLHFData.uploaded(args.demonstrations, args.comparisons, seed=args.seed) if args.demonstrations
            else RLHFData.embedded(seed=args.seed))
    lm = _load_lm(args)

    def report(stage: str, event) -> None:
        if args.json or not hasattr(event, "step"):
            return
        if stage == "sft" and (event.step % 10 == 0 or event.samples):
            print(f"sft step {event.step}: loss {event.loss:.3f}", file=sys.stderr)
        elif stage == "reward" and event.heldout_accuracy == event.heldout_accuracy:  # evaluation steps (not NaN)
            print(f"reward model step {event.step}: loss {event.loss:.3f}, held-out pair accuracy {event.heldout_accuracy:.3f}",
                  file=sys.stderr)
        elif stage == "ppo":
            print(f"ppo step {event.step}: reward {event.mean_reward:+.3f}, labeler {event.mean_labeler_score:+.3f}, "
                  f"KL {event.mean_kl:.2f}, beta {event.beta:.3f}", file=sys.stderr)

    result = run_pipeline(lm, data, config, on_event=report)
    if args.samples:
        result.comparison.table.to_csv(args.samples, index=False)
    if args.json:
        print(json.dumps(result.summary))
        return
    summary = result.summary
    print(f"reward model held-out pair accuracy {summary['rm_heldout_accuracy']:.3f} ({summary['rm_heldout_pairs']} pairs)")
    print(f"{summary['labeler']} score on {summary['prompts']} held-out prompts: SFT {summary['sft_mean_score']:+.3f} -> "
          f"PPO {summary['ppo_mean_score']:+.3f}, KL to the SFT model {summary['mean_kl']:.2f} nats per response, "
          f"{summary['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    import transformers

    transformers.utils.logging.disable_progress_bar()  # weight-loading bars are noise on a command line
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        args.run(args)
    except PeftlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted.", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a broken environment: one line, the traceback only when asked
        if "--debug" in argv:
            traceback.print_exc()
        reason = (str(exc).strip().splitlines() or [""])[0]
        print(f"error: {type(exc).__name__}{': ' + reason if reason else ''} "
              "(this is a bug or a broken installation; run again with --debug to see the traceback).", file=sys.stderr)
        return 1
    return 0
