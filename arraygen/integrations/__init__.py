"""Adapters that plug arraygen into other libraries' pipelines.

Each submodule imports its library lazily (only when imported itself), so ``import arraygen``
never needs them: :mod:`arraygen.integrations.diffusers` (a diffusers scheduler running
arraygen's samplers, and a UNet wrapper for arraygen's sampler functions).
"""

__all__ = ["diffusers"]
