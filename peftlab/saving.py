"""Save a trained method as one zip a person can download, and load such a zip back to classify new text.

The zip holds the method's weights (PEFT's own `save_pretrained` files for PEFT methods, a safetensors
file of the trainable weights otherwise), `peftlab_method.json`: the method and its settings, the
model it was trained on, the template, the verbalizer and, once scored, its task, K, seed and test result;
and a model card (README.md) saying the same in words, with how to load it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from peftlab.errors import PeftlabError, out_of_memory, parse_json
from peftlab.methods import METHODS, WEIGHTS_FILE, MethodConfig
from peftlab.models import LM, load_lm, model_card
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.seeding import drawing
from peftlab.stats import proportion
from peftlab.tuning import Scored, TrainedMethod

META_FILE = "peftlab_method.json"
MAX_UNZIPPED_BYTES = 4 * 2**30  # a full fine-tune of a 1B model in fp32; a zip that unpacks to more is refused
WEIGHT_FILES = frozenset({WEIGHTS_FILE, "adapter_model.safetensors"})
# Every file a saved method may hold: weights only as safetensors (never pickles such as .bin or .pt).
SAVED_FILES = WEIGHT_FILES | {META_FILE, "adapter_config.json", "README.md"}
# peftlab_method.json, adapter_config.json and README.md weigh a few kilobytes; one of 4 GB of spaces, zipped to 4 MB,
# was read whole into memory twice (a security review's finding)
MAX_DESCRIPTION_BYTES = 2**20


def save_trained(trained: TrainedMethod, folder: str | Path) -> Path:
    """Write the trained method's weights and description into `folder` (created if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trained_card(trained).save(folder / "README.md")  # first: PEFT's save adds its metadata (`save_adapter`)
    trained.config.save(trained.model, folder)
    meta = {
        "method": trained.config.name,
        "config": dataclasses.asdict(trained.config),
        "model": trained.lm.name,
        "template": trained.prompt.template.text,
        "verbalizer": {label: list(words) for label, words in trained.prompt.verbalizer.words.items()},
        "trainable_params": trained.trainable_params,
        "steps": trained.steps_done,
        "scored": dataclasses.asdict(trained.scored) if trained.scored else {},
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return folder


def trained_card(trained: TrainedMethod):
    """The saved method's Hugging Face model card (`huggingface_hub.ModelCard`): the base model and tags as metadata,
    then in words what the method is, what it was trained on and scored (`TrainedMethod.scored`), its template and
    verbalizer, its settings, and how to load it."""
    config, scored, labels = trained.config, trained.scored, list(trained.prompt.verbalizer.words)
    trained_on = (
        f" on {scored.task} with K={scored.k} examples per class, seed {scored.seed}"
        if scored is not None and scored.k is not None
        else ""
    )
    pet = (scored.trainer or {}).get("pet") if scored is not None else None  # PET's distilled classifier
    lines = [
        f"# {'PET ' if pet else ''}{config.name}{trained_on}",
        "",
        f"The {config.name} weights of `{trained.lm.hub_name}`, trained with peftlab{trained_on} "
        f"({trained.steps_done} steps, {trained.trainable_params:,} trained parameters), to classify text as "
        f"{' or '.join(labels)}."
        # its K examples trained the pattern models; it trained on their ensemble's soft labels
        + (
            " It is PET's distilled classifier: it learnt the soft labels that the ensemble of "
            f"{len(scored.trainer['patterns']['templates'])} pattern models, each trained on those examples, gave "
            f"{pet['unlabelled']:,} unlabelled texts (Schick & Schütze 2021); its settings below are the whole PET "
            "run's."
            if pet
            else ""
        )
        + (f" {trained.lm.weights_note}" if trained.lm.weights_note else ""),
        "",
    ]
    if scored is not None:
        if scored.split == "all":
            texts = f"{scored.rows_scored} of the {scored.rows_in_split} rows"
        else:
            texts = f"{scored.rows_scored} of the {scored.rows_in_split} {scored.split} texts"
        per_class = ", ".join(f"{label} {f1:.3f}" for label, f1 in scored.per_class_f1.items())
        # a score on 20 texts read as firmly as one on 1000: its interval says how far it may be off
        share = proportion(round(scored.accuracy * scored.rows_scored), scored.rows_scored)
        lines += [
            "## Test result",
            "",
            f"Accuracy {scored.accuracy:.1%} (95 % interval {share.low:.1%} to {share.high:.1%}) and macro-F1 "
            f"{scored.macro_f1:.3f} on {texts} of {scored.task}; F1 per class: {per_class}. These texts were "
            "never trained on."
            # a run kept out of the store (`--no-store`) has no row to look up
            + (
                f" Stored as result `{scored.result_id}` in the results store of the machine that trained it, beside "
                "the other methods scored on the same texts."
                if scored.result_id
                else ""
            ),
            "",
        ]
    # a classifier without its pattern reads the bare fields: "as the template gives it" said otherwise
    bare = getattr(config, "pattern", True) is False
    reads = "the template's fields, one per line" if bare else "the text as the template gives it"
    how = (
        "The text is put into the template, and the label whose verbalizer words the model finds likeliest at the "
        "mask wins."
        if config.prompt_based
        else f"A classification head of its own scores the labels, reading {reads}; the verbalizer only names the "
        "labels, in the head's order."
    )
    words = "; ".join(f"{label}: {', '.join(w)}" for label, w in trained.prompt.verbalizer.words.items())
    settings = {"method": config.name, **dataclasses.asdict(config), "trainer": scored and scored.trainer}
    lines += [
        "## How it classifies",
        "",
        how,
        "",
        f"- Template: `{trained.prompt.template.text!r}`",
        f"- Verbalizer: {words}",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(settings, indent=1),
        "```",
        "",
        "## Use it",
        "",
        "```python",
        "from peftlab.saving import load_trained",
        "",
        'method = load_trained("this-file.zip")  # or the folder it was unzipped into',
        'probabilities = method.log_probs([{"text": "A gripping, beautifully acted film."}]).exp()  # (texts, labels)',
        "```",
        "",
    ]
    return model_card(trained.lm.hub_name, ["peftlab", config.name, "text-classification"], lines)


def zip_trained(trained: TrainedMethod, zip_path: str | Path) -> Path:
    """The saved method as one zip file (what the app offers for download)."""
    return zip_saved(lambda folder: save_trained(trained, folder), zip_path)


def saved_files(save) -> dict[str, bytes]:
    """What `save(folder)` writes into an empty temporary folder, as {file name: bytes}: saved weights held in memory
    (to pickle them, or to keep a PEFT adapter's files once the adapter is merged away)."""
    with tempfile.TemporaryDirectory() as folder:
        save(Path(folder))
        return {file.name: file.read_bytes() for file in Path(folder).iterdir() if file.is_file()}


def write_files(files: dict[str, bytes], folder: Path) -> Path:
    """Write `saved_files`' {file name: bytes} into `folder` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@contextlib.contextmanager
def folder_with(files: dict[str, bytes]) -> Iterator[Path]:
    """A temporary folder holding `files` ({file name: bytes}) for the block, for loaders that read a folder."""
    with tempfile.TemporaryDirectory() as folder:
        yield write_files(files, Path(folder))


def zip_saved(save, zip_path: str | Path) -> Path:
    """Call `save(folder)` on a temporary folder and pack what it writes into one zip file (its subfolders too: a
    reward model's holds the SFT adapter it reads). The zip is written beside `zip_path` and renamed onto it once
    whole: a save stopped half-way (Ctrl-C, a full disk) left a truncated zip in place of the one saved before.

    Raises:
        PeftlabError: the folder of `zip_path` does not exist.
    """
    zip_path = Path(zip_path)
    if not zip_path.parent.is_dir():  # told as the temporary file's name
        raise PeftlabError(f"The folder {str(zip_path.parent)!r} does not exist; create it first.")
    # a name of its own, opened as any new file is (a temporary file's 0600 made saved zips unreadable to others)
    partial = zip_path.with_name(f".{zip_path.name}.{uuid.uuid4().hex[:12]}.partial")
    with tempfile.TemporaryDirectory() as folder:
        save(Path(folder))
        try:
            with open(partial, "xb") as out, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                for file in sorted(path for path in Path(folder).rglob("*") if path.is_file()):
                    archive.write(file, file.relative_to(folder).as_posix())
            os.replace(partial, zip_path)
        except BaseException:  # a stop, a full disk, a zip_path that is a folder: nothing half-written stays
            partial.unlink(missing_ok=True)
            raise
    return zip_path


def load_trained(path: str | Path, lm: LM | None = None) -> TrainedMethod:
    """A saved method (zip or folder) ready to classify; `lm` defaults to loading the model it was trained on.

    A zip is checked before anything in it is read: flat, only the files a saved method has (weights as
    safetensors, never pickles), and at most MAX_UNZIPPED_BYTES unpacked.

    Raises:
        PeftlabError: no such file, not a saved method, files it must not hold, or weights that do not fit `lm`.
    """
    path = _existing(path)
    if path.is_dir():
        return _load_folder(path, lm)
    with tempfile.TemporaryDirectory() as folder:
        _unpacked(path, folder, model=lm)
        return _load_folder(Path(folder), lm, path.name)


def saved_model_name(path: str | Path) -> str:
    """The model a saved method (zip or folder) was trained on, read without loading anything.

    Raises:
        PeftlabError: as `load_trained`.
    """
    path = _existing(path)
    if path.is_dir():
        return _read_meta(path)["model"]
    with tempfile.TemporaryDirectory() as folder:
        _unpacked(path, folder, META_FILE)
        return _read_meta(Path(folder))["model"]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise PeftlabError(f"There is no saved method at {str(path)!r}.")
    return path


def _unpacked(path: Path, folder: str, *members: str, model: LM | None = None) -> None:
    """Unpack the checked zip at `path` (only `members`, when given) into `folder`, its weights no heavier than
    `model`'s own in fp32 when given; a zip damaged in its data (a download cut short, a bit flipped) is one
    sentence, where zipfile raised its own error half-way."""
    try:
        with _checked_archive(path) as archive:
            if model is not None:
                _check_weight_size(path, archive, model)
            archive.extractall(folder, members or None)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise PeftlabError(f"{path.name} is damaged ({exc}); save or download it again.") from None


def _checked_archive(path: Path) -> zipfile.ZipFile:
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise PeftlabError(  # read by the app, the CLI and notebooks: said in words that fit all three
            f"{path.name} is not a zip file; give a zip of a trained method (the app's Download, --save-adapters or "
            "pet --save)."
        )
    archive = zipfile.ZipFile(path)
    members = archive.infolist()
    for member in members:
        if "/" in member.filename or "\\" in member.filename or member.filename.startswith("."):
            raise PeftlabError(f"{path.name} is not a saved peftlab method: it holds the path {member.filename!r}.")
    if META_FILE not in archive.namelist():
        raise PeftlabError(f"{path.name} is not a saved peftlab method: it has no {META_FILE}.")
    for member in members:
        if member.filename not in SAVED_FILES:
            raise PeftlabError(
                f"{path.name} is not a saved peftlab method: it holds {member.filename!r}, and only "
                f"{', '.join(sorted(SAVED_FILES))} are read (weights as safetensors only)."
            )
    if sum(member.file_size for member in members) > MAX_UNZIPPED_BYTES:
        raise PeftlabError(
            f"{path.name} unpacks to more than {MAX_UNZIPPED_BYTES / 2**30:g} GB, more than any saved method."
        )
    for member in members:
        if member.filename not in WEIGHT_FILES and member.file_size > MAX_DESCRIPTION_BYTES:
            raise PeftlabError(
                f"{path.name} is not a saved peftlab method: its {member.filename} unpacks to "
                f"{member.file_size / 2**20:,.0f} MB, where a saved method's weighs a few kilobytes."
            )
    return archive


def _check_weight_size(path: Path, archive: zipfile.ZipFile, lm: LM) -> None:
    """Refuse weights heavier than all of `lm`'s in fp32 (with room for a classifier's head), more than any method
    trained on it saves: 4 GB of zeros zip to 4 MB, under a public Space's upload limit, and were read into memory
    whole before their shapes were compared with the model's."""
    weights = sum(member.file_size for member in archive.infolist() if member.filename in WEIGHT_FILES)
    most = 4 * lm.num_parameters * 1.25 + 2**20
    if weights > most:
        raise PeftlabError(
            f"{path.name}'s weights unpack to {weights / 2**20:,.0f} MB, more than all of {lm.name}'s weights in fp32 "
            f"({4 * lm.num_parameters / 2**20:,.0f} MB): no method trained on it saves that much."
        )


def _read_meta(folder: Path) -> dict:
    meta_file = folder / META_FILE
    if not meta_file.is_file():
        raise PeftlabError(f"{folder.name or folder} is not a saved peftlab method: it has no {META_FILE}.")
    try:
        meta = parse_json(meta_file.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta["model"], str):
            raise TypeError("the description is not an object naming its model")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise _unreadable_meta(exc) from exc
    return meta


def _unreadable_meta(exc: Exception) -> PeftlabError:
    return PeftlabError(f"The saved method's {META_FILE} is unreadable ({exc.__class__.__name__}: {exc}).")


def _load_folder(folder: Path, lm: LM | None, name: str | None = None) -> TrainedMethod:
    """The method saved in `folder` (unpacked from the zip called `name`, when it was one)."""
    meta = _read_meta(folder)
    try:
        config = _config_from(meta["method"], meta["config"])
        try:
            verbalizer = Verbalizer.parse(meta["verbalizer"], list(meta["verbalizer"]))
            template = Template(meta["template"])
            # checked as a typed template is (one {mask}, a field): one without a mask loaded, then failed to classify
            prompt = config.prompt_for(Prompt(Template.parse(template.text, template.fields), verbalizer))
        except PeftlabError as exc:  # said of the file: no one typed it
            raise PeftlabError(
                f"The saved method's template or verbalizer is refused ({str(exc).rstrip('.')})."
            ) from None
        model_name = meta["model"]
        trainable_params, steps_done = int(meta.get("trainable_params", 0)), int(meta.get("steps", 0))
        scored = meta.get("scored") or None
        if scored is not None:
            if not isinstance(scored, dict) or set(scored) != {f.name for f in dataclasses.fields(Scored)}:
                raise TypeError("its test result is not the one a saved method holds")
            scored = Scored(**scored)
    except PeftlabError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # "steps": "many" is a ValueError
        raise _unreadable_meta(exc) from exc
    lm = lm if lm is not None else load_lm(model_name, dtype="fp32")
    if lm.name != model_name:
        raise PeftlabError(f"This {config.name} was trained on {model_name}; load it with that model, not {lm.name}.")
    try:
        with drawing():
            model = config.load(lm, prompt, folder)
    except Exception as exc:  # weights damaged or missing: safetensors, PEFT and torch each raise their own error
        if isinstance(exc, PeftlabError) or out_of_memory(exc):  # the machine's fault is not the file's
            raise
        detail = str(exc).replace(str(folder), name or str(folder))  # not the server's temporary folder
        raise PeftlabError(
            f"The saved {config.name}'s weights do not load on {lm.name} ({type(exc).__name__}: {detail})."
        ) from exc  # kept for --debug's traceback: a fault of the app's own would read as damaged weights
    return TrainedMethod(config, lm, prompt, model, trainable_params, steps_done=steps_done, scored=scored)


def _config_from(name: str, fields: dict) -> MethodConfig:
    if name not in METHODS:
        raise PeftlabError(
            f"The saved method {name!r} is not one this version of peftlab knows ({', '.join(METHODS)})."
        )
    try:
        return METHODS[name].from_dict(fields)
    except PeftlabError as exc:  # saved by another version of peftlab, or edited by hand
        raise PeftlabError(
            f"The saved {name}'s settings are not ones this version of peftlab takes ({str(exc).rstrip('.')})."
        ) from None
