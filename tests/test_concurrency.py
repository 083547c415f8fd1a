"""Jobs sharing one cached model from several threads get exactly the numbers they get alone.

A Space serves many visitors from one process and one cached `LM`. Each job below touches the shared
model the way one tab does: AutoPrompt's gradient pass (trigger embeddings) and candidate re-scoring,
the Cloze tab's evaluation with mean calibration, the head-only baseline's and label-word search's
read of the LM head's input, and the RLHF stages' response log-probs with hidden states. Run together
from threads, each must give bit-identical (fp32) results to a run alone, and leave the model as it was.
"""

from __future__ import annotations

import threading

import pytest
import torch

from peftlab.autoprompt import mask_representations, rescore_candidates, trigger_gradient
from peftlab.cloze import evaluate
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.rlhf.generation import encode_pairs, response_forward
from peftlab.seeding import seeded

TEMPLATE = "Review: {text}\nSentiment:{mask}"
TRIGGER_TEMPLATE = "{text} [T] [T] {mask}"
VERBALIZER = {"negative": ["bad", "terrible"], "positive": ["great", "fantastic"]}
ROUNDS = 15


def jobs(lm, task) -> dict:
    """name -> a function returning a tuple of tensors, each job as one tab runs it."""
    verbalizer = Verbalizer.parse(VERBALIZER, task.label_names)
    trigger_word = lm.tokenizer(" the" if lm.kind == "causal" else "the", add_special_tokens=False).input_ids[0]
    trigger_prompt = Prompt(Template.parse(TRIGGER_TEMPLATE, ["text"]), verbalizer, trigger_ids=(trigger_word,) * 2)
    plain_prompt = Prompt(Template.parse(TEMPLATE, ["text"]), verbalizer)
    examples = task.train[:6]

    def autoprompt_step():
        gradient = trigger_gradient(lm, trigger_prompt, examples)
        candidates = list(range(5, 10))
        return gradient, rescore_candidates(lm, trigger_prompt, 0, candidates, examples[:4])

    def cloze_evaluation():
        result = evaluate(lm, task, TEMPLATE, VERBALIZER, calibration="mean")
        return (torch.tensor(result.predictions[[f"p({name})" for name in task.label_names]].to_numpy()),)

    def head_features():
        return (mask_representations(lm, plain_prompt, task.test),)

    jobs = {"autoprompt": autoprompt_step, "cloze": cloze_evaluation, "head features": head_features}
    if lm.kind == "causal":
        batch = encode_pairs(lm.tokenizer, ["a film", "the plot"], ["it was great", "boring"])

        def response_log_probs():
            with torch.no_grad():
                return response_forward(lm.model, batch, with_hidden=True)

        jobs["rlhf response"] = response_log_probs
    return jobs


def test_jobs_on_one_model_from_threads_equal_each_job_alone(tiny_lm, tiny_task):
    weights = {name: p.detach().clone() for name, p in tiny_lm.model.named_parameters()}
    alone = {name: job() for name, job in jobs(tiny_lm, tiny_task).items()}
    results: dict[str, list] = {name: [] for name in alone}
    errors = []
    start = threading.Barrier(len(alone))

    def run(name, job):
        try:
            start.wait()
            for _ in range(ROUNDS):
                results[name].append(job())
        except Exception as exc:  # reported below with the job's name
            errors.append((name, exc))

    threads = [threading.Thread(target=run, args=item) for item in jobs(tiny_lm, tiny_task).items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for name, expected in alone.items():
        assert len(results[name]) == ROUNDS
        for got in results[name]:
            assert all(torch.equal(g, e) for g, e in zip(got, expected)), f"{name} differs under concurrency"
    # The shared model is exactly as it was, with no gradients left on it.
    for name, p in tiny_lm.model.named_parameters():
        assert torch.equal(p, weights[name]) and p.grad is None


def test_the_head_input_is_recorded_only_for_the_context_that_asks(tiny_causal):
    from peftlab.models import capture_head_inputs

    ids = torch.tensor([[1, 5, 6, 7]])
    with capture_head_inputs(tiny_causal.model) as captured:
        with torch.no_grad():
            tiny_causal.model(input_ids=ids)
        seen = []
        other = threading.Thread(target=lambda: seen.append(tiny_causal.model(input_ids=ids).logits))
        other.start()
        other.join()
    assert len(captured) == 1 and captured[0].shape == (1, 4, tiny_causal.model.config.hidden_size)
    with torch.no_grad():
        tiny_causal.model(input_ids=ids)  # outside the context: nothing is recorded
    assert len(captured) == 1
    # What was recorded is what the LM head turns into logits.
    with torch.no_grad():
        logits = tiny_causal.model(input_ids=ids).logits
    torch.testing.assert_close(tiny_causal.model.get_output_embeddings()(captured[0]), logits)


@pytest.mark.parametrize("copies", [1, 2])
def test_a_copied_model_records_its_head_input_once(tiny_causal, copies):
    import copy

    from peftlab.models import capture_head_inputs

    model = tiny_causal.model
    for _ in range(copies):
        with capture_head_inputs(model):
            pass
        model = copy.deepcopy(model)  # a copy carries the recorder along; it must not get a second one
    with capture_head_inputs(model) as captured, torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6]]))
    assert len(captured) == 1


def test_seeded_sampling_from_threads_equals_sampling_alone(tiny_causal):
    from peftlab.rlhf.generation import sample_responses

    prompts = ["a film", "the plot", "the cast"]

    def sample(seed):
        return sample_responses(
            tiny_causal.model, tiny_causal.tokenizer, prompts, max_new_tokens=8, seed=seed, batch_size=1
        ).input_ids  # a batch a turn: other jobs' seeded blocks run between turns

    alone = {seed: sample(seed) for seed in (1, 2)}
    results, start = {1: [], 2: []}, threading.Barrier(3)

    def run(seed):
        start.wait()
        for _ in range(5):
            results[seed].append(sample(seed))

    def initialise_weights():  # a third job seeding its own initialisation meanwhile
        start.wait()
        for _ in range(50):
            with seeded(7):
                torch.nn.Linear(64, 64)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in alone] + [
        threading.Thread(target=initialise_weights)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(got, alone[seed]) for seed, runs in results.items() for got in runs)


def test_a_timing_of_seeded_work_can_leave_out_its_wait_for_another_thread_s():
    """DPO held the generator for its whole training: sampling timed beside it (to price a visitor's RLHF stage)
    counted the wait as sampling, and every later visitor's estimate was priced at it."""
    import time

    from peftlab.seeding import waited_seconds

    holding, waits = threading.Event(), []

    def hold():
        with seeded(1):
            holding.set()
            time.sleep(0.4)

    def wait_then_draw():
        before = waited_seconds()
        with seeded(2):
            torch.rand(1)
        waits.append(waited_seconds() - before)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait()
    drawer = threading.Thread(target=wait_then_draw)
    drawer.start()
    holder.join()
    drawer.join()
    assert waits[0] > 0.2  # the holder's 0.4 s, less the start of a thread
    before = waited_seconds()
    with seeded(3), seeded(4):  # alone, and re-entered: no wait
        pass
    assert waited_seconds() - before < 0.05


def test_seeded_turns_draw_what_one_seeded_block_draws_with_other_blocks_between_them():
    from peftlab.seeding import SeededTurns

    before = torch.get_rng_state()
    turns = SeededTurns(7)
    with turns.take():
        first = torch.rand(3)
    with seeded(99):  # another job's block between the turns
        torch.rand(5)
    with turns.take():
        second = torch.rand(3)
    with seeded(7):
        expected = torch.rand(6)
    assert torch.equal(torch.cat([first, second]), expected)
    assert torch.equal(torch.get_rng_state(), before)  # the process's generator is left as it was


def other_seeded_block_runs_now() -> bool:
    """Whether another thread's seeded block runs within 10 s, rather than waiting for this thread's."""

    def draw():
        with seeded(5):
            torch.rand(1)

    other = threading.Thread(target=draw, daemon=True)
    other.start()
    other.join(timeout=10)
    return not other.is_alive()


def test_sampling_lets_other_jobs_seeded_blocks_run_between_its_batches(tiny_causal):
    """Sampling the reward model's comparisons (360 responses by default) held every other visitor's seeded work,
    their models' initialisation and their own sampling, until the last response."""
    from peftlab.rlhf.generation import sample_responses

    prompts = ["a film", "the plot", "the cast", "an ending"]
    ran = []
    sampled = sample_responses(
        tiny_causal.model,
        tiny_causal.tokenizer,
        prompts,
        max_new_tokens=6,
        seed=3,
        batch_size=2,
        progress=lambda done, total: ran.append(other_seeded_block_runs_now()),
    )
    assert ran == [True, True]
    alone = sample_responses(tiny_causal.model, tiny_causal.tokenizer, prompts, max_new_tokens=6, seed=3, batch_size=2)
    assert torch.equal(sampled.input_ids, alone.input_ids)


def test_dpo_trains_beside_other_jobs_seeded_blocks_and_draws_nothing_from_the_global_generator(
    tiny_causal, monkeypatch
):
    """A visitor's DPO held the global generator for its whole training, so every other visitor's seeded work
    (a model's initialisation, sampling) waited minutes with no word why."""
    import trl

    from peftlab.rlhf.dpo import DPOConfig, train_dpo
    from tests.test_rlhf_dpo import preference_pairs
    from tests.test_rlhf_stages import PROMPTS

    seen = {}
    train = trl.DPOTrainer.train

    step = trl.DPOTrainer.training_step

    def observed_train(self, *args, **kwargs):
        state = torch.get_rng_state()
        result = train(self, *args, **kwargs)
        seen["draws nothing"] = torch.equal(torch.get_rng_state(), state)
        return result

    def observed_step(self, *args, **kwargs):  # in the middle of the training
        seen.setdefault("others run", other_seeded_block_runs_now())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "train", observed_train)
    monkeypatch.setattr(trl.DPOTrainer, "training_step", observed_step)
    config = DPOConfig(steps=4, batch_size=2, lora_r=2)
    *steps, _ = train_dpo(tiny_causal.model, tiny_causal.tokenizer, preference_pairs(PROMPTS[:6]), config)
    assert seen == {"others run": True, "draws nothing": True} and len(steps) == 4


def test_a_process_forked_while_another_thread_builds_a_model_gets_its_locks_open_and_waited_for_them():
    """ZeroGPU forks a GPU call's worker from the app's process. Forked while another visitor's thread was building
    a model (loading a zip: `drawing()` and `building()`), the worker got both locks held by a thread it does not
    have, and its job waited at its first build until ZeroGPU aborted the call (a review's finding). The fork now
    waits for the build, and the child takes both at once."""
    import os
    import signal
    import time

    from peftlab.models import building

    holding = threading.Event()

    def build():
        with seeded(3), building():
            holding.set()
            time.sleep(0.5)

    builder = threading.Thread(target=build)
    builder.start()
    holding.wait()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: killed by the alarm if a lock never opens
        signal.alarm(5)
        with seeded(4), building():
            pass
        os._exit(0)
    waited = time.perf_counter() - started
    _, status = os.waitpid(pid, 0)
    builder.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert waited > 0.3  # the fork waited for the build (0.5 s, less the time to start it)


FORK_IN_A_BUILD = """
import os
from peftlab import forking
from peftlab.models import building
forking.FORK_WAIT_S = 0.2
with building():  # the forking thread itself is building: the fork cannot wait for the build to end
    pid = os.fork()
    if pid == 0:
        with building():  # the child's lock starts afresh
            pass
        os._exit(0)
    _, status = os.waitpid(pid, 0)
print("child", os.WEXITSTATUS(status))
"""


def test_a_thread_that_forks_inside_a_build_forks_after_a_bounded_wait_and_its_child_builds():
    """The fork took every lock first: a thread forking while it held one itself waited for itself for ever (a diff
    review's finding; no path of peftlab's does so, but a library's fork would)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FORK_IN_A_BUILD], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["child", "0"], done.stderr[-2000:]
