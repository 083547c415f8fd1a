"""Seeded work on torch's global random number generator, safe when several jobs run in one process.

torch has one global generator per device. Two jobs that seed it and then draw from it in different
threads interleave their draws, so each job's numbers depend on what else runs. `seeded(seed)` gives a
block the generator alone: it holds a process-wide lock, seeds, and restores the previous state after.
Keep such blocks short (initialising weights, sampling a batch of responses): other seeded blocks wait. Longer
seeded work takes turns (`SeededTurns`), or draws from its own `torch.Generator`.
The guarantee holds when every draw from the global generator in the process happens inside such a
block, as in peftlab's own code (other randomness uses its own `random.Random` or `torch.Generator`): rebuilding a
saved method draws too (PEFT and transformers initialise the modules its weights then replace), so it runs in
`drawing`. A visitor loading a zip beside another's seeded training changed that training's numbers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import torch

from peftlab.forking import held_across_fork

# re-entrant: a seeded block may call a function that seeds too; taken first by a fork (a seeded block may build)
_lock = held_across_fork(threading.RLock(), rank=0)
_waits = threading.local()  # per thread: seconds spent waiting for `_lock`


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators (CPU and CUDA) seeded with `seed`, alone among threads."""
    asked = time.perf_counter()
    with _lock:
        _waits.seconds = waited_seconds() + time.perf_counter() - asked
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
            torch.manual_seed(seed)
            yield


class SeededTurns:
    """The numbers of one `seeded(seed)` block, drawn in several turns (`with turns.take():`) with other threads'
    seeded blocks free to run between them: each turn starts the generators where the last one left them.

    Sampling 360 responses for the reward model's comparisons in one seeded block held every other visitor's
    seeded work (a model's initialisation, their own sampling) for minutes; in turns of one batch, they wait for a
    batch at most, and the responses are the ones a single block gives.
    """

    def __init__(self, seed: int):
        self.seed = seed
        self._states: tuple[torch.Tensor, list[torch.Tensor] | None] | None = None  # (CPU, CUDA) after the last turn

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        with seeded(self.seed):
            if self._states is not None:
                cpu, cuda = self._states
                torch.set_rng_state(cpu)
                if cuda is not None and torch.cuda.is_initialized():
                    torch.cuda.set_rng_state_all(cuda)
            yield
            self._states = (
                torch.get_rng_state(),
                torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
            )


def waited_seconds() -> float:
    """Seconds this thread has waited for other threads' seeded blocks, in all: what a timing of seeded work takes
    out (sampling timed beside another visitor's seeded work priced every later visitor's sampling at the wait)."""
    return getattr(_waits, "seconds", 0.0)


def drawing() -> contextlib.AbstractContextManager[None]:
    """A block that draws from torch's global generator without needing particular numbers (building modules whose
    initial weights are replaced): seeded blocks of other threads keep theirs while it runs."""
    return seeded(0)
