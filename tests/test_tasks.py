"""Tests for peftlab.tasks: embedded tasks, uploads, the Hub path and K-shot sampling."""

import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import peftlab.tasks as tasks_module
from peftlab.errors import PeftlabError
from peftlab.tasks import DEFAULT_SEEDS, EMBEDDED_TASKS, Task, load_task

EXAMPLE_CSV = Path(__file__).resolve().parent.parent / "examples" / "custom_task.csv"


def _names(task: Task, rows: list[dict]) -> Counter:
    return Counter(task.label_names[r["label"]] for r in rows)


def _write_csv(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_spaces_around_header_names_are_not_part_of_them(tmp_path):
    lines = _labelled_lines(10)
    path = _write_csv(tmp_path / "spaced.csv", [" body , topic,source, year", *lines[1:]])
    task = load_task(path, text_column="body", label_column="topic")  # not ' topic'
    assert task.label_names == ["cats", "dogs"] and task.text_fields == ["text", "source"]


def _labelled_lines(n_per_class: int = 10) -> list[str]:
    lines = ["body,topic,source,year"]
    for i in range(n_per_class):
        lines.append(f"the cat sat on mat number {i},cats,blog {i},2020")
        lines.append(f"the dog ran to park number {i},dogs,news {i},2021")
    return lines


# ---------------------------------------------------------------- embedded tasks


@pytest.mark.parametrize(
    "name, labels, fields, per_class",
    [
        ("rt-sentiment", ["negative", "positive"], ["text", "movie_name"], 500),
        ("bbc-topic", ["business", "entertainment", "politics", "sport", "tech"], ["text", "headline"], 100),
    ],
)
def test_embedded_task_shape(name, labels, fields, per_class):
    task = load_task(name)
    assert name in EMBEDDED_TASKS
    assert task.name == name
    assert task.label_names == labels
    assert task.text_fields == fields
    assert _names(task, task.test) == {label: per_class for label in labels}
    train_texts = [r["text"] for r in task.train]
    assert len(train_texts) == len(set(train_texts))
    assert not set(train_texts) & {r["text"] for r in task.test}
    for row in task.train[:50] + task.test[:50]:
        assert set(row) == set(fields) | {"label"}
        assert all(isinstance(row[f], str) for f in fields) and row["text"]
        assert 0 <= row["label"] < len(labels)
    counts = task.label_counts()
    assert list(counts) == labels and sum(counts.values()) == len(task.train)
    assert min(counts.values()) > 200


def test_rt_sentiment_text_rules():
    task = load_task("rt-sentiment")
    assert all(len(r["text"]) < 400 and r["text"] == r["text"].strip() for r in task.train + task.test)
    assert len(task.train) + len(task.test) > 12000


def test_bbc_text_is_headline_plus_first_paragraph():
    task = load_task("bbc-topic")
    for row in task.train[:100]:
        assert row["text"].startswith(row["headline"])
        assert ".." not in row["text"][len(row["headline"]) - 1 : len(row["headline"]) + 2]
        assert len(row["text"]) > len(row["headline"]) + 10


def test_load_task_is_cached():
    assert load_task("bbc-topic") is load_task("bbc-topic")


# ---------------------------------------------------------------- few-shot sampling


@pytest.mark.parametrize("name, k", [("rt-sentiment", 16), ("bbc-topic", 8)])
def test_few_shot_sizes_and_disjoint(name, k):
    task = load_task(name)
    train, dev = task.few_shot(k, seed=13)
    n = len(task.label_names)
    assert len(train) == len(dev) == k * n
    assert set(_names(task, train).values()) == {k}
    assert set(_names(task, dev).values()) == {k}
    train_texts, dev_texts = {r["text"] for r in train}, {r["text"] for r in dev}
    assert len(train_texts) == len(dev_texts) == k * n
    assert not train_texts & dev_texts
    pool = {r["text"] for r in task.train}
    assert train_texts <= pool and dev_texts <= pool
    assert [r["label"] for r in train] != sorted(r["label"] for r in train)  # shuffled, not grouped


def test_few_shot_deterministic_and_seed_dependent():
    task = load_task("rt-sentiment")
    assert task.few_shot(8, seed=42) == task.few_shot(8, seed=42)
    samples = [tuple(r["text"] for r in task.few_shot(8, seed=s)[0]) for s in DEFAULT_SEEDS]
    assert len(set(samples)) == len(DEFAULT_SEEDS)
    assert task.few_shot(8) == task.few_shot(8, seed=13)


def test_few_shot_returns_copies():
    task = load_task("bbc-topic")
    train, _ = task.few_shot(2, seed=1)
    train[0]["text"] = "changed"
    assert all(r["text"] != "changed" for r in task.train)


@pytest.mark.parametrize("k", [0, -3])
def test_few_shot_k_below_one(k):
    with pytest.raises(PeftlabError, match=r"K \(examples per class\) must be a whole number of at least 1"):
        load_task("bbc-topic").few_shot(k)


def test_few_shot_takes_numpy_s_whole_numbers():
    """K from a numpy loop was told "must be a whole number of at least 1, got np.int64(2)"."""
    import numpy as np

    task = load_task("bbc-topic")
    assert task.few_shot(np.int64(2), seed=1) == task.few_shot(2, seed=1)


def test_a_split_the_task_lacks_is_one_sentence():
    """'validation' was a KeyError, an empty dev split an IndexError deep in the scoring."""
    task = load_task("rt-sentiment")
    with pytest.raises(
        PeftlabError, match=r"^A task's splits are 'test', 'train', 'dev' and 'all', not 'validation'\."
    ):
        task.test_subset(5, split="validation")
    with pytest.raises(PeftlabError, match=r"^'rt-sentiment' has no dev rows to score; score its test split\.$"):
        task.test_subset(5, split="dev")
    # an upload whose rows marked test have no labels: scoring the test split is not the advice then
    untested = Task("up.csv", ["a", "b"], ["text"], train=[{"text": "x", "label": 0}], test=[])
    with pytest.raises(PeftlabError, match=r"^'up\.csv' has no test rows to score; mark some labelled rows test\.$"):
        untested.test_subset()


def test_a_hub_dataset_asked_first_in_a_process_is_one_sentence():
    """huggingface_hub loads its submodules lazily: load_task('imdb') as a script's first call failed with
    "AttributeError: No huggingface_hub attribute constants" (after transformers was imported it worked)."""
    import subprocess

    script = "from peftlab.tasks import load_task\nload_task('someone/no-such-dataset')"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
    )
    assert "peftlab.errors.PeftlabError: Could not load the dataset 'someone/no-such-dataset'" in done.stderr, (
        done.stderr
    )


def test_few_shot_k_too_large_names_class_and_limit():
    task = load_task("bbc-topic")
    smallest = min(task.label_counts().items(), key=lambda kv: kv[1])
    with pytest.raises(PeftlabError, match=rf"class '{smallest[0]}'.* only {smallest[1]}; use K <= {smallest[1] // 2}"):
        task.few_shot(smallest[1] // 2 + 1)
    task.few_shot(smallest[1] // 2)  # the largest allowed k works


# ---------------------------------------------------------------- uploads


def test_csv_upload_with_extra_text_field(tmp_path):
    path = _write_csv(tmp_path / "pets.csv", _labelled_lines(10))
    task = load_task(path, text_column="body", label_column="topic")
    assert task.name == "pets.csv"
    assert task.label_names == ["cats", "dogs"]
    assert task.text_fields == ["text", "source"]  # "year" is numeric, so not a text field
    assert _names(task, task.test) == {"cats": 2, "dogs": 2}
    assert task.label_counts() == {"cats": 8, "dogs": 8}
    assert not {r["text"] for r in task.train} & {r["text"] for r in task.test}
    row = task.train[0]
    assert set(row) == {"text", "source", "label"} and row["source"].split()[0] in {"blog", "news"}
    assert load_task(path, text_column="body", label_column="topic") is task


def test_jsonl_upload_and_stratified_split(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"text": f"  is this question {i}?  ", "label": "q", "note": f"n{i}"} for i in range(11)]
    rows += [{"text": f"this is statement {i}.", "label": "s", "note": f"n{i}"} for i in range(4)]
    rows += [{"text": "   ", "label": "s", "note": "blank"}]  # dropped: empty text
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    task = load_task(str(path))
    assert task.label_names == ["q", "s"]
    assert task.text_fields == ["text", "note"]
    assert _names(task, task.test) == {"q": 2, "s": 1}  # 20 % per class, at least one
    assert task.label_counts() == {"q": 9, "s": 3}
    assert all(r["text"] == r["text"].strip() and r["text"] for r in task.train + task.test)
    assert len(task.few_shot(1, seed=5)[0]) == 2


def test_upload_cache_follows_file_changes(tmp_path):
    path = tmp_path / "pets.csv"
    _write_csv(path, _labelled_lines(5))
    first = load_task(str(path), text_column="body", label_column="topic")
    _write_csv(path, _labelled_lines(10))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = load_task(str(path), text_column="body", label_column="topic")
    assert second is not first and len(second.train) > len(first.train)


def test_example_csv_loads():
    task = load_task(str(EXAMPLE_CSV))
    assert task.label_names == ["question", "statement"]
    assert task.text_fields == ["text"]
    assert len(task.train) + len(task.test) == 40
    assert len(task.few_shot(4, seed=13)[0]) == 8


def test_missing_column_lists_found_columns(tmp_path):
    path = _write_csv(tmp_path / "pets.csv", _labelled_lines(3))
    with pytest.raises(
        PeftlabError, match=r"no text column 'text' \(columns found: 'body', 'topic', 'source', 'year'\)"
    ):
        load_task(path)
    with pytest.raises(PeftlabError, match=r"no label column 'kind' \(columns found: .*'topic'"):
        load_task(path, text_column="body", label_column="kind")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("", r"'empty\.csv' is empty"),
        ("text,label\n", r"'empty\.csv' has no rows"),
        ("text,label\n  ,a\n,b\n", r"no rows with both a non-empty text and a label"),
    ],
)
def test_empty_uploads(tmp_path, content, pattern):
    path = tmp_path / "empty.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PeftlabError, match=pattern):
        load_task(str(path))


def test_single_class_upload(tmp_path):
    path = _write_csv(tmp_path / "one.csv", ["text,label"] + [f"row {i},same" for i in range(6)])
    with pytest.raises(PeftlabError, match=r"'one\.csv' has a single class \('same'\).*at least two"):
        load_task(path)


@pytest.mark.parametrize(
    "filename, content",
    [
        ("broken.jsonl", b'{"text": "fine", "label": "a"}\n{not json at all\n'),
        ("binary.csv", b"\xff\xfe\x00\x81\x8d\x90\x00\xff" * 50),
    ],
)
def test_unreadable_upload(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(
        PeftlabError, match=rf"'{filename}' (could not be read as CSV|is not valid JSON|is not a text file)"
    ):
        load_task(str(path))


def test_missing_upload_file(tmp_path):
    with pytest.raises(PeftlabError, match=r"does not exist"):
        load_task(str(tmp_path / "nope.csv"))


def _split_rows(n_per_class: int, split_of) -> list[dict]:
    rows = []
    for i in range(n_per_class):
        for label in ("cats", "dogs"):
            rows.append({"text": f"{label} story number {i}", "label": label, "Split": split_of(i)})
    return rows


def test_upload_split_column_is_honoured(tmp_path):
    splits = {0: "test", 1: "test", 2: "Validation", 3: "dev", 4: " TEST "}
    path = tmp_path / "marked.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _split_rows(12, lambda i: splits.get(i, "train"))))
    task = load_task(str(path))
    assert task.text_fields == ["text"]  # the split column is not a text field
    assert {r["text"] for r in task.test} == {
        f"{label} story number {i}" for label in ("cats", "dogs") for i in (0, 1, 4)
    }
    assert {r["text"] for r in task.dev} == {f"{label} story number {i}" for label in ("cats", "dogs") for i in (2, 3)}
    assert len(task.train) == 14 and not task.held_out_here and task.cloze_split() == "test"
    train, dev = task.few_shot(4, seed=13)
    # Dev comes from the file's dev rows (all 2 per class, fewer than K), train from its train rows only.
    assert {r["text"] for r in dev} == {r["text"] for r in task.dev}
    assert {r["text"] for r in train} <= {r["text"] for r in task.train} and len(train) == 8
    with pytest.raises(PeftlabError, match=r"K=8 needs 8 examples of class 'cats' in the training pool of "):
        task.few_shot(8)


def test_a_class_the_split_column_never_marks_train_is_told_to_mark_some(tmp_path):
    """Every train row 'cats': "K=4 needs 4 examples of class 'dogs' in the training pool of 'split.csv' (the rows
    not held out for testing) but it has only 0; use K <= 0." described a pool the file does not have, and advice
    (K is at least 1) nobody can follow."""
    rows = _split_rows(8, lambda i: "test" if i < 2 else "dev" if i < 4 else "train")
    rows = [r for r in rows if r["Split"] != "train" or r["label"] == "cats"]
    path = tmp_path / "split.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(PeftlabError) as raised:
        load_task(str(path)).few_shot(4)
    assert str(raised.value) == (
        "K=4 needs 4 examples of class 'dogs' in the training pool of 'split.jsonl' (the rows its split column marks "
        "train) but it has only 0; mark more 'dogs' rows train."
    )


@pytest.mark.parametrize(
    ("positive_rows", "advice"), [(7, r"use K <= (\d+)\.$"), (1, r"add more examples of that class\.$")]
)
def test_too_large_a_k_is_told_by_the_smallest_class_so_the_advice_works(tmp_path, positive_rows, advice):
    """'negative' (first in label order) and 'positive' both short of K=6: the advice named 'negative' ("use k <= 4"),
    and K=4 then failed on 'positive', whose single row had gone to the test split."""
    lines = ["text,label"] + [
        f"text number {i},{'negative' if i < 12 else 'positive'}" for i in range(12 + positive_rows)
    ]
    task = load_task(_write_csv(tmp_path / "odd.csv", lines))
    assert task.label_names == ["negative", "positive"]
    with pytest.raises(PeftlabError, match=rf"^K=6 needs 12 examples of class 'positive' .*; {advice}") as raised:
        task.few_shot(6)
    if suggested := re.search(advice, str(raised.value)).groups():
        task.few_shot(int(suggested[0]))  # the advice can be followed


def test_upload_without_split_column_scores_every_row_zero_shot(tmp_path):
    path = _write_csv(tmp_path / "plain.csv", _labelled_lines(10))
    task = load_task(path, text_column="body", label_column="topic")
    assert task.held_out_here and task.cloze_split() == "all" and task.cloze_split(2) == "test"
    assert len(task.test) == 4 and len(task.rows("all")) == 20
    assert len(task.test_subset(6, "all")) == 6 and _names(task, task.test_subset(6, "all")) == {"cats": 3, "dogs": 3}


@pytest.mark.parametrize(
    "split_of, pattern",
    [
        (
            lambda i: "holdout" if i == 3 else ("test" if i < 2 else "train"),
            r"'bad\.jsonl' has split value\(s\) 'holdout' \(first in data row 7\); a row's split is train, dev "
            r"\(or validation\) or test\.",
        ),
        (
            lambda i: "" if i == 5 else ("test" if i < 2 else "train"),
            r"has split value\(s\) '' \(first in data row 11\)",
        ),
        (lambda i: "train", r"'bad\.jsonl' marks no row 'test' in its split column"),
    ],
)
def test_upload_bad_split_values_get_one_sentence(tmp_path, split_of, pattern):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _split_rows(8, split_of)))
    with pytest.raises(PeftlabError, match=pattern):
        load_task(str(path))


def test_a_bad_split_is_named_by_its_row_in_the_file_counting_empty_rows(tmp_path):
    """A row of empty cells (",,") before it is left out first, and the bad row was named one row too early: data row 4
    of this file is a good one."""
    path = tmp_path / "rownum.csv"
    path.write_text(
        "text,label,split\nGreat film,positive,train\n,,\nAwful film,negative,train\nNice,positive,test\n"
        "Bad,negative,tset\nOk good,positive,test\n"
    )
    with pytest.raises(PeftlabError, match=r"has split value\(s\) 'tset' \(first in data row 5\)"):
        load_task(str(path))


def test_upload_dev_split_missing_a_class(tmp_path):
    path = tmp_path / "nodev.jsonl"
    rows = _split_rows(8, lambda i: "test" if i < 2 else "train")
    rows.append({"text": "one more cat", "label": "cats", "Split": "dev"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(PeftlabError, match=r"The dev split of 'nodev\.jsonl' has no example of class 'dogs'"):
        load_task(str(path)).few_shot(2)


# ---------------------------------------------------------------- Hub datasets


def test_hub_offline_error_is_quick(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for module in ("datasets.config", "huggingface_hub.constants"):
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(
        PeftlabError,
        match=r"'someone/no-such-dataset'.*Hub is unreachable or has no such "
        r"dataset.*'rt-sentiment', 'bbc-topic' or a CSV/JSONL file of your own",
    ):
        load_task("someone/no-such-dataset")
    assert time.perf_counter() - start < 10


def test_hub_path_with_classlabel_and_test_cap(monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "idx": datasets.Value("int32"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
        }
    )

    def split(n, offset, label=None):
        return datasets.Dataset.from_dict(
            {
                "sentence": [f"sentence {offset + i}" for i in range(n)],
                "idx": list(range(n)),
                "label": [label if label is not None else int(i % 4 == 0) for i in range(n)],
            },
            features=features,
        )

    fake = datasets.DatasetDict(train=split(300, 0), validation=split(1500, 10_000), test=split(50, 20_000, -1))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config=None: fake)
    monkeypatch.setattr(tasks_module, "hub_reachable", lambda: True)  # the fake stands in for the Hub
    task = load_task("fake/hub-set", text_column="sentence", hub_config="cfg")
    assert task.label_names == ["neg", "pos"] and task.text_fields == ["text"]
    assert len(task.train) == 300  # unlabelled test split (-1) is skipped, validation is used
    assert _names(task, task.test) == {"neg": 750, "pos": 250}  # 1,500 capped to 1,000, stratified
    assert all(r["text"].startswith("sentence 1") for r in task.test)
    with pytest.raises(PeftlabError, match=r"Hub dataset 'fake/hub-set' has no text column 'text'"):
        load_task("fake/hub-set", hub_config="cfg")


def test_a_pool_too_small_says_what_the_file_lost_to_empty_rows_and_the_test_split(tmp_path):
    """A 4-row file, two rows without a text: 'the training pool of 'emptystr.csv' has only 0' said neither that the
    empty rows were left out nor that the test split took the rest."""
    path = tmp_path / "emptystr.csv"
    path.write_text('text,label\n,a\n"",b\nfoo,a\nbar,b\n')
    task = load_task(str(path))
    assert (
        task.left_out == {"empty": 2, "conflicting": 0, "contradicting": 0, "repeated": 0}
        and len(task.test) == 2
        and task.train == []
    )
    with pytest.raises(PeftlabError) as raised:
        task.few_shot(2)
    assert str(raised.value) == (
        "K=2 needs 4 examples of class 'a' (K for train and K for dev) but the training pool of 'emptystr.csv' (the "
        "rows not held out for testing; 2 rows of the file were left out: 2 without a text or a label) has only 0; "
        "add more examples of that class."
    )


def test_an_uploaded_csv_s_texts_and_labels_are_read_as_written(tmp_path):
    """Cells that look like numbers were typed: the classes "01" and "1" became one, and a text "1.10" read "1.1"."""
    for header in ("text,label", "text, label"):  # the second as spreadsheets write it
        path = tmp_path / "codes.csv"
        path.write_text(f"{header}\n" + "".join(f"{i}.10,{'01' if i % 3 else '1'}\n" for i in range(1, 31)))
        task = load_task(str(path))
        assert task.label_names == ["01", "1"]
        rows = task.train + task.test
        assert sorted(r["text"] for r in rows) == sorted(f"{i}.10" for i in range(1, 31))
        assert all(task.label_names[r["label"]] == ("01" if int(r["text"].split(".")[0]) % 3 else "1") for r in rows)


def test_an_upload_says_which_rows_it_left_out_and_why(tmp_path):
    """The same text labelled pos and neg: both rows went, told only as "left out: without a text or a label, or
    repeating a text", as if they were empty or repeated."""
    path = tmp_path / "conflict.csv"
    rows = ["same words,pos", "same words,neg", ",pos", "good,pos", "good,pos", "bad,neg", "fine,pos", "awful,neg"]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    task = load_task(str(path))
    assert task.left_out == {"empty": 1, "conflicting": 2, "contradicting": 0, "repeated": 1}
    assert task.left_out_words == (
        "4 rows of the file were left out: 1 without a text or a label, 2 with a text labelled differently elsewhere "
        "(every copy), 1 repeating a text"
    )
    # marked splits: a train row repeating a test text goes as a repeat, the same text in two splits with two labels
    # keeps its test row
    path.write_text("text,label,split\ngood,pos,test\ngood,pos,train\nbad,neg,test\nbad,pos,train\nok,pos,train\n")
    task = load_task(str(path))
    assert task.left_out == {"empty": 0, "conflicting": 0, "contradicting": 1, "repeated": 1}
    assert task.left_out_words == (  # the train 'bad' labelled pos was told as repeating the test one
        "2 rows of the file were left out: 1 labelled otherwise than the same text marked test or dev (that row is "
        "kept), 1 repeating a text"
    )
    assert [r["text"] for r in task.test] == ["good", "bad"] and [r["text"] for r in task.train] == ["ok"]


def test_an_uploads_labels_are_in_the_order_people_count(tmp_path):
    """topic0 to topic19 came as topic0, topic1, topic10, ..., topic19, topic2 in the verbalizer and the matrix."""
    topics = [f"topic{i}" for i in range(12)]
    path = tmp_path / "topics.csv"
    path.write_text("text,label\n" + "\n".join(f"text {i} {t},{t}" for i in range(3) for t in reversed(topics)) + "\n")
    assert load_task(str(path)).label_names == topics
    path.write_text("text,label\n" + "\n".join(f"text {i} {y},{y}" for i in range(3) for y in ["10", "-1", "2"]))
    assert load_task(str(path)).label_names == ["-1", "2", "10"]
    mixed = ["b2", "3", "a10", "a9", "inf"]
    path.write_text("text,label\n" + "\n".join(f"text {i} {y},{y}" for i in range(3) for y in mixed))
    assert load_task(str(path)).label_names == ["3", "a9", "a10", "b2", "inf"]


def test_a_label_column_with_a_different_value_in_every_row_is_refused(tmp_path):
    """--label-column text made 40 classes of one row each and scored "accuracy 1.0000", without a word (the text
    column as the label column is said so first, test_cli; a column of ids is this case)."""
    path = tmp_path / "reviews.csv"
    path.write_text(
        "text,label,id\n" + "\n".join(f"review number {i},{'pos' if i % 2 else 'neg'},r{i}" for i in range(6))
    )
    with pytest.raises(PeftlabError) as refused:
        load_task(str(path), label_column="id")
    assert str(refused.value) == (
        "The file 'reviews.csv' has a different 'id' in each of its 6 rows, so every class would have one example; "
        "set the label column to the column of labels (the others: 'text', 'label')."
    )
    assert load_task(str(path)).label_names == ["neg", "pos"]


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"text": "Is it?", "label": ["question"]},
            "has a JSON array in its label column 'label' ([\"question\"]); give each row one label as a string.",
        ),
        (
            {"text": {"en": "Is it?"}, "label": "question"},
            'has a JSON object in its text column \'text\' ({"en": "Is it?"}); give each row one text as a string.',
        ),
    ],
)
def test_a_json_array_or_object_in_a_text_or_label_cell_is_refused(tmp_path, row, message):
    """{"label": ["question"]} became the class "['question']" and the run went on."""
    path = tmp_path / "nested.jsonl"
    rows = [{"text": f"Fine {i}.", "label": "statement"} for i in range(4)] + [row]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(PeftlabError) as refused:
        load_task(str(path))
    assert str(refused.value) == f"The file 'nested.jsonl' {message}"


def test_words_pandas_reads_as_missing_are_texts_and_labels_of_a_csv(tmp_path):
    """A class named None and a text "NA" were read as missing cells and their rows left out, unsaid; in JSON Lines
    they were kept."""
    lines = (
        ["text,label"] + [f"no topic here {i},None" for i in range(6)] + [f"sports story {i},sport" for i in range(6)]
    )
    task = load_task(_write_csv(tmp_path / "na.csv", [*lines, "NA,sport", "null,None"]))
    assert task.label_names == ["None", "sport"]
    assert {"NA", "null"} <= {row["text"] for row in task.rows("all")}
    assert task.left_out["empty"] == 0


def test_rows_with_no_cell_filled_are_left_out_before_the_split_is_read(tmp_path):
    """Spreadsheets save rows below a table as ",,": with a split column, their blank split refused the whole file."""
    rows = [f"{label} story {i},{label},{'test' if i < 2 else 'train'}" for label in ("a", "b") for i in range(6)]
    task = load_task(_write_csv(tmp_path / "trailing.csv", ["text,label,split", *rows, ",,", ",,"]))
    assert len(task.test) == 4 and len(task.train) == 8 and task.left_out["empty"] == 2


def test_a_few_emoji_newer_than_python_s_unicode_tables_are_text(tmp_path):
    """🩵 (Unicode 15) is unassigned to Python 3.11, and Apple's logo is private use: a review file holding them was
    refused as "not a text file (a spreadsheet or another binary format?)"."""
    lines = ["text,label"] + [f"loved it 🩵 {i},pos" for i in range(6)] + [f"my \uf8ff broke {i},neg" for i in range(6)]
    task = load_task(_write_csv(tmp_path / "emoji.csv", lines))
    assert len(task.rows("all")) == 12


def test_a_stray_control_character_in_a_text_is_text(tmp_path):
    """A vertical tab or a next-line character (U+0085) in one scraped review refused the whole file as "not a text
    file (a spreadsheet or another binary format?)"."""
    lines = ["text,label"] + [f"loved it {i},pos" for i in range(6)] + [f"dull\x0bslow\x85 {i},neg" for i in range(6)]
    task = load_task(_write_csv(tmp_path / "scraped.csv", lines))
    assert len(task.rows("all")) == 12 and "dull\x0bslow\x85 0" in {r["text"] for r in task.rows("all")}


def test_a_larger_limit_keeps_each_label_s_texts_in_order_though_a_share_may_shrink():
    """The docstring said a larger limit only adds texts; largest remainders are not monotone (the Alabama paradox)."""
    sizes = {0: 40, 1: 25, 2: 9, 3: 3}
    assert tasks_module._stratified_counts(sizes, 14)[2] == 2 and tasks_module._stratified_counts(sizes, 15)[2] == 1
    rows = [{"text": f"{label} {i}", "label": label} for label, size in sizes.items() for i in range(size)]
    task = Task("paradox", ["a", "b", "c", "d"], ["text"], train=[], test=rows)
    for small, large in ((14, 15), (15, 40)):
        for label in sizes:
            few = {r["text"] for r in task.test_subset(small) if r["label"] == label}
            more = {r["text"] for r in task.test_subset(large) if r["label"] == label}
            assert few <= more or more <= few  # one label's texts: the fewer are among the more


# ---------------------------------------------------------------- rows of several text fields


def test_a_premise_with_several_hypotheses_is_several_examples(tmp_path):
    """An NLI file gives each premise three hypotheses, one per label: keyed by the premise alone, every row was
    'labelled differently elsewhere' and the file was refused as having 'no rows with both a non-empty text and a
    label'. A row repeating both texts is still one example, and the same pair labelled two ways is left out."""
    lines = ["text,hypothesis,label"]
    for i in range(10):
        premise = f"A person number {i} walks a dog in the park."
        lines += [f"{premise},Someone is outside {i}.,entailment", f"{premise},Nobody is outdoors {i}.,contradiction"]
        lines.append(f"{premise},The person {i} likes dogs.,neutral")
    lines += ["Two cats sleep.,Animals rest.,entailment"] * 2 + ["A car stops.,It moves.,neutral"]
    lines.append("A car stops.,It moves.,contradiction")
    task = load_task(_write_csv(tmp_path / "nli.csv", lines))
    assert task.text_fields == ["text", "hypothesis"]
    assert len(task.rows("all")) == 31 and task.left_out == {
        "empty": 0,
        "conflicting": 2,
        "contradicting": 0,
        "repeated": 1,
    }
    pairs = [(r["text"], r["hypothesis"]) for r in task.rows("all")]
    assert len(set(pairs)) == 31 and ("A car stops.", "It moves.") not in pairs
    train_pairs = {(r["text"], r["hypothesis"]) for r in task.train}
    assert not train_pairs & {(r["text"], r["hypothesis"]) for r in task.test}


def test_a_pair_task_s_suggested_template_reads_both_texts_and_one_that_does_not_is_told(tmp_path, tiny_causal):
    """Found by a new user with an NLI upload: every suggested prompt was `Text: {text}\nLabel:{mask}`, so a premise's
    hypotheses of opposite labels read alike, and nothing said the hypothesis was never read."""
    from peftlab.cloze import evaluate
    from peftlab.prompts import is_suggested_template, suggested_prompt

    lines = ["text,hypothesis,id,label"]
    for i in range(12):
        lines += [f"A man {i} walks.,Someone moves {i}.,a{i},yes", f"A man {i} walks.,Nobody moves {i}.,b{i},no"]
    task = load_task(_write_csv(tmp_path / "pairs.csv", lines))
    assert task.identity == ["text", "hypothesis"]  # the id tells no example apart
    template, _ = suggested_prompt(task.name, task.label_names, task.identity)
    assert template == "Text: {text}\nhypothesis: {hypothesis}\nLabel:{mask}" and is_suggested_template(template)
    assert task.unread_note([template]) == ""
    result = evaluate(tiny_causal, task, ["Text: {text}\nLabel:{mask}"], {"yes": ["yes"], "no": ["no"]}, "none")
    assert (
        "The template leaves out {hypothesis}, which tells rows of this data apart: rows that differ only there read "
        "the same to the model, whatever their labels; put it in the template."
    ) in result.notes


def test_a_question_with_one_word_candidate_answers_is_as_many_examples(tmp_path):
    lines = ["text,answer,label"]
    for i in range(10):
        question = f"Which city is the capital in question {i}?"
        lines += [f"{question},Paris,yes", f"{question},Lyon,no", f"{question},Nice,no"]
    task = load_task(_write_csv(tmp_path / "qa.csv", lines))
    assert len(task.rows("all")) == 30 and task.left_out == {
        "empty": 0,
        "conflicting": 0,
        "contradicting": 0,
        "repeated": 0,
    }


def test_a_file_whose_every_text_has_two_labels_says_so(tmp_path):
    path = _write_csv(tmp_path / "twice.csv", ["text,label", "a,x", "a,y", "b,x", "b,y"])
    with pytest.raises(PeftlabError) as raised:
        load_task(path)
    assert str(raised.value) == (
        "Every text of the data set 'twice.csv' has two or more different labels, so no row is left to learn from; "
        "give each text one label (a pair of texts, such as a premise and a hypothesis, goes in two columns)."
    )


def test_a_column_restating_the_label_is_no_text_field(tmp_path):
    """A `label_text` column beside the label was a template field: `{label_text}` showed the model the answer."""
    lines = ["text,label,label_text,source"] + [
        f"review {i},{i % 2},{'positive' if i % 2 else 'negative'},site {i % 3}" for i in range(20)
    ]
    task = load_task(_write_csv(tmp_path / "named.csv", lines))
    assert task.text_fields == ["text", "source"]
    assert (
        "The column 'label_text' has one value for each label, so it restates the label: it is left out of the fields "
        "a template may show (it would show the answer)."
    ) in task.label_warnings()
    # on a few rows a column can follow the labels by chance: it stays a field
    few = ["text,label,source"] + [f"review {i},{i % 2},{'imdb' if i % 2 else 'yelp'}" for i in range(8)]
    assert load_task(_write_csv(tmp_path / "few.csv", few)).text_fields == ["text", "source"]


def test_an_id_column_does_not_make_a_repeated_text_another_example(tmp_path):
    """Found by a review of the rows-of-several-fields change: with every text field in the identity, an `id` column
    made every row an example of its own, and 6 test texts were also in the training pool."""
    lines = ["id,text,label"]
    for i in range(20):
        label = "pos" if i % 2 else "neg"
        lines += [f"a{i},a review of film {i},{label}", f"b{i},a review of film {i},{label}"]
    lines.append("c0,a review of film 0,pos")  # film 0 labelled both ways
    task = load_task(_write_csv(tmp_path / "ids.csv", lines))
    assert task.text_fields == ["text", "id"] and task.left_out == {
        "empty": 0,
        "conflicting": 3,
        "contradicting": 0,
        "repeated": 19,
    }
    assert not {r["text"] for r in task.train} & {r["text"] for r in task.test}


def _fake_hub(monkeypatch, data, asked=None):
    datasets = pytest.importorskip("datasets")

    def load_dataset(name, config=None):
        if asked is not None:
            asked.append((name, config))
        if callable(data):
            return data(config)
        return data

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(tasks_module, "hub_reachable", lambda: True)  # the fake stands in for the Hub
    tasks_module._load_cached.cache_clear()
    return datasets


def test_hub_pairs_setfit_names_and_unlabelled_splits(monkeypatch):
    """Found by a review against common Hub datasets: MNLI-like premises lost their rows; SetFit's int label with
    `label_text` gave classes '0'/'1' and offered `label_text` as a field; a test split of -1 labels became a class
    '-1' when the label was a plain int; a test split without a label column raised KeyError."""
    pytest.importorskip("datasets")
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    pairs = Features(premise=Value("string"), hypothesis=Value("string"), label=ClassLabel(names=["yes", "no"]))
    premises = [f"p{i}" for i in range(30) for _ in range(2)]
    hypotheses = [f"hypothesis {i}.{j}" for i in range(30) for j in range(2)]
    train = Dataset.from_dict(dict(premise=premises, hypothesis=hypotheses, label=[0, 1] * 30), features=pairs)
    unlabelled = Dataset.from_dict(dict(premise=["q"] * 4, hypothesis=["r"] * 4))
    _fake_hub(monkeypatch, DatasetDict(train=train, test=unlabelled, validation=train.select(range(10))))
    task = load_task("fake/pairs", text_column="premise")
    assert task.text_fields == ["text", "hypothesis"] and len(task.test) == 10 and len(task.train) == 50

    setfit = Features(text=Value("string"), label=Value("int64"), label_text=Value("string"))
    words = ["negative", "positive"]

    def named(prefix: str, n: int):  # SetFit's layout: an int label and its name beside it
        labels = [i % 2 for i in range(n)]
        columns = dict(text=[f"{prefix}{i}" for i in range(n)], label=labels, label_text=[words[y] for y in labels])
        return Dataset.from_dict(columns, features=setfit)

    minus_one = Dataset.from_dict(dict(text=["y"] * 5, label=[-1] * 5, label_text=[""] * 5), features=setfit)
    _fake_hub(monkeypatch, DatasetDict(train=named("x", 40), test=minus_one, validation=named("v", 6)))
    task = load_task("fake/setfit")
    assert task.label_names == words and task.text_fields == ["text"]
    assert _names(task, task.test) == {"negative": 3, "positive": 3} and len(task.train) == 40


def test_hub_configs_multi_labels_and_names_in_braces(monkeypatch):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    def needs_config(config):
        if config is None:
            raise ValueError("Config name is missing.\nPlease pick one among the available configs: ['rte', 'sst2']")
        features = Features(text=Value("string"), label=ClassLabel(names=["a", "b"]))
        return DatasetDict(
            train=Dataset.from_dict(dict(text=[f"t{i}" for i in range(20)], label=[0, 1] * 10), features=features)
        )

    asked = []
    _fake_hub(monkeypatch, needs_config, asked)
    with pytest.raises(PeftlabError) as raised:
        load_task("fake/glue")
    assert str(raised.value) == (
        "Could not load the dataset 'fake/glue' from the Hugging Face Hub (the Hub is unreachable or has no such "
        "dataset: Config name is missing.; name a configuration as 'owner/name:config'); offline you can use "
        "'rt-sentiment', 'bbc-topic' or a CSV/JSONL file of your own."
    )
    task = load_task("fake/glue:rte")
    assert asked[-1] == ("fake/glue", "rte") and task.name == "fake/glue:rte" and len(task.test) == 4
    with pytest.raises(PeftlabError, match=r"Could not load the dataset '\{text\}'"):  # a KeyError before
        load_task("{text}")

    multi = Features(text=Value("string"), labels=Sequence(ClassLabel(names=["joy", "anger"])))
    train = Dataset.from_dict(dict(text=["a", "b"], labels=[[0, 1], [0]]), features=multi)
    _fake_hub(monkeypatch, DatasetDict(train=train))
    with pytest.raises(PeftlabError) as raised:
        load_task("fake/emotions", label_column="labels")
    assert str(raised.value) == (
        "The Hub dataset 'fake/emotions' has several labels per row in its label column 'labels' (a multi-label "
        "task); a classification task here needs one label per row."
    )


def test_a_hub_dataset_with_only_a_train_split_holds_out_at_most_1000_rows(monkeypatch):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features(text=Value("string"), label=ClassLabel(names=["a", "b"]))
    train = Dataset.from_dict(
        dict(text=[f"z{i}" for i in range(8000)], label=[i % 4 == 0 for i in range(8000)]), features=features
    )
    _fake_hub(monkeypatch, DatasetDict(train=train))
    task = load_task("fake/train-only")
    assert _names(task, task.test) == {"a": 750, "b": 250}  # 20 % would be 1,600 texts to score per run
    assert len(task.train) == 7000 and not {r["text"] for r in task.train} & {r["text"] for r in task.test}


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)")])
def test_a_hub_dataset_too_large_for_memory_is_not_said_as_one_the_hub_lacks(monkeypatch, error):
    """Memory run out while loading a Hub dataset read "Could not load the dataset ... (the Hub is unreachable or has
    no such dataset: MemoryError)", a bad input's sentence; it is raised as itself (the UI and CLI tell it so)."""

    def failing(config):
        raise error

    _fake_hub(monkeypatch, failing)
    with pytest.raises(type(error)) as raised:
        load_task("someone/large-reviews")
    assert raised.value is error
