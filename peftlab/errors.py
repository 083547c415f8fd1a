"""The one exception type for bad user input: its message is a single sentence meant for a person; running out of
memory told apart from both bad input and faults; and JSON read from a person, whose every failure is a
`json.JSONDecodeError` that `json_problem` words."""

import json
import sys


class PeftlabError(ValueError):
    """Raised for input a user can fix (a bad template, an unknown model, an unreadable file).

    The UI shows it as `gr.Error(str(exc))`, the CLI prints `error: <message>` and exits with code 2.
    """


def out_of_memory(exc: BaseException) -> str | None:
    """Where `exc` says memory ran out: "GPU" (torch's OutOfMemoryError; on Apple's GPUs a RuntimeError that says
    so), "machine" (MemoryError), else None. Neither bad input nor a fault of the app: each caller tells it as itself,
    with what makes a job smaller (caught among other errors, it was said as a damaged file, an unreachable Hub or a
    bug). torch is looked up, not imported: an error of torch's means torch was imported, and the command line's
    light commands never import it."""
    if isinstance(exc, MemoryError):
        return "machine"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return "GPU"
    if isinstance(exc, RuntimeError) and "MPS backend out of memory" in str(exc):
        return "GPU"
    return None


def out_of_memory_sentence(where: str) -> str:
    """The one sentence for memory run out on `where` (`out_of_memory`)."""
    return f"The {where} ran out of memory: try fewer test texts, a smaller batch size or a smaller model."


def json_problem(exc, one_line: bool = False) -> str:
    """What a `json.JSONDecodeError` found and where, for a person: "Unterminated string starting at column 12"
    (`one_line`: the text was one line, a JSON Lines line) or "Expecting ',' delimiter at line 2, column 14". Its
    `msg` alone ends some sentences on "at" with nothing after ("Unterminated string starting at")."""
    place = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
    return f"{exc.msg.removesuffix(' at')} at {place}"


def parse_json(text: str, **options):
    """`json.loads(text, **options)` for text a person gave: every failure is a `json.JSONDecodeError`. An array
    nested past Python's recursion limit raised RecursionError, a number of 5,000 digits a ValueError, and both
    reached a visitor as the app's own fault."""
    try:
        return json.loads(text, **options)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("Arrays or objects nested too deeply", text, 0) from None
    except ValueError as exc:  # int's digit limit; a PeftlabError of a hook (a key given twice) passes as it is
        if isinstance(exc, PeftlabError):
            raise
        problem = "A number with more digits than Python reads" if "digits" in str(exc) else str(exc)
        raise json.JSONDecodeError(problem, text, 0) from None
