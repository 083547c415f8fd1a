"""Where peftlab keeps what it writes for later: converted models and the results store ($PEFTLAB_CACHE).

Its own module, without torch, so that reading the results store (`python -m peftlab results list`) starts in a
second instead of loading the model stack first.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PEFTLAB_CACHE", Path.home() / ".cache" / "peftlab"))
