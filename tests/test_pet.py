"""PET and iPET: the ensemble's soft labels, the distillation loss and iPET's added sets against hand computation,
a whole run on the tiny model (twice, for determinism), and bad input in one sentence."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import Counter

import numpy as np
import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.pet import (
    PETConfig,
    PETEvent,
    PETResult,
    check_pool_sizes,
    distillation_loss,
    draw_labelled,
    ensemble_scores,
    ipet_added_size,
    labels_right,
    pattern_prompts,
    pet_run,
    read_unlabelled,
    seed_pool,
    soft_labels,
    unlabelled_pool,
)
from peftlab.tuning import TrainSettings
from peftlab.ui import pet_tab

TINY_PATTERNS = ["{text} it was{mask}", "review : {text} sentiment :{mask}"]
TINY_WORDS = {"negative": ["bad"], "positive": ["good"]}


def pattern_scores() -> torch.Tensor:
    """(P=2, N=1, L=2): pattern 1 says 0.8 / 0.2, pattern 2 says 0.4 / 0.6."""
    return torch.tensor([[[0.8, 0.2]], [[0.4, 0.6]]]).log()


def test_ensemble_scores_and_soft_labels_match_a_hand_computation():
    # s = (0.75 ln 0.8 + 0.25 ln 0.4, 0.75 ln 0.2 + 0.25 ln 0.6) = (-0.39643, -1.33479)
    s = ensemble_scores(pattern_scores(), [0.75, 0.25])
    assert s[0].tolist() == pytest.approx([-0.39643, -1.33479], abs=1e-5)
    # q(negative) = 1 / (1 + exp((s1 - s0) / T)): 0.71877 at T = 1, 0.61519 at T = 2 (softer)
    assert soft_labels(pattern_scores(), [0.75, 0.25], 1.0)[0, 0].item() == pytest.approx(0.71877, abs=1e-5)
    assert soft_labels(pattern_scores(), [0.75, 0.25], 2.0)[0, 0].item() == pytest.approx(0.61519, abs=1e-5)
    # The weights are normalised: scaling them changes nothing; uniform weights are the plain mean.
    assert torch.allclose(ensemble_scores(pattern_scores(), [3.0, 1.0]), s)
    uniform = ensemble_scores(pattern_scores(), [1.0, 1.0])[0]
    assert uniform.tolist() == pytest.approx([(math.log(0.8) + math.log(0.4)) / 2, (math.log(0.2) + math.log(0.6)) / 2])
    # Patterns that all scored 0 on the labelled set are weighed equally rather than dividing by zero.
    assert torch.allclose(ensemble_scores(pattern_scores(), [0.0, 0.0]), ensemble_scores(pattern_scores(), [1, 1]))


def test_distillation_loss_is_zero_when_the_classifier_matches_the_soft_labels():
    q = torch.tensor([[0.7, 0.3], [0.1, 0.9]])
    for temperature in (1.0, 2.0):
        matching = temperature * q.log()  # softmax(z / T) = q
        assert distillation_loss(matching, q, temperature).item() == pytest.approx(0.0, abs=1e-6)
    # KL([0.7, 0.3] || [0.5, 0.5]) = 0.7 ln 1.4 + 0.3 ln 0.6 = 0.08228 (one text, T = 1)
    even = torch.tensor([[0.5, 0.5]]).log()
    assert distillation_loss(even, q[:1], 1.0).item() == pytest.approx(0.08228, abs=1e-5)
    # T² scaling: at T = 2 the logits are halved first, then the KL is multiplied by 4.
    z = torch.tensor([[2.0, 0.0]])
    p = torch.softmax(z / 2, -1)[0]
    hand = 4 * sum(qi * math.log(qi / pi) for qi, pi in zip(q[0].tolist(), p.tolist()))
    assert distillation_loss(z, q[:1], 2.0).item() == pytest.approx(hand, abs=1e-5)


def test_ipet_added_sets_grow_by_the_factor_and_stay_balanced():
    assert [ipet_added_size(32, 5, j) for j in (1, 2)] == [128, 768]  # |T| (d^j - 1)
    assert [ipet_added_size(80, 5, j) for j in (1, 2)] == [320, 1920]
    pool = [{"text": f"text {i}"} for i in range(10)]
    # Texts 0-6 lean to label 0 (confidence 0.6 ... 0.9), texts 7-9 to label 1.
    probabilities = torch.tensor([[0.6 + 0.05 * i, 0.4 - 0.05 * i] for i in range(7)] + [[0.2, 0.8]] * 3)
    drawn = [{**pool[i], "label": label} for i, label in draw_labelled(probabilities, [4, 4], np.random.default_rng(0))]
    assert Counter(row["label"] for row in drawn) == {0: 4, 1: 4}
    assert all((int(row["text"].split()[1]) < 7) == (row["label"] == 0) for row in drawn)
    assert len({row["text"] for row in drawn if row["label"] == 0}) == 4  # enough candidates: no repeats
    # Label 1 has 3 candidates for 4 draws: they are repeated, as PET's reference code does.
    assert Counter(row["text"] for row in drawn if row["label"] == 1).most_common(1)[0][1] == 2
    # Confidence decides who is drawn: over many draws of one text from label 0, the surest comes most often.
    rng = np.random.default_rng(1)
    firsts = Counter(draw_labelled(probabilities, [1, 0], rng)[0][0] for _ in range(2000))
    assert firsts.most_common(1)[0][0] == 6


def test_a_label_no_text_leans_to_still_gets_its_share_from_the_texts_likeliest_to_be_it():
    """Every text leans to label 0; label 1's 2 texts are the 2 of highest q(1|x): texts 3 and 4."""
    probabilities = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]])
    drawn = draw_labelled(probabilities, [2, 2], np.random.default_rng(0))
    assert Counter(label for _, label in drawn) == {0: 2, 1: 2}
    assert {i for i, label in drawn if label == 1} == {3, 4}


@pytest.mark.parametrize("counts", [[0, 3], [0, 8]])
def test_a_label_whose_probability_underflows_to_zero_is_still_drawn(counts):
    """An ensemble sure by more than 104 nats gives q(1|x) = 0 in float32 for every text: the weights were 0/0, NaN,
    and numpy's draw raised "Probabilities contain NaN" (8 asked of a 5-text pool repeats them: weights matter)."""
    probabilities = torch.softmax(torch.tensor([[0.0, -120.0]] * 5), -1)
    assert probabilities[:, 1].eq(0).all()
    drawn = draw_labelled(probabilities, counts, np.random.default_rng(0))
    assert len(drawn) == counts[1] and {label for _, label in drawn} == {1}
    copies = Counter(i for i, _ in drawn)  # the 3 likeliest texts once; 8 of 5 texts copied twice, none more
    assert set(copies) <= set(range(5)) and max(copies.values()) == -(-counts[1] // 5)


def test_the_share_of_soft_labels_right_is_their_arg_max_against_the_gold_labels():
    q = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    assert labels_right(q, [0, 1, 1, 0]) == 0.5  # texts 1 and 2 right
    assert labels_right(q, None) is None  # an uploaded pool has no gold labels


def test_the_unlabelled_pool_hides_labels_and_leaves_out_the_labelled_examples(tiny_task):
    train, dev = tiny_task.few_shot(1, 13)
    pool, gold = unlabelled_pool(tiny_task, train + dev, 8, 13)
    assert len(pool) == 8 and all("label" not in row for row in pool)
    assert not {row["text"] for row in pool} & {row["text"] for row in train + dev}
    by_text = {row["text"]: row["label"] for row in tiny_task.train}
    assert gold == [by_text[row["text"]] for row in pool]
    assert unlabelled_pool(tiny_task, train + dev, 8, 13) == (pool, gold)  # the seed fixes it
    with pytest.raises(PeftlabError, match=r"has 8 texts besides the labelled examples, fewer than the 9"):
        unlabelled_pool(tiny_task, train + dev, 9, 13)


def run_tiny(tiny_causal, tiny_task, texts=None, backend=None, **changes):
    return list(tiny_run(tiny_causal, tiny_task, texts, backend, **changes))


def tiny_run(tiny_causal, tiny_task, texts=None, backend=None, **changes):
    config = PETConfig(
        **{
            "shots": 1,
            "seeds": (13,),
            "unlabelled": 6,
            "distil_steps": 4,
            "ipet_generations": 1,
            "growth": 2.0,
            "test_limit": None,
            **changes,
        }
    )
    settings = TrainSettings(steps=4, batch_size=2, eval_every=2)
    prompts = pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS])
    return pet_run(tiny_causal, tiny_task, prompts, config, settings, unlabelled=texts, backend=backend)


def test_a_tiny_run_trains_every_model_and_gives_the_same_numbers_twice(tiny_causal, tiny_task):
    items = run_tiny(tiny_causal, tiny_task)
    *events, result = items
    models = {(e.generation, e.model) for e in events}
    assert models == {
        (0, "pattern 1"),
        (0, "pattern 2"),
        (0, "classifier"),
        (1, "pattern 1"),
        (1, "pattern 2"),
        (1, "classifier"),
    }
    assert len(result.pattern_accuracies) == 2 and len(result.ipet_accuracy) == 1
    assert result.added_sizes == [ipet_added_size(2, 2.0, 1)]
    assert result.soft_labels.shape == (6, 2) and np.allclose(result.soft_labels.sum(1), 1)
    assert [row.method for row in result.rows] == ["pet ensemble", "pet", "ipet"]
    prompt = pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS])[0]
    _, lora = method_config("lora").build(tiny_causal, prompt)
    assert result.rows[0].trainable_params == 2 * sum(p.numel() for p in lora)  # both patterns' LoRA weights
    assert all(row.settings["rows_scored"] == 8 and row.k == 1 and row.seed == 13 for row in result.rows)
    # the patterns the rows came from (runs of other hand-written patterns were one line of the comparison)
    assert all(row.settings["patterns"]["templates"] == list(TINY_PATTERNS) for row in result.rows)
    assert result.classifier.config.name == "classifier"
    # the classifier kept (iPET's, the last distilled) carries its own row's result into a saved zip
    assert result.classifier.scored.result_id == result.rows[-1].id
    assert result.classifier.scored.accuracy == result.ipet_distilled_accuracy
    # its card says what trained it: the card showed the pattern models' trainer alone, as if the classifier had trained
    # on the K examples for their steps
    from peftlab.saving import trained_card

    card = str(trained_card(result.classifier))
    assert card.count("# PET classifier on tiny-sentiment with K=1 examples per class, seed 13\n") == 1
    assert "It is PET's distilled classifier: it learnt the soft labels that the ensemble of 2 pattern models" in card
    assert "gave 6 unlabelled texts" in card and '"distil_steps": ' in card and '"templates": [' in card
    # The weights are each pattern's accuracy on the two labelled examples before training: 0, 0.5 or 1.
    assert all(w in (0.0, 0.5, 1.0) for w in result.pattern_weights)
    # the share right of the soft labels iPET's classifier learnt, beside PET's
    train, dev = tiny_task.few_shot(1, 13)
    gold = unlabelled_pool(tiny_task, train + dev, 6, 13)[1]
    assert result.summary()["ipet_soft_label_accuracy"] == labels_right(torch.from_numpy(result.soft_labels), gold)
    again = run_tiny(tiny_causal, tiny_task)[-1]
    assert again.summary() | {"seconds": 0} == result.summary() | {"seconds": 0}
    assert np.array_equal(again.soft_labels, result.soft_labels)


def test_the_auxiliary_language_modelling_loss_trains_on_a_pool_smaller_than_a_batch(tiny_causal, tiny_task):
    """`--unlabelled 4 --lm-loss-weight 1e-4` with batches of 8 failed at step 1: "Sample larger than population"."""
    *events, result = run_tiny(tiny_causal, tiny_task, unlabelled=1, lm_loss_weight=1e-4, ipet_generations=0)
    assert result.soft_labels.shape == (1, 2)
    steps = {e.step for e in events if isinstance(e, PETEvent) and e.model == "pattern 1"}
    assert steps == {1, 2, 3, 4}  # batches of 2 beside the 1 pool text


def test_the_auxiliary_language_modelling_loss_reads_the_texts_inside_the_pattern(tiny_causal, tiny_task, monkeypatch):
    """It read the bare fields; the reference code encodes its unlabelled batch through the pattern (without a
    label: here the pattern's words around the text, without the mask)."""
    from peftlab.prompts import Prompt

    read, unmasked = [], Prompt.unmasked_text

    def recorded(self, lm, example, limit):
        read.append(text := unmasked(self, lm, example, limit))
        return text

    monkeypatch.setattr(Prompt, "unmasked_text", recorded)
    run_tiny(tiny_causal, tiny_task, lm_loss_weight=1e-4, ipet_generations=0, distil_steps=1)
    # the classifier reads pattern 1 alone: pattern 2's words around a pool text come from its model's LM loss
    second = [t.removeprefix("review : ").removesuffix(" sentiment :") for t in read if t.startswith("review : ")]
    assert second and set(second) <= {row["text"] for row in tiny_task.train}


def test_pet_on_a_masked_lm_is_refused_before_any_training(tiny_mlm, tiny_task):
    """Every pattern model trained and scored, and the run failed at the classifier: "classifier is wired for
    causal LMs in this version"."""
    prompts = pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS])
    run = pet_run(tiny_mlm, tiny_task, prompts, PETConfig(shots=1, seeds=(13,), unlabelled=6), TrainSettings())
    with pytest.raises(PeftlabError) as error:
        next(run)  # before the first event
    assert str(error.value) == (
        "PET distils into a sequence classifier wired for causal LMs in this version; tiny-bert is a masked LM."
    )


def test_an_uploaded_unlabelled_file_is_what_the_ensemble_labels(tiny_causal, tiny_task, tmp_path):
    upload = tmp_path / "reviews.csv"
    upload.write_text("id,text\n" + "".join(f"{i},the film was fine {i}\n" for i in range(7)) + "7,\n")
    texts = read_unlabelled(str(upload), pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS]))
    assert texts == [{"text": f"the film was fine {i}"} for i in range(7)]  # the empty row dropped, id ignored
    result = run_tiny(tiny_causal, tiny_task, texts, ipet_generations=0)[-1]
    assert result.soft_labels.shape == (6, 2) and result.soft_label_accuracy is None  # no gold labels to check
    with pytest.raises(PeftlabError, match=r"^The unlabelled file has 7 texts, fewer than the 8 unlabelled texts"):
        run_tiny(tiny_causal, tiny_task, texts, unlabelled=8)


def test_an_uploaded_unlabelled_file_never_gives_the_classifier_a_test_text_or_a_labelled_example(
    tiny_causal, tiny_task
):
    """Uploaded texts went to the ensemble as they were: a test text among them was soft-labelled, trained on by the
    classifier and then scored, so its accuracy was not a held-out one. Such texts (and the labelled examples) are
    left out of every seed's pool, and a pool they leave too small gets one sentence."""
    train, dev = tiny_task.few_shot(1, 13)
    test_texts = [row["text"] for row in tiny_task.test_subset(None)]
    fresh = [{"text": f"the film was fine {i}", "id": str(i)} for i in range(6)]  # a column no pattern reads
    texts = fresh + [{"text": f" {t} ", "id": "x"} for t in test_texts] + [{"text": r["text"]} for r in train + dev]
    config = PETConfig(shots=1, seeds=(13,), unlabelled=6, test_limit=None)
    pool, gold = seed_pool(tiny_task, config, train + dev, 13, texts)
    assert sorted(row["text"] for row in pool) == sorted(row["text"] for row in fresh) and gold is None
    taken = len(texts) - 6
    with pytest.raises(
        PeftlabError,
        match=rf"^The unlabelled file has 6 texts besides the labelled examples and the test texts \({taken} of its "
        rf"{len(texts)} are among them\), fewer than the 7 unlabelled texts asked; ask for at most 6\.$",
    ):
        check_pool_sizes(tiny_task, dataclasses.replace(config, unlabelled=7), texts)


def test_a_stop_during_ipet_keeps_the_seed_s_finished_pet(tiny_causal, tiny_task):
    """Stopped in iPET's first generation, a seed was dropped whole, its finished PET classifier and rows with it;
    it now comes back with its PET numbers, and the next seed does not start."""
    stop, items = threading.Event(), []
    config = PETConfig(shots=1, seeds=(13, 21), unlabelled=6, distil_steps=4, ipet_generations=1, growth=2.0)
    prompts = pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS])
    for item in pet_run(tiny_causal, tiny_task, prompts, config, TrainSettings(steps=4, batch_size=2), stop):
        items.append(item)
        if isinstance(item, PETEvent) and item.generation == 1:
            stop.set()
    results = [item for item in items if isinstance(item, PETResult)]
    assert len(results) == 1 and results[0].seed == 13 and results[0].ipet_stopped
    assert [row.method for row in results[0].rows] == ["pet ensemble", "pet"]
    assert results[0].summary()["ipet_stopped"] and results[0].ipet_distilled_accuracy is None
    assert results[0].classifier.scored.accuracy == results[0].distilled_accuracy
    assert results[0].added_sizes == results[0].added_label_accuracy == results[0].ipet_accuracy == []  # none whole
    table = pet_tab._table(results, 2)
    assert "iPET" not in table.columns and not table.isin(["nan%"]).any().any()


def test_a_pet_table_with_a_seed_stopped_in_ipet_says_so_and_averages_the_seeds_that_have_it():
    """Seed 13 finished iPET, seed 21 was stopped in its second generation: its iPET cells showed "nan%"."""
    from types import SimpleNamespace

    def seed(number, ipet, distilled):
        return SimpleNamespace(
            seed=number,
            pattern_accuracies=[0.7, 0.8],
            ensemble_accuracy=0.8,
            distilled_accuracy=0.82,
            ipet_accuracy=ipet,
            ipet_distilled_accuracy=distilled,
            soft_label_accuracy=None,
            ipet_soft_label_accuracy=None,
        )

    table = pet_tab._table([seed(13, [0.84, 0.86], 0.85), seed(21, [0.8], None)], 2).set_index("seed")
    assert table.loc["21", ["iPET ensemble g1", "iPET ensemble g2", "iPET"]].tolist() == ["80.0%", "—", "—"]
    assert table.loc["mean ± std", "iPET"] == "85.0% ± —"  # seed 13's alone
    assert table.loc["mean ± std", "iPET ensemble g1"] == "82.0% ± 2.8%"


def test_a_generation_that_adds_no_text_has_no_share_of_right_labels(tiny_causal, tiny_task):
    """K=1 of 2 labels with growth 1.2 adds int(2 · 1.2 − 2) = 0 texts: the share of right labels was the mean of
    nothing, NaN, which `--json` wrote as invalid JSON."""
    result = run_tiny(tiny_causal, tiny_task, growth=1.2)[-1]
    assert result.added_sizes == [0] and result.added_label_accuracy == [None]


def test_the_kept_classifier_is_named_by_the_step_that_distilled_it():
    """One classifier per seed was kept, each a whole model copy in the visitor's session (3 of SmolLM2 took 680 MB);
    the last seed's is kept, as a grid keeps a method's last run, its seed shown beside its name."""
    from types import SimpleNamespace

    from peftlab.ui.pet_tab import classifier_name

    assert classifier_name(SimpleNamespace(seed=13, ipet_distilled_accuracy=None)) == "pet classifier"
    assert classifier_name(SimpleNamespace(seed=21, ipet_distilled_accuracy=0.8)) == "ipet classifier"


def test_ipet_says_when_its_added_texts_repeat(tiny_causal, tiny_task):
    """bbc-topic's generation 2 drew 1,920 texts from a 1,000-text pool, repeating them as the reference code
    upsamples, without a word. Here one pool text is drawn once for each of the 2 labels: 1 repeat."""
    result = run_tiny(tiny_causal, tiny_task, unlabelled=1)[-1]
    assert result.added_sizes == [2] and result.added_repeats == [1]
    assert result.summary()["ipet_added_repeats"] == [1]
    assert result.warnings(["negative", "positive"], 4)[-1] == (
        "Seed 13: iPET generation 1 added 2 texts to each pattern model's training set from a pool of 1 unlabelled "
        "texts, and up to 1 of them repeat another (a label drew more texts than lean to it, and they were drawn "
        "again, as the reference code does): a larger unlabelled pool or a smaller growth d repeats fewer."
    )
    assert run_tiny(tiny_causal, tiny_task)[-1].added_repeats == [0]  # 2 of 6 texts, one leaning to each label


def test_ipet_reports_how_many_added_labels_were_right(tiny_causal, tiny_task, monkeypatch):
    """Per generation, the share of the texts iPET added whose drawn label is their hidden gold one, over every
    pattern model's added set."""
    import peftlab.pet as pet

    drawn, original = [], pet.draw_labelled
    monkeypatch.setattr(pet, "draw_labelled", lambda *a: drawn.append(original(*a)) or drawn[-1])
    result = run_tiny(tiny_causal, tiny_task)[-1]
    train, dev = tiny_task.few_shot(1, 13)
    _, gold = unlabelled_pool(tiny_task, train + dev, 6, 13)
    by_hand = np.mean([np.mean([gold[i] == label for i, label in pairs]) for pairs in drawn])
    assert len(drawn) == 2 and result.added_label_accuracy == [pytest.approx(by_hand)]
    assert result.summary()["ipet_added_labels_right"] == result.added_label_accuracy


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "review,label\ngreat,1\n",
            r"^The unlabelled file 'u.csv' has no column 'text'; it needs the column\(s\) the patterns use: text\.$",
        ),
        ("text\n \n", r"^The unlabelled file 'u.csv' has no texts; add one per row\.$"),
    ],
)
def test_a_bad_unlabelled_file_is_one_sentence(tiny_task, tmp_path, content, message):
    (tmp_path / "u.csv").write_text(content)
    with pytest.raises(PeftlabError, match=message):
        read_unlabelled(str(tmp_path / "u.csv"), pattern_prompts(tiny_task, TINY_PATTERNS, [TINY_WORDS]))


def test_one_verbalizer_for_every_pattern_may_be_given_alone(tiny_task):
    """A dict alone failed with "KeyError: 0" for 2 patterns and "not 2 for 3 patterns" (its labels counted) for 3;
    a string alone counted its letters."""
    three = [*TINY_PATTERNS, "{text} So:{mask}"]
    listed = pattern_prompts(tiny_task, three, [TINY_WORDS])
    assert pattern_prompts(tiny_task, three, TINY_WORDS) == listed
    lines = "negative: bad\npositive: good"
    assert pattern_prompts(tiny_task, three, lines) == pattern_prompts(tiny_task, three, [lines]) == listed


def test_soft_labels_refuse_a_temperature_not_above_zero():
    with pytest.raises(ValueError, match="the temperature must be above 0, not 0"):
        soft_labels(torch.zeros(2, 3, 2), [1.0, 1.0], 0)  # every soft label was NaN


@pytest.mark.parametrize(
    ("patterns", "words", "changes", "message"),
    [
        (TINY_PATTERNS[:1], [TINY_WORDS], {}, r"^PET needs at least two patterns"),
        # one pattern, and no {mask} in it: what is wrong with it first (it was told only that PET needs two)
        (["no mask"], [TINY_WORDS], {}, r"^Pattern 1: The template must contain exactly one \{mask\}"),
        (
            [*TINY_PATTERNS, f" {TINY_PATTERNS[0]} "],  # accepted as a third model and a double weight in the ensemble
            [TINY_WORDS],
            {},
            r"^Pattern 3 is pattern 1 again, with the same verbalizer; give each pattern once\.$",
        ),
        (  # the same verbalizer written as lines and as JSON was a second model of the same pattern
            [TINY_PATTERNS[0], TINY_PATTERNS[0]],
            ["negative: bad\npositive: good", {"negative": ["bad"], "positive": ["good"]}],
            {},
            r"^Pattern 2 is pattern 1 again, with the same verbalizer; give each pattern once\.$",
        ),
        (
            [TINY_PATTERNS[0], "{text} it was"],
            [TINY_WORDS],
            {},
            r"^Pattern 2: The template must contain exactly one \{mask\}, but it has no \{mask\}\.$",
        ),
        (TINY_PATTERNS, [TINY_WORDS] * 3, {}, r"^Give one verbalizer for every pattern or one per pattern, not 3"),
        # one verbalizer for all patterns names none of them ("Pattern 1: ..." sent people to the first pattern)
        (TINY_PATTERNS, [{"negative": ["bad"]}], {}, r"^The verbalizer gives no word for label\(s\) 'positive'\.$"),
        (
            TINY_PATTERNS,
            [TINY_WORDS, {"negative": ["bad"]}],
            {},
            r"^Pattern 2's verbalizer: The verbalizer gives no word for label\(s\) 'positive'\.$",
        ),
        (
            TINY_PATTERNS,
            [TINY_WORDS],
            {"shots": 1, "unlabelled": 50},
            r"has 8 texts besides the labelled examples, fewer than the 50",
        ),
        (TINY_PATTERNS, [TINY_WORDS], {"shots": 4}, r"K=4 needs 8 examples of class"),
        (  # each pattern model trained on texts cut away to fit beside the pattern's own words
            [TINY_PATTERNS[0], "{text} " + "word " * 300 + "it was{mask}"],
            [TINY_WORDS],
            {"shots": 1, "unlabelled": 4},
            r"^Pattern 2: The template '\{text\} word word .*…' takes \d+ of the 256 tokens tiny-llama reads, "
            r"leaving the text fewer than 16; shorten it to at most about 240 tokens with its label words\.$",
        ),
    ],
)
def test_bad_input_is_one_sentence(tiny_causal, tiny_task, patterns, words, changes, message):
    with pytest.raises(PeftlabError, match=message):
        prompts = pattern_prompts(tiny_task, patterns, words)
        list(pet_run(tiny_causal, tiny_task, prompts, PETConfig(**{"seeds": (13,), **changes}), TrainSettings()))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ipet_generations": -1}, r"iPET generations must be 0 or more, not -1"),
        ({"unlabelled": 0}, r"nlabelled must be at least 1, not 0"),
        ({"temperature": 0}, r"^Temperature must be a number from 0.01 to 100, not 0\.$"),
        ({"temperature": 1e-320}, r"^Temperature must be a number from 0.01 to 100, not 1e-320\.$"),
        ({"temperature": 1e30}, r"^Temperature must be a number from 0.01 to 100, not 1e\+30\.$"),
        ({"weighting": "votes"}, r"eighting must be one of train-accuracy, uniform"),
    ],
)
def test_bad_settings_are_one_sentence(changes, message):
    with pytest.raises(PeftlabError, match=message):
        PETConfig(**changes)


def test_a_distilled_classifier_leaning_on_one_label_gets_a_warning():
    """5 distillation steps gave a classifier at 50.0 % (every text 'positive') beside an ensemble at 75-90 %, and
    the tab said nothing."""
    from types import SimpleNamespace

    gold = [0, 1, 0, 1]
    row = SimpleNamespace
    result = PETResult(
        seed=21,
        patterns=[],
        pattern_weights=[],
        pattern_accuracies=[],
        ensemble_accuracy=0.5,
        distilled_accuracy=0.5,
        soft_labels=np.full((6, 2), 0.5),
        soft_label_accuracy=None,
        classifier=None,
        rows=[
            row(method="pet ensemble", predictions=[1, 1, 1, 1], gold=gold),  # an ensemble's vote is no classifier
            row(method="pet", predictions=[1, 1, 1, 1], gold=gold),
            row(method="ipet", predictions=[1, 1, 1, 0], gold=gold),  # 75 % 'positive' against 50 %: below 0.3
        ],
    )
    assert result.warnings(["negative", "positive"], 5) == [
        "Seed 21: PET's classifier predicted 'positive' for 100% of the test texts, against 50% of the gold labels: "
        "it learned little from the soft labels in 5 distillation steps; give it more distil steps or more "
        "unlabelled texts."
    ]
    result.rows[2].predictions = [0, 0, 0, 0]
    notes = result.warnings(["negative", "positive"], 5)
    assert notes[1].startswith("Seed 21: iPET's classifier predicted 'negative' for 100% of the test texts")


def test_ipet_adds_at_most_the_pool_per_label_however_large_its_growth(tiny_causal, tiny_task):
    """A growth d of 10^12 drew 8 million texts from a pool of 1,000 (repeating each thousands of times) and ran out
    of memory; past the pool a label's texts only repeat. d = 10 asks 9 a label of a 2-text pool here: 2 each."""
    result = run_tiny(tiny_causal, tiny_task, unlabelled=2, growth=10.0)[-1]
    assert result.added_sizes == [4]


def test_an_error_in_ipet_keeps_the_seed_s_pet_and_the_next_seed_runs(tiny_causal, tiny_task, monkeypatch):
    """An error in iPET (a pattern model trained to NaN) lost the seed's finished PET numbers, rows and classifier
    with it; they are kept, the error said, and the next seed runs."""
    import peftlab.pet as pet

    said = "The loss turned NaN at step 2."

    def failing(*args):
        raise PeftlabError(said)

    monkeypatch.setattr(pet, "draw_labelled", failing)
    results = [r for r in run_tiny(tiny_causal, tiny_task, seeds=(13, 21)) if isinstance(r, pet.PETResult)]
    assert [(r.seed, r.ipet_error) for r in results] == [(seed, said) for seed in (13, 21)]
    first = results[0]
    assert first.distilled_accuracy is not None and [row.method for row in first.rows] == ["pet ensemble", "pet"]
    assert first.warnings(["negative", "positive"], 4)[-1] == (
        f"Seed 13: iPET ended with an error, and its PET numbers and classifier are kept: {said}"
    )
    assert first.summary()["ipet_error"] == said


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory."),
        MemoryError(),
        RuntimeError("a fault of the app"),
        KeyboardInterrupt(),
    ],
)
def test_what_ends_ipet_that_is_no_input_s_fault_is_raised_after_the_seed_s_pet_is_out(
    tiny_causal, tiny_task, monkeypatch, error
):
    """Out of memory and faults in iPET were caught as a warning (the CLI exited 0, the next seed ran into them again,
    no traceback anywhere), and Ctrl-C lost the seed's finished PET: the seed's PETResult comes out with its PET, then
    the error itself, and no other seed runs."""
    import peftlab.pet as pet

    def failing(*args):
        raise error

    monkeypatch.setattr(pet, "draw_labelled", failing)
    results = []
    with pytest.raises(type(error)) as raised:
        for item in tiny_run(tiny_causal, tiny_task, seeds=(13, 21)):
            if isinstance(item, pet.PETResult):
                results.append(item)
    assert raised.value is error
    (kept,) = results
    assert (kept.seed, kept.ipet_stopped, kept.ipet_error) == (13, True, "")
    assert kept.distilled_accuracy is not None and [row.method for row in kept.rows] == ["pet ensemble", "pet"]


def test_ipet_refuses_soft_labels_that_are_not_numbers():
    """A pattern model that scored NaN made numpy's draw fail with "probabilities contain NaN", a fault of no named
    kind; it is one sentence, which ends the seed's iPET alone."""
    from peftlab.pet import draw_labelled

    q = torch.tensor([[0.5, 0.5], [float("nan"), float("nan")]])
    with pytest.raises(PeftlabError, match=r"^The ensemble's soft labels are not numbers \(a pattern's model scored"):
        draw_labelled(q, [1, 1], np.random.default_rng(0))
