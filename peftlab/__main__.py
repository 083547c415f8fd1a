"""`python -m peftlab ...`: see peftlab.cli; the commands of the results store start without torch (cli_core)."""

import sys

from peftlab.cli_core import LIGHT_COMMANDS, light_parser, run_command

argv = sys.argv[1:]
if next((a for a in argv if not a.startswith("-")), None) in LIGHT_COMMANDS:
    raise SystemExit(run_command(light_parser(), argv))

from peftlab.cli import main  # noqa: E402 - the model stack loads only for the commands that need it

raise SystemExit(main())
