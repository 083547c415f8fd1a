"""AutoPrompt: candidate selection, the trigger gradient, re-scoring, filters, the search loop and bad input.

Every search here runs a few iterations on the tiny random models of conftest.py, so the tests are about
the mechanics (the right gradient, the right argmax, never a worse trigger), not about finding good prompts.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import peftlab.autoprompt as autoprompt
from peftlab.autoprompt import (
    AutoPromptConfig,
    autoprompt_run,
    candidate_vocabulary,
    fill_triggers,
    remove_triggers,
    rescore_candidates,
    run_autoprompt,
    search_label_words,
    search_triggers,
    top_candidates,
    trigger_gradient,
)
from peftlab.cli import main
from peftlab.cloze import label_log_probs
from peftlab.errors import PeftlabError
from peftlab.models import LM
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.tasks import Task

VERBALIZER = {"negative": ["bad"], "positive": ["good"]}  # one token in both tiny tokenizers
TEMPLATE = "{text} [T] [T] {mask}"

_POSITIVE = ["great", "good", "fun"]
_NEGATIVE = ["bad", "awful", "boring"]
_NOUNS = ["movie", "film", "plot", "story"]


@pytest.fixture(scope="module")
def task() -> Task:
    """12 training rows per class (enough for few_shot(6)), made of words both tiny tokenizers know."""
    train = [
        {"text": f"the {noun} was {adj}", "label": y}
        for y, adjectives in ((1, _POSITIVE), (0, _NEGATIVE))
        for adj in adjectives
        for noun in _NOUNS
    ]
    test = [
        {"text": t, "label": y}
        for t, y in [
            ("great fun", 1),
            ("i loved it", 1),
            ("a good story", 1),
            ("really great acting", 1),
            ("awful", 0),
            ("i hated the acting", 0),
            ("a boring plot", 0),
            ("too long and bad", 0),
        ]
    ]
    return Task(
        name="tiny-sentiment-24", label_names=["negative", "positive"], text_fields=["text"], train=train, test=test
    )


def small_config(**changes) -> AutoPromptConfig:
    settings = dict(template=TEMPLATE, iterations=4, candidates=5, batch_size=4, train_size=8, seed=13)
    return AutoPromptConfig(**(settings | changes))


def word_ids(lm, word: str) -> list[int]:
    """The token ids of a label word as it follows a space in a sentence."""
    return lm.tokenizer(" " + word if lm.kind == "causal" else word, add_special_tokens=False).input_ids


def one_token(lm, word: str) -> int:
    ids = word_ids(lm, word)
    assert len(ids) == 1, (word, ids)
    return ids[0]


def make_prompt(lm, task, template=TEMPLATE, verbalizer=VERBALIZER, triggers=("the", "movie")) -> Prompt:
    return Prompt(
        Template.parse(template, task.text_fields),
        Verbalizer.parse(verbalizer, task.label_names),
        trigger_ids=tuple(one_token(lm, w) for w in triggers),
    )


def gold_mean(log_probs: torch.Tensor, examples) -> float:
    gold = torch.tensor([e["label"] for e in examples])
    return float(log_probs[torch.arange(len(examples)), gold].mean())


# 1. top_candidates is the argmax of -e_w . g


@pytest.mark.parametrize("k", [1, 5, 17])
def test_top_candidates_equals_brute_force_argmax(tiny_lm, k):
    embeddings = tiny_lm.model.get_input_embeddings().weight.detach()
    generator = torch.Generator().manual_seed(k)
    gradient = torch.randn(embeddings.shape[1], generator=generator)
    allowed = candidate_vocabulary(tiny_lm, True)
    exclude = [i for i in range(embeddings.shape[0]) if allowed[i]][:3]  # a few allowed ids, excluded anyway

    scored = []
    for w in range(embeddings.shape[0]):  # the loop the matrix product replaces
        if not allowed[w] or w in exclude:
            continue
        dot = sum(float(embeddings[w, h]) * float(gradient[h]) for h in range(embeddings.shape[1]))
        scored.append((-dot, w))
    expected = [w for _, w in sorted(scored, reverse=True)[:k]]

    assert top_candidates(embeddings, gradient, allowed, k, exclude) == expected


def test_top_candidates_never_pads_with_disallowed_ids(tiny_mlm):
    embeddings = tiny_mlm.model.get_input_embeddings().weight.detach()
    allowed = torch.zeros(embeddings.shape[0], dtype=torch.bool)
    allowed[[10, 11, 12, 13]] = True
    got = top_candidates(embeddings, torch.randn(embeddings.shape[1]), allowed, k=20, exclude=[13])
    assert sorted(got) == [10, 11, 12]


# 2. trigger_gradient is the gradient of the summed label cross-entropy


def independent_loss(lm, prompt: Prompt, examples, leaf: torch.Tensor) -> torch.Tensor:
    """Summed gold-label cross-entropy, one unpadded sequence at a time, trigger rows taken from `leaf`."""
    embed = lm.model.get_input_embeddings()
    labels = [label for label, _ in prompt.verbalizer.flat_words]
    total = torch.zeros(())
    for example in examples:
        word_log_probs = [None] * len(labels)
        for query in prompt.queries(lm, example):
            rows = list(embed(torch.tensor(query.input_ids)).detach().float())  # T x (H,)
            for slot, position in enumerate(query.trigger_positions):
                rows[position] = leaf[slot]
            logits = lm.model(inputs_embeds=torch.stack(rows)[None]).logits[0].float()  # (T, V)
            log_probs = logits.log_softmax(-1)
            for word, token_ids in query.targets:
                word_log_probs[word] = sum(log_probs[p, t] for p, t in zip(query.read_positions, token_ids))
        label_scores = []
        for label in range(len(prompt.verbalizer.words)):
            mine = torch.stack([s for s, lab in zip(word_log_probs, labels) if lab == label])
            label_scores.append(torch.logsumexp(mine, 0) - math.log(len(mine)))
        total = total - torch.stack(label_scores).log_softmax(0)[example["label"]]
    return total


def test_trigger_gradient_matches_independent_autograd(tiny_lm, task):
    # two words per label, one of them split into several pieces by both tokenizers
    verbalizer = {"negative": ["bad", "terrible"], "positive": ["good", "great"]}
    prompt = make_prompt(
        tiny_lm, task, "Review: {text} [T] [T] [T] Sentiment:{mask}", verbalizer, ("the", "movie", "was")
    )
    examples = task.train[:3] + task.train[-3:]  # different lengths, both labels
    flags = [p.requires_grad for p in tiny_lm.model.parameters()]

    got = trigger_gradient(tiny_lm, prompt, examples)

    assert [p.requires_grad for p in tiny_lm.model.parameters()] == flags  # weights restored
    embed = tiny_lm.model.get_input_embeddings().weight
    leaf = embed[list(prompt.trigger_ids)].detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        (expected,) = torch.autograd.grad(independent_loss(tiny_lm, prompt, examples, leaf), leaf)
    assert got.shape == (3, embed.shape[1])
    assert expected.abs().max() > 1e-3  # not trivially zero
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


# 3. re-scoring: the shared-prefix KV-cache path, the plain batched path and one-by-one scoring agree


@pytest.mark.parametrize("template", [TEMPLATE, "Review: {text} [T] [T] Sentiment:{mask}"])
def test_rescore_shared_prefix_equals_plain_and_one_by_one(tiny_causal, task, template, monkeypatch):
    prompt = make_prompt(tiny_causal, task, template)
    examples = [
        task.train[0],
        task.train[5],
        {"text": "i loved this film and the cast was very good", "label": 1},
        {"text": "bad", "label": 0},
    ]  # different lengths: the prefixes are left-padded
    tokens = [one_token(tiny_causal, w) for w in ("great", "plot", "the", "awful", "was")]
    shared_calls = []
    original = autoprompt._rescore_shared_prefix
    monkeypatch.setattr(autoprompt, "_rescore_shared_prefix", lambda *a: shared_calls.append(1) or original(*a))

    for slot in range(2):
        shared = rescore_candidates(tiny_causal, prompt, slot, tokens, examples, share_prefix=True)
        plain = rescore_candidates(tiny_causal, prompt, slot, tokens, examples, share_prefix=False)
        assert shared.shape == plain.shape == (len(tokens), len(examples), 2)
        assert torch.allclose(shared, plain, atol=1e-4)
        for c, token in enumerate(tokens):
            ids = list(prompt.trigger_ids)
            ids[slot] = token
            alone = label_log_probs(
                tiny_causal, Prompt(prompt.template, prompt.verbalizer, trigger_ids=tuple(ids)), examples
            )
            assert torch.allclose(plain[c], alone, atol=1e-4)
            assert torch.allclose(shared[c], alone, atol=1e-4)
    assert len(shared_calls) == 2  # the KV-cache path really ran, once per slot


def test_a_sliding_window_model_rescores_its_candidates_as_one_by_one(tiny_causal, task, monkeypatch):
    """A sliding-window layer (Mistral) keeps only its window's keys and reads them by column; item starts in cloze
    scoring pad between a start and its rest, so there such a model scores its queries whole. Here the prefixes are
    padded on the left only and every suffix is as long, so each column is the same token in prefix and suffix: the
    continued cache gives the whole queries' scores, and the re-scoring keeps its speed."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(**{**tiny_causal.model.config.to_dict(), "sliding_window": 4})
    torch.manual_seed(0)
    mistral = LM(MistralForCausalLM(config).eval(), tiny_causal.tokenizer, "causal", "tiny-mistral")
    unwindowed = MistralForCausalLM(MistralConfig(**{**config.to_dict(), "sliding_window": None})).eval()
    unwindowed.load_state_dict(mistral.model.state_dict())
    prompt = make_prompt(mistral, task)
    examples = [task.train[0], {"text": "i loved this film and the cast was very good", "label": 1}]
    tokens = [one_token(mistral, w) for w in ("great", "plot", "awful")]
    unwindowed = LM(unwindowed, tiny_causal.tokenizer, "causal", "tiny-mistral-unwindowed")
    assert not torch.allclose(label_log_probs(mistral, prompt, examples), label_log_probs(unwindowed, prompt, examples))
    shared, original = [], autoprompt._rescore_shared_prefix
    monkeypatch.setattr(autoprompt, "_rescore_shared_prefix", lambda *a: shared.append(1) or original(*a))
    scores = rescore_candidates(mistral, prompt, 0, tokens, examples)
    assert shared, "the continued cache was not used"
    for c, token in enumerate(tokens):
        alone = label_log_probs(
            mistral, Prompt(prompt.template, prompt.verbalizer, trigger_ids=(token, *prompt.trigger_ids[1:])), examples
        )
        assert torch.allclose(scores[c], alone, atol=1e-4)


def test_many_candidates_are_rescored_in_chunks_of_bounded_size(tiny_causal, task, monkeypatch):
    """A huge k (a visitor typed 100000000) once put every allowed word times the batch in one forward pass and
    filled the memory; candidates now go in chunks of at most RESCORED_ROWS inputs, with the same scores."""
    prompt = make_prompt(tiny_causal, task, TEMPLATE)
    examples = [task.train[0], task.train[5], {"text": "bad", "label": 0}]
    tokens = [one_token(tiny_causal, w) for w in ("great", "plot", "the", "awful", "was")]
    whole = rescore_candidates(tiny_causal, prompt, 0, tokens, examples)
    rows, original = [], autoprompt._rescore_shared_prefix
    monkeypatch.setattr(autoprompt, "RESCORED_ROWS", 6)  # two candidates x three examples
    monkeypatch.setattr(
        autoprompt,
        "_rescore_shared_prefix",
        lambda lm, p, s, c, q: rows.append(len(c) * len(q)) or original(lm, p, s, c, q),
    )
    chunked = rescore_candidates(tiny_causal, prompt, 0, tokens, examples)
    assert rows == [6, 6, 3]
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_a_batch_larger_than_the_row_bounds_is_scored_and_differentiated_in_bounded_chunks(
    tiny_causal, task, monkeypatch
):
    """batch size 100000000 (with a train size of thousands) once put every example in one backward pass and one
    re-scoring pass (8.2 GB peak at 128 examples); examples too now go GRADIENT_ROWS and RESCORED_ROWS at a time,
    with the same gradient and scores."""
    prompt = make_prompt(tiny_causal, task, "Review: {text} [T] [T] Sentiment:{mask}")
    examples = task.train[:3] + task.train[-2:]
    tokens = [one_token(tiny_causal, w) for w in ("great", "plot", "the")]
    whole_gradient = trigger_gradient(tiny_causal, prompt, examples)
    whole_scores = rescore_candidates(tiny_causal, prompt, 0, tokens, examples)
    rows, original = [], autoprompt._rescore_shared_prefix
    monkeypatch.setattr(autoprompt, "GRADIENT_ROWS", 2)
    monkeypatch.setattr(autoprompt, "RESCORED_ROWS", 2)  # fewer than the 5 examples
    monkeypatch.setattr(
        autoprompt,
        "_rescore_shared_prefix",
        lambda lm, p, s, c, q: rows.append(len(c) * len(q)) or original(lm, p, s, c, q),
    )
    backward, scores = [], autoprompt.word_scores
    monkeypatch.setattr(
        autoprompt, "word_scores", lambda lm, q, *a, **k: backward.append(len(q)) or scores(lm, q, *a, **k)
    )
    assert torch.allclose(trigger_gradient(tiny_causal, prompt, examples), whole_gradient, atol=1e-5)
    assert backward == [2, 2, 1]
    assert torch.allclose(rescore_candidates(tiny_causal, prompt, 0, tokens, examples), whole_scores, atol=1e-5)
    assert rows == [2, 2, 1] * 3  # each candidate over the examples in parts of 2


def test_rescore_masked_lm_equals_one_by_one(tiny_mlm, task):
    prompt = make_prompt(tiny_mlm, task)
    examples = task.train[:2] + task.train[-2:]
    tokens = [one_token(tiny_mlm, w) for w in ("great", "plot", "awful")]
    got = rescore_candidates(tiny_mlm, prompt, 1, tokens, examples)
    for c, token in enumerate(tokens):
        alone = Prompt(prompt.template, prompt.verbalizer, trigger_ids=(prompt.trigger_ids[0], token))
        assert torch.allclose(got[c], label_log_probs(tiny_mlm, alone, examples), atol=1e-4)


# 4. filters


def test_candidate_vocabulary_never_allows_special_tokens(tiny_lm):
    size = tiny_lm.model.get_input_embeddings().weight.shape[0]
    special = set(tiny_lm.tokenizer.all_special_ids)
    for filtered in (False, True):
        allowed = candidate_vocabulary(tiny_lm, filtered)
        assert allowed.shape == (size,) and allowed.dtype == torch.bool
        assert not any(allowed[i] for i in special)
    unfiltered = candidate_vocabulary(tiny_lm, False)
    assert [i for i in range(size) if unfiltered[i]] == [i for i in range(size) if i not in special]


def test_alphabetic_filter_keeps_only_word_start_ascii_words(tiny_lm):
    allowed = candidate_vocabulary(tiny_lm, True)
    tokens = tiny_lm.tokenizer.convert_ids_to_tokens(list(range(len(tiny_lm.tokenizer))))
    kept = [tokens[i] for i in range(len(tokens)) if allowed[i]]
    for token in kept:
        if tiny_lm.kind == "causal":
            assert token.startswith("Ġ"), token
            word = token[1:]
        else:
            assert not token.startswith("##"), token
            word = token
        assert word and word.isascii() and word.isalpha(), token
    assert not allowed[len(tokens) :].any()
    # every whole word the filter should keep is kept
    expected = {"Ġgood", "Ġmovie", "Ġthe"} if tiny_lm.kind == "causal" else {"good", "movie", "the", "terr"}
    assert expected <= set(kept)
    assert not {":", ",", "##ible", "[MASK]", "Ġ", "<s>"} & set(kept)


def test_label_words_are_never_proposed(tiny_lm, task, monkeypatch):
    verbalizer = {"negative": ["bad", "terrible"], "positive": ["good"]}
    label_ids = {i for w in ("bad", "terrible", "good") for i in word_ids(tiny_lm, w)}
    allowed = candidate_vocabulary(tiny_lm, True)
    assert any(allowed[i] for i in label_ids)  # the exclusion is what keeps them out, not the filter
    proposed = []
    original = autoprompt.top_candidates
    monkeypatch.setattr(
        autoprompt, "top_candidates", lambda *a, **kw: proposed.append(original(*a, **kw)) or proposed[-1]
    )
    # as many candidates as the filter allows: without the exclusion the label words would be among them
    config = small_config(iterations=3, candidates=int(allowed.sum()), batch_size=2, train_size=4)

    events = list(search_triggers(tiny_lm, task, verbalizer, config))

    assert len(proposed) == 3
    for candidates in proposed:
        assert candidates and not label_ids & set(candidates)
        assert all(allowed[i] for i in candidates)
    for event in events:
        assert not label_ids & set(event.trigger_ids) and not label_ids & set(event.best_trigger_ids)
    # nor any other token that reads as a label word (pieces such as "b" of " ter|r|i|b|l|e" may return as words)
    words = {"bad", "terrible", "good"} | {
        tiny_lm.tokenizer.decode(word_ids(tiny_lm, w)[:1]).strip() for w in ("bad", "terrible", "good")
    }
    assert not words & {token.strip() for e in events for token, _ in e.best_candidates}


# 5. an accepted candidate is better than the current trigger on its re-scoring batch (and, with the
#    dev check, on the dev examples); the best trigger is the one with the best dev log-likelihood


@pytest.mark.parametrize("dev_check", [True, False], ids=["dev-check", "batch-only"])
def test_accepted_candidates_never_make_the_objective_worse(tiny_lm, task, monkeypatch, dev_check):
    calls = []
    original = autoprompt.rescore_candidates

    def recording(lm, prompt, slot, tokens, examples, **kw):
        out = original(lm, prompt, slot, tokens, examples, **kw)
        calls.append((prompt, slot, list(tokens), list(examples), out.clone()))
        return out

    monkeypatch.setattr(autoprompt, "rescore_candidates", recording)
    config = small_config(iterations=6, candidates=8, dev_check=dev_check)
    events = list(search_triggers(tiny_lm, task, VERBALIZER, config))
    _, dev = task.few_shot(config.train_size // 2, config.seed)

    def dev_log_likelihood(prompt, trigger_ids) -> float:
        with_trigger = Prompt(prompt.template, prompt.verbalizer, trigger_ids=tuple(trigger_ids))
        return gold_mean(label_log_probs(tiny_lm, with_trigger, dev), dev)

    assert [e.iteration for e in events] == list(range(7)) and len(calls) == 6
    assert any(e.accepted for e in events[1:]) and not all(e.accepted for e in events[1:])
    assert events[0].accepted is None  # the starting trigger: no swap tried, neither accepted nor refused
    for before, event, (prompt, slot, tokens, examples, out) in zip(events, events[1:], calls):
        assert list(prompt.trigger_ids) == before.trigger_ids and event.slot == slot
        assert tokens[0] == before.trigger_ids[slot]  # the current trigger is scored first
        current = gold_mean(label_log_probs(tiny_lm, prompt, examples), examples)  # recomputed independently
        assert gold_mean(out[0], examples) == pytest.approx(current, abs=1e-4)
        now = Prompt(prompt.template, prompt.verbalizer, trigger_ids=tuple(event.trigger_ids))
        kept = gold_mean(label_log_probs(tiny_lm, now, examples), examples)
        assert event.train_log_likelihood == pytest.approx(kept, abs=1e-4)
        assert event.dev_log_likelihood == pytest.approx(dev_log_likelihood(prompt, event.trigger_ids), abs=1e-4)
        changed = [j for j, (a, b) in enumerate(zip(before.trigger_ids, event.trigger_ids)) if a != b]
        candidate_scores = [gold_mean(out[c], examples) for c in range(1, len(tokens))]
        best_candidate = tokens[1 + max(range(len(candidate_scores)), key=candidate_scores.__getitem__)]
        with_best = list(before.trigger_ids)
        with_best[slot] = best_candidate
        best_beats_batch = max(candidate_scores) > gold_mean(out[0], examples)
        best_beats_dev = dev_log_likelihood(prompt, with_best) > before.dev_log_likelihood
        assert event.accepted == (best_beats_batch and (best_beats_dev or not dev_check))
        if event.accepted:
            assert changed == [slot] and event.trigger_ids == with_best
            assert kept > current - 1e-5 and event.train_log_likelihood > gold_mean(out[0], examples)
            assert event.train_log_likelihood == pytest.approx(max(candidate_scores), abs=1e-6)
        else:
            assert changed == []
            assert event.train_log_likelihood == pytest.approx(current, abs=1e-4)
        so_far = events[: event.iteration + 1]
        best = max(so_far, key=lambda e: e.dev_log_likelihood)  # the first of equals, as the search keeps it
        assert event.best_trigger_ids == best.trigger_ids and event.best_dev_accuracy == best.dev_accuracy
        if dev_check:
            assert event.best_trigger_ids == event.trigger_ids  # every accepted swap raised the dev log-likelihood


# 6. determinism


def event_signature(events) -> list[tuple]:
    return [
        (
            e.iteration,
            e.trigger_ids,
            e.slot,
            e.accepted,
            e.dev_accuracy,
            e.best_trigger_ids,
            None if math.isnan(e.train_log_likelihood) else round(e.train_log_likelihood, 6),
        )
        for e in events
    ]


def test_same_seed_same_events_other_seed_other_batches(tiny_causal, task):
    config = small_config(positions="random", iterations=4)
    first = event_signature(search_triggers(tiny_causal, task, VERBALIZER, config))
    second = event_signature(search_triggers(tiny_causal, task, VERBALIZER, config))
    assert first == second
    other = event_signature(
        search_triggers(tiny_causal, task, VERBALIZER, small_config(positions="random", iterations=4, seed=21))
    )
    assert [s[-1] for s in other] != [s[-1] for s in first]  # other data, other batches


def test_stop_flag_ends_the_search_after_the_start(tiny_mlm, task):
    import threading

    stop = threading.Event()
    stop.set()
    events = list(search_triggers(tiny_mlm, task, VERBALIZER, small_config(), stop))
    assert len(events) == 1 and events[0].iteration == 0 and events[0].slot is None
    assert events[0].trigger_ids == [tiny_mlm.tokenizer.mask_token_id] * 2  # an MLM starts from its mask token


def test_a_stop_during_an_iteration_ends_it_there_and_the_test_scoring_is_announced(tiny_causal, task, monkeypatch):
    """With 50 trigger slots, Stop left the search running its iteration (gradient, re-scoring of every candidate, dev
    check) for minutes, then scored the test texts twice without a word."""
    import threading

    stop, rescored = threading.Event(), []
    gradient = autoprompt.trigger_gradient

    def pressed_meanwhile(*args):
        stop.set()  # Stop, while the gradient is computed
        return gradient(*args)

    monkeypatch.setattr(autoprompt, "trigger_gradient", pressed_meanwhile)
    monkeypatch.setattr(autoprompt, "rescore_candidates", lambda *args: rescored.append(args))
    items = list(autoprompt_run(tiny_causal, task, VERBALIZER, small_config(test_limit=6), stop))
    assert rescored == []  # the iteration ended after its gradient
    assert [type(item).__name__ for item in items] == ["AutoPromptEvent", "FinalScoring", "AutoPromptResult"]
    assert items[1].texts == 6 == items[2].test_texts
    assert items[2].stopped and items[2].iterations_done == 0
    # stored as the search it was: "iterations 20" of a search stopped at its start stood as a finished one
    found = items[2].rows[0]
    assert found.settings["config"]["iterations"] == 0 and found.settings["stopped"] == "after 0 of 4 iterations"


# 7. label-word search


def test_the_mask_representation_gives_the_word_scores_at_the_mask(tiny_lm, task):
    """The head-only baseline and the label-word search read a causal query's last token, which after a template
    with words past the mask ("{text} it was {mask} .") was the template's full stop after label 0's word, not the
    mask. The output embeddings of the representation give the word scores the model reads at the mask."""
    prompt = Prompt(
        Template.parse("{text} it was {mask} .", task.text_fields), Verbalizer.parse(VERBALIZER, task.label_names)
    )
    examples = task.test[:4]
    features = autoprompt.mask_representations(tiny_lm, prompt, examples)  # (4, H)
    with torch.no_grad():
        scores = tiny_lm.model.get_output_embeddings()(features.to(tiny_lm.model.dtype)).float()  # (4, V)
        for example, row in zip(examples, scores):
            query = prompt.queries(tiny_lm, example)[0]
            logits = tiny_lm.model(torch.tensor([query.input_ids])).logits[0, query.read_positions[0]]  # the mask's
            assert torch.allclose(row, logits.float(), atol=1e-4)


def test_search_label_words_gives_distinct_words_per_label(tiny_lm, task):
    words = search_label_words(tiny_lm, task, TEMPLATE, words_per_label=3, train_size=12, steps=30)
    assert list(words) == task.label_names
    flat = [w for ws in words.values() for w in ws]
    assert all(len(ws) == 3 for ws in words.values())
    assert all(w and w.isascii() and w.isalpha() for w in flat), words
    assert len(set(flat)) == len(flat)  # distinct within a label and across labels
    Verbalizer.parse(words, task.label_names)  # usable as a verbalizer as is


def test_label_words_are_not_shared_even_when_labels_compete(tiny_lm, task):
    """Three labels and most of the allowed vocabulary per label: the top lists would overlap if allowed to."""
    three = Task(
        name="tiny-3",
        label_names=["negative", "neutral", "positive"],
        text_fields=["text"],
        train=[dict(e, label=2 * e["label"]) for e in task.train]
        + [{"text": f"the {n} was long", "label": 1} for n in _NOUNS * 3],
        test=task.test,
    )
    per_label = int(candidate_vocabulary(tiny_lm, True).sum()) // 3
    words = search_label_words(tiny_lm, three, TEMPLATE, words_per_label=per_label, train_size=12, steps=30)
    flat = [w for ws in words.values() for w in ws]
    assert [len(ws) for ws in words.values()] == [per_label] * 3
    assert len(set(flat)) == len(flat)
    assert all(w.isascii() and w.isalpha() for w in flat)


# 8. fill_triggers / remove_triggers


def test_fill_triggers_puts_the_trigger_text_in_the_slots(tiny_lm):
    ids = [one_token(tiny_lm, "the"), one_token(tiny_lm, "movie")]
    assert fill_triggers("{text} [T] [T] {mask}", tiny_lm.tokenizer, ids) == "{text} the movie {mask}"
    assert (
        fill_triggers("Review: {text} [T]\nSentiment:{mask}", tiny_lm.tokenizer, ids[:1])
        == "Review: {text} the\nSentiment:{mask}"
    )


def test_remove_triggers_gives_the_manual_template():
    assert remove_triggers("{text} [T] [T] {mask}") == "{text} {mask}"
    assert remove_triggers("Review: [T] {text} [T]\nSentiment:{mask}") == "Review: {text}\nSentiment:{mask}"
    assert remove_triggers("{text} {mask}") == "{text} {mask}"


@pytest.mark.parametrize("template", [TEMPLATE, "{text} [T] [T] it was {mask}", "[T] [T] {text} {mask}"])
def test_filled_template_reads_like_the_trigger_prompt(tiny_lm, task, template):
    """What the Cloze tab gets from fill_triggers tokenizes the same as the prompt with trigger ids. The words after
    a slot lost their space in the search ("Sentiment" for " Sentiment"), so what it scored was not what it stored."""
    prompt = make_prompt(tiny_lm, task, template)
    filled = fill_triggers(template, tiny_lm.tokenizer, prompt.trigger_ids)
    plain = Prompt(Template.parse(filled, task.text_fields), prompt.verbalizer)
    examples = task.test[:4]
    assert [q.input_ids for e in examples for q in plain.queries(tiny_lm, e)] == [
        q.input_ids for e in examples for q in prompt.queries(tiny_lm, e)
    ]


def test_a_tokenizer_that_marks_word_starts_itself_reads_the_filled_template_alike():
    """A SentencePiece normaliser that prepends '▁' (Llama 2's tokenizer.json) read the words after a slot, given
    with their space, as '▁', '▁it': the search scored another prompt than the one it stored."""
    import types

    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    words = ["▁" + w for w in "the film it was good bad movie plot".split()]
    pieces = ["<unk>", "<s>", "</s>", "▁", *words, *"abcdefghijklmnopqrstuvwxyz"]
    backend = Tokenizer(models.Unigram([(p, -1.0 if len(p) > 1 else -10.0) for p in pieces], unk_id=0))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    lm = types.SimpleNamespace(tokenizer=tokenizer, kind="causal", max_length=128, name="sentencepiece")
    template, triggers = (
        "{text} [T] [T] it was {mask}",
        tuple(tokenizer("movie plot", add_special_tokens=False).input_ids),
    )
    verbalizer = Verbalizer.parse({"negative": ["bad"], "positive": ["good"]}, ["negative", "positive"])
    searched = Prompt(Template.parse(template, ["text"]), verbalizer, trigger_ids=triggers)
    stored = Prompt(Template.parse(fill_triggers(template, tokenizer, triggers), ["text"]), verbalizer)
    example = {"text": "the film", "label": 0}
    assert searched.queries(lm, example)[0].input_ids == stored.queries(lm, example)[0].input_ids


# 9. bad input


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(template="{text} {mask}"), r"at least one trigger slot \[T\]"),
        (dict(template="{text} {mask} [T]"), r"every trigger slot \[T\] before \{mask\}"),
        (dict(candidates=0), r"Candidates must be a whole number from 1 to 1000, not 0"),
        (dict(candidates=100_000_000), r"Candidates must be a whole number from 1 to 1000, not 100000000"),
        (dict(iterations=0), r"Iterations must be at least 1, not 0"),
        (dict(batch_size=0), r"Batch size must be at least 1, not 0"),
        (dict(train_size=1), r"train size must be at least 2"),
        (dict(positions="sequential"), r"Positions must be one of round-robin, random, not 'sequential'"),
    ],
)
def test_bad_config_is_a_clear_error(changes, message):
    with pytest.raises(PeftlabError, match=message):
        small_config(**changes)


def test_too_many_slots_for_the_model(tiny_causal, task):
    assert tiny_causal.max_length == 256
    config = small_config(template="{text} " + "[T] " * 300 + "{mask}")
    with pytest.raises(PeftlabError, match=r"300 trigger slots do not fit the model's 256-token input"):
        next(search_triggers(tiny_causal, task, VERBALIZER, config))


def test_trigger_slots_that_leave_the_text_no_room_are_one_sentence(tiny_causal, task):
    """240 slots passed the slot check (8 tokens of slack) and searched on texts cut to nothing."""
    config = small_config(template="{text} " + "[T] " * 240 + "It was{mask}")
    with pytest.raises(PeftlabError) as error:
        next(search_triggers(tiny_causal, task, VERBALIZER, config))
    assert re.fullmatch(
        r"The template '\{text\} \[T\] .*…' takes (\d+) of the 256 tokens tiny-llama reads, leaving the text fewer "
        r"than 16; shorten it to at most about 240 tokens with its label words\.",
        str(error.value),
    ), str(error.value)
    assert int(re.search(r"takes (\d+)", str(error.value))[1]) > 240


def test_multi_token_init_word(tiny_lm, task):
    assert len(word_ids(tiny_lm, "terrible")) > 1
    with pytest.raises(PeftlabError, match=r"initial trigger word 'terrible' is \d+ tokens .*one-token word"):
        next(search_triggers(tiny_lm, task, VERBALIZER, small_config(init_token="terrible")))


def test_one_token_init_word_is_used(tiny_causal, task):
    first = next(search_triggers(tiny_causal, task, VERBALIZER, small_config(init_token="movie")))
    assert first.trigger_ids == [one_token(tiny_causal, "movie")] * 2


def test_words_per_label_below_one(tiny_mlm, task):
    with pytest.raises(PeftlabError, match=r"Words per label must be at least 1, not 0"):
        search_label_words(tiny_mlm, task, TEMPLATE, words_per_label=0)


# 10. run_autoprompt


def test_run_autoprompt_summary(tiny_lm, task):
    seen = []
    config = small_config(iterations=3, test_limit=6)
    result = run_autoprompt(tiny_lm, task, VERBALIZER, config, on_event=seen.append)
    summary = result.summary()
    assert {"trigger", "template", "dev_accuracy", "test_accuracy", "manual_test_accuracy", "seconds"} <= set(summary)
    assert len(seen) == 4 and len(result.history) == 4
    assert len(summary["trigger"]) == 2 and "[T]" not in summary["template"]
    assert summary["dev_accuracy"] == seen[-1].best_dev_accuracy
    assert summary["seconds"] >= 0
    # both accuracies are what scoring the two prompts on the stratified 6 test texts gives
    verbalizer = Verbalizer.parse(VERBALIZER, task.label_names)
    test = task.test_subset(6)
    assert summary["support"] == task.support(test) and summary["rows_scored"] == 6 and summary["split"] == "test"
    gold = torch.tensor([e["label"] for e in test])
    found = Prompt(Template.parse(TEMPLATE, task.text_fields), verbalizer, trigger_ids=tuple(seen[-1].best_trigger_ids))
    manual = Prompt(Template.parse("{text} {mask}", task.text_fields), verbalizer)
    for prompt, key in ((found, "test_accuracy"), (manual, "manual_test_accuracy")):
        predicted = label_log_probs(tiny_lm, prompt, test).argmax(1)
        assert summary[key] == pytest.approx(float((predicted == gold).float().mean()))
    # the prompt without the trigger is stored as the zero-shot cloze row, so Compare sets the trigger against it (a
    # "manual prompt" line with the search's K was no baseline: "baseline: no zero-shot result stored yet")
    from peftlab.report import compare

    found_row, manual_row = result.rows
    assert (manual_row.kind, manual_row.method, manual_row.k, manual_row.seed) == ("cloze", "zero-shot", None, None)
    (split,) = compare(result.rows)
    assert split.baseline == "zero-shot"
    line = split.table.set_index("method").loc["autoprompt"]
    assert line["vs_baseline"] == pytest.approx(found_row.accuracy - manual_row.accuracy)


# 11. the command line fails before loading anything


@pytest.mark.parametrize(
    "argv",
    [
        ["autoprompt", "--template", "{text} {mask}"],
        ["autoprompt", "--candidates", "0"],
    ],
)
def test_cli_bad_autoprompt_input(argv, capsys, monkeypatch):
    import peftlab.models
    import peftlab.tasks

    def refuse(*_a, **_kw):
        raise AssertionError("nothing should be loaded for bad input")

    monkeypatch.setattr(peftlab.models, "load_lm", refuse)
    monkeypatch.setattr(peftlab.tasks, "load_task", refuse)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err


@pytest.mark.parametrize(
    "flag, expected",
    [
        ([], AutoPromptConfig()),
        (["--no-dev-check"], AutoPromptConfig(dev_check=False)),
        (["--dev-check"], AutoPromptConfig()),
    ],
)
def test_cli_defaults_are_the_library_defaults_and_dev_check_reaches_the_search(
    flag, expected, task, tiny_causal, monkeypatch
):
    import peftlab.autoprompt
    import peftlab.models
    import peftlab.tasks

    configs = []

    def capture(lm, task, verbalizer, config, **kwargs):
        configs.append(config)
        raise PeftlabError("stopped before searching")

    monkeypatch.setattr(peftlab.autoprompt, "run_autoprompt", capture)
    monkeypatch.setattr(peftlab.models, "load_lm", lambda *a, **kw: tiny_causal)
    monkeypatch.setattr(peftlab.tasks, "load_task", lambda *a, **kw: task)
    assert main(["autoprompt", "--verbalizer", json.dumps(VERBALIZER), *flag]) == 2
    assert configs == [expected]


def test_a_template_with_two_masks_is_told_it_has_two():
    """'{text} [T] {mask} [T] {mask}' was told "Put every trigger slot [T] before {mask}.", which named neither."""
    from peftlab.prompts import Template

    template = "{text} [T] {mask} [T] {mask}"
    small_config(template=template)  # the slots' order is not what is wrong
    with pytest.raises(PeftlabError, match=r"^The template must contain exactly one \{mask\}, but it has 2 \{mask\}"):
        Template.parse(template, ["text"])


def test_a_trigger_worse_than_no_trigger_beyond_doubt_is_said():
    """A search on 8 texts took a prompt at 90 % to 50 % and showed it as its headline result with nothing said."""
    from peftlab.autoprompt import AutoPromptResult
    from peftlab.stats import paired_difference
    from peftlab.store import ResultRow
    from peftlab.tasks import Task

    texts = [{"text": f"text {i}", "label": i % 2} for i in range(20)]
    gold = [t["label"] for t in texts]
    task = Task("tiny", ["negative", "positive"], ["text"], train=[], test=texts)

    def result(found_predictions, accepted=(None, True)):  # the start, then an iteration whose swap was kept
        rows = [
            ResultRow.scored("autoprompt", "tiny", task, method, {}, texts, predicted)
            for method, predicted in (("autoprompt", found_predictions), ("manual prompt", gold[:18] + [1, 0]))
        ]
        accuracies = [r.accuracy for r in rows]
        history = [{"accepted": a} for a in accepted]
        return AutoPromptResult([], "", {}, 0.5, *accuracies, len(texts), {}, 1.0, history, rows=rows)

    chance = [1] * 20  # 50 %, against the manual prompt's 90 %
    expected = paired_difference(gold, [chance], [gold[:18] + [1, 0]])
    assert result(chance).trigger_note(8) == (
        f"The trigger lowers test accuracy by 40.0 points against the same prompt without it (95 % paired interval "
        f"{expected.low * 100:+.1f} to {expected.high * 100:+.1f} on 20 test texts): a search on 8 training texts "
        "fitted them, not the task (Shin et al. 2020 searched on whole training sets). Keep the prompt without the "
        "trigger, or search on more training texts."
    )
    assert expected.high < 0
    # a search that kept no swap (or stopped at its start) fitted nothing: its trigger is the one it started from
    assert result(chance, accepted=(None, False, False)).trigger_note(8) == (
        f"The trigger, still the one the search started from (no swap was accepted), lowers test accuracy by 40.0 "
        f"points against the same prompt without it (95 % paired interval {expected.low * 100:+.1f} to "
        f"{expected.high * 100:+.1f} on 20 test texts). Keep the prompt without the trigger, or run more iterations."
    )
    assert result(gold[:17] + [0, 1, 0]).trigger_note(8) is None  # 85 % against 90 %: not told apart on 20 texts
    assert result(gold).trigger_note(8) is None  # better
    # a pair task's field the found template never reads is said (the default template reads {text} alone)
    found = result(gold)
    found.template = "{text} the aven the the the {mask}"
    task.identity = ["text", "hypothesis"]
    assert (
        found.warnings(8, task) == [task.unread_note([found.template])] and "{hypothesis}" in found.warnings(8, task)[0]
    )
