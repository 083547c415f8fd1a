"""Cloze scoring: label-word log-probabilities, calibration, template ensembles and evaluation.

Pipeline (after OpenPrompt's verbalizer view): project the model's output at the mask onto the label
words (`scoring.word_scores`, which also runs the queries fast), aggregate several words of a label
(`aggregate_words`), normalise over the labels, calibrate (a `Calibration`; `calibrate` for scores at hand), then
average templates (`evaluate`).

Several words for one label are aggregated as the log of their *mean probability*,
logsumexp(log p(w)) - log(n): a label with many words gains nothing from their number alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from peftlab.config import Config, scored_texts_setting, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.metrics import accuracy, confusion_matrix, leaning_label, macro_f1
from peftlab.models import LM
from peftlab.prompts import Prompt, Query, Template, Verbalizer, pick_demonstrations, token_text, typed_example
from peftlab.scoring import SharedPrefix, continues_a_cache, item_tokens, word_scores
from peftlab.store import ResultRow, fingerprint
from peftlab.tasks import Task

# Content-free inputs for contextual calibration (Zhao et al. 2021, "Calibrate Before Use").
CONTENT_FREE_INPUTS = ("N/A", "")
MEAN_REFERENCE_TEXTS = 64  # test texts that mean-centre the scores of one typed text

ProgressFn = Callable[[int, int], None]


def aggregate_words(word_scores: torch.Tensor, word_labels: Sequence[int], n_labels: int) -> torch.Tensor:
    """(N, W) word log-probs -> (N, L) label scores: log of the mean probability of each label's words."""
    labels = torch.tensor(word_labels, device=word_scores.device)
    columns = []
    for label in range(n_labels):
        scores = word_scores[:, labels == label]  # (N, words of this label)
        columns.append(torch.logsumexp(scores, dim=1) - math.log(scores.shape[1]))
    return torch.stack(columns, dim=1)


def label_log_probs(
    lm: LM,
    prompt: Prompt,
    examples: Sequence[dict],
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    model=None,
) -> torch.Tensor:
    """(N, L) log-probabilities over labels (normalised over labels) for each example, no gradient.

    Raises:
        PeftlabError: in-context demonstrations that leave no room for the texts (`Prompt.check_room`).
    """
    prompt.check_room(lm)
    query_lists = [prompt.queries(lm, example) for example in examples]
    return score_query_lists(lm, query_lists, prompt.verbalizer, batch_size, progress, model)


# A GPU runs many more texts per forward pass than a CPU's cache-sized batches: scoring starts this many times larger
# there and halves on running out of memory, so too large a start costs one failed try.
GPU_BATCH_SCALE = 8
# A batch holds at most this many tokens (items x their longest input; GPU_BATCH_SCALE times as many on a GPU): 20
# texts of 2,048 tokens went in one forward pass of 80 s on 2 CPU cores, with no progress and no Stop until it ended.
# Scoring 2,048-token texts 2 at a time took 0.86 times as long as 8 at a time; rt-sentiment's batches of 32 fit.
TOKENS_PER_BATCH = 4096


def score_query_lists(
    lm: LM,
    query_lists: Sequence[Sequence[Query]],
    verbalizer: Verbalizer,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    model=None,
    over_labels: bool = True,
) -> torch.Tensor:
    """(N, L) label log-probs for N items (lists of queries), batched by length, under inference mode; with
    `over_labels=False` each label's log-probability over the whole vocabulary (`aggregate_words`), not normalised.

    `batch_size` items go in one forward pass on a CPU, fewer where they are long (at most TOKENS_PER_BATCH tokens);
    on a GPU GPU_BATCH_SCALE times as many, halved (and retried) whenever a batch runs out of GPU memory, so the
    batches fill the memory the model leaves. The start all queries share, when long enough, runs once
    (`SharedPrefix`), and so does the start of an item's queries (`ItemStarts`).

    Raises:
        PeftlabError: a batch size below 1 (it failed as "max() arg is an empty sequence").
    """
    if batch_size < 1:
        raise PeftlabError(f"The batch size must be at least 1, not {batch_size}.")
    flat_words = verbalizer.flat_words
    model = model if model is not None else lm.model
    shares = continues_a_cache(model, lm.kind)
    tokens = [item_tokens(queries, shares) for queries in query_lists]
    order = sorted(range(len(query_lists)), key=lambda i: max(len(q.input_ids) for q in query_lists[i]))
    scores = torch.empty((len(query_lists), len(flat_words)))
    device = next(model.parameters()).device
    scale = GPU_BATCH_SCALE if device.type == "cuda" else 1
    batch, start = batch_size * scale, 0
    with torch.inference_mode():
        prefix = SharedPrefix.find(model, lm.kind, [q for queries in query_lists for q in queries])
        while start < len(order):
            chunk = order[start : start + batch]
            while len(chunk) > 1 and len(chunk) * max(tokens[i] for i in chunk) > TOKENS_PER_BATCH * scale:
                chunk = chunk[:-1]
            try:
                items = [query_lists[i] for i in chunk]
                scores[chunk] = word_scores(lm, items, len(flat_words), model, prefix=prefix).cpu()
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)  # the texts only get longer: the smaller batch stays
                torch.cuda.empty_cache()
                continue
            start += len(chunk)
            if progress:
                progress(start, len(order))
    return words_to_label_log_probs(scores, verbalizer) if over_labels else words_to_label_scores(scores, verbalizer)


def words_to_label_scores(scores: torch.Tensor, verbalizer: Verbalizer) -> torch.Tensor:
    """(N, W) word log-probs -> (N, L) each label's log-probability over the vocabulary (`aggregate_words`)."""
    return aggregate_words(scores, [label for label, _ in verbalizer.flat_words], len(verbalizer.words))


def words_to_label_log_probs(scores: torch.Tensor, verbalizer: Verbalizer) -> torch.Tensor:
    """(N, W) word log-probs -> (N, L) log-probs normalised over the labels."""
    return words_to_label_scores(scores, verbalizer).log_softmax(-1)


@dataclass(frozen=True)
class Calibration:
    """A way to recalibrate (N, L) label log-probs: from them and, for some, a prior the prompt gives."""

    name: str
    description: str
    needs_set: bool = False  # computed over several texts at once (one text alone is centred on itself)

    def prior(self, lm: LM, prompt: Prompt, batch_size: int = 32) -> torch.Tensor | None:
        """What the calibration needs from the model besides the texts' scores (None: nothing)."""
        return None

    def apply(self, log_probs: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError


class _NoCalibration(Calibration):
    def apply(self, log_probs, prior):
        return log_probs


class _ContextualCalibration(Calibration):
    def prior(self, lm, prompt, batch_size=32):
        return content_free_log_probs(lm, prompt, batch_size)

    def apply(self, log_probs, prior):
        if prior is None:
            raise ValueError("contextual calibration needs the content-free log-probabilities")
        return (log_probs - prior).log_softmax(-1)  # log p - log p_cf


class _MeanCalibration(Calibration):
    def apply(self, log_probs, prior):
        return (log_probs - log_probs.mean(dim=0, keepdim=True)).log_softmax(-1)  # log p - mean_n log p


CALIBRATIONS: dict[str, Calibration] = {
    c.name: c
    for c in (
        _NoCalibration("none", "the label words' probabilities as the model gives them"),
        _ContextualCalibration(
            "contextual",
            "divided by the probabilities a content-free input ('N/A', '') gets "
            "(Zhao et al. 2021, Calibrate Before Use)",
        ),
        _MeanCalibration(
            "mean",
            # the JSON's calibration_reference_texts counts the others ("44" beside 20 scored texts, unexplained)
            f"each label's log-probability centred on its mean over the scored texts (with fewer than "
            f"{MEAN_REFERENCE_TEXTS}, over them and other texts of the test split, up to {MEAN_REFERENCE_TEXTS} in "
            "all)",
            needs_set=True,
        ),
    )
}


def calibration_by_name(name: str) -> Calibration:
    """The registered calibration called `name`.

    Raises:
        PeftlabError: an unknown calibration.
    """
    if name not in CALIBRATIONS:
        raise PeftlabError(f"Unknown calibration {name!r}: choose one of {', '.join(CALIBRATIONS)}.")
    return CALIBRATIONS[name]


def calibrate(log_probs: torch.Tensor, method: str, content_free_log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Recalibrate (N, L) label log-probs with the calibration named `method` and renormalise.

    - "none": unchanged.
    - "contextual": divide by p(label | content-free input) (Zhao et al. 2021): log p - log p_cf.
    - "mean": mean-centre each label's log-prob over the evaluated set: log p - mean_n log p.

    Raises:
        PeftlabError: an unknown calibration.
        ValueError: log-probs that are not an (N, L) tensor, or content-free log-probs of another L.
    """
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2:
        tensor = isinstance(log_probs, torch.Tensor)
        given = f"a tensor of shape {tuple(log_probs.shape)}" if tensor else f"a {type(log_probs).__name__}"
        raise ValueError(f"calibrate takes an (N, L) torch tensor of label log-probs, not {given}")
    if content_free_log_probs is not None and content_free_log_probs.shape != log_probs.shape[1:]:
        raise ValueError(
            f"content-free log-probs of shape {tuple(content_free_log_probs.shape)} for {log_probs.shape[1]} labels"
        )
    return calibration_by_name(method).apply(log_probs, content_free_log_probs)


def content_free_log_probs(lm: LM, prompt: Prompt, batch_size: int = 32) -> torch.Tensor:
    """(L,) log p_cf: each label's probability over the vocabulary, averaged over the content-free inputs, then
    normalised over the labels (Zhao et al. 2021, §5; their `get_p_content_free` averages the label words' raw
    probabilities before it normalises). Normalising each input first let "N/A", which gives the label words a
    thirtieth of the probability "" gives them, weigh as much: p_cf [0.580, 0.420] where the reference has [0.504,
    0.496], and 70.6 % where it has 76.9 % on 160 rt-sentiment texts with the default template."""
    prompt.check_room(lm)
    query_lists = [prompt.queries(lm, {"label": 0}, fill) for fill in CONTENT_FREE_INPUTS]
    scores = score_query_lists(lm, query_lists, prompt.verbalizer, batch_size, over_labels=False)
    return (torch.logsumexp(scores, 0) - math.log(len(query_lists))).log_softmax(-1)  # the log of the mean


@dataclass
class ClozeConfig(Config):
    """How the Cloze tab and the `cloze` command score, besides the template and the verbalizer."""

    calibration: str = setting(
        "none",
        "recalibrate the label scores: " + "; ".join(f"{c.name}: {c.description}" for c in CALIBRATIONS.values()),
        choices=tuple(CALIBRATIONS),
    )
    shots_in_context: int = setting(
        0, "labelled training examples put in front of each input", minimum=0, label="demonstrations in context"
    )
    seed: int = seed_setting(13, "seed for picking the demonstrations", label="seed (demonstrations)")
    limit: int | None = scored_texts_setting("test texts to score", label="test texts to evaluate")
    batch_size: int = setting(32, "texts per forward pass", minimum=1)


@dataclass
class ClozeSetup:
    """Validated cloze settings for one task: templates, verbalizer, calibration, demonstrations."""

    prompts: list[Prompt]
    calibration: str = "none"

    @classmethod
    def build(
        cls,
        task: Task,
        templates: str | Sequence[str],
        verbalizer: str | dict,
        calibration: str = "none",
        shots_in_context: int = 0,
        seed: int = 13,
    ) -> ClozeSetup:
        """The prompts of one cloze run: each template with the verbalizer and `shots_in_context` demonstrations.

        Raises:
            PeftlabError: no template, one given twice, an unknown calibration, or a template or verbalizer that does
                not fit the task.
        """
        calibration_by_name(calibration)  # an unknown one fails here, before any scoring
        if isinstance(templates, str):
            templates = [templates]
        templates = [t for t in templates if t and t.strip()]
        if not templates:
            raise PeftlabError("Give at least one template, such as 'Review: {text} Sentiment:{mask}'.")
        stripped = [t.strip() for t in templates]
        if repeat := next((i for i, t in enumerate(stripped) if t in stripped[:i]), None):
            # an "ensemble" of one template twice is that template, its scoring paid twice
            raise PeftlabError(
                f"Template {repeat + 1} is template {stripped.index(stripped[repeat]) + 1} again; give each template "
                "once."
            )
        verbalizer_obj = Verbalizer.parse(verbalizer, task.label_names)
        demonstrations = pick_demonstrations(task.train, shots_in_context, len(task.label_names), seed)
        prompts = [Prompt(Template.parse(t, task.text_fields), verbalizer_obj, demonstrations) for t in templates]
        return cls(prompts, calibration)

    def predict_log_probs(
        self,
        lm: LM,
        examples: Sequence[dict],
        batch_size: int = 32,
        progress: ProgressFn | None = None,
        reference: Sequence[dict] = (),
    ) -> tuple[torch.Tensor, float]:
        """(N, L) calibrated label log-probs, averaged over the templates (an ensemble when several), and the seconds
        their scoring cost.

        A calibration that needs a set of texts (mean-centring) also sees `reference`: texts scored with the
        same prompt but not returned. Each prompt's scores of a set of texts are kept per model (`_scores`), so
        another calibration of the same texts costs no second pass: the Start tab scored its 100 reviews three
        times, once per calibration (37 s each on 2 CPU cores). The seconds are those of the first scoring: what the
        result costs, not how quickly a second look at it came.
        """
        calibration = CALIBRATIONS[self.calibration]
        per_template, seconds = [], 0.0
        total = len(examples) * len(self.prompts)
        for t, prompt in enumerate(self.prompts):

            def report(done: int, _n: int, offset=t * len(examples)) -> None:
                if progress:
                    progress(offset + done, total)

            log_probs, cost = _scores(lm, prompt, examples, batch_size, report)  # (N, L)
            seconds += cost
            if calibration.needs_set and reference:
                scores, cost = _scores(lm, prompt, reference, batch_size, memo=REFERENCE_MEMO)
                seconds += cost
                log_probs = torch.cat([log_probs, scores])  # (N + R, L): centred together
            calibrated = calibration.apply(log_probs, calibration.prior(lm, prompt, batch_size))
            per_template.append(calibrated[: len(examples)])
        return torch.stack(per_template).mean(0).log_softmax(-1), seconds

    def reference_for(self, task: Task, examples: Sequence[dict]) -> list[dict]:
        """The texts a set-wise calibration also sees: none when it is not one or `examples` are many enough, else
        the task's stratified reference sample of MEAN_REFERENCE_TEXTS test texts, without `examples`."""
        if not CALIBRATIONS[self.calibration].needs_set or len(examples) >= MEAN_REFERENCE_TEXTS:
            return []
        scored = {id(e) for e in examples}
        return [row for row in task.test_subset(MEAN_REFERENCE_TEXTS) if id(row) not in scored]


# the LM.memo namespaces of `_scores`: the texts scored, and mean-centring's reference texts (`reference_for`)
SCORES_MEMO, REFERENCE_MEMO = "label scores", "calibration reference"


def _scores(
    lm: LM,
    prompt: Prompt,
    examples: Sequence[dict],
    batch_size: int,
    progress: ProgressFn | None = None,
    memo: str = SCORES_MEMO,
) -> tuple[torch.Tensor, float]:
    """`label_log_probs` of `prompt` on `examples` and the seconds they took, computed once per model, prompt and
    texts (`LM.memo` of the namespace `memo`: the model's weights never change under it). The reference texts of
    mean-centring have a memo of their own, which a visitor classifying one text after another does not crowd out."""
    key = _score_key(prompt, examples)

    def scored() -> tuple[torch.Tensor, float]:
        started = time.perf_counter()
        log_probs = label_log_probs(lm, prompt, examples, batch_size, progress)
        return log_probs, time.perf_counter() - started

    return lm.memo(memo).get(key, scored)


def _score_key(prompt: Prompt, examples: Sequence[dict]) -> tuple:
    """What `_scores` keeps a prompt's scores of a set of texts under."""
    return prompt.template.text, prompt.verbalizer.to_json(), fingerprint(prompt.demonstrations), fingerprint(examples)


@dataclass
class ClozeEvaluation:
    """What `evaluate` returns: metrics, the confusion matrix and per-example predictions."""

    label_names: list[str]
    accuracy: float
    macro_f1: float
    confusion: np.ndarray
    predictions: pd.DataFrame  # text, gold, predicted, confidence, correct, p(<label>) per label
    seconds: float  # what scoring the texts cost, when they were first scored with these prompts (`_scores`)
    # every prompt's scores of these texts were kept from an earlier evaluation (`_scores`): `seconds` are that one's,
    # and this answer took a fraction of them (a second look read "13.4 s" after 5 s)
    reused: bool = False
    settings: dict = field(default_factory=dict)
    row: ResultRow | None = None  # the result as the results store keeps it
    notes: list[str] = field(default_factory=list)  # what a reader of the accuracy should know (`leaning_note`...)

    @property
    def n(self) -> int:
        return len(self.predictions)

    def most_confident_errors(self, k: int = 10) -> pd.DataFrame:
        errors = self.predictions[~self.predictions["correct"]]
        return errors.sort_values("confidence", ascending=False).head(k).reset_index(drop=True)

    def summary(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n": self.n,
            "seconds": round(self.seconds, 3),
            **self.settings,
            "notes": self.notes,
        }


def evaluation_kind(model: str, shots_in_context: int) -> str:
    """The kind of GPU call an evaluation on `model` with `shots_in_context` demonstrations is on ZeroGPU
    (`zerogpu.on_gpu`): every tab's evaluations of that kind share one pace."""
    return f"cloze-evaluate:{model}:{shots_in_context}"


def evaluate(
    lm: LM,
    task: Task,
    templates: str | Sequence[str],
    verbalizer: str | dict,
    calibration: str = "none",
    shots_in_context: int = 0,
    limit: int | None = None,
    seed: int = 13,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    split: str = "test",
) -> ClozeEvaluation:
    """Zero-shot (or in-context) cloze evaluation on the task's held-out test split (or its `split`: "all" rows of an
    upload without a split column, since nothing is trained; `Task.cloze_split` says which to use).

    `limit` scores a stratified subset of that many test texts (`Task.test_subset`: the same texts for every
    method). Mean-centring over fewer than MEAN_REFERENCE_TEXTS texts also sees a reference sample of test
    texts (`ClozeSetup.reference_for`), so one text is never centred on itself; the settings say how many.

    Raises:
        PeftlabError: a limit below 1, or a template, verbalizer, calibration or demonstration count the task refuses.
    """
    if limit is not None and limit < 1:
        raise PeftlabError(f"The limit must be at least 1 test text, not {limit}.")
    setup = ClozeSetup.build(task, templates, verbalizer, calibration, shots_in_context, seed)
    if split == "all" and setup.prompts[0].demonstrations:
        raise ValueError("the demonstrations come from the training rows, which split 'all' scores too")
    examples = task.test_subset(limit, split)
    reference = setup.reference_for(task, examples)
    kept = [(SCORES_MEMO, examples)] + ([(REFERENCE_MEMO, reference)] if reference else [])
    reused = all(lm.memo(memo).lookup(_score_key(p, texts)) is not None for p in setup.prompts for memo, texts in kept)
    log_probs, seconds = setup.predict_log_probs(lm, examples, batch_size, progress, reference)
    probs = log_probs.exp().numpy()
    gold = np.array([e["label"] for e in examples])
    predicted = probs.argmax(1)
    names = task.label_names
    table = pd.DataFrame(
        {
            "text": [e["text"] for e in examples],
            "gold": [names[g] for g in gold],
            "predicted": [names[p] for p in predicted],
            "confidence": probs.max(1),
            "correct": gold == predicted,
        }
    )
    for j, name in enumerate(names):
        table[f"p({name})"] = probs[:, j]
    settings = {
        "model": lm.name,
        "task": task.name,
        "templates": [p.template.text for p in setup.prompts],
        "verbalizer": setup.prompts[0].verbalizer.to_json(),
        "calibration": calibration,
        "calibration_reference_texts": len(reference),
        # What was used: a pool smaller than asked, or with a class that ran out, gives fewer or unbalanced ones.
        "shots_in_context": len(setup.prompts[0].demonstrations),
        "shots_in_context_asked": shots_in_context,
        "demonstrations_per_label": task.support(setup.prompts[0].demonstrations),
        "support": task.support(examples),
        "held_out_here": task.held_out_here and split == "test",  # an upload's test rows, held out by peftlab
    }
    row = ResultRow.scored(
        "cloze",
        lm.name,
        task,
        cloze_method_name(calibration, len(setup.prompts[0].demonstrations), len(setup.prompts)),
        settings,
        examples,
        predicted,
        split=split,
        # K per class, as every row counts it (AutoPrompt's, a grid's): the most demonstrations of any one label (the
        # classes are taken in turn); it was the total, so 2 per class read K 4 beside AutoPrompt's K 2 per class
        k=max(settings["demonstrations_per_label"].values(), default=0) or None,
        # the seed picks the demonstrations alone: two zero-shot rows are one run, in-context rows one per seed
        seed=seed if setup.prompts[0].demonstrations else None,
        scoring_seconds=seconds,
        device=str(lm.device),
        metrics={"model_params": lm.num_parameters},
    )
    confusion = confusion_matrix(gold, predicted, len(names))
    notes = [
        leaning_note(confusion, names, setup),
        cut_note(lm, setup, examples),
        word_length_note(lm, setup, examples[0]),
        task.unread_note([p.template for p in setup.prompts]),
    ]
    return ClozeEvaluation(
        label_names=list(names),
        accuracy=accuracy(gold, predicted),
        macro_f1=macro_f1(gold, predicted, len(names)),
        confusion=confusion,
        predictions=table,
        seconds=seconds,
        reused=reused,
        settings=row.settings,
        row=row,
        notes=[note for note in notes if note],
    )


def cut_note(lm: LM, setup: ClozeSetup, examples: Sequence[dict]) -> str | None:
    """A sentence when some texts did not fit the model's input and were scored cut (`Prompt.fit`); None otherwise.
    One text (a typed one) gets it too: 'great movie' 3,000 times was called 'negative' from its last 2,048 tokens
    with no word."""
    cut = max(prompt.cut_count(lm, examples) for prompt in setup.prompts)
    if not cut:
        return None
    demonstrations = len(setup.prompts[0].demonstrations)
    beside = f" beside the {demonstrations} demonstrations" if demonstrations else ""
    texts = "The text does not" if len(examples) == 1 else f"{cut} of the {len(examples)} texts do not"
    they = "it was" if len(examples) == 1 else "they were"
    return (
        f"{texts} fit {lm.name}'s {lm.max_length}-token input{beside}: {they} scored cut to fit (a text before the "
        "mask loses its start, one after it its end)."
    )


def word_length_note(lm: LM, setup: ClozeSetup, example: dict) -> str | None:
    """A sentence when the label words differ in their number of tokens and nothing calibrates the scores; None
    otherwise. A word scores the sum of its tokens' log-probabilities (the module docstring), so a longer word scores
    lower: 'terrible movie' against 'wonderful' called a review 100 % positive, and no word said why."""
    if setup.calibration != "none":  # calibration divides out much of a word's own prior, its length's share too
        return None
    lengths = setup.prompts[0].word_lengths(lm, example)
    if len(set(lengths.values())) < 2:
        return None
    longest, shortest = max(lengths, key=lengths.get), min(lengths, key=lengths.get)
    return (
        f"The label words differ in length: {longest!r} is {lengths[longest]} tokens, {shortest!r} "
        f"{lengths[shortest]}. A word scores the product of its tokens' probabilities, so longer words score lower "
        "and their label is predicted less often: prefer one-token words, or try calibration (contextual or mean)."
    )


def leaning_note(confusion: np.ndarray, names: Sequence[str], setup: ClozeSetup) -> str | None:
    """A sentence when the predictions lean towards one label far more than the gold labels do (`leaning_label`),
    with what to try for these settings; None otherwise."""
    leaning = leaning_label(confusion)
    if leaning is None:
        return None
    label, predicted_share, gold_share = leaning
    note = (
        f"The predictions lean towards '{names[label]}': {predicted_share:.0%} of the texts got it, against "
        f"{gold_share:.0%} of the gold labels, so the accuracy says little about reading the texts."
    )
    demonstrations = setup.prompts[0].demonstrations
    if demonstrations:
        last = names[demonstrations[-1]["label"]]
        # contextual calibration was advised to a run that had it on
        calibrate = "contextual calibration, " if setup.calibration != "contextual" else ""
        return (
            f"{note} Small models lean on the in-context demonstrations' labels and order (the last one here is "
            f"'{last}'; Zhao et al. 2021): try {calibrate}another demonstration seed or fewer demonstrations."
        )
    if setup.calibration == "none":
        return f"{note} The label words' own prior sways the scores: try calibration (contextual or mean)."
    return f"{note} Try other label words or another template."


def cloze_method_name(calibration: str, demonstrations: int, templates: int = 1) -> str:
    """How a cloze result is named among the methods: zero-shot or in-context, an ensemble when it averages several
    templates (Jiang et al. 2020; it was named as one template, and taken as the Compare tab's zero-shot baseline),
    and its calibration."""
    name = "in-context" if demonstrations else "zero-shot"
    name += " ensemble" if templates > 1 else ""
    return name if calibration == "none" else f"{name} · {calibration}"


def demonstrations_note(settings: dict) -> str:
    """The demonstrations an evaluation used, in words: how many of how many asked, and of which labels."""
    per_label = ", ".join(f"{count} {label}" for label, count in settings["demonstrations_per_label"].items())
    note = f"{settings['shots_in_context']} demonstrations in context ({per_label})"
    if settings["shots_in_context"] < settings["shots_in_context_asked"]:
        note += f", of {settings['shots_in_context_asked']} asked: the training pool has no more"
    return note


@dataclass
class SingleTextPrediction:
    """Label probabilities for one text, and the model's own top tokens at the mask."""

    label_probs: dict[str, float]
    top_tokens: list[tuple[str, float]]
    notes: list[str] = field(default_factory=list)  # what a reader of the probabilities should know


def classify_text(
    lm: LM,
    task: Task,
    text: str,
    templates: str | Sequence[str],
    verbalizer: str | dict,
    calibration: str = "none",
    shots_in_context: int = 0,
    seed: int = 13,
    top_k: int = 10,
) -> SingleTextPrediction:
    """Classify one text (typed by a user) with the same settings as `evaluate`.

    Mean-centring needs a set of texts, so for one text it is taken over it and the reference sample of test
    texts (`ClozeSetup.reference_for`), whose scores are computed once per prompt and model: a click costs one text.

    Raises:
        PeftlabError: a text that is not one string or is empty, a text without a line for each column of a template
            reading several (`prompts.typed_example`), top_k below 1, or settings `evaluate` refuses.
    """
    # a list of texts failed as "no attribute 'strip'"; None (an emptied box through the API) is an empty text
    if text is not None and not isinstance(text, str):
        raise PeftlabError(
            f"classify_text takes one text, a string, not a {type(text).__name__}; evaluate scores many."
        )
    if top_k < 1:
        raise PeftlabError(f"top_k (the mask's likeliest tokens shown) must be at least 1, not {top_k}.")
    setup = ClozeSetup.build(task, templates, verbalizer, calibration, shots_in_context, seed)
    example = typed_example(text, list(dict.fromkeys(f for p in setup.prompts for f in p.template.fields)))
    log_probs = setup.predict_log_probs(lm, [example], reference=setup.reference_for(task, [example]))[0][0]
    labels = {name: float(p) for name, p in zip(task.label_names, log_probs.exp())}
    notes = [note for note in (cut_note(lm, setup, [example]), word_length_note(lm, setup, example)) if note]
    return SingleTextPrediction(labels, mask_top_tokens(lm, setup.prompts[0], example, top_k), notes)


def mask_top_tokens(lm: LM, prompt: Prompt, example: dict, top_k: int = 10) -> list[tuple[str, float]]:
    """The model's `top_k` most likely tokens (all of them when the vocabulary is smaller) at the (first) mask
    position over the whole vocabulary, with their probabilities."""
    query = min(prompt.queries(lm, example), key=lambda q: len(q.read_positions))
    ids = torch.tensor([query.input_ids], device=lm.device)
    with torch.inference_mode():
        logits = lm.model(input_ids=ids).logits[0, query.read_positions[0]].float()  # (V,)
    top = logits.softmax(-1).topk(min(top_k, len(logits)))
    return [(token_text(lm.tokenizer, int(i)), float(p)) for p, i in zip(top.values, top.indices)]
