"""The results store: every finished result of every tab and command, as one row in one SQLite file.

A row holds what is needed to put results side by side and to trust the comparison: the model, the task,
a fingerprint of the exact test texts scored (rows compare only when it is equal), the method and its full
settings, K and seed, accuracy, macro-F1 and per-class F1, the per-text predictions and gold labels (so
two rows on the same texts can be paired, `peftlab.stats`), trainable parameters, training and scoring
seconds, peak memory, device, peftlab's version and the time. On a public Space each row also has its
owner (the visitor's session), and each visitor sees only their own.

The file is `$PEFTLAB_RESULTS`, else `results.sqlite` in the peftlab cache folder. Writes are single
transactions, the journal is write-ahead and writers wait for each other (a busy timeout), so several
processes writing at once lose nothing. Rows export to and import from JSON Lines and CSV.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import hashlib
import json
import math
import os
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from peftlab.cache import cache_dir
from peftlab.config import counted
from peftlab.errors import PeftlabError, parse_json
from peftlab.metrics import accuracy as metrics_accuracy
from peftlab.metrics import label_f1, macro_f1
from peftlab.tasks import UPLOAD_TEST_FRACTION

JSON_COLUMNS = ("settings", "per_class_f1", "predictions", "gold", "metrics")
KINDS = ("cloze", "autoprompt", "trained", "pet", "rlhf")  # what made a row: a tab's evaluation, a search, training
EXPORT_SUFFIXES = (".jsonl", ".csv")


def store_path() -> Path:
    return Path(os.environ.get("PEFTLAB_RESULTS") or cache_dir() / "results.sqlite")  # set empty: the default


FINGERPRINT = r"[0-9a-f]{16}"  # what `fingerprint` gives
# what an imported id may be (peftlab makes 32 hexadecimal digits): one with a space or a line break in it listed, and
# no id typed could show or delete it
ROW_ID = r"[0-9A-Za-z_.-]{1,64}"
CREATED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00"  # as `ResultRow` writes it: 2026-12-05T10:00:00+00:00


def fingerprint(rows: Sequence[dict]) -> str:
    """A short hash of test rows (every field and the label, in order): equal exactly when the texts scored are."""
    canonical = json.dumps([sorted(row.items()) for row in rows], ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def per_class_f1(gold: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict[str, float]:
    """F1 of each label, by name (`metrics.label_f1`; macro-F1 is the mean of the gold labels' F1s).

    Raises:
        ValueError: `gold` and `predicted` of other lengths, or a label outside the names' indices.
    """
    return dict(zip(label_names, label_f1(gold, predicted, len(label_names)).tolist()))


@dataclass
class ResultRow:
    """One finished result; see the module docstring. `metrics` holds kind-specific figures (RLHF's scores)."""

    kind: str  # one of KINDS
    model: str
    task: str
    test_fingerprint: str
    method: str
    settings: dict
    accuracy: float | None
    macro_f1: float | None
    per_class_f1: dict = field(default_factory=dict)
    predictions: list = field(default_factory=list)
    gold: list = field(default_factory=list)
    k: int | None = None
    seed: int | None = None
    trainable_params: int = 0
    train_seconds: float = 0.0
    scoring_seconds: float = 0.0
    peak_memory_mb: float | None = None
    device: str = "cpu"
    metrics: dict = field(default_factory=dict)
    owner: str = ""
    version: str = ""
    created: str = ""
    id: str = ""

    def __post_init__(self):
        self.id = self.id or uuid.uuid4().hex
        self.created = self.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        if not self.version:
            from importlib.metadata import PackageNotFoundError, version

            try:
                self.version = version("peftlab")
            except PackageNotFoundError:
                self.version = "unknown"

    @classmethod
    def scored(
        cls,
        kind: str,
        model: str,
        task,
        method: str,
        settings: dict,
        examples: Sequence[dict],
        predicted: Sequence[int],
        split: str = "test",
        **values,
    ) -> ResultRow:
        """A row for `predicted` labels of `examples` (rows of `task`'s `split`: "test", or "all" for zero-shot
        scoring of an upload without a split column), with its metrics computed here; its settings record the
        split, the number of rows scored (`rows_scored`) and the number the split holds (`rows_in_split`).

        Raises:
            ValueError: `predicted` of another length than `examples`, or a label outside the task's.
        """
        gold = [int(e["label"]) for e in examples]
        predicted = [int(p) for p in predicted]
        accuracy = metrics_accuracy(gold, predicted) if gold else None  # checks the lengths: numpy broadcast them
        return cls(
            kind=kind,
            model=model,
            task=task.name,
            test_fingerprint=fingerprint(examples),
            method=method,
            settings={**settings, "split": split, "rows_scored": len(examples), "rows_in_split": len(task.rows(split))},
            accuracy=accuracy,
            macro_f1=macro_f1(gold, predicted, len(task.label_names)),
            per_class_f1=per_class_f1(gold, predicted, task.label_names),
            predictions=predicted,
            gold=gold,
            **values,
        )


COLUMNS = [item.name for item in fields(ResultRow)]


class ResultStore:
    """The rows in one SQLite file; `owner` (a public Space's visitor) limits what is read and deleted to theirs."""

    def __init__(self, path: str | Path | None = None, owner: str = "", create: bool = True):
        """Open (or, with `create`, create) the store at `path`, default `store_path()` (PEFTLAB_RESULTS). A store
        opened without `create` that does not exist reads as empty: `results list` left an empty file behind. One
        opened without `create` where it cannot be written (a read-only mount, another user's file) is read as it
        is (`read_only`): its list and its report failed with "cannot be written here".

        Raises:
            PeftlabError: the path is a folder, the file is not an SQLite database (a CSV named by PEFTLAB_RESULTS),
                or, with `create`, the store cannot be written where it is.
        """
        self.path = Path(path) if path is not None else store_path()
        self.owner = owner
        self.read_only = False
        if self.path.is_dir():  # SQLite's "unable to open database file" was called "not a peftlab results store"
            raise PeftlabError(
                f"The results store {str(self.path)!r} (PEFTLAB_RESULTS) is a folder; point PEFTLAB_RESULTS at a "
                "file, such as results.sqlite in it."
            )
        if not create and not self.path.exists():
            return
        self.read_only = not create and not _writable(self.path)
        try:
            if not self.read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as connection:
                _check_tables(connection)
                if not self.read_only:
                    columns = ", ".join(f"{name} {'TEXT PRIMARY KEY' if name == 'id' else ''}" for name in COLUMNS)
                    connection.execute(f"CREATE TABLE IF NOT EXISTS results ({columns})")
        except (OSError, sqlite3.DatabaseError, ValueError) as exc:
            if self.read_only and self._journal_pending and isinstance(exc, sqlite3.OperationalError):
                raise PeftlabError(
                    f"The results store {str(self.path)!r} (PEFTLAB_RESULTS) cannot be read here ({exc}): its last "
                    f"writer left results in its journal ({self.path.name}-wal), which SQLite reads only where it may "
                    "write; copy both files to a folder you can write to."
                ) from None
            if isinstance(exc, (OSError, sqlite3.OperationalError)) and not _writable(self.path):
                raise self._unwritable(exc) from None  # a read-only file was called "not a peftlab results store"
            raise PeftlabError(
                f"The results store {str(self.path)!r} (PEFTLAB_RESULTS) is not a peftlab results store ({exc}); "
                "point PEFTLAB_RESULTS at another file, or move this one away."
            ) from None

    def _unwritable(self, why) -> PeftlabError:
        return PeftlabError(
            f"The results store {str(self.path)!r} (PEFTLAB_RESULTS) cannot be written here ({why}); point "
            "PEFTLAB_RESULTS at a file in a folder you can write to."
        )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on success, rolled back on error), closed at the end: left
        to the garbage collector, connections kept the write-ahead journal out of the file for as long."""
        if self.read_only:
            # immutable: SQLite opens a write-ahead-journal store on read-only media only so, as it cannot make the
            # shared-memory file beside it; but immutable ignores the journal, and rows a writer left there (killed
            # with another connection open) went unread: with a journal beside it, the store is read through it
            connection = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro{'' if self._journal_pending else '&immutable=1'}", uri=True
            )
        else:
            connection = sqlite3.connect(self.path, timeout=60)  # writers wait for each other instead of failing
        try:
            with connection:
                if not self.read_only:
                    connection.execute("PRAGMA journal_mode=WAL")
                yield connection
        finally:
            connection.close()

    @property
    def _journal_pending(self) -> bool:
        """Whether the store's write-ahead journal holds what its last writer has not merged into the file."""
        journal = self.path.with_name(self.path.name + "-wal")
        return journal.exists() and journal.stat().st_size > 0

    def _writer(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection to write with (`_connect`). Raises PeftlabError on a store opened read-only."""
        if self.read_only:
            raise self._unwritable("a read-only file or folder")
        return self._connect()

    def add(self, rows: Iterable[ResultRow]) -> list[str]:
        """Write new rows in one transaction (all or none); returns their ids.

        Raises:
            sqlite3.IntegrityError: a row whose id is stored already (nothing is written); a row is never replaced,
                another visitor's least of all (`import_` gives a copy of theirs an id of its own).
        """
        rows = list(rows)
        for row in rows:
            row.owner = row.owner or self.owner
        values = [
            [
                json.dumps(getattr(r, c), default=_plain) if c in JSON_COLUMNS else _plain_number(getattr(r, c))
                for c in COLUMNS
            ]
            for r in rows
        ]
        with self._writer() as connection:  # commits on success, rolls back on error
            connection.executemany(
                f"INSERT INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", values
            )
        return [r.id for r in rows]

    def rows(self, **where) -> list[ResultRow]:
        """The rows (this owner's) whose columns equal `where`'s values, oldest first."""
        clauses = {"owner": self.owner} | {k: v for k, v in where.items() if v is not None}
        unknown = sorted(set(clauses) - set(COLUMNS))
        if unknown:
            raise PeftlabError(f"Results have no column {', '.join(unknown)}; they have {', '.join(COLUMNS)}.")
        if not self.path.exists():  # opened to read, never created
            return []
        sql = "SELECT * FROM results WHERE " + " AND ".join(f"{k} = ?" for k in clauses) + " ORDER BY created, rowid"
        with self._connect() as connection:
            cursor = connection.execute(sql, list(clauses.values()))
            names = [d[0] for d in cursor.description]
            return [_row_from(dict(zip(names, record))) for record in cursor.fetchall()]

    def guess(self, **where) -> str:
        """ " (did you mean task 'rt-sentiment'?)" for the values of `where` that no row holds but one nearly does
        (difflib), "" when there is none: a task name one letter off was told only that nothing was stored."""
        stored = self.frame()
        guesses = []
        for column, value in where.items():
            if value is None or column not in stored or value in set(stored[column]):
                continue
            near = difflib.get_close_matches(str(value), sorted(set(stored[column].astype(str))), n=1)
            guesses += [f"{column} {near[0]!r}"] if near else []
        return f" (did you mean {' and '.join(guesses)}?)" if guesses else ""

    def frame(self, **where) -> pd.DataFrame:
        """The rows as a table, without the per-text columns."""
        rows = [asdict(r) for r in self.rows(**where)]
        table = pd.DataFrame(rows, columns=COLUMNS)
        return table.drop(columns=["predictions", "gold"])

    def listing(self, **where) -> pd.DataFrame:
        """The rows in brief, one line each; ids cut to their first 8 characters, which `get` and `delete` take."""
        from peftlab.rlhf.stored import route_score  # no torch: it reads stored figures

        frame = self.frame(**where)
        scores = [route_score(m) if kind == "rlhf" else None for kind, m in zip(frame["kind"], frame["metrics"])]
        texts = [settings.get("rows_scored") for settings in frame["settings"]]
        table = frame.assign(
            score=pd.Series(scores, index=frame.index, dtype="Float64"), texts=pd.Series(texts, index=frame.index)
        )[LIST_COLUMNS]
        # whole numbers stay whole beside a zero-shot row's missing K and seed (they listed as "4.0" and "13.0")
        whole = {name: table[name].astype("Int64") for name in ("k", "seed", "texts") if name in table}
        return table.assign(id=table["id"].str[:8], **whole)

    def get(self, row_id: str) -> ResultRow:
        """This owner's row whose id is `row_id` or starts with it.

        Raises:
            PeftlabError: an empty id (or not a string), or one that starts no id or several (words that fit the CLI
                and the app).
        """
        if not isinstance(row_id, str) or not row_id.strip():
            raise PeftlabError("Give a result's id (its first characters are enough); list the results to see them.")
        rows = self.rows()
        exact = [r for r in rows if r.id == row_id.strip()]  # "abcd" named only as a start of "abcdef" too
        found = exact or [r for r in rows if r.id.startswith(row_id.strip())]
        if not found:
            raise PeftlabError(f"No result has an id starting with {row_id!r}; list the results to see their ids.")
        if len(found) > 1:  # "(0 do)" and "(2 do)" read awkwardly
            raise PeftlabError(
                f"{len(found)} results have ids starting with {row_id!r}; give more of the id's characters (list the "
                "results to see them)."
            )
        return found[0]

    def delete(self, ids: str | Sequence[str]) -> int:
        """Delete this owner's rows by id (one, or several: full ids or unique prefixes of at least MIN_DELETE_PREFIX
        characters); returns how many went.

        Raises:
            PeftlabError: an id that names no single row (`get`), or a shorter prefix: "7" deleted whichever one
                result's id began with 7, a typo away from another.
        """
        if isinstance(ids, str):  # one id, not its characters ("No result has an id starting with '5'")
            ids = [ids]
        try:
            full = [self.get(i).id for i in ids]
        except PeftlabError as exc:  # with several ids, one that names no result left the others' fate unsaid
            raise PeftlabError(f"{exc} Nothing was deleted.") from None
        for given, found in zip(ids, full):
            if len(given.strip()) < MIN_DELETE_PREFIX and given.strip() != found:
                raise PeftlabError(
                    f"Give at least {MIN_DELETE_PREFIX} characters of each id to delete (the list shows 8); "
                    f"{given.strip()!r} is too short to be sure which result you mean. Nothing was deleted."
                )
        full = list(dict.fromkeys(full))  # an id typed twice is one result: "2 results deleted" went for one
        with self._writer() as connection:
            connection.executemany("DELETE FROM results WHERE id = ? AND owner = ?", [(i, self.owner) for i in full])
        return len(full)

    def others_rows(self) -> int:
        """How many rows owners other than this store's hold (a public Space's visitors, read by their sessions)."""
        if not self.path.exists():
            return 0
        with self._connect() as connection:
            return connection.execute("SELECT COUNT(*) FROM results WHERE owner != ?", [self.owner]).fetchone()[0]

    def forget_owner(self) -> int:
        """Delete every row of this store's owner, a public Space's visitor who left; returns how many went. The
        shared rows (no owner) are never deleted so."""
        if not self.owner or not self.path.exists():
            return 0
        with self._writer() as connection:
            return connection.execute("DELETE FROM results WHERE owner = ?", [self.owner]).rowcount

    def export(self, path: str | Path, **where) -> int:
        """Write this owner's rows (matching `where`) to JSON Lines or CSV, by suffix, without their owner; returns
        how many. A public Space's owner is the visitor's session id, which lets whoever holds it read and delete
        that visitor's rows: an export is made to be handed on, and carried it."""
        path = Path(path)
        _check_suffix(path)
        rows = self.rows(**where)
        if not rows:  # an empty file said nothing of a misspelt task
            chosen = " and ".join(f"{k} {v!r}" for k, v in where.items() if v is not None)
            raise PeftlabError(
                f"No stored results{f' of {chosen}' if chosen else ''}{self.guess(**where)}; nothing was written."
            )
        records = [asdict(r) | {"owner": ""} for r in rows]
        if path.suffix.lower() == ".jsonl":
            # U+007F to U+009F escaped as json.dumps escapes the other control characters: written raw, they made its
            # own import refuse the file as binary
            lines = (_C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(r, ensure_ascii=False)) for r in records)
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            table = pd.DataFrame(records, columns=COLUMNS, dtype=object)
            for column in JSON_COLUMNS:
                table[column] = table[column].map(json.dumps)
            table.to_csv(path, index=False)
        return len(rows)

    def import_(self, path: str | Path) -> Imported:
        """Add the rows of an exported file (JSON Lines or CSV) as this owner's. A row this owner has stored already
        (the same result: every column but its id and owner, `_content`) is kept once, so importing a file twice adds
        nothing the second time, nor does importing one's own rows back from another's export of their copies. A
        row another owner holds under its id (a visitor importing another's export) is copied under an id of its
        own: replacing it took the row away from the visitor who made it.

        Raises:
            PeftlabError: a file that is not UTF-8 text or not an export of results, naming the first bad line.
        """
        from peftlab.uploads import json_objects, read_csv_text, read_text, short_record, unreadable

        path = Path(path)
        _check_suffix(path)
        text = read_text(path)
        written = 'import a file that `results export` or the Compare tab\'s "Export all" wrote'
        if not text.strip():  # an empty CSV was told how to quote its cells
            raise PeftlabError(f"'{path.name}' holds no results; {written}.")
        if path.suffix.lower() == ".jsonl":
            records = json_objects(text, path.name)
        else:  # every cell as text, typed back by the row's fields (a CSV has no types of its own)
            try:  # separated as a spreadsheet saved it (semicolons, in many languages)
                table = read_csv_text(text, dtype=str, keep_default_na=False)
            except (ValueError, pd.errors.ParserError) as exc:  # a cell's quote left open, say
                raise unreadable(path.name, "CSV", exc) from None
            if "kind" not in table.columns:  # the Compare tab's table, say: told it was not what that tab exports
                columns = ", ".join(map(str, table.columns[:4]))
                raise PeftlabError(
                    f"'{path.name}' is a table, not exported results (its columns begin {columns}): a dataset goes "
                    f"in a tab's upload box, and a comparison's table cannot be imported; {written}."
                )
            if cut := short_record(text):  # its missing cells read as empty: a half line was added as a result
                line, cells, width = cut
                raise PeftlabError(
                    f"Line {line} of '{path.name}' has {cells} of the header's {width} cells: the file looks cut "
                    f"short; {written}."
                )
            records = [(f"Line {n} of '{path.name}'", r) for n, r in enumerate(table.to_dict("records"), 2)]
        rows = []
        for source, record in records:  # line 1 of a CSV is its header
            try:
                rows.append(_row_from({**record, "owner": self.owner}))
                _check_row(rows[-1])
            except (ValueError, KeyError, TypeError) as exc:
                reason = exc.args[0] if exc.args else type(exc).__name__
                raise PeftlabError(f"{source} is not a peftlab result ({reason}); {written}.") from None
        if not rows:  # "0 results added." of an empty file, with exit code 0, read as if it had worked
            raise PeftlabError(f"'{path.name}' holds no results; {written}.")
        contents = [_content(row) for row in rows]  # each row's JSON once: its predictions make it long
        try:
            stored, new = self._add_new(records, rows, contents)
        except sqlite3.IntegrityError:  # another import of the same rows wrote them after this one looked: again
            stored, new = self._add_new(records, rows, contents)
        return Imported(
            added=len(new), already=len(set(contents) & stored), repeated=len(contents) - len(set(contents))
        )

    def _add_new(self, records: list, rows: list[ResultRow], contents: list[str]) -> tuple[set[str], dict]:
        """`import_`'s write: the rows whose content this owner does not hold yet, a copy of another owner's under an
        id of its own; (the contents held before, {content: (source, row)} of those added).

        Raises:
            sqlite3.IntegrityError: a row written by another process since this one read the store (two imports of
                one file at once).
        """
        mine = {row.id: _content(row) for row in self.rows()}
        stored = set(mine.values())
        new = {c: (source, row) for c, (source, _), row in zip(contents, records, rows) if c not in stored}
        _check_ids(new, mine)
        others = self._ids_of_other_owners([row.id for _, row in new.values()])
        for _, row in new.values():
            if row.id in others:
                row.id = uuid.uuid4().hex
        self.add(row for _, row in new.values())
        return stored, new

    def _ids_of_other_owners(self, ids: Sequence[str]) -> set[str]:
        """Those of `ids` that rows of owners other than this one hold."""
        with self._connect() as connection:
            connection.execute("CREATE TEMP TABLE wanted (id TEXT)")
            connection.executemany("INSERT INTO wanted VALUES (?)", [(i,) for i in ids])
            found = connection.execute(
                "SELECT id FROM results WHERE owner != ? AND id IN (SELECT id FROM wanted)", [self.owner]
            )
            return {record[0] for record in found.fetchall()}


_C1 = re.compile("[\x7f-\x9f]")


def _writable(path: Path) -> bool:
    """Whether the store at `path` can be written: the file (when it exists) and its folder, where SQLite keeps the
    write-ahead journal. A folder not made yet counts as its nearest existing parent."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _check_tables(connection: sqlite3.Connection) -> None:
    """Raise ValueError (in words) for a database that is not a results store: one holding other tables (another
    program's, which the store's table was silently added to), or a `results` table without every column a row has
    (every command failed with "no such column: owner", reported as a bug in peftlab)."""
    # SQLite's own tables (sqlite_stat1, which ANALYZE writes) belong to any database
    tables = [
        name
        for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    ]
    if others := sorted(set(tables) - {"results"}):
        raise ValueError(f"it holds the tables {', '.join(others)}")
    if tables:
        present = {record[1] for record in connection.execute("PRAGMA table_info(results)")}
        if missing := [name for name in COLUMNS if name not in present]:
            raise ValueError(f"its results table has no column {', '.join(missing)}")


def _content(row: ResultRow) -> str:
    """What makes a row the result it is: every column but its id, owner, time and version, as one string (its
    figures and seconds tell two runs apart). A file exported without id and time was added again at every import,
    stamped with the time of the import."""
    return json.dumps(asdict(row) | {"id": "", "owner": "", "created": "", "version": ""}, sort_keys=True, default=str)


def _check_ids(new: dict[str, tuple[str, ResultRow]], mine: dict[str, str]) -> None:
    """Refuse rows to be added (`new`: content -> (where in the file, row)) under an id that a stored row of this
    owner (`mine`: id -> content) or another new row holds with other figures: which of the two is the result? A row
    is never replaced; sqlite's "UNIQUE constraint failed" was reported as a bug in peftlab.

    Raises:
        PeftlabError: naming the line, the id and the columns that differ.
    """
    first: dict[str, tuple[str, str]] = {}  # id -> (where in the file, content) of the first new row holding it
    for content, (source, row) in new.items():
        if row.id in mine:
            other, what = json.loads(mine[row.id]), f"the stored result {row.id[:8]}"
            remedy = "delete the stored one to replace it"
        elif row.id in first:  # two lines of the file: "delete the stored one" named nothing stored
            other, what = json.loads(first[row.id][1]), first[row.id][0].replace("Line", "line", 1)
            remedy = "keep one of the two lines"
        else:
            first[row.id] = (source, content)
            continue
        differ = [name for name, value in json.loads(content).items() if other.get(name) != value]
        raise PeftlabError(
            f"{source} has the id of {what} with other figures ({', '.join(differ)}); {remedy}, or empty the row's "
            "id to add it as a result of its own."
        )


@dataclass(frozen=True)
class Imported:
    """What an import did: rows added, rows this owner had stored already (the same result, `_content`), and lines
    that repeated an earlier line of the file."""

    added: int
    already: int
    repeated: int = 0

    def sentence(self) -> str:
        """ "2 results added." or "0 results added; 2 were already stored; 2 lines repeated earlier ones." """
        parts = [f"{counted(self.added, 'result')} added"]
        if self.already:
            parts.append(f"{self.already} {'was' if self.already == 1 else 'were'} already stored")
        if self.repeated:  # a file pasted twice: "10 were already stored" of 5 results
            earlier = "an earlier one" if self.repeated == 1 else "earlier ones"
            parts.append(f"{counted(self.repeated, 'line')} of the file repeated {earlier}")
        return "; ".join(parts) + "."


STOPPED = "stopped "  # a trained run's status when Stop ended it before its last step: "stopped at step 3 of 30"


def stopped_at(status) -> str:
    """Where a run's `status` says Stop ended it ("at step 3 of 30"), or "" for a run that ran all its steps."""
    status = str(status)
    return status.removeprefix(STOPPED) if status.startswith(STOPPED) else ""


def scored_note(settings: dict, left_out: str = "") -> str:
    """What an evaluation scored, in words: "200 of 1000 test texts", or the rows of an upload without a split
    column ("all 40 rows", "10 of the 40 rows"; "all 8 test texts (... held out ...)" when in-context
    demonstrations took some); then what the file lost before (`Task.left_out_words`): "all 6 rows" of a 42-row file
    of repeated texts said nothing of the other 36."""
    scored, held = settings["rows_scored"], settings.get("rows_in_split", settings["rows_scored"])
    if settings["split"] == "all":
        rows = f"all {scored} rows" if scored >= held else f"{scored} of the {held} rows, a stratified subset"
        note = f"{rows} (the file has no split column and nothing was trained)"
    else:
        note = f"all {scored} test texts" if scored >= held else f"{scored} of {held} test texts"
        if settings.get("held_out_here"):
            rest = "; the demonstrations come from the other rows" if settings.get("shots_in_context") else ""
            note += f" (the file has no split column: {UPLOAD_TEST_FRACTION:.0%} of each class was held out{rest})"
    return f"{note}; {left_out}" if left_out else note


MIN_DELETE_PREFIX = 4  # characters of an id that `ResultStore.delete` takes
# score: an RLHF row's labeler score (`rlhf.stored.route_score`); it has no accuracy, and listed without a figure
# `kind` is what made the row (cloze, autoprompt, trained, pet, rlhf) and `texts` how many it scored: two zero-shot
# rows at 0.875 and 0.95 (AutoPrompt's own on 40 texts, a sweep's on 20) listed with nothing to tell them apart
LIST_COLUMNS = [
    "id",
    "created",
    "task",
    "model",
    "kind",
    "method",
    "k",
    "seed",
    "texts",
    "accuracy",
    "macro_f1",
    "score",
]
FLOAT_COLUMNS = ("accuracy", "macro_f1", "train_seconds", "scoring_seconds", "peak_memory_mb")
INT_COLUMNS = ("k", "seed", "trainable_params")
TEXT_COLUMNS = ("kind", "model", "task", "test_fingerprint", "method", "device", "owner", "version", "created", "id")
SQLITE_INTEGER_LIMIT = 2**63  # SQLite keeps an integer in 8 bytes, signed
ROUTE_FIGURES = ("_mean_score", "_mean_reward", "_mean_kl")  # an RLHF row's metrics: "ppo_mean_kl", ...


def _plain(value):
    """A numpy or torch number as Python's own, an array or tensor as a list (json.dumps's `default`).

    Raises:
        TypeError: anything else, as json.dumps would.
    """
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _plain_number(value):
    """A column's value as sqlite3 can store it: an np.int64 K (`Task.few_shot` takes one) was written as its 8 raw
    bytes, and every later read of the store failed on it, the row's own deletion included."""
    return _plain(value) if getattr(value, "ndim", None) == 0 else value


def _row_from(record: dict) -> ResultRow:
    """A row from stored or exported values: JSON columns parsed, numbers typed, empty cells None."""
    values = {name: record.get(name) for name in COLUMNS}
    for name, value in values.items():
        if value == "" and name not in ("owner", "version"):
            values[name] = None
        elif name in JSON_COLUMNS and isinstance(value, str):
            try:
                values[name] = parse_json(value)
            except json.JSONDecodeError:
                values[name] = value  # refused below, as not a JSON list or object
        elif name in FLOAT_COLUMNS and value is not None:
            values[name] = _number(name, value)
        elif name in INT_COLUMNS and value is not None:
            if isinstance(value, bool) or not _number(name, value).is_integer():  # K 2.7 was cut to 2
                raise ValueError(f"its {name} {_clipped(value)} is not a whole number")
            values[name] = int(value) if isinstance(value, int) else int(float(value))
    for column in JSON_COLUMNS:
        kind = list if column in ("predictions", "gold") else dict
        if values[column] is None:
            values[column] = kind()
        elif not isinstance(values[column], kind):  # predictions "notalist" said only "Expecting value: line 1 ..."
            shape = "list" if kind is list else "object"
            raise ValueError(f"its {column} {_clipped(values[column])} is not a JSON {shape}")
    if values["predictions"]:  # rows from before peftlab recorded them (6fd37c1) scored the test split, all of it
        values["settings"] = {"split": "test", "rows_scored": len(values["predictions"]), **values["settings"]}
    missing = [name for name in ("kind", "model", "task", "test_fingerprint", "method") if not values.get(name)]
    if missing:
        raise KeyError(f"a row has no {', '.join(missing)}")
    values["trainable_params"] = values["trainable_params"] or 0
    values["train_seconds"] = values["train_seconds"] or 0.0
    values["scoring_seconds"] = values["scoring_seconds"] or 0.0
    return ResultRow(**values)


def _number(name: str, value) -> float:
    """A numeric cell as a float; ValueError, in words, for a list, a word or a number past a float's range (10**400
    was an OverflowError, reported as a bug in peftlab)."""
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        raise ValueError(f"its {name} {_clipped(value)} is not a number")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"its {name} {_clipped(value)} is not a number") from None
    except OverflowError:
        raise ValueError(f"its {name} {_clipped(value)} is too large") from None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value) -> bool:
    """A whole number from 0: a class index, or a count of rows."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _clipped(value) -> str:
    """A cell as a message quotes it: its first 30 characters."""
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


MAX_JSON_DEPTH = 32  # a row's settings nest a config in a config: a few levels


def _depth(value) -> int:
    """How deep lists and dicts nest in `value` (0 for a number or a text), counted without recursing."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level + 1)
            if level < MAX_JSON_DEPTH:  # past it the answer is known
                pending += [(child, level + 1) for child in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _check_row(row: ResultRow) -> None:
    """Raise ValueError (the reason, in words) for an imported row that no run can produce: an accuracy of 1.7 typed
    into an export would top every table; figures that contradict the row's own predictions would be paired as if
    they held; gold labels 9 on a two-class task, or settings without the split scored, broke the report."""
    if deep := next((name for name in JSON_COLUMNS if _depth(getattr(row, name)) > MAX_JSON_DEPTH), None):
        raise ValueError(f"its {deep} are nested more than {MAX_JSON_DEPTH} levels deep")  # 900 broke Python's copy
    if odd := next((name for name in TEXT_COLUMNS if not isinstance(getattr(row, name), str | None)), None):
        raise ValueError(f"its {odd} {_clipped(getattr(row, odd))} is not text")  # a list for a model broke the insert
    if row.kind not in KINDS:
        raise ValueError(f"its kind {_clipped(row.kind)} is none of {', '.join(KINDS)}")
    if not re.fullmatch(FINGERPRINT, row.test_fingerprint):  # the report wrote a forged one into its page as HTML
        raise ValueError(f"its test_fingerprint {_clipped(row.test_fingerprint)} is not 16 hexadecimal digits")
    if not re.fullmatch(ROW_ID, row.id):
        raise ValueError(f"its id {_clipped(row.id)} is not 1 to 64 letters, digits, '_', '-' or '.'")
    if not re.fullmatch(CREATED, row.created):  # rows sort by it as text: "yesterday", "2026-W01-1" or a space for
        # the T sorted out of time order, and the row counted as the latest run of its seed everywhere
        raise ValueError(f"its created {_clipped(row.created)} is not a UTC time as peftlab writes it")
    for name in ("rows_scored", "rows_in_split"):  # what the listing and every note of rows scored read
        if name in row.settings and not _is_count(row.settings[name]):  # 20.5 broke `results list` for every row
            raise ValueError(f"its settings' {name} {_clipped(row.settings[name])} is not a whole number")
    shares = {"accuracy": row.accuracy, "macro_f1": row.macro_f1}
    shares |= {f"class {label!r}'s F1": f1 for label, f1 in row.per_class_f1.items()}
    for name, share in shares.items():
        if share is not None and not _is_number(share):
            raise ValueError(f"{name} {_clipped(share)} is not a number")
        if share is not None and not 0 <= share <= 1:  # NaN fails too
            raise ValueError(f"{name} {share} is outside 0 to 1")
    for name in ("k", "trainable_params", "train_seconds", "scoring_seconds", "peak_memory_mb", "seed"):
        value = getattr(row, name)
        if value is None:
            continue
        if not math.isfinite(value):  # infinite memory made `results show --json` invalid
            raise ValueError(f"{name} {value} is not a finite number")
        if name != "seed" and not value >= (1 if name == "k" else 0):
            raise ValueError(f"{name} {value} is {'below 1' if name == 'k' else 'negative'}")
        if abs(value) >= SQLITE_INTEGER_LIMIT:  # past what SQLite stores: reported as a bug in peftlab
            raise ValueError(f"{name} {value:g} is too large")
    _check_metrics(row.metrics)
    if row.kind == "rlhf":
        from peftlab.rlhf.stored import missing_figures  # it reads rows of this module

        if missing := missing_figures(row.metrics):
            raise ValueError(f"its metrics lack {missing}")
    if len(row.predictions) != len(row.gold):
        raise ValueError(f"it has {len(row.predictions)} predictions for {len(row.gold)} gold labels")
    if row.predictions:
        _check_scored(row)


def _check_scored(row: ResultRow) -> None:
    """`_check_row` for a row with predictions: labels that are its classes' indices, its figures those of its
    predictions, and the split they were scored on."""
    classes = len(row.per_class_f1)
    if not classes:
        raise ValueError("it has predictions but no per_class_f1, which names its classes")

    for name in ("predictions", "gold"):
        labels = getattr(row, name)
        if odd := [label for label in labels if not _is_count(label)]:
            raise ValueError(f"its {name} hold {_clipped(odd[0])}, not a class index (0, 1, ...)")
        if max(labels) >= classes:
            raise ValueError(
                f"its {name} reach class {max(labels)}, but its per_class_f1 names {classes} (0 to {classes - 1})"
            )
    if row.accuracy is None:
        raise ValueError(f"it has {counted(len(row.predictions), 'prediction')} but no accuracy")
    right = sum(p == g for p, g in zip(row.predictions, row.gold)) / len(row.gold)
    if abs(right - row.accuracy) > 1e-6:
        raise ValueError(f"accuracy {row.accuracy} is not that of its predictions, {right:.4f}")
    f1 = per_class_f1(row.gold, row.predictions, list(row.per_class_f1))
    figures = {f"class {label!r}'s F1": (row.per_class_f1[label], f1[label]) for label in f1}
    figures["macro_f1"] = (row.macro_f1, macro_f1(row.gold, row.predictions, classes))
    # peftlab before 2026-12-05 averaged every label's F1, a label no text has as 0: its exports import as they are
    written_before = float(np.mean(list(f1.values())))
    for name, (given, computed) in figures.items():
        if given is None or (abs(given - computed) > 1e-6 and not (name == "macro_f1" and given == written_before)):
            raise ValueError(f"{name} {given} is not that of its predictions, {computed:.4f}")
    if row.settings["rows_scored"] != len(row.predictions):
        raise ValueError(
            f"its settings say {row.settings['rows_scored']} rows were scored, but it has "
            f"{counted(len(row.predictions), 'prediction')}"
        )


def _check_metrics(metrics: dict) -> None:
    """`_check_row` for the figures in a row's metrics that tables compute with: its model's parameters (a trained
    method's share of them) and an RLHF route's scores and KL. "lots" of parameters broke the Compare tab and the
    report for every row of the task and model."""
    if "model_params" in metrics and not (_is_number(metrics["model_params"]) and metrics["model_params"] > 0):
        raise ValueError(f"its metrics' model_params {_clipped(metrics['model_params'])} is not a number above 0")
    for key, value in metrics.items():
        if key.endswith(ROUTE_FIGURES) and not _is_number(value):
            raise ValueError(f"its metrics' {key} {_clipped(value)} is not a number")


def _check_suffix(path: Path) -> None:
    """Raise a PeftlabError for a path that is no results file: a folder, or a name without .jsonl or .csv."""
    if path.is_dir():
        raise PeftlabError(f"'{path}' is a folder; give a results file ending in {' or '.join(EXPORT_SUFFIXES)}.")
    if path.suffix.lower() not in EXPORT_SUFFIXES:
        given = path.suffix or f"'{path.name}', a name without one"
        raise PeftlabError(f"A results file ends in {' or '.join(EXPORT_SUFFIXES)}, not {given}.")
