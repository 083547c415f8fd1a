"""The command line: one sub-command per tab, all calling the same library functions as the app.

Bad input prints one line `error: ...` on stderr and exits with code 2; any other failure prints one
`error: ...` line too and exits with code 1 (`--debug` shows its traceback): `cli_core.run_command`, which also
holds the commands of the results store.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from peftlab.autoprompt import AutoPromptConfig
from peftlab.backends import BackendConfig
from peftlab.cli_core import (
    MODEL_COMMANDS,
    PROGRESS,
    add_store_commands,
    command_parsers,
    run_command,
    strict_json,
)
from peftlab.cloze import ClozeConfig
from peftlab.compare import GridConfig, GridRow, SweepConfig
from peftlab.config import add_arguments, counted, duration, flag_of, from_arguments
from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL
from peftlab.pet import PETConfig
from peftlab.rlhf.dpo import DPOConfig
from peftlab.rlhf.pipeline import PipelineConfig
from peftlab.rlhf.ppo import PPOConfig
from peftlab.rlhf.reward import RewardConfig
from peftlab.rlhf.sft import SFTConfig
from peftlab.search import TuneConfig
from peftlab.standard import StandardConfig
from peftlab.tuning import TrainSettings


def build_parser() -> argparse.ArgumentParser:
    """The command line. Every setting's option comes from its config field (`peftlab.config.add_arguments`):
    its name, type, choices, default and help are typed once, there."""
    parser, commands = command_parsers()
    cloze = commands.add_parser("cloze", help=MODEL_COMMANDS["cloze"])
    _add_model_and_task(cloze)
    _add_prompt(cloze, "; repeat to ensemble")
    add_arguments(cloze, ClozeConfig)
    cloze.add_argument("--json", action="store_true", help="print one JSON object")
    cloze.set_defaults(run=run_cloze)

    auto = commands.add_parser("autoprompt", help=MODEL_COMMANDS["autoprompt"])
    _add_model_and_task(auto)
    auto.add_argument(
        "--verbalizer",
        help="label words ('label: word1, word2' lines or JSON); omit to search label words automatically",
    )
    add_arguments(auto, AutoPromptConfig)
    auto.add_argument("--json", action="store_true", help="print one JSON object")
    auto.set_defaults(run=run_autoprompt)

    grid = _training_command(commands, "compare", GridConfig)
    grid.add_argument(
        "--learning-rate",
        action="append",
        default=[],
        metavar="METHOD=LR",
        help="override one method's learning rate; repeat for several",
    )
    grid.add_argument(
        "--save-adapters", metavar="DIR", help="save every trained method as DIR/<method>-K<k>-seed<s>.zip"
    )
    _add_outputs(grid)
    grid.set_defaults(run=run_compare, dtype="fp32")

    search = _training_command(commands, "tune", TuneConfig)
    search.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="SETTING=DISTRIBUTION:ARGS",
        help="a dimension of the search space, e.g. learning_rate=loguniform:1e-3:1e-1 or "
        "num_virtual_tokens=choice:5,20,50; repeat for a second setting",
    )
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(run=run_tune, dtype="fp32")

    sweep = _training_command(commands, "sweep", SweepConfig)
    _add_outputs(sweep)
    sweep.set_defaults(run=run_sweep_command, dtype="fp32")

    rlhf = commands.add_parser("rlhf", help=MODEL_COMMANDS["rlhf"])
    rlhf.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="embedded name, local folder or Hub id (a causal LM; default: %(default)s)",
    )
    rlhf.add_argument("--demonstrations", help="JSONL of {prompt, response} (default: the embedded movie-review data)")
    rlhf.add_argument(
        "--comparisons", help="JSONL of {prompt, chosen, rejected} or {prompt, ranked} instead of a labeler's rankings"
    )
    add_arguments(rlhf, PipelineConfig)  # --seed seeds every stage
    for prefix, stage in RLHF_STAGES.items():
        add_arguments(rlhf, stage, prefix=prefix, skip=("seed",), aliases=RLHF_ALIASES.get(prefix, ()))
    rlhf.add_argument("--samples", help="write the held-out responses of SFT and each route to this CSV file")
    rlhf.add_argument("--json", action="store_true", help="print one JSON object")
    rlhf.set_defaults(run=run_rlhf, dtype="fp32")

    standard = _training_command(commands, "standard", StandardConfig)
    standard.add_argument("--json", action="store_true", help="print the stored rows' summaries as one JSON list")
    standard.set_defaults(run=run_standard_command)

    pet = commands.add_parser("pet", help=MODEL_COMMANDS["pet"])
    _add_model_and_task(pet)
    pet.add_argument(
        "--pattern", action="append", help="a template with one {mask}; repeat for each (default: the task's own)"
    )
    pet.add_argument(
        "--verbalizer",
        action="append",
        help="label words ('label: word1, word2' lines or JSON), once for every pattern or once per pattern "
        "(default: the task's)",
    )
    pet.add_argument(
        "--unlabelled-file",
        metavar="PATH",
        help="CSV / JSONL of unlabelled texts (the task's text columns) to label instead of the training pool",
    )
    add_arguments(pet, PETConfig)
    add_arguments(pet, TrainSettings)
    add_arguments(pet, BackendConfig)
    pet.add_argument("--save", metavar="ZIP", help="save the last seed's distilled classifier as this zip")
    pet.add_argument("--json", action="store_true", help="print one JSON list: a record per seed")
    pet.set_defaults(run=run_pet, dtype="fp32")

    for command in (cloze, auto, grid, search, sweep, rlhf, standard, pet):
        command.add_argument(
            "--store",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="keep every result in the results store, $PEFTLAB_RESULTS (default: %(default)s)",
        )

    add_store_commands(commands)
    return parser


RLHF_STAGES = {"sft-": SFTConfig, "rm-": RewardConfig, "ppo-": PPOConfig, "dpo-": DPOConfig}
STAGE_FIELDS = ("sft", "reward", "ppo", "dpo")  # PipelineConfig's field of each of RLHF_STAGES, in order
RLHF_ALIASES = {"ppo-": ("beta", "adaptive_kl", "target_kl", "ptx_coef")}  # the PPO options people type most


ROUTE_STAGES = {"ppo": ("rm-", "ppo-"), "dpo": ("dpo-",)}  # the stages each route trains after SFT


def _untrained_stage_options(stages: dict, config) -> list[str]:
    """The options set away from their defaults for a stage the route does not train (`--dpo-steps 5` with
    `--route ppo` was taken without a word)."""
    trained = {"sft-"} | {prefix for route in config.routes() for prefix in ROUTE_STAGES[route]}
    return [flag for prefix, stage in stages.items() if prefix not in trained for flag in _changed_flags(stage, prefix)]


def _changed_flags(config, prefix: str = "", names: Sequence[str] | None = None) -> list[str]:
    """The flags of `config`'s settings (those `names`, or all but the seed) set away from their defaults."""
    default = type(config)()
    return [
        flag_of(item, prefix)
        for item in config.settings()
        if (item.name in names if names is not None else item.name != "seed")
        and getattr(config, item.name) != getattr(default, item.name)
    ]


def _training_command(commands, name: str, config: type) -> argparse.ArgumentParser:
    """A command that trains several runs: the model and task, the prompt, its own settings (`config`), the shared
    trainer's and where the runs go (`BackendConfig`)."""
    command = commands.add_parser(name, help=MODEL_COMMANDS[name])
    _add_model_and_task(command)
    _add_prompt(command)
    add_arguments(command, config)
    add_arguments(command, TrainSettings)
    add_arguments(command, BackendConfig)
    return command


def _add_prompt(command: argparse.ArgumentParser, repeat: str = "") -> None:
    command.add_argument(
        "--template", action="append", help=f"template with one {{mask}} (default: suggested for the task){repeat}"
    )
    command.add_argument(
        "--verbalizer",
        help="label words, one 'label: word1, word2' per line (or ';' between labels), or JSON such as "
        '{"negative": ["bad"], "positive": ["good"]} (default: suggested for the task)',
    )


def _add_outputs(command: argparse.ArgumentParser) -> None:
    command.add_argument("--out", help="write the results table to this CSV file")
    command.add_argument("--run-json", help="write the whole run (settings, rows, training curves) to this JSON file")
    command.add_argument("--json", action="store_true", help="print one JSON list of records")


def _add_model_and_task(command: argparse.ArgumentParser) -> None:
    # each says its default, as the settings of the configs do (`config.add_arguments`)
    default = " (default: %(default)s)"
    command.add_argument("--model", default=DEFAULT_MODEL, help="embedded name, local folder or Hub id" + default)
    command.add_argument(
        "--task",
        default="rt-sentiment",
        help="embedded task name, CSV/JSONL path or Hub dataset id (owner/name, or owner/name:config)" + default,
    )
    command.add_argument("--text-column", default="text", help="text column of a CSV/JSONL/Hub task" + default)
    command.add_argument("--label-column", default="label", help="label column of a CSV/JSONL/Hub task" + default)
    command.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],  # refused at once, not after the model stack has loaded
        # the training commands default to fp32: "auto: bf16 where the CPU supports it (default: fp32)" read as if
        # fp32 were what auto chose
        help="the model's number format; auto: bf16 where the hardware runs it (a GPU without bf16: fp16), else fp32"
        + default,
    )


def _progress_printer(label: str):
    def report(done: int, total: int) -> None:
        PROGRESS.show(f"{label}: {done}/{total}", last=done == total)

    return report


def run_cloze(args: argparse.Namespace) -> None:
    from peftlab.cloze import ClozeSetup, demonstrations_note, evaluate
    from peftlab.prompts import suggested_prompt
    from peftlab.store import scored_note

    config = from_arguments(ClozeConfig, args)
    task = _load_task(args)
    template, verbalizer = suggested_prompt(task.name, task.label_names, task.identity)
    settings = dict(
        templates=args.template or template,
        verbalizer=args.verbalizer or verbalizer,
        calibration=config.calibration,
        shots_in_context=config.shots_in_context,
        seed=config.seed,
    )
    ClozeSetup.build(task, **settings)  # bad templates and verbalizers fail before a model loads
    lm = _load_lm(args)
    result = evaluate(
        lm,
        task,
        **settings,
        limit=config.limit,
        batch_size=config.batch_size,
        split=task.cloze_split(config.shots_in_context),
        progress=_progress_printer("scoring"),
    )
    _store(args, [result.row])
    if args.json:
        print(strict_json(result.summary()), file=args.json_out)
        return
    print(f"accuracy {result.accuracy:.4f}  macro-F1 {result.macro_f1:.4f}  n {result.n}  {result.seconds:.1f} s")
    print(f"scored {scored_note(result.settings, task.left_out_words)}")
    if config.shots_in_context:
        print(demonstrations_note(result.settings))
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    width = max(len(name) for name in result.label_names)
    print("confusion (rows gold, columns predicted):")
    for name, row in zip(result.label_names, result.confusion):
        print(f"  {name:>{width}}  " + " ".join(f"{count:5d}" for count in row))


def run_autoprompt(args: argparse.Namespace) -> None:
    from peftlab.autoprompt import run_autoprompt as search
    from peftlab.prompts import Verbalizer

    config = from_arguments(AutoPromptConfig, args)
    task = _load_task(args)
    if args.verbalizer:
        Verbalizer.parse(args.verbalizer, task.label_names)  # fail before a model loads
    lm = _load_lm(args)

    def report(event) -> None:
        row = event.row()
        print(f"iter {row['iteration']:3d}  dev acc {row['dev acc']:.3f}  trigger {row['trigger']!r}", file=sys.stderr)

    result = search(lm, task, args.verbalizer, config, on_event=report)
    _store(args, result.rows)
    for note in result.warnings(config.train_size, task):
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(strict_json(result.summary()), file=args.json_out)
        return
    print(f"template: {result.template!r}")
    print(f"verbalizer: {json.dumps(result.verbalizer)}")
    print(
        f"test accuracy {result.test_accuracy:.4f} (without triggers {result.manual_test_accuracy:.4f}), "
        f"dev {result.dev_accuracy:.4f}, {result.seconds:.0f} s"
    )


def run_compare(args: argparse.Namespace) -> None:
    from peftlab.compare import run_grid, summarize, validate_grid
    from peftlab.methods import method_config, parse_learning_rates

    grid = from_arguments(GridConfig, args)
    rates = parse_learning_rates(args.learning_rate)
    unknown_rates = sorted(set(rates) - set(grid.methods))
    if unknown_rates:
        raise PeftlabError(f"--learning-rate names {', '.join(unknown_rates)}, which is not among --methods.")
    methods = [
        method_config(name, **({"learning_rate": rates[name]} if name in rates else {})) for name in grid.methods
    ]
    task, setup, settings = _training_inputs(args)
    validate_grid(task, methods, grid.seeds, grid.shots)
    backend = from_arguments(BackendConfig, args).build(save_dir=args.save_adapters)  # workers write the zips
    lm = _load_lm(args)
    results = _stream_training(
        args,
        lm,
        task,
        setup,
        methods,
        settings,
        run_grid(lm, task, setup, methods, grid.seeds, grid.shots, settings, grid.test_limit, backend=backend),
        grid.test_limit,
    )
    if not args.json:
        print(summarize(results).to_string(index=False))


def run_sweep_command(args: argparse.Namespace) -> None:
    from peftlab.compare import parse_sweep_values, run_sweep, summarize, sweep_configs, validate_grid

    sweep = from_arguments(SweepConfig, args)
    values = parse_sweep_values(sweep.method, sweep.varied, sweep.values)
    configs = sweep_configs(sweep.method, sweep.varied, values)
    task, setup, settings = _training_inputs(args)
    validate_grid(task, configs, sweep.seeds, [sweep.shots])
    backend = from_arguments(BackendConfig, args).build()
    lm = _load_lm(args)
    results = _stream_training(
        args,
        lm,
        task,
        setup,
        configs,
        settings,
        run_sweep(
            lm,
            task,
            setup,
            sweep.method,
            sweep.varied,
            values,
            sweep.seeds,
            sweep.shots,
            settings,
            sweep.test_limit,
            backend,
        ),
        sweep.test_limit,
    )
    if not args.json:
        trained = results[results["method"] != "zero-shot"]
        print(summarize(trained, by=[sweep.varied]).to_string(index=False))


def run_tune(args: argparse.Namespace) -> None:
    from peftlab.search import SearchResult, parse_search, run_search

    config = from_arguments(TuneConfig, args)
    dimensions = parse_search(config.method, args.search)
    backend_config = from_arguments(BackendConfig, args)
    task, setup, settings = _training_inputs(args)
    task.few_shot(config.shots, config.seeds[0])  # a K the smallest class cannot supply fails before Ray starts
    backend = backend_config.build()
    lm = _load_lm(args)
    for item in run_search(lm, task, setup, config, dimensions, settings, backend_config.address, backend):
        if isinstance(item, SearchResult):
            result = item
        elif isinstance(item, GridRow):
            if item.result is not None:  # a run that failed on Ray has no scores to keep
                _store(args, [item.result])  # as each ends: its scores were printed, never kept
            if item.values["seed"] is not None:
                row = item.values
                print(
                    f"{row['configuration']:>8} seed={row['seed']}: test accuracy {row['test_accuracy']:.4f}",
                    file=sys.stderr,
                )
    summary = result.summary()
    if args.json:
        print(strict_json(summary), file=args.json_out)
        return
    print(f"best {config.method} settings on dev: {json.dumps(result.best['settings'])}")
    print(
        f"test accuracy over seeds {', '.join(map(str, config.seeds))}: tuned {summary['tuned_test_accuracy_mean']:.4f}"
        f", defaults {summary['default_test_accuracy_mean']:.4f} ({len(result.trials)} trials, {result.seconds:.0f} s)"
    )


def _training_inputs(args: argparse.Namespace):
    """(task, cloze setup, trainer settings) from the shared training options, validated without a model.

    Raises:
        PeftlabError: more than one --template: every method trained on the first, while the zero-shot line
            ensembled them all and every stored row named them all.
    """
    from peftlab.cloze import ClozeSetup
    from peftlab.prompts import suggested_prompt

    if len(args.template or ()) > 1:
        raise PeftlabError(
            f"Training reads one template, and {len(args.template)} were given; give --template once (the cloze "
            "command ensembles several)."
        )
    settings = from_arguments(TrainSettings, args)
    task = _load_task(args)
    template, verbalizer = suggested_prompt(task.name, task.label_names, task.identity)
    setup = ClozeSetup.build(task, args.template or template, args.verbalizer or verbalizer)
    return task, setup, settings


def _load_task(args: argparse.Namespace):
    """The --task: a data file, an embedded task or a Hub id. An existing file of another kind, or a folder, is told
    as such: "notes.txt" was looked up on the Hub and said to be unreachable there. (Not in `load_task`: on a public
    Space that would tell a visitor which paths exist on the server.)"""
    from peftlab.tasks import EMBEDDED_TASKS, load_task
    from peftlab.uploads import DATA_SUFFIXES, JSON_SUFFIXES, TABLE_SUFFIXES

    name = args.task.strip()
    path = Path(name).expanduser()
    *others, last = (*TABLE_SUFFIXES, *JSON_SUFFIXES)
    kinds = f"{', '.join(others)} or {last}"
    if name and name not in EMBEDDED_TASKS:
        if path.is_file() and not name.lower().endswith(DATA_SUFFIXES):
            raise PeftlabError(f"--task {name!r} is a file, but data is read from {kinds} files; save it as one.")
        if path.is_dir():  # looked up on the Hub too, and "not found" there
            raise PeftlabError(f"--task {name!r} is a folder, but data is read from {kinds} files; give one of them.")
    task = load_task(name, text_column=args.text_column, label_column=args.label_column)
    for sentence in task.label_warnings():
        print(f"warning: {sentence}", file=sys.stderr)
    return task


def _load_lm(args: argparse.Namespace):
    """The model of `--model` in the `--dtype` asked, with a warning where this CPU only emulates that dtype."""
    from peftlab.models import emulated_dtype_note, load_lm

    lm = load_lm(args.model, dtype=args.dtype)
    if note := emulated_dtype_note(lm):
        print(f"warning: {note}", file=sys.stderr)
    return lm


def _stream_training(args, lm, task, setup, methods, settings, items, test_limit):
    """Print progress of a grid or sweep to stderr, write the requested files, and return the results table."""
    from dataclasses import asdict

    from peftlab.backends import adapter_name
    from peftlab.compare import grid_notes, results_frame, run_record
    from peftlab.saving import zip_trained

    rows, curves, scored = [], [], []
    varied_setting = getattr(args, "varied", None)  # a sweep's --setting
    save_dir = Path(args.save_adapters) if getattr(args, "save_adapters", None) is not None else None
    if save_dir:
        save_dir.mkdir(parents=True, exist_ok=True)
    finished = False
    try:
        for item in items:
            if isinstance(item, GridRow):
                rows.append(item.values)
                if item.result is not None:  # a run that failed on Ray has no scores to keep
                    _store(args, [item.result])
                    scored.append(item.result)
                row = item.values
                if item.trained is not None and (warning := item.trained.loss_warning()):
                    print(f"warning: {warning}", file=sys.stderr)
                failed = row["status"].startswith("failed")
                outcome = row["status"] if failed else f"test accuracy {row['test_accuracy']:.4f}"
                if item.trained is not None and save_dir:
                    # said: a rerun into the same folder replaces its zips of the same method, K and seed
                    saved = zip_trained(_as_kept(args, item.trained), save_dir / adapter_name(row))
                    outcome += f", saved as {saved}"
                # a sweep's runs differ by the varied setting, which the line names (zero-shot has none)
                varied = f" {varied_setting}={row[varied_setting]}" if row.get(varied_setting) is not None else ""
                # zero-shot trains on nothing: "K=0 seed=None" named settings it has not
                shots = f" K={row['K']} seed={row['seed']}" if row["seed"] is not None else ""
                print(f"{row['method']:>14}{varied}{shots}: {outcome}", file=sys.stderr)
            else:
                curves.append(asdict(item))
                if item.step % args.eval_every == 0:
                    print(
                        f"{item.method:>14} seed={item.seed} step {item.step}: loss {item.train_loss:.3f}, "
                        f"dev accuracy {item.dev_accuracy:.3f}, dev log-likelihood {item.dev_log_likelihood:.3f}",
                        file=sys.stderr,
                    )
        finished = True
    except KeyboardInterrupt:  # said, as a stop after some rows says what it wrote (below)
        if not rows and (args.out or args.run_json):
            PROGRESS.end()
            print("Nothing was written: no run had finished.", file=sys.stderr)
        raise
    finally:  # a stop (Ctrl-C) or a failure keeps the rows that finished in the files asked for
        results = results_frame(rows)
        # a failure before any row leaves the files as they were: an empty table replaced a results file
        if finished or rows:
            if args.out:
                results.to_csv(args.out, index=False)
            if args.run_json:
                Path(args.run_json).write_text(
                    run_record(lm, task, setup, methods, settings, results, curves, test_limit), encoding="utf-8"
                )
        if not finished and rows and (args.out or args.run_json):
            PROGRESS.end()
            written = " and ".join(path for path in (args.out, args.run_json) if path)
            # "the 2 rows finished" counted the zero-shot row as a run; where else the runs are was not said
            runs = sum(row["method"] != "zero-shot" for row in rows)
            zero_shot = ["the zero-shot row"] if runs < len(rows) else []
            what = " and ".join([*zero_shot, *([counted(runs, "run")] if runs or not zero_shot else [])])
            stored = "; the results store has them too" if args.store else ""
            print(f"Written to {written}: {what} finished before it ended{stored}.", file=sys.stderr)
    for note in grid_notes(lm, task, setup, methods, scored, test_limit):
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(results.to_json(orient="records"), file=args.json_out)
    return results


def run_rlhf(args: argparse.Namespace) -> None:
    from peftlab.rlhf.pipeline import RLHFData, run_pipeline
    from peftlab.rlhf.reward import cut_ties_note

    # the pipeline's own settings first: --seed -1 was refused as "--sft-seed", a flag there is not
    from_arguments(PipelineConfig, args, **{name: stage() for name, stage in zip(STAGE_FIELDS, RLHF_STAGES.values())})
    stages = {prefix: from_arguments(stage, args, prefix, seed=args.seed) for prefix, stage in RLHF_STAGES.items()}
    config = from_arguments(PipelineConfig, args, **dict(zip(STAGE_FIELDS, stages.values())))
    if args.comparisons and not args.demonstrations:
        raise PeftlabError("--comparisons needs --demonstrations too (SFT learns from them first).")
    for option in _untrained_stage_options(stages, config):
        print(
            f"warning: {option} has no effect with --route {config.route}: that route trains no such stage.",
            file=sys.stderr,
        )
    # they size the simulated labeler's rankings, and were taken without a word
    for option in _changed_flags(config, names=("rm_pairs", "rm_heldout_prompts", "k")) if args.comparisons else []:
        print(
            f"warning: {option} has no effect with --comparisons: the comparisons and their held-out share come "
            "from your file.",
            file=sys.stderr,
        )
    data = (
        RLHFData.uploaded(args.demonstrations, args.comparisons, seed=args.seed, reward_model="ppo" in config.routes())
        if args.demonstrations
        else RLHFData.embedded(seed=args.seed)
    )
    lm = _load_lm(args)
    if data.comparisons is not None:  # said before any training
        if note := cut_ties_note(lm.tokenizer, data.comparisons):
            print(f"warning: {note}", file=sys.stderr)

    steps = {"sft": config.sft.steps, "reward": config.reward.steps, "ppo": config.ppo.steps, "dpo": config.dpo.steps}
    sampling = {"comparisons": "for the labeler to rank", "evaluation": "on held-out prompts, to compare the policies"}
    shown = [None]  # the stage of the progress line

    def report(stage: str, event) -> None:
        # every step rewrites one line, so no stage is silent for minutes (SFT's first line came at step 10, the
        # evaluation had none); the lines that measure something stay (`_rlhf_step`)
        if stage != shown[0]:
            PROGRESS.end()
            shown[0] = stage
        if stage in sampling:
            done, total = event.done, event.total
            PROGRESS.show(f"sampling responses {sampling[stage]}: {done}/{total}", last=done == total)
        elif hasattr(event, "step"):
            said, kept = _rlhf_step(stage, event)
            total = steps[stage]
            name = {"sft": "SFT", "reward": "reward model"}.get(stage, stage.upper())
            PROGRESS.show(f"{name} step {event.step}/{total}: {said}", last=kept or event.step == total)

    result = run_pipeline(lm, data, config, on_event=report)
    PROGRESS.end()
    if result.reward_check is not None and (note := result.reward_check.chance_note()):
        print(f"warning: {note}", file=sys.stderr)
    _store(args, result.rows)
    if args.samples:
        result.comparison.table.to_csv(args.samples, index=False)
    kl_note = result.comparison.kl_note()
    if args.json:
        if kl_note:  # a negative KL in the JSON came with no word of why
            print(f"note: {kl_note}", file=sys.stderr)
        print(strict_json(result.summary), file=args.json_out)
        return
    summary = result.summary
    if "rm_heldout_accuracy" in summary:
        print(
            f"reward model held-out pair accuracy {summary['rm_heldout_accuracy']:.3f} "
            f"({summary['rm_heldout_pairs']} pairs)"
        )
    held_out = counted(summary["prompts"], "held-out prompt")
    print(f"{summary['labeler']} score on {held_out}: SFT {summary['sft_mean_score']:+.3f}")
    for route in config.routes():
        print(
            f"  {route.upper()} {summary[f'{route}_mean_score']:+.3f}, KL to the SFT model "
            f"{summary[f'{route}_mean_kl']:.2f} nats per response, trained in {summary[f'{route}_seconds']:.0f} s"
        )
    if kl_note:
        print(f"  {kl_note}")
    # "511 s in all" was read against a wall clock of 823 s: loading the model comes before the stages
    print(f"{summary['seconds']:.0f} s from SFT to the evaluation (loading the model not counted)")


def _rlhf_step(stage: str, event) -> tuple[str, bool]:
    """What the progress line of an RLHF stage's step says, and whether it stays: every 10th step of SFT and DPO, an
    SFT step with samples, a reward model's evaluation step, every PPO step (each is a batch sampled and scored)."""
    if stage == "sft":
        return f"loss {event.loss:.3f}", event.step % 10 == 0 or bool(event.samples)
    if stage == "reward":
        evaluated = event.heldout_accuracy == event.heldout_accuracy  # evaluation steps (not NaN)
        pairs = f", held-out pair accuracy {event.heldout_accuracy:.3f}" if evaluated else ""
        return f"loss {event.loss:.3f}{pairs}", evaluated
    if stage == "ppo":
        return (
            f"reward {event.mean_reward:+.3f}, labeler {event.mean_labeler_score:+.3f}, KL {event.mean_kl:.2f}, "
            f"beta {event.beta:.3f}"
        ), True
    return f"loss {event.loss:.3f}, implicit reward margin {event.reward_margin:+.3f}", event.step % 10 == 0


def run_standard_command(args: argparse.Namespace) -> None:
    from peftlab.models import load_lm
    from peftlab.report import compare, display_table
    from peftlab.standard import StandardEvent, check_sizes, estimate, run_standard
    from peftlab.store import ResultRow

    config = from_arguments(StandardConfig, args)
    task, setup, settings = _training_inputs(args)
    check_sizes(task, config)  # before the estimate's measurement, whose own K was the one refused
    template, verbalizer = setup.prompts[0].template.text, setup.prompts[0].verbalizer.to_json()
    scoring_lm, training_lm = _load_lm(args), load_lm(args.model, dtype="fp32")
    costs = estimate(scoring_lm, training_lm, task, template, verbalizer, config, settings)
    # "estimated 0 minutes: zero-shot · mean 0.1" gave a unit once and rounded a 32-second run down to nothing
    each = ", ".join(f"{name} {duration(seconds)}" for name, seconds in costs.items())
    print(f"estimated {duration(sum(costs.values()))} in all: {each}", file=sys.stderr)
    rows, backend = [], from_arguments(BackendConfig, args).build()
    for item in run_standard(scoring_lm, training_lm, task, template, verbalizer, config, settings, backend=backend):
        if isinstance(item, GridRow):  # a run that failed on Ray; the others go on
            print(f"  {item.values['method']} seed {item.values['seed']}: {item.values['status']}", file=sys.stderr)
        elif isinstance(item, StandardEvent):
            print(
                f"run {item.step}/{item.runs}: {item.method}" + (f" seed {item.seed}" if item.seed is not None else ""),
                file=sys.stderr,
            )
        elif isinstance(item, ResultRow):
            rows.append(item)
            _store(args, [item])
            print(
                f"  accuracy {item.accuracy:.4f} ({item.train_seconds + item.scoring_seconds:.0f} s)", file=sys.stderr
            )
    if args.json:
        print(
            strict_json(
                [
                    {
                        k: getattr(r, k)
                        for k in (
                            "method",
                            "k",
                            "seed",
                            "accuracy",
                            "macro_f1",
                            "train_seconds",
                            "scoring_seconds",
                            "trainable_params",
                        )
                    }
                    for r in rows
                ]
            ),
            file=args.json_out,
        )
        return
    if not rows:  # every run failed on the backend, each said above
        raise PeftlabError("No run of the standard comparison finished; the lines above say why each failed.")
    print(display_table(compare(rows)[0].table).to_string(index=False))


def run_pet(args: argparse.Namespace) -> None:
    from peftlab.pet import default_patterns, pattern_prompts, pet_run, read_unlabelled
    from peftlab.saving import zip_trained

    config, settings = from_arguments(PETConfig, args), from_arguments(TrainSettings, args)
    task = _load_task(args)
    templates, verbalizers = args.pattern, args.verbalizer
    if not templates or not verbalizers:  # the task's own fill in what was not given
        try:
            own_templates, own_verbalizer = default_patterns(task.name)
        except PeftlabError:
            if not templates:
                raise
            raise PeftlabError("Give a --verbalizer with your patterns (one for all, or one per pattern).") from None
        templates, verbalizers = templates or own_templates, verbalizers or [own_verbalizer]
    prompts = pattern_prompts(task, templates, verbalizers)
    unlabelled = read_unlabelled(args.unlabelled_file, prompts) if args.unlabelled_file else None
    lm = _load_lm(args)  # fp32 unless --dtype says otherwise, as a grid's
    results = []
    backend = from_arguments(BackendConfig, args).build()
    try:
        items = pet_run(lm, task, prompts, config, settings, unlabelled=unlabelled, backend=backend)
        _pet_items(args, items, results, task.label_names, config.distil_steps)
    finally:  # Ctrl-C or out of memory in a later seed keeps the last finished seed's classifier, as its rows are kept
        if args.save and results:
            zip_trained(_as_kept(args, results[-1].classifier), args.save)
    if args.json:
        print(strict_json([r.summary() for r in results]), file=args.json_out)
        return
    for r in results:
        ipet = f", iPET {r.ipet_distilled_accuracy:.4f}" if r.ipet_distilled_accuracy is not None else ""
        print(
            f"seed {r.seed}: patterns {', '.join(f'{a:.4f}' for a in r.pattern_accuracies)}; "
            f"ensemble {r.ensemble_accuracy:.4f}, PET {r.distilled_accuracy:.4f}{ipet} ({r.seconds:.0f} s)"
        )


def _pet_items(args: argparse.Namespace, items, results: list, label_names: list[str], distil_steps: int) -> None:
    """PET's progress on stderr as `items` (`pet_run`'s) come; each finished seed stored, warned of and put in
    `results`."""
    from peftlab.pet import PatternScoring, PETEvent

    for item in items:
        if isinstance(item, PETEvent):
            # every step rewrites one line (a pattern's first 10 steps were silent minutes); evaluations stay
            evaluated = item.dev_accuracy == item.dev_accuracy  # not NaN
            total = item.steps
            dev = f", dev accuracy {item.dev_accuracy:.3f}" if evaluated else ""
            PROGRESS.show(
                f"seed {item.seed} generation {item.generation} {item.model} step {item.step}/{total}: "
                f"loss {item.train_loss:.3f}{dev}",
                last=evaluated or item.step == total,
            )
            continue
        PROGRESS.end()  # a model stopped early by its patience leaves its line open
        if isinstance(item, PatternScoring):
            done = f"test accuracy {item.test_accuracy:.3f}" if item.test_accuracy is not None else "scoring"
            print(f"seed {item.seed} generation {item.generation} {item.model}: {done}", file=sys.stderr)
            continue
        results.append(item)
        _store(args, item.rows)
        for note in item.warnings(label_names, distil_steps):
            print(f"warning: {note}", file=sys.stderr)


def _as_kept(args: argparse.Namespace, trained):
    """`trained` as it is saved: with --no-store its test result has no row id (its card named a stored row that the
    store did not have)."""
    if args.store or trained.scored is None:
        return trained
    return dataclasses.replace(trained, scored=dataclasses.replace(trained.scored, result_id=""))


def _store(args: argparse.Namespace, rows) -> None:
    """Keep finished results in the results store, unless --no-store."""
    from peftlab.store import ResultStore

    if args.store:
        ResultStore().add(rows)


def main(argv: list[str] | None = None) -> int:
    """Run the whole command line (`run_command`). `python -m peftlab` runs the store's commands (`LIGHT_COMMANDS`)
    from `cli_core` instead, without this module's imports of the model stack."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # weight-loading bars are noise on a command line
    return run_command(build_parser(), sys.argv[1:] if argv is None else list(argv))
