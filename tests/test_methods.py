"""Adapters and BitFit on the tiny models: where they sit, what they train, and what they refuse."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from peftlab.cloze import ClozeSetup
from peftlab.errors import PeftlabError
from peftlab.methods import (
    AdapterMethod,
    BitFitMethod,
    PrefixTuningMethod,
    SequenceClassifierMethod,
    cut_note,
    feed_forward_modules,
    method_config,
)
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.scoring import word_scores
from peftlab.tuning import TrainSettings, train_method
from tests.test_tuning import TEMPLATE, VERBALIZER, easy_task, same_tensors, snapshot


@pytest.fixture(scope="module")
def easy():
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(8, seed=13)
    return task, setup, train, dev


def train(lm, easy, config, steps=20):
    _, setup, train_rows, dev = easy
    *events, trained = train_method(lm, setup, config, train_rows, dev, TrainSettings(steps=steps, eval_every=10))
    return events, trained


def scores(lm, prompt, examples, model):
    with torch.no_grad():
        return word_scores(
            lm, [prompt.queries(lm, e) for e in examples], len(prompt.verbalizer.flat_words), model=model
        )


def test_feed_forward_modules_are_the_blocks_mlps_and_berts_ffn_outputs(tiny_causal, tiny_mlm):
    assert feed_forward_modules(tiny_causal.model) == ["model.layers.0.mlp", "model.layers.1.mlp"]
    # BERT's feed-forward output is layer.N.output.dense; the attention's attention.output.dense is not one.
    assert feed_forward_modules(tiny_mlm.model) == [
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]


@pytest.mark.parametrize("lm_name", ["tiny_causal", "tiny_mlm"])
def test_an_untrained_adapter_leaves_the_scores_unchanged(request, easy, lm_name):
    lm = request.getfixturevalue(lm_name)
    _, setup, train_rows, _ = easy
    model, parameters = AdapterMethod(bottleneck=4).build(lm, setup.prompts[0])
    assert len(parameters) == 4 * lm.model.config.num_hidden_layers  # down/up weight and bias per block
    examples = easy[0].test
    with_adapter, without = (
        scores(lm, setup.prompts[0], examples, model),
        scores(lm, setup.prompts[0], examples, lm.model),
    )
    torch.testing.assert_close(
        with_adapter, without, atol=1e-5, rtol=0
    )  # up = 0: the adapter adds exactly 0 to each block


@pytest.mark.parametrize("lm_name", ["tiny_causal", "tiny_mlm"])
def test_adapters_train_and_leave_the_base_weights_bit_identical(request, easy, lm_name):
    lm = request.getfixturevalue(lm_name)
    before = snapshot(lm.model)
    events, trained = train(lm, easy, AdapterMethod(learning_rate=1e-2), steps=30)
    losses = [e.train_loss for e in events]
    assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5]), losses
    assert same_tensors(before, snapshot(lm.model)), "the cached LM changed"
    # Inside the trained copy every base weight is still the cached one: only adapter weights moved.
    for name, parameter in trained.model.named_parameters():
        if ".adapter." in name:
            assert parameter.requires_grad
        else:
            original = name.replace(".feed_forward.", ".")
            assert not parameter.requires_grad and torch.equal(parameter, before[original]), name


def test_bitfit_trains_only_the_biases_of_a_model_that_has_them(tiny_mlm, easy):
    config = BitFitMethod(learning_rate=1e-2)
    _, setup, train_rows, _ = easy
    model, parameters = config.build(tiny_mlm, setup.prompts[0])
    H, inter, vocab = 32, 64, tiny_mlm.model.config.vocab_size
    # per layer: q, k, v, attention output (4H), attention LayerNorm (H), intermediate (I), output dense (H) and
    # its LayerNorm (H); plus the embeddings' LayerNorm, the MLM head's transform dense and LayerNorm (3H) and
    # the decoder bias over the vocabulary (shared with cls.predictions.bias, counted once).
    assert sum(p.numel() for p in parameters) == 2 * (7 * H + inter) + 3 * H + vocab
    before = snapshot(tiny_mlm.model)
    events, trained = train(tiny_mlm, easy, config, steps=30)
    assert np.mean([e.train_loss for e in events[-5:]]) < np.mean([e.train_loss for e in events[:5]])
    assert same_tensors(before, snapshot(tiny_mlm.model))
    changed = {n for n, p in trained.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith("bias") for n in changed), changed


def test_bitfit_on_a_model_without_biases_says_so_before_training(tiny_causal, easy):
    with pytest.raises(
        PeftlabError, match=r"^BitFit trains only bias terms, and tiny-llama has none; pick another method"
    ):
        method_config("bitfit").check(tiny_causal)
    with pytest.raises(PeftlabError, match=r"BitFit trains only bias terms"):
        train(tiny_causal, easy, method_config("bitfit"), steps=1)


def test_adapter_bottleneck_must_be_positive():
    with pytest.raises(PeftlabError, match=r"^adapter: bottleneck must be at least 1, not 0"):
        method_config("adapter", bottleneck=0)


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("prompt-tuning", {"num_virtual_tokens": 4, "init": "random"}),
        ("p-tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 8}),
        ("prefix-tuning", {"num_virtual_tokens": 4}),
        ("lora", {"r": 2}),
    ],
)
def test_a_text_scores_the_same_alone_and_in_a_left_padded_batch(tiny_causal, easy, name, overrides):
    """PEFT drops position ids for virtual tokens; without VirtualTokenForward a row's score depended on its padding."""
    _, setup, train_rows, _ = easy
    model, _ = method_config(name, **overrides).build(tiny_causal, setup.prompts[0])
    prompt = setup.prompts[0]
    short, long = (
        {"text": "fun", "label": 1},
        {"text": "the plot was boring and the ending was bad , too long", "label": 0},
    )
    with torch.no_grad():
        for (
            parameter
        ) in model.parameters():  # a prompt that matters; LoRA's A alone left B at 0 and the model as it was
            if parameter.requires_grad:
                torch.nn.init.normal_(parameter)
        alone = scores(tiny_causal, prompt, [short], model)
        padded = scores(tiny_causal, prompt, [short, long], model)[:1]  # `short` is left-padded next to `long`
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["p-tuning", "prefix-tuning"])
def test_a_reparameterised_prompt_is_computed_in_fp32_under_autocast(tiny_causal, easy, name):
    """PEFT saves a reparameterised prompt as its encoder's output; computed in bf16 under autocast, the session's
    predictions drifted from the saved adapter's. (The CPU's autocast here; a GPU's needs a GPU to test.)"""
    overrides = {"prefix_projection": True} if name == "prefix-tuning" else {}
    model, _ = method_config(name, num_virtual_tokens=4, **overrides).build(tiny_causal, easy[1].prompts[0])
    encoder = model.peft_model.prompt_encoder["default"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder(torch.arange(4).unsqueeze(0)).dtype == torch.float32


def test_a_projected_prefix_says_it_starts_at_random():
    """With prefix_projection the init was skipped while the stored settings still said "init": "text" (its width:
    `test_tuning.test_trainable_parameter_counts_match_hand_computed_formulas`)."""
    assert PrefixTuningMethod(prefix_projection=True).to_dict()["init"] == "random"
    assert PrefixTuningMethod().init == "text"


def test_a_prefix_from_real_words_equals_writing_those_words_before_the_text(tiny_causal, easy):
    _, setup, train_rows, _ = easy
    init_ids = tiny_causal.tokenizer("the movie was great", add_special_tokens=False).input_ids
    config = PrefixTuningMethod(num_virtual_tokens=len(init_ids), init_text="the movie was great")
    model, _ = config.build(tiny_causal, setup.prompts[0])
    (query,) = setup.prompts[0].queries(tiny_causal, {"text": "i loved it", "label": 1})
    ids = torch.tensor([query.input_ids])
    with torch.no_grad():
        prefixed = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(ids.shape[1])[None],
            logits_to_keep=1,
        ).logits
        written = tiny_causal.model(input_ids=torch.tensor([init_ids + query.input_ids])).logits[:, -1:]
    torch.testing.assert_close(prefixed, written, atol=1e-5, rtol=1e-5)
    random_start, _ = PrefixTuningMethod(num_virtual_tokens=len(init_ids), init="random").build(
        tiny_causal, setup.prompts[0]
    )
    with torch.no_grad():
        other = random_start(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=torch.arange(ids.shape[1])[None],
            logits_to_keep=1,
        ).logits
    assert not torch.allclose(other, written, atol=1e-3)


def test_a_classifier_reads_the_bare_fields_or_the_pattern_around_them_cut_to_fit(tiny_causal):
    prompt = Prompt(
        Template.parse("Review: {text}\nSentiment:{mask}", ["text"]),
        Verbalizer.parse(VERBALIZER, ["negative", "positive"]),
    )
    example = {"text": "good film", "label": 1}
    assert SequenceClassifierMethod().input_text(tiny_causal, prompt, example) == "good film"
    assert SequenceClassifierMethod(pattern=True).input_text(tiny_causal, prompt, example) == (
        "Review: good film\nSentiment:"
    )
    # a text too long for max_tokens loses its start (the end is nearest the mask), never the pattern's words
    long = {"text": " ".join(["good film"] * 200), "label": 1}
    read = SequenceClassifierMethod(pattern=True, max_tokens=40).input_text(tiny_causal, prompt, long)
    assert read.startswith("Review: ") and read.endswith("good film\nSentiment:")
    assert len(tiny_causal.tokenizer(read).input_ids) <= 40


def test_the_methods_that_read_test_texts_cut_to_fit_are_named_with_how_many(tiny_causal):
    """A 60-token text fits the tiny model's 256-token input, but not 40 tokens of a classifier, nor the input a
    prompt with 200 virtual tokens leaves; a 1,000-token text fits nothing."""
    prompt = Prompt(
        Template.parse("Review: {text}\nSentiment:{mask}", ["text"]),
        Verbalizer.parse(VERBALIZER, ["negative", "positive"]),
    )
    texts = [{"text": "good film", "label": 1}, {"text": "good film " * 30, "label": 1}]
    texts.append({"text": "good film " * 500, "label": 0})
    configs = [
        method_config("lora"),
        method_config("prompt-tuning", num_virtual_tokens=200),
        SequenceClassifierMethod(max_tokens=40),
    ]
    assert cut_note(tiny_causal, prompt, configs, texts) == (
        f"Some of the 3 test texts do not fit the input {tiny_causal.name} reads with a method and were scored cut "
        "to fit: 1 for lora, 2 for prompt-tuning, 2 for classifier."
    )
    assert cut_note(tiny_causal, prompt, configs, texts[:1]) is None
    assert cut_note(tiny_causal, prompt, configs, texts[1:2]) == (  # one typed text ("Use a trained method")
        f"The text does not fit the input {tiny_causal.name} reads with prompt-tuning, classifier: it was scored cut "
        "to fit."
    )


@pytest.mark.parametrize(
    "name, setting, what",
    [("lora", "r", "LoRA rank"), ("adapter", "bottleneck", "adapter's bottleneck"), ("classifier", "r", "LoRA rank")],
)
def test_a_width_above_the_hidden_size_is_one_sentence_before_any_weight_is_made(tiny_causal, name, setting, what):
    """r=100000000 typed in the app once filled the memory of the process (12.8 GB asked for on a 32-wide model)."""
    setup = ClozeSetup.build(easy_task(), TEMPLATE, VERBALIZER)
    with pytest.raises(PeftlabError) as error:
        method_config(name, **{setting: 100_000_000}).build(tiny_causal, setup.prompts[0])
    assert str(error.value) == f"The {what} is 100000000, above the model's hidden size of 32; use at most 32."
    method_config(name, **{setting: 32}).build(tiny_causal, setup.prompts[0])  # the widest allowed


@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_a_p_tuning_encoder_larger_than_the_model_is_one_sentence_with_the_largest_that_fits(tiny_causal, encoder):
    """Its MLP grows with the square of the hidden size: 100000000 would ask for 10^16 weights."""
    setup = ClozeSetup.build(easy_task(), TEMPLATE, VERBALIZER)
    model_weights = sum(p.numel() for p in tiny_causal.model.parameters())
    method = method_config("p-tuning", encoder=encoder, encoder_hidden_size=100_000_000)
    with pytest.raises(PeftlabError) as error:
        method.build(tiny_causal, setup.prompts[0])
    largest = int(re.fullmatch(r".*; use a hidden size of at most (\d+)\.", str(error.value)).group(1))
    assert str(error.value).startswith(
        f"A P-tuning encoder with hidden size 100000000 would have {method.encoder_weights(tiny_causal, 10**8):,} "
        f"weights, more than the model's own {model_weights:,}; "
    )
    widest = method_config("p-tuning", encoder=encoder, encoder_hidden_size=largest)
    _, parameters = widest.build(tiny_causal, setup.prompts[0])
    trained = sum(p.numel() for p in parameters)  # counted on the meta device as PEFT builds it:
    assert trained == widest.encoder_weights(tiny_causal, largest) <= model_weights
    assert widest.encoder_weights(tiny_causal, largest + 1) > model_weights


def test_rlhf_lora_ranks_are_held_to_the_hidden_size_too(tiny_causal):
    from peftlab.rlhf.sft import lora_config

    assert lora_config(32, tiny_causal.model).r == 32
    with pytest.raises(
        PeftlabError, match=r"^The LoRA rank is 33, above the model's hidden size of 32; use at most 32"
    ):
        lora_config(33, tiny_causal.model)


def test_a_setting_a_method_does_not_have_is_one_sentence():
    """method_config("lora", rank=0) was "TypeError: LoraMethod.__init__() got an unexpected keyword argument"."""
    with pytest.raises(PeftlabError) as raised:
        method_config("lora", rank=0)
    assert str(raised.value) == "lora has no setting 'rank'; its settings are alpha, learning_rate, r, target_modules."
