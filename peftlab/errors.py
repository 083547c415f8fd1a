"""The one exception type for bad user input: its message is a single sentence meant for a person."""


class PeftlabError(ValueError):
    """Raised for input a user can fix (a bad template, an unknown model, an unreadable file).

    The UI shows it as `gr.Error(str(exc))`, the CLI prints `error: <message>` and exits with code 2.
    """


def json_problem(exc, one_line: bool = False) -> str:
    """What a `json.JSONDecodeError` found and where, for a person: "Unterminated string starting at column 12"
    (`one_line`: the text was one line, a JSON Lines line) or "Expecting ',' delimiter at line 2, column 14". Its
    `msg` alone ends some sentences on "at" with nothing after ("Unterminated string starting at")."""
    place = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
    return f"{exc.msg.removesuffix(' at')} at {place}"
