"""Contracts shared by the hot-path op modules and the backends below them.

Backends import from here, never from the op modules above them (``arraygen.gaussian`` and so
on). Nothing here imports from the rest of arraygen.
"""
