"""Launch the peftlab Gradio app on a free local port for the app and browser tests.

Both `tests/test_app.py` and `tests/test_browser.py` use `running_app()` from a module-scoped fixture:

    with running_app() as url:
        ...  # http://127.0.0.1:<port>/

The app runs in this process (`prevent_thread_lock=True`), so the model it loads stays cached in
`peftlab.models` for the rest of the test session.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import urllib.request
from collections.abc import Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home from a test run
os.environ.setdefault("HF_HUB_OFFLINE", "1")

HOST = "127.0.0.1"
# The first call converts or loads the embedded model; other engineers' CPU-heavy jobs may share the box.
FIRST_CALL_TIMEOUT_S = 180
CALL_TIMEOUT_S = 120


def free_port(host: str = HOST) -> int:
    """A port nothing listens on right now: bind to port 0 and let the OS pick."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "config", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@contextlib.contextmanager
def running_app(attempts: int = 3) -> Iterator[str]:
    """Build and launch the app on a free port; yield its local URL (ending in "/"); close it afterwards."""
    from peftlab.ui import build_app, launch_options

    app = build_app()
    last_error: Exception | None = None
    for _ in range(attempts):  # another process may grab the port between free_port() and launch()
        try:
            _, url, _ = app.launch(
                prevent_thread_lock=True,
                quiet=True,
                server_name=HOST,
                server_port=free_port(),
                share=False,
                ssr_mode=False,
                **launch_options(),
            )
            break
        except OSError as exc:
            last_error = exc
    else:
        raise RuntimeError(f"could not launch the app on a free port after {attempts} attempts") from last_error
    try:
        url = url if url.endswith("/") else url + "/"
        _wait_until_serving(url)
        yield url
    finally:
        app.close()
