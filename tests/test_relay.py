"""A function reporting through a callback, read as a generator (`peftlab.relay`)."""

from __future__ import annotations

import threading
import time

import pytest

from peftlab.relay import Abandoned, Returned, relayed


def count_to(n: int, report) -> str:
    for i in range(1, n + 1):
        report(i)
    return f"counted to {n}"


def test_the_reports_come_in_order_then_the_value():
    assert list(relayed(count_to, 3)) == [1, 2, 3, Returned("counted to 3")]
    assert list(relayed(count_to, n=0)) == [Returned("counted to 0")]


def test_an_exception_in_the_function_is_raised_in_the_callers_thread_after_its_reports():
    def fails(report):
        report("half way")
        raise ValueError("the sampling failed")

    items = relayed(fails)
    assert next(items) == "half way"
    with pytest.raises(ValueError, match="the sampling failed"):
        next(items)


def test_closing_the_generator_early_ends_the_function_at_its_next_report():
    reported, ended = [], threading.Event()

    def slow(report):  # 1000 reports 10 ms apart: 10 s unless it ends early
        try:
            for i in range(1000):
                report(i)
                time.sleep(0.01)
                reported.append(i)
        finally:
            ended.set()
        return "never"

    items = relayed(slow)
    assert next(items) == 0
    items.close()  # waits for the function, which stops at its next report: nothing runs on behind the caller's back
    assert ended.is_set() and len(reported) < 100


def test_a_report_after_the_reader_left_raises_abandoned():
    saved = {}

    def keeps_reporting(report):
        saved["report"] = report
        report("first")
        return "done"

    items = relayed(keeps_reporting)
    assert next(items) == "first"
    items.close()
    with pytest.raises(Abandoned):
        saved["report"]("late")
