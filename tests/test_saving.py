"""Saving a trained method as a zip and loading it back: identical predictions, and clear errors for bad files."""

from __future__ import annotations

import json
import zipfile

import pytest
import torch

from peftlab.cloze import ClozeSetup
from peftlab.errors import PeftlabError
from peftlab.methods import method_config
from peftlab.saving import META_FILE, load_trained, save_trained, saved_model_name, zip_trained
from peftlab.tuning import TrainSettings, train_method
from tests.test_tuning import TEMPLATE, VERBALIZER, easy_task


def trained_method(lm, name, **overrides):
    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    train, dev = task.few_shot(4, seed=13)
    config = method_config(name, learning_rate=3e-2, **overrides)
    *_, trained = train_method(lm, setup, config, train, dev, TrainSettings(steps=3, eval_every=3))
    return task, trained


CAUSAL_CASES = [
    ("prompt-tuning", {"num_virtual_tokens": 4}),
    ("p-tuning", {"num_virtual_tokens": 4, "encoder_hidden_size": 8}),
    ("prefix-tuning", {"num_virtual_tokens": 3}),
    ("prefix-tuning", {"num_virtual_tokens": 3, "prefix_projection": True}),
    ("lora", {"r": 2}),
    ("adapter", {"bottleneck": 4}),
    ("head", {}),
    ("full", {}),
]


@pytest.mark.parametrize(
    ("name", "overrides"),
    CAUSAL_CASES,
    ids=[f"{n}{'-proj' if o.get('prefix_projection') else ''}" for n, o in CAUSAL_CASES],
)
def test_a_saved_method_reloads_to_identical_predictions(tiny_causal, tmp_path, name, overrides):
    task, trained = trained_method(tiny_causal, name, **overrides)
    expected = trained.log_probs(task.test)
    path = zip_trained(trained, tmp_path / f"{name}.zip")

    loaded = load_trained(path, lm=tiny_causal)
    assert loaded.config == trained.config and loaded.model is not trained.model
    assert loaded.prompt.template == trained.prompt.template and loaded.prompt.verbalizer == trained.prompt.verbalizer
    assert loaded.trainable_params == trained.trainable_params
    torch.testing.assert_close(loaded.log_probs(task.test), expected, atol=1e-5, rtol=0)
    # The trained weights really came from the file: an untrained build predicts differently.
    assert not torch.allclose(expected, _untrained(tiny_causal, trained, task), atol=1e-4)


def _untrained(lm, trained, task):
    from peftlab.tuning import TrainedMethod

    model, _ = trained.config.build(lm, trained.prompt)
    return TrainedMethod(trained.config, lm, trained.prompt, model, 0).log_probs(task.test)


@pytest.mark.parametrize("name", ["bitfit", "adapter"])
def test_masked_lm_methods_reload_too(tiny_mlm, tmp_path, name):
    task, trained = trained_method(tiny_mlm, name)
    loaded = load_trained(zip_trained(trained, tmp_path / "m.zip"), lm=tiny_mlm)
    torch.testing.assert_close(loaded.log_probs(task.test), trained.log_probs(task.test), atol=1e-5, rtol=0)


def test_peft_methods_are_saved_with_peft_own_files(tiny_causal, tmp_path):
    _, trained = trained_method(tiny_causal, "lora", r=2)
    names = set(zipfile.ZipFile(zip_trained(trained, tmp_path / "lora.zip")).namelist())
    assert names == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "README.md",
        META_FILE,
    }  # README: PEFT's model card
    meta = json.loads(zipfile.ZipFile(tmp_path / "lora.zip").read(META_FILE))
    assert meta["method"] == "lora" and meta["model"] == "tiny-llama" and meta["config"]["r"] == 2
    assert meta["template"] == TEMPLATE and meta["verbalizer"] == {k: list(v) for k, v in VERBALIZER.items()}


def test_bad_saved_methods_are_one_clear_sentence(tiny_causal, tiny_mlm, tmp_path):
    with pytest.raises(PeftlabError, match=r"There is no saved method at"):
        load_trained(tmp_path / "missing.zip", lm=tiny_causal)
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("hello")
    with pytest.raises(
        PeftlabError, match=r"^notes.zip is not a zip file; give a zip of a trained method \(the app's "
    ):
        load_trained(not_zip, lm=tiny_causal)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "nothing here")
    with pytest.raises(PeftlabError, match=rf"is not a saved peftlab method: it has no {META_FILE}"):
        load_trained(empty, lm=tiny_causal)
    sneaky = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(sneaky, "w") as archive:
        archive.writestr("../outside.txt", "x")
    with pytest.raises(PeftlabError, match=r"holds the path '../outside.txt'"):
        load_trained(sneaky, lm=tiny_causal)
    _, trained = trained_method(tiny_causal, "head")
    saved = zip_trained(trained, tmp_path / "head.zip")
    with pytest.raises(
        PeftlabError, match=r"^This head was trained on tiny-llama; load it with that model, not tiny-bert"
    ):
        load_trained(saved, lm=tiny_mlm)


def test_a_zip_with_pickled_weights_is_refused_before_anything_is_read(tiny_causal, tmp_path):
    _, trained = trained_method(tiny_causal, "lora")
    saved = zip_trained(trained, tmp_path / "lora.zip")
    pickled = tmp_path / "pickled.zip"
    with zipfile.ZipFile(saved) as source, zipfile.ZipFile(pickled, "w") as target:
        for name in source.namelist():
            if name != "adapter_model.safetensors":
                target.writestr(name, source.read(name))
        target.writestr("adapter_model.bin", b"a pickle that must never be unpickled")
    with pytest.raises(
        PeftlabError,
        match=r"^pickled.zip is not a saved peftlab method: it holds 'adapter_model.bin', "
        r"and only .* are read \(weights as safetensors only\)\.$",
    ):
        load_trained(pickled, lm=tiny_causal)
    with pytest.raises(PeftlabError, match=r"holds 'adapter_model.bin'"):
        saved_model_name(pickled)


def test_a_zip_that_unpacks_to_more_than_a_method_can_weigh_is_refused(tiny_causal, tmp_path, monkeypatch):
    import peftlab.saving

    _, trained = trained_method(tiny_causal, "head")
    saved = zip_trained(trained, tmp_path / "head.zip")
    monkeypatch.setattr(peftlab.saving, "MAX_UNZIPPED_BYTES", 100)
    with pytest.raises(PeftlabError, match=r"^head.zip unpacks to more than .* GB, more than any saved method\.$"):
        load_trained(saved, lm=tiny_causal)


def test_a_zip_whose_description_or_weights_weigh_more_than_a_saved_method_s_is_refused_before_it_is_read(
    tiny_causal, tmp_path
):
    """A peftlab_method.json of 4 GB of spaces zips to 4 MB, under a public Space's upload limit, and was read whole
    into memory twice; 4 GB of zeros as weights were read whole before their shapes were compared (a security
    review's findings; here a few megabytes stand for them)."""
    _, trained = trained_method(tiny_causal, "head")
    saved = zip_trained(trained, tmp_path / "head.zip")
    padded = rewritten(saved, tmp_path / "padded.zip", {META_FILE: lambda data: data + b" " * 2**21})
    message = r"^padded.zip is not a saved peftlab method: its peftlab_method.json unpacks to 2 MB, where a saved "
    with pytest.raises(PeftlabError, match=message + r"method's weighs a few kilobytes\.$"):
        saved_model_name(padded)
    heavy = rewritten(saved, tmp_path / "heavy.zip", {"trainable.safetensors": lambda _: bytes(2**22)})
    megabytes = 4 * tiny_causal.num_parameters / 2**20
    with pytest.raises(PeftlabError) as raised:
        load_trained(heavy, lm=tiny_causal)
    assert str(raised.value) == (
        f"heavy.zip's weights unpack to 4 MB, more than all of tiny-llama's weights in fp32 ({megabytes:,.0f} MB): "
        "no method trained on it saves that much."
    )


def test_the_model_of_a_saved_method_is_read_without_loading_it(tiny_causal, tmp_path):
    _, trained = trained_method(tiny_causal, "head")
    assert saved_model_name(zip_trained(trained, tmp_path / "head.zip")) == "tiny-llama"
    assert saved_model_name(save_trained(trained, tmp_path / "head-folder")) == "tiny-llama"


@pytest.mark.parametrize(
    ("name", "overrides"),
    [("prompt-tuning", {"num_virtual_tokens": 4}), ("lora", {"r": 2}), ("full", {}), ("classifier", {"r": 2})],
)
def test_a_trained_method_pickles_as_its_saved_weights_and_predicts_the_same(tiny_causal_folder, name, overrides):
    """How a method crosses into a ZeroGPU call: its model by reference, its own weights as its saved files."""
    import pickle

    from peftlab.models import load_lm

    lm = load_lm(tiny_causal_folder, dtype="fp32")
    task, trained = trained_method(lm, name, **overrides)
    data = pickle.dumps(trained)
    back = pickle.loads(data)
    assert back.lm is lm and back.model is not trained.model  # the model from the cache, the weights rebuilt
    assert (back.config, back.steps_done) == (trained.config, trained.steps_done)
    assert [e.train_loss for e in back.history] == [e.train_loss for e in trained.history]
    torch.testing.assert_close(back.log_probs(task.test), trained.log_probs(task.test), atol=1e-5, rtol=0)
    if name != "full":  # only the trained weights travel, not a copy of the model
        assert len(data) < lm.nbytes / 4
    again = pickle.loads(pickle.dumps(back))  # a method loaded back (PEFT's frozen load) pickles again
    torch.testing.assert_close(again.log_probs(task.test), trained.log_probs(task.test), atol=1e-5, rtol=0)


def test_a_scored_method_says_what_it_was_trained_on_and_scored(tiny_causal, tmp_path):
    from huggingface_hub import ModelCard

    from peftlab.compare import PlannedRun, train_and_score
    from peftlab.tuning import Scored

    task = easy_task()
    setup = ClozeSetup.build(task, TEMPLATE, VERBALIZER)
    run = PlannedRun(method_config("lora", r=2, learning_rate=3e-2), 4, 21, "lora")
    *_, row = train_and_score(tiny_causal, task, setup, run, TrainSettings(steps=3, eval_every=3), task.test)
    result, trained = row.result, row.trained
    assert trained.scored == Scored.of(result)
    archive = zipfile.ZipFile(zip_trained(trained, tmp_path / "lora.zip"))

    scored = json.loads(archive.read(META_FILE))["scored"]
    assert (scored["task"], scored["k"], scored["seed"], scored["split"]) == ("easy-sentiment", 4, 21, "test")
    assert scored["accuracy"] == result.accuracy and scored["result_id"] == result.id
    assert scored["rows_scored"] == scored["rows_in_split"] == len(task.test) == 8
    assert scored["trainer"]["steps"] == 3

    card = ModelCard(archive.read("README.md").decode())
    assert card.data.library_name == "peft" and "- PEFT " in card.text  # PEFT's own additions to peftlab's card
    assert {"peftlab", "lora"} <= set(card.data.tags)
    assert card.text.startswith("\n# lora on easy-sentiment with K=4 examples per class, seed 21")
    from peftlab.stats import proportion

    share = proportion(round(result.accuracy * 8), 8)  # how far 8 texts may be off
    assert (
        f"Accuracy {result.accuracy:.1%} (95 % interval {share.low:.1%} to {share.high:.1%}) and macro-F1 "
        f"{result.macro_f1:.3f} on 8 of the 8 test texts" in card.text
    )
    assert f"Stored as result `{result.id}`" in card.text
    assert "Verbalizer: negative: negative; positive: positive" in card.text

    loaded = load_trained(tmp_path / "lora.zip", lm=tiny_causal)
    assert loaded.scored == trained.scored  # a loaded method downloads again with its result
    assert json.loads(zipfile.ZipFile(zip_trained(loaded, tmp_path / "again.zip")).read(META_FILE))["scored"] == scored


def test_a_trained_method_asked_about_an_example_without_its_fields_says_so(tiny_causal):
    """A new user's `load_trained(...).log_probs([{"text": ..., "label": 0}])` on a pair task raised KeyError
    'hypothesis'."""
    _, trained = trained_method(tiny_causal, "lora", r=2)
    with pytest.raises(PeftlabError) as raised:
        trained.log_probs([{"label": 0}])
    assert str(raised.value) == (
        f"An example has no 'text', which the method's template ({TEMPLATE!r}) reads; give every example each of its "
        "fields."
    )


def test_an_unscored_method_has_a_card_without_a_result_and_a_bad_result_is_refused(tiny_causal, tmp_path):
    _, trained = trained_method(tiny_causal, "head")
    folder = save_trained(trained, tmp_path / "head")
    assert json.loads((folder / META_FILE).read_text())["scored"] == {}
    card = (folder / "README.md").read_text()
    assert "# head\n" in card and "Test result" not in card and "classification head of its own" in card
    assert "reading the text as the template gives it" in card  # the head reads the mask through the template
    # a classifier without its pattern reads the bare fields: its card said it read them through the template
    _, classifier = trained_method(tiny_causal, "classifier", r=2)
    card = (save_trained(classifier, tmp_path / "classifier") / "README.md").read_text()
    assert "reading the template's fields, one per line;" in card

    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps(meta | {"scored": {"accuracy": 0.9}}))
    with pytest.raises(PeftlabError, match=r"unreadable \(TypeError: its test result is not the one a saved method"):
        load_trained(folder, lm=tiny_causal)


def test_a_saved_method_with_a_setting_this_version_lacks_or_refuses_is_one_sentence(tiny_causal, tmp_path):
    """A LoRA saved by a version with a dropout setting was "unreadable (TypeError: LoRAConfig.__init__() got an
    unexpected keyword argument 'dropout')", and a refused value's sentence did not say it came from the saved file."""
    _, trained = trained_method(tiny_causal, "lora", r=2)
    folder = save_trained(trained, tmp_path / "lora")
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps(meta | {"config": meta["config"] | {"dropout": 0.1}}))
    with pytest.raises(PeftlabError) as raised:
        load_trained(folder, lm=tiny_causal)
    assert str(raised.value) == (
        "The saved lora's settings are not ones this version of peftlab takes (lora has no setting 'dropout'; its "
        "settings are alpha, learning_rate, r, target_modules)."
    )
    (folder / META_FILE).write_text(json.dumps(meta | {"config": meta["config"] | {"r": 0}}))
    with pytest.raises(PeftlabError, match=r"^The saved lora's settings are not ones this version .*\br\b"):
        load_trained(folder, lm=tiny_causal)


def rewritten(source, target, change=None, drop=()):
    """A copy of the zip `source` at `target`, without the members in `drop` and with `change[name](bytes)` applied."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            if name not in drop:
                new.writestr(name, (change or {}).get(name, lambda data: data)(old.read(name)))
    return target


def described(change):
    return {META_FILE: lambda data: json.dumps(change(json.loads(data))).encode()}


def test_a_damaged_or_mismatched_saved_method_is_one_sentence_naming_no_server_folder(tiny_causal, tmp_path):
    """Found by a review, each a raw error (the app called it its own fault): a bit flipped in a download
    (BadZipFile: Bad CRC-32), a zip without its weights (FileNotFoundError naming the server's temporary folder),
    garbled weights (SafetensorError), a head whose description names 3 labels over weights of 2 (RuntimeError), a
    template without its mask (loaded, then failed to classify), "steps": "many" (ValueError), and the model of a
    missing zip ("is not a zip file")."""
    _, trained = trained_method(tiny_causal, "head")
    head = zip_trained(trained, tmp_path / "head.zip")

    damaged = bytearray(head.read_bytes())
    start = damaged.index(b"trainable.safetensors") + 100  # inside the weights' compressed data
    damaged[start : start + 50] = bytes(b ^ 0xFF for b in damaged[start : start + 50])
    (tmp_path / "damaged.zip").write_bytes(damaged)
    with pytest.raises(PeftlabError, match=r"^damaged.zip is damaged \(.+\); save or download it again\.$"):
        load_trained(tmp_path / "damaged.zip", lm=tiny_causal)

    cases = {
        "no weights": ({}, {"trainable.safetensors"}, r"^The saved head's weights do not load on tiny-llama \("),
        "garbled weights": ({"trainable.safetensors": lambda _: b"garbage" * 10}, (), r"weights do not load on"),
        "three labels": (
            described(lambda m: m | {"verbalizer": {"a": ["bad"], "b": ["good"], "c": ["fine"]}}),
            (),
            r"^The saved head's weights do not fit tiny-llama: their names or shapes differ from those its settings "
            r"and its 3 labels build\.$",
        ),
        "no mask": (
            described(lambda m: m | {"template": "Review: {text}"}),
            (),
            r"^The saved method's template or verbalizer is refused \(The template must contain exactly one \{mask\}, "
            r"but it has no \{mask\}\)\.$",
        ),
        "steps": (described(lambda m: m | {"steps": "many"}), (), r"is unreadable \(ValueError: invalid literal"),
    }
    for case, (change, drop, message) in cases.items():
        broken = rewritten(head, tmp_path / f"{case}.zip", change, drop)
        with pytest.raises(PeftlabError, match=message) as raised:
            load_trained(broken, lm=tiny_causal)
        assert "/tmp" not in str(raised.value) and str(tmp_path) not in str(raised.value), case
    with pytest.raises(PeftlabError, match=r"^There is no saved method at '.*missing.zip'\.$"):
        saved_model_name(tmp_path / "missing.zip")


def tampered_adapter_config(data: bytes) -> bytes:
    """An adapter_config.json whose settings would change or stall what PEFT builds, were they read."""
    config = json.loads(data)
    lora = {"target_modules": "x^", "exclude_modules": ".*", "rank_pattern": {"q_proj": 64}, "r": 7}
    return json.dumps(config | (lora if config["peft_type"] == "LORA" else {"num_virtual_tokens": 9})).encode()


@pytest.mark.parametrize(("name", "overrides"), [("lora", {"r": 2}), ("prompt-tuning", {"num_virtual_tokens": 4})])
def test_a_saved_adapter_loads_by_its_method_s_own_settings_never_its_adapter_config(
    tiny_causal, tmp_path, name, overrides
):
    """An uploaded zip's adapter_config.json went to PEFT as it was: PEFT matches a string target_modules against
    every module name as a regular expression, and '(.*.*)*@' held the interpreter lock, every visitor's job with
    it, until the Space was restarted (a security review's finding). Here a pattern that matches nothing, and
    settings that do not fit the weights: the adapter is built from the method's own settings all the same."""
    task, trained = trained_method(tiny_causal, name, **overrides)
    assert_loads_despite_its_adapter_config(trained, task, tmp_path)


def assert_loads_despite_its_adapter_config(trained, task, tmp_path):
    """`trained`, zipped with a tampered adapter_config.json, loads back to the same predictions."""
    path = rewritten(
        zip_trained(trained, tmp_path / "saved.zip"),
        tmp_path / "tampered.zip",
        {"adapter_config.json": tampered_adapter_config},
    )
    loaded = load_trained(path, lm=trained.lm)
    torch.testing.assert_close(loaded.log_probs(task.test), trained.log_probs(task.test), atol=1e-5, rtol=0)


def test_the_classifier_s_lora_loads_by_its_own_settings_never_its_adapter_config(tiny_causal, tmp_path):
    from peftlab.tuning import TrainedMethod

    task, trained = trained_method(tiny_causal, "head")  # for its prompt: the classifier reads the bare fields
    config = method_config("classifier", r=2)
    model, _ = config.build(tiny_causal, trained.prompt)
    assert_loads_despite_its_adapter_config(
        TrainedMethod(config, tiny_causal, trained.prompt, model, 0), task, tmp_path
    )


def test_a_save_stopped_half_way_keeps_the_zip_saved_before(tiny_causal, tmp_path, monkeypatch):
    """A Ctrl-C while a zip was written over an earlier one left a truncated zip in its place (the earlier lost)."""
    _, trained = trained_method(tiny_causal, "head")
    path = zip_trained(trained, tmp_path / "head.zip")
    before = path.read_bytes()

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zip_trained(trained, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["head.zip"]  # no partial left
    monkeypatch.undo()
    (tmp_path / "plain").write_text("")  # a saved zip is as readable as any new file (its temporary file's was 0600)
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode
    with pytest.raises(PeftlabError, match=r"^The folder '.*/no-such' does not exist; create it first\.$"):
        zip_trained(trained, tmp_path / "no-such" / "head.zip")


def test_a_trained_method_scores_no_texts_and_evaluates_only_labelled_ones(tiny_causal):
    """log_probs([]) of a method with a head of its own raised torch.cat's error; evaluate on texts without labels
    raised KeyError 'label'."""
    _, trained = trained_method(tiny_causal, "head")
    assert trained.log_probs([]).shape == (0, 2)
    with pytest.raises(PeftlabError, match=r"^An example has no 'label'; evaluate needs each example's gold label"):
        trained.evaluate([{"text": "fine"}])


def test_a_method_kept_out_of_the_store_names_no_stored_result(tiny_causal, tmp_path):
    """`compare --save-adapters DIR --no-store`: the card said "Stored as result `c88e6d14...`", an id no store had."""
    import argparse

    from peftlab.cli import _as_kept
    from peftlab.tuning import Scored

    _, trained = trained_method(tiny_causal, "head")
    trained.scored = Scored(
        task="easy-sentiment",
        k=4,
        seed=13,
        split="test",
        rows_scored=8,
        rows_in_split=8,
        accuracy=0.75,
        macro_f1=0.7,
        per_class_f1={"negative": 0.7, "positive": 0.7},
        result_id="c88e6d14",
        trainer=None,
    )
    card = lambda method: (save_trained(method, tmp_path / str(id(method))) / "README.md").read_text()  # noqa: E731
    assert "Stored as result `c88e6d14`" in card(_as_kept(argparse.Namespace(store=True), trained))
    kept_out = _as_kept(argparse.Namespace(store=False), trained)
    assert "Stored as result" not in card(kept_out) and "These texts were never trained on." in card(kept_out)
    assert trained.scored.result_id == "c88e6d14"  # the run's own result keeps its id


def test_loading_a_saved_method_leaves_another_thread_s_seeded_numbers_as_they_are(tiny_causal, tmp_path):
    """Rebuilding a saved method draws from torch's global generator (PEFT initialises the adapter it then loads): a
    visitor loading a zip beside another's seeded training changed that training's numbers (a seeded LoRA run gave
    other losses from its second step in 4 of 8 runs). The load now waits for the seeded block instead."""
    import threading
    import time

    from peftlab.seeding import seeded

    zipped = zip_trained(trained_method(tiny_causal, "lora", r=2)[1], tmp_path / "lora.zip")
    first_drawn = threading.Event()

    def seeded_draws() -> torch.Tensor:
        with seeded(13):
            first = torch.rand(4)
            first_drawn.set()
            time.sleep(0.5)  # a load started meanwhile draws now, unless it waits
            return torch.cat([first, torch.rand(4)])

    alone = seeded_draws()
    first_drawn.clear()
    loaded = []
    loader = threading.Thread(target=lambda: first_drawn.wait() and loaded.append(load_trained(zipped, tiny_causal)))
    loader.start()
    beside_a_load = seeded_draws()
    loader.join()
    assert torch.equal(beside_a_load, alone) and len(loaded) == 1
