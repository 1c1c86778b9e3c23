"""``python -m arraygen ...``: see :mod:`arraygen.cli`."""

from .cli import main

raise SystemExit(main())
