"""Sections of ``python -m arraygen demo``: one module each, with TITLE, ORDER and run(ctx)."""
