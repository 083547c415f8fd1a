"""Seeded work on torch's global random number generator, safe when several jobs run in one process.

torch has one global generator per device. Two jobs that seed it and then draw from it in different
threads interleave their draws, so each job's numbers depend on what else runs. `seeded(seed)` gives a
block the generator alone: it holds a process-wide lock, seeds, and restores the previous state after.
Keep such blocks short (initialising weights, sampling a batch of responses): other seeded blocks wait.
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

_lock = threading.RLock()  # re-entrant: a seeded block may call a function that seeds too
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


def waited_seconds() -> float:
    """Seconds this thread has waited for other threads' seeded blocks, in all: what a timing of seeded work takes
    out (sampling timed beside another visitor's DPO, which holds the generator for its whole training, priced
    every later visitor's sampling at the wait)."""
    return getattr(_waits, "seconds", 0.0)


def drawing() -> contextlib.AbstractContextManager[None]:
    """A block that draws from torch's global generator without needing particular numbers (building modules whose
    initial weights are replaced): seeded blocks of other threads keep theirs while it runs."""
    return seeded(0)
