"""Locks that a forked process gets back open, with what they guard whole where it can wait for that.

ZeroGPU runs each GPU call in a worker forked from the app's process (`spaces` forks one when a call finds no idle
worker). A lock that another of the app's threads held at that moment (building a model, a seeded block) stayed
held in the child, where no thread would ever release it: the call's job waited at its first model build until
ZeroGPU aborted the call (a review's finding). And a build caught half-way leaves transformers' process-wide swaps
(torch's default dtype, a no-op `tie_weights`) in the child.

`held_across_fork(lock, rank)` has the forking thread take the lock before the fork, lowest rank first (the order
every thread takes them in, so that the fork never waits for a thread that waits for it), and release it after in
the parent: a fork waits for the builds and seeded blocks in progress, and the child gets what they guard whole. It
waits FORK_WAIT_S at most for each (the GPU is already allocated to the call when spaces forks, and a Hub model's
download happens inside a build): past that, or when the forking thread holds the lock itself, it forks without it.
In the child every registered lock starts afresh, unlocked: its holders are threads the child does not have.
"""

from __future__ import annotations

import os
import threading

FORK_WAIT_S = 10.0
_held: list[tuple[int, object]] = []  # (rank, lock), kept in rank order
_registered = threading.Lock()
_taken: list = []  # the locks the forking thread took for the fork in progress


def held_across_fork(lock, rank: int):
    """`lock` (a threading.Lock or RLock), taken by a forking thread after every lock of a lower rank; returns it."""
    with _registered:
        _held.append((rank, lock))
        _held.sort(key=lambda item: item[0])
    return lock


def _take() -> None:
    with _registered:
        locks = [lock for _, lock in _held]
    _taken[:] = [lock for lock in locks if lock.acquire(timeout=FORK_WAIT_S)]


def _release_in_parent() -> None:
    for lock in reversed(_taken):
        lock.release()
    _taken.clear()


def _reopen_in_child() -> None:
    for _, lock in _held:
        lock._at_fork_reinit()  # what the standard library's own locks do after a fork (`logging`, `threading`)
    _taken.clear()


os.register_at_fork(before=_take, after_in_parent=_release_in_parent, after_in_child=_reopen_in_child)
