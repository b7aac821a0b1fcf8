"""``python -m IronMapping``: the same command line as the ``ironmapping`` script."""

from .cli import main

raise SystemExit(main())
