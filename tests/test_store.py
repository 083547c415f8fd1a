"""The results store: rows in, rows out, per owner, two writers at once, export and import, restart."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from peftlab.cache import cache_dir
from peftlab.errors import PeftlabError
from peftlab.store import COLUMNS, ResultRow, ResultStore, fingerprint, per_class_f1, store_path
from peftlab.tasks import Task
from peftlab.uploads import short_record

TASK = Task(
    "tiny",
    ["negative", "positive"],
    ["text"],
    train=[],
    test=[{"text": t, "label": y} for t, y in (("good", 1), ("bad", 0), ("fine", 1), ("awful", 0))],
)


def row(method="zero-shot", seed=None, predicted=(1, 0, 0, 0), **values) -> ResultRow:
    return ResultRow.scored(
        "cloze", "tiny-llama", TASK, method, {"template": "{text} {mask}"}, TASK.test, predicted, seed=seed, **values
    )


def test_a_scored_row_carries_its_metrics_computed_by_hand():
    r = row(predicted=(1, 0, 0, 0))  # right, right, wrong, right
    assert r.accuracy == 0.75 and r.gold == [1, 0, 1, 0] and r.predictions == [1, 0, 0, 0]
    # negative: tp 2, predicted 3, gold 2 -> 4/5; positive: tp 1, predicted 1, gold 2 -> 2/3
    assert r.per_class_f1 == pytest.approx({"negative": 0.8, "positive": 2 / 3})
    assert r.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert r.test_fingerprint == fingerprint(TASK.test) != fingerprint(TASK.test[:3])
    assert per_class_f1([0, 0], [1, 1], ["a", "b"]) == {"a": 0.0, "b": 0.0}


def test_an_export_from_before_macro_f1_left_out_absent_labels_still_imports(tmp_path):
    """Macro-F1 now averages the gold labels' F1s alone; an export of a 3-class row whose texts had 2 classes, written
    when a third label counted as 0, still imports with its figure, and a figure neither way computes is refused."""
    three = Task("tiny", ["negative", "positive", "neutral"], ["text"], train=[], test=TASK.test)
    r = ResultRow.scored("cloze", "tiny-llama", three, "zero-shot", {}, three.test, (1, 0, 0, 0))
    assert r.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([r])
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    good = json.loads(exported.read_text())
    for n, figure in enumerate([(0.8 + 2 / 3) / 3, (0.8 + 2 / 3) / 2]):
        exported.write_text(json.dumps({**good, "id": f"old-{n}", "macro_f1": figure}) + "\n")
        assert ResultStore(tmp_path / f"other-{n}.sqlite").import_(exported).sentence() == "1 result added."
    exported.write_text(json.dumps({**good, "id": "forged", "macro_f1": 0.5}) + "\n")
    with pytest.raises(PeftlabError, match=r"\(macro_f1 0.5 is not that of its predictions, 0.7333\)"):
        ResultStore(tmp_path / "forged.sqlite").import_(exported)


def test_rows_survive_a_restart_and_are_read_per_owner(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultStore(path).add([row(), row("lora", seed=13)])
    ResultStore(path, owner="visitor-a").add([row("head", seed=21)])
    reopened = ResultStore(path)
    assert [r.method for r in reopened.rows()] == ["zero-shot", "lora"]
    assert [r.method for r in ResultStore(path, owner="visitor-a").rows()] == ["head"]
    assert reopened.rows(method="lora")[0].predictions == [1, 0, 0, 0] and reopened.rows(method="lora")[0].seed == 13
    with pytest.raises(PeftlabError, match=r"^Results have no column colour"):
        reopened.rows(colour="red")


def test_numpy_and_torch_numbers_are_stored_as_numbers(tmp_path):
    """An np.int64 K (`Task.few_shot` takes one, so a loop over np.array([4]) gives one) was written as its 8 raw
    bytes, and every later read of the store failed on it, that row's own deletion included."""
    import torch

    store = ResultStore(tmp_path / "r.sqlite")
    made = row("lora", seed=np.int64(13), k=np.int64(4), trainable_params=np.int64(1000))
    made.train_seconds, made.peak_memory_mb = np.float32(1.5), torch.tensor(2.0)
    made.settings |= {"r": np.int64(8), "scores": np.array([0.5, 0.25])}
    store.add([made])
    (kept,) = store.rows()
    assert (kept.seed, kept.k, kept.trainable_params, kept.train_seconds, kept.peak_memory_mb) == (
        13,
        4,
        1000,
        1.5,
        2.0,
    )
    assert type(kept.k) is int and kept.settings["r"] == 8 and kept.settings["scores"] == [0.5, 0.25]
    assert store.delete([kept.id]) == 1


def test_a_json_lines_export_with_any_character_is_imported_back(tmp_path):
    """U+0085 (a next-line character pasted from a web page) was written raw, and the export's own import refused the
    file as "not a text file"."""
    store = ResultStore(tmp_path / "r.sqlite")
    made = row()
    made.settings |= {"template": "Review: {text}\x85 Sentiment:{mask}\x7f"}
    store.add([made])
    store.export(tmp_path / "rows.jsonl")
    assert "\x85" not in (tmp_path / "rows.jsonl").read_text(encoding="utf-8")
    other = ResultStore(tmp_path / "other.sqlite")
    assert other.import_(tmp_path / "rows.jsonl").sentence() == "1 result added."
    assert other.rows()[0].settings["template"] == "Review: {text}\x85 Sentiment:{mask}\x7f"


def test_a_csv_export_with_a_control_character_in_a_name_is_imported_back(tmp_path):
    """A task named with U+0085 was written raw into the CSV (a cell has no escapes), and the export's own import
    refused the file as "not a text file"."""
    store = ResultStore(tmp_path / "r.sqlite")
    made = row()
    made.task = "reviews\x85 2024"
    store.add([made])
    store.export(tmp_path / "rows.csv")
    other = ResultStore(tmp_path / "other.sqlite")
    assert other.import_(tmp_path / "rows.csv").sentence() == "1 result added."
    assert other.rows()[0].task == "reviews\x85 2024"


def test_an_import_racing_another_of_the_same_file_adds_nothing_twice(tmp_path, monkeypatch):
    """Two imports of one file at once: one said "300 results added.", the other failed with a bare IntegrityError
    (the rows the first wrote after the second had looked)."""
    ResultStore(tmp_path / "a.sqlite").add([row(), row("lora", seed=13)])
    ResultStore(tmp_path / "a.sqlite").export(tmp_path / "rows.jsonl")
    store, looked, calls = ResultStore(tmp_path / "b.sqlite"), ResultStore._ids_of_other_owners, []

    def meanwhile(self, ids):
        calls.append(ids)
        if len(calls) == 1:  # the other import runs whole between this one's look at the store and its write
            ResultStore(tmp_path / "b.sqlite").import_(tmp_path / "rows.jsonl")
        return looked(self, ids)

    monkeypatch.setattr(ResultStore, "_ids_of_other_owners", meanwhile)
    assert store.import_(tmp_path / "rows.jsonl").sentence() == "0 results added; 2 were already stored."
    assert len(store.rows()) == 2


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultStore(path)
    script = (
        "import sys\nfrom tests.test_store import row\nfrom peftlab.store import ResultStore\n"
        "store = ResultStore(sys.argv[1])\n"
        "for i in range(60):\n    store.add([row('w' + sys.argv[2], seed=i)])\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path), str(n)]) for n in (1, 2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    rows = ResultStore(path).rows()
    assert len(rows) == 120 and {r.method for r in rows} == {"w1", "w2"}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".CSV", ".JSONL"])  # "not .CSV" refused a name as typed
def test_export_and_import_give_back_the_same_rows(tmp_path, suffix):
    source = ResultStore(tmp_path / "a.sqlite")
    source.add([row(), row("lora", seed=13, trainable_params=10, train_seconds=1.5)])
    exported = tmp_path / f"rows{suffix}"
    assert source.export(exported) == 2
    target = ResultStore(tmp_path / "b.sqlite", owner="me")
    assert target.import_(exported).sentence() == "2 results added."
    assert target.import_(exported).sentence() == "0 results added; 2 were already stored."  # kept once
    assert len(target.rows()) == 2
    for before, after in zip(source.rows(), target.rows()):
        assert {**before.__dict__, "owner": "me"} == after.__dict__


def test_a_visitor_importing_anothers_export_gets_copies_and_takes_nothing_away(tmp_path):
    """Visitor B imported visitor A's export on a public Space: the rows' ids were A's, and the import replaced A's
    rows with B's, so A's results vanished from A's list and compare."""
    path = tmp_path / "r.sqlite"
    a, b = ResultStore(path, owner="visitor-a"), ResultStore(path, owner="visitor-b")
    ids = a.add([row(), row("lora", seed=13)])
    a.export(tmp_path / "a.jsonl")

    assert b.import_(tmp_path / "a.jsonl").sentence() == "2 results added."
    assert [r.id for r in a.rows()] == ids  # A keeps every row
    copies = [r.id for r in b.rows()]
    assert len(copies) == 2 and not set(copies) & set(ids)
    assert [r.method for r in b.rows()] == [r.method for r in a.rows()]
    assert b.import_(tmp_path / "a.jsonl").sentence() == "0 results added; 2 were already stored."  # same copies
    assert a.import_(tmp_path / "a.jsonl").sentence() == "0 results added; 2 were already stored."
    # B's export of the copies names no owner (a session id lets its holder read and delete that visitor's rows),
    # and A importing it back gets nothing twice (every row was listed twice)
    b.export(tmp_path / "b.jsonl")
    assert {json.loads(line)["owner"] for line in (tmp_path / "b.jsonl").read_text().splitlines()} == {""}
    assert a.import_(tmp_path / "b.jsonl").sentence() == "0 results added; 2 were already stored."
    b.delete(copies)
    assert [r.id for r in a.rows()] == ids and b.rows() == []
    with pytest.raises(sqlite3.IntegrityError):  # a row is never replaced by another with its id
        b.add([a.rows()[0]])
    assert [r.owner for r in ResultStore(path, owner="visitor-a").rows()] == ["visitor-a"] * 2


def test_an_id_start_that_fits_several_results_says_how_many(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    ids = store.add([row("lora", seed=seed) for seed in range(17)])  # 17 ids: two start with the same hex digit
    first = next(i[0] for n, i in enumerate(ids) if any(j[0] == i[0] for j in ids[n + 1 :]))
    sharing = sum(i.startswith(first) for i in ids)
    with pytest.raises(PeftlabError) as raised:
        store.get(first)
    assert str(raised.value) == (
        f"{sharing} results have ids starting with '{first}'; give more of the id's characters (list the results to "
        "see them)."
    )


def test_delete_and_bad_files_are_one_sentence(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    (kept, gone) = store.add([row(), row("lora")])
    assert store.delete([gone[:8], gone[:6]]) == 1 and [r.id for r in store.rows()] == [kept]  # one result, named twice
    with pytest.raises(PeftlabError) as raised:  # the one row's id starts so, but a typo would name another
        store.delete([kept[:1]])
    assert str(raised.value) == (
        f"Give at least 4 characters of each id to delete (the list shows 8); '{kept[0]}' is too short to be sure "
        "which result you mean. Nothing was deleted."
    )
    assert [r.id for r in store.rows()] == [kept]
    with pytest.raises(PeftlabError) as raised:  # beside an id that names one: was that one deleted?
        store.delete([kept[:8], "zzzz"])
    assert str(raised.value) == (
        "No result has an id starting with 'zzzz'; list the results to see their ids. Nothing was deleted."
    )
    with pytest.raises(PeftlabError) as raised:  # every id starts with '': not "(0 do)"
        store.delete([""])
    assert str(raised.value) == (
        "Give a result's id (its first characters are enough); list the results to see them. Nothing was deleted."
    )
    with pytest.raises(PeftlabError, match=r"^A results file ends in \.jsonl or \.csv, not \.txt\.$"):
        store.export(tmp_path / "rows.txt")
    with pytest.raises(
        PeftlabError, match=r"^A results file ends in \.jsonl or \.csv, not 'rows', a name without one\.$"
    ):
        store.export(tmp_path / "rows")
    for folder in (tmp_path, tmp_path / "saved.csv"):  # importing a folder was told how results are "exported"
        folder.mkdir(exist_ok=True)
        with pytest.raises(PeftlabError) as raised:
            store.import_(folder)
        assert str(raised.value) == f"'{folder}' is a folder; give a results file ending in .jsonl or .csv."
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    good = exported.read_text().splitlines()[0]
    hint = '; import a file that `results export` or the Compare tab\'s "Export all" wrote.'
    cases = {  # the first bad line, in words, whatever the file's shape
        "missing.jsonl": (
            good + "\n\n" + json.dumps({"method": "x"}) + "\n",
            "Line 3 of 'missing.jsonl' is not a peftlab result (a row has no kind, model, task, test_fingerprint)"
            + hint,
        ),
        "broken.jsonl": (
            good + "\n{'method': 1}\n",
            "Line 2 of 'broken.jsonl' is not valid JSON (Expecting property name enclosed in double quotes at "
            "column 2); write one JSON object per line.",
        ),
        "list.jsonl": (
            "[1, 2]\n",
            "Line 1 of 'list.jsonl' is a JSON array, not an object; write one JSON object per line.",
        ),
        "unterminated.csv": (  # a quote left open: pandas' ParserError was a bare "Error" badge in the app
            'a,b,c\n1,2\n"unterminated,3',
            "The file 'unterminated.csv' could not be read as CSV (Error tokenizing data. C error: EOF inside string "
            "starting at row 2); a cell holding a comma, a quote or a line break goes in double quotes, a quote inside "
            "it doubled.",
        ),
        "empty.jsonl": (  # "0 results added." with exit code 0
            "",
            "'empty.jsonl' holds no results" + hint,
        ),
        "notalist.jsonl": (  # "Expecting value: line 1 column 1 (char 0)" named no field
            json.dumps({**json.loads(good), "predictions": "notalist"}) + "\n",
            "Line 1 of 'notalist.jsonl' is not a peftlab result (its predictions 'notalist' is not a JSON list)" + hint,
        ),
        "other.csv": (
            "kind,text,label\n,good film,1\n",
            "Line 2 of 'other.csv' is not a peftlab result (a row has no kind, model, task, test_fingerprint, method)"
            + hint,
        ),
        "empty.csv": ("\n", "'empty.csv' holds no results" + hint),  # was told how to quote a CSV's cells
        "table.csv": (  # the Compare tab's table, told it was not what that tab exports
            "method,K,runs,accuracy\nzero-shot,,1,90.0%\n",
            "'table.csv' is a table, not exported results (its columns begin method, K, runs, accuracy): a dataset "
            "goes in a tab's upload box, and a comparison's table cannot be imported" + hint,
        ),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content)
        with pytest.raises(PeftlabError) as raised:
            store.import_(tmp_path / name)
        assert str(raised.value) == message
    (tmp_path / "latin1.csv").write_bytes("method\ncafé\n".encode("latin-1"))
    with pytest.raises(PeftlabError, match=r"^The file 'latin1.csv' could not be read as UTF-8 text"):
        store.import_(tmp_path / "latin1.csv")
    assert len(store.rows()) == 1  # nothing half-imported


def test_an_import_refuses_figures_no_run_can_produce(tmp_path):
    """An exported row edited to accuracy 1.7 was imported and topped the Compare table at 170 %."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row(predicted=(1, 0, 0, 0))])  # accuracy 0.75
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    good = json.loads(exported.read_text())
    hint = '; import a file that `results export` or the Compare tab\'s "Export all" wrote.'
    cases = {
        "accuracy 1.7 is outside 0 to 1": {"accuracy": 1.7},
        "macro_f1 -0.3 is outside 0 to 1": {"macro_f1": -0.3},
        "accuracy nan is outside 0 to 1": {"accuracy": float("nan")},
        "class 'positive''s F1 2 is outside 0 to 1": {"per_class_f1": {"negative": 0.8, "positive": 2}},
        "k 0 is below 1": {"k": 0},
        "train_seconds -1.0 is negative": {"train_seconds": -1},
        "it has 3 predictions for 4 gold labels": {"predictions": [1, 0, 0]},
        "accuracy 0.5 is not that of its predictions, 0.7500": {"accuracy": 0.5},
        # what a fresh user typed into an export, each imported with "1 result added."
        "its predictions reach class 9, but its per_class_f1 names 2 (0 to 1)": {
            "predictions": [9] * 4,
            "gold": [9] * 4,
            "accuracy": 1.0,
        },
        "its kind 'banana' is none of cloze, autoprompt, trained, pet, rlhf": {"kind": "banana"},
        "its predictions hold 'negative', not a class index (0, 1, ...)": {"predictions": ["negative"] * 4},
        "it has 4 predictions but no accuracy": {"accuracy": None},  # listed blank, left out of the report unsaid
        "its k 2.7 is not a whole number": {"k": 2.7},  # cut to 2: a line of its own in the report
        "its settings say 5 rows were scored, but it has 4 predictions": {
            "settings": {**good["settings"], "rows_scored": 5}
        },
        "macro_f1 0.9 is not that of its predictions, 0.7333": {"macro_f1": 0.9},
        "it has predictions but no per_class_f1, which names its classes": {"per_class_f1": {}},
        # the report wrote it into its page as it stood: HTML in a shared export ran in the reader's browser
        "its test_fingerprint '<img src=x onerror=f()>' is not 16 hexadecimal digits": {
            "test_fingerprint": "<img src=x onerror=f()>"
        },
    }
    for reason, change in cases.items():
        edited = tmp_path / "edited.jsonl"
        edited.write_text(json.dumps({**good, **change, "id": "new"}) + "\n")
        with pytest.raises(PeftlabError) as raised:
            store.import_(edited)
        assert str(raised.value) == f"Line 1 of 'edited.jsonl' is not a peftlab result ({reason}){hint}"
    edited.write_text(json.dumps({**good, "id": "new", "accuracy": 0.75}) + "\n")  # the same figure, typed again
    assert ResultStore(tmp_path / "other.sqlite").import_(edited).sentence() == "1 result added."
    assert store.import_(edited).sentence() == "0 results added; 1 was already stored."  # the same result


def test_an_import_refuses_values_of_the_wrong_type_in_one_sentence(tmp_path):
    """A list for a model, 10**400 for K, infinite memory, "lots" of model parameters: each was imported ("1 result
    added.") and then broke the Compare tab and the report, or crashed the import as a bug in peftlab."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row(predicted=(1, 0, 0, 0))])
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    good = json.loads(exported.read_text()) | {"id": "new"}
    hint = '; import a file that `results export` or the Compare tab\'s "Export all" wrote.'
    cases = {
        "its model ['a'] is not text": {"model": ["a"]},
        "its device {'a': 1} is not text": {"device": {"a": 1}},
        "its id ['x'] is not text": {"id": ["x"]},
        "its k [1] is not a number": {"k": [1]},
        "its k 100000000000000000000000000... is too large": {"k": 10**400},
        "k 1e+20 is too large": {"k": 10**20},
        "trainable_params 1e+30 is too large": {"trainable_params": 1e30},
        "peak_memory_mb inf is not a finite number": {"peak_memory_mb": float("inf")},
        "train_seconds nan is not a finite number": {"train_seconds": float("nan")},
        "class 'positive''s F1 'x' is not a number": {"per_class_f1": {"negative": 0.8, "positive": "x"}},
        "its metrics' model_params 'lots' is not a number above 0": {"metrics": {"model_params": "lots"}},
        "its metrics' ppo_mean_kl 'high' is not a number": {"metrics": {"ppo_mean_kl": "high"}},
        "its settings' rows_in_split 'x' is not a whole number": {
            "settings": {**good["settings"], "rows_in_split": "x"}
        },
        "its settings' rows_scored '4' is not a whole number": {"settings": {**good["settings"], "rows_scored": "4"}},
    }
    edited = tmp_path / "edited.jsonl"
    for reason, change in cases.items():
        edited.write_text(json.dumps({**good, **change}) + "\n")
        with pytest.raises(PeftlabError) as raised:
            store.import_(edited)
        assert str(raised.value) == f"Line 1 of 'edited.jsonl' is not a peftlab result ({reason}){hint}"
    assert len(store.rows()) == 1  # nothing half-imported
    edited.write_text(json.dumps(good | {"k": 2, "metrics": {"model_params": 1000}}) + "\n")
    assert store.import_(edited).sentence() == "1 result added."  # the same row, well typed


def test_a_csv_cut_short_is_refused_not_imported_as_a_second_result(tmp_path):
    """An export cut in the middle of a line (a copy stopped half-way) was imported, "1 result added.": its missing
    cells read as empty, so the store held the result twice, the copy stamped with the time of the import."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row(predicted=(1, 0, 0, 0)), row("lora", seed=13, k=4)])
    exported = tmp_path / "rows.csv"
    store.export(exported)
    header, first, second = csv.reader(io.StringIO(exported.read_text()))
    cut = tmp_path / "cut.csv"
    with cut.open("w", newline="") as file:  # stopped after the second result's scoring seconds
        csv.writer(file).writerows([header, first, second[: header.index("scoring_seconds") + 1]])
    with pytest.raises(PeftlabError) as raised:
        store.import_(cut)
    assert re.fullmatch(
        r"Line 3 of 'cut.csv' has \d+ of the header's 23 cells: the file looks cut short; import a file that .*",
        str(raised.value),
    )
    assert len(store.rows()) == 2
    # what the csv module reads otherwise than pandas is left to pandas: a cell of 200,000 characters (43k
    # predictions), a line of spaces, an old Mac's line ends
    wide = tmp_path / "wide.csv"
    wide.write_text("a,b\n" + "x" * 200_000 + ",1\n   \ny,2\n")
    assert short_record(wide.read_text()) is None
    assert short_record("a,b\r1,2\r3,4\r") is None
    assert short_record("a,b\r\n1,2\r\n3\r\n") == (3, 1, 2)


def test_the_listing_keeps_k_and_seed_whole_and_an_export_of_nothing_is_refused(tmp_path):
    """K and seed listed as "4.0" and "13.0" beside a zero-shot row without them; `results export --task nope` wrote
    an empty file and said "0 results written"."""
    store = ResultStore(tmp_path / "r.sqlite")
    with pytest.raises(PeftlabError, match=r"^No stored results; nothing was written\.$"):
        store.export(tmp_path / "rows.csv")
    store.add([row(), row("lora", seed=13, k=4)])
    listed = store.listing()
    assert listed["k"].tolist()[1] == 4 and str(listed["k"].dtype) == "Int64" and listed["k"].isna().tolist()[0]
    # what made each row and how many texts it scored: two zero-shot rows at different accuracies told nothing else
    assert listed[["kind", "texts"]].values.tolist() == [[r.kind, r.settings["rows_scored"]] for r in store.rows()]
    assert listed.astype(object).fillna("").to_string(index=False).count("13.0") == 0
    with pytest.raises(PeftlabError, match=r"^No stored results of task 'nope'; nothing was written\.$"):
        store.export(tmp_path / "rows.csv", task="nope")
    with pytest.raises(PeftlabError) as raised:  # one letter off: told only that nothing was stored
        store.export(tmp_path / "rows.csv", task="tinny", model="tiny-llama")
    assert str(raised.value) == (
        "No stored results of task 'tinny' and model 'tiny-llama' (did you mean task 'tiny'?); nothing was written."
    )
    assert not (tmp_path / "rows.csv").exists()


def test_an_import_never_fails_on_an_id_and_never_adds_a_result_twice(tmp_path):
    """Re-importing an export edited in one figure, or one saved without some columns, failed with sqlite's "UNIQUE
    constraint failed: results.id", reported as a bug; an export without id and time columns was added again at
    every import; a file pasted twice said "10 were already stored" of 5 results."""
    store = ResultStore(tmp_path / "r.sqlite")
    kept = store.add([row(), row("lora", seed=13)])
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    lines = [json.loads(line) for line in exported.read_text().splitlines()]

    changed = tmp_path / "changed.jsonl"
    changed.write_text(json.dumps({**lines[0], "train_seconds": 9.5}) + "\n")
    with pytest.raises(PeftlabError) as raised:
        store.import_(changed)
    assert str(raised.value) == (
        f"Line 1 of 'changed.jsonl' has the id of the stored result {kept[0][:8]} with other figures (train_seconds); "
        "delete the stored one to replace it, or empty the row's id to add it as a result of its own."
    )
    changed.write_text(json.dumps({**lines[0], "train_seconds": 9.5, "id": ""}) + "\n")
    assert store.import_(changed).sentence() == "1 result added."
    twins = tmp_path / "twins.jsonl"  # one id, two results, in one file
    twins.write_text("".join(json.dumps({**lines[1], "id": "x1", "seed": s}) + "\n" for s in (1, 2)))
    with pytest.raises(PeftlabError) as raised:
        store.import_(twins)
    assert str(raised.value) == (  # "delete the stored one" of two lines of the file named nothing stored
        "Line 2 of 'twins.jsonl' has the id of line 1 of 'twins.jsonl' with other figures (seed); keep one of the two "
        "lines, or empty the row's id to add it as a result of its own."
    )
    assert len(store.rows()) == 3  # nothing of a refused file

    bare = tmp_path / "bare.csv"  # saved without id, created and version: each import stamped them anew
    store.export(bare)
    text = bare.read_text().splitlines()
    import csv

    table = list(csv.DictReader(text))
    with bare.open("w", newline="") as out:
        writer = csv.DictWriter(out, [c for c in table[0] if c not in ("id", "created", "version")])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k not in ("id", "created", "version")} for r in table)
    fresh = ResultStore(tmp_path / "fresh.sqlite")
    assert fresh.import_(bare).sentence() == "3 results added."
    assert fresh.import_(bare).sentence() == "0 results added; 3 were already stored."

    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(exported.read_text() * 2)
    other = ResultStore(tmp_path / "other.sqlite")
    assert other.import_(doubled).sentence() == "2 results added; 2 lines of the file repeated earlier ones."
    assert other.import_(doubled).sentence() == (
        "0 results added; 2 were already stored; 2 lines of the file repeated earlier ones."
    )
    assert len(other.rows()) == 2


def test_an_import_reads_a_csv_a_spreadsheet_saved_with_semicolons(tmp_path):
    """A results CSV saved by a spreadsheet in German or French, cells separated by ';', was "not a peftlab result
    (a row has no kind, model, ...)": the whole header read as one column."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row(), row("lora", seed=13)])
    store.export(tmp_path / "rows.csv")
    import pandas as pd

    pd.read_csv(tmp_path / "rows.csv", dtype=str, keep_default_na=False).to_csv(
        tmp_path / "semicolons.csv", sep=";", index=False
    )
    assert (tmp_path / "semicolons.csv").read_text().startswith("kind;model;task;")
    fresh = ResultStore(tmp_path / "fresh.sqlite")
    assert fresh.import_(tmp_path / "semicolons.csv").sentence() == "2 results added."
    assert [r.predictions for r in fresh.rows()] == [r.predictions for r in store.rows()]


def test_a_database_that_is_not_a_results_store_is_told_and_left_as_it_was(tmp_path):
    """Another program's database got the store's table added to it, and one whose `results` table had other columns
    failed every command with "no such column: owner", reported as a bug in peftlab."""
    tail = "; point PEFTLAB_RESULTS at another file, or move this one away."
    notes = tmp_path / "notes.db"
    with sqlite3.connect(notes) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER, body TEXT)")
    with pytest.raises(PeftlabError) as raised:
        ResultStore(notes)
    assert str(raised.value) == (
        f"The results store {str(notes)!r} (PEFTLAB_RESULTS) is not a peftlab results store (it holds the tables "
        f"notes){tail}"
    )
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE results (id INTEGER, name TEXT)")
    with pytest.raises(PeftlabError) as raised:
        ResultStore(other)
    assert str(raised.value).endswith(
        f"(its results table has no column kind, model, task, {', '.join(COLUMNS[3:-1])}){tail}"
    )
    for path, table in ((notes, "notes"), (other, "results")):
        with sqlite3.connect(path) as connection:
            assert [name for (name,) in connection.execute("SELECT name FROM sqlite_master")] == [table]
    analysed = tmp_path / "analysed.sqlite"  # SQLite's own statistics table is no other program's
    ResultStore(analysed).add([row()])
    with sqlite3.connect(analysed) as connection:
        connection.execute("ANALYZE")
    assert len(ResultStore(analysed).rows()) == 1


def test_rows_stored_before_the_import_checks_are_still_read(tmp_path):
    """An import once stored a number as a row's version; the checks an import makes now must not make the store
    unreadable (every command read every row through them)."""
    path = tmp_path / "r.sqlite"
    ResultStore(path).add([row()])
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE results SET version = 1.5")
    assert [r.version for r in ResultStore(path).rows()] == [1.5]


def test_an_export_from_before_rows_recorded_their_split_is_imported(tmp_path):
    """Rows written before peftlab recorded a scored row's split and rows scored were read, listed and exported, but
    their export was refused whole ("its settings lack split and rows_scored"): a store could not be moved. They
    scored the test split, all of the texts they hold."""
    old = tmp_path / "old.sqlite"
    ResultStore(old).add([row()])
    with sqlite3.connect(old) as connection:
        connection.execute("""UPDATE results SET settings = '{"template": "{text} {mask}"}'""")
    exported = tmp_path / "old.jsonl"
    ResultStore(old).export(exported)
    assert ResultStore(tmp_path / "new.sqlite").import_(exported).sentence() == "1 result added."
    (moved,) = ResultStore(tmp_path / "new.sqlite").rows()
    assert moved.settings == {"split": "test", "rows_scored": 4, "template": "{text} {mask}"}
    assert ResultStore(old).listing()["texts"].tolist() == [4]


def test_a_store_that_cannot_be_written_is_not_called_something_else(tmp_path, monkeypatch):
    """A valid store on a read-only disk was "not a peftlab results store" (SQLite cannot open its write-ahead log)."""
    path = tmp_path / "r.sqlite"
    ResultStore(path).add([row()])

    def unable(*args, **kwargs):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a read-only file system answers
    text = tmp_path / "notes.sqlite"
    text.write_text("text,label\n" * 100)
    with pytest.raises(PeftlabError, match=r"is not a peftlab results store \(file is not a database\)"):
        ResultStore(text)  # read-only or not, what it is comes first
    monkeypatch.setattr(sqlite3, "connect", unable)
    with pytest.raises(PeftlabError) as raised:
        ResultStore(path)
    assert str(raised.value) == (
        f"The results store {str(path)!r} (PEFTLAB_RESULTS) cannot be written here (unable to open database file); "
        "point PEFTLAB_RESULTS at a file in a folder you can write to."
    )


def test_a_row_of_predictions_that_do_not_fit_its_texts_is_refused():
    """1 prediction for 4 texts was broadcast into accuracy 0.5 and an F1 of 1.33, which the store kept and its own
    import then refused."""
    with pytest.raises(ValueError, match="1 predicted labels for 4 gold labels"):
        row(predicted=[1])
    with pytest.raises(ValueError, match="predicted labels must lie at least 0; got -1 to -1"):
        row(predicted=[-1] * 4)


def test_one_id_given_as_a_string_is_one_id_and_a_missing_id_is_a_sentence(tmp_path):
    store = ResultStore(tmp_path / "r.sqlite")
    (kept,) = store.add([row()])
    assert store.delete(kept[:8]) == 1 and store.rows() == []  # its characters were read as 8 ids
    for bad in (None, 5):
        with pytest.raises(PeftlabError, match=r"^Give a result's id"):
            store.get(bad)


def test_a_store_that_cannot_be_written_is_read_as_it_is_and_refuses_writes(tmp_path, monkeypatch):
    """`results list` and `report` on a store from a read-only mount failed with "cannot be written here"."""
    path = tmp_path / "r.sqlite"
    ResultStore(path).add([row(seed=13), row(seed=21)])
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)  # as a read-only file system answers
    reader = ResultStore(path, create=False)
    assert reader.read_only and [r.seed for r in reader.rows()] == [13, 21]
    assert reader.export(tmp_path / "rows.jsonl") == 2
    with pytest.raises(PeftlabError) as raised:
        reader.delete([reader.rows()[0].id])
    assert str(raised.value) == (
        f"The results store {str(path)!r} (PEFTLAB_RESULTS) cannot be written here (a read-only file or folder); "
        "point PEFTLAB_RESULTS at a file in a folder you can write to."
    )
    monkeypatch.undo()
    assert len(ResultStore(path).rows()) == 2  # nothing was deleted


def test_a_read_only_store_whose_writer_left_rows_in_its_journal_reads_them(tmp_path, monkeypatch):
    """A writer killed with a second connection open leaves its rows in the write-ahead journal; the immutable
    read-only connection ignored it and listed no results, without a word."""
    path = tmp_path / "r.sqlite"
    writer = (
        "import os, sqlite3, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_store import row\n"
        "from peftlab.store import ResultStore\n"
        f"store = ResultStore({str(path)!r})\n"
        f"held = sqlite3.connect({str(path)!r})\n"
        "held.execute('SELECT count(*) FROM results').fetchall()\n"
        "store.add([row(seed=13), row(seed=21), row(seed=42)])\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", writer], check=True, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert (tmp_path / "r.sqlite-wal").stat().st_size > 0
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    reader = ResultStore(path, create=False)
    assert reader.read_only and [r.seed for r in reader.rows()] == [13, 21, 42]


def test_a_store_on_a_read_only_mount_is_listed(tmp_path):
    """The same on a real read-only mount, where SQLite cannot make the write-ahead journal's files (root only)."""
    folder, mount = tmp_path / "store", tmp_path / "mount"
    folder.mkdir(), mount.mkdir()
    ResultStore(folder / "r.sqlite").add([row(seed=13)])
    script = (
        f"mount --bind {folder} {mount} && mount -o remount,bind,ro {mount} && echo mounted && "
        f"{sys.executable} -m peftlab results list"
    )
    environment = os.environ | {"PEFTLAB_RESULTS": str(mount / "r.sqlite"), "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=environment)
    except FileNotFoundError:
        pytest.skip("no unshare here")
    if not done.stdout.startswith("mounted"):
        pytest.skip(f"this machine cannot mount a read-only folder: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert re.search(r"rt-sentiment|tiny", done.stdout) and " 13 " in done.stdout, done.stdout


def test_an_empty_peftlab_results_is_the_default_store(monkeypatch):
    monkeypatch.setenv("PEFTLAB_RESULTS", "")  # was the store '.', "not a peftlab results store"
    assert store_path() == cache_dir() / "results.sqlite"


def test_reading_a_store_that_does_not_exist_leaves_no_file(tmp_path):
    """`results list` without PEFTLAB_RESULTS made an empty results.sqlite in the cache folder."""
    path = tmp_path / "none" / "r.sqlite"
    reader = ResultStore(path, create=False)
    assert reader.rows() == [] and len(reader.listing()) == 0 and not path.parent.exists()
    with pytest.raises(PeftlabError, match=r"^No stored results; nothing was written\.$"):
        reader.export(tmp_path / "rows.csv")
    assert not path.parent.exists()


def test_an_import_refuses_rows_that_would_break_the_listing_or_hide_from_show_and_delete(tmp_path):
    """A new user's imports, each "1 result added.": rows_scored 20.5 on a row without predictions made `results
    list` fail for the whole store (exit 1); an id with a space listed, and no id typed could show or delete it;
    "yesterday" as its time counted it the latest run of its seed; an RLHF row without the SFT score made the report
    of every row of its labeler fail, and prompts -3 was printed as "the same -3 held-out prompts"."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row()])
    exported = tmp_path / "rows.jsonl"
    store.export(exported)
    good = json.loads(exported.read_text()) | {"id": "new"}
    bare = good | {"predictions": [], "gold": []}
    rlhf = bare | {"kind": "rlhf", "accuracy": None, "macro_f1": None, "per_class_f1": {}}
    figures = {"labeler": "vader-positive", "ppo_mean_score": 0.3, "ppo_mean_kl": 0.2, "sft_mean_score": 0.1}
    hint = '; import a file that `results export` or the Compare tab\'s "Export all" wrote.'
    cases = {
        "its settings' rows_scored 20.5 is not a whole number": bare | {"settings": {"rows_scored": 20.5}},
        "its id '  spaced id\\n' is not 1 to 64 letters, digits, '_', '-' or '.'": good | {"id": "  spaced id\n"},
        "its created 'yesterday' is not a UTC time as peftlab writes it": good | {"created": "yesterday"},
        "its created '2026-W01-1' is not a UTC time as peftlab writes it": good | {"created": "2026-W01-1"},
        "its created '2026-12-05 23:59:00' is not a UTC time as peftlab writes it": good
        | {"created": "2026-12-05 23:59:00"},
        "its metrics lack prompts": rlhf | {"metrics": figures},
        "its metrics lack sft_mean_score, prompts": rlhf
        | {"metrics": {k: v for k, v in figures.items() if k != "sft_mean_score"}},
        "its metrics lack a count of prompts (it has -3)": rlhf | {"metrics": figures | {"prompts": -3}},
        "its metrics lack a route's KL (as 'ppo_mean_kl')": rlhf | {"metrics": {"labeler": "vader-positive"}},
    }
    edited = tmp_path / "edited.jsonl"
    for reason, record in cases.items():
        edited.write_text(json.dumps(record) + "\n")
        with pytest.raises(PeftlabError) as raised:
            store.import_(edited)
        assert str(raised.value) == f"Line 1 of 'edited.jsonl' is not a peftlab result ({reason}){hint}"
    assert len(store.rows()) == 1 and len(store.listing()) == 1
    edited.write_text(json.dumps(rlhf | {"metrics": figures | {"prompts": 32}}) + "\n")
    assert store.import_(edited).sentence() == "1 result added."


def test_an_id_that_is_the_start_of_another_still_names_its_own_row(tmp_path):
    """Ids 'abcd' and 'abcdef': `results delete abcd` was told 2 results start with it, and no longer id exists."""
    store = ResultStore(tmp_path / "r.sqlite")
    store.add([row(id="abcd"), row(seed=5, id="abcdef")])
    assert store.get("abcd").id == "abcd" and store.get(" abcde").id == "abcdef"
    assert store.delete("abcd") == 1 and [r.id for r in store.rows()] == ["abcdef"]


def test_a_folder_named_as_the_store_is_called_a_folder(tmp_path):
    """PEFTLAB_RESULTS=/some/folder was "not a peftlab results store (unable to open database file); ... move this
    one away": away with the folder?"""
    with pytest.raises(PeftlabError) as raised:
        ResultStore(tmp_path)
    assert str(raised.value) == (
        f"The results store {str(tmp_path)!r} (PEFTLAB_RESULTS) is a folder; point PEFTLAB_RESULTS at a file, such as "
        "results.sqlite in it."
    )
