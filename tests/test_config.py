"""Every config class: defaults valid, every bad value refused with one sentence, JSON both ways.

After PEFT's tests/test_config.py, which walks every config class the same way.
"""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

from peftlab.autoprompt import AutoPromptConfig
from peftlab.backends import BackendConfig
from peftlab.cloze import ClozeConfig
from peftlab.compare import GridConfig, SweepConfig
from peftlab.config import MAX_SEED, Config, _base_type, capitalised, label_of
from peftlab.errors import PeftlabError
from peftlab.methods import METHODS
from peftlab.pet import PETConfig
from peftlab.rlhf.dpo import DPOConfig
from peftlab.rlhf.pipeline import PipelineConfig
from peftlab.rlhf.ppo import PPOConfig
from peftlab.rlhf.reward import RewardConfig
from peftlab.rlhf.sft import SFTConfig
from peftlab.search import TuneConfig
from peftlab.standard import StandardConfig
from peftlab.tuning import TrainSettings

CONFIGS = [
    ClozeConfig,
    AutoPromptConfig,
    TrainSettings,
    GridConfig,
    SweepConfig,
    BackendConfig,
    *METHODS.values(),
    SFTConfig,
    RewardConfig,
    PPOConfig,
    DPOConfig,
    PipelineConfig,
    StandardConfig,
    PETConfig,
    TuneConfig,
]


def test_every_config_class_is_listed():
    def subclasses(cls):
        return {cls} | {s for sub in cls.__subclasses__() for s in subclasses(sub)}

    concrete = {
        cls
        for cls in subclasses(Config)
        if cls.__module__.startswith("peftlab") and cls.settings() and getattr(cls, "name", None) != ""
    }  # the method bases have no name and are never built
    assert concrete <= set(CONFIGS), concrete - set(CONFIGS)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda cls: cls.__name__)
def test_defaults_are_valid_and_round_trip_through_json(cls):
    config = cls()
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for item in cls.settings():
        assert item.metadata["help"].strip(), f"{cls.__name__}.{item.name} has no help"


def bad_values(cls) -> list[tuple[str, object]]:
    """(field, value) pairs that break each field's declared rule and type."""
    hints = typing.get_type_hints(cls)
    cases = []
    for item in cls.settings():
        meta, kind = item.metadata, _base_type(hints[item.name])
        if kind in (int, float):
            cases.append((item.name, "many"))
        if kind is float:  # NaN compares False with any bound: "--worker-gpus nan" passed its minimum of 0
            cases.append((item.name, float("nan")))
            cases.append((item.name, float("inf")))  # a learning rate of inf passed "above 0"
        if meta["choices"] is not None:
            cases.append((item.name, "not-a-choice"))
        if meta["minimum"] is not None:
            cases.append((item.name, meta["minimum"] - 1))
        if meta["above"] is not None:
            cases.append((item.name, meta["above"]))
        if meta["maximum"] is not None:
            cases.append((item.name, meta["maximum"] + 1))
    return cases


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [(cls, name, value) for cls in CONFIGS for name, value in bad_values(cls)],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v),
)
def test_every_bad_value_is_refused_with_one_sentence_naming_the_setting(cls, name, value):
    with pytest.raises(PeftlabError) as raised:
        cls(**{name: value})
    message = str(raised.value)
    item = next(f for f in dataclasses.fields(cls) if f.name == name)
    assert "\n" not in message and message.endswith(".")
    starts = (f"{getattr(cls, 'name', '')}:", capitalised(label_of(item)))  # a method's name, or a name like iPET
    assert message[:1].isupper() or message.startswith(starts), message
    assert label_of(item).lower() in message.lower() or item.metadata["subject"], message
    assert repr(value) in message or str(value) in message, message


def test_ppo_settings_fail_before_any_stage_starts():
    for changes, message in (
        (dict(gamma=1.5), "PPO gamma must be a number from 0 to 1, not 1.5."),
        (dict(lam=-0.1), "PPO GAE lambda must be a number from 0 to 1, not -0.1."),
        (dict(clip_range=0.0), "PPO clip range must be above 0, not 0.0."),
        (dict(value_clip_range=-1.0), "PPO value clip range must be above 0, not -1.0."),
        (dict(value_coef=-0.5), "PPO value loss coefficient must be 0 or more, not -0.5."),
    ):
        with pytest.raises(PeftlabError) as raised:
            PipelineConfig(ppo=PPOConfig(**changes))
        assert str(raised.value) == message


def test_nested_configs_round_trip_and_unknown_settings_are_named():
    config = PipelineConfig(k=5, ppo=PPOConfig(beta=0.2), sft=SFTConfig(steps=7))
    assert PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(PeftlabError, match=r"^PPOConfig has no setting 'betta'; its settings are adaptive_kl, "):
        PPOConfig.from_dict({"betta": 0.1})


def test_a_list_setting_that_repeats_an_item_is_one_sentence():
    """PET's seeds '13,13' trained the same seed twice and showed a spread over seeds of one run."""
    from peftlab.compare import GridConfig
    from peftlab.pet import PETConfig

    with pytest.raises(PeftlabError) as error:
        PETConfig(seeds=(13, 21, 13))
    assert str(error.value) == "Seeds lists 13 twice; give each once."
    with pytest.raises(PeftlabError, match=r"^Methods to compare lists 'lora' twice; give each once\.$"):
        GridConfig(methods=("lora", "head", "lora"))
    assert PETConfig(seeds=(13, 21)).seeds == (13, 21)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        # -5 broke numpy's default_rng in iPET, 10**20 torch.manual_seed ("Overflow when unpacking long long")
        (lambda: PETConfig(seeds=(13, -5)), "Seeds must be whole numbers from 0 to 4294967295, not -5."),
        (
            lambda: GridConfig(seeds=(10**20,)),
            "Seeds must be whole numbers from 0 to 4294967295, not 100000000000000000000.",
        ),
        (lambda: PPOConfig(seed=-1), "PPO seed must be a whole number from 0 to 4294967295, not -1."),
    ],
)
def test_every_seed_is_one_every_random_generator_takes(make, message):
    with pytest.raises(PeftlabError) as raised:
        make()
    assert str(raised.value) == message
    PETConfig(seeds=(0, MAX_SEED))  # the bounds themselves are seeds


def test_every_seed_setting_is_bounded():
    """Each config's seed or seeds field carries the bounds (a new config's seed made with plain `setting` fails)."""

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    import peftlab.cli  # noqa: F401 - imports every module that defines a config

    seeds = [
        (cls.__name__, item)
        for cls in set(subclasses(Config))
        for item in dataclasses.fields(cls)
        if item.name in ("seed", "seeds") and item.metadata.get("help")
    ]
    assert len(seeds) >= 12
    assert all((item.metadata["minimum"], item.metadata["maximum"]) == (0, MAX_SEED) for _, item in seeds), seeds
