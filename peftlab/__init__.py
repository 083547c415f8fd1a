"""peftlab: prompt-based learning on pretrained transformers, shown and compared side by side.

The names below load on first use (PEP 562): importing a light module (`peftlab.store`, the CLI's results commands)
does not load torch and transformers first.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ClozeEvaluation": "peftlab.cloze",
    "ClozeSetup": "peftlab.cloze",
    "calibrate": "peftlab.cloze",
    "classify_text": "peftlab.cloze",
    "evaluate": "peftlab.cloze",
    "PeftlabError": "peftlab.errors",
    "DEFAULT_MODEL": "peftlab.models",
    "LM": "peftlab.models",
    "load_lm": "peftlab.models",
    "Prompt": "peftlab.prompts",
    "Template": "peftlab.prompts",
    "Verbalizer": "peftlab.prompts",
    "ResultRow": "peftlab.store",
    "ResultStore": "peftlab.store",
    "Task": "peftlab.tasks",
    "load_task": "peftlab.tasks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'peftlab' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
