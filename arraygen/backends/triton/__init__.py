"""Triton kernels (``@triton.jit``) and launchers, one module per hot path.

Launchers work on torch tensors (CuPy arrays are handed over through DLPack without a copy; under
``TRITON_INTERPRET=1`` NumPy arrays become CPU tensors). ``philox`` holds the Philox4x32-10 stream
as Triton device functions (not ``tl.rand``, whose stream layout differs from arraygen's).
"""
