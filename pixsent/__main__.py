"""`python -m pixsent` is the `pixsent` command."""

from pixsent.cli import main

raise SystemExit(main())
