"""The embedded model on embedded data: numbers a user can check against FACTS.md."""

import json
import zipfile

import pytest

from peftlab.cloze import evaluate
from peftlab.methods import method_config
from peftlab.models import load_lm
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.saving import zip_trained
from peftlab.tasks import load_task
from peftlab.tuning import TrainedMethod

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


def test_an_adapter_saved_on_the_embedded_model_names_it_by_its_hub_id(tmp_path):
    # PEFT writes the base model's name_or_path into the adapter; the folder it was read from exists only here
    lm = load_lm("smollm2-135m")
    config = method_config("lora")
    prompt = Prompt(
        Template("Review: {text}\nSentiment:{mask}"), Verbalizer({"negative": ["bad"], "positive": ["good"]})
    )
    model, _ = config.build(lm, prompt)
    archive = zipfile.ZipFile(zip_trained(TrainedMethod(config, lm, prompt, model, 0), tmp_path / "lora.zip"))
    assert json.loads(archive.read("adapter_config.json"))["base_model_name_or_path"] == (
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in archive.read("README.md").decode()
