"""Inputs people really give: demonstrations beyond the pool, label-word search on small data, label words a
model cannot spell or written with a tokenizer's markers, and files in the encodings and shapes people save.

Each is handled right or refused in one sentence that says what to do; none is scored as something else.
"""

from __future__ import annotations

import codecs
import json

import pytest

from peftlab.autoprompt import AutoPromptConfig, run_autoprompt
from peftlab.cloze import evaluate
from peftlab.errors import PeftlabError
from peftlab.prompts import Prompt, Template, Verbalizer
from peftlab.rlhf.data import load_demonstrations
from peftlab.tasks import Task, load_task

TEMPLATE = "Review: {text}\nSentiment:{mask}"
WORDS = {"negative": ["bad"], "positive": ["great"]}
ROWS = [("a great movie and a fun plot", "positive"), ("the acting was awful", "negative")] * 6


# ---------------------------------------------------------------- demonstrations


def test_more_demonstrations_than_the_pool_holds_are_reported_as_used(tiny_causal, tiny_task):
    result = evaluate(tiny_causal, tiny_task, TEMPLATE, WORDS, shots_in_context=40, limit=2)
    settings = result.summary()
    assert settings["shots_in_context"] == len(tiny_task.train) == 12 and settings["shots_in_context_asked"] == 40
    assert settings["demonstrations_per_label"] == {"negative": 6, "positive": 6}


def test_an_unbalanced_pool_says_how_many_demonstrations_of_each_label(tiny_causal):
    rows = [{"text": "bad plot", "label": 0}] * 2 + [{"text": f"great film {i}", "label": 1} for i in range(8)]
    task = Task("lopsided", ["negative", "positive"], ["text"], train=rows, test=rows[:2] + rows[-2:])
    settings = evaluate(tiny_causal, task, TEMPLATE, WORDS, shots_in_context=6, limit=2).summary()
    assert settings["shots_in_context"] == 6 and settings["demonstrations_per_label"] == {"negative": 2, "positive": 4}


# ---------------------------------------------------------------- AutoPrompt's sizes, in its own terms


def small_task(per_class: int) -> Task:
    rows = [
        {"text": f"{text} {i}", "label": int(label == "positive")}
        for i, (text, label) in enumerate(ROWS * (per_class // 6 + 1))
        if i < 2 * per_class
    ]
    return Task("small-upload", ["negative", "positive"], ["text"], train=rows, test=rows[:4])


def test_label_word_search_uses_the_commands_train_size(tiny_causal):
    task = small_task(10)  # 10 examples per class, as in a small upload
    config = AutoPromptConfig(
        template="{text} [T] {mask}", iterations=1, candidates=2, batch_size=4, train_size=8, test_limit=4
    )
    result = run_autoprompt(tiny_causal, task, None, config)  # label words searched first, on 4 per class
    assert set(result.verbalizer) == {"negative", "positive"} and all(result.verbalizer.values())
    with pytest.raises(PeftlabError) as raised:
        run_autoprompt(tiny_causal, task, None, AutoPromptConfig(template="{text} [T] {mask}", train_size=64))
    assert str(raised.value) == (
        "A train size of 64 takes 32 examples of each class for training and as many again for dev, but class "
        "'negative' has only 10 in the training pool of 'small-upload'; use a train size of at most 10."
    )
    with pytest.raises(PeftlabError, match=r"^A train size of 2 takes 1 example of each class for training and "):
        run_autoprompt(tiny_causal, small_task(1), None, AutoPromptConfig(template="{text} [T] {mask}", train_size=2))


# ---------------------------------------------------------------- label words


@pytest.mark.parametrize(("word", "plain"), [("Ġgreat", "great"), ("▁great", "great"), ("##ing", "ing")])
def test_label_words_with_a_tokenizers_marker_are_refused_with_the_plain_word(word, plain):
    with pytest.raises(PeftlabError) as raised:
        Verbalizer.parse({"negative": ["bad"], "positive": [word]}, ["negative", "positive"])
    assert str(raised.value) == (
        f"The label word {word!r} carries a tokenizer's own marker (Ġ, ▁ or ##); write the plain word {plain!r}: "
        "the space before it is added where the template needs one."
    )


def test_a_label_word_the_vocabulary_cannot_spell_is_refused(tiny_mlm):
    prompt = Prompt(
        Template.parse(TEMPLATE, ["text"]),
        Verbalizer.parse({"negative": ["bad"], "positive": ["ßuper"]}, ["negative", "positive"]),
    )
    with pytest.raises(PeftlabError) as raised:
        prompt.queries(tiny_mlm, {"text": "a film", "label": 0})
    assert str(raised.value) == (
        "The label word 'ßuper' has no spelling in tiny-bert's vocabulary (it would be scored as the unknown token "
        "'[UNK]'); pick a word the model can write."
    )


# ---------------------------------------------------------------- files as people save them

CSV_ROWS = ["text,label"] + [f"{text} {i},{label}" for i, (text, label) in enumerate(ROWS)]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("excel.csv", codecs.BOM_UTF8 + "\n".join(CSV_ROWS).encode()),  # Excel's "CSV UTF-8"
        ("unicode.csv", "\n".join(CSV_ROWS).replace(",", "\t").encode("utf-16")),  # Excel's "Unicode text"
        ("europe.csv", "\n".join(CSV_ROWS).replace(",", ";").encode()),  # semicolons, as many locales save
        ("windows.csv", "\r\n".join(CSV_ROWS).encode()),
        # every data line closed by a comma, the header not: the texts were read as the table's index
        ("closed.csv", "\n".join([CSV_ROWS[0]] + [row + "," for row in CSV_ROWS[1:]]).encode()),
        ("tabs.tsv", "\n".join(CSV_ROWS).replace(",", "\t").encode()),  # the browser refused .tsv and .txt
        ("export.txt", "\n".join(CSV_ROWS).replace(",", ";").encode()),
        ("array.json", json.dumps([{"text": t + f" {i}", "label": lab} for i, (t, lab) in enumerate(ROWS)]).encode()),
        (
            "lines.jsonl",
            codecs.BOM_UTF8
            + "\n\n".join(json.dumps({"text": t + f" {i}", "label": lab}) for i, (t, lab) in enumerate(ROWS)).encode(),
        ),
    ],
)
def test_uploads_in_the_encodings_and_shapes_people_save_load_the_same_rows(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    task = load_task(str(path))
    assert task.label_names == ["negative", "positive"]
    loaded = sorted((r["text"], task.label_names[r["label"]]) for r in task.train + task.test)
    assert loaded == sorted((f"{t} {i}", label) for i, (t, label) in enumerate(ROWS))  # each text with its own label


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (  # where, and now how to mend it
            "ragged.csv",
            b"text,label\nfine,a\nshares fell, then rose,b\n",
            "The file 'ragged.csv' could not be read as CSV (record 3 has 3 cells, its header 2); a cell holding a "
            "comma, a quote or a line break goes in double quotes, a quote inside it doubled.",
        ),
        (  # on the first data record pandas read the texts as the index: every column shifted, silently
            "first-ragged.csv",
            b"text,label\nLoved it, a gem,pos\n"
            + b"".join(b"film %d,%s\n" % (i, b"pos" if i % 2 else b"neg") for i in range(20)),
            "The file 'first-ragged.csv' could not be read as CSV (record 2 has 3 cells, its header 2); a cell holding "
            "a comma, a quote or a line break goes in double quotes, a quote inside it doubled.",
        ),
        (
            "latin.csv",
            "text,label\ncafé crème,positive\n".encode("latin-1"),
            "The file 'latin.csv' could not be read as UTF-8 text (line 2 holds the byte 0xe9); save it as UTF-8 (in "
            "Excel: 'CSV UTF-8'), so that no character is read as another.",
        ),
        (  # "byte 15" counted from 0 in the whole file, and Excel's CSV advice for a JSON Lines file
            "latin.jsonl",
            '{"text": "fine", "label": "a"}\n{"text": "café", "label": "b"}\n'.encode("latin-1"),
            "The file 'latin.jsonl' could not be read as UTF-8 text (line 2 holds the byte 0xe9); save it as UTF-8, "
            "so that no character is read as another.",
        ),
        (
            "sheet.csv",
            b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
            "The file 'sheet.csv' is not a text file (a spreadsheet or another binary format?); save it as CSV UTF-8 "
            "or as JSON Lines.",
        ),
        (  # the browser's "Invalid file type: data.xlsx" said nothing of how to save it
            "data.xlsx",
            b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)),
            "The file 'data.xlsx' is a spreadsheet; save it as CSV UTF-8 (in Excel: File > Save As > CSV UTF-8) and "
            "use that.",
        ),
        (  # "upload a CSV or JSONL file" was said on the command line too
            "empty.csv",
            b"\n",
            "The file 'empty.csv' is empty; give a CSV file with a header line and rows, or a JSON Lines file with one "
            "object per line.",
        ),
        (
            "one.json",
            json.dumps({"data": [{"text": "a", "label": "b"}]}, indent=2).encode(),
            "The file 'one.json' could not be read as JSON lines (one JSON object per line) or a JSON array (it is one "
            "JSON object, not one object per line or an array of objects).",
        ),
        (  # a parser's offset into the whole file ("position 258") does not help to find the line
            "broken.jsonl",
            b'{"text": "fine", "label": "a"}\n\n{"text": "x" "label": "b"}\n',
            "Line 3 of 'broken.jsonl' is not valid JSON (Expecting ',' delimiter at column 14); write one JSON object "
            "per line.",
        ),
        (  # the parser's sentence ended on "starting at", with nothing after
            "unterminated.jsonl",
            b'{"text": "fine", "label": "a"}\n{"text": "never closed}\n{"text": "x", "label": "b"}\n',
            "Line 2 of 'unterminated.jsonl' is not valid JSON (Unterminated string starting at column 10); write one "
            "JSON object per line.",
        ),
        (
            "strings.jsonl",
            b'{"text": "fine", "label": "a"}\n"just a string"\n',
            "Line 2 of 'strings.jsonl' is a JSON string, not an object; write one JSON object per line.",
        ),
        (
            "numbers.json",
            b"[1, 2, 3]",
            "The file 'numbers.json' could not be read as JSON lines (one JSON object per line) or a JSON array (the "
            "JSON array holds something other than objects).",
        ),
    ],
)
def test_files_that_cannot_be_read_as_written_are_refused_with_what_to_do(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PeftlabError) as raised:
        load_task(str(path))
    assert str(raised.value) == message


def test_rlhf_demonstrations_saved_with_a_byte_order_mark_load(tmp_path):
    path = tmp_path / "demos.jsonl"
    lines = [
        json.dumps({"prompt": "Review a film.", "response": "Great."}),
        json.dumps({"prompt": "p", "response": "r"}),
    ]
    path.write_bytes(codecs.BOM_UTF8 + "\n".join(lines).encode())
    assert [d.prompt for d in load_demonstrations(path)] == ["Review a film.", "p"]
    path.write_bytes("\n".join(lines).encode("utf-16"))
    assert len(load_demonstrations(path)) == 2


# ---------------------------------------------------------------- the same kinds through the command line


def cli(capsys, *argv):
    from peftlab.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def upload(tmp_path):
    path = tmp_path / "reviews.csv"
    long_review = "the end was bad " + " ".join(["the film was good and the plot was great"] * 400)
    path.write_text("\n".join(CSV_ROWS + [f'"{long_review}",negative'] * 3), encoding="utf-8")
    return str(path)


def test_the_cli_scores_a_long_text_after_the_mask_and_reports_what_it_used(capsys, tiny_causal_folder, upload):
    code, out, err = cli(
        capsys,
        "cloze",
        "--model",
        tiny_causal_folder,
        "--task",
        upload,
        "--template",
        "Sentiment:{mask}\nReview: {text}",
        "--verbalizer",
        json.dumps(WORDS),
        "--calibration",
        "mean",
        "--limit",
        "1",
        "--shots-in-context",
        "40",
        "--json",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["n"] == 1 and record["calibration_reference_texts"] > 0
    assert (
        record["shots_in_context_asked"] == 40
        and record["shots_in_context"] == sum(record["demonstrations_per_label"].values()) < 40
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--verbalizer", '{"negative": ["bad"], "positive": ["Ġgreat"]}'], "carries a tokenizer's own marker"),
        (["--task", "LATIN"], "could not be read as UTF-8 text"),
    ],
)
def test_the_cli_refuses_what_the_library_refuses_in_one_line(
    capsys, tmp_path, tiny_causal_folder, upload, argv, message
):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé,positive\nthé,negative\n".encode("latin-1"))
    argv = [str(latin) if a == "LATIN" else a for a in argv]
    code, out, err = cli(capsys, "cloze", "--model", tiny_causal_folder, "--task", upload, "--limit", "2", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err
