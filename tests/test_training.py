"""The one training loop: batches by seed, AdamW with linear decay, evaluation, best weights kept, patience, stop."""

from __future__ import annotations

import threading

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.training import TrainingLoop, check_finite, evaluation_count


def quadratic_loop(scores, **options):
    """A 1-parameter loop whose evaluations return `scores` in turn; records the weight at each evaluation."""
    weight = torch.nn.Parameter(torch.tensor([5.0]))
    seen = []

    def evaluate():
        seen.append(weight.detach().clone())
        return {"score": scores[len(seen) - 1]}

    loop = TrainingLoop(
        [weight],
        steps=options.pop("steps", 6),
        batch_size=2,
        learning_rate=0.1,
        seed=0,
        eval_every=options.pop("eval_every", 2),
        evaluate=evaluate,
        **options,
    )
    return weight, loop, seen


def batch_loss_of(weight):
    return lambda batch: ((weight - torch.tensor(batch, dtype=torch.float32).mean()) ** 2).sum()


def test_the_weights_of_the_best_evaluation_are_put_back():
    weight, loop, seen = quadratic_loop([0.1, 0.9, 0.5], select="score")
    records = list(loop.run([1.0, 2.0, 3.0], batch_loss_of(weight)))
    assert [r.step for r in records] == [1, 2, 3, 4, 5, 6] and [r.scores is not None for r in records] == [
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert torch.equal(weight.detach(), seen[1]) and loop.best_score == 0.9  # the step-4 weights, not the last ones
    assert records[0].learning_rate == pytest.approx(0.1) and records[3].learning_rate == pytest.approx(
        0.1 * (1 - 3 / 6)
    )


def test_patience_stops_after_evaluations_without_gain_and_ties_do_not_count():
    weight, loop, seen = quadratic_loop([0.5, 0.5, 0.4, 0.9], steps=20, select="score", patience=2)
    records = list(loop.run([1.0, 2.0], batch_loss_of(weight)))
    assert records[-1].step == 6 and loop.steps_done == 6 and not loop.stopped
    assert torch.equal(weight.detach(), seen[0])  # the tie at step 4 did not replace the step-2 best


def test_a_stop_scores_the_last_weights_before_judging_them():
    stop = threading.Event()
    weight, loop, seen = quadratic_loop([0.1, 0.8], steps=10, select="score")
    for record in loop.run([1.0, 2.0], batch_loss_of(weight), stop):
        if record.step == 3:
            stop.set()
    assert loop.stopped and loop.steps_done == 3 and len(seen) == 2  # evaluated at step 2, then once more at the stop
    assert torch.equal(weight.detach(), seen[1])


def test_same_seed_same_batches_and_gradients_are_clipped():
    def run(seed, max_grad_norm=None):
        weight = torch.nn.Parameter(torch.tensor([100.0]))
        batches = []

        def loss(batch):
            batches.append(tuple(batch))
            return ((weight - sum(batch)) ** 2).sum()

        loop = TrainingLoop([weight], steps=3, batch_size=2, learning_rate=1.0, seed=seed, max_grad_norm=max_grad_norm)
        list(loop.run(list(range(10)), loss))
        return batches, float(weight.grad.norm())  # the last step's gradient, as the optimiser used it

    assert run(1)[0] == run(1)[0] and run(1)[0] != run(2)[0]
    assert run(1)[1] > 100 and run(1, max_grad_norm=1.0)[1] == pytest.approx(1.0)


def test_with_passes_every_example_comes_once_per_pass():
    weight = torch.nn.Parameter(torch.tensor([0.0]))
    batches = []

    def loss(batch):
        batches.append(list(batch))
        return ((weight - sum(batch)) ** 2).sum()

    loop = TrainingLoop([weight], steps=5, batch_size=3, learning_rate=0.1, seed=4, passes=True)
    list(loop.run(list(range(5)), loss))
    seen = [example for batch in batches for example in batch]  # 15 = 3 passes over the 5 examples
    assert [sorted(seen[i : i + 5]) for i in (0, 5, 10)] == [list(range(5))] * 3
    assert seen[:5] != seen[5:10]  # each pass is shuffled afresh


def test_under_fp16_autocast_the_loop_scales_the_loss_and_trains_as_fp32_does(tiny_causal, monkeypatch):
    """A GPU without bf16 (the T4) trains under fp16 autocast, whose gradients need loss scaling; simulated on the
    CPU, whose autocast also has fp16."""
    import peftlab.models as models
    from peftlab.cloze import ClozeSetup
    from peftlab.methods import method_config
    from peftlab.tuning import TrainSettings, train_method
    from tests.test_tuning import TEMPLATE, VERBALIZER, easy_task

    task = easy_task()
    train, dev = task.few_shot(4, seed=13)

    def trained():
        config = method_config("lora", r=2, learning_rate=3e-2)
        setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
        *events, result = train_method(tiny_causal, setup, config, train, dev, TrainSettings(steps=10, eval_every=10))
        return [e.train_loss for e in events], result

    monkeypatch.setattr(models, "autocast_dtype", lambda p: None)
    fp32_losses, fp32 = trained()
    monkeypatch.setattr(models, "autocast_dtype", lambda p: torch.float16 if p.dtype == torch.float32 else None)
    scalers = []
    original = models.loss_scaler
    monkeypatch.setattr("peftlab.training.loss_scaler", lambda p: scalers.append(original(p)) or scalers[-1])
    fp16_losses, fp16 = trained()

    (scaler,) = scalers
    # The first scaled gradients overflowed fp16: that step was skipped (the weights unchanged, so the second step's
    # loss is the first's) and the scale halved from torch's 2^16; from then on it trains as fp32 does, a step behind
    # (its learning rate one decay step lower).
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**15
    assert fp16_losses[1] == pytest.approx(fp16_losses[0], abs=1e-4)
    assert fp16_losses[2:] == pytest.approx(fp32_losses[1:-1], abs=0.06)
    assert all(torch.isfinite(p).all() for p in fp16.model.parameters())


def test_a_nan_loss_stops_training_with_one_sentence_before_any_weight_turns_nan():
    # on an H200 a reward model's loss turned NaN at its third step and training went on: 0 % held-out accuracy,
    # then PPO died on a CUDA device-side assert
    weight, loop, _ = quadratic_loop([0.5, 0.5, 0.5])
    losses = iter([torch.tensor(1.0, requires_grad=True), torch.tensor(float("nan"), requires_grad=True)])

    def batch_loss(batch):
        return next(losses) * weight.sum()

    steps = []
    with pytest.raises(PeftlabError) as raised:
        for record in loop.run([1.0, 2.0], batch_loss):
            steps.append(record.step)
            kept = weight.detach().clone()
    assert steps == [1]
    assert str(raised.value) == (
        "The training loss became NaN at step 2 of 6, where training stopped: the steps after it would only spread NaN "
        "through the weights. Lower the learning rate (0.1 now) and run again."
    )
    assert torch.equal(weight.detach(), kept) and torch.isfinite(weight).all()


def test_an_infinite_loss_is_named_so():
    with pytest.raises(
        PeftlabError, match="^The training loss became infinite at a PPO update, .*rate \\(0.001 now\\)"
    ):
        check_finite(torch.tensor([0.5, float("inf")]), "a PPO update", 1e-3)
    check_finite(torch.tensor(0.25), "step 1 of 1", 1e-3)  # a finite loss passes


def test_a_loss_already_nan_at_the_first_step_blames_the_starting_model_not_the_learning_rate():
    # a reward model on an SFT model trained at learning rate 1000 was told to lower its own learning rate, which the
    # app does not even show
    weight, loop, _ = quadratic_loop([0.5])
    with pytest.raises(PeftlabError) as raised:
        list(loop.run([1.0, 2.0], lambda batch: torch.tensor(float("nan")) * weight.sum()))
    assert str(raised.value) == (
        "The training loss is NaN at step 1 of 6, before any update: the model it starts from already gives NaN "
        "values (did its own training diverge?). Train that model again with a smaller learning rate."
    )


@pytest.mark.parametrize(("steps", "eval_every"), [(30, 10), (31, 10), (6, 4), (1, 5), (2, 1)])
def test_evaluation_count_is_the_evaluations_a_loop_makes(steps, eval_every):
    """The estimates price a run's dev evaluations by `evaluation_count`: it said 4 for 30 steps evaluated every 10."""
    weight, loop, seen = quadratic_loop([0.0] * steps, steps=steps, eval_every=eval_every)
    for _ in loop.run([1.0, 2.0], batch_loss_of(weight)):
        pass
    assert evaluation_count(steps, eval_every) == len(seen)


def test_bf16_is_asked_of_the_gpu_a_model_is_on_not_the_current_one(monkeypatch):
    """`torch.cuda.is_bf16_supported()` reads the current device, and counts emulation: a model on cuda:1 (a T4 beside
    an A100 on cuda:0) was run in bf16, which the T4 lacks. Two simulated GPUs: cuda:0 has bf16, cuda:1 emulates it."""
    import contextlib

    from peftlab import models

    current = ["cuda:0"]

    @contextlib.contextmanager
    def on(device):
        before, current[0] = current[0], str(device)
        yield
        current[0] = before

    def native_bf16(including_emulation=True):  # a T4 emulates it: True unless emulation is left out
        return current[0] == "cuda:0" or including_emulation

    monkeypatch.setattr(torch.cuda, "device", on)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", native_bf16)
    assert models.fast_inference_dtype(torch.device("cuda:1")) == torch.float16
    assert models.fast_inference_dtype(torch.device("cuda:0")) == torch.bfloat16
    assert models.gpu_supports_bf16("cuda:1") is False and current == ["cuda:0"]
    # `--dtype auto --device cuda:1`: the model loads in the dtype cuda:1 runs (it asked the default device)
    assert models._cache_key("m", "auto", "cuda:1") == ("m", torch.float16, "cuda:1")


def test_without_cuda_no_gpu_runs_bf16():
    """Asked of "cuda" where torch has no CUDA it raised "invalid argument to exchangeDevice"."""
    from peftlab import models

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert models.gpu_supports_bf16("cuda") is False


def test_weights_in_half_precision_are_refused_before_a_step(capsys, tiny_causal_folder):
    """`compare --dtype fp16 --methods full` trained fp16 weights as they were: AdamW's epsilon is 0 in fp16, and the
    loss turned NaN at step 2, said as "Lower the learning rate (1e-09 now)". Trainers train fp32 weights (under
    autocast); PEFT's adapters over a half-precision model are fp32 and pass."""
    from peftlab.cli import main

    said = (
        "The weights to train are in {}, which loses the optimiser's small updates; load the model in fp32 (--dtype "
        "fp32, the training commands' default) and training computes in half precision where the hardware has it."
    )
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(PeftlabError) as refused:
            TrainingLoop(
                [torch.nn.Parameter(torch.zeros(2, dtype=dtype))], steps=1, batch_size=1, learning_rate=1, seed=0
            )
        assert str(refused.value) == said.format(str(dtype).removeprefix("torch."))
    TrainingLoop([torch.nn.Parameter(torch.zeros(2))], steps=1, batch_size=1, learning_rate=1.0, seed=0)
    argv = ["compare", "--model", tiny_causal_folder, "--dtype", "fp16", "--methods", "full", "--shots", "2"]
    code = main([*argv, "--seeds", "13", "--steps", "2", "--test-limit", "4", "--no-store"])
    refusal = "error: Full fine-tuning would train in float16: that" + said.split(", which", 1)[1]  # before training
    assert (code, capsys.readouterr().err.splitlines()[-1]) == (2, refusal)


@pytest.mark.parametrize(
    ("name", "what"),
    [("full", "Full fine-tuning"), ("classifier", "The classifier's head"), ("bitfit", "BitFit's biases")],
)
def test_methods_that_train_the_model_s_own_weights_refuse_a_half_precision_model_before_training(
    tiny_causal, name, what
):
    """The classifier's head trains in the model's dtype, LoRA or not: `pet --dtype bf16` was refused only after every
    pattern model had trained; such methods say so in their check, before anything trains. LoRA passes."""
    import copy

    from peftlab.methods import method_config
    from peftlab.models import LM

    model = copy.deepcopy(tiny_causal.model)
    for layer in model.modules():  # the tiny Llama has no biases; BitFit's check looks for one
        if isinstance(layer, torch.nn.Linear) and layer.bias is None:
            layer.bias = torch.nn.Parameter(torch.zeros(layer.out_features))
            break
    half = LM(model.to(torch.bfloat16), tiny_causal.tokenizer, "causal", "tiny-llama")
    with pytest.raises(PeftlabError) as refused:
        method_config(name).check(half)
    assert str(refused.value) == (
        f"{what} would train in bfloat16: that loses the optimiser's small updates; load the model in fp32 (--dtype "
        "fp32, the training commands' default) and training computes in half precision where the hardware has it."
    )
    method_config("lora", r=2).check(half)
