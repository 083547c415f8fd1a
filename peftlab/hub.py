"""Whether the Hugging Face Hub can be reached, asked once per process so offline failures are quick."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

from huggingface_hub import constants  # the submodule itself: the package loads it lazily

from peftlab.forking import held_across_fork

RETRY_AFTER_S = 60.0  # an unanswered Hub is asked again after this long

_lock = held_across_fork(threading.Lock(), rank=3)  # taken alone, for a connection (its timeout, and DNS)
_answer: tuple[bool, float] | None = None  # the last answer, and when it was found


def hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode or when the Hub's host does not answer a TCP connection within `timeout` s. A yes is
    kept for the process; a no for RETRY_AFTER_S: kept for good, one dropped connection turned the Hub's datasets and
    models off on a Space until it restarted."""
    global _answer
    if constants.HF_HUB_OFFLINE:
        return False
    with _lock:
        if _answer is not None and (_answer[0] or time.monotonic() - _answer[1] < RETRY_AFTER_S):
            return _answer[0]
        url = urlparse(constants.ENDPOINT)
        try:
            socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
            reachable = True
        except OSError:
            reachable = False
        _answer = (reachable, time.monotonic())
        return reachable
