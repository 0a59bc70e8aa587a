"""`python -m segnet` is the same as the `segnet` command (and what torchrun launches)."""

from segnet.cli import main

raise SystemExit(main())
