"""The settings search: its space parser refuses bad specs in one sentence; a tiny search on a local Ray."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import ray

from peftlab.cli import main
from peftlab.cloze import ClozeSetup
from peftlab.compare import GridRow
from peftlab.errors import PeftlabError
from peftlab.models import load_lm
from peftlab.search import Dimension, SearchResult, TuneConfig, parse_search, run_search
from peftlab.tuning import TrainSettings
from tests.test_compare import TEMPLATE, VERBALIZER, easy_task


def test_a_search_space_is_read_from_its_specs():
    assert parse_search("prompt-tuning", ["learning_rate=loguniform:1e-3:1e-1", "num_virtual_tokens=choice:5,20"]) == [
        Dimension("learning_rate", "loguniform", (1e-3, 1e-1)),
        Dimension("num_virtual_tokens", "choice", (5, 20)),
    ]
    assert parse_search("lora", ["r=randint:2:33"])[0].spec() == "r=randint:2:33"


@pytest.mark.parametrize(
    ("method", "specs", "message"),
    [
        ("prompt-tuning", [], "Give a search space, e.g. --search learning_rate=loguniform:1e-3:1e-1."),
        (
            "prompt-tuning",
            ["learning_rate"],
            "Write a search as setting=distribution:arguments, e.g. "
            "learning_rate=loguniform:1e-3:1e-1, not 'learning_rate'.",
        ),
        ("lora", ["rank=randint:2:8"], "'rank' is not a setting of lora to search; it has learning_rate, r, alpha."),
        (  # a text setting: "The choice arguments of init must be numbers" named it as one to search
            "prompt-tuning",
            ["init=choice:text,random"],
            "'init' is not a number of prompt-tuning to search; it has learning_rate, num_virtual_tokens.",
        ),
        (  # each trial failed on "num virtual tokens must be a whole number, not 12.7"
            "prompt-tuning",
            ["num_virtual_tokens=uniform:1:50"],
            "num_virtual_tokens is a whole number; search it with randint (e.g. num_virtual_tokens=randint:1:51) or "
            "choice.",
        ),
        (  # went to Tune
            "lora",
            ["learning_rate=loguniform:1e-3:inf"],
            "The loguniform arguments of learning_rate must be finite numbers, not '1e-3:inf'.",
        ),
        ("lora", ["learning_rate=choice:0.01,nan"], "The choice arguments of learning_rate must be finite numbers"),
        (
            "lora",
            ["learning_rate=normal:0:1"],
            "Unknown distribution 'normal' for learning_rate: use loguniform, uniform, randint, choice.",
        ),
        (
            "lora",
            ["learning_rate=loguniform:0:0.1"],
            "A loguniform range of learning_rate must start above 0, not at 0.",
        ),
        (
            "lora",
            ["learning_rate=loguniform:0.1:0.01"],
            "A loguniform range of learning_rate is low:high with low < high, not '0.1:0.01'.",
        ),
        ("lora", ["r=randint:a:8"], "The randint arguments of r must be whole numbers, not 'a:8'."),
        ("lora", ["r=choice:4"], "A choice of r needs at least two different values, not '4'."),
        ("lora", ["r=choice:4,8", "r=choice:2,16"], "Search each setting once; r is given twice."),
        ("lora", ["r=choice:0,8"], "lora: r must be at least 1, not 0."),
        (
            "lora",
            ["r=choice:4,8", "learning_rate=uniform:0.001:0.01", "alpha=choice:8,16"],
            "Search at most 2 settings (the learning rate and one more).",
        ),
    ],
)
def test_a_bad_search_space_is_one_sentence(method, specs, message):
    with pytest.raises(PeftlabError) as raised:
        parse_search(method, specs)
    assert str(raised.value).startswith(message), str(raised.value)


def test_the_tune_command_refuses_a_bad_space_before_ray_starts(capsys):
    assert main(["tune", "--method", "lora", "--search", "r=choice:4"]) == 2
    assert capsys.readouterr().err.strip() == "error: A choice of r needs at least two different values, not '4'."


def test_a_search_picks_by_dev_and_scores_the_winner_and_the_defaults_on_test(
    tiny_causal_folder, tmp_path, monkeypatch
):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        lm = load_lm(tiny_causal_folder, dtype="fp32")
        task = easy_task()
        setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
        config = TuneConfig(method="lora", trials=3, scheduler="fifo", shots=4, seeds=(13, 21), test_limit=6)
        space = parse_search("lora", ["learning_rate=loguniform:1e-3:1e-1"])
        settings = TrainSettings(steps=4, batch_size=4, eval_every=2)
        items = list(run_search(lm, task, setup, config, space, settings, storage=str(tmp_path / "tune")))
        # the same first seed draws the same trials (unseeded, each run drew others), and a model named by a path
        # relative to here is found from the folder Tune runs each trial in ("./tiny" failed every trial)
        monkeypatch.chdir(Path(tiny_causal_folder).parent)
        relative = load_lm(f"./{Path(tiny_causal_folder).name}", dtype="fp32")
        again = dataclasses.replace(config, seeds=(13,))
        *_, repeated = run_search(relative, task, setup, again, space, settings, storage=str(tmp_path / "tune2"))
    finally:
        ray.shutdown()
    assert [t["settings"] for t in repeated.trials] == [t["settings"] for t in items[-1].trials]
    assert all("error" not in t for t in repeated.trials), repeated.trials
    result = items[-1]
    assert isinstance(result, SearchResult)
    assert len(result.trials) == 3 and all(t["evaluations"] >= 1 for t in result.trials)
    rates = [t["settings"]["learning_rate"] for t in result.trials]
    assert all(1e-3 <= rate <= 1e-1 for rate in rates) and len(set(rates)) == 3
    assert result.best["dev_log_likelihood"] == max(t["dev_log_likelihood"] for t in result.trials)  # dev, not test
    rows = [i.values for i in items if isinstance(i, GridRow) and i.values["seed"] is not None]
    assert sorted((r["configuration"], r["seed"]) for r in rows) == [
        ("default", 13),
        ("default", 21),
        ("tuned", 13),
        ("tuned", 21),
    ]
    summary = result.summary()
    tuned = [r["test_accuracy"] for r in rows if r["configuration"] == "tuned"]
    assert summary["tuned_test_accuracy_mean"] == round(sum(tuned) / 2, 4)
    assert (tmp_path / "tune" / "peftlab-lora").is_dir()  # Tune's own records, kept where asked


def test_trials_the_cluster_cannot_place_are_refused_before_they_wait_for_ever(capsys, tiny_causal_folder):
    """8 threads a trial on 2 CPUs hung: Tune only warns, once a minute, that no node has the CPUs."""
    try:
        code = main(
            ["tune", "--method", "lora", "--search", "learning_rate=loguniform:1e-3:1e-1", "--trial-threads", "512"]
            + ["--model", tiny_causal_folder, "--task", "rt-sentiment", "--trials", "2"]
        )
    finally:
        ray.shutdown()  # the command started it here; the next test file's own start failed on it
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Each trial asks for 512 CPUs, but no node of the cluster"), err
    assert err.endswith("; ask for fewer trial threads or GPUs.\n"), err


def test_either_end_of_a_range_is_checked_on_the_model_before_ray_starts(capsys, tiny_causal_folder):
    """randint:1:100000 was checked at 1 alone: every trial drawing a length the model cannot hold would fail."""
    assert Dimension("r", "randint", (2, 33)).extremes() == (2, 32)  # Tune's randint excludes its high end
    code = main(
        ["tune", "--method", "prompt-tuning", "--search", "num_virtual_tokens=randint:1:100000"]
        + ["--model", tiny_causal_folder, "--task", "rt-sentiment", "--trials", "2"]
    )
    assert code == 2 and capsys.readouterr().err.startswith(
        "error: 99999 virtual tokens of prompt-tuning leave no room in "
    )


def test_the_tune_command_stores_each_scored_run_as_it_ends(tiny_causal_folder, monkeypatch, tmp_path, capsys):
    """`tune` printed the tuned and default runs' test accuracies and kept none of them: the store never saw them
    (here the search is stood in for: Ray's trials are tested above)."""
    import peftlab.search
    from peftlab.store import ResultRow, ResultStore

    monkeypatch.setenv("PEFTLAB_RESULTS", str(tmp_path / "results.sqlite"))
    task = easy_task()

    def search(lm, task_, setup, config, dimensions, settings, address=None, backend=None):
        for name, seed, predicted in (("tuned", 13, [0] * 6), ("default", 13, [1] * 6)):
            result = ResultRow.scored("trained", lm.name, task, "lora", {"lr": name}, task.test[:6], predicted, seed=13)
            yield GridRow({"configuration": name, "seed": seed, "test_accuracy": result.accuracy}, result=result)
        yield SearchResult("lora", [], [], {"settings": {}}, [], 0.0, 0.0)

    monkeypatch.setattr(peftlab.search, "run_search", search)
    argv = ["tune", "--method", "lora", "--search", "learning_rate=loguniform:1e-3:1e-1", "--model", tiny_causal_folder]
    assert main([*argv, "--task", "rt-sentiment", "--json"]) == 0
    assert sorted(row.settings["lr"] for row in ResultStore().rows()) == ["default", "tuned"]
    assert main([*argv, "--task", "rt-sentiment", "--json", "--no-store"]) == 0
    assert len(ResultStore().rows()) == 2
