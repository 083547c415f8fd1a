"""`python -m peftlab ...`: see peftlab.cli; `--help` and the commands of the results store start without torch
(cli_core)."""

import sys

from peftlab.cli_core import LIGHT_COMMANDS, light_parser, run_command

argv = sys.argv[1:]
if next((a for a in argv if not a.startswith("-")), None) in (*LIGHT_COMMANDS, None):  # None: no command, or --help
    raise SystemExit(run_command(light_parser(), argv))

try:
    from peftlab.cli import main  # the model stack loads only for the commands that need it
except KeyboardInterrupt:  # Ctrl-C while torch and transformers load (seconds; minutes on a busy machine)
    print("error: interrupted.", file=sys.stderr)
    raise SystemExit(130) from None

raise SystemExit(main())
