"""AutoPrompt (Shin et al. 2020, "AutoPrompt: Eliciting Knowledge from Language Models with
Automatically Generated Prompts"): gradient-guided search for discrete trigger tokens, and the
paper's automatic label-word search.

Each iteration, for one trigger slot:
1. the gradient g of the training loss (cross-entropy over the verbalizer's labels, scored by the
   same code as the Cloze tab) with respect to that slot's input embedding, summed over a batch;
2. candidates = the top-k vocabulary words by -e_w . g (a first-order estimate of the loss drop);
3. every candidate is re-scored on a fresh batch, all candidates in batched forward passes; for a
   causal LM the text before the slot is run once per example and its key/value cache is shared by
   all candidates, so each candidate costs only the few tokens from the slot to the mask;
4. the best candidate replaces the trigger token if it beats the current one on that batch and (with
   `dev_check`, the default) also raises the mean gold-label log-likelihood on the dev examples.
The search keeps the trigger with the best dev log-likelihood (why: the notes of `benchmarks/autoprompt_rt.py`).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from peftlab.cloze import evaluate, label_log_probs, score_query_lists, words_to_label_log_probs
from peftlab.config import Config, counted, scored_texts_setting, seed_setting, setting
from peftlab.errors import PeftlabError
from peftlab.metrics import accuracy, mean_gold_log_prob
from peftlab.models import LM, capture_head_inputs
from peftlab.prompts import TRIGGER, Prompt, Query, Template, Verbalizer, token_text
from peftlab.scoring import PaddedBatch, Past, word_scores
from peftlab.seeding import seeded
from peftlab.store import ResultRow
from peftlab.tasks import Task
from peftlab.training import Event

POSITION_ORDERS = ("round-robin", "random")


@dataclass
class AutoPromptConfig(Config):
    """Settings of one trigger search; validated on creation."""

    template: str = setting(
        "{text} [T] [T] [T] [T] [T] {mask}",
        "template with [T] slots before {mask}",
        label="template with trigger slots [T]",
    )
    iterations: int = setting(20, "trigger updates to try", minimum=1, cap="iterations")
    # each candidate costs a forward pass per re-scored example: 100,000,000 (the whole vocabulary) ran for
    # minutes on one iteration without a word; the paper re-scores tens
    candidates: int = setting(
        20,
        "top-k words by gradient re-scored per iteration",
        minimum=1,
        maximum=1000,
        label="candidates k",
        subject="Candidates",
    )
    batch_size: int = setting(16, "examples per gradient and per re-scoring batch", minimum=1)
    train_size: int = setting(
        64,
        "training examples (balanced, from the pool); as many again for dev",
        minimum=2,
        requirement="at least 2 (one per class)",
        subject="The train size",
    )
    positions: str = setting(
        "round-robin",
        "which slot to update: round-robin or random",
        choices=POSITION_ORDERS,
        label="slot order",
        subject="Positions",
    )
    filter_non_alphabetic: bool = setting(
        True, "only candidates made of ASCII letters (words)", label="only ASCII words as triggers"
    )
    dev_check: bool = setting(
        True,
        "accept a swap only if it also raises the dev log-likelihood",
        label="dev check",
    )
    init_token: str | None = setting(
        None, "initial trigger word; default mask token (MLM) or 'the'", label="initial trigger"
    )
    seed: int = seed_setting(13, "seed for data sampling and slot order")
    test_limit: int | None = scored_texts_setting("test texts scored with and without the trigger")

    def check_settings(self):
        if TRIGGER not in self.template:
            raise PeftlabError(
                f"The AutoPrompt template needs at least one trigger slot {TRIGGER}, "
                "e.g. '{text} [T] [T] [T] {mask}'."
            )
        # with no {mask}, or two, the template's own check says so ("Put every [T] before {mask}" named neither)
        if self.template.count("{mask}") == 1 and TRIGGER in self.template.split("{mask}", 1)[1]:
            raise PeftlabError(f"Put every trigger slot {TRIGGER} before {{mask}}.")

    @property
    def slots(self) -> int:
        return self.template.count(TRIGGER)


HISTORY_COLUMNS = (  # an AutoPromptEvent's row; the app shows them as headers before the first iteration
    "iteration",
    "trigger",
    "slot",
    "accepted",
    "train log-lik",
    "train acc",
    "dev acc",
    "dev log-lik",
    "seconds so far",  # from the search's start: the iterations' own times are the differences
)


@dataclass(kw_only=True)
class AutoPromptEvent(Event):
    """What one iteration yields; its step is the iteration (0 is the starting trigger)."""

    trigger_ids: list[int]
    trigger_tokens: list[str]
    slot: int | None
    accepted: bool | None  # None at iteration 0: the starting trigger, no swap tried (its row said "false")
    train_log_likelihood: float  # mean gold-label log-prob of the current trigger on the re-scoring batch
    train_accuracy: float
    dev_accuracy: float
    dev_log_likelihood: float  # mean gold-label log-prob of the current trigger on the dev examples
    best_dev_accuracy: float  # dev accuracy of the trigger with the best dev log-likelihood so far
    best_trigger_ids: list[int]
    best_candidates: list[tuple[str, float]]  # top re-scored candidates (token, mean gold log-prob)

    @property
    def iteration(self) -> int:
        return self.step

    def row(self) -> dict:
        """One line of the search's history, keyed by HISTORY_COLUMNS."""
        values = (
            self.iteration,
            "|".join(self.trigger_tokens),
            self.slot,
            self.accepted,
            round(self.train_log_likelihood, 4),
            round(self.train_accuracy, 3),
            round(self.dev_accuracy, 3),
            round(self.dev_log_likelihood, 4),
            round(self.elapsed, 1),
        )
        return dict(zip(HISTORY_COLUMNS, values, strict=True))


def fill_triggers(template: str, tokenizer, trigger_ids: Sequence[int]) -> str:
    """The template with its [T] slots replaced by the trigger tokens' text (what the Cloze tab takes)."""
    pieces = (tokenizer.decode([i]) for i in trigger_ids)
    pieces = iter(p if p[:1].isspace() else " " + p for p in pieces)  # WordPiece/SentencePiece decode without the space
    return re.sub(r" *" + re.escape(TRIGGER), lambda _: next(pieces), template)


def remove_triggers(template: str) -> str:
    """The manual baseline: the same template with its [T] slots removed."""
    return re.sub(r" *" + re.escape(TRIGGER), "", template)


def candidate_vocabulary(lm: LM, filter_non_alphabetic: bool) -> torch.Tensor:
    """(V,) bool: ids a trigger may take. Special tokens never; with the filter, whole words of ASCII letters.

    "Whole words" means word-initial pieces: a byte-level BPE token with its leading-space mark (Ġ), a
    SentencePiece token with ▁, a WordPiece token without ##; so a trigger reads as words. Computed once
    per model and kept on its LM.
    """
    return lm.memo("candidate vocabulary").get(
        filter_non_alphabetic, lambda: _candidate_vocabulary(lm, filter_non_alphabetic)
    )


def _candidate_vocabulary(lm: LM, filter_non_alphabetic: bool) -> torch.Tensor:
    size = lm.model.get_input_embeddings().weight.shape[0]
    allowed = torch.ones(size, dtype=torch.bool)
    allowed[[i for i in lm.tokenizer.all_special_ids if i < size]] = False
    if filter_non_alphabetic:
        tokens = [t or "" for t in lm.tokenizer.convert_ids_to_tokens(list(range(min(size, len(lm.tokenizer)))))]
        marked = sum(t.startswith(("Ġ", "▁")) for t in tokens) > sum(
            t.startswith("##") for t in tokens
        )  # word-start marks, not ## continuations
        for i, token in enumerate(tokens):
            word_start = token.startswith(("Ġ", "▁")) if marked else not token.startswith("##")
            word = token.lstrip("Ġ▁")
            if not (word_start and word.isascii() and word.isalpha()):
                allowed[i] = False
        allowed[len(tokens) :] = False
    return allowed


def _initial_trigger(lm: LM, config: AutoPromptConfig) -> int:
    if config.init_token is None and lm.kind == "mlm":
        return lm.tokenizer.mask_token_id
    word = (config.init_token or "the").strip()
    ids = lm.tokenizer(" " + word if lm.kind == "causal" else word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise PeftlabError(
            f"The initial trigger word {word!r} is {len(ids)} tokens for this model; pick a one-token word."
        )
    return ids[0]


GRADIENT_ROWS = 16  # examples in one backward pass; a larger batch adds the gradients of several


def trigger_gradient(lm: LM, prompt: Prompt, examples: Sequence[dict]) -> torch.Tensor:
    """(slots, H) gradient of the summed cross-entropy over labels w.r.t. each trigger slot's embedding.

    Only the trigger embeddings get a gradient (`torch.autograd.grad`): the shared model's weights are
    frozen and nothing accumulates on them. The loss is a sum over examples, so it is taken GRADIENT_ROWS
    examples at a time and their gradients added: memory stays that of GRADIENT_ROWS whatever batch a visitor types.
    """
    embedding_matrix = lm.model.get_input_embeddings().weight
    trigger_embeds = embedding_matrix[list(prompt.trigger_ids)].detach().float().requires_grad_(True)
    gradient = torch.zeros_like(trigger_embeds)
    for start in range(0, len(examples), GRADIENT_ROWS):
        part = examples[start : start + GRADIENT_ROWS]
        query_lists = [prompt.queries(lm, example) for example in part]
        with torch.enable_grad():
            scores = word_scores(lm, query_lists, len(prompt.verbalizer.flat_words), trigger_embeds=trigger_embeds)
            log_probs = words_to_label_log_probs(scores, prompt.verbalizer)  # (b, L)
            gold = torch.tensor([e["label"] for e in part], device=log_probs.device)
            loss = -log_probs.gather(1, gold[:, None]).sum()
            gradient += torch.autograd.grad(loss, trigger_embeds)[0]
    return gradient


def top_candidates(
    embedding_matrix: torch.Tensor,
    gradient: torch.Tensor,
    allowed: torch.Tensor,
    k: int,
    exclude: Sequence[int] = (),
) -> list[int]:
    """The k allowed ids with the largest -e_w . g: the first-order estimate of the largest loss drop."""
    scores = -(embedding_matrix.float() @ gradient.float())  # (V,)
    scores = scores.masked_fill(~allowed.to(scores.device), float("-inf"))
    if exclude:
        scores[list(exclude)] = float("-inf")
    k = min(k, int(torch.isfinite(scores).sum()))  # never pad the list with disallowed ids
    return scores.topk(k).indices.tolist()


def _with_slot(prompt: Prompt, slot: int, token: int) -> Prompt:
    ids = list(prompt.trigger_ids)
    ids[slot] = token
    return Prompt(prompt.template, prompt.verbalizer, trigger_ids=tuple(ids))


RESCORED_ROWS = 512  # (candidate, example) inputs in one re-scoring pass


def rescore_candidates(
    lm: LM,
    prompt: Prompt,
    slot: int,
    tokens: Sequence[int],
    examples: Sequence[dict],
    share_prefix: bool = True,
) -> torch.Tensor:
    """(len(tokens), B, L) label log-probs with each token in `slot`, all candidates batched.

    With `share_prefix` and a causal LM whose mask is read as the next token, the text before the
    slot runs once per example and its key/value cache serves every candidate.
    """
    base = [prompt.queries(lm, example) for example in examples]
    shareable = lm.kind == "causal" and all(
        len(qs) == 1 and qs[0].read_positions == [len(qs[0].input_ids) - 1] for qs in base
    )
    suffix_lengths = {len(qs[0].input_ids) - qs[0].trigger_positions[slot] for qs in base} if shareable else set()
    if share_prefix and shareable and len(suffix_lengths) == 1:
        # candidates (and, past RESCORED_ROWS, examples) in chunks, so memory stays that of RESCORED_ROWS inputs
        # whatever k and batch size a visitor types
        queries = [qs[0] for qs in base]
        parts = [queries[i : i + RESCORED_ROWS] for i in range(0, len(queries), RESCORED_ROWS)]
        per_chunk = max(1, RESCORED_ROWS // len(parts[0]))
        chunks = [tokens[i : i + per_chunk] for i in range(0, len(tokens), per_chunk)]
        return torch.cat(
            [
                torch.cat([_rescore_shared_prefix(lm, prompt, slot, chunk, part) for part in parts], 1)
                for chunk in chunks
            ]
        )
    query_lists = [_with_slot(prompt, slot, token).queries(lm, e) for token in tokens for e in examples]
    return score_query_lists(lm, query_lists, prompt.verbalizer).view(len(tokens), len(examples), -1)


def _rescore_shared_prefix(lm: LM, prompt: Prompt, slot: int, tokens: Sequence[int], queries) -> torch.Tensor:
    """(C, B, L) label log-probs; see `rescore_candidates`."""
    model, device = lm.model, lm.device
    n_candidates, n_examples = len(tokens), len(queries)
    cuts = [q.trigger_positions[slot] for q in queries]
    prefixes = [type(q)(q.input_ids[:cut], [cut - 1]) for q, cut in zip(queries, cuts)]
    suffix = torch.tensor([q.input_ids[cut:] for q, cut in zip(queries, cuts)])  # (B, S), same S for all
    with torch.inference_mode():
        batch = PaddedBatch.build(prefixes, "causal", lm.tokenizer.pad_token_id)
        cache = model(**batch.inputs(device), use_cache=True, logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(n_candidates)  # rows: example-major, candidate-minor
        suffix_ids = suffix.repeat_interleave(n_candidates, 0)  # (B*C, S)
        suffix_ids[:, 0] = torch.tensor(list(tokens)).repeat(n_examples)
        prefix_mask = batch.attention_mask.to(device).repeat_interleave(n_candidates, 0)  # (B*C, P)
        suffixes = dict(
            input_ids=suffix_ids.to(device),
            attention_mask=torch.ones_like(suffix_ids, device=device),
            position_ids=torch.arange(suffix_ids.shape[1], device=device).expand_as(suffix_ids),
        )
        # each row's suffix after its prefix's keys and values, at the positions after its prefix's tokens
        inputs = Past(cache, prefix_mask, prefix_mask.sum(1)).continued(suffixes)
        logits = model(**inputs, logits_to_keep=1).logits[:, -1].float()  # (B*C, V)
    word_ids = torch.tensor([ids[0] for _, ids in queries[0].targets])
    word_index = [w for w, _ in queries[0].targets]
    scores = torch.empty(logits.shape[0], len(prompt.verbalizer.flat_words))
    scores[:, word_index] = logits.log_softmax(-1)[:, word_ids.to(device)].cpu()
    label_log_probs_ = words_to_label_log_probs(scores, prompt.verbalizer)  # (B*C, L)
    return label_log_probs_.view(n_examples, n_candidates, -1).transpose(0, 1)


def search_triggers(
    lm: LM,
    task: Task,
    verbalizer: str | dict,
    config: AutoPromptConfig,
    stop: threading.Event | None = None,
) -> Iterator[AutoPromptEvent]:
    """Run the search, yielding an event after the start and after every iteration. A set `stop` ends it at the
    next stage of an iteration (gradient, re-scoring, dev check): with 50 trigger slots one iteration ran for minutes
    after Stop; the unfinished iteration is dropped.

    Raises:
        PeftlabError: a template, verbalizer or config that does not fit the task, or more trigger slots than the
            model's input holds.
    """
    started = time.perf_counter()
    template = Template.parse(config.template, task.text_fields)
    verbalizer_obj = Verbalizer.parse(verbalizer, task.label_names)
    if config.slots + 8 > lm.max_length:
        raise PeftlabError(f"{config.slots} trigger slots do not fit the model's {lm.max_length}-token input.")
    train, dev = balanced_examples(task, config.train_size, config.seed)
    rng = random.Random(config.seed)
    prompt = Prompt(template, verbalizer_obj, trigger_ids=(_initial_trigger(lm, config),) * config.slots)
    prompt.check_room(lm)
    label_word_ids = {i for qs in prompt.queries(lm, train[0]) for _, ids in qs.targets for i in ids}
    allowed = candidate_vocabulary(lm, config.filter_non_alphabetic)
    embedding_matrix = lm.model.get_input_embeddings().weight.detach()

    dev_gold = [e["label"] for e in dev]

    def dev_scores(p: Prompt) -> tuple[float, float]:
        """(accuracy, mean gold-label log-prob) on the dev examples."""
        log_probs = label_log_probs(lm, p, dev)
        return accuracy(dev_gold, log_probs.argmax(1)), mean_gold_log_prob(log_probs, dev_gold)

    def batch() -> list[dict]:
        return rng.sample(train, min(config.batch_size, len(train)))

    dev_now = best_dev = dev_scores(prompt)
    best_ids = list(prompt.trigger_ids)

    def tokens(ids: Sequence[int]) -> list[str]:
        return [token_text(lm.tokenizer, i) for i in ids]

    yield AutoPromptEvent(
        step=0,
        trigger_ids=best_ids,
        trigger_tokens=tokens(best_ids),
        slot=None,
        accepted=None,
        train_log_likelihood=float("nan"),
        train_accuracy=float("nan"),
        dev_accuracy=dev_now[0],
        dev_log_likelihood=dev_now[1],
        best_dev_accuracy=best_dev[0],
        best_trigger_ids=best_ids,
        best_candidates=[],
        elapsed=time.perf_counter() - started,
    )

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    for iteration in range(1, config.iterations + 1):
        if stopped():
            return
        slot = (iteration - 1) % config.slots if config.positions == "round-robin" else rng.randrange(config.slots)
        gradient = trigger_gradient(lm, prompt, batch())[slot]
        current = prompt.trigger_ids[slot]
        excluded = sorted(label_word_ids | {current})
        candidates = top_candidates(embedding_matrix, gradient, allowed, config.candidates, excluded)
        rescoring_batch = batch()
        gold = torch.tensor([e["label"] for e in rescoring_batch])
        if stopped():
            return
        log_probs = rescore_candidates(lm, prompt, slot, [current] + candidates, rescoring_batch)  # (1+k, B, L)
        objective = log_probs[:, torch.arange(len(gold)), gold].mean(1)  # (1+k,) mean gold log-prob
        if stopped():
            return
        best = int(objective[1:].argmax()) + 1
        accepted = False
        if objective[best] > objective[0]:  # only a changed trigger needs a dev evaluation
            trial = _with_slot(prompt, slot, candidates[best - 1])
            trial_dev = dev_scores(trial)
            accepted = not config.dev_check or trial_dev[1] > dev_now[1]
            if accepted:
                prompt, dev_now = trial, trial_dev
        kept = best if accepted else 0
        if dev_now[1] > best_dev[1]:
            best_dev, best_ids = dev_now, list(prompt.trigger_ids)
        ranked = objective[1:].argsort(descending=True)[:5].tolist()
        yield AutoPromptEvent(
            step=iteration,
            trigger_ids=list(prompt.trigger_ids),
            trigger_tokens=tokens(list(prompt.trigger_ids)),
            slot=slot,
            accepted=accepted,
            train_log_likelihood=float(objective[kept]),
            train_accuracy=float((log_probs[kept].argmax(1) == gold).float().mean()),
            dev_accuracy=dev_now[0],
            dev_log_likelihood=dev_now[1],
            best_dev_accuracy=best_dev[0],
            best_trigger_ids=best_ids,
            best_candidates=[(tokens([candidates[j]])[0], float(objective[j + 1])) for j in ranked],
            elapsed=time.perf_counter() - started,
        )


@dataclass(frozen=True)
class FinalScoring:
    """Yielded by `autoprompt_run` when the search has ended, before the best trigger and the template without it
    score the test texts (`texts` of them, twice): after a Stop that scoring went on for minutes without a word."""

    texts: int


def mask_representations(lm: LM, prompt: Prompt, examples: Sequence[dict], batch_size: int = 32) -> torch.Tensor:
    """(N, H) what the output embedding layer sees at the mask: the vector scored against every word.

    A causal query holds a label word and the template's words after the mask (`prompts.Query`), so it is read
    cut after the mask (its first read position): its last token was the word's, or the template's full stop."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(examples), batch_size):
            queries = [prompt.queries(lm, e)[0] for e in examples[start : start + batch_size]]
            if lm.kind == "causal":
                queries = [Query(q.input_ids[: q.read_positions[0] + 1], q.read_positions[:1]) for q in queries]
            batch = PaddedBatch.build(queries, lm.kind, lm.tokenizer.pad_token_id)
            inputs = batch.inputs(lm.device)
            if lm.kind == "causal":
                inputs.update(logits_to_keep=1)
            with capture_head_inputs(lm.model) as captured:
                lm.model(**inputs)
            hidden = captured[-1]  # (B, 1 or T, H)
            for row, q in enumerate(queries):
                column = -1 if lm.kind == "causal" else q.read_positions[0] + batch.shift[row]
                rows.append(hidden[row, column].float().cpu())
    return torch.stack(rows)


def balanced_examples(task: Task, train_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, dev): `train_size` training examples split evenly over the labels, and as many again for dev.

    Raises:
        PeftlabError: a class with too few examples, said in the search's own terms (its train size).
    """
    per_class = max(1, train_size // len(task.label_names))
    sizes = task.label_counts()
    short = [name for name, size in sizes.items() if size < 2 * per_class]
    if short:
        most = len(sizes) * (min(sizes.values()) // 2)
        raise PeftlabError(
            f"A train size of {train_size} takes {counted(per_class, 'example')} of each class for training and as "
            f"many again for dev, but class {short[0]!r} has only {sizes[short[0]]} in the training pool of "
            f"{task.name!r}; "
            + (f"use a train size of at most {most}." if most >= len(sizes) else "add examples of that class.")
        )
    return task.few_shot(per_class, seed)


def search_label_words(
    lm: LM,
    task: Task,
    template: str,
    words_per_label: int = 3,
    train_size: int = 256,
    seed: int = 13,
    filter_non_alphabetic: bool = True,
    steps: int = 200,
) -> dict[str, list[str]]:
    """AutoPrompt's label-word search: a logistic probe on the mask representation, projected onto words.

    Fit p(y | h) = softmax(W h + b) on the training examples' mask representations h, then score
    every vocabulary word w by p(y | e_w) with e_w its output embedding; each label takes its top words.

    Raises:
        PeftlabError: fewer than 1 word per label, or a template that does not fit the task.
    """
    if words_per_label < 1:
        raise PeftlabError(f"Words per label must be at least 1, not {words_per_label}.")
    template_obj = Template.parse(remove_triggers(template), task.text_fields)
    placeholder = Verbalizer({label: ("the",) for label in task.label_names})  # only the mask position is read
    prompt = Prompt(template_obj, placeholder)
    train, _ = balanced_examples(task, train_size, seed)
    features = mask_representations(lm, prompt, train)  # (N, H)
    gold = torch.tensor([e["label"] for e in train])
    with seeded(seed):
        probe = torch.nn.Linear(features.shape[1], len(task.label_names))
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-1)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(probe(features), gold).backward()
        optimizer.step()
    output_embeddings = lm.model.get_output_embeddings().weight.detach().float().cpu()  # (V, H)
    with torch.no_grad():
        word_label_log_probs = probe(output_embeddings).log_softmax(-1)  # (V, L)
    allowed = candidate_vocabulary(lm, filter_non_alphabetic)[: output_embeddings.shape[0]].clone()
    words, taken = {}, set()
    for label_index, label in enumerate(task.label_names):
        scores = word_label_log_probs[:, label_index].masked_fill(~allowed, float("-inf"))
        words[label] = []
        for token in scores.argsort(descending=True).tolist():
            if len(words[label]) == words_per_label or scores[token] == float("-inf"):
                break
            word = lm.tokenizer.decode([token]).strip()
            if word and word not in taken:  # a word serves one label only (" good" and "good" are one word)
                words[label].append(word)
                taken.add(word)
    return words


@dataclass
class AutoPromptResult:
    """A finished (or stopped) search, measured on the test split against the same template without triggers."""

    trigger_tokens: list[str]
    template: str  # the template with the trigger text in its slots
    verbalizer: dict[str, list[str]]
    dev_accuracy: float
    test_accuracy: float
    manual_test_accuracy: float
    test_texts: int
    support: dict[str, int]  # test texts scored per label
    seconds: float
    history: list[dict]
    iterations_done: int = 0
    stopped: bool = False  # a stop flag ended the search before its iterations did
    rows: list[ResultRow] = field(default_factory=list)  # the found prompt's and the zero-shot manual prompt's, stored

    def trigger_note(self, train_size: int) -> str | None:
        """A sentence when the found trigger scores worse than the same prompt without it, beyond doubt (a 95 %
        paired bootstrap interval over the test texts below 0, `stats.paired_difference`), or None: a search that
        took 90 % down to 50 % was shown as its headline result with nothing said. `train_size`: the texts it
        searched on."""
        from peftlab.stats import paired_difference

        found, manual = self.rows
        difference = paired_difference(found.gold, [found.predictions], [manual.predictions])
        if difference.high >= 0:
            return None
        lowers = (
            f"lowers test accuracy by {-difference.difference * 100:.1f} points against the same prompt without it "
            f"(95 % paired interval {difference.low * 100:+.1f} to {difference.high * 100:+.1f} on "
            f"{self.test_texts} test texts)"
        )
        if not any(row["accepted"] for row in self.history):  # nothing was searched, so nothing was fitted
            return (
                f"The trigger, still the one the search started from (no swap was accepted), {lowers}. Keep the "
                "prompt without the trigger, or run more iterations."
            )
        return (
            f"The trigger {lowers}: a search on {train_size} training texts fitted them, not the task (Shin et al. "
            "2020 searched on whole training sets). Keep the prompt without the trigger, or search on more training "
            "texts."
        )

    def warnings(self, train_size: int, task: Task) -> list[str]:
        """What the tab and the command warn of after a search: the `trigger_note`, the found prompt leaning on one
        label (`report.leaning_notes` of its row alone: the prompt without the trigger is said as "without" beside
        it, and a note naming it "zero-shot" read as the Compare tab's baseline), and a field of `task` the template
        leaves out (`Task.unread_note`: the default template reads {text} alone, a pair task's hypothesis never)."""
        from peftlab.report import leaning_notes

        notes = [self.trigger_note(train_size), *leaning_notes(self.rows[:1], task.label_names)]
        return [note for note in [*notes, task.unread_note([self.template])] if note]

    def summary(self) -> dict:
        return {
            "trigger": self.trigger_tokens,
            "template": self.template,
            "verbalizer": self.verbalizer,
            "dev_accuracy": self.dev_accuracy,
            "test_accuracy": self.test_accuracy,
            "manual_test_accuracy": self.manual_test_accuracy,
            "split": "test",
            "rows_scored": self.test_texts,
            "support": self.support,
            "iterations": self.iterations_done,
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
        }


def test_accuracy(lm: LM, prompt: Prompt, examples: Sequence[dict]) -> float:
    predicted = label_log_probs(lm, prompt, examples).argmax(1)
    return float((predicted == torch.tensor([e["label"] for e in examples])).float().mean())


def autoprompt_run(
    lm: LM,
    task: Task,
    verbalizer: str | dict,
    config: AutoPromptConfig,
    stop: threading.Event | None = None,
) -> Iterator[AutoPromptEvent | FinalScoring | AutoPromptResult]:
    """The search's events, a FinalScoring, then its result: the best trigger (by dev log-likelihood) and the same
    template without triggers, both scored on the test split. When `stop` ends the search, the best trigger so far
    is scored and the result says it stopped.

    Raises:
        PeftlabError: a template, verbalizer or config that does not fit the task or the model.
    """
    started = time.perf_counter()
    events = []
    for event in search_triggers(lm, task, verbalizer, config, stop):
        events.append(event)
        yield event
    last = events[-1]
    verbalizer_obj = Verbalizer.parse(verbalizer, task.label_names)
    found = Prompt(
        Template.parse(config.template, task.text_fields), verbalizer_obj, trigger_ids=tuple(last.best_trigger_ids)
    )
    test = task.test_subset(config.test_limit)
    search_seconds = time.perf_counter() - started
    yield FinalScoring(len(test))
    template = fill_triggers(config.template, lm.tokenizer, last.best_trigger_ids)
    stopped = stop is not None and stop.is_set() and last.iteration < config.iterations
    # a stopped search is stored as the search it was: "iterations 20" of a search stopped at its start stood on the
    # comparison as a finished one
    done = config.to_dict() | ({"iterations": last.iteration} if stopped else {})
    settings = {"config": done, "verbalizer": verbalizer_obj.to_json()}
    if stopped:
        settings["stopped"] = f"after {last.iteration} of {counted(config.iterations, 'iteration')}"
    scoring_started = time.perf_counter()
    predicted = label_log_probs(lm, found, test).argmax(1).tolist()
    found_row = ResultRow.scored(
        "autoprompt",
        lm.name,
        task,
        "autoprompt",
        settings | {"found_template": template},  # what the search found: it differs between seeds
        test,
        predicted,
        k=max(1, config.train_size // len(task.label_names)),
        seed=config.seed,
        train_seconds=search_seconds,
        scoring_seconds=time.perf_counter() - scoring_started,
        device=str(lm.device),
        metrics={"model_params": lm.num_parameters},
    )
    # The prompt without its trigger is the zero-shot cloze baseline on the same texts, stored as the Cloze tab and a
    # grid store it: Compare sets the trigger against it (a "manual prompt" line with the search's K was no baseline).
    manual = evaluate(lm, task, remove_triggers(config.template), verbalizer_obj.to_json(), limit=len(test))
    rows = [found_row, manual.row]
    yield AutoPromptResult(
        trigger_tokens=[token_text(lm.tokenizer, i) for i in last.best_trigger_ids],
        template=template,
        verbalizer={label: list(words) for label, words in verbalizer_obj.words.items()},
        dev_accuracy=last.best_dev_accuracy,
        test_accuracy=rows[0].accuracy,
        manual_test_accuracy=rows[1].accuracy,
        test_texts=len(test),
        support=task.support(test),
        seconds=time.perf_counter() - started,
        history=[e.row() for e in events],
        iterations_done=last.iteration,
        stopped=stopped,
        rows=rows,
    )


def run_autoprompt(
    lm: LM,
    task: Task,
    verbalizer: str | dict | None,
    config: AutoPromptConfig,
    stop: threading.Event | None = None,
    on_event=None,
) -> AutoPromptResult:
    """`autoprompt_run` to its end, label words searched first when `verbalizer` is None; `on_event` sees each
    iteration's AutoPromptEvent."""
    started = time.perf_counter()
    if verbalizer is None:
        verbalizer = search_label_words(lm, task, config.template, train_size=config.train_size, seed=config.seed)
    for item in autoprompt_run(lm, task, verbalizer, config, stop):
        if isinstance(item, AutoPromptResult):
            item.seconds = time.perf_counter() - started  # the label-word search counts too
            return item
        if on_event and isinstance(item, AutoPromptEvent):
            on_event(item)
    raise AssertionError("autoprompt_run ends with its result")
