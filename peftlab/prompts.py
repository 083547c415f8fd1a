"""Templates and verbalizers: parse, validate, render, and turn examples into token-level queries.

A `Prompt` is where label words meet logits. It turns an example into `Query` objects: token ids
plus the positions whose output distribution scores each label word. Cloze scoring, and later
AutoPrompt and soft-prompt training, all read label-word scores through these queries.

Choices, documented once here:
- Spaces: the label word takes the place of `{mask}` the way a BPE tokenizer sees a word inside a
  sentence. Unless the mask starts the text or a line, the word gets one leading space, and spaces
  typed before `{mask}` are folded into it: `Sentiment:{mask}` and `Sentiment: {mask}` both score
  " positive". Calibration's empty content-free input spells the words as a real text would have them.
- Multi-token label words are scored as whole words: the sum of the log-probabilities of all their
  pieces (a causal LM reads them one after another; a masked LM gets one mask per piece and scores
  each piece at its own mask). Nothing is truncated to the first piece.
- For a causal LM, text after `{mask}` is scored too: the label word and the rest of the template
  are the continuation, so labels compare the log-likelihood of the whole filled sequence (the part
  before the mask is identical for every label and drops out).
- Long inputs: the example's fields are cut, never the template, as LM-BFF truncates its inputs, for
  masked and causal LMs alike and wherever `{text}` sits. A field is cut on its side away from the mask
  (a field before the mask keeps its end, one after it keeps its start), the longest field first, until
  every query fits the model's input minus the positions virtual tokens take (`reserved_positions`).
  Demonstrations in context that still do not fit lose their start.
"""

from __future__ import annotations

import difflib
import functools
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from peftlab.errors import PeftlabError, json_problem, parse_json
from peftlab.tasks import EMBEDDED_TASKS

MASK_FIELD = "mask"
TOKENIZER_MARKS = ("Ġ", "▁", "##")  # word-start and continuation marks of BPE, SentencePiece and WordPiece vocabularies
TRIGGER = "[T]"  # a trigger slot in an AutoPrompt template
PART_OF_A_CHARACTER = " (part of a character)"  # after the bytes of a token that holds only some of one (`token_text`)
MIN_INPUT_TOKENS = 16  # what virtual tokens or demonstrations leave at least of a model's input for the text
_FIELD = re.compile(r"\{(\w*)\}")
_UNCLOSED = re.compile(r"\{(\w+)(?![\w}])")  # "{text" not followed by "}"
_FORMATTED = re.compile(r"\{(\w+)([!:.\[][^{}]*)\}")  # "{text!r}", "{text:>10}", "{text.upper}", "{text[0]}"
# "{{mask}}", "{{ text }}": a field as Jinja, promptsource and Mustache write it (or Python's escaped braces)
_DOUBLED = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _field_hint(unknown: Sequence[str], fields: Sequence[str]) -> str:
    """What an unknown field most likely meant: a field spelt nearly so ("{txet}"), else, beside a text field, the
    renamed text column (`--text-column review` and "{review}" was told only "available: {text}")."""
    close = [match for name in unknown for match in difflib.get_close_matches(name, fields, n=1)]
    if close:
        return f" Did you mean {{{close[0]}}}?"
    return " The column chosen as the text is {text}, whatever its name in the file." if "text" in fields else ""


@dataclass(frozen=True)
class Template:
    """A prompt template such as `Review: {text}\\nSentiment:{mask}`."""

    text: str

    @classmethod
    def parse(cls, text: str, fields: Sequence[str]) -> Template:
        """Validate against the task's columns: exactly one {mask}, only known {column}s, and at least one of them.

        Raises:
            PeftlabError: an empty template, no or several {mask}, a column the task lacks, or no column at all; a
                field in Python's format syntax ({text!r}) or in doubled braces ({{text}}).
        """
        if isinstance(fields, str):  # one column's name, not its letters
            fields = [fields]
        if not text or not text.strip():
            raise PeftlabError("The template is empty; write one such as 'Review: {text} Sentiment:{mask}'.")
        doubled = [m for m in _DOUBLED.finditer(text) if m[1] == MASK_FIELD or m[1] in fields]
        if doubled:  # else "Just {{mask}}!" asked for the word after "Just {", and "{{text}}" showed "{a great film}"
            name = doubled[0][1]
            raise PeftlabError(
                f"The template has '{doubled[0][0]}'; a field takes single braces: write {{{name}}} (for braces "
                f"around it, with a space inside them: {{ {{{name}}} }})."
            )
        if formatted := _FORMATTED.search(text):  # Python's format syntax: it was told its brace was left open
            raise PeftlabError(
                f"The template has '{formatted[0]}'; a field is its name alone, with no conversion, format or "
                f"index after it: write {{{formatted[1]}}}."
            )
        if unclosed := _UNCLOSED.search(text):  # else "{text Sentiment:{mask}" was told it never uses the input
            raise PeftlabError(f"The template has '{{{unclosed[1]}' without its closing '}}'; write {{{unclosed[1]}}}.")
        names = _FIELD.findall(text)
        masks = names.count(MASK_FIELD)
        if masks != 1:
            found = "no {mask}" if masks == 0 else f"{masks} {{mask}} slots"
            raise PeftlabError(f"The template must contain exactly one {{mask}}, but it has {found}.")
        unknown = sorted({n for n in names if n != MASK_FIELD and n not in fields})
        if unknown:
            raise PeftlabError(
                f"The template uses {', '.join('{' + n + '}' for n in unknown)}, which the task lacks; "
                f"available: {', '.join('{' + f + '}' for f in fields)} and {{mask}}.{_field_hint(unknown, fields)}"
            )
        if fields and not set(names) & set(fields):  # every text would get the same prediction ("{text {mask}")
            raise PeftlabError(
                f"The template never uses the input; write {' or '.join('{' + f + '}' for f in fields)} where the "
                "text goes, as in 'Review: {text} Sentiment:{mask}'."
            )
        return cls(text)

    @property
    def fields(self) -> list[str]:
        """The columns the template names, in order of first use ({mask} is not one)."""
        return [name for name in dict.fromkeys(_FIELD.findall(self.text)) if name != MASK_FIELD]

    def input_text(self, example: dict) -> str:
        """The example's fields this template names, one per line, without the template's own words (what a
        classifier without a pattern reads)."""
        return "\n".join(str(example[name]) for name in self.fields)

    def render(self, example: dict, fill: str | None = None) -> tuple[str, str]:
        """The text before and after the mask, with every {column} replaced by the example's value.

        `fill`, when given, replaces every column (content-free inputs for calibration).
        """

        def value(match: re.Match) -> str:
            return fill if fill is not None else str(example[match.group(1)])

        before, after = self.text.split("{" + MASK_FIELD + "}")  # split first: texts may hold any character
        before, after = _FIELD.sub(value, before), _FIELD.sub(value, after)
        return before, after


# The longest text a person may type to classify: a long article is 20,000 characters, and the models read far fewer
# tokens; tokenising 240,000 typed characters held one of the app's light slots for 12 s, which every visitor shares.
MAX_TYPED_CHARACTERS = 50_000


def typed_example(text: str, fields: Sequence[str]) -> dict:
    """The example a person's typed text stands for, to classify it: `{column: value}` for each of `fields` (the
    columns the template names, in order) and label 0. With one column the text is its value. A template reading
    several columns (a film's name and its review) takes one line per column, "column: value"; a line naming no
    column goes on with the value above (a review of several lines). Copying the text into every column instead had
    the model read a review as the film's name as well, without a word on screen.

    Raises:
        PeftlabError: an empty text, one longer than MAX_TYPED_CHARACTERS, or a template reading several columns and a
            text without a line for each.
    """
    if not text or not text.strip():
        raise PeftlabError("Type a text to classify.")
    if len(text) > MAX_TYPED_CHARACTERS:
        raise PeftlabError(
            f"The text has {len(text):,} characters; classify at most {MAX_TYPED_CHARACTERS:,} at a time (the model "
            "reads far fewer)."
        )
    if len(fields) == 1:
        return {fields[0]: text, "label": 0}
    values: dict[str, str] = {}
    column = None
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() in fields and name.strip() not in values:
            column = name.strip()
            values[column] = value.strip()
        elif column is not None:
            values[column] += "\n" + line
        elif line.strip():
            column = ""  # words before the first column's line: no column holds them
            values[column] = line
    if "" in values or any(not values.get(name, "").strip() for name in fields):
        lines = " then ".join(f"'{name}: ...'" for name in fields)
        raise PeftlabError(
            f"The template reads {len(fields)} columns ({', '.join(fields)}): type one line for each, {lines} "
            "(Shift+Enter starts a line in the app's box)."
        )
    return {name: values[name] for name in fields} | {"label": 0}


def token_text(tokenizer, token_id: int) -> str:
    """One token as a person reads it: its text, with characters that print nothing escaped ('\\n'), or, for a token
    holding only some of a character's UTF-8 bytes, those bytes written out, e.g. ' \\xf0\\x9f (part of a
    character)'. Decoded alone, every such token reads '�': the Cloze tab's top tokens after an emoji listed two
    different tokens as '�' twice, and a newline as an empty cell."""
    text = tokenizer.decode([token_id])
    if "\ufffd" in text:
        piece = tokenizer.convert_ids_to_tokens(token_id)
        raw = _token_bytes(piece)
        if raw is None:  # a vocabulary that keeps no bytes: its own spelling of the token
            return piece
        try:
            text = raw.decode("utf-8")  # whole characters after all ('�' itself)
        except UnicodeDecodeError:
            return _printable(raw.decode("utf-8", "backslashreplace")) + PART_OF_A_CHARACTER
    return _printable(text)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _token_bytes(piece: str) -> bytes | None:
    """The bytes a vocabulary entry stands for: a SentencePiece byte-fallback piece ('<0xF0>') or a byte-level BPE
    piece (GPT-2's printable stand-ins for bytes, 'Ġð' for b' \\xf0'); None for any other."""
    if fallback := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece):
        return bytes.fromhex(fallback[1])
    byte_of = _byte_level_bytes()
    return bytes(byte_of[c] for c in piece) if all(c in byte_of for c in piece) else None


@functools.cache
def _byte_level_bytes() -> dict[str, int]:
    """Byte-level BPE's table from its printable stand-ins back to bytes."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


@dataclass(frozen=True)
class Verbalizer:
    """Label -> one or more label words, in the task's label order."""

    words: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, spec: str | dict, label_names: Sequence[str]) -> Verbalizer:
        """Accept a dict, JSON (`{"negative": ["bad"], "positive": ["good", "great"]}`) or lines `label: w1, w2`."""
        mapping = _spec_to_dict(spec)
        unknown = [label for label in mapping if label not in label_names]
        if unknown:
            raise PeftlabError(
                f"The verbalizer names label(s) {', '.join(map(repr, unknown))} that the task lacks; "
                f"its labels are {', '.join(map(repr, label_names))}."
            )
        missing = [label for label in label_names if label not in mapping]
        if missing:
            raise PeftlabError(f"The verbalizer gives no word for label(s) {', '.join(map(repr, missing))}.")
        words = {}
        for label in label_names:
            raw = mapping[label]
            if isinstance(raw, str):
                raw = [raw]
            elif not isinstance(raw, (list, tuple)) or any(
                w is None or isinstance(w, (list, tuple, dict)) for w in raw
            ):
                raise PeftlabError(f"Label {label!r} needs a word or a list of words, not {raw!r}.")
            cleaned = tuple(str(w).strip() for w in raw)
            if not cleaned or any(not w for w in cleaned):
                raise PeftlabError(f"Label {label!r} has an empty label word; give at least one non-empty word.")
            marked = next((w for w in cleaned if w.startswith(TOKENIZER_MARKS) and len(w) > 1), None)
            if marked is not None:
                plain = marked.lstrip("".join(TOKENIZER_MARKS))
                raise PeftlabError(
                    f"The label word {marked!r} carries a tokenizer's own marker (Ġ, ▁ or ##); write the plain word "
                    f"{plain!r}: the space before it is added where the template needs one."
                )
            words[label] = cleaned
        owner = {}
        for label, label_words in words.items():
            for word in label_words:
                if owner.setdefault(word, label) != label:
                    raise PeftlabError(
                        f"The label word {word!r} is given to both {owner[word]!r} and {label!r}; a word scores one "
                        "label only, or the two cannot be told apart."
                    )
        return cls(words)

    @property
    def flat_words(self) -> list[tuple[int, str]]:
        """(label index, word) for every word, labels in order."""
        return [(i, w) for i, label in enumerate(self.words) for w in self.words[label]]

    def to_json(self) -> str:
        return json.dumps({label: list(ws) for label, ws in self.words.items()})


def _spec_to_dict(spec: str | dict) -> dict:
    if isinstance(spec, dict):
        return spec
    if spec is not None and not isinstance(spec, str):  # a list of words failed as "no attribute 'strip'"
        raise PeftlabError(
            f"The verbalizer maps each label to its words (a dict, JSON or 'label: word' lines), not a "
            f"{type(spec).__name__}; for example {{'negative': 'bad', 'positive': 'good'}}."
        )
    text = (spec or "").strip()
    if not text:
        raise PeftlabError(
            "The verbalizer is empty; give one line per label, such as 'negative: bad' and 'positive: good, great'."
        )
    if text.startswith("{"):
        try:
            mapping = parse_json(text, object_pairs_hook=_once_each)
        except json.JSONDecodeError as exc:
            raise PeftlabError(f"The verbalizer is not valid JSON ({json_problem(exc)}).") from None
        if not isinstance(mapping, dict):
            raise PeftlabError("The verbalizer JSON must be an object mapping each label to its words.")
        return mapping
    pairs = []
    for line in re.split(r"[\n;]", text):
        if not line.strip():
            continue
        if ":" not in line:
            raise PeftlabError(
                f"Verbalizer line {line.strip()!r} needs the form 'label: word1, word2' (or give the whole verbalizer "
                'as JSON, such as {"negative": ["bad"], "positive": ["good"]}).'
            )
        label, words = line.split(":", 1)
        pairs.append((label.strip(), [w for w in words.split(",")]))
    return _once_each(pairs)


def _once_each(pairs: list[tuple[str, object]]) -> dict:
    """The verbalizer's label -> words pairs as a dict, refusing a label given twice (which would silently keep
    only its last words)."""
    mapping = {}
    for label, words in pairs:
        if label in mapping:
            raise PeftlabError(
                f"The verbalizer gives label {label!r} twice; put all its words in one place ('{label}: word1, word2')."
            )
        mapping[label] = words
    return mapping


@dataclass
class Query:
    """One model input and the label words it scores.

    `read_positions[j]` is the input position whose output distribution scores piece j of a word;
    `targets` holds (word index into `Verbalizer.flat_words`, one token id per read position).
    """

    input_ids: list[int]
    read_positions: list[int]
    targets: list[tuple[int, list[int]]] = field(default_factory=list)
    trigger_positions: list[int] = field(default_factory=list)  # position of each trigger slot, in order


def _word_with_space(before: str, word: str) -> tuple[str, str]:
    """Fold spaces typed before the mask into the word; see the module docstring."""
    stripped = before.rstrip(" ")
    if stripped and not stripped.endswith("\n"):
        return stripped, " " + word
    return stripped, word


CONTENT_STAND_IN = "N/A"  # a text standing in for every field, where only the spelling of the label words matters


@dataclass
class Prompt:
    """A template, a verbalizer and optional in-context demonstrations, bound to a tokenizer."""

    template: Template
    verbalizer: Verbalizer
    demonstrations: list[dict] = field(default_factory=list)
    demonstration_separator: str = "\n\n"
    trigger_ids: tuple[int, ...] = ()  # token ids that fill the template's [T] slots (AutoPrompt)
    reserved_positions: int = 0  # input positions taken by a method's virtual tokens (prompt or prefix tuning)

    def demonstration_text(self) -> str:
        """The demonstrations filled with the same template, each with its label's first word."""
        parts = []
        labels = list(self.verbalizer.words)
        for example in self.demonstrations:
            before, after = self.template.render(example)
            before, word = _word_with_space(before, self.verbalizer.words[labels[example["label"]]][0])
            parts.append(before + word + after)
        return "".join(p + self.demonstration_separator for p in parts)

    def input_limit(self, lm) -> int:
        """The tokens of the model's input this prompt's queries may take: what virtual tokens leave of it."""
        return lm.max_length - self.reserved_positions

    def check_room(self, lm) -> None:
        """Refuse a template (with its triggers and label words) or in-context demonstrations that leave the text to
        classify fewer than MIN_INPUT_TOKENS of the model's input (what virtual tokens leave of it): `fit` would cut
        the text away and the model would label the template or the demonstrations alone. A 20,000-word template
        was scored so, with a warning that the texts were "cut to fit".

        Raises:
            PeftlabError: the template, or the demonstrations, too long, with about how many tokens or
                demonstrations fit.
        """
        limit = self.input_limit(lm)
        empty = {name: "" for name in self.template.fields}
        taken = _needed_length(lm, *self._encode(lm, empty, None))
        if taken + MIN_INPUT_TOKENS <= limit:
            return
        alone = _needed_length(lm, *replace(self, demonstrations=[])._encode(lm, empty, None))
        if not self.demonstrations or alone + MIN_INPUT_TOKENS > limit:
            beside = f" beside {self.reserved_positions} virtual tokens" if self.reserved_positions else ""
            raise PeftlabError(
                f"The template {_opening(self.template.text)} takes {alone:,} of the {limit:,} tokens {lm.name} "
                f"reads{beside}, leaving the text fewer than {MIN_INPUT_TOKENS}; shorten it to at most about "
                f"{max(limit - MIN_INPUT_TOKENS, 0):,} tokens with its label words."
            )
        each = (taken - alone) / len(self.demonstrations)
        fit = max(int((limit - MIN_INPUT_TOKENS - alone) // each), 0)
        raise PeftlabError(
            f"The {len(self.demonstrations)} in-context demonstrations take {taken - alone:,} tokens of {lm.name}'s "
            f"{lm.max_length}-token input, leaving the text fewer than {MIN_INPUT_TOKENS}; use at most about {fit}."
        )

    def queries(self, lm, example: dict, fill: str | None = None) -> list[Query]:
        """Token-level queries scoring every label word for one example (see `Query`); long fields are cut
        to fit (see the module docstring).

        Raises:
            PeftlabError: the template, demonstrations and label words alone leave no room for the input.
        """
        limit = self.input_limit(lm)
        encoded = self._encode(lm, self.fit(lm, example, limit, fill), fill)
        if lm.kind == "causal":
            return _causal_queries(lm, *encoded, limit)
        return _masked_queries(lm, *encoded, limit)

    def label_word_ids(self, lm) -> list[list[list[int]]]:
        """Per label, the token ids of each of its words as they are scored after a text (a stand-in one), their
        leading space as the template gives it."""
        per_label = [[] for _ in self.verbalizer.words]
        for (label, _), (_, ids) in zip(self.verbalizer.flat_words, self._encode(lm, {}, CONTENT_STAND_IN)[3]):
            per_label[label].append(ids)
        return per_label

    def word_lengths(self, lm, example: dict) -> dict[str, int]:
        """The tokens of each label word as it is scored for `example` (its leading space as the template gives it)."""
        words = self._encode(lm, example, None)[3]
        return {word: len(ids) for (_, word), (_, ids) in zip(self.verbalizer.flat_words, words)}

    def _encode(self, lm, example: dict, fill: str | None):
        """(ids before the mask, trigger positions, ids after the mask, (word index, word ids) per label word)."""
        tokenizer = lm.tokenizer
        before, after = self.template.render(example, fill)
        before = self.demonstration_text() + before
        stripped, _ = _word_with_space(before, "")
        after_ids = tokenizer(after, add_special_tokens=False).input_ids if after else []
        # the words are spelt as after a real text: the content-free input "" left "{text} {mask}" nothing before
        # the mask, and its words lost the leading space every text gives them (other tokens than those scored)
        spelt_after = (
            before if fill != "" else self.demonstration_text() + self.template.render(example, CONTENT_STAND_IN)[0]
        )
        words = []
        for word_index, (_, word) in enumerate(self.verbalizer.flat_words):
            ids = tokenizer(_word_with_space(spelt_after, word)[1], add_special_tokens=False).input_ids
            if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
                raise PeftlabError(
                    f"The label word {word!r} has no spelling in {lm.name}'s vocabulary (it would be scored as the "
                    f"unknown token {tokenizer.unk_token!r}); pick a word the model can write."
                )
            words.append((word_index, ids))
        prefix, triggers = _encode_prefix(tokenizer, stripped, self.trigger_ids, lm.kind == "causal")
        return prefix, triggers, after_ids, words

    def cut_count(self, lm, examples: Sequence[dict], limit: int | None = None) -> int:
        """How many of `examples` have a field cut to fit the model's input, or `limit` tokens (see `fit`): a reader
        of a score on long texts should know the model never read all of them."""
        limit = self.input_limit(lm) if limit is None else limit
        return sum(self.fit(lm, example, limit) is not example for example in examples)

    def unmasked_text(self, lm, example: dict, limit: int) -> str:
        """The template around the example's fields without its mask, the fields cut as the cloze cuts them
        (`fit`) so that the pattern's own words are kept: what PET's classifier and its LM loss read."""
        return "".join(self.template.render(self.fit(lm, example, limit)))

    def fit(self, lm, example: dict, limit: int, fill: str | None = None) -> dict:
        """The example with its template fields cut, longest first, until its longest query needs `limit` tokens
        or fewer (the template itself is never cut); `example` itself when nothing is cut."""
        if fill is not None:
            return example
        tokenizer = lm.tokenizer
        before_mask = set(_FIELD.findall(self.template.text.split("{" + MASK_FIELD + "}")[0]))
        fields = [name for name in self.template.fields if name in example]
        for _ in range(8):  # re-tokenising a cut text can move a token or two: check again
            overflow = _needed_length(lm, *self._encode(lm, example, fill)) - limit
            if overflow <= 0 or not fields:
                return example
            pieces = {name: tokenizer(str(example[name]), add_special_tokens=False).input_ids for name in fields}
            longest = max(fields, key=lambda name: len(pieces[name]))
            ids = pieces[longest]
            if not ids:
                return example  # nothing left to cut: the template alone is too long, which queries() reports
            keep = max(0, len(ids) - overflow)
            kept = ids[len(ids) - keep :] if longest in before_mask else ids[:keep]
            example = {**example, longest: tokenizer.decode(kept).strip()}
        return example


def _encode_prefix(tokenizer, before: str, trigger_ids: Sequence[int], add_special_tokens: bool):
    """Token ids of the text before the mask, with trigger ids in its [T] slots, and the slots' positions.

    Spaces before a slot are dropped: a BPE trigger token carries its own leading space. What follows a slot keeps
    its own, as in the template the search stores (`autoprompt.fill_triggers`) and the manual baseline: "[T]
    Sentiment:" was searched and scored as the trigger and "Sentiment" without its space, another token (83.3 % on
    60 rt-sentiment texts, where the stored template scored 66.7 %).
    """
    if not trigger_ids:
        return tokenizer(before, add_special_tokens=add_special_tokens).input_ids, []
    segments = re.split(r" *" + re.escape(TRIGGER), before)
    if len(segments) - 1 != len(trigger_ids):
        raise PeftlabError(
            f"The template has {len(segments) - 1} {TRIGGER} slots before {{mask}} but {len(trigger_ids)} "
            "trigger tokens were given."
        )
    ids = tokenizer(segments[0], add_special_tokens=add_special_tokens).input_ids
    positions = []
    for trigger, segment in zip(trigger_ids, segments[1:]):
        positions.append(len(ids))
        ids = ids + [trigger] + _segment_ids(tokenizer, segment)
    return ids, positions


def _segment_ids(tokenizer, segment: str) -> list[int]:
    """The tokens of the text after a trigger slot, read as they are inside the whole template: with its leading
    space for a byte-level BPE (" it" is 'Ġit'), without it for a tokenizer that marks a word's start itself (a
    SentencePiece normaliser prepending '▁' reads " it" alone as '▁', '▁it')."""
    ids = tokenizer(segment, add_special_tokens=False).input_ids if segment else []
    if segment.startswith(" "):
        bare = tokenizer(segment.lstrip(" "), add_special_tokens=False).input_ids
        if ids[1:] == bare:  # one token more, only the space: the tokenizer's own word-start mark
            return bare
    return ids


def _opening(text: str, chars: int = 40) -> str:
    """`text` quoted, cut to its first `chars` characters ("…" where it was cut): enough to tell a sentence's template
    among PET's patterns without quoting 20,000 words back."""
    return repr(text if len(text) <= chars else text[: chars - 1] + "…")


def _needed_length(lm, prefix: list[int], triggers, after_ids: list[int], words) -> int:
    """The length of the longest query before any cut: what must fit the model's input."""
    if lm.kind == "causal":
        return max(len(prefix), 1) + max(len(ids) + len(after_ids) for _, ids in words) - 1
    ends = int(lm.tokenizer.cls_token_id is not None) + int(lm.tokenizer.sep_token_id is not None)
    return ends + len(prefix) + max(len(ids) for _, ids in words) + len(after_ids)


def _causal_queries(lm, prefix: list[int], triggers: list[int], after_ids: list[int], words, limit: int) -> list[Query]:
    """Queries share an input when words share all pieces but the last: one pass scores them all."""
    tokenizer = lm.tokenizer
    if not prefix:  # a mask that starts the text is read after a start-of-text token
        prefix = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
    by_stem: dict[tuple[int, ...], Query] = {}
    for word_index, word_ids in words:
        continuation = word_ids + after_ids
        stem = tuple(continuation[:-1])
        if stem not in by_stem:
            kept, positions = _truncate_left(prefix, limit - len(stem), tokenizer, triggers)
            ids = kept + list(stem)
            by_stem[stem] = Query(ids, list(range(len(kept) - 1, len(ids))), trigger_positions=positions)
        by_stem[stem].targets.append((word_index, continuation))
    return list(by_stem.values())


def _masked_queries(
    lm, before_ids: list[int], triggers: list[int], after_ids: list[int], words, limit: int
) -> list[Query]:
    """One query per distinct piece count: n mask tokens score every n-piece word."""
    tokenizer = lm.tokenizer
    start = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
    end = [tokenizer.sep_token_id] if tokenizer.sep_token_id is not None else []
    by_count: dict[int, Query] = {}
    for word_index, word_ids in words:
        n = len(word_ids)
        if n not in by_count:
            budget = limit - len(start) - n - len(after_ids) - len(end)
            kept, positions = _truncate_left(before_ids, budget, tokenizer, triggers)
            ids = start + kept + [tokenizer.mask_token_id] * n + after_ids + end
            first = len(start) + len(kept)
            by_count[n] = Query(
                ids,
                list(range(first, first + n)),
                trigger_positions=[len(start) + p for p in positions],
            )
        by_count[n].targets.append((word_index, word_ids))
    return list(by_count.values())


def _truncate_left(
    ids: list[int], budget: int, tokenizer, positions: Sequence[int] = ()
) -> tuple[list[int], list[int]]:
    """Drop tokens from the start (keeping a leading BOS) so that at most `budget` remain.

    Returns the kept ids and `positions` (trigger slots) moved to where they now are.
    """
    if budget < 2:
        raise PeftlabError("The template's text after the mask and the label words leave no room for the input.")
    if len(ids) <= budget:
        return ids, list(positions)
    keep_first = 1 if ids and ids[0] == tokenizer.bos_token_id else 0
    dropped = len(ids) - budget
    if any(keep_first <= p < keep_first + dropped for p in positions):
        raise PeftlabError(
            "The input is too long: truncating it would cut trigger slots; put the [T] slots after {text}."
        )
    return ids[:keep_first] + ids[keep_first + dropped :], [p if p < keep_first else p - dropped for p in positions]


def pick_demonstrations(pool: Sequence[dict], k: int, n_labels: int, seed: int) -> list[dict]:
    """K labelled examples from the training pool, classes taken in turn, in a seeded random order.

    When a class runs out, the others fill the K, and a K beyond the pool gives the whole pool: count the
    result (and its labels) to know what was used.

    Raises:
        PeftlabError: a negative count.
    """
    if k < 0:
        raise PeftlabError(f"The number of in-context demonstrations must be 0 or more, not {k}.")
    if k == 0:
        return []
    rng = random.Random(seed)
    by_label = [[row for row in pool if row["label"] == label] for label in range(n_labels)]
    for rows in by_label:
        rng.shuffle(rows)
    picked = []
    while len(picked) < k and any(by_label):
        for rows in by_label:
            if rows and len(picked) < k:
                picked.append(rows.pop())
    rng.shuffle(picked)
    return picked


GENERIC_TEMPLATE = "Text: {text}\nLabel:{mask}"
GENERIC_FIELD_LINE = "{name}: {{{name}}}\n"  # each further field of a row's identity, before the label line
# PET's generic patterns after a task's input fields (`pet.patterns_for`): "{text}\nAnswer:{mask}", "{text} ({mask})"
GENERIC_PATTERN_ENDS = ("\nAnswer:{mask}", " ({mask})")


# Starting points that work on the embedded model; any task falls back to its label names as words.
def suggested_prompt(task_name: str, label_names: Sequence[str], fields: Sequence[str] = ("text",)) -> tuple[str, dict]:
    """A (template, verbalizer) to start from: the embedded task's own, else GENERIC_TEMPLATE with a line for each
    further field of `fields` (a task's `identity`: an NLI upload's hypothesis, which the generic template left out,
    so a premise's hypotheses of opposite labels read alike) and the label names."""
    if task_name in EMBEDDED_TASKS:
        return EMBEDDED_TASKS[task_name].template, EMBEDDED_TASKS[task_name].verbalizer
    lines = "".join(GENERIC_FIELD_LINE.format(name=name) for name in fields if name != "text")
    return GENERIC_TEMPLATE.replace("\nLabel:", f"\n{lines}Label:"), {label: [label] for label in label_names}


def is_suggested_template(text: str) -> bool:
    """Whether `text` is a template or PET pattern peftlab suggests for some task (or nothing), not one a person
    wrote."""
    suggested = {GENERIC_TEMPLATE, ""}
    for task in EMBEDDED_TASKS.values():
        suggested |= {task.template, *task.patterns}
    fields = r"\{\w+\}( \{\w+\})*"  # a generic pattern's inputs: the task's fields, space-separated
    generic = f"{fields}({'|'.join(re.escape(end) for end in GENERIC_PATTERN_ENDS)})"
    lines = r"Text: \{text\}\n(\w+: \{\w+\}\n)*Label:\{mask\}"  # GENERIC_TEMPLATE with its field lines
    return text.strip() in suggested or any(re.fullmatch(p, text.strip()) for p in (generic, lines))
