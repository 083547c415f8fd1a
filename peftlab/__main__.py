"""`python -m peftlab ...`: see peftlab.cli."""

from peftlab.cli import main

raise SystemExit(main())
