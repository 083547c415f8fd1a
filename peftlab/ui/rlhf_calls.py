"""The RLHF tab's model work as GPU calls: each stage a job that takes the visitor's session across and brings it back.

On ZeroGPU (`zerogpu.on_gpu`) a stage runs in another process: the session crosses into the call as its models'
names, SFT result and trained tensors (`rlhf.crossing`), the stage runs there, and the session comes back as it left
it, its new result unbuilt until something here uses it. PPO goes a chunk of steps per call (`zerogpu.steps_per_call`),
its run crossing between chunks, so no call outlasts its duration and a Stop takes effect between chunks (a job gets its
stop flag as it stood when its call started: `zerogpu.StopAtStart`). Off ZeroGPU every job runs here, on the session
itself, in one piece, with its stop flag.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from peftlab.config import counted
from peftlab.errors import PeftlabError
from peftlab.relay import Returned, relayed
from peftlab.rlhf.data import Comparison
from peftlab.rlhf.pipeline import Sampled, SamplingStopped
from peftlab.rlhf.ppo import PPOConfig, PPOResult
from peftlab.rlhf.session import RLHFSession, ranking_settings
from peftlab.saving import zip_saved
from peftlab.zerogpu import on_gpu, steps_per_call

KEPT_HERE = {"human"}  # the person's rankings change only in the app's process (a ranking saved during a stage)


def session_call(session: RLHFSession, job, *arguments, stop=None, **sizing) -> Iterator:
    """The items of `job(session, *arguments)` (`on_gpu`, whose `sizing` keywords and errors it takes); the session
    it brings back from a GPU call replaces this one's stages."""
    for item in on_gpu(job, session, *arguments, stop=stop, **sizing):
        if isinstance(item, RLHFSession):
            if item is not session:
                vars(session).update({k: v for k, v in vars(item).items() if k not in KEPT_HERE})
        else:
            yield item


def stage(session: RLHFSession, method: str, *arguments) -> Iterator:
    """A session method as a job: its items (a stage's events and result) or its value, then the session."""
    out = getattr(session, method)(*arguments)
    if inspect.isgenerator(out):
        yield from out
    else:
        yield out
    yield session


@dataclass
class Ranked:
    """The comparisons a reward model trains and is tested on, and the seconds it took to get them (sampling)."""

    train: list[Comparison]
    heldout: list[Comparison]
    seconds: float


def reward_stage(session: RLHFSession, source: str, config, reward_config, stop=None) -> Iterator:
    """Step 2 as one job: how far the sampling is (Sampled, a few times a minute on a CPU), the comparisons from
    `source` (Ranked), the reward model's events and result, the session. A stop while sampling ends the job after
    its last Sampled: no reward model is trained and the session keeps the one it had."""
    started = time.perf_counter()

    def comparisons(report):
        def sampled(done: int, total: int) -> None:
            if stop is not None and stop.is_set():
                raise SamplingStopped(Sampled(done, total))
            report(Sampled(done, total))

        return session.comparisons(source, config, sampled)

    try:
        for item in relayed(comparisons):
            if isinstance(item, Returned):
                train, heldout = item.value
            else:
                yield item
    except SamplingStopped:
        yield session
        return
    yield Ranked(train, heldout, time.perf_counter() - started)
    yield from session.run_reward(train, heldout, reward_config, stop, ranking_settings(source, config))
    yield session


def ppo_chunk(session: RLHFSession, labeler: str, config: PPOConfig, first: bool, until: int, stop=None) -> Iterator:
    """PPO's steps up to `until` as one job, starting the run when `first`; then the session."""
    if first:
        session.start_ppo(config)
    yield from session.continue_ppo(labeler, config, until, stop)
    yield session


def ppo_in_chunks(session: RLHFSession, labeler: str, config: PPOConfig, stop) -> Iterator:
    """Step 3's PPOEvents and PPOResult, a chunk of steps per call (all of them in one off ZeroGPU); a stop between
    chunks ends the run with the policy so far."""
    done, kind = 0, f"rlhf-ppo:{session.lm.name}:{config.batch_size}:{config.max_new_tokens}:{config.epochs}"
    while True:
        until = done + steps_per_call(kind, config.steps - done)
        items = session_call(
            session,
            ppo_chunk,
            labeler,
            config,
            done == 0,
            until,
            stop=stop,
            kind=kind,
            units=until - done,
            what=f"PPO steps {done + 1}-{until}",
            shorter="use a smaller PPO batch or shorter responses",
        )
        finished = False
        try:
            for item in items:  # read to its end: the session comes back last
                finished = finished or isinstance(item, PPOResult)
                yield item
        except (PeftlabError, gr.Error) as exc:
            if done == 0 or session.ppo_run is None:  # nothing finished, or the run did (a check after its last call)
                raise
            # a later chunk refused (the visitor's GPU quota used up) or aborted: the steps of the chunks before it
            # were lost, and the next press started PPO again (a ZeroGPU review's finding)
            yield session.finish_ppo(config)
            said = exc.message if isinstance(exc, gr.Error) else str(exc)
            raise PeftlabError(f"{said.rstrip('.')}. The policy after {counted(done, 'PPO step')} is kept.") from None
        if finished:
            return
        done = until
        if stop.is_set():
            yield session.finish_ppo(config)
            return


def saved_zip(session: RLHFSession, stage_name: str, path: str) -> str:
    """A stage's trained weights zipped at `path`, built where this runs (in a GPU call on ZeroGPU)."""
    return str(zip_saved(lambda folder: session.save(stage_name, folder), path))
