"""peftlab: prompt-based learning on pretrained transformers, shown and compared side by side."""

from peftlab.cloze import ClozeEvaluation, ClozeSetup, calibrate, classify_text, evaluate
from peftlab.errors import PeftlabError
from peftlab.models import DEFAULT_MODEL, LM, load_lm
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.tasks import Task, load_task

__all__ = [
    "ClozeEvaluation",
    "ClozeSetup",
    "DEFAULT_MODEL",
    "LM",
    "PeftlabError",
    "Prompt",
    "Task",
    "Template",
    "Verbalizer",
    "calibrate",
    "classify_text",
    "evaluate",
    "load_lm",
    "load_task",
]
