"""Locks that a forked process gets back open, with what they guard whole.

ZeroGPU runs each GPU call in a worker forked from the app's process (`spaces` forks it when a call finds no idle
worker). A lock that another of the app's threads held at that moment (building a model, a seeded block) stayed held
in the child, where no thread would ever release it: the call's job waited at its first model build until ZeroGPU
aborted the call, and the next calls of its kind asked for twice as long (a review's finding). Releasing such a lock
in the child alone would not do: a build caught half-way leaves transformers' process-wide swaps (torch's default
dtype, a no-op `tie_weights`) in the child.

`held_across_fork(lock, rank)` has the forking thread take the lock before the fork and release it after, in the
parent and the child: the fork waits for the other holders to finish (a build or a seeded block: seconds), and the
child gets the lock open and what it guards whole. The locks are taken by rank, lowest first, the order every
thread takes them in, so that the fork never waits for a thread that waits for it.
"""

from __future__ import annotations

import os
import threading

_held: list[tuple[int, object]] = []  # (rank, lock), kept in rank order
_registered = threading.Lock()


def held_across_fork(lock, rank: int):
    """`lock` (a threading.Lock or RLock), taken by a forking thread after every lock of a lower rank; returns it."""
    with _registered:
        _held.append((rank, lock))
        _held.sort(key=lambda item: item[0])
    return lock


def _take() -> None:
    for _, lock in _held:
        lock.acquire()


def _give_back() -> None:
    for _, lock in reversed(_held):
        lock.release()


os.register_at_fork(before=_take, after_in_parent=_give_back, after_in_child=_give_back)
