"""Reading the files people upload, as they save them, or refusing them in one sentence that says how to save them.

Encodings: UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one), and UTF-16 with one
(Excel's "Unicode text"). Anything else that is not UTF-8 is refused rather than guessed, so no text is
read as other characters than the ones written. Shapes: CSV separated by commas, semicolons (spreadsheets
in many locales) or tabs; JSON Lines (one object per line, blank lines skipped); a JSON array of objects.

Files are read as data only: parsed by pandas' CSV reader or the json module, never executed or unpickled.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import unicodedata
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from peftlab.errors import PeftlabError, json_problem, parse_json

SEPARATORS = (",", ";", "\t")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")  # read as CSV, separated as the header line is (`read_csv_text`)
JSON_SUFFIXES = (".jsonl", ".json")
SPREADSHEET_SUFFIXES = (".xlsx", ".xls", ".ods", ".numbers")  # refused with how to save them as CSV
# what a data upload may be called: a picker that lists only the readable ones had the browser refuse a spreadsheet
# ("Invalid file type: data.xlsx"), without saying how to save it
DATA_SUFFIXES = (*TABLE_SUFFIXES, *JSON_SUFFIXES, *SPREADSHEET_SUFFIXES)


def read_text(path: str | Path) -> str:
    """The text of a file, decoded as described in the module docstring.

    Raises:
        PeftlabError: a file that looks binary (a spreadsheet, say) or is not UTF-8 or UTF-16 with a byte-order mark.
    """
    path = Path(path)
    data = path.read_bytes()
    binary = PeftlabError(
        f"The file '{path.name}' is not a text file (a spreadsheet or another binary format?); "
        "save it as CSV UTF-8 or as JSON Lines."
    )
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            raise binary from None
    elif b"\x00" in data[:4096]:
        raise binary
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # where, as an editor counts (line 2, not byte 14), and how to save it, as its kind of file is saved
            line = data[: exc.start].count(b"\n") + 1
            how = " (in Excel: 'CSV UTF-8')" if path.suffix.lower() in TABLE_SUFFIXES else ""
            raise PeftlabError(
                f"The file '{path.name}' could not be read as UTF-8 text (line {line} holds the byte "
                f"{data[exc.start]:#04x}); save it as UTF-8{how}, so that no character is read as another."
            ) from None
    if _looks_binary(text[:4096]):
        raise binary
    return text


def read_table(path: str | Path, as_written: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of an uploaded CSV (TABLE_SUFFIXES), JSON Lines or JSON (an array of objects) file, by its suffix.
    A CSV's columns named in `as_written` hold their cells as written: typed, labels "01" and "1" were one class,
    and a text "1.10" read "1.1" (a JSON file's values have the types its writer gave them).

    Raises:
        PeftlabError: a spreadsheet, an unreadable encoding (see `read_text`), or a file that is not what its suffix
            says.
        OSError: a file that cannot be opened (no such file, no permission).
    """
    path = Path(path)
    table = path.suffix.lower() in TABLE_SUFFIXES
    if path.suffix.lower() in SPREADSHEET_SUFFIXES:
        raise PeftlabError(
            f"The file '{path.name}' is a spreadsheet; save it as CSV UTF-8 (in Excel: File > Save As > CSV UTF-8) "
            "and use that."  # said in the app and on the command line alike
        )
    text = read_text(path)
    if not text.strip():
        raise PeftlabError(
            f"The file '{path.name}' is empty; give a CSV file with a header line and rows, or a JSON Lines file with "
            "one object per line."
        )
    try:
        if table:
            if repeated := _repeated_column(text):  # pandas named the second 'text.1', and read " label" as "label"
                raise PeftlabError(
                    f"The file '{path.name}' has more than one column named '{repeated}'; give each column its own "
                    "name."
                )
            if long := long_record(text):
                line, cells, width = long
                raise PeftlabError(
                    f"The file '{path.name}' could not be read as CSV (record {line} has {cells} cells, its header "
                    f"{width}); {CSV_FIX}."
                )
            # only an empty cell is missing: pandas' default also read "None", "NA", "null" and "n/a" as missing, and a
            # class named None, or a text "NA", was left out as a row without a label or text; no index column: a
            # first record with a cell more than the header made pandas read the texts as the table's index
            with warnings.catch_warnings():  # empty cells past the header: `long_record` found nothing else there
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                return read_csv_text(text, as_written, keep_default_na=False, na_values=[""], index_col=False)
        if text.lstrip().startswith("["):
            records = parse_json(text)
            if not all(isinstance(r, dict) for r in records):
                raise ValueError("the JSON array holds something other than objects")
            return pd.DataFrame.from_records(records)
        if text.lstrip().startswith("{") and _is_one_json_value(text):
            raise ValueError("it is one JSON object, not one object per line or an array of objects")
        return pd.DataFrame.from_records([record for _, record in json_objects(text, path.name)])
    except PeftlabError:  # already one sentence (a JSON line named by its number)
        raise
    except (ValueError, pd.errors.ParserError) as exc:
        kind = "CSV" if table else "JSON lines (one JSON object per line) or a JSON array"
        raise unreadable(path.name, kind, exc) from None


# what mends a CSV its parser refused ("Expected 2 fields in line 7, saw 3" said where, not how)
CSV_FIX = "a cell holding a comma, a quote or a line break goes in double quotes, a quote inside it doubled"


def unreadable(name: str, kind: str, exc: Exception) -> PeftlabError:
    """The sentence for a file its parser refused: the parser's first line of reason, cut to 120 characters, and
    for a CSV what mends it (`CSV_FIX`)."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    fix = f"; {CSV_FIX}" if kind == "CSV" else ""
    return PeftlabError(f"The file '{name}' could not be read as {kind} ({reason[:120]}){fix}.")


JSON_KINDS = {
    dict: "object",
    str: "string",
    list: "array",
    int: "number",
    float: "number",
    bool: "true or false",
    type(None): "null",
}


def json_objects(text: str, name: str) -> list[tuple[str, dict]]:
    """("Line N of 'name'", object) for each non-blank line of a JSON Lines text, numbered from 1 as editors do.

    Raises:
        PeftlabError: the first line that is not a JSON object, named by its number (a parser's offset into the
            whole file is no help to find it).
    """
    objects = []
    # JSON Lines ends lines with \n (or \r\n) only: str.splitlines() would also cut a text at U+2028, U+0085, ...
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        source = f"Line {number} of '{name}'"
        try:
            value = parse_json(line)
        except json.JSONDecodeError as exc:
            whole = _whole_json(text)  # a pretty-printed array said only "Line 1 ... is not valid JSON"
            if whole is not None:
                lines = len(text.strip().splitlines())
                raise PeftlabError(
                    f"'{name}' is one JSON {JSON_KINDS[type(whole)]} over {lines} lines, not JSON Lines; write one "
                    "JSON object per line."
                ) from None
            problem = json_problem(exc, one_line=True)
            raise PeftlabError(f"{source} is not valid JSON ({problem}); write one JSON object per line.") from None
        if not isinstance(value, dict):
            raise PeftlabError(
                f"{source} is a JSON {JSON_KINDS[type(value)]}, not an object; write one JSON object per line."
            )
        objects.append((source, value))
    return objects


def _whole_json(text: str):
    """The value of `text` read as one JSON document, or None when it is not one."""
    try:
        return parse_json(text)
    except json.JSONDecodeError:
        return None


UNASSIGNED_SHARE = 0.1  # of a text's first characters, unassigned, private or control ones that make it binary


def _looks_binary(sample: str) -> bool:
    """Whether `sample` holds bytes that were never text: unassigned, private-use or control characters (but tab and
    line breaks) or surrogates making up a tenth of it, as binary decoded as UTF-16 does (binary read as UTF-8 fails
    to decode, or holds a NUL, before this). A few are text: an emoji newer than this Python's Unicode tables (🩵 is
    Unicode 15, Python 3.11's are 14), Apple's logo (private use), or a next-line character U+0085 pasted from a web
    page (a CSV of results peftlab exported itself) refused a file as "a spreadsheet or another binary format"."""
    odd = sum(
        c in ("Cn", "Co", "Cs") or (c == "Cc" and char not in "\t\n\r\f")
        for c, char in zip(map(unicodedata.category, sample), sample)
    )
    return odd > UNASSIGNED_SHARE * len(sample)


def read_csv_text(text: str, as_written: Sequence[str] = (), **options) -> pd.DataFrame:
    """A CSV's table (`pandas.read_csv` with `options`) from text that is not blank: comma-separated, else the
    separator its header line uses (semicolon or tab, as spreadsheets in many languages save CSV). The columns named
    in `as_written` (by their names with spaces around them stripped) hold their cells as text.

    Raises:
        ValueError, pandas.errors.ParserError: text pandas cannot read as CSV (a quote left open).
    """
    separator = _separator(text)
    if as_written:  # "text, label" as spreadsheets write it: the header's names as pandas reads them
        header = pd.read_csv(io.StringIO(text), sep=separator, nrows=0).columns
        options["dtype"] = {name: str for name in header if str(name).strip() in as_written}
    table = pd.read_csv(io.StringIO(text), sep=separator, **options)
    table.columns = [str(name).strip() for name in table.columns]  # "text, label" as spreadsheets write it
    return table


def _repeated_column(text: str) -> str | None:
    """The first name that two columns of a CSV's header share, spaces around them stripped, or None."""
    header = next(iter(_csv_records(text)), [])
    names = [name.strip() for name in header]
    return next((name for i, name in enumerate(names) if name and name in names[:i]), None)


def _csv_records(text: str) -> list[list[str]]:
    """A CSV's records as the csv module reads them, blank lines left out as pandas leaves them; [] for text it
    cannot read (a quote left open: pandas says so)."""
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # its default, 131,072 characters, is a cell of 43k
    # predictions; only ever raised, and no peftlab reader relies on its limit
    try:
        records = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(text))
        # pandas skips blank lines, and lines of spaces
        return [record for record in records if record and not (len(record) == 1 and not record[0].strip())]
    except csv.Error:
        return []


def short_record(text: str) -> tuple[int, int, int] | None:
    """The first record of a CSV's text with fewer cells than its header, as (its number among the file's records, the
    header being 1, as a results import numbers its lines; its cells; the header's), or None, also for text the csv
    module reads otherwise than pandas (pandas read it already). pandas fills a short record's missing cells as
    empty, so a file cut short in the middle of a line read as whole."""
    whole = _csv_records(text)
    width = len(whole[0]) if whole else 0
    return next(((n, len(r), width) for n, r in enumerate(whole[1:], 2) if len(r) < width), None)


def long_record(text: str) -> tuple[int, int, int] | None:
    """The first record of a CSV's text with a cell filled beyond its header's, as `short_record` gives it, or None.
    pandas refused one after the first data record, but read a first one as the texts' index: 'Loved it, a gem,pos'
    shifted every column of the file, silently. Empty cells past the header (a comma closing every data line) are
    no cells: they are read as nothing."""
    whole = _csv_records(text)
    width = len(whole[0]) if whole else 0
    filled = ((n, len(r)) for n, r in enumerate(whole[1:], 2) if any(cell.strip() for cell in r[width:]))
    return next(((n, cells, width) for n, cells in filled), None)


def _separator(text: str) -> str:
    """Comma, else the separator the header line uses most (semicolon or tab)."""
    header = text.lstrip().splitlines()[0]
    return max(SEPARATORS, key=lambda sep: (header.count(sep), sep == ","))


def _is_one_json_value(text: str) -> bool:
    try:
        parse_json(text)
        return "\n" in text.strip()  # a single line is JSON Lines with one row
    except json.JSONDecodeError:
        return False
