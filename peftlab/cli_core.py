"""The command line without the model stack: its parser class, running a command with one-line errors, and the
commands that read the results store alone (`results`, `report`).

`python -m peftlab results ...` and `report` are built and run from here without importing torch and
transformers (`peftlab.__main__`): listing the store took 11 s on a 2-core CPU, nearly all of it loading them.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import math
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

from peftlab.config import counted
from peftlab.errors import PeftlabError, out_of_memory, out_of_memory_sentence

LIGHT_COMMANDS = ("results", "report")
# The commands that load a model, in the order `--help` lists them, each with its one-line summary: `python -m peftlab
# --help` (and a bare `python -m peftlab`) print from here without importing torch and transformers (12 s on a 2-core
# CPU); `peftlab.cli.build_parser` gives each command its options under the same summary.
MODEL_COMMANDS = {
    "cloze": "zero-shot / in-context cloze evaluation with a template and verbalizer",
    "autoprompt": "AutoPrompt: gradient-guided trigger search (and label-word search)",
    "compare": "train few-shot methods over seeds and compare them on one table",
    "tune": "search a method's learning rate (and one more setting) with Ray Tune on dev; the winner on test",
    "sweep": "train one method at several values of one setting (e.g. prompt length)",
    "rlhf": "SFT -> reward model -> PPO (InstructGPT-style) and/or DPO, then each against SFT on held-out prompts",
    "standard": "the standard comparison: every method at K per class over the seeds, stored as it goes",
    "pet": "PET / iPET: pattern models label unlabelled text, a classifier learns their soft labels",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line and exit code 2, like every other bad input."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse reads "-1e-4" as an option (its negative numbers have no exponent), so `--dpo-learning-rate -1e-4`
        # was "expected one argument" rather than the option's own sentence on a value below 0
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):  # noqa: D401 - argparse's signature
        raise PeftlabError(message[0].upper() + message[1:] + f" (see `{self.prog} --help`).")

    def parse_args(self, args=None, namespace=None):
        """argparse's, but an option the command lacks is told by the command, with the option it likely meant:
        `cloze --test-limit 20` pointed to the whole command line's help, which lists no option of cloze."""
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            command = getattr(parsed, "command_parser", self)
            options = [option for action in command._actions for option in action.option_strings]
            meant = [close[0] for given in extra if (close := difflib.get_close_matches(given, options, 1))]
            guess = f"; did you mean {' or '.join(meant)}?" if meant else ""
            command.error(f"unrecognized arguments: {' '.join(extra)}{guess}")
        return parsed


def light_parser() -> argparse.ArgumentParser:
    """The command line with LIGHT_COMMANDS alone, and MODEL_COMMANDS named without their options: what `--help`
    lists and what runs without torch (`peftlab.cli.build_parser` has every command whole)."""
    parser, commands = command_parsers()
    for name, summary in MODEL_COMMANDS.items():
        commands.add_parser(name, help=summary)
    add_store_commands(commands)
    return parser


def command_parsers() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The top parser (with --debug, also accepted after a sub-command) and its sub-commands to add to."""
    parser = Parser(prog="python -m peftlab", description="peftlab: prompt-based learning on pretrained transformers")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")
    # Accepted after the sub-command too; SUPPRESS keeps a sub-command from resetting it to False.
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_parser = functools.partial(commands.add_parser, parents=[debug])

    def add_command(*args, **kwargs) -> argparse.ArgumentParser:
        command = add_parser(*args, **kwargs)
        command.set_defaults(command_parser=command)  # the command that tells an option it lacks (`Parser.parse_args`)
        return command

    commands.add_parser = add_command
    return parser, commands


def add_store_commands(commands) -> None:
    """`results` (list, show, export, import, delete) and `report`."""
    results = commands.add_parser("results", help="the results store: list, show, export, import or delete rows")
    actions = results.add_subparsers(dest="action", required=True, parser_class=Parser)
    listing = actions.add_parser("list", help="one line per stored result")
    show = actions.add_parser("show", help="one result in full")
    show.add_argument("id", help="a result's id (or a unique start of it)")
    export = actions.add_parser("export", help="write results to a JSON Lines or CSV file")
    export.add_argument("--out", required=True, help="rows.jsonl or rows.csv")
    importing = actions.add_parser("import", help="add the results of an exported file")
    importing.add_argument("file", help="an exported rows.jsonl or rows.csv")
    delete = actions.add_parser("delete", help="delete results by id")
    delete.add_argument("ids", nargs="+", help="ids (or unique starts of them, 4 characters or more)")
    for action in actions.choices.values():  # it tells an option it lacks, not `results`, whose help lists none
        action.set_defaults(command_parser=action)
    for action in (listing, export):
        action.add_argument("--task", help="only this task's results")
        action.add_argument("--model", help="only this model's results")
        action.add_argument("--method", help="only this method's results")
    for action in (listing, show):
        action.add_argument("--json", action="store_true", help="print JSON")
    results.set_defaults(run=run_results)

    report = commands.add_parser("report", help="one page comparing every stored result of a task and model")
    report.add_argument(
        "--task",
        required=True,
        help="the task's name as stored (e.g. rt-sentiment; an RLHF run's is 'rlhf' and its labeler: 'rlhf "
        "vader-positive')",
    )
    report.add_argument("--model", required=True, help="the model's name as stored (e.g. smollm2-135m)")
    report.add_argument("--out", default="report.html", help="the page to write (default: %(default)s)")
    report.set_defaults(run=run_report)


def run_results(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from peftlab.store import ResultStore

    store = ResultStore(create=args.action == "import")  # listing an empty store wrote one
    where = {k: getattr(args, k, None) for k in ("task", "model", "method")}
    if args.action == "list":
        if args.json:
            print(store.frame(**where).to_json(orient="records"), file=args.json_out)
        elif not len(listed := store.listing(**where)):
            asked = ", ".join(f"{name} {value!r}" for name, value in where.items() if value)
            stored = len(store.listing())
            if asked and stored:  # "No results stored" under a filter read as an empty store that held 14 rows
                said = (
                    f"No results of {asked}{store.guess(**where)} ({counted(stored, 'result')} stored in {store.path})."
                )
            elif visitors := store.others_rows():  # a public Space's store, copied out: "No results stored" of its rows
                said = (
                    f"No shared results stored in {store.path}; it holds {counted(visitors, 'row')} of a public "
                    "Space's visitors, each shown in that visitor's own session of the app."
                )
            else:
                said = f"No results stored in {store.path}."
            print(said)
        else:
            print(listed.astype(object).fillna("").to_string(index=False))  # a zero-shot row has no K and no seed
    elif args.action == "show":
        row = asdict(store.get(args.id))
        if args.json:
            print(strict_json(row, indent=1, default=str), file=args.json_out)
        else:
            print(
                "\n".join(
                    f"{key}: {json.dumps(value, default=str) if key in ('predictions', 'gold') else value}"
                    for key, value in row.items()
                )
            )
    elif args.action == "export":
        print(f"{counted(store.export(args.out, **where), 'result')} written to {args.out}.")
    elif args.action == "import":
        print(f"{store.import_(args.file).sentence()} (store: {store.path})")
    else:
        print(f"{counted(store.delete(args.ids), 'result')} deleted.")


def run_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from peftlab.report import compare, report_html, shown
    from peftlab.store import ResultStore

    store = ResultStore(create=False)
    rows = store.rows(task=args.task, model=args.model)
    if not rows:
        raise PeftlabError(
            f"No stored results of {args.task!r} on {args.model!r}{store.guess(task=args.task, model=args.model)}; "
            "`results list` shows what is stored."
        )
    left_out = len(rows) - sum(map(shown, rows))  # "Report of 1 result written" of a page that showed none
    if left_out == len(rows):
        raise PeftlabError(
            f"No stored result of {args.task!r} on {args.model!r} has per-text predictions, which a comparison "
            f"pairs ({counted(len(rows), 'row')} imported without them); nothing was written."
        )
    Path(args.out).write_text(report_html(compare(rows), rows), encoding="utf-8")
    without = f" ({counted(left_out, 'result')} without per-text predictions left out)" if left_out else ""
    print(f"Report of {counted(len(rows) - left_out, 'result')} written to {args.out}{without}.")


def run_command(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse `argv` with `parser` and run its command: bad input is one `error:` line and exit code 2. With
    `--json`, stdout carries the command's JSON alone (`args.json_out`): whatever else is printed there meanwhile
    goes to stderr (Ray's raylet prints "A worker died ..." on stdout, which broke a reader of the JSON)."""
    try:
        args = parser.parse_args(argv)
        check_outputs(args)
        if getattr(args, "store", False):  # a store that cannot be opened is told before the run, not after it
            from peftlab.store import ResultStore

            ResultStore()
        if getattr(args, "json", False):
            args.json_out = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                args.run(args)
        else:
            args.run(args)
    except PeftlabError as exc:
        PROGRESS.end()
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        PROGRESS.end()
        print("error: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout's reader left (`| head`): nothing is wrong; what is left to print goes nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # the rest, told apart here (out of memory, a path the user gave, a fault)
        return _failed(exc, argv)
    return 0


def _failed(exc: Exception, argv: list[str]) -> int:
    """Exit code and `error:` line of what is neither bad input nor Ctrl-C: memory run out (exit 1, with what makes
    the job smaller: it was told as a bug); a path the user gave that cannot be read or written (no such file, no
    permission; exit 2); else a fault (`_unexpected`). A missing file of the installation's own (a model's weights in
    site-packages) was told as the user's mistake, as every OSError naming a file was."""
    PROGRESS.end()
    if where := out_of_memory(exc):
        print(f"error: {out_of_memory_sentence(where)}", file=sys.stderr)
        return 1
    if isinstance(exc, OSError) and exc.filename is not None and _given(exc.filename, argv):
        print(f"error: {str(exc.filename)!r}: {(exc.strerror or str(exc)).lower()}.", file=sys.stderr)
        return 2
    return _unexpected(exc, argv)


def _given(filename, argv: list[str]) -> bool:
    """Whether `filename` is a path among the command line's words (`--out x.jsonl`, `--task=~/x.csv`), lies under
    one (a file of a --save-adapters folder) or above one (a folder made for it), whichever way either is spelt
    (`..`, `~`, a link)."""
    named = _real(os.fsdecode(filename))
    for word in argv:
        for path in {word, word.partition("=")[2]} - {""}:
            given = _real(path)
            if named == given or given in named.parents or named in given.parents:
                return True
    return False


def _real(path: str) -> Path:
    return Path(os.path.realpath(os.path.expanduser(path)))


def strict_json(value, **options) -> str:
    """`value` as JSON that strict readers (jq, JavaScript's JSON.parse) take: NaN and infinities as null, where
    json.dumps writes a bare NaN (`results show --json` of a row with a NaN setting was refused by them)."""
    return json.dumps(_finite(value), allow_nan=False, **options)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _one_line(message: str) -> str:
    """The message with its line breaks written as escapes: a value it quotes (a column named 'tëxt\\nx') broke the
    `error:` line in two."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


# the options naming a file a command writes; a path it cannot write was told after the whole run (the table lost)
OUTPUT_FILES = ("out", "run_json", "samples", "save")


def check_outputs(args: argparse.Namespace) -> None:
    """Every file `args` names to write can be written, checked before any work: a file opened for appending (and
    removed again when it was not there), so a folder that is missing or cannot be written is told at once.

    Raises:
        PeftlabError: the option, its path and why, in one sentence.
    """
    from peftlab.store import store_path

    for name in OUTPUT_FILES:
        value, option = getattr(args, name, None), "--" + name.replace("_", "-")
        if not isinstance(value, str):
            continue
        if not value.strip():  # written to Path(""), the working folder: "'.': is a directory."
            raise PeftlabError(f"{option} is empty; give the path of a file to write.")
        path = Path(value)
        if path.resolve() == store_path().resolve():  # a report written over it took every stored result with it
            raise PeftlabError(f"{option} {value!r} is the results store itself; give another path.")
        if path.parent.exists() and not path.parent.is_dir():  # "/etc/hostname/y.csv" was told as a missing folder
            raise PeftlabError(f"{option} {value!r}: {str(path.parent)!r} is a file, not a folder; give another path.")
        if not path.parent.is_dir():
            raise PeftlabError(f"{option} {value!r}: the folder {str(path.parent)!r} does not exist; create it first.")
        if path.is_dir():
            raise PeftlabError(f"{option} {value!r} is a folder; give the name of a file in it.")
        existed = path.exists()
        try:
            with open(path, "a"):
                pass
        except OSError as exc:
            raise _unwritable(option, value, exc) from None
        if not existed:
            path.unlink()
    folder = getattr(args, "save_adapters", None)
    if isinstance(folder, str) and not folder.strip():  # it saved nothing, without a word
        raise PeftlabError("--save-adapters is empty; give the folder to save the trained methods in.")
    if folder:  # made when the first method is saved, after its training
        _check_folder(Path(folder), "--save-adapters")


def _check_folder(folder: Path, option: str) -> None:
    """A folder a command will make (with its parents) and write files into: its nearest existing part is a folder
    where a file can be written (a file named like the folder was told after the first run had trained)."""
    existing = next(part for part in (folder, *folder.parents) if part.exists())
    if not existing.is_dir():
        raise PeftlabError(f"{option} {str(folder)!r}: {str(existing)!r} is a file, not a folder; give another path.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise _unwritable(option, str(folder), exc) from None


def _unwritable(option: str, value: str, exc: OSError) -> PeftlabError:
    return PeftlabError(
        f"{option} {value!r} cannot be written ({(exc.strerror or str(exc)).lower()}); give another path."
    )


class _ProgressLine:
    """The stderr line progress rewrites in place ("\rscoring: 720/1000"): ended before anything else is printed
    there, or "error: interrupted." was glued to it."""

    open = False
    width = 0  # of the open line: a shorter text rewriting it is padded over its end

    def show(self, text: str, last: bool = False) -> None:
        padded = text.ljust(self.width) if self.open else text
        print(f"\r{padded}", end="\n" if last else "", file=sys.stderr, flush=True)
        self.open, self.width = not last, len(text)

    def end(self) -> None:
        if self.open:
            print(file=sys.stderr, flush=True)
            self.open = False


PROGRESS = _ProgressLine()


def _unexpected(exc: Exception, argv: list[str]) -> int:
    """A bug or a broken environment: one line, the traceback only when asked; exit code 1."""
    PROGRESS.end()
    if "--debug" in argv:
        traceback.print_exc()
    reason = (str(exc).strip().splitlines() or [""])[0]
    print(
        f"error: {type(exc).__name__}{': ' + reason if reason else ''} "
        "(this is a bug or a broken installation; run again with --debug to see the traceback).",
        file=sys.stderr,
    )
    return 1
