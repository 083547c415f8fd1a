"""The standard comparison: every kind of method peftlab has, on one task and model, K examples per class and a
few seeds, all scored on the same test texts, each result ready for the results store as soon as it is done.

The methods, cheapest first (so a Stop keeps the most lines):
- calibrated zero-shot: the template and verbalizer with mean-centring (once; no training data);
- in-context demonstrations: `demonstrations_per_class` of each seed's K-shot training examples in front of
  every input (Brown et al. 2020; the small embedded model's context holds few);
- AutoPrompt (Shin et al. 2020): TRIGGER_SLOTS trigger slots put before the template's mask, searched on each
  seed's K examples per class for `autoprompt_iterations` swaps (so it starts from the manual prompt);
- the trained methods (prompt tuning, P-tuning, prefix tuning, LoRA, adapters, head-only and prompt-based full
  fine-tuning) with the shared trainer's settings, on the same K-shot examples (LM-BFF's protocol);
- PET (Schick & Schütze 2021, `peftlab.pet`): the task's patterns (or the template and two generic ones), each
  model trained on the same K-shot examples, their ensemble labelling up to PETConfig's 1,000 unlabelled texts,
  a classifier distilled from it; two rows per seed, the ensemble's and the classifier's.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from peftlab.autoprompt import AutoPromptConfig, AutoPromptResult, autoprompt_run
from peftlab.backends import run_on
from peftlab.cloze import ClozeSetup, evaluate, label_log_probs
from peftlab.compare import GridRow, PlannedRun, train_and_score
from peftlab.config import Config, counted, scored_texts_setting, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.methods import METHODS, method_config
from peftlab.models import LM, autocast_for
from peftlab.pet import (
    PatternScoring,
    PETConfig,
    PETEvent,
    PETResult,
    pattern_prompts,
    patterns_for,
    pet_run,
    unlabelled_candidates,
)
from peftlab.scoring import continues_a_cache, item_tokens, padded_tokens
from peftlab.store import ResultRow
from peftlab.tasks import DEFAULT_SEEDS, Task
from peftlab.training import Event, Pace, evaluation_count
from peftlab.tuning import TrainEvent, TrainSettings
from peftlab.zerogpu import call_on_gpu, on_gpu

ZERO_SHOT, IN_CONTEXT, AUTOPROMPT = "zero-shot · mean", "in-context · mean", "autoprompt"
TRIGGER_SLOTS = 5
# A text scored after cached demonstrations costs this much more per demonstration than alone: measured 1.1 times
# zero-shot's time with 4 demonstrations (rt-sentiment) and 2.0 times with 10 (bbc-topic), on 2 CPU cores.
DEMONSTRATION_READ_COST = 0.1
SCALE_SAMPLE = 200  # test texts whose lengths scale the measured cost of a text to the texts a run scores
TRAINED = ("prompt-tuning", "p-tuning", "prefix-tuning", "lora", "adapter", "head", "full")
PET = "pet"
TRAINED_ON_BACKEND = "every trained method's runs"  # StandardEvent.method when a backend runs them all at once
STANDARD_METHODS = (ZERO_SHOT, IN_CONTEXT, AUTOPROMPT, *TRAINED, PET)
# Typed names: the middle dot of the stored names is hard to type on a command line.
METHOD_ALIASES = {"zero-shot": ZERO_SHOT, "in-context": IN_CONTEXT}
_TYPED_NAMES = {name: typed for typed, name in METHOD_ALIASES.items()}
TYPED_METHODS = [_TYPED_NAMES.get(m, m) for m in STANDARD_METHODS]


@dataclass
class StandardConfig(Config):
    """What the standard comparison runs; the trainer's own settings are TrainSettings."""

    methods: tuple[str, ...] = setting(
        STANDARD_METHODS, "the methods, comma-separated: zero-shot, in-context, " + ", ".join(STANDARD_METHODS[2:])
    )
    shots: int = setting(
        16, "K, labelled examples per class (as many again for dev)", minimum=1, cap="shots", label="K per class"
    )
    seeds: tuple[int, ...] = seed_setting(DEFAULT_SEEDS[:3], "seeds, comma-separated: each draws its own K examples")
    test_limit: int | None = scored_texts_setting("test texts every method is scored on")
    demonstrations_per_class: int = setting(
        2, "in-context demonstrations of each class, from the K examples", minimum=1
    )
    autoprompt_iterations: int = setting(
        10, "AutoPrompt's trigger updates per seed", minimum=1, cap="iterations", label="AutoPrompt iterations"
    )

    def check_settings(self):
        self.methods = tuple(METHOD_ALIASES.get(m, m) for m in self.methods)
        unknown = [m for m in self.methods if m not in STANDARD_METHODS]
        if unknown:
            raise PeftlabError(
                f"The standard comparison has no method {unknown[0]!r}; choose from {', '.join(TYPED_METHODS)}."
            )
        if not self.methods or not self.seeds:
            raise PeftlabError("The standard comparison needs at least one method and one seed.")
        # only in-context reads demonstrations: without it, K of 1 was refused for the default 2 demonstrations
        if IN_CONTEXT in self.methods and self.demonstrations_per_class > self.shots:
            raise PeftlabError(
                f"{counted(self.demonstrations_per_class, 'demonstration')} per class cannot come from "
                f"{counted(self.shots, 'example')} per class; use at most {self.shots}."
            )


@dataclass(kw_only=True)
class StandardEvent(Event):
    """Which run of the plan starts (step = its number, from 1) and how many there are."""

    method: str
    seed: int | None
    runs: int


def plan(config: StandardConfig) -> list[tuple[str, int | None]]:
    """(method, seed) in the order they run: zero-shot once, then each other method over the seeds."""
    runs = [(ZERO_SHOT, None)] if ZERO_SHOT in config.methods else []
    return runs + [
        (m, seed) for m in STANDARD_METHODS if m in config.methods and m != ZERO_SHOT for seed in config.seeds
    ]


def run_of(row: ResultRow) -> tuple[str, int | None]:
    """The (method, seed) of the plan `row` comes from: a PET run gives two rows, its ensemble's and its classifier's
    (counted as rows, a finished comparison said "34 of 31 runs finished")."""
    return (PET if row.kind == "pet" else row.method, row.seed)


def run_standard(
    scoring_lm: LM,
    training_lm: LM,
    task: Task,
    template: str,
    verbalizer: str | dict,
    config: StandardConfig,
    settings: TrainSettings,
    stop: threading.Event | None = None,
    backend=None,
) -> Iterator[StandardEvent | TrainEvent | PETEvent | PatternScoring | ResultRow | GridRow]:
    """Each run's StandardEvent, its training events, then its ResultRow(s). `scoring_lm` scores (the fast
    inference dtype), `training_lm` trains (fp32 weights); both are the same model.

    `stop` ends the comparison after the current step of the current run; a trained run keeps its best
    weights so far and still gets its row (PET's seed in progress is dropped: its classifier would be half-trained).
    `backend` (a `backends.RayBackend`, side by side on its workers, or a `zerogpu.GPUCalls`, one GPU call each)
    trains every trained method's runs, announced by one StandardEvent (method TRAINED_ON_BACKEND, seed None) and
    finished in any order; a run that fails there
    yields its GridRow (status "failed: ...") and the others go on. PET's pattern models go to it too.

    Raises:
        PeftlabError: a template, verbalizer, K or method that the task or model refuses (before anything runs).
    """
    setup = ClozeSetup.build(task, template, verbalizer, calibration="mean")
    check_sizes(task, config)
    for name in config.methods:
        if name in METHODS:
            method_config(name).check(training_lm)
    if PET in config.methods:
        for prompt in _pet_prompts(task, template, verbalizer):
            prompt.queries(training_lm, task.train[0])  # a label word the model cannot spell fails here
    test = task.test_subset(config.test_limit)
    runs = plan(config)
    on_backend = [PlannedRun(method_config(m), config.shots, s, m) for m, s in runs if m in TRAINED] if backend else []
    for number, (method, seed) in enumerate(runs, start=1):
        if stop is not None and stop.is_set():
            return
        if on_backend and method in TRAINED:
            if method == on_backend[0].label and seed == on_backend[0].seed:  # all of them at the first one's turn
                yield StandardEvent(step=number, elapsed=0.0, method=TRAINED_ON_BACKEND, seed=None, runs=len(runs))
                for item in run_on(backend, training_lm, task, setup, on_backend, settings, test, stop):
                    if isinstance(item, GridRow) and item.result is not None:
                        item = item.result  # a failed run stays a GridRow: its status says why
                    yield item
            continue
        yield StandardEvent(step=number, elapsed=0.0, method=method, seed=seed, runs=len(runs))
        # the caller's own model work: one GPU call each on ZeroGPU (zerogpu.on_gpu), else right here
        prompted = (scoring_lm, task, template, verbalizer, config, seed)
        if method in (ZERO_SHOT, IN_CONTEXT):
            yield call_on_gpu(
                _cloze_row,
                *prompted,
                len(test),
                kind=f"standard:{scoring_lm.name}:{method}",
                units=len(test),
                what=f"Scoring {len(test)} test texts ({method})",
                shorter="score fewer test texts",
            )
        elif method == AUTOPROMPT:
            yield from on_gpu(
                _autoprompt,
                *prompted,
                stop=stop,
                kind=f"standard:{scoring_lm.name}:autoprompt",
                units=config.autoprompt_iterations + 1,
                what=f"AutoPrompt's {config.autoprompt_iterations} iterations",
                shorter="use fewer AutoPrompt iterations",
            )
        elif method == PET:
            prompts, pet = _pet_prompts(task, template, verbalizer), _pet_config(task, config, seed)
            for item in pet_run(training_lm, task, prompts, pet, settings, stop, backend=backend):
                yield from item.rows if isinstance(item, PETResult) else [item]
        else:
            run = PlannedRun(method_config(method), config.shots, seed, method)
            for item in train_and_score(training_lm, task, setup, run, settings, test, stop):
                yield item.result if isinstance(item, GridRow) else item


def _cloze_row(
    lm: LM, task: Task, template: str, verbalizer, config: StandardConfig, seed: int | None, limit: int
) -> ResultRow:
    if seed is None:
        return evaluate(lm, task, template, verbalizer, "mean", limit=limit).row
    train, _ = task.few_shot(config.shots, seed)  # the demonstrations come from the seed's K examples
    shots_task = dataclasses.replace(task, train=train)
    demonstrations = config.demonstrations_per_class * len(task.label_names)
    row = evaluate(lm, shots_task, template, verbalizer, "mean", demonstrations, limit=limit, seed=seed).row
    row.k, row.seed = config.shots, seed
    return row


def _autoprompt(
    lm: LM, task: Task, template: str, verbalizer, config: StandardConfig, seed: int, stop=None
) -> Iterator[ResultRow]:
    search = AutoPromptConfig(
        template=template.replace("{mask}", f"{' [T]' * TRIGGER_SLOTS} {{mask}}"),
        iterations=config.autoprompt_iterations,
        train_size=config.shots * len(task.label_names),
        seed=seed,
        test_limit=config.test_limit,
    )
    # the found prompt's row as the search stored it, its train seconds the search's: the same template without the
    # trigger is scored after it (autoprompt_run's baseline row, which this comparison leaves out), and counted as the
    # search it put 500 texts' scoring on AutoPrompt's time
    for item in autoprompt_run(lm, task, verbalizer, search, stop):
        if isinstance(item, AutoPromptResult):
            yield item.rows[0]


def _pet_prompts(task: Task, template: str, verbalizer):
    return pattern_prompts(task, patterns_for(task, template), [verbalizer])


def check_sizes(task: Task, config: StandardConfig) -> None:
    """Refuse, before any model loads, a K the smallest class cannot supply and, for PET, a training pool with nothing
    left to label (a K of 32 on 16 rows a class passed the press and was refused after the model loaded, was timed
    and the estimate's second press).

    Raises:
        PeftlabError: the first size that does not fit, in one sentence.
    """
    for seed in config.seeds if set(config.methods) - {ZERO_SHOT} else ():  # zero-shot alone draws no examples
        task.few_shot(config.shots, seed)
    if PET in config.methods:
        _pet_config(task, config, DEFAULT_SEEDS[0])


def _pet_config(task: Task, config: StandardConfig, seed: int) -> PETConfig:
    """PET's defaults on the comparison's K, seed and test texts, with as many unlabelled texts as the pool has
    (up to PETConfig's default).

    Raises:
        PeftlabError: nothing of the training pool is left once the seed's K examples are drawn.
    """
    available = len(unlabelled_candidates(task, sum(task.few_shot(config.shots, seed), [])))
    if not available:
        raise PeftlabError(
            f"PET needs unlabelled texts, and the training pool of '{task.name}' has none besides the "
            f"{config.shots} examples per class; leave PET out or use a smaller K."
        )
    return PETConfig(
        shots=config.shots,
        seeds=(seed,),
        unlabelled=min(PETConfig().unlabelled, available),
        test_limit=config.test_limit,
    )


# Seconds per optimiser step relative to LoRA's, as measured on the embedded model on a CPU
# (benchmarks/fewshot_compare.py, 2026-11-30: LoRA 20 s, prompt tuning 24, P-tuning 24, prefix 18, head 2,
# full fine-tuning 36 for 30 steps); adapters train like LoRA, and BitFit and the sequence classifier (not measured:
# a backward pass through every layer, few weights) are priced like it too.
STEP_COST = {
    "prompt-tuning": 1.2,
    "p-tuning": 1.2,
    "prefix-tuning": 0.9,
    "lora": 1.0,
    "adapter": 1.0,
    "bitfit": 1.0,
    "head": 0.1,
    "full": 1.8,
    "classifier": 1.0,
}
FULL_CLASSIFIER = STEP_COST["full"] / STEP_COST["classifier"]  # PET's classifier with every weight trained


@dataclass(frozen=True)
class MeasuredCosts:
    """Seconds this machine takes for the units of a comparison, measured now by `measure`."""

    per_text: float  # scoring one test text with the scoring model (the fast inference dtype), in length-sorted batches
    per_step: float  # one LoRA training step of a full batch, once warm
    per_trained_text: float  # the same with the fp32 training model, as every trained model scores
    padding: float  # how many times a text costs in a batch drawn at random (a dev evaluation, an AutoPrompt batch),
    # padded to its longest text, over one in a run's length-sorted batches
    per_run: float  # what a training run costs besides its steps: drawing its examples, building the method's
    # model and the first step's warm-up
    tokens: float  # the tokens a run scores per test text, which a method's virtual inputs lengthen


def measure(
    scoring_lm: LM, training_lm: LM, task: Task, template: str, verbalizer, training: bool = True
) -> MeasuredCosts:
    """The costs of one text and, with `training`, one LoRA training step on this machine, measured now (a few
    seconds; `measuring`)."""
    *_, costs = measuring(scoring_lm, training_lm, task, template, verbalizer, training)
    return costs


def trains(config: StandardConfig) -> bool:
    """Whether the comparison trains a model (a trained method or PET): prompting alone needs no training step
    timed for its estimate."""
    return any(method in TRAINED or method == PET for method in config.methods)


def measuring(
    scoring_lm: LM, training_lm: LM, task: Task, template: str, verbalizer, training: bool = True
) -> Iterator[str | MeasuredCosts]:
    """`measure` part by part: before each part, what it measures ("3 LoRA training steps"), for a progress line (on a
    busy CPU the whole took 110 s behind one line); then the MeasuredCosts. Without `training` (a comparison that
    trains nothing: zero-shot alone) the texts alone, the training costs NaN: a LoRA run was timed on a class of one
    example, and refused with a K the visitor never set."""
    setup = ClozeSetup.build(task, template, verbalizer)
    texts = task.test_subset(16)
    steps = TrainSettings(steps=4, eval_every=4)  # the one dev evaluation at the last step, after the timed ones
    run = PlannedRun(method_config("lora"), _measured_shots(task, steps.batch_size), DEFAULT_SEEDS[0], "lora")
    if on_cuda(training_lm):
        # A GPU's first calls load kernels and make library handles, seconds against milliseconds a text after: timed
        # cold, they priced rt-sentiment's comparison at 37 minutes on an H200, where it ran in 3.5 (the notes of
        # benchmarks/gpu_check.py). Both models score two texts and the training model takes a step, untimed.
        yield "warming the GPU up"
        with torch.inference_mode():
            label_log_probs(scoring_lm, setup.prompts[0], texts[:2])  # no memo: `evaluate` below scores them anew
            with autocast_for(training_lm.model):
                label_log_probs(training_lm, setup.prompts[0], texts[:2])
        if training:
            for _ in train_and_score(training_lm, task, setup, run, dataclasses.replace(steps, steps=1), texts[:1]):
                pass
    yield f"scoring {len(texts)} test texts"
    # what the scoring cost, not the wall time: texts this process scored before come from a memo (`cloze._scores`)
    per_text = evaluate(scoring_lm, task, template, verbalizer, limit=len(texts)).seconds / len(texts)
    # Both scorings priced the 16 texts' one batch, padded to its longest text; a run scores hundreds in length-sorted
    # batches, which pad little: unscaled, rt-sentiment's zero-shot was priced at 30 s and took 13.
    tokens = _tokens_per_text(scoring_lm, setup.prompts[0], task.test_subset(SCALE_SAMPLE))
    padding = _padding(scoring_lm, setup.prompts[0], texts) / tokens
    if not training:
        nan = float("nan")
        yield MeasuredCosts(per_text / padding, nan, nan, padding, nan, tokens)
        return
    yield f"{steps.steps} LoRA training steps, then their model scoring {len(texts)} texts"
    # A step's price is read from the events of steps 1 to 3, the run's setup from the wait for step 1: timed whole,
    # 3 steps carried the adapter's build, a dev evaluation and a test text, which the estimate prices apart, and
    # half-size batches of K=2 (1.11 s a "step" on a 2-core CPU, where a full batch's step takes 1.0 once warm).
    # A trained model's text is timed as trained models score: through the adapter.
    events, started, row = [], time.perf_counter(), None
    for item in train_and_score(training_lm, task, setup, run, steps, texts):
        if isinstance(item, TrainEvent):
            events.append((time.perf_counter() - started, item))
        else:
            row = item.result
    (waited, first), _, (_, third), _ = events
    pace = Pace.between(first, third)
    per_trained_text = row.scoring_seconds / len(texts) / padding
    per_run = max(waited - pace.per_step, 0.0)
    yield MeasuredCosts(per_text / padding, pace.per_step, per_trained_text, padding, per_run, tokens)


def _padding(lm: LM, prompt, measured: Sequence[dict]) -> float:
    """Tokens the measurement paid per text of `measured`, scored in one batch padded as it pads
    (`scoring.padded_tokens`; a run's length-sorted batches pad little: `_tokens_per_text`)."""
    items = [prompt.queries(lm, row) for row in measured]
    return padded_tokens(items, continues_a_cache(lm.model, lm.kind)) / len(measured)


def _tokens_per_text(lm: LM, prompt, rows: Sequence[dict]) -> float:
    """The tokens scoring one of `rows` with `prompt` costs, on average: its queries (one per label word that needs
    its own), their shared start once, as `cloze.score_query_lists` counts them (`scoring.item_tokens`)."""
    shares = continues_a_cache(lm.model, lm.kind)
    return sum(item_tokens(prompt.queries(lm, row), shares) for row in rows) / len(rows)


def pattern_costs(lm: LM, task: Task, prompts: Sequence, costs: MeasuredCosts) -> list[float]:
    """The cost of a text (scored or trained on) with each of `prompts` relative to the template `costs` were measured
    with, from the tokens of the same test texts (`MeasuredCosts.tokens`): three of PET's rt-sentiment patterns read
    two queries a text where its template reads one, the text once and each query's own tokens after it (about 1.1 to
    1.2 times the template's tokens; twice before `scoring.ItemStarts`)."""
    sample = task.test_subset(SCALE_SAMPLE)
    return [_tokens_per_text(lm, prompt, sample) / costs.tokens for prompt in prompts]


def _measured_shots(task: Task, batch_size: int) -> int:
    """K of the measured run: enough for full batches, as the comparison's K=16 has, within what the smallest class
    of the training pool supplies (K for training and, without a dev split, K for dev)."""
    supplied = min(task.label_counts().values()) // (1 if task.dev else 2)
    return max(1, min(math.ceil(batch_size / len(task.label_names)), supplied))


def on_cuda(lm: LM) -> bool:
    """Whether `lm` runs on a GPU (a seam the tests stand a CPU model in for one)."""
    return lm.device.type == "cuda"


def run_seconds(method: str, settings: TrainSettings, dev: int, n_test: int, costs: MeasuredCosts) -> float:
    """Expected seconds of one training run of `method`: its setup, its steps (priced by STEP_COST against a LoRA
    step), its dev evaluations of `dev` texts, and scoring `n_test` test texts, all with the fp32 training model;
    a text is scored longer by the method's virtual inputs (20 tokens of prompt tuning made rt-sentiment's 31-token
    texts cost 1.5 times LoRA's). A method on memoised frozen features (the head) reads its dev texts once."""
    config = method_config(method)
    evaluations = 1 if config.frozen_features else evaluation_count(settings.steps, settings.eval_every)
    training = costs.per_run + settings.steps * costs.per_step * STEP_COST[method]
    longer = 1 + config.virtual_inputs / costs.tokens
    return training + (evaluations * dev * costs.padding + n_test) * costs.per_trained_text * longer


def runs_seconds(method: str, settings: TrainSettings, devs: Sequence[int], n_test: int, costs: MeasuredCosts) -> float:
    """Expected seconds of the runs of `method` in one process, one per item of `devs` (its dev texts), all scoring the
    same `n_test` test texts (`run_seconds`); a method on memoised frozen features (the head) scores them in its first
    run only: priced in every run, the head of rt-sentiment's comparison was priced at 78 s where its three seeds took
    45."""
    once = method_config(method).frozen_features
    return sum(run_seconds(method, settings, dev, 0 if once and i else n_test, costs) for i, dev in enumerate(devs))


def grid_seconds(
    methods: Sequence[str], shots: Sequence[int], seeds: int, settings: TrainSettings, task: Task, test_limit, costs
) -> float:
    """Expected seconds of a grid (`compare.run_grid`): the zero-shot prompt, then every method x K x seed run."""
    n_test = len(task.test_subset(test_limit))
    devs = [k * len(task.label_names) for k in shots for _ in range(seeds)]
    # a method named twice (a sweep's values) runs in the same process, on the same memos
    runs = sum(runs_seconds(m, settings, devs * methods.count(m), n_test, costs) for m in dict.fromkeys(methods))
    return n_test * costs.per_text + runs


def pet_seconds(
    config: PETConfig, settings: TrainSettings, task: Task, costs: MeasuredCosts, patterns: Sequence[float]
) -> float:
    """Expected seconds of PET (and iPET) over its seeds, with one pattern per item of `patterns`: its cost of a text
    (scored or trained on) relative to the measured template's (`pattern_costs`). Per seed and generation, each
    pattern's model scores the labelled set (its weight), trains (`run_seconds`) and scores the unlabelled pool; the
    classifier (once for PET, once more after iPET's last generation) trains its steps about like LoRA's, with their
    dev evaluations, and scores the test texts. iPET's added texts make a batch no longer, so its steps cost the
    same."""
    n_test = len(task.test_subset(config.test_limit))
    dev = config.shots * len(task.label_names)
    unlabelled = config.unlabelled  # each seed's pool: a smaller one is refused (`pet.check_pool_sizes`)
    models = 0.0
    # with the auxiliary LM loss each step also trains on a batch of unlabelled text: priced as a second step
    steps = 2 if config.lm_loss_weight else 1
    for relative in patterns:
        # a pattern that reads two queries a text where the template reads one trains on both too
        scored = dataclasses.replace(
            costs, per_step=costs.per_step * relative * steps, per_trained_text=costs.per_trained_text * relative
        )
        models += (
            run_seconds(config.method, settings, dev, n_test, scored) + (dev + unlabelled) * scored.per_trained_text
        )
    # every weight distilled (LoRA off) steps at full fine-tuning's cost
    distilling = costs if config.distil_lora else dataclasses.replace(costs, per_step=costs.per_step * FULL_CLASSIFIER)
    classifier = run_seconds(
        "classifier", dataclasses.replace(settings, steps=config.distil_steps), dev, n_test, distilling
    )
    generations = 1 + config.ipet_generations
    return len(config.seeds) * (generations * models + config.classifiers * classifier)


def estimate_seconds(
    config: StandardConfig, settings: TrainSettings, task: Task, costs: MeasuredCosts, patterns: Sequence[float]
) -> dict[str, float]:
    """Expected seconds of each method (all its seeds), from the measured costs; PET's `patterns` are each pattern's
    relative cost of a text (`pet_seconds`)."""
    n_test = len(task.test_subset(config.test_limit))
    dev = config.shots * len(task.label_names)
    seeds = len(config.seeds)
    demonstrations = config.demonstrations_per_class * len(task.label_names)
    per_text = costs.per_text
    seconds = {
        ZERO_SHOT: n_test * per_text,
        # the demonstrations run once (each about one text long), then each text reads their cached keys and values
        IN_CONTEXT: seeds * per_text * (demonstrations + n_test * (1 + DEMONSTRATION_READ_COST * demonstrations)),
        # each iteration: a gradient and a re-scoring on a batch, a dev check; then both prompts on the test texts
        AUTOPROMPT: seeds * (config.autoprompt_iterations * (3 * 16 + dev) * costs.padding + 2 * n_test) * per_text,
    }
    for name in TRAINED:
        seconds[name] = runs_seconds(name, settings, [dev] * seeds, n_test, costs)
    if PET in config.methods:  # with as many unlabelled texts as the run takes (`_pet_config`)
        pet = dataclasses.replace(_pet_config(task, config, config.seeds[0]), seeds=config.seeds)
        seconds[PET] = pet_seconds(pet, settings, task, costs, patterns)
    return {name: cost for name, cost in seconds.items() if name in config.methods}


def estimate(
    scoring_lm: LM,
    training_lm: LM,
    task: Task,
    template: str,
    verbalizer,
    config: StandardConfig,
    settings,
    costs: MeasuredCosts | None = None,
) -> dict[str, float]:
    """Expected seconds of each method of the comparison (`estimate_seconds`), from `costs` measured earlier on this
    machine, or measuring it now (`measure`) when none are given."""
    costs = costs or measure(scoring_lm, training_lm, task, template, verbalizer, trains(config))
    prompts = _pet_prompts(task, template, verbalizer) if PET in config.methods else []
    patterns = pattern_costs(scoring_lm, task, prompts, costs)
    return estimate_seconds(config, settings, task, costs, patterns)
