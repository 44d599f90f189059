"""``python -m kvstore``: the operator command line (see :mod:`kvstore.cli`)."""

from .cli import main

raise SystemExit(main())
