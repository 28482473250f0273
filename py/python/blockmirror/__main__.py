"""`python -m blockmirror` is the `blockmirror` command."""

from blockmirror.cli import main

raise SystemExit(main())
