"""Sub-commands of ``python -m arraygen`` (one module each; see :mod:`arraygen.cli`)."""
