"""Tests for peftlab.tuning on the tiny Llama (and the tiny BERT where a method supports it).

Trainable-parameter counts against hand-derived formulas, isolation of the cached LM, loss going down,
determinism, best-dev restore / early stopping / the stop flag, and one clear PeftlabError per bad input.
"""

from __future__ import annotations

import math
import mmap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from peftlab.cloze import ClozeSetup
from peftlab.errors import PeftlabError
from peftlab.methods import (
    METHODS,
    PROMPT_INITS,
    PrefixTuningMethod,
    PromptTuningMethod,
    PTuningMethod,
    method_config,
    parse_learning_rates,
)
from peftlab.seeding import seeded
from peftlab.tasks import Task
from peftlab.tuning import (
    SELECTION_SCORES,
    TrainedMethod,
    TrainEvent,
    TrainSettings,
    loss_note,
    loss_trend,
    peak_memory_mb,
    reset_peak_memory,
    train_method,
)

LABELS = ["negative", "positive"]
TEMPLATE = "Review: {text} Sentiment:{mask}"
VERBALIZER = {"negative": ["negative"], "positive": ["positive"]}  # " negative" / " positive": one token each
PEFT_METHODS = ["prompt-tuning", "p-tuning", "prefix-tuning", "lora"]

SUBJECTS = ["the movie", "the film", "the plot", "the acting", "the story", "the cast", "the ending", "the script"]
POSITIVE, NEGATIVE = ["great", "good", "fun"], ["bad", "awful", "boring"]


def easy_task() -> Task:
    """24 training rows per class ("the plot was fun" / "the plot was awful") from words the tiny tokenizers know."""
    train = [
        {"text": f"{s} was {w}", "label": y}
        for y, words in ((1, POSITIVE), (0, NEGATIVE))
        for s in SUBJECTS
        for w in words
    ]
    test = [{"text": f"i {verb} {s}", "label": y} for y, verb in ((1, "loved"), (0, "hated")) for s in SUBJECTS[:4]]
    return Task("easy-sentiment", LABELS, ["text"], train, test)


@pytest.fixture(scope="module")
def easy():
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(8, seed=13)
    return task, setup, train, dev


def run(lm, easy, config, stop=None, **settings):
    """Train to the end: (events, trained). Checks the generator's contract on the way."""
    _, setup, train, dev = easy
    settings = {"steps": 4, "batch_size": 8, "eval_every": 2, "patience": 10, "seed": 13, **settings}
    items = list(train_method(lm, setup, config, train, dev, TrainSettings(**settings), stop))
    *events, trained = items
    assert isinstance(trained, TrainedMethod)
    assert all(isinstance(e, TrainEvent) for e in events)
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert trained.history == events and trained.steps_done == len(events)
    return events, trained


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def capture_build(config):
    """Wrap config.build so the test sees the model and trainable parameters the trainer gets (and their start)."""
    seen = {}
    original = config.build

    def build(lm, prompt):
        model, parameters = original(lm, prompt)
        seen.update(
            model=model,
            parameters=parameters,
            initial=[p.detach().clone() for p in parameters],
            initial_named={n: p.detach().clone() for n, p in model.named_parameters()},
        )
        return model, parameters

    config.build = build  # an instance attribute shadows the method
    return seen


# ------------------------------------------------------------------ 1. parameter counts


def _dims(lm):
    """Config numbers, checked against the real projection shapes the formulas rely on."""
    config = lm.model.config
    H, layers = config.hidden_size, config.num_hidden_layers
    head_dim = H // config.num_attention_heads
    kv_dim = config.num_key_value_heads * head_dim
    V, intermediate = config.vocab_size, config.intermediate_size
    attention = lm.model.model.layers[0].self_attn
    assert (attention.q_proj.in_features, attention.q_proj.out_features) == (H, H)
    assert (attention.v_proj.in_features, attention.v_proj.out_features) == (H, kv_dim)
    assert (attention.o_proj.in_features, attention.o_proj.out_features) == (H, H)
    assert (H, layers, head_dim, kv_dim) == (32, 2, 16, 16)  # the tiny Llama: 2 heads sharing 1 KV head
    return H, layers, kv_dim, V, intermediate


def _lstm_params(input_size: int, hidden: int, num_layers: int = 2) -> int:
    """Bidirectional nn.LSTM: per layer and direction 4h x in + 4h x h weights and two 4h biases."""
    total = 0
    for layer in range(num_layers):
        width = input_size if layer == 0 else 2 * hidden
        total += 2 * (4 * hidden * width + 4 * hidden * hidden + 2 * 4 * hidden)
    return total


def _expected_counts(lm) -> list[tuple[str, dict, int]]:
    H, layers, kv, V, inter = _dims(lm)
    L = len(LABELS)

    def lora(r, shapes):  # shapes: (in, out) of each targeted projection; A is r x in, B is out x r
        return layers * sum(r * (i + o) for i, o in shapes)

    def p_mlp(n, h):  # PEFT PromptEncoder MLP: Linear(H,h) ReLU Linear(h,h) ReLU Linear(h,H), plus the n x H embedding
        return n * H + (H * h + h) + (h * h + h) + (h * H + H)

    # PEFT (utils/other.py, GQA #1901) sets prefix token_dim = num_key_value_heads * head_dim, not H; with a
    # projection the MLP hidden size defaults to that token_dim too.
    def prefix_projected(n, hidden=512):  # Li & Liang's MLP width (PEFT's default, the key/value width, was used)
        return n * kv + (kv * hidden + hidden) + (hidden * layers * 2 * kv + layers * 2 * kv)

    def adapter(b):  # per block: down H->b (weights + bias) and up b->H (weights + bias)
        return layers * ((H * b + b) + (b * H + H))

    per_layer = H * H + 2 * (kv * H) + H * H + 3 * (H * inter) + 2 * H  # q, k+v, o, gate/up/down, two RMSNorms
    full = V * H + layers * per_layer + H + V * H  # embeddings, layers, final norm, untied lm_head
    return [
        ("prompt-tuning", {}, 20 * H),
        ("prompt-tuning", {"num_virtual_tokens": 7, "init": "random"}, 7 * H),
        ("lora", {}, layers * (8 * (H + H) + 8 * (H + kv))),
        ("lora", {"r": 2}, layers * (2 * (H + H) + 2 * (H + kv))),
        (
            "lora",
            {"r": 3, "target_modules": ("q_proj", "k_proj", "v_proj", "o_proj")},
            lora(3, [(H, H), (H, kv), (H, kv), (H, H)]),
        ),
        ("head", {}, H * L + L),
        ("adapter", {}, adapter(16)),
        ("adapter", {"bottleneck": 3}, adapter(3)),
        ("full", {}, full),
        # A sequence classifier: LoRA on q and v plus its new head (H x L, no bias), or every weight but the LM head.
        ("classifier", {}, layers * (8 * (H + H) + 8 * (H + kv)) + H * L),
        ("classifier", {"lora": False}, full - V * H + H * L),
        ("prefix-tuning", {}, 10 * layers * 2 * kv),
        ("prefix-tuning", {"num_virtual_tokens": 3}, 3 * layers * 2 * kv),
        ("prefix-tuning", {"num_virtual_tokens": 4, "prefix_projection": True}, prefix_projected(4)),
        ("p-tuning", {}, p_mlp(20, 128)),
        ("p-tuning", {"num_virtual_tokens": 5, "encoder_hidden_size": 16}, p_mlp(5, 16)),
        (
            "p-tuning",
            {"num_virtual_tokens": 5, "encoder": "LSTM", "encoder_hidden_size": 8},
            5 * H + _lstm_params(H, 8) + (2 * 8 * 2 * 8 + 2 * 8) + (2 * 8 * H + H),
        ),
    ]


def test_trainable_parameter_counts_match_hand_computed_formulas(tiny_causal, easy):
    _, setup, train, _ = easy
    cases = _expected_counts(tiny_causal)
    assert {name for name, _, _ in cases} | {"bitfit"} == set(
        METHODS
    )  # BitFit: the tiny Llama has no biases (test_methods)
    assert cases[8][2] == sum(p.numel() for p in tiny_causal.model.parameters())  # the full formula is right
    for name, overrides, expected in cases:
        config = method_config(name, **overrides)
        model, parameters = config.build(tiny_causal, setup.prompts[0])
        counted = sum(p.numel() for p in parameters)
        assert counted == expected, (name, overrides, counted, expected)
        # What the optimiser gets is exactly what requires grad: nothing trainable is left out or frozen in.
        assert counted == sum(p.numel() for p in model.parameters() if p.requires_grad), (name, overrides)
        assert len({id(p) for p in parameters}) == len(parameters)


def test_trained_method_reports_its_trainable_count(tiny_causal, easy):
    H, layers, kv, _, _ = _dims(tiny_causal)
    _, trained = run(tiny_causal, easy, method_config("lora", r=4), steps=1)
    assert trained.trainable_params == layers * (4 * (H + H) + 4 * (H + kv))


# ------------------------------------------------------------------ 2. only the adapter changes


@pytest.mark.parametrize("name", ["prompt-tuning", "p-tuning", "prefix-tuning", "lora", "head"])
def test_only_the_adapter_parameters_change(tiny_causal, easy, name):
    before = snapshot(tiny_causal.model)
    grads_before = {n: p.requires_grad for n, p in tiny_causal.model.named_parameters()}
    config = method_config(name, learning_rate=3e-2)
    seen = capture_build(config)
    _, trained = run(tiny_causal, easy, config, steps=3, eval_every=1)

    assert same_tensors(before, snapshot(tiny_causal.model)), "the cached LM's weights changed"
    assert grads_before == {n: p.requires_grad for n, p in tiny_causal.model.named_parameters()}
    assert trained.model is seen["model"] and trained.model is not tiny_causal.model
    # Inside the trained model, the parameters that moved are trainable ones, and some did move.
    trainable = {n for n, p in trained.model.named_parameters() if p.requires_grad}
    changed = {n for n, p in trained.model.named_parameters() if not torch.equal(p, seen["initial_named"][n])}
    assert changed and changed <= trainable, (changed, trainable)
    assert any(not torch.equal(p, p0) for p, p0 in zip(seen["parameters"], seen["initial"]))
    if name != "head":  # the PEFT copy's frozen base weights are still the cached LM's, every one of them
        base = {_base_name(n, before): p for n, p in trained.model.named_parameters() if not p.requires_grad}
        assert base.keys() == before.keys()
        assert all(torch.equal(p, before[n]) for n, p in base.items())


def _base_name(peft_name: str, names) -> str:
    """'base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight' -> 'model.layers.0.self_attn.q_proj.weight'."""  # noqa: E501
    parts = peft_name.replace(".base_layer.", ".").split(".")
    return next((".".join(parts[i:]) for i in range(len(parts)) if ".".join(parts[i:]) in names), peft_name)


def test_full_fine_tuning_trains_a_copy(tiny_causal, easy):
    before = snapshot(tiny_causal.model)
    config = method_config("full", learning_rate=1e-3)
    _, trained = run(tiny_causal, easy, config, steps=3, eval_every=1)
    assert same_tensors(before, snapshot(tiny_causal.model)), "full fine-tuning changed the cached LM"
    assert trained.model is not tiny_causal.model
    after = snapshot(trained.model)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)
    assert trained.trainable_params == sum(t.numel() for t in before.values())


# ------------------------------------------------------------------ 3. the loss goes down


@pytest.mark.parametrize(
    ("name", "learning_rate"),
    [
        ("prompt-tuning", 3e-2),  # the shipped default
        ("lora", 1e-2),  # 10x the default (1e-3, tuned for the 135M model)
        ("head", 1e-2),  # the shipped default
        ("full", 1e-3),  # 100x LM-BFF's 1e-5, which barely moves a random 2-layer model in 30 steps
    ],
)
def test_short_run_lowers_the_training_loss(tiny_causal, easy, name, learning_rate):
    events, trained = run(tiny_causal, easy, method_config(name, learning_rate=learning_rate), steps=30, eval_every=10)
    losses = [e.train_loss for e in events]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.95 * first, (first, last)
    assert trained.loss_warning() is None
    assert [e.learning_rate for e in events[:2]] == pytest.approx([learning_rate, learning_rate * (1 - 1 / 30)])


def test_a_tiny_learning_rate_is_reported_as_flat(tiny_causal, easy):
    # every step on all 16 examples: the loss moves only with the weights, not with the batch drawn
    _, trained = run(tiny_causal, easy, method_config("prompt-tuning", learning_rate=1e-7), steps=8, batch_size=16)
    assert trained.loss_warning() == (
        "The training loss of prompt-tuning stayed flat over 8 steps: try a larger learning rate than 1e-07 or more "
        "steps."
    )


@pytest.mark.parametrize(
    ("losses", "trend"),
    [
        ([2.0, 2.0, 1.0, 1.0], None),  # fell by half
        ([2.0, 2.0, 2.0, 1.95], "flat"),  # first quarter 2.0, last 1.95: down 2.5 %, less than 5 %
        ([2.0, 2.0, 2.0, 2.2], "rose"),  # up 10 %
        ([4.1, 29.7], "rose"),  # SFT at a learning rate of 5: above 1.5 x in 2 steps
        ([4.1, 5.0], None),  # 2 steps: too few to call flat, and not 1.5 x
    ],
)
def test_a_loss_that_rose_is_told_apart_from_a_flat_one(losses, trend):
    """A loss that rose (a learning rate too large) was reported as flat, with the advice of a larger one."""
    assert loss_trend(losses) == trend
    note = loss_note("SFT", losses, 5.0)
    if trend == "rose":
        assert note == f"The training loss of SFT rose over {len(losses)} steps: try a smaller learning rate than 5."
    assert (note is None) == (trend is None)


# ------------------------------------------------------------------ 4. determinism


@pytest.mark.parametrize("name", ["prompt-tuning", "p-tuning", "lora"])
def test_same_seed_same_run_other_seed_other_batches(tiny_causal, easy, name):
    task = easy[0]

    def once(seed):
        events, trained = run(tiny_causal, easy, method_config(name), steps=6, eval_every=3, seed=seed)
        return [e.train_loss for e in events], [e.dev_accuracy for e in events], trained.log_probs(task.test)

    losses_a, dev_a, log_probs_a = once(13)
    losses_b, dev_b, log_probs_b = once(13)
    assert losses_a == losses_b
    assert np.array_equal(dev_a, dev_b, equal_nan=True)
    assert torch.equal(log_probs_a, log_probs_b)
    assert torch.equal(log_probs_a.argmax(1), log_probs_b.argmax(1))
    losses_c, _, _ = once(21)
    assert losses_c != losses_a
    assert losses_c[0] != losses_a[0]  # already the first batch differs


@pytest.mark.parametrize("init", ["random", "vocab"])
def test_a_drawn_soft_prompt_start_follows_the_runs_seed(tiny_causal, easy, init):
    """Prompt tuning drew its random and sampled-vocabulary starts from a generator seeded 0: every seed began from
    the same prompt, and the std over seeds left that out. The same seed still starts alike."""
    config = method_config("prompt-tuning", init=init)

    def start(seed):
        with seeded(seed):
            _, (embedding,) = config.build(tiny_causal, config.prompt_for(easy[1].prompts[0]))
        return embedding.detach().clone()

    assert torch.equal(start(13), start(13)) and not torch.equal(start(13), start(21))


def test_a_label_words_start_is_each_labels_scored_tokens_then_sampled_vocabulary(tiny_causal, easy):
    """Lester et al.'s class-label initialisation: it joined the words as one text, so the first label's word was
    another token than the one the verbalizer scores (no leading space), and the words repeated to fill."""
    config = method_config("prompt-tuning", init="label-words", num_virtual_tokens=5)
    prompt = config.prompt_for(easy[1].prompts[0])
    with seeded(13):
        _, (embedding,) = config.build(tiny_causal, prompt)
    vocabulary = tiny_causal.model.get_input_embeddings().weight
    scored = sorted(t for q in prompt.queries(tiny_causal, easy[0].test[0]) for t in q.targets)  # [(word, ids)]
    for label, words in enumerate(prompt.verbalizer.words.values()):
        ids = [ids for word, ids in scored if prompt.verbalizer.flat_words[word][0] == label]
        assert len(ids) == len(words)
        expected = torch.stack([vocabulary[i].mean(0) for i in ids]).mean(0)
        torch.testing.assert_close(embedding[label].detach(), expected.detach().float())
    assert not any(torch.equal(embedding[2], embedding[i]) for i in (0, 1))  # sampled, not a label repeated


# ------------------------------------------------------------------ 5. best-dev restore, early stopping, stop flag


def test_early_stopping_restores_the_best_evaluation(tiny_causal, easy):
    """lr 1e-6 moves the prompt (visibly in fp32) but not the predictions: dev accuracy ties at step 2 and stops."""
    config = method_config("prompt-tuning", learning_rate=1e-6)
    seen = capture_build(config)
    _, setup, train, dev = easy
    states, events = [], []
    for item in train_method(
        tiny_causal,
        setup,
        config,
        train,
        dev,
        TrainSettings(steps=20, batch_size=4, eval_every=1, patience=1, seed=13, select_by="accuracy"),
    ):
        if isinstance(item, TrainEvent):
            events.append(item)
            states.append([p.detach().clone() for p in seen["parameters"]])
        else:
            trained = item
    assert trained.steps_done == 2 < 20
    assert len(events) == 2 and events[0].dev_accuracy == events[1].dev_accuracy
    assert not any(torch.equal(a, b) for a, b in zip(states[0], states[1]))  # step 2 did move the prompt
    assert all(torch.equal(p, s) for p, s in zip(seen["parameters"], states[0]))  # ... and step 1's came back


@pytest.mark.parametrize(
    ("select_by", "score", "learning_rate"),  # rates at which the best of 12 evaluations is not the last
    [("accuracy", "dev_accuracy", 1e-2), ("log-likelihood", "dev_log_likelihood", 1e-1)],
)
def test_final_weights_are_those_of_the_best_dev_evaluation(tiny_causal, easy, select_by, score, learning_rate):
    config = method_config("p-tuning", learning_rate=learning_rate)
    seen = capture_build(config)
    _, setup, train, dev = easy
    states, scores = [], []
    for item in train_method(
        tiny_causal,
        setup,
        config,
        train,
        dev,
        TrainSettings(steps=12, batch_size=4, eval_every=1, patience=100, seed=13, select_by=select_by),
    ):
        if isinstance(item, TrainEvent):
            scores.append(getattr(item, score))
            states.append([p.detach().clone() for p in seen["parameters"]])
        else:
            trained = item
    best = int(np.argmax(scores))  # the first of equal bests: later ties do not replace it
    assert best < len(scores) - 1, scores  # so this run really restores older weights
    assert all(torch.equal(p, s) for p, s in zip(seen["parameters"], states[best]))
    assert trained.evaluate(dev)[SELECTION_SCORES[select_by]] == pytest.approx(scores[best])


def test_dev_log_likelihood_is_the_gold_labels_mean_log_probability(tiny_causal, easy):
    events, trained = run(tiny_causal, easy, method_config("lora"), steps=2, eval_every=2)
    _, _, _, dev = easy
    log_probs = trained.log_probs(dev)
    by_hand = sum(float(log_probs[i, e["label"]]) for i, e in enumerate(dev)) / len(dev)
    assert trained.evaluate(dev)["log_likelihood"] == pytest.approx(by_hand, abs=1e-6)
    assert by_hand < 0
    assert math.isnan(events[0].dev_log_likelihood) and not math.isnan(events[1].dev_log_likelihood)


def test_patience_counts_evaluations_not_steps(tiny_causal, easy):
    _, trained = run(
        tiny_causal,
        easy,
        method_config("prompt-tuning", learning_rate=1e-6),
        steps=20,
        eval_every=3,
        patience=2,
        select_by="accuracy",
    )
    assert trained.steps_done == 9  # evaluations at 3 (best), 6 and 9 (no gain twice)
    assert [math.isnan(e.dev_accuracy) for e in trained.history] == [i % 3 != 0 for i in range(1, 10)]


def test_the_last_step_is_always_evaluated(tiny_causal, easy):
    events, _ = run(tiny_causal, easy, method_config("head"), steps=5, eval_every=3)
    assert [not math.isnan(e.dev_accuracy) for e in events] == [False, False, True, False, True]


def test_stop_flag_ends_training_between_steps(tiny_causal, easy):
    _, setup, train, dev = easy
    stop = threading.Event()
    steps = []
    for item in train_method(
        tiny_causal, setup, method_config("lora"), train, dev, TrainSettings(steps=20, eval_every=100), stop
    ):
        if isinstance(item, TrainEvent):
            steps.append(item.step)
            if item.step == 3:
                stop.set()
        else:
            trained = item
    assert steps == [1, 2, 3] and trained.steps_done == 3
    already = threading.Event()
    already.set()
    events, trained = run(tiny_causal, easy, method_config("lora"), stop=already)
    assert events == [] and trained.steps_done == 0


# ------------------------------------------------------------------ 6. bad input


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("rate", [0, -1e-3, float("nan")])
def test_learning_rate_must_be_positive(name, rate):
    with pytest.raises(PeftlabError, match=rf"^The learning rate of {name} must be above 0, not "):
        method_config(name, learning_rate=rate)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: method_config("prompt-tuning", num_virtual_tokens=0),
            r"prompt-tuning: num virtual tokens must be at least 1, not 0",
        ),
        (
            lambda: method_config("p-tuning", num_virtual_tokens=0),
            r"p-tuning: num virtual tokens must be at least 1, not 0",
        ),
        (
            lambda: method_config("prefix-tuning", num_virtual_tokens=0),
            r"prefix-tuning: num virtual tokens must be at least 1, not 0",
        ),
        (lambda: method_config("p-tuning", encoder_hidden_size=0), r"encoder hidden size must be at least 1"),
        (lambda: method_config("lora", r=0), r"lora: r must be at least 1, not 0"),
        (lambda: method_config("lora", alpha=-2), r"lora: alpha must be at least 1, not -2"),
        (
            lambda: method_config("magic"),
            r"Unknown method 'magic'; choose from prompt-tuning, p-tuning, prefix-tuning, lora, adapter, bitfit, head, "
            r"full",
        ),
        (lambda: method_config("LoRA"), r"Unknown method 'LoRA'"),
        (
            lambda: PromptTuningMethod(init="words"),
            r"Prompt init must be one of text, label-words, vocab, random, not 'words'",
        ),
        (lambda: PTuningMethod(encoder="GRU"), r"The P-tuning encoder must be MLP or LSTM, not 'GRU'"),
        (lambda: PrefixTuningMethod(init="vocab"), r"Prefix init must be text or random, not 'vocab'"),
        (lambda: TrainSettings(steps=0), r"^Steps must be at least 1, not 0"),
        (lambda: TrainSettings(batch_size=0), r"^Batch size must be at least 1, not 0"),
        (lambda: TrainSettings(eval_every=0), r"^Eval every must be at least 1, not 0"),
        (lambda: TrainSettings(patience=-1), r"^Patience must be at least 1, not -1"),
        (lambda: TrainSettings(select_by="loss"), r"^Select by must be one of log-likelihood, accuracy, not 'loss'"),
        (lambda: parse_learning_rates(["lora=fast"]), r"method=number, not 'lora=fast'"),
        # a rate for no method was dropped without a word (the Soft prompts tab's rates box)
        (
            lambda: parse_learning_rates(["lora=1e-3", "foo=0.1"]),
            r"^A learning rate is given for 'foo', which is no method; the methods are prompt-tuning, ",
        ),
    ],
)
def test_bad_settings_raise_one_clear_error(make, message):
    with pytest.raises(PeftlabError, match=message):
        make()


def test_every_prompt_init_builds(tiny_causal, easy):
    _, setup, train, _ = easy
    vocabulary = tiny_causal.model.get_input_embeddings().weight
    starts = {}
    for init in PROMPT_INITS:
        config = PromptTuningMethod(init=init, num_virtual_tokens=5)
        _, (embedding,) = config.build(tiny_causal, setup.prompts[0])
        assert embedding.shape == (5, vocabulary.shape[1]) and torch.isfinite(embedding).all()
        starts[init] = embedding.detach().clone()
    text_ids = tiny_causal.tokenizer(PromptTuningMethod.init_text, add_special_tokens=False).input_ids
    assert torch.equal(starts["text"], vocabulary[text_ids[:5]].detach())
    assert not torch.equal(starts["text"], starts["random"])


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        (
            "lora",
            {"target_modules": ("k_projection",)},
            r"LoRA target module\(s\) k_projection do not exist in tiny-llama",
        ),
        (
            "lora",
            {"target_modules": ("q_proj", "proj")},
            r"LoRA target module\(s\) proj do not exist",
        ),  # substrings are not names
        (
            "prefix-tuning",
            {"num_virtual_tokens": 250},
            r"^250 virtual tokens of prefix-tuning leave no room in tiny-llama's 256-token input; use at most 240\.$",
        ),
        (
            "prompt-tuning",
            {"num_virtual_tokens": 241},
            r"^241 virtual tokens of prompt-tuning leave no room in tiny-llama's 256-token input; use at most 240\.$",
        ),
    ],
)
def test_bad_method_for_this_model_fails_before_training(tiny_causal, easy, name, overrides, message):
    before = snapshot(tiny_causal.model)
    with pytest.raises(PeftlabError, match=message):
        run(tiny_causal, easy, method_config(name, **overrides))
    assert same_tensors(before, snapshot(tiny_causal.model))


def test_lora_target_given_by_dotted_suffix_is_accepted(tiny_causal, easy):
    _, setup, train, _ = easy
    _, parameters = method_config("lora", r=2, target_modules=("self_attn.q_proj",)).build(
        tiny_causal, setup.prompts[0]
    )
    assert sum(p.numel() for p in parameters) == 2 * 2 * (32 + 32)


@pytest.mark.parametrize("name", PEFT_METHODS)
def test_peft_methods_on_a_masked_lm_say_so(tiny_mlm, name):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(4, seed=13)
    with pytest.raises(PeftlabError, match=r"is wired for causal LMs in this version; tiny-bert is a masked LM"):
        next(train_method(tiny_mlm, setup, method_config(name), train, dev, TrainSettings(steps=1)))


@pytest.mark.parametrize(("name", "learning_rate"), [("head", 1e-2), ("full", 1e-3)])
def test_head_and_full_train_on_a_masked_lm(tiny_mlm, name, learning_rate):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(8, seed=13)
    before = snapshot(tiny_mlm.model)
    events, trained = run(
        tiny_mlm, (task, setup, train, dev), method_config(name, learning_rate=learning_rate), steps=20, eval_every=10
    )
    assert np.mean([e.train_loss for e in events[-5:]]) < np.mean([e.train_loss for e in events[:5]])
    assert same_tensors(before, snapshot(tiny_mlm.model))
    assert trained.log_probs(task.test).shape == (len(task.test), 2)


def test_peak_memory_restarts_for_each_run():
    """A grid's later runs must not inherit an earlier run's peak (the resident high-water mark on Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("the resident high-water mark can only be reset on Linux")
    cpu = torch.device("cpu")
    # 300 MB of fresh pages, touched, then unmapped: a tensor could reuse memory the allocator keeps from earlier
    # tests, and then the peak would not rise at all
    block = mmap.mmap(-1, 300 * 2**20)
    for page in range(0, len(block), mmap.PAGESIZE):
        block[page] = 1
    block.close()
    before = peak_memory_mb(cpu)
    reset_peak_memory(cpu)
    assert peak_memory_mb(cpu) < before - 250


def test_lora_on_a_model_without_llama_s_module_names_says_the_architecture_s_own():
    """GPT-2, one of the model choices, has no q_proj or v_proj: LoRA's default targets failed there with no word of
    what to put instead."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from peftlab.models import LM
    from tests.conftest import _causal_tokenizer

    tokenizer = _causal_tokenizer()
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer)))
    with pytest.raises(PeftlabError) as refused:
        method_config("lora").check(LM(gpt2, tokenizer, "causal", "tiny-gpt2"))
    assert str(refused.value) == (
        "LoRA target module(s) q_proj, v_proj do not exist in tiny-gpt2; PEFT's LoRA targets for gpt2 are c_attn."
    )


def test_runs_whose_peak_memory_windows_overlap_report_it_as_not_measured(tiny_causal, monkeypatch):
    """Peak memory is the process's (CUDA's counter, Linux's VmHWM): a run that started while another trained reset
    the other's peak, and each counted the other's memory (a LoRA run read 1,273 MB beside another job, 874 MB
    alone). Overlapping runs say NaN; a run alone, before or after, its own peak."""
    import math

    from peftlab.compare import _row
    from peftlab.tuning import MemoryWindow

    monkeypatch.setattr(MemoryWindow, "_open", set())  # none left open by an earlier test's unfinished run
    cpu = torch.device("cpu")
    alone = MemoryWindow(cpu)
    assert alone.peak_mb() > 0
    alone.close()
    first = MemoryWindow(cpu)
    second = MemoryWindow(cpu)
    assert math.isnan(first.peak_mb()) and math.isnan(second.peak_mb())
    first.close()
    second.close()
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(2, seed=13)
    config, settings = method_config("lora", r=2), TrainSettings(steps=2, eval_every=2)
    *events, _ = train_method(tiny_causal, setup, config, train, dev, settings)
    assert all(event.peak_memory_mb > 0 for event in events)
    beside = MemoryWindow(cpu)  # another run training meanwhile
    try:
        *events, trained = train_method(tiny_causal, setup, config, train, dev, settings)
    finally:
        beside.close()
    assert all(math.isnan(event.peak_memory_mb) for event in events) and math.isnan(beside.peak_mb())
    assert _row("lora", 2, 13, {"accuracy": 0.5, "macro_f1": 0.5}, 1, 2, trained)["peak_memory_mb"] is None
