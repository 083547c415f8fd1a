"""The app's inputs, built from config fields, and read back into configs.

`config_input(cls, name)` makes the input of one setting from its field (`peftlab.config.setting`): the
label, the default, the range (capped on a public Space, which it then says), the choices and the help
text, so the app and the command line never disagree on a default. A tab gathers its inputs by name in
a dict and passes it as an event's `inputs_kwargs`; its handler receives them as keyword arguments and
turns them into configs with `config_from_form`, whose messages call a setting by the input's label.
"""

from __future__ import annotations

import dataclasses
import string
import typing

import gradio as gr

from peftlab.config import (
    Config,
    SettingError,
    _base_type,
    _item_type,
    _optional,
    at_least,
    capitalised,
    label_of,
    parse_list,
    requirement_of,
    typed_number,
)
from peftlab.errors import PeftlabError
from peftlab.serving import current_caps

CREATED: list[tuple[type[Config], str, gr.components.Component]] = []  # every input made here (for the defaults test)


def named_number(*args, **kwargs) -> gr.Number:
    """A gr.Number whose out-of-range message names it (`named_bounds`)."""
    return named_bounds(gr.Number(*args, **kwargs))


def named_bounds(component: gr.Number | gr.Slider) -> gr.Number | gr.Slider:
    """`component` with an out-of-range message that names it (`out_of_range`), where gradio's own says only "Value
    0 is less than minimum value 1."; a whole-number box refuses 2.5 instead of rounding it. (Wrapped, not
    subclassed: gradio writes a .pyi stub beside the module of every Component subclass.)"""
    preprocess = component.preprocess

    def named_preprocess(payload):
        if (sentence := out_of_range(component, payload)) is not None:
            raise gr.Error(sentence, print_exception=False)
        return preprocess(payload)

    component.preprocess = named_preprocess
    component.named_bounds = True  # for `is_bounded`
    return component


def is_bounded(component) -> bool:
    """Whether `component` is a box made by `named_bounds`, whose out-of-range sentence `out_of_range` gives."""
    return getattr(component, "named_bounds", False)


def out_of_range(component: gr.Number | gr.Slider, payload) -> str | None:
    """The sentence refusing the value `payload` of a box (as the browser sent it) in the words the library uses
    ("Steps must be at least 1, not 0."): a fraction in a whole-number box, a value below its minimum or above its
    maximum; None for a value it takes, or none."""
    if not isinstance(payload, (int, float)) or isinstance(payload, bool):
        return None
    typed = typed_number(payload)
    if getattr(component, "precision", None) == 0 and payload != int(payload):  # gradio would round 2.5 to 2
        return f"{component.label} must be a whole number, not {typed}."
    if component.minimum is not None and payload < component.minimum:
        return f"{component.label} must be {at_least(component.minimum)}, not {typed}."
    if component.maximum is not None and payload > component.maximum:
        return f"{component.label} must be at most {typed_number(component.maximum)}, not {typed}."
    return None


def ui_label(cls: type[Config], item: dataclasses.Field) -> str:
    """What the app calls a setting: its label inside its class's subject where that names nothing but the label
    ("SFT {label}" makes "SFT steps"), so the four "Steps" boxes of the RLHF tab say whose steps they count, and
    their messages say it too; otherwise its label alone."""
    template = item.metadata.get("subject") or cls.subject
    placeholders = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    if placeholders and placeholders <= {"label", "Label"}:
        return capitalised(cls().field_subject(item))
    return capitalised(label_of(item))


def config_input(cls: type[Config], name: str, component: type | None = None, **options) -> gr.components.Component:
    """The input of setting `name` of `cls`: a radio for choices, a checkbox for flags, a number, or text (lists
    comma-separated); `component` and `options` override what the field does not say (a slider, its range).

    Raises:
        TypeError: a number setting whose default is None, which gradio's number box would show and send as 0.
    """
    item = _field(cls, name)
    hint = typing.get_type_hints(cls)[name]
    meta, kind = item.metadata, _base_type(hint)
    caps = current_caps()
    cap_note = caps.note(meta["cap"]) if meta["cap"] else ""
    # an emptied number box sends None, which an optional count (the texts a job scores) reads as all of them
    empty_note = "empty: all of them" if _optional(hint) and kind in (int, float) else ""
    kwargs: dict = dict(label=ui_label(cls, item), info="; ".join(p for p in (meta["help"], empty_note, cap_note) if p))
    if component is None:
        component = (
            gr.Radio
            if meta["choices"] is not None
            else gr.Checkbox
            if kind is bool
            else named_number
            if kind in (int, float)
            else gr.Textbox
        )
    if meta["choices"] is not None and component in (gr.Radio, gr.Dropdown):
        kwargs["choices"] = list(meta["choices"])
    default = getattr(cls(), name)
    if component in (gr.Number, named_number):
        if default is None:
            # gradio's number box draws None as 0 and sends 0 back, placeholder or not (gradio issue 6728): "iPET
            # generations", once None under a minimum of 1, made Run PET fail on the untouched tab. Say "off" with 0.
            raise TypeError(f"{cls.__name__}.{name} defaults to None, which a gradio number box cannot show")
        limits = [v for v in (meta["maximum"], getattr(caps, meta["cap"]) if meta["cap"] else None) if v is not None]
        kwargs.update(precision=0 if kind is int else None, minimum=meta["minimum"], maximum=min(limits, default=None))
        if kind is float:  # the browser's default step of 1 marks a learning rate of 5e-05 invalid (a red box)
            kwargs["step"] = "any"
    if kind is tuple:
        default = list(default) if component is gr.CheckboxGroup else ",".join(map(str, default))
    kwargs.update(options)
    if kind in (int, float) and None not in (default, kwargs.get("maximum")) and default > kwargs["maximum"]:
        default = kwargs["maximum"]  # a public Space's cap below the library's default: the defaults must run there
    created = component(value=default, **kwargs)
    if isinstance(created, gr.Slider):  # a slider's box takes typed numbers too
        named_bounds(created)
    CREATED.append((cls, name, created))
    return created


def config_from_form(cls: type[Config], form: dict, prefix: str = "", **values) -> Config:
    """The config from a form's values (its inputs named `prefix + setting`), plus `values` for the rest; on a
    public Space each value is checked against its field's cap.

    Raises:
        PeftlabError: a value the config refuses, an empty number box, or a cap exceeded, in one sentence that calls
            the setting by its input's label.
    """
    hints, caps = typing.get_type_hints(cls), current_caps()
    for item in cls.settings():
        key = prefix + item.name
        if key not in form or item.name in values:
            continue
        value, kind = form[key], _base_type(hints[item.name])
        if value is None and type(None) not in typing.get_args(hints[item.name]):  # an emptied number box
            raise PeftlabError(f"{ui_label(cls, item)} is empty; it must be {requirement_of(item, kind)}.")
        if kind is tuple:
            value = tuple(
                parse_list(value, _item_type(hints[item.name]), ui_label(cls, item))
                if isinstance(value, str)
                else value or ()
            )
        elif kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)  # a number box may hand back 30.0
        if item.metadata["cap"] and value not in (None, ()):
            caps.check(item.metadata["cap"], max(value) if kind is tuple else value, ui_label(cls, item))
        values[item.name] = value
    try:
        return cls(**values)
    except SettingError as exc:  # the message calls the setting what the app calls it
        if any(exc.item is item for item in cls.settings()):
            raise PeftlabError(exc.phrased(ui_label(cls, exc.item))) from None
        raise


def _field(cls: type[Config], name: str) -> dataclasses.Field:
    for item in cls.settings():
        if item.name == name:
            return item
    raise KeyError(f"{cls.__name__} has no setting {name!r}")
