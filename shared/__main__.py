"""`python -m shared <command>`: the operator's command line."""

from shared.cli import main

raise SystemExit(main())
