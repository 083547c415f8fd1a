"""Settings as data: one field helper and one validating base for every config dataclass.

Every setting of peftlab lives in one place, a field of a config dataclass made with `setting(...)`:
its default, help text, the rule its values follow (at least or above a bound, at most one, one of some
choices), its label for people, and the public-mode cap that limits it. The command line's options
(`add_arguments`, `from_arguments`) and the app's inputs (`peftlab.ui.inputs`) are generated from those
fields, so a default is typed once. `Config.__post_init__` checks every field against its rule and
type, then the class's own cross-field rules (`check_settings`), so a bad value fails with one sentence before
any work starts, whether it came from the app, the command line, a JSON file or Python.

After TRL's `*Config` dataclasses with `metadata={"help": ...}` (which `HfArgumentParser` turns into a
command line) and PEFT's configs that validate in `__post_init__`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peftlab.errors import PeftlabError


def setting(
    default: Any,
    help: str,
    *,
    label: str | None = None,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    choices: Sequence | None = None,
    requirement: str | None = None,
    subject: str | None = None,
    cap: str | None = None,
    flag: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field.

    Args:
        default: the working default (tuples for sequences: defaults are shared).
        help: one line for `--help` and the app's info text.
        label: what people call it (the app's label and the messages' subject, both inside the class's
            `subject` when that holds only the label: "SFT {label}"); default: the name with spaces.
        minimum / above / maximum: the value must be >= minimum, > above, <= maximum.
        choices: the allowed values.
        requirement: the rule in words, when the derived one ("at least 1") says too little.
        subject: the message's subject when the class's `subject` template does not fit, e.g.
            "The learning rate of {name}" (formatted with the config's attributes).
        cap: the `peftlab.serving.Caps` field that limits it on a public Space.
        flag: the command-line flag without dashes, when it is not the name with dashes.
        cli: False keeps it off the command line (set through another option or not at all).
    """
    metadata = dict(
        help=help,
        label=label,
        minimum=minimum,
        above=above,
        maximum=maximum,
        choices=tuple(choices) if choices is not None else None,
        requirement=requirement,
        subject=subject,
        cap=cap,
        flag=flag,
        cli=cli,
    )
    return field(default=default, metadata=metadata)


def scored_texts_setting(help: str, label: str = "test texts") -> Any:
    """The number of test texts a job scores, as every config that has one declares it (one default, one cap)."""
    return setting(
        200,
        help + " (fewer than the split: a stratified subset, the same for every method)",
        minimum=1,
        cap="test_texts",
        label=label,
    )


@dataclass
class Config:
    """Base of every settings dataclass: fields made with `setting`, checked on creation, JSON both ways.

    `subject` is how messages name a field: a template with `{label}` ("PPO {label}"), `{Label}` (the label
    capitalised) and any attribute of the config ("{name}: {label}" for a method).
    """

    subject: ClassVar[str] = "{Label}"

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for item in dataclasses.fields(self):
            if item.metadata.get("help") is not None:
                _check_field(self, item, hints[item.name])
        self.check_settings()

    def check_settings(self) -> None:
        """Rules across fields (or beyond one bound); raise a PeftlabError with one sentence."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """The config from `to_dict()`'s output as JSON gives it back (lists back to tuples, nested configs rebuilt),
        or from keyword settings; checked as always. A method's config is named by its method's name in the error.

        Raises:
            PeftlabError: an unknown setting (a TypeError named the class's __init__), or a value its rule refuses.
        """
        hints = typing.get_type_hints(cls)
        known = {item.name for item in dataclasses.fields(cls) if item.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise PeftlabError(
                f"{getattr(cls, 'name', '') or cls.__name__} has no setting {', '.join(map(repr, unknown))}; "
                f"its settings are {', '.join(sorted(known))}."
            )
        return cls(**{name: _from_json_value(value, hints[name]) for name, value in values.items()})

    @classmethod
    def settings(cls) -> list[dataclasses.Field]:
        """The fields made with `setting` (the ones people set), in order."""
        return [item for item in dataclasses.fields(cls) if item.metadata.get("help") is not None]

    def field_subject(self, item: dataclasses.Field) -> str:
        """How messages name the field: its `subject`, else the class's, filled with its label and attributes."""
        label = label_of(item)
        template = item.metadata.get("subject") or self.subject
        return template.format_map(_Attributes(self, label=label, Label=capitalised(label)))


class _Attributes(dict):
    """A format mapping that reads a config's attributes on demand (only those a template names)."""

    def __init__(self, config, **values):
        super().__init__(**values)
        self.config = config

    def __missing__(self, key):
        return getattr(self.config, key)


def label_of(item: dataclasses.Field) -> str:
    return item.metadata.get("label") or item.name.replace("_", " ")


def capitalised(label: str) -> str:
    """The label to start a sentence: first letter upper-cased, unless its first word is a name such as iPET."""
    first = label.split(" ", 1)[0]
    return label if any(c.isupper() for c in first) else label[:1].upper() + label[1:]


def typed_number(value: float) -> str:
    """A number as people typed it: "99999999" (":g" writes 1e+08), "2.5", "-1" (a float -1.0 too)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def counted(number: int, noun: str) -> str:
    """ "1 result", "2 results": the number with its noun (a plain English plural in -s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.5 h', '3.2 days', '61 years': how long, in the unit people think in (99,999,999 SFT
    steps were "about 539270.7 h")."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    days = seconds / 86400
    if days < 365:
        return f"{days:.1f} days"
    return f"{days / 365.25:,.0f} years"


# Seeds go to torch (64 bits), numpy's default_rng (0 or more: a seed of -5 broke iPET) and numpy's legacy seeding
# (32 bits, transformers.set_seed): every seed is a whole number these all take.
MAX_SEED = 2**32 - 1


def seed_setting(default: Any, help: str, **kwargs) -> Any:
    """A `setting` for a seed or a list of seeds: whole numbers from 0 to MAX_SEED (10**20 failed in torch with
    "Overflow when unpacking long long")."""
    return setting(default, help, minimum=0, maximum=MAX_SEED, **kwargs)


def at_least(low: float) -> str:
    """A lower bound in words, as every message says it: "0 or more", "at least 1"."""
    return "0 or more" if low == 0 else f"at least {typed_number(low)}"


def requirement_of(item: dataclasses.Field, kind: type) -> str:
    """The rule of a field in words: "at least 1", "above 0", "one of a, b", "from 0 to 1"."""
    meta = item.metadata
    if meta.get("requirement"):
        return meta["requirement"]
    if meta.get("choices") is not None:
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    number = "a whole number" if kind is int else "a number"
    low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
    if low is not None and high is not None:
        return f"{number} from {typed_number(low)} to {typed_number(high)}"
    if above is not None and high is not None:
        return f"{number} above {typed_number(above)} and at most {typed_number(high)}"
    if low is not None:
        return at_least(low)
    if above is not None:
        return f"above {typed_number(above)}"
    if high is not None:
        return f"at most {typed_number(high)}"
    return number if kind in (int, float) else {str: "text", bool: "true or false"}.get(kind, kind.__name__)


class SettingError(PeftlabError):
    """A setting's value breaks its rule. The message names the setting as the config does; `phrased(name)`
    says the same with another name for it (a command-line flag)."""

    def __init__(self, subject: str, item: dataclasses.Field, requirement: str, value):
        self.item, self.requirement, self.value = item, requirement, value
        super().__init__(self.phrased(subject))

    def phrased(self, subject: str) -> str:
        shown = repr(self.value) if isinstance(self.value, str) else f"{self.value}"
        return f"{subject} must be {self.requirement}, not {shown}."


def _check_field(config: Config, item: dataclasses.Field, hint) -> None:
    value, meta = getattr(config, item.name), item.metadata
    kind = _base_type(hint)
    if value is None and _optional(hint):
        return
    if not _has_type(value, kind):
        raise SettingError(config.field_subject(item), item, _type_words(kind), value)
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise SettingError(config.field_subject(item), item, requirement_of(item, kind), value)
    for entry in value if kind is tuple else [value]:  # a list's bounds hold for each of its entries
        if isinstance(entry, float) and math.isinf(entry):  # a learning rate of inf passed "above 0"
            raise SettingError(config.field_subject(item), item, "a finite number", entry)
        broken = (
            entry != entry  # NaN: every comparison with a bound is False, so "nan" passed a minimum of 0
            or (meta.get("minimum") is not None and entry < meta["minimum"])
            or (meta.get("above") is not None and not entry > meta["above"])
            or (meta.get("maximum") is not None and entry > meta["maximum"])
        )
        if broken:
            requirement = requirement_of(item, _item_type(hint) if kind is tuple else kind)
            if kind is tuple:
                requirement = requirement.replace("a whole number", "whole numbers").replace("a number", "numbers")
            raise SettingError(config.field_subject(item), item, requirement, entry)
    if kind is tuple:  # seeds, methods, K values: a repeat runs the same thing twice and weighs it double in a mean
        repeated = next((entry for i, entry in enumerate(value) if entry in value[:i]), None)
        if repeated is not None:
            raise PeftlabError(f"{config.field_subject(item)} lists {repeated!r} twice; give each once.")


def _optional(hint) -> bool:
    return type(None) in typing.get_args(hint)


def _base_type(hint):
    """int, float, bool, str, tuple or a Config subclass, from a field's annotation (Optional unwrapped)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        return _base_type(args[0])
    origin = typing.get_origin(hint)
    return origin if origin is not None else hint


def _has_type(value, kind) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _type_words(kind) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text", tuple: "a list"}.get(
        kind, f"a {getattr(kind, '__name__', kind)}"
    )


def _from_json_value(value, hint):
    kind = _base_type(hint)
    if isinstance(kind, type) and issubclass(kind, Config) and isinstance(value, dict):
        return kind.from_dict(value)
    if kind is tuple and isinstance(value, list):
        return tuple(value)
    return value


# ---------------------------------------------------------------- the command line, generated from the fields


def flag_of(item: dataclasses.Field, prefix: str = "") -> str:
    return "--" + prefix + (item.metadata.get("flag") or item.name.replace("_", "-"))


def add_arguments(
    parser: argparse.ArgumentParser,
    cls: type[Config],
    prefix: str = "",
    skip: Sequence[str] = (),
    aliases: Sequence[str] = (),
) -> None:
    """One option per setting of `cls` (but `skip`): `--<prefix><name>` with its type, choices, default and help.

    Booleans get `--x/--no-x`; lists are comma-separated text, read by `from_arguments` (so a bad item is
    one sentence naming the option). With `aliases`, a prefixed option also answers to its bare name
    (`--ppo-beta` and `--beta`).
    """
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for item in cls.settings():
        if item.name in skip or not item.metadata.get("cli", True):
            continue
        kind = _base_type(hints[item.name])
        names = [flag_of(item, prefix)] + ([flag_of(item)] if item.name in aliases and prefix else [])
        default = getattr(defaults, item.name)
        options: dict = dict(
            dest=prefix.replace("-", "_") + item.name,
            default=default,
            # a help that says its default in words keeps them alone ("default: a Ray started here (default: None)")
            help=item.metadata["help"] + ("" if "default:" in item.metadata["help"] else " (default: %(default)s)"),
        )
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is tuple:
            options.update(type=str, default=",".join(map(str, default)), metavar="A,B")
        else:
            options["type"] = kind
            if item.metadata.get("choices") is not None:
                options["choices"] = list(item.metadata["choices"])
        if len(names) > 1:
            options["action"] = _one_value(options.get("action", "store"))
        parser.add_argument(*names, **options)


def _one_value(action) -> type[argparse.Action]:
    """`action` (an argparse action class, or "store") refusing a second name of its option with another value:
    `--ppo-beta 0.1 --beta 0.2` set β to 0.2 without a word. One name given twice is argparse's as ever, the last
    wins."""

    class Store(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            setattr(namespace, self.dest, values)

    class OneValue(Store if action == "store" else action):
        def __call__(self, parser, namespace, values, option_string=None):
            given = vars(namespace).setdefault("_given_as", {})  # dest -> (the name it came under, its value)
            super().__call__(parser, namespace, values, option_string)
            value = getattr(namespace, self.dest)
            name = option_string.replace("--no-", "--")  # --adaptive-kl and --no-adaptive-kl are one name
            before = given.get(self.dest)
            if before and before[0] != name and before[1] != value:
                parser.error(f"{before[0]} and {name} are one setting; give it once, not {before[1]} and {value}")
            given[self.dest] = (name, value)

    return OneValue


def from_arguments(cls: type[Config], args: argparse.Namespace, prefix: str = "", **values) -> Config:
    """The config from the options `add_arguments` made (and `values` for the skipped or nested ones).

    Raises:
        PeftlabError: a list option with an item of the wrong kind, or any value the config refuses.
    """
    hints = typing.get_type_hints(cls)
    dest = prefix.replace("-", "_")
    for item in cls.settings():
        if dest + item.name in vars(args) and item.name not in values:
            value = getattr(args, dest + item.name)
            if _base_type(hints[item.name]) is tuple and isinstance(value, str):
                value = tuple(parse_list(value, _item_type(hints[item.name]), flag_of(item, prefix)))
            values[item.name] = value
    try:
        return cls(**values)
    except SettingError as exc:  # on the command line a setting is called by its flag
        if any(exc.item is item for item in cls.settings()) and exc.item.metadata.get("cli", True):
            raise PeftlabError(exc.phrased(flag_of(exc.item, prefix))) from None
        raise


def parse_list(text: str, kind: type, what: str) -> list:
    """ "13, 21,42" -> [13, 21, 42] in `kind` (int, float or str); anything else is one clear error naming `what`.

    Raises:
        PeftlabError: an item that is not a `kind`.
    """
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    try:
        return [kind(part) for part in parts]
    except ValueError:
        words = {int: "whole numbers", float: "numbers"}.get(kind, "values")
        raise PeftlabError(f"{what} must be comma-separated {words}, not {text!r}.") from None


def _item_type(hint) -> type:
    """The item type of a tuple annotation (`tuple[int, ...]` -> int)."""
    args = [a for a in typing.get_args(_unoptional(hint)) if a is not Ellipsis]
    return args[0] if args else str


def _unoptional(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and args else hint
