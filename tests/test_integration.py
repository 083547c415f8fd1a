"""The embedded model on embedded data: numbers a user can check against FACTS.md."""

import pytest

from peftlab.cloze import evaluate
from peftlab.models import load_lm
from peftlab.tasks import load_task

pytestmark = pytest.mark.slow


def test_calibrated_zero_shot_accuracy_on_rt_sentiment():
    lm = load_lm("smollm2-135m")
    task = load_task("rt-sentiment")
    result = evaluate(
        lm,
        task,
        "Review: {text}\nSentiment:{mask}",
        {"negative": ["negative"], "positive": ["positive"]},
        calibration="mean",
        limit=200,
    )
    assert result.n == 200
    assert result.accuracy >= 0.70, result.summary()
    assert result.confusion.sum() == 200
