"""Entropic OT: arraygen's tiled log-domain Sinkhorn against POT (and GeomLoss if importable).

Standard problem (peer_numbers P3): x ~ N(0, I_2), y ~ N(2, 0.25 I_2), N = M, uniform
weights, epsilon = 0.05 on C = |x - y|^2, float64, run to a marginal L1 error
``||P1 - a||_1 + ||P^T1 - b||_1 <= 1e-6``.

``backend`` parameters:

* ``arraygen:fast@numpy``: ``sinkhorn(..., scaling=0.5, relaxation="auto",
  mixed_precision=True)`` (auto kernel backend: numba_cpu on NumPy input);
* ``arraygen:scaling@numpy``: ``sinkhorn(..., scaling=0.5)`` (epsilon-scaling only);
* ``arraygen:plain@numpy``: ``sinkhorn(...)`` with no epsilon-scaling, no over-relaxation.
  All three check the exact marginal L1 error of the current plan at every iteration (free:
  it reuses the next update's log-sum-exp);
* ``peer:pot_sinkhorn@numpy``: ``ot.sinkhorn(a, b, M, reg=eps)`` float64 (Sinkhorn-Knopp on
  the dense N x M kernel; POT's own stop rule, stopThr = 1e-6 on the column marginal);
* ``peer:pot_sinkhorn_log@numpy``: ``ot.sinkhorn(..., method="sinkhorn_log")``; above
  N = 1000 it is not run to the end: ``track_pot_log_extrapolated_s`` times 5 and 15 of its
  iterations and extrapolates to the iteration count of the converged POT float64 run (as
  peer_numbers P3);
* ``peer:geomloss@torch:cpu``: ``SamplesLoss("sinkhorn", p=2, blur=sqrt(eps/2),
  scaling=0.9)`` when geomloss is importable.

``track_cost_rel_err`` is |cost - ref| / ref against POT float64 run to stopThr = 1e-10;
``peakmem_sinkhorn_100k`` runs 3 iterations at N = M = 100_000 (memory is O(N + M), the
dense plan would need 80 GB).

Run the table printed for the report with ``python -m asv_benchmarks.benchmarks.bench_ot``.
"""

from __future__ import annotations

import functools
import importlib.util
import time

import numpy as np

from .common import split

EPSILON = 0.05
TOL = 1e-6
SIZES = [1_000, 5_000]
PARAMS = ["arraygen:fast@numpy", "arraygen:scaling@numpy", "arraygen:plain@numpy",
          "peer:pot_sinkhorn@numpy", "peer:pot_sinkhorn_log@numpy"]
MODES = {"fast": {"scaling": 0.5, "relaxation": "auto", "mixed_precision": True},
         "scaling": {"scaling": 0.5}, "plain": {}}
if importlib.util.find_spec("geomloss") is not None:
    PARAMS.append("peer:geomloss@torch:cpu")


@functools.cache
def problem(n: int, seed: int = 0):
    """The P3 clouds: x ~ N(0, I_2), y ~ N(2, 0.5^2 I_2), float64."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(2.0, 0.5, size=(n, 2))


def _pot_inputs(n):
    import ot

    x, y = problem(n)
    a = np.full(n, 1.0 / n)
    return a, a.copy(), ot.dist(x, y)


@functools.cache
def reference_cost(n: int) -> float:
    """<C, P> of POT float64 Sinkhorn run to stopThr = 1e-10 (the accuracy reference)."""
    import ot

    a, b, cmat = _pot_inputs(n)
    plan = ot.sinkhorn(a, b, cmat, reg=EPSILON, stopThr=1e-10, numItermax=100_000)
    return float((plan * cmat).sum())


def run_arraygen(n: int, mode: str, *, max_iter: int = 5000):
    from arraygen.ot import sinkhorn

    x, y = problem(n)
    return sinkhorn(x, y, epsilon=EPSILON, tol=TOL, max_iter=max_iter, **MODES[mode])


def _warm_up() -> None:
    """Compile the float32 and float64 kernels (a 3-iteration run on 64 points)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_arraygen(64, "fast", max_iter=3)
        run_arraygen(64, "plain", max_iter=3)


def run_pot(n: int, method: str = "sinkhorn", num_iter: int = 1000, stop: float = TOL):
    import ot

    a, b, cmat = _pot_inputs(n)
    plan, log = ot.sinkhorn(a, b, cmat, reg=EPSILON, method=method, stopThr=stop,
                            numItermax=num_iter, log=True)
    return float((plan * cmat).sum()), log


def run_geomloss(n: int):
    import torch
    from geomloss import SamplesLoss

    x, y = (torch.from_numpy(a) for a in problem(n))
    loss = SamplesLoss("sinkhorn", p=2, blur=(EPSILON / 2) ** 0.5, scaling=0.9,
                       debias=False, potentials=False)
    return float(loss(x, y))


def pot_log_extrapolated_s(n: int) -> tuple[float, int]:
    """POT sinkhorn_log seconds: setup + per-iteration cost (probe at 5 and 15 iterations)
    times the iterations the converged POT float64 run needed."""
    import warnings

    times = {}
    for its in (5, 15):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_pot(n, "sinkhorn_log", num_iter=its, stop=0.0)
        times[its] = time.perf_counter() - start
    per_iter = (times[15] - times[5]) / 10
    setup = max(0.0, times[5] - 5 * per_iter)
    its = int(run_pot(n)[1]["niter"])
    return setup + per_iter * its, its


class TimeSinkhorn:
    params = [PARAMS, SIZES]  # noqa: RUF012 (asv reads class attributes)
    param_names = ["backend", "size"]  # noqa: RUF012
    timeout = 1800

    def setup(self, param, size):
        backend, _ = split(param)
        if backend == "peer:pot_sinkhorn_log" and size > 1_000:
            raise NotImplementedError("extrapolated instead: track_pot_log_extrapolated_s")
        self.backend, self.size = backend, size
        if backend.startswith("arraygen"):
            _warm_up()

    def run(self):
        if self.backend.startswith("arraygen:"):
            return run_arraygen(self.size, self.backend.split(":")[1]).cost
        if self.backend == "peer:pot_sinkhorn":
            return run_pot(self.size)[0]
        if self.backend == "peer:pot_sinkhorn_log":
            return run_pot(self.size, "sinkhorn_log")[0]
        return run_geomloss(self.size)

    def time_sinkhorn(self, param, size):
        self.run()

    def peakmem_sinkhorn(self, param, size):
        self.run()


class TrackSinkhornAccuracy:
    params = [["arraygen:fast@numpy",  # noqa: RUF012 "arraygen:scaling@numpy", "arraygen:plain@numpy",
               "peer:pot_sinkhorn@numpy"], SIZES]
    param_names = ["backend", "size"]  # noqa: RUF012
    timeout = 1800

    def track_cost_rel_err(self, param, size):
        backend, _ = split(param)
        if backend == "peer:pot_sinkhorn":
            cost = run_pot(size)[0]
        else:
            cost = run_arraygen(size, backend.split(":")[1]).cost
        return abs(cost - reference_cost(size)) / reference_cost(size)

    track_cost_rel_err.unit = "relative error"

    def track_iterations(self, param, size):
        backend, _ = split(param)
        if backend == "peer:pot_sinkhorn":
            return int(run_pot(size)[1]["niter"])
        return run_arraygen(size, backend.split(":")[1]).n_iter

    track_iterations.unit = "iterations"


class TrackPotLogExtrapolated:
    params = [[5_000]]  # noqa: RUF012
    param_names = ["size"]  # noqa: RUF012
    timeout = 1800

    def track_pot_log_extrapolated_s(self, size):
        return pot_log_extrapolated_s(size)[0]

    track_pot_log_extrapolated_s.unit = "seconds"


class PeakmemSinkhorn100k:
    timeout = 1800

    def setup(self):
        _warm_up()

    def peakmem_sinkhorn_100k(self):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run_arraygen(100_000, "plain", max_iter=3)


def main() -> None:
    """Print the P3 comparison (arraygen fast/plain, POT float64, POT log extrapolated)."""
    n = 5_000
    _warm_up()
    ref = reference_cost(n)
    print(f"N = M = {n}, eps = {EPSILON}, tol = {TOL}; reference cost (POT f64, 1e-10) {ref!r}")
    rows = []
    for mode in MODES:
        start = time.perf_counter()
        res = run_arraygen(n, mode)
        sec = time.perf_counter() - start
        rows.append((f"arraygen {mode}", sec, res.n_iter, res.cost, res.marginal_error))
    start = time.perf_counter()
    cost, log = run_pot(n)
    rows.append(("POT sinkhorn f64", time.perf_counter() - start, int(log["niter"]), cost,
                 float("nan")))
    log_s, its = pot_log_extrapolated_s(n)
    rows.append(("POT sinkhorn_log (extrap.)", log_s, its, float("nan"), float("nan")))
    print(f"{'impl':28s} {'seconds':>9s} {'iters':>6s} {'cost':>20s} {'rel err':>9s} "
          f"{'marg err':>9s}")
    for name, sec, its, cost, merr in rows:
        print(f"{name:28s} {sec:9.2f} {its:6d} {cost:20.15g} {abs(cost - ref) / ref:9.1e} "
              f"{merr:9.1e}")
    fast = rows[0][1]
    print(f"speed-up of arraygen fast vs POT sinkhorn_log: {log_s / fast:.0f}x; vs POT "
          f"sinkhorn f64: {rows[3][1] / fast:.1f}x")
    print(bounded_memory_100k())


def bounded_memory_100k(iterations: int = 2) -> str:
    """Run N = M = 100_000 for a few iterations in a fresh process; report its peak RSS."""
    import subprocess
    import sys

    # VmHWM (peak RSS of this process image) resets at exec; ru_maxrss would inherit the
    # parent's high-water mark
    code = (
        "import time, warnings, numpy as np\n"
        "from arraygen.ot import sinkhorn\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM'):\n"
        "            return int(line.split()[1])\n"
        "rng = np.random.default_rng(0)\n"
        "x, y = rng.normal(size=(100_000, 2)), rng.normal(2.0, 0.5, size=(100_000, 2))\n"
        "base = hwm()\n"
        "t = time.perf_counter()\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        f"    res = sinkhorn(x, y, epsilon={EPSILON}, max_iter={iterations})\n"
        "print(f'{time.perf_counter() - t:.1f} {base / 1024:.0f} {hwm() / 1024:.0f}')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    return (f"N = M = 100_000, {iterations} iterations (+ cost pass): {out[0]} s; peak RSS "
            f"{out[2]} MB (after import and data: {out[1]} MB); the dense plan would be 80 GB")


if __name__ == "__main__":
    main()
