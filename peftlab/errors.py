"""The one exception type for bad user input: its message is a single sentence meant for a person."""


class PeftlabError(ValueError):
    """Raised for input a user can fix (a bad template, an unknown model, an unreadable file).

    The UI shows it as `gr.Error(str(exc))`, the CLI prints `error: <message>` and exits with code 2.
    """
