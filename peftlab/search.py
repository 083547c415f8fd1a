"""Learning-rate (and one more setting) search with Ray Tune, scored on dev, then the winner on test.

Each trial trains the method on one seed's K examples per class with settings drawn from the search space and
reports the best dev log-likelihood so far after each dev evaluation; ASHA (Li et al. 2020, "A System for
Massively Parallel Hyperparameter Tuning") stops trials that trail the others at the same evaluation, or every
trial runs to its end (fifo). The test texts are never seen while searching: the best trial's settings are then
trained on every seed and scored on test beside the method's defaults on the same seeds and texts.

A search space is one spec per setting, written `setting=distribution:arguments`:
`learning_rate=loguniform:1e-3:1e-1` (or `uniform:1e-3:1e-2`), `r=randint:2:33` (the upper bound excluded, as
Ray Tune's), `num_virtual_tokens=choice:5,20,50`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from peftlab.config import Config, scored_texts_setting, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.methods import METHODS, method_config
from peftlab.tasks import DEFAULT_SEEDS
from peftlab.training import evaluation_count

DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")
SCHEDULERS = ("asha", "fifo")
MAX_DIMENSIONS = 2  # the learning rate and one more setting: more needs more trials than a CPU affords
METRIC = "dev_log_likelihood"


@dataclass
class TuneConfig(Config):
    """What a search tries and how the winner is checked."""

    method: str = setting("prompt-tuning", "the method whose settings are searched", choices=tuple(METHODS))
    trials: int = setting(8, "settings drawn from the search space, one training run each", minimum=1)
    scheduler: str = setting(
        "asha", "asha stops trials that trail the others at a dev evaluation; fifo runs every trial", choices=SCHEDULERS
    )
    shots: int = setting(16, "K, labelled examples per class (as many again for dev)", minimum=1, label="K per class")
    seeds: tuple[int, ...] = seed_setting(
        DEFAULT_SEEDS[:3], "seeds the best settings and the defaults are trained on; trials use the first"
    )
    trial_threads: int = setting(1, "CPUs (torch threads) of each trial", minimum=1)
    trial_gpus: float = setting(0.0, "GPUs of each trial (0.5: two trials share one)", minimum=0)
    test_limit: int | None = scored_texts_setting("test texts the best settings and the defaults are scored on")


@dataclass(frozen=True)
class Dimension:
    """One setting's distribution: `values` are (low, high) for the ranges, the options for choice."""

    setting: str
    distribution: str
    values: tuple

    def to_ray(self):
        from ray import tune

        if self.distribution == "choice":
            return tune.choice(list(self.values))
        return getattr(tune, self.distribution)(*self.values)

    def extremes(self) -> tuple:
        """The values a trial may get that lie furthest apart (every option of a choice; randint's high is excluded,
        as Ray Tune's is): a method that takes both takes every value between."""
        if self.distribution == "choice":
            return self.values
        low, high = self.values
        return (low, high - 1) if self.distribution == "randint" else (low, high)

    def spec(self) -> str:
        """The dimension as its spec is written ("learning_rate=loguniform:0.001:0.1")."""
        separator = "," if self.distribution == "choice" else ":"
        return f"{self.setting}={self.distribution}:{separator.join(map(str, self.values))}"


def parse_search(method: str, specs: Sequence[str]) -> list[Dimension]:
    """The search space of `method` from specs like "learning_rate=loguniform:1e-3:1e-1" (see the module).

    Raises:
        PeftlabError: no spec or more than MAX_DIMENSIONS, a spec not of the form setting=distribution:arguments,
            a setting the method does not have (or not a number) or given twice, an unknown distribution, a
            continuous one of a whole-number setting, bounds that are not finite numbers, not increasing or
            (loguniform) not above 0, a choice of fewer than two values, or a value at either end that the method's
            own config refuses.
    """
    if method not in METHODS:
        raise PeftlabError(f"Unknown method {method!r}; choose from {', '.join(METHODS)}.")
    if not specs:
        raise PeftlabError("Give a search space, e.g. --search learning_rate=loguniform:1e-3:1e-1.")
    if len(specs) > MAX_DIMENSIONS:
        raise PeftlabError(f"Search at most {MAX_DIMENSIONS} settings (the learning rate and one more).")
    defaults = METHODS[method]()
    numbers = [item.name for item in METHODS[method].settings() if _is_number(getattr(defaults, item.name))]
    dimensions = []
    for spec in specs:
        name, _, rest = spec.partition("=")
        distribution, _, arguments = rest.partition(":")
        name, distribution = name.strip(), distribution.strip()
        if not name or not distribution or not arguments:
            raise PeftlabError(
                f"Write a search as setting=distribution:arguments, e.g. learning_rate=loguniform:1e-3:1e-1, "
                f"not {spec!r}."
            )
        if name not in numbers:
            what = "a number" if hasattr(defaults, name) and name != "name" else "a setting"
            raise PeftlabError(f"{name!r} is not {what} of {method} to search; it has {', '.join(numbers)}.")
        if name in {d.setting for d in dimensions}:
            raise PeftlabError(f"Search each setting once; {name} is given twice.")
        if distribution not in DISTRIBUTIONS:
            raise PeftlabError(f"Unknown distribution {distribution!r} for {name}: use {', '.join(DISTRIBUTIONS)}.")
        kind = int if isinstance(getattr(defaults, name), int) else float
        if kind is int and distribution in ("loguniform", "uniform"):  # its trials failed on 12.7 tokens
            raise PeftlabError(
                f"{name} is a whole number; search it with randint (e.g. {name}=randint:1:51) or choice."
            )
        dimensions.append(Dimension(name, distribution, _values(name, distribution, arguments, kind)))
        for value in dimensions[-1].extremes():
            method_config(method, **{name: value})  # a value the method refuses fails now, in its own words
    return dimensions


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values(name: str, distribution: str, arguments: str, kind: type) -> tuple:
    parts = [p.strip() for p in arguments.split("," if distribution == "choice" else ":")]
    number = int if distribution == "randint" or (distribution == "choice" and kind is int) else float
    try:
        values = tuple(number(p) for p in parts)
    except ValueError:
        what = "whole numbers" if number is int else "numbers"
        raise PeftlabError(f"The {distribution} arguments of {name} must be {what}, not {arguments!r}.") from None
    if not all(math.isfinite(v) for v in values):  # loguniform:1e-3:inf went to Tune
        raise PeftlabError(f"The {distribution} arguments of {name} must be finite numbers, not {arguments!r}.")
    if distribution == "choice":
        if len(set(values)) < 2:
            raise PeftlabError(f"A choice of {name} needs at least two different values, not {arguments!r}.")
        return values
    if len(values) != 2 or not values[0] < values[1]:
        raise PeftlabError(f"A {distribution} range of {name} is low:high with low < high, not {arguments!r}.")
    if distribution == "randint" and values[1] - values[0] < 2:  # its high is excluded: one value is no search
        raise PeftlabError(
            f"A randint range of {name} holds the whole numbers from low up to high - 1, so {arguments!r} holds only "
            f"{values[0]}; give high at least low + 2."
        )
    if distribution == "loguniform" and values[0] <= 0:
        raise PeftlabError(f"A loguniform range of {name} must start above 0, not at {parts[0]}.")
    return values


@dataclass
class SearchResult:
    """The trials (settings, best dev log-likelihood, evaluations run), the winner, and the rows of the winner and
    of the defaults trained on every seed and scored on test (`GridRow.values`, with "configuration")."""

    method: str
    space: list[str]
    trials: list[dict]
    best: dict
    rows: list[dict]
    search_seconds: float
    seconds: float

    def summary(self) -> dict:
        def mean(configuration: str) -> float:
            scores = [r["test_accuracy"] for r in self.rows if r.get("configuration") == configuration]
            return round(sum(scores) / len(scores), 4) if scores else math.nan

        return {
            **dataclasses.asdict(self),
            "tuned_test_accuracy_mean": mean("tuned"),
            "default_test_accuracy_mean": mean("default"),
        }


def _trial(params: dict, *, model: str, dtype, task, setup, method: str, k: int, seed: int, settings, threads):
    """One Tune trial: train `method` with `params` on seed `seed`'s K examples; report the best dev log-likelihood
    so far after each dev evaluation (ASHA compares trials at the same evaluation)."""
    import torch
    from ray import tune

    from peftlab.models import load_lm
    from peftlab.tuning import TrainEvent, train_method

    torch.set_num_threads(threads)
    lm = load_lm(model, dtype=dtype)
    train, dev = task.few_shot(k, seed)
    best = -math.inf
    for item in train_method(
        lm, setup, method_config(method, **params), train, dev, dataclasses.replace(settings, seed=seed)
    ):
        if isinstance(item, TrainEvent) and not math.isnan(item.dev_log_likelihood):
            best = max(best, item.dev_log_likelihood)
            tune.report({METRIC: best, "step": item.step, "dev_accuracy": item.dev_accuracy})


def run_search(
    lm,
    task,
    setup,
    config: TuneConfig,
    dimensions: Sequence[Dimension],
    settings,
    address=None,
    backend=None,
    storage: str | None = None,
) -> Iterator:
    """Search `dimensions` with Ray Tune (a Ray at `address`, or started here), then train the best settings and the
    defaults on `config.seeds` (by `backend`, as `compare.run_plan` does) and score both on test. Yields the re-run's
    events and rows, then the SearchResult.

    Raises:
        PeftlabError: a value at either end of a dimension that the method cannot train on `lm` with, or Ray is not
            installed or its cluster cannot be reached.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from peftlab.backends import RayBackend
    from peftlab.compare import GridRow, PlannedRun, run_plan

    started = time.perf_counter()
    for dimension in dimensions:  # at either end, a value the model refuses (100000 virtual tokens) fails every trial
        for value in dimension.extremes():
            method_config(config.method, **{dimension.setting: value}).check(lm)
    # a trial the cluster cannot place waited for ever (Tune warns once a minute): 8 threads a trial on 2 CPUs hung
    RayBackend(address=address, threads=config.trial_threads, gpus=config.trial_gpus, role="trial").connect()
    evaluations = evaluation_count(settings.steps, settings.eval_every)
    scheduler = (
        ASHAScheduler(time_attr="training_iteration", max_t=evaluations, grace_period=1, reduction_factor=2)
        if config.scheduler == "asha"
        else FIFOScheduler()
    )
    trainable = tune.with_parameters(
        _trial,
        # Tune runs each trial in a folder of its own: a relative path ("./tiny") named no model there
        model=str(Path(lm.name).resolve()) if Path(lm.name).exists() else lm.name,
        dtype=lm.model.dtype,  # load_lm takes the torch dtype itself
        task=task,
        setup=setup,
        method=config.method,
        k=config.shots,
        seed=config.seeds[0],
        settings=settings,
        threads=config.trial_threads,
    )
    with tempfile.TemporaryDirectory() as scratch:  # Tune's checkpoints and logs, unless `storage` keeps them
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": config.trial_threads, "gpu": config.trial_gpus}),
            param_space={d.setting: d.to_ray() for d in dimensions},
            tune_config=tune.TuneConfig(
                metric=METRIC,
                mode="max",
                num_samples=config.trials,
                scheduler=scheduler,
                # the settings drawn follow the first seed, as Tune's guide to reproducible runs seeds the search:
                # unseeded, the same command drew other trials each time (winners 0.0073 and 0.0517)
                search_alg=BasicVariantGenerator(random_state=config.seeds[0]),
            ),
            run_config=tune.RunConfig(storage_path=storage or scratch, name=f"peftlab-{config.method}", verbose=0),
        )
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables: stdout is the caller's (the CLI's JSON)
            results = tuner.fit()
    trials = []
    for result in results:
        if result.error is not None:
            # the trial's own exception: a RayTaskError's first line is Ray's ("ray::ImplicitFunc.train() (pid=...")
            error = getattr(result.error, "cause", None) or result.error
            trials.append({"settings": result.config, "error": (str(error).strip().splitlines() or [repr(error)])[0]})
            continue
        history = result.metrics_dataframe  # one row per dev evaluation reported
        trials.append(
            {
                "settings": result.config,
                METRIC: round(float(history[METRIC].max()), 5),
                "evaluations": len(history),
                "steps": int(history["step"].iloc[-1]),  # fewer than settings.steps: ASHA or patience stopped it
            }
        )
    scored = [t for t in trials if METRIC in t]
    if not scored:
        raise PeftlabError(f"Every trial failed; the first said: {trials[0]['error']}")
    best = max(scored, key=lambda t: t[METRIC])
    search_seconds = time.perf_counter() - started
    plan = [
        PlannedRun(method_config(config.method, **chosen), config.shots, seed, config.method, {"configuration": name})
        for name, chosen in (("tuned", best["settings"]), ("default", {}))
        for seed in config.seeds
    ]
    rows = []
    for item in run_plan(lm, task, setup, plan, settings, config.test_limit, backend=backend):
        if isinstance(item, GridRow):
            rows.append(item.values)
        yield item
    yield SearchResult(
        config.method,
        [d.spec() for d in dimensions],
        trials,
        best,
        rows,
        round(search_seconds, 1),
        round(time.perf_counter() - started, 1),
    )
