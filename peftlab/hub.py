"""Whether the Hugging Face Hub can be reached, asked once per process so offline failures are quick."""

from __future__ import annotations

import functools
import socket
from urllib.parse import urlparse

from huggingface_hub import constants  # the submodule itself: the package loads it lazily


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode or when the Hub's host does not answer a TCP connection within `timeout` s."""
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False
