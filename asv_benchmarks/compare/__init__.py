"""The comparison suite: arraygen beside the code its users would run instead (the peers).

Run with ``asv run --config asv-compare.conf.json ...`` from ``asv_benchmarks/``. The problems,
data and oracles are the tracking suite's (``asv_benchmarks/benchmarks``), imported through
:func:`tracking`; each ``backend`` parameter here is arraygen's default path or
``"peer:<name>@<namespace>"``. A peer that is not installed is skipped in ``setup`` with a
message naming the package and its pip command (shown by ``asv run -e``).
"""
