"""Tests for peftlab.cloze on tiny random models: parity with brute-force scoring, calibration,
aggregation, ensembles, evaluation and single-text classification."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import re
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from peftlab import scoring
from peftlab.cloze import (
    ClozeSetup,
    aggregate_words,
    calibrate,
    classify_text,
    evaluate,
    label_log_probs,
    leaning_note,
)
from peftlab.errors import PeftlabError
from peftlab.models import LM
from peftlab.prompts import Prompt, Query, Template, Verbalizer, token_text
from peftlab.scoring import score_queries, word_scores

LABELS = ["negative", "positive"]
TEMPLATE = "Review: {text}\nSentiment:{mask}"
SUFFIX_TEMPLATE = "Review: {text}\nSentiment:{mask} overall."
VERBALIZER = {"negative": ["bad", "terrible"], "positive": ["great", "fantastic"]}
SINGLE = {"negative": ["bad"], "positive": ["great"]}
ATOL = 1e-4


def _prompt(template: str = TEMPLATE, verbalizer=VERBALIZER, demonstrations=()) -> Prompt:
    return Prompt(Template.parse(template, ["text"]), Verbalizer.parse(verbalizer, LABELS), list(demonstrations))


def _ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text, add_special_tokens=False).input_ids


def _split(template: str, example: dict) -> tuple[str, str, str]:
    """(text before the mask without trailing spaces, the space the word gets, text after the mask)."""
    before, after = Template(template).render(example)
    before = before.rstrip(" ")
    space = " " if before and not before.endswith("\n") else ""
    return before, space, after


@torch.no_grad()
def brute_force_word_score(lm, template: str, example: dict, word: str) -> float:
    """The reference: one unpadded sequence, full logits, one log_softmax per scored piece."""
    tokenizer = lm.tokenizer
    before, space, after = _split(template, example)
    if lm.kind == "causal":
        prefix = tokenizer(before).input_ids  # with BOS
        full = tokenizer(before + space + word + after).input_ids
        assert full[: len(prefix)] == prefix
        logits = lm.model(input_ids=torch.tensor([full])).logits[0]  # (T, V)
        log_probs = logits.log_softmax(-1)
        return float(sum(log_probs[p - 1, full[p]] for p in range(len(prefix), len(full))))
    pieces = _ids(lm, space + word)
    ids = (
        [tokenizer.cls_token_id]
        + _ids(lm, before)
        + [tokenizer.mask_token_id] * len(pieces)
        + _ids(lm, after)
        + [tokenizer.sep_token_id]
    )
    first = ids.index(tokenizer.mask_token_id)
    log_probs = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)  # (T, V)
    return float(sum(log_probs[first + j, piece] for j, piece in enumerate(pieces)))


def brute_force_label_log_probs(lm, template: str, verbalizer: dict, examples) -> torch.Tensor:
    rows = []
    for example in examples:
        label_scores = []
        for label in LABELS:
            scores = torch.tensor([brute_force_word_score(lm, template, example, w) for w in verbalizer[label]])
            label_scores.append(torch.logsumexp(scores, 0) - math.log(len(scores)))  # log mean probability
        rows.append(torch.stack(label_scores).log_softmax(-1))
    return torch.stack(rows)


def _scores_by_word(lm, prompt: Prompt, queries) -> dict[str, float]:
    flat = [w for _, w in prompt.verbalizer.flat_words]
    scores = score_queries(lm.model, lm.kind, queries, lm.tokenizer.pad_token_id)
    words = [flat[w] for q in queries for w, _ in q.targets]
    assert scores.shape == (len(words),)
    return dict(zip(words, scores.tolist()))


# ---------------------------------------------------------------- multi-token words: parity


@pytest.mark.parametrize("template", [TEMPLATE, SUFFIX_TEMPLATE, "{mask} : {text}", "Review: {text}\n{mask}"])
def test_word_scores_match_brute_force(tiny_lm, tiny_task, template):
    prompt = _prompt(template)
    for example in tiny_task.test[:3]:
        queries = prompt.queries(tiny_lm, example)
        got = _scores_by_word(tiny_lm, prompt, queries)  # all queries in one padded batch
        expected = {w: brute_force_word_score(tiny_lm, template, example, w) for w in got}
        assert set(got) == {"bad", "terrible", "great", "fantastic"}
        for word in got:
            assert math.isclose(got[word], expected[word], abs_tol=ATOL), (word, got[word], expected[word])


def test_multi_token_word_is_the_sum_of_its_pieces(tiny_lm, tiny_task):
    """A word that splits is scored by all its pieces: far below its first piece alone."""
    example = tiny_task.test[0]
    prompt = _prompt(TEMPLATE)
    word_text = ("" if tiny_lm.kind == "mlm" else " ") + "terrible"
    pieces = _ids(tiny_lm, word_text)
    assert len(pieces) >= 2
    got = _scores_by_word(tiny_lm, prompt, prompt.queries(tiny_lm, example))["terrible"]
    tokenizer = tiny_lm.tokenizer
    before, _, _ = _split(TEMPLATE, example)
    with torch.no_grad():
        if tiny_lm.kind == "causal":
            prefix = tokenizer(before).input_ids
            log_probs = tiny_lm.model(input_ids=torch.tensor([prefix + pieces])).logits[0].log_softmax(-1)
            per_piece = [float(log_probs[len(prefix) - 1 + j, t]) for j, t in enumerate(pieces)]
        else:
            ids = (
                [tokenizer.cls_token_id]
                + _ids(tiny_lm, before)
                + [tokenizer.mask_token_id] * len(pieces)
                + [tokenizer.sep_token_id]
            )
            first = ids.index(tokenizer.mask_token_id)
            log_probs = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            per_piece = [float(log_probs[first + j, t]) for j, t in enumerate(pieces)]
    assert math.isclose(got, sum(per_piece), abs_tol=ATOL)
    assert got < per_piece[0] - 1.0  # not the first piece only


def test_label_log_probs_match_brute_force(tiny_lm, tiny_task):
    examples = tiny_task.test
    for template in (TEMPLATE, SUFFIX_TEMPLATE):
        got = label_log_probs(tiny_lm, _prompt(template), examples, batch_size=5)
        expected = brute_force_label_log_probs(tiny_lm, template, VERBALIZER, examples)
        assert got.shape == (len(examples), 2)
        assert torch.allclose(got, expected, atol=ATOL), (got, expected)
        assert torch.allclose(got.exp().sum(-1), torch.ones(len(examples)), atol=1e-5)


def test_batching_and_padding_do_not_change_scores(tiny_lm, tiny_task):
    prompt = _prompt(SUFFIX_TEMPLATE)
    examples = tiny_task.test  # texts of 1 to 12 words
    lengths = {len(q.input_ids) for e in examples for q in prompt.queries(tiny_lm, e)}
    assert len(lengths) > 3
    # Raw word scores: every query of every example in one padded batch vs one query at a time.
    all_queries = [q for e in examples for q in prompt.queries(tiny_lm, e)]
    pad = tiny_lm.tokenizer.pad_token_id
    together = score_queries(tiny_lm.model, tiny_lm.kind, all_queries, pad)
    alone = torch.cat([score_queries(tiny_lm.model, tiny_lm.kind, [q], pad) for q in all_queries])
    assert torch.allclose(together, alone, atol=ATOL)
    # Label log-probs: one batch, odd batches, one example at a time.
    one_batch = label_log_probs(tiny_lm, prompt, examples, batch_size=64)
    odd_batches = label_log_probs(tiny_lm, prompt, examples, batch_size=3)
    one_by_one = torch.cat([label_log_probs(tiny_lm, prompt, [e], batch_size=1) for e in examples])
    assert torch.allclose(one_batch, one_by_one, atol=ATOL)
    assert torch.allclose(odd_batches, one_by_one, atol=ATOL)


def test_a_batch_that_runs_out_of_gpu_memory_is_halved_and_the_scores_stay(tiny_causal, tiny_task, monkeypatch):
    """On a GPU scoring starts GPU_BATCH_SCALE times larger and halves when a batch runs out of memory; simulated
    here by a forward pass that cannot hold more than 3 texts."""
    import peftlab.cloze as cloze

    prompt, examples = _prompt(SUFFIX_TEMPLATE), tiny_task.test
    expected = label_log_probs(tiny_causal, prompt, examples, batch_size=2)
    sizes, word_scores = [], cloze.word_scores

    def small_memory(lm, query_lists, *args, **kwargs):
        sizes.append(len(query_lists))
        if len(query_lists) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return word_scores(lm, query_lists, *args, **kwargs)

    monkeypatch.setattr(cloze, "word_scores", small_memory)
    monkeypatch.setattr(cloze, "GPU_BATCH_SCALE", 1)  # the CPU model scores at the requested batch
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    progress = []
    got = label_log_probs(tiny_causal, prompt, examples, batch_size=8, progress=lambda d, t: progress.append(d))
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) <= {2}  # halved twice, then kept: the texts only get longer
    assert torch.allclose(got, expected, atol=ATOL)
    assert progress[-1] == len(examples) and progress == sorted(progress)


def test_causal_score_includes_text_after_the_mask(tiny_causal, tiny_task):
    example = tiny_task.test[2]
    with_suffix = _prompt(SUFFIX_TEMPLATE)
    without = _prompt(TEMPLATE)
    a = _scores_by_word(tiny_causal, with_suffix, with_suffix.queries(tiny_causal, example))
    b = _scores_by_word(tiny_causal, without, without.queries(tiny_causal, example))
    tokenizer = tiny_causal.tokenizer
    before, space, after = _split(SUFFIX_TEMPLATE, example)
    assert after == " overall."
    for word in ("bad", "fantastic"):
        # score(word + suffix) = score(word) + log p(suffix | prefix, word)
        head = tokenizer(before + space + word).input_ids
        full = tokenizer(before + space + word + after).input_ids
        with torch.no_grad():
            log_probs = tiny_causal.model(input_ids=torch.tensor([full])).logits[0].log_softmax(-1)
        suffix = float(sum(log_probs[p - 1, full[p]] for p in range(len(head), len(full))))
        assert suffix < -0.1
        assert math.isclose(a[word], b[word] + suffix, abs_tol=ATOL)


def test_progress_reports_every_example(tiny_causal, tiny_task):
    calls = []
    label_log_probs(tiny_causal, _prompt(), tiny_task.test, batch_size=4, progress=lambda d, n: calls.append((d, n)))
    assert calls[-1] == (len(tiny_task.test), len(tiny_task.test))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ---------------------------------------------------------------- aggregation and calibration


def test_aggregate_words_log_mean_probability():
    p = torch.tensor([[0.2, 0.4, 0.1], [0.05, 0.01, 0.3]])
    got = aggregate_words(p.log(), [0, 0, 1], 2)
    expected = torch.tensor([[0.3, 0.1], [0.03, 0.3]]).log()  # mean of 0.2 and 0.4; one word for label 1
    assert torch.allclose(got, expected, atol=1e-6)
    # Labels are columns in label order even when words are interleaved.
    got = aggregate_words(p.log(), [1, 0, 1], 2)
    expected = torch.tensor([[0.4, 0.15], [0.01, 0.175]]).log()
    assert torch.allclose(got, expected, atol=1e-6)


def test_calibrate_none_is_unchanged():
    log_probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]]).log()
    assert torch.equal(calibrate(log_probs, "none"), log_probs)


def test_calibrate_contextual_hand_computed_and_flips():
    log_probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]]).log()
    content_free = torch.tensor([0.8, 0.2]).log()
    got = calibrate(log_probs, "contextual", content_free)
    # Row 0: 0.7/0.8 = 0.875 and 0.3/0.2 = 1.5 -> renormalised over 2.375; row 1: 0.5 and 3.0 over 3.5.
    expected = torch.tensor([[0.875 / 2.375, 1.5 / 2.375], [0.5 / 3.5, 3.0 / 3.5]])
    assert torch.allclose(got.exp(), expected, atol=1e-6)
    assert log_probs.argmax(-1).tolist() == [0, 1]
    assert got.argmax(-1).tolist() == [1, 1]  # the content-free bias towards label 0 is removed
    with pytest.raises(ValueError, match="content-free"):
        calibrate(log_probs, "contextual")


def test_calibrate_mean_hand_computed_and_flips():
    log_probs = torch.tensor([[0.9, 0.1], [0.6, 0.4]]).log()
    got = calibrate(log_probs, "mean")
    # Column geometric means: sqrt(0.9*0.6) and sqrt(0.1*0.4) = 0.2.
    g0, g1 = math.sqrt(0.54), 0.2
    row0 = [0.9 / g0, 0.1 / g1]
    row1 = [0.6 / g0, 0.4 / g1]
    expected = torch.tensor([[row0[0] / sum(row0), row0[1] / sum(row0)], [row1[0] / sum(row1), row1[1] / sum(row1)]])
    assert torch.allclose(got.exp(), expected, atol=1e-6)
    assert log_probs.argmax(-1).tolist() == [0, 0]
    assert got.argmax(-1).tolist() == [0, 1]


def test_calibrate_unknown_method():
    with pytest.raises(PeftlabError, match=r"Unknown calibration 'temperature': choose one of none, contextual, mean"):
        calibrate(torch.zeros(2, 2), "temperature")


def test_calibrate_refuses_scores_of_the_wrong_shape_or_kind():
    """A content-free prior for 3 labels against 2 failed as a tensor-size RuntimeError; numpy as a TypeError."""
    with pytest.raises(ValueError, match=r"content-free log-probs of shape \(3,\) for 2 labels"):
        calibrate(torch.zeros(2, 2), "contextual", torch.zeros(3))
    with pytest.raises(
        ValueError, match="calibrate takes an \\(N, L\\) torch tensor of label log-probs, not a ndarray"
    ):
        calibrate(torch.zeros(2, 2).numpy(), "mean")
    with pytest.raises(ValueError, match="log-probs, not a tensor of shape \\(3,\\)$"):
        calibrate(torch.zeros(3), "none")


def test_bad_scoring_settings_of_the_library_are_one_sentence(tiny_lm, tiny_task):
    """A batch size of 0 failed as "max() arg is an empty sequence", top_k -1 as "selected index k out of range"
    and a list of texts as "no attribute 'strip'"."""
    with pytest.raises(PeftlabError, match=r"^The batch size must be at least 1, not 0\.$"):
        evaluate(tiny_lm, tiny_task, TEMPLATE, VERBALIZER, limit=2, batch_size=0)
    with pytest.raises(PeftlabError, match=r"^top_k \(the mask's likeliest tokens shown\) must be at least 1, not -1"):
        classify_text(tiny_lm, tiny_task, "fine", TEMPLATE, VERBALIZER, top_k=-1)
    with pytest.raises(PeftlabError, match=r"^classify_text takes one text, a string, not a list; evaluate scores"):
        classify_text(tiny_lm, tiny_task, ["fine", "bad"], TEMPLATE, VERBALIZER)
    # an emptied box sent through the API (the Start tab's): it was told in the library's words, as a NoneType
    with pytest.raises(PeftlabError, match=r"^Type a text to classify\.$"):
        classify_text(tiny_lm, tiny_task, None, TEMPLATE, VERBALIZER)
    everything = classify_text(tiny_lm, tiny_task, "fine", TEMPLATE, VERBALIZER, top_k=10**6).top_tokens
    assert len(everything) == tiny_lm.model.config.vocab_size  # the whole vocabulary


# ---------------------------------------------------------------- setups, ensembles and evaluation


def test_cloze_setup_validation(tiny_task):
    with pytest.raises(PeftlabError, match="Unknown calibration 'batch'"):
        ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, calibration="batch")
    with pytest.raises(PeftlabError, match="at least one template"):
        ClozeSetup.build(tiny_task, ["", "  "], VERBALIZER)
    with pytest.raises(PeftlabError, match=r"\{title\}"):
        ClozeSetup.build(tiny_task, ["{title}{mask}"], VERBALIZER)
    setup = ClozeSetup.build(tiny_task, [TEMPLATE, "", SUFFIX_TEMPLATE], VERBALIZER, "mean")
    assert [p.template.text for p in setup.prompts] == [TEMPLATE, SUFFIX_TEMPLATE]


@pytest.mark.parametrize("calibration", ["none", "mean", "contextual"])
def test_template_ensemble_is_the_mean_of_single_templates(tiny_lm, tiny_task, calibration):
    examples = tiny_task.test
    templates = [TEMPLATE, "{text} it was{mask} ."]
    ensemble = ClozeSetup.build(tiny_task, templates, VERBALIZER, calibration).predict_log_probs(tiny_lm, examples)[0]
    singles = [
        ClozeSetup.build(tiny_task, t, VERBALIZER, calibration).predict_log_probs(tiny_lm, examples)[0]
        for t in templates
    ]
    expected = ((singles[0] + singles[1]) / 2).log_softmax(-1)
    assert torch.allclose(ensemble, expected, atol=1e-5)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the two templates really differ


def test_contextual_calibration_uses_content_free_inputs(tiny_lm, tiny_task):
    from peftlab.cloze import content_free_log_probs

    examples = tiny_task.test
    prompt = _prompt(TEMPLATE)
    raw = label_log_probs(tiny_lm, prompt, examples)
    expected = (raw - content_free_log_probs(tiny_lm, prompt)).log_softmax(-1)  # p / p_cf, renormalised
    got = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, "contextual").predict_log_probs(tiny_lm, examples)[0]
    assert torch.allclose(got, expected, atol=ATOL)
    assert not torch.allclose(got, raw, atol=1e-3)


def test_content_free_probabilities_are_averaged_before_they_are_normalised(tiny_lm, tiny_task):
    """Zhao et al.'s `get_p_content_free` averages each content-free input's raw label-word probabilities, then
    normalises; peftlab normalised each input first, so "N/A", which gives the words a thirtieth of what "" gives them,
    weighed as much (70.6 % where the reference has 76.9 % on rt-sentiment). And "" left "{text} {mask}" nothing
    before the mask: its words were spelt without the leading space every real text gives them."""
    from peftlab.cloze import content_free_log_probs

    prompt = _prompt("{text} {mask}", {"negative": ["bad"], "positive": ["good"]})
    scored = sorted(t for q in prompt.queries(tiny_lm, tiny_task.test[0]) for t in q.targets)  # [(word, ids)]
    raw = []
    for fill in ("N/A", ""):
        queries = prompt.queries(tiny_lm, {"label": 0}, fill)
        assert sorted(t for q in queries for t in q.targets) == scored  # the tokens real texts are scored on
        probs = {}
        with torch.no_grad():
            for q in queries:
                vocabulary = tiny_lm.model(torch.tensor([q.input_ids])).logits[0, q.read_positions[0]].softmax(-1)
                probs |= {word: float(vocabulary[ids[0]]) for word, ids in q.targets}
        raw.append([probs[0], probs[1]])
    mean = torch.tensor(raw, dtype=torch.float64).mean(0)
    assert torch.allclose(content_free_log_probs(tiny_lm, prompt).exp().double(), mean / mean.sum(), atol=1e-5)


@pytest.mark.parametrize("calibration", ["none", "mean", "contextual"])
def test_evaluate(tiny_lm, tiny_task, calibration):
    result = evaluate(tiny_lm, tiny_task, [TEMPLATE], VERBALIZER, calibration=calibration)
    n = len(tiny_task.test)
    table = result.predictions
    assert result.n == n
    assert list(table.columns) == ["text", "gold", "predicted", "confidence", "correct", "p(negative)", "p(positive)"]
    assert table["text"].tolist() == [e["text"] for e in tiny_task.test]
    assert table["gold"].tolist() == [LABELS[e["label"]] for e in tiny_task.test]
    probs = table[["p(negative)", "p(positive)"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert table["predicted"].tolist() == [LABELS[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(table["confidence"], probs.max(1), atol=1e-7)
    assert (table["correct"] == (table["gold"] == table["predicted"])).all()
    assert 0.0 <= result.accuracy <= 1.0
    assert result.accuracy == pytest.approx(table["correct"].mean())
    assert result.confusion.shape == (2, 2) and result.confusion.sum() == n
    assert np.trace(result.confusion) == table["correct"].sum()
    setup = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, calibration)
    expected = setup.predict_log_probs(tiny_lm, tiny_task.test)[0]
    np.testing.assert_allclose(probs, expected.exp().numpy(), atol=1e-5)
    summary = result.summary()
    assert summary["n"] == n and summary["calibration"] == calibration and summary["model"] == tiny_lm.name
    assert summary["templates"] == [TEMPLATE]


def test_evaluate_limit(tiny_causal, tiny_task):
    result = evaluate(tiny_causal, tiny_task, TEMPLATE, VERBALIZER, limit=3)
    assert result.n == 3 and result.confusion.sum() == 3
    assert result.predictions["text"].tolist() == [e["text"] for e in tiny_task.test_subset(3)]
    assert result.summary()["support"] in ({"negative": 1, "positive": 2}, {"negative": 2, "positive": 1})
    assert evaluate(tiny_causal, tiny_task, TEMPLATE, VERBALIZER, limit=100).n == len(tiny_task.test)
    for bad in (0, -2):
        with pytest.raises(PeftlabError, match="limit must be at least 1"):
            evaluate(tiny_causal, tiny_task, TEMPLATE, VERBALIZER, limit=bad)


def test_evaluate_with_demonstrations(tiny_lm, tiny_task):
    setup = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, shots_in_context=2, seed=21)
    demos = setup.prompts[0].demonstrations
    assert len(demos) == 2 and sorted(d["label"] for d in demos) == [0, 1]
    assert all(d in tiny_task.train for d in demos)
    assert (
        demos
        == ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, shots_in_context=2, seed=21).prompts[0].demonstrations
    )
    tokenizer = tiny_lm.tokenizer
    example = tiny_task.test[0]
    decoded = tokenizer.decode(setup.prompts[0].queries(tiny_lm, example)[0].input_ids)
    for d in demos:
        assert tokenizer.decode(_ids(tiny_lm, d["text"])) in decoded
    result = evaluate(tiny_lm, tiny_task, TEMPLATE, VERBALIZER, shots_in_context=2, seed=21)
    assert result.settings["shots_in_context"] == 2 and result.n == len(tiny_task.test)
    zero_shot = evaluate(tiny_lm, tiny_task, TEMPLATE, VERBALIZER)
    assert not np.allclose(result.predictions["p(positive)"], zero_shot.predictions["p(positive)"], atol=1e-4)
    # the seed picked the demonstrations: stored with it (a run per seed); zero-shot's is one run whatever the seed
    assert (result.row.seed, zero_shot.row.seed) == (21, None)


def test_predictions_that_lean_on_one_label_get_a_sentence_with_advice_for_the_settings(tiny_task):
    # rows gold, columns predicted: every text called positive, half of them are
    leaning = np.array([[0, 3], [0, 3]])
    names = tiny_task.label_names
    in_context = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, shots_in_context=2, seed=21)
    last = names[in_context.prompts[0].demonstrations[-1]["label"]]
    assert leaning_note(leaning, names, in_context) == (
        "The predictions lean towards 'positive': 100% of the texts got it, against 50% of the gold labels, so the "
        "accuracy says little about reading the texts. Small models lean on the in-context demonstrations' labels "
        f"and order (the last one here is '{last}'; Zhao et al. 2021): try contextual calibration, another "
        "demonstration seed or fewer demonstrations."
    )
    zero_shot = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER)
    assert leaning_note(leaning, names, zero_shot).endswith("sways the scores: try calibration (contextual or mean).")
    calibrated = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, calibration="contextual")
    assert leaning_note(leaning, names, calibrated).endswith("Try other label words or another template.")
    # a run with contextual calibration on was advised to try it
    both = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, "contextual", shots_in_context=2, seed=21)
    assert leaning_note(leaning, names, both).endswith(
        "Zhao et al. 2021): try another demonstration seed or fewer demonstrations."
    )
    assert leaning_note(np.array([[2, 1], [1, 2]]), names, in_context) is None


def _demonstration_prompt(tiny_task, template: str = SUFFIX_TEMPLATE, shots: int = 6) -> Prompt:
    return ClozeSetup.build(tiny_task, template, VERBALIZER, shots_in_context=shots, seed=13).prompts[0]


@contextlib.contextmanager
def recorded_inputs(lm) -> Iterator[list[tuple[int, int]]]:
    """(batch, tokens) of every input the model's embedding layer reads inside the block."""
    shapes = []
    hook = lm.model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: shapes.append(args[0].shape))
    try:
        yield shapes
    finally:
        hook.remove()


def test_demonstrations_that_leave_the_text_no_room_are_one_sentence_instead_of_cutting_the_text_away(tiny_causal):
    """--shots-in-context 100000 once put 11752 demonstrations (396,987 tokens) before each text: the text was cut to
    nothing to fit the 2048-token input and every review was labelled from the demonstrations alone."""
    demonstration = {"text": "a long and very detailed review of the film", "label": 0}
    alone = len(_ids(tiny_causal, _prompt().demonstration_text()))  # nothing: no demonstrations
    each = len(_ids(tiny_causal, _prompt(demonstrations=[demonstration]).demonstration_text())) - alone
    many = _prompt(demonstrations=[demonstration] * 40)
    with pytest.raises(PeftlabError) as error:
        label_log_probs(tiny_causal, many, [{"text": "great", "label": 1}])
    assert re.fullmatch(
        rf"The 40 in-context demonstrations take {40 * each:,} tokens of tiny-llama's {tiny_causal.max_length}-token "
        r"input, leaving the text fewer than 16; use at most about (\d+)\.",
        str(error.value),
    ), str(error.value)
    fit = int(str(error.value).rsplit(" ", 1)[1].rstrip("."))
    label_log_probs(tiny_causal, _prompt(demonstrations=[demonstration] * fit), [{"text": "great", "label": 1}])
    with pytest.raises(PeftlabError):
        label_log_probs(tiny_causal, _prompt(demonstrations=[demonstration] * (fit + 1)), [{"text": "great"}])


def test_a_template_that_leaves_the_text_no_room_is_one_sentence(tiny_causal):
    """A 20,000-word template was scored with the text cut to nothing and a warning that the texts were "cut to
    fit": the model labelled the template's words alone."""
    long = "{text} " + "word " * 300 + "It was{mask}."
    # the longest query with an empty text: the start-of-text token, the words before the mask, the longest label
    # word and the "." after it, the last token of which is not read
    before = tiny_causal.tokenizer(" " + "word " * 300 + "It was").input_ids
    word = max(len(_ids(tiny_causal, f" {w}")) for words in VERBALIZER.values() for w in words)
    taken = len(before) + word + len(_ids(tiny_causal, ".")) - 1
    with pytest.raises(PeftlabError) as error:
        label_log_probs(tiny_causal, _prompt(template=long), [{"text": "great", "label": 1}])
    assert str(error.value) == (
        f"The template '{{text}} word word word word word word wo…' takes {taken:,} of the 256 tokens tiny-llama "
        "reads, leaving the text fewer than 16; shorten it to at most about 240 tokens with its label words."
    )
    fits = "{text} " + "word " * 60 + "It was{mask}."  # 60 words and the label words leave the text room
    assert label_log_probs(tiny_causal, _prompt(template=fits), [{"text": "great", "label": 1}]).shape == (1, 2)


def test_demonstrations_run_once_and_every_text_scores_as_its_whole_query(tiny_causal, tiny_task, monkeypatch):
    """In-context demonstrations are the same tokens before every text: they run once, and each batch runs only
    its texts. The scores equal those of the whole queries (tested against brute force above)."""

    prompt = _demonstration_prompt(tiny_task)
    queries = [q for e in tiny_task.test for q in prompt.queries(tiny_causal, e)]
    with torch.inference_mode():
        prefix = scoring.SharedPrefix.find(tiny_causal.model, "causal", queries)
    shared_length, longest = len(prefix.ids), max(len(q.input_ids) for q in queries)
    assert shared_length >= scoring.MIN_SHARED_PREFIX
    assert len(_ids(tiny_causal, prompt.demonstration_text())) - 1 <= shared_length
    assert shared_length <= min(q.read_positions[0] for q in queries)
    assert all(q.input_ids[:shared_length] == prefix.ids for q in queries)
    batches = math.ceil(len(tiny_task.test) / 3)

    with recorded_inputs(tiny_causal) as shapes:
        shared = label_log_probs(tiny_causal, prompt, tiny_task.test, batch_size=3)
    # the demonstrations run once; each batch then runs its texts' starts and their queries' rests (`ItemStarts`)
    assert shapes[0] == (1, shared_length) and len(shapes) == 1 + 2 * batches
    assert all(width <= longest - shared_length for _, width in shapes[1:])

    monkeypatch.setattr(scoring, "MIN_SHARED_PREFIX", 10**6)
    monkeypatch.setattr(scoring.ItemStarts, "find", lambda *args: None)
    with recorded_inputs(tiny_causal) as shapes:
        whole = label_log_probs(tiny_causal, prompt, tiny_task.test, batch_size=3)
    assert len(shapes) == batches and all(width > shared_length for _, width in shapes)
    assert torch.allclose(shared, whole, atol=ATOL), (shared, whole)


def test_queries_that_do_not_share_the_start_are_scored_whole(tiny_causal, tiny_task):
    """Queries under two sets of demonstrations in one call: only those starting with the shared tokens use them;
    a batch holding any other query runs whole, and every score equals scoring the query alone."""
    from peftlab.cloze import score_query_lists

    prompts = [_demonstration_prompt(tiny_task, shots=shots) for shots in (6, 7)]
    starts = [p.queries(tiny_causal, tiny_task.test[0])[0].input_ids[:8] for p in prompts]
    assert starts[0] != starts[1]
    query_lists = [p.queries(tiny_causal, e) for p in prompts for e in tiny_task.test]
    verbalizer = prompts[0].verbalizer
    apart = torch.cat([score_query_lists(tiny_causal, [queries], verbalizer) for queries in query_lists])
    for batch_size in (1, 4, 64):
        together = score_query_lists(tiny_causal, query_lists, verbalizer, batch_size=batch_size)
        assert torch.allclose(together, apart, atol=ATOL), batch_size


def test_no_shared_prefix_for_short_starts_masked_lms_or_virtual_tokens(tiny_mlm, tiny_causal, tiny_task):
    """Zero-shot queries share only the template's first word; a masked LM reads its whole input at once; a PEFT
    prompt-learning model puts its virtual tokens before the input, so a cache of the input's start is wrong."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM

    zero_shot = [q for e in tiny_task.test for q in _prompt(SUFFIX_TEMPLATE).queries(tiny_causal, e)]
    demonstrations = _demonstration_prompt(tiny_task)
    with torch.inference_mode():
        assert scoring.SharedPrefix.find(tiny_causal.model, "causal", zero_shot) is None
        masked = [q for e in tiny_task.test for q in demonstrations.queries(tiny_mlm, e)]
        assert scoring.SharedPrefix.find(tiny_mlm.model, "mlm", masked) is None
        causal = [q for e in tiny_task.test for q in demonstrations.queries(tiny_causal, e)]
        prompt_tuned = get_peft_model(
            LlamaForCausalLM(tiny_causal.model.config), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
        )
        assert scoring.SharedPrefix.find(prompt_tuned, "causal", causal) is None
        assert scoring.SharedPrefix.find(tiny_causal.model, "causal", causal) is not None


def test_an_items_queries_run_after_its_start_once_with_the_same_scores(tiny_causal, tiny_task, monkeypatch):
    """A word followed by more of the template (" overall.") needs a query of its own, the whole text again in each:
    PET's bbc-topic patterns read 5 a text. Each text's start now runs once, then each query's own few tokens."""

    prompt, examples = _prompt(SUFFIX_TEMPLATE), tiny_task.test[:5]
    items = [prompt.queries(tiny_causal, e) for e in examples]
    assert {len(item) for item in items} == {4}  # one query per label word
    starts = [scoring._start_length(item) for item in items]
    assert starts == [min(q.read_positions[0] for q in item) for item in items]
    n_words = len(prompt.verbalizer.flat_words)
    with torch.inference_mode(), recorded_inputs(tiny_causal) as shapes:
        shared = word_scores(tiny_causal, items, n_words)
    longest_rest = max(len(q.input_ids) - s for item, s in zip(items, starts) for q in item)
    assert shapes == [(5, max(starts)), (20, longest_rest)]

    monkeypatch.setattr(scoring.ItemStarts, "find", lambda *args: None)
    with torch.inference_mode(), recorded_inputs(tiny_causal) as shapes:
        whole = word_scores(tiny_causal, items, n_words)
    longest = max(len(q.input_ids) for item in items for q in item)
    assert shapes == [(20, longest)]
    assert 5 * max(starts) + 20 * longest_rest < 0.75 * 20 * longest  # the texts' tokens ran once, not in every query
    assert torch.allclose(shared, whole, atol=ATOL), (shared, whole)


def test_a_trained_model_gets_the_same_gradient_through_its_items_starts(tiny_causal, tiny_task, monkeypatch):
    """PET's pattern models train through the same scoring: the loss's gradient flows through the start's keys and
    values, copied to each query, and equals the gradient of the whole queries."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(copy.deepcopy(tiny_causal.model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # B = 0 at the start would leave A without a gradient
            torch.nn.init.normal_(parameter, std=0.5)
    prompt = _prompt(SUFFIX_TEMPLATE)
    items = [prompt.queries(tiny_causal, e) for e in tiny_task.test[:4]]
    assert scoring.ItemStarts.find(model, "causal", items) is not None

    def gradient() -> dict[str, torch.Tensor]:
        model.zero_grad()
        word_scores(tiny_causal, items, len(prompt.verbalizer.flat_words), model=model).sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    shared = gradient()
    monkeypatch.setattr(scoring.ItemStarts, "find", lambda *args: None)
    whole = gradient()
    assert len(shared) == 8 and all(g.abs().sum() > 0 for g in shared.values())
    for name in shared:
        torch.testing.assert_close(shared[name], whole[name], rtol=1e-4, atol=1e-4, msg=name)


def test_no_item_starts_for_one_query_a_text_masked_lms_or_virtual_tokens(tiny_mlm, tiny_causal, tiny_task):
    """One query a text has nothing to share; a masked LM reads its masks in one query per piece count; a PEFT
    prompt-learning model puts its virtual tokens before the input, so a cache of the input's start is wrong."""
    from peft import PromptTuningConfig, get_peft_model
    from transformers import LlamaForCausalLM

    one_word = _prompt(TEMPLATE, {"negative": ["bad"], "positive": ["good"]})
    single = [one_word.queries(tiny_causal, e) for e in tiny_task.test]
    assert {len(item) for item in single} == {1}
    several = [_prompt(SUFFIX_TEMPLATE).queries(tiny_causal, e) for e in tiny_task.test]
    masked = [_prompt(SUFFIX_TEMPLATE).queries(tiny_mlm, e) for e in tiny_task.test]
    prompt_tuned = get_peft_model(
        LlamaForCausalLM(tiny_causal.model.config), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    )
    assert scoring.ItemStarts.find(tiny_causal.model, "causal", single) is None
    assert scoring.ItemStarts.find(tiny_mlm.model, "mlm", masked) is None
    assert scoring.ItemStarts.find(prompt_tuned, "causal", several) is None
    assert scoring.ItemStarts.find(tiny_causal.model, "causal", several) is not None


def test_sliding_window_models_score_their_queries_whole(tiny_causal, tiny_task):
    """A sliding-window layer (Mistral, Gemma 2 and 3) keeps only its window's keys and reads the window by column, so
    padding between a start and a query's rest would hide its edge: such a model never continues a cache. A config
    that names a layer other than full attention is known before any pass; Mistral's, which names none, by the cache
    its start returns, and its queries then run whole."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(**{**tiny_causal.model.config.to_dict(), "sliding_window": 8})
    torch.manual_seed(0)
    mistral = MistralForCausalLM(config).eval()
    prompt = _prompt(SUFFIX_TEMPLATE)
    items = [prompt.queries(tiny_causal, e) for e in tiny_task.test[:4]]
    starts = scoring.ItemStarts.find(mistral, "causal", items)
    with torch.inference_mode():
        assert starts is not None and starts.past(mistral, tiny_causal.tokenizer.pad_token_id, None) is None
        assert scoring.ItemStarts.find(tiny_causal.model, "causal", items).past(tiny_causal.model, 0, None) is not None
        with recorded_inputs(LM(mistral, tiny_causal.tokenizer, "causal", "tiny-mistral")) as shapes:
            scores = word_scores(tiny_causal, items, len(prompt.verbalizer.flat_words), model=mistral)
    assert shapes[-1] == (16, max(len(q.input_ids) for item in items for q in item))  # the whole queries, after all
    assert not scores.isnan().all(-1).any()

    alternating = copy.deepcopy(tiny_causal.model)
    alternating.config.layer_types = ["full_attention", "sliding_attention"]
    assert not scoring.continues_a_cache(alternating, "causal")
    alternating.config.layer_types = ["full_attention", "full_attention"]
    assert scoring.continues_a_cache(alternating, "causal")


def test_padded_tokens_count_the_starts_once_and_each_rest_reading_its_start():
    """By hand: item A's two queries share 3 tokens (up to the first read position) and have rests of 2 and 3 tokens;
    item B is one query of 7 tokens read at its last, so its start is 6 and its rest 1."""
    from peftlab.scoring import CACHED_TOKEN_COST, item_tokens, padded_tokens

    a = [Query([1, 2, 3, 4, 9], [3, 4]), Query([1, 2, 3, 4, 8, 7], [3, 4, 5])]
    b = [Query([5, 6, 7, 8, 9, 10, 11], [6])]
    assert item_tokens(a) == pytest.approx(3 + 2 * (3 + CACHED_TOKEN_COST * 3))
    assert item_tokens(a, shares_starts=False) == 2 * 6
    assert item_tokens(b) == 7  # one query: nothing to share, run whole
    assert padded_tokens([a, b]) == pytest.approx(2 * 6 + 3 * (3 + CACHED_TOKEN_COST * 6))
    assert padded_tokens([a, b], shares_starts=False) == 3 * 7


# ---------------------------------------------------------------- one text


def test_classify_text(tiny_lm, tiny_task):
    text = "the acting was great"
    prediction = classify_text(tiny_lm, tiny_task, text, TEMPLATE, VERBALIZER, top_k=5)
    assert list(prediction.label_probs) == LABELS
    assert sum(prediction.label_probs.values()) == pytest.approx(1.0, abs=1e-5)
    expected = label_log_probs(tiny_lm, _prompt(), [{"text": text, "label": 0}])[0].exp()
    assert [prediction.label_probs[name] for name in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    assert len(prediction.top_tokens) == 5
    probs = [p for _, p in prediction.top_tokens]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(isinstance(token, str) for token, _ in prediction.top_tokens)
    # The top token's probability is the largest probability at the read position of a brute-force pass.
    tokenizer = tiny_lm.tokenizer
    before, _, _ = _split(TEMPLATE, {"text": text})
    with torch.no_grad():
        if tiny_lm.kind == "causal":
            logits = tiny_lm.model(input_ids=torch.tensor([tokenizer(before).input_ids])).logits[0, -1]
        else:
            ids = [tokenizer.cls_token_id] + _ids(tiny_lm, before) + [tokenizer.mask_token_id, tokenizer.sep_token_id]
            logits = tiny_lm.model(input_ids=torch.tensor([ids])).logits[0, -2]
    top = logits.softmax(-1).topk(5)
    assert probs == pytest.approx(top.values.tolist(), abs=1e-5)
    assert [t for t, _ in prediction.top_tokens] == [token_text(tokenizer, int(i)) for i in top.indices]


def test_classify_text_mean_calibration_uses_test_texts(tiny_causal, tiny_task):
    text = "a fun film"
    prediction = classify_text(tiny_causal, tiny_task, text, TEMPLATE, VERBALIZER, calibration="mean")
    setup = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER, "mean")
    expected = setup.predict_log_probs(tiny_causal, [{"text": text, "label": 0}] + tiny_task.test)[0][0].exp()
    assert [prediction.label_probs[name] for name in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    assert sum(prediction.label_probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_classify_text_reads_each_column_from_its_own_line(tiny_lm, tiny_task):
    """A template naming two columns reads each from the typed text's line for it (both got the whole text)."""
    task = dataclasses.replace(
        tiny_task, text_fields=["text", "movie_name"], test=[row | {"movie_name": "Jaws"} for row in tiny_task.test]
    )
    template = "Movie: {movie_name} Review: {text} Sentiment:{mask}"
    prediction = classify_text(tiny_lm, task, "movie_name: Up\ntext: the acting was great", template, VERBALIZER)
    prompt = Prompt(Template.parse(template, task.text_fields), Verbalizer.parse(VERBALIZER, LABELS))
    example = {"movie_name": "Up", "text": "the acting was great", "label": 0}
    expected = label_log_probs(tiny_lm, prompt, [example])[0].exp()
    assert [prediction.label_probs[name] for name in LABELS] == pytest.approx(expected.tolist(), abs=1e-5)
    with pytest.raises(PeftlabError, match=r"^The template reads 2 columns \(movie_name, text\)"):
        classify_text(tiny_lm, task, "the acting was great", template, VERBALIZER)


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_classify_text_empty(tiny_mlm, tiny_task, text):
    with pytest.raises(PeftlabError, match="Type a text"):
        classify_text(tiny_mlm, tiny_task, text, TEMPLATE, VERBALIZER)


# ---------------------------------------------------------------- truncation end to end


def test_long_text_scores_within_max_length(tiny_lm, tiny_task):
    long_text = " ".join(["the", "plot", "was", "good"] * 150)
    example = {"text": long_text, "label": 1}
    prompt = _prompt(SUFFIX_TEMPLATE)
    queries = prompt.queries(tiny_lm, example)
    assert all(len(q.input_ids) <= tiny_lm.max_length for q in queries)
    log_probs = label_log_probs(tiny_lm, prompt, [example, tiny_task.test[0]])
    assert torch.isfinite(log_probs).all()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2), atol=1e-5)
    # Padding a long and a short example together gives the same scores as scoring them apart.
    apart = torch.cat([label_log_probs(tiny_lm, prompt, [e]) for e in (example, tiny_task.test[0])])
    assert torch.allclose(log_probs, apart, atol=ATOL)


def test_an_evaluation_says_how_many_texts_were_cut_to_fit_the_model(tiny_lm, tiny_task):
    """A score on texts the model read only in part carries a note counting them; short texts carry none."""
    long_text = " ".join(["the", "plot", "was", "good"] * 150)
    longer = dataclasses.replace(tiny_task, test=[*tiny_task.test[:3], {"text": long_text, "label": 1}])
    result = evaluate(tiny_lm, longer, [TEMPLATE, SUFFIX_TEMPLATE], VERBALIZER)
    assert f"1 of the 4 texts do not fit {tiny_lm.name}'s {tiny_lm.max_length}-token input: they were scored cut" in (
        " ".join(result.notes)
    )
    assert not [note for note in evaluate(tiny_lm, tiny_task, TEMPLATE, VERBALIZER).notes if "cut" in note]


def test_one_typed_text_that_does_not_fit_says_it_was_read_cut(tiny_lm, tiny_task):
    """'great movie' 3,000 times, typed into "Try one text", was called 'negative' from the tokens the model read,
    with no word that it read only part of it; an evaluation said so for its texts."""
    from peftlab.cloze import classify_text

    long_text = " ".join(["the", "plot", "was", "good"] * 150)
    prediction = classify_text(tiny_lm, tiny_task, long_text, TEMPLATE, VERBALIZER)
    assert (
        f"The text does not fit {tiny_lm.name}'s {tiny_lm.max_length}-token input: it was scored cut to fit (a text "
        "before the mask loses its start, one after it its end)."
    ) in prediction.notes
    short = classify_text(tiny_lm, tiny_task, "the plot was good", TEMPLATE, VERBALIZER)
    assert not [note for note in short.notes if "cut" in note]


def test_a_limit_on_a_split_sorted_by_label_scores_every_label(tiny_causal, tiny_task):
    """bbc-topic's test split is stored sorted by label: its first N texts were one class."""
    import dataclasses

    by_label = dataclasses.replace(tiny_task, test=sorted(tiny_task.test, key=lambda e: e["label"]))
    result = evaluate(tiny_causal, by_label, TEMPLATE, VERBALIZER, limit=4)
    assert result.summary()["support"] == {"negative": 2, "positive": 2}
    # The same texts whatever the method: a zero-shot row and a trained row on the same limit stay paired.
    subset = by_label.test_subset(4)
    assert subset == by_label.test_subset(4) and all(e in by_label.test for e in subset)


@pytest.mark.parametrize("limit", [1, 2])
def test_mean_calibration_on_a_few_texts_also_sees_a_reference_sample(tiny_causal, tiny_task, limit):
    result = evaluate(tiny_causal, tiny_task, TEMPLATE, VERBALIZER, calibration="mean", limit=limit)
    scored = tiny_task.test_subset(limit)
    reference = [e for e in tiny_task.test_subset(64) if e not in scored]
    assert result.settings["calibration_reference_texts"] == len(reference) > 0
    setup = ClozeSetup.build(tiny_task, TEMPLATE, VERBALIZER)
    raw = torch.cat(
        [
            label_log_probs(tiny_causal, setup.prompts[0], scored),
            label_log_probs(tiny_causal, setup.prompts[0], reference),
        ]
    )
    expected = calibrate(raw, "mean")[:limit].exp()
    got = torch.tensor(result.predictions[["p(negative)", "p(positive)"]].to_numpy()).float()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # Not centred on itself: one text alone would come out uniform and always predict the first label.
    assert not torch.allclose(got, torch.full_like(got, 0.5))


def test_an_evaluation_says_how_many_of_the_split_it_scored(tiny_causal, tmp_path):
    """A 40-row upload without a split column, scored with a limit of 10, said "all 10 rows": the other 30 went
    unmentioned. It says "10 of the 40 rows" now, and "all 40 rows" when every row was scored."""
    from peftlab.cloze import evaluate
    from peftlab.store import scored_note
    from peftlab.tasks import load_task

    upload = tmp_path / "reviews.csv"
    rows = [f"review {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(40)]
    upload.write_text("text,label\n" + "\n".join(rows) + "\n")
    task = load_task(str(upload))
    template, verbalizer = "{text} It was{mask}", {"neg": ["bad"], "pos": ["good"]}
    some = evaluate(tiny_causal, task, template, verbalizer, limit=10, split=task.cloze_split())
    every = evaluate(tiny_causal, task, template, verbalizer, split=task.cloze_split())
    assert scored_note(some.settings) == (
        "10 of the 40 rows, a stratified subset (the file has no split column and nothing was trained)"
    )
    assert scored_note(every.settings) == "all 40 rows (the file has no split column and nothing was trained)"
    # a 42-row file of 6 texts, each 7 times, said "all 6 rows" and nothing of the other 36
    upload.write_text("text,label\n" + "\n".join(rows[:6] * 7) + "\n")
    task = load_task(str(upload))
    repeated = evaluate(tiny_causal, task, template, verbalizer, split=task.cloze_split())
    assert scored_note(repeated.settings, task.left_out_words) == (
        "all 6 rows (the file has no split column and nothing was trained); 36 rows of the file were left out: 36 "
        "repeating a text"
    )


def test_in_context_demonstrations_of_an_upload_are_never_among_the_texts_scored(tiny_causal, tmp_path):
    """A 30-row upload without a split column, evaluated with 2 demonstrations, scored all 30 rows: the two
    demonstrations were scored with themselves and their gold labels in front of them, under "nothing was
    trained". With demonstrations the held-out test rows are scored, and the demonstrations come from the rest."""
    from peftlab.cloze import ClozeSetup, evaluate
    from peftlab.store import scored_note
    from peftlab.tasks import load_task

    upload = tmp_path / "plain.csv"
    rows = [f"review {i} was {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}" for i in range(30)]
    upload.write_text("text,label\n" + "\n".join(rows) + "\n")
    task = load_task(str(upload))
    template, verbalizer = "{text} It was{mask}", {"neg": ["bad"], "pos": ["good"]}
    assert (task.cloze_split(0), task.cloze_split(2)) == ("all", "test")
    result = evaluate(tiny_causal, task, template, verbalizer, shots_in_context=2, split=task.cloze_split(2))
    demonstrations = {
        d["text"] for d in ClozeSetup.build(task, template, verbalizer, "none", 2).prompts[0].demonstrations
    }
    assert len(demonstrations) == 2 and not demonstrations & set(result.predictions["text"])
    assert result.n == 6  # 20 % of each class of 15
    assert scored_note(result.settings) == (
        "all 6 test texts (the file has no split column: 20% of each class was held out; the demonstrations come "
        "from the other rows)"
    )
    # K is per class, as AutoPrompt's and a grid's: 1 demonstration of each label (it was 2, the total)
    assert result.row.k == 1 and result.row.settings["demonstrations_per_label"] == {"neg": 1, "pos": 1}
    with pytest.raises(ValueError, match="the demonstrations come from the training rows"):
        evaluate(tiny_causal, task, template, verbalizer, shots_in_context=2, split="all")
    assert "held out" not in scored_note(evaluate(tiny_causal, task, template, verbalizer, split="all").settings)


def test_an_evaluation_says_when_its_scores_were_kept_from_an_earlier_one_and_names_an_ensemble(tiny_causal, tiny_task):
    """The same evaluation run again answered in 5 s and said "13.4 s (3 texts/s)", the first run's time: its
    seconds are the first scoring's (what the result costs), and it says that its scores were kept."""
    from peftlab.cloze import evaluate

    template, verbalizer = "{text} It was{mask}.", {name: [name] for name in tiny_task.label_names}
    fresh = evaluate(tiny_causal, tiny_task, [template, "{text}{mask}"], verbalizer, limit=4)
    again = evaluate(tiny_causal, tiny_task, [template, "{text}{mask}"], verbalizer, "contextual", limit=4)
    assert not fresh.reused and again.reused and again.seconds == fresh.seconds
    # an ensemble is named so among the methods (it read "zero-shot", and was taken as Compare's baseline)
    assert (fresh.row.method, again.row.method) == ("zero-shot ensemble", "zero-shot ensemble · contextual")
    # mean-centring 4 texts also scores reference texts, now; the same again keeps those too
    centred = evaluate(tiny_causal, tiny_task, [template, "{text}{mask}"], verbalizer, "mean", limit=4)
    assert not centred.reused and centred.seconds > fresh.seconds
    assert evaluate(tiny_causal, tiny_task, [template, "{text}{mask}"], verbalizer, "mean", limit=4).reused
    # one template of the two never scored these texts, or other texts: scored now
    assert not evaluate(tiny_causal, tiny_task, [template, "{text} so{mask}"], verbalizer, limit=4).reused
    single = evaluate(tiny_causal, tiny_task, template, verbalizer, limit=3)
    assert not single.reused and single.row.method == "zero-shot"


def test_long_texts_are_scored_a_few_at_a_time_so_progress_and_stop_reach_them(tiny_causal, tiny_task, monkeypatch):
    """20 texts of 2,048 tokens went in one forward pass of 80 s on 2 CPU cores: no progress until it ended, and
    Stop (which acts between batches) could not end it. A batch holds at most TOKENS_PER_BATCH tokens."""
    import peftlab.cloze as cloze

    prompt, examples = _prompt(SUFFIX_TEMPLATE), tiny_task.test
    expected = label_log_probs(tiny_causal, prompt, examples, batch_size=1)
    lengths = sorted(len(prompt.queries(tiny_causal, e)[0].input_ids) for e in examples)
    monkeypatch.setattr(cloze, "TOKENS_PER_BATCH", 2 * lengths[-1])  # two of the longest texts
    sizes, word_scores = [], cloze.word_scores

    def counting(lm, query_lists, *args, **kwargs):
        sizes.append(len(query_lists))
        return word_scores(lm, query_lists, *args, **kwargs)

    monkeypatch.setattr(cloze, "word_scores", counting)
    got = label_log_probs(tiny_causal, prompt, examples, batch_size=len(examples))
    assert torch.allclose(got, expected, atol=ATOL)
    assert len(sizes) > 1 and sizes[-1] <= 2 and sum(sizes) == len(examples)  # the longest two at a time, the rest more
    assert sizes == sorted(sizes, reverse=True)


def test_another_calibration_of_the_same_texts_scores_them_once(tiny_causal, tiny_task):
    """The Start tab scored its 100 reviews three times, once per calibration (37 s each on 2 CPU cores): the label
    scores are the same, only the calibration differs. The second evaluation runs no forward pass, gives what a fresh
    scoring gives, and says what the scoring cost (not the moment its second look took)."""
    template = "Opinion: {text} So it was{mask}"  # a prompt no other test scores
    calls = []
    hook = tiny_causal.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        raw = evaluate(tiny_causal, tiny_task, template, VERBALIZER, "none")
        scored = len(calls)
        mean = evaluate(tiny_causal, tiny_task, template, VERBALIZER, "mean")
        contextual = evaluate(tiny_causal, tiny_task, template, VERBALIZER, "contextual")
    finally:
        hook.remove()
    # contextual's content-free inputs alone, together in as many passes as the texts' one batch (its words need a
    # query each, run after the text's start: `ItemStarts`)
    assert scored > 0 and len(calls) - scored == scored
    assert mean.seconds == raw.seconds == mean.row.scoring_seconds
    log_probs = label_log_probs(tiny_causal, _prompt(template), tiny_task.test)
    assert torch.allclose(
        torch.tensor(mean.predictions[["p(negative)", "p(positive)"]].to_numpy()).log(),
        calibrate(log_probs, "mean"),
        atol=1e-5,
    )
    assert contextual.row.predictions != [] and mean.accuracy == pytest.approx(
        (calibrate(log_probs, "mean").argmax(1) == torch.tensor([e["label"] for e in tiny_task.test])).float().mean()
    )


def test_label_words_of_different_lengths_are_said_when_nothing_calibrates(tiny_causal, tiny_task):
    """'terrible movie' against 'wonderful' called a review 100 % positive: a word scores the product of its
    tokens' probabilities, and no word said why."""
    verbalizer = {"negative": ["bad"], "positive": ["wonderfully great"]}
    pieces = {
        w: len(tiny_causal.tokenizer(" " + w, add_special_tokens=False).input_ids) for w in ("bad", "wonderfully great")
    }
    assert pieces["wonderfully great"] > pieces["bad"]
    note = (
        f"The label words differ in length: 'wonderfully great' is {pieces['wonderfully great']} tokens, 'bad' "
        f"{pieces['bad']}. A word scores the product of its tokens' probabilities, so longer words score lower and "
        "their label is predicted less often: prefer one-token words, or try calibration (contextual or mean)."
    )
    assert note in evaluate(tiny_causal, tiny_task, TEMPLATE, verbalizer).notes
    assert classify_text(tiny_causal, tiny_task, "a fun film", TEMPLATE, verbalizer).notes == [note]
    assert not any(
        "differ in length" in n for n in evaluate(tiny_causal, tiny_task, TEMPLATE, verbalizer, "mean").notes
    )
    assert classify_text(tiny_causal, tiny_task, "a fun film", TEMPLATE, SINGLE).notes == []
