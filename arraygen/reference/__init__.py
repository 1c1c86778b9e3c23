"""Float64 NumPy oracles: slow, obvious, never dispatched.

These modules import nothing else from arraygen, so a bug in the library cannot leak into the
oracle that tests it.
"""
