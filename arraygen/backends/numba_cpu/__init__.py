"""Numba CPU kernels (``numba.njit(parallel=True)``), one module per hot path.

``philox`` holds the scalar Philox4x32-10 stream code shared with the Numba-CUDA kernels.
"""
