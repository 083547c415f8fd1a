"""A function that reports its progress through a callback, run as a generator of those reports.

The stages of the app are generators of events, read by the UI between steps. A long function inside a stage that
can only report through a callback (sampling hundreds of responses in batches) would leave the UI without a word
until it returns: `relayed` runs it in a worker thread and yields each report as it comes, then the value.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass
class Returned:
    """The last item of `relayed`: what the function returned."""

    value: object


class Abandoned(Exception):
    """Raised by `report` inside the function once the generator reading its reports has been closed."""


def relayed(function: Callable, *arguments, **keywords) -> Iterator:
    """The reports of `function(*arguments, report=report, **keywords)` while it runs in a worker thread, then
    `Returned(value)`.

    `report(item)` hands one item to the caller. An exception raised by the function (a `report` that raises to stop
    it included) is raised again in the caller's thread. A caller that closes the generator early makes the next
    `report` raise `Abandoned`, and waits for the function to end, so nothing runs on behind its back.
    """
    items: queue.Queue = queue.Queue()
    abandoned = threading.Event()
    done = object()

    def report(item) -> None:
        if abandoned.is_set():
            raise Abandoned
        items.put(item)

    def work() -> None:
        try:
            items.put(Returned(function(*arguments, report=report, **keywords)))
        except BaseException as exc:  # raised again in the caller's thread
            items.put(exc)
        items.put(done)

    worker = threading.Thread(target=work, name=f"peftlab-{getattr(function, '__name__', 'relay')}", daemon=True)
    worker.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandoned.set()
        worker.join()
