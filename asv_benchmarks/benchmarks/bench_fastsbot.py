"""FastSB-OT against the standard samplers: MMD to exact samples vs model evaluations.

Problem: the 2-D mixture of 8 Gaussians (std 0.3) on a circle of radius 2 with its exact noised
score (linear VP schedule), ``N = 20_000`` samples, one fixed starting noise per sampler. The
accuracy is the unbiased MMD² (Gaussian kernel, bandwidth 0.5) to 20 000 exact samples (two
exact sample sets: ~1e-5, the noise floor). Every sampler gets the same budget of model
evaluations (NFE): Heun takes (NFE + 1) // 2 steps, FastSB-OT presets take
``FastSBOTConfig(quality=..., nfe=NFE)`` (steps + correctors within the budget), the others
NFE steps on their default grids. Target (asserted by ``main``): at 20 NFE "balanced" has lower
MMD² than DDIM and Euler.

Run the whole table: ``python -m asv_benchmarks.benchmarks.bench_fastsbot [--n 20000]
[--nfe 10,20,50]`` (from the repository root). asv: ``track_mmd`` / ``time_sample`` over
sampler x NFE.
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

from .common import synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

N = 20_000
#: samples per asv case (the table of ``main`` uses N)
N_ASV = 2_000
BANDWIDTH = 0.5
NFES = [10, 20, 50]
SAMPLERS = ["ddim", "euler", "heun", "dpmpp_2m", "sde", "ddpm"]


def _preset_names() -> list[str]:
    from arraygen.fastsbot import PRESETS as presets

    return list(presets)


PRESETS = _preset_names()


def _mixture():
    from arraygen.datasets import GaussianMixture

    ang = np.arange(8) * 2 * np.pi / 8
    means = np.stack([2.0 * np.cos(ang), 2.0 * np.sin(ang)], axis=1)
    return GaussianMixture(means, np.full(8, 0.3 ** 2))


@functools.lru_cache(maxsize=4)
def _exact(n: int):
    """Exact samples and their kernel-sum term sum_{i != j} k(y_i, y_j) (computed once)."""
    from arraygen.tiled import kernel_matvec

    y = _mixture().sample(n, rng=123)
    beta = 1.0 / (2.0 * BANDWIDTH ** 2)
    kyy = float(np.sum(kernel_matvec(y, y, np.ones(n), beta=beta))) - n
    return y, kyy


def mmd_to_exact(x, n: int) -> float:
    """Unbiased MMD² between ``x`` (n, 2) and the cached exact samples (as metrics.mmd)."""
    from arraygen.tiled import kernel_matvec

    y, kyy = _exact(n)
    beta = 1.0 / (2.0 * BANDWIDTH ** 2)
    m = x.shape[0]
    kxx = float(np.sum(kernel_matvec(x, x, np.ones(m), beta=beta))) - m
    kxy = float(np.sum(kernel_matvec(x, y, np.ones(n), beta=beta)))
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2.0 * kxy / (m * n)


def run_sampler(name: str, nfe: int, n: int):
    """Samples (n, 2) of sampler or preset ``name`` with a budget of ``nfe`` evaluations."""
    from arraygen import samplers as S
    from arraygen.fastsbot import FastSBOTConfig, FastSBOTSolver
    from arraygen.random import normal
    from arraygen.schedules import make_schedule

    gm = _mixture()
    sch = make_schedule("linear")
    model = gm.model(sch)
    if name in PRESETS:
        solver = FastSBOTSolver(model, sch, FastSBOTConfig(quality=name, nfe=nfe))
        return solver.sample((n, 2), rng=1), solver.nfe_
    calls = [0]

    def counted(x, t):
        calls[0] += 1
        return model(x, t)

    x = normal(7, (n, 2), xp=np)
    if name == "heun":
        out = S.sample_heun(counted, x, schedule=sch, steps=(nfe + 1) // 2, prediction="score")
    elif name in ("sde", "ddpm"):
        fn = S.sample_sde if name == "sde" else S.sample_ddpm
        out = fn(counted, x, schedule=sch, steps=nfe, rng=3, prediction="score")
    else:
        fn = {"ddim": S.sample_ddim, "euler": S.sample_euler,
              "dpmpp_2m": S.sample_dpmpp_2m}[name]
        out = fn(counted, x, schedule=sch, steps=nfe, prediction="score")
    return out, calls[0]


class MixtureMMD:
    """MMD² to exact samples and wall time, sampler (or FastSB-OT preset) at a budget of 20
    model evaluations (``N_ASV`` samples; the exact set and its kernel sum are cached per
    process). ``main`` prints the whole table over several budgets."""

    params = (SAMPLERS + [f"fastsbot:{p}" for p in PRESETS], [20])
    param_names = ("sampler", "nfe")
    timeout = 600

    def setup(self, sampler, nfe):
        _exact(N_ASV)
        self.name = sampler.partition(":")[2] or sampler

    def time_sample(self, sampler, nfe):
        run_sampler(self.name, nfe, N_ASV)

    def track_mmd(self, sampler, nfe):
        out, _ = run_sampler(self.name, nfe, N_ASV)
        return mmd_to_exact(np.asarray(out), N_ASV)

    track_mmd.unit = "MMD^2"


class SolverTime:
    """Wall time of one FastSB-OT run per namespace (n samples, exact mixture score built
    in that namespace; GPU namespaces synchronised). ``reference`` adds the OT bridge to n / 10
    exact samples (Sinkhorn; at n = 20 000, 20 000 x 2 000 x 4 bytes = 153 MB, over the default
    100 MB limit, so ``memory_limit_ot_mb=200``)."""

    params = (with_gpu(["numpy", "torch:cpu"], ["torch:cuda", "cupy"]),
              ["balanced", "balanced+reference"], [2_000, N])
    param_names = ("namespace", "preset", "n")
    timeout = 600

    def setup(self, namespace, preset, n):
        from arraygen.datasets import GaussianMixture
        from arraygen.fastsbot import FastSBOTConfig, FastSBOTSolver
        from arraygen.schedules import make_schedule

        ang = np.arange(8) * 2 * np.pi / 8
        means = np.stack([2.0 * np.cos(ang), 2.0 * np.sin(ang)], axis=1)
        gm = GaussianMixture(to_namespace(means, namespace),
                             to_namespace(np.full(8, 0.3 ** 2), namespace))
        sch = make_schedule("linear")
        quality, _, extra = preset.partition("+")
        reference = None
        if extra:
            ref = _mixture().sample(n // 10, rng=123).astype(np.float32)
            reference = to_namespace(ref, namespace)
        self.ns, self.n = namespace, n
        self.like = to_namespace(np.zeros(1, dtype=np.float32), namespace)
        self.solver = FastSBOTSolver(gm.model(sch), sch,
                                     FastSBOTConfig(quality=quality, memory_limit_ot_mb=200.0),
                                     reference=reference)
        self.run()  # warm-up (kernel compilation)

    def run(self):
        import warnings

        from arraygen import _array_api as aa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.solver.sample((self.n, 2), rng=1, xp=aa.array_namespace(self.like),
                                     device=aa.device(self.like), dtype=self.like.dtype)
        synchronize(self.ns)
        return out

    def time_sample(self, namespace, preset, n):
        self.run()


def table(n: int = N, nfes=tuple(NFES)) -> tuple[str, dict]:
    """The MMD-vs-NFE table (Markdown) and the raw values ``{(name, nfe): (mmd, nfe_used, s)}``."""
    values = {}
    names = SAMPLERS + PRESETS
    for name in names:
        for nfe in nfes:
            start = time.perf_counter()
            out, used = run_sampler(name, nfe, n)
            seconds = time.perf_counter() - start
            values[(name, nfe)] = (mmd_to_exact(np.asarray(out), n), used, seconds)
    y2 = _mixture().sample(n, rng=99)
    floor = mmd_to_exact(y2, n)
    head = "| sampler | " + " | ".join(f"NFE {b}" for b in nfes) + " |"
    intro = (f"N = {n} samples, MMD² to {n} exact samples (bandwidth {BANDWIDTH}); two exact "
             f"sets: {floor:.2e}. Cells: MMD² (model evaluations used, seconds).")
    lines = [intro, "", head, "|---|" + "---|" * len(nfes)]
    for name in names:
        label = f"FastSB-OT {name}" if name in PRESETS else name
        cells = [f"{values[(name, b)][0]:.2e} ({values[(name, b)][1]}, "
                 f"{values[(name, b)][2]:.2f} s)" for b in nfes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N, help="samples (default: %(default)s)")
    parser.add_argument("--nfe", default=",".join(map(str, NFES)),
                        help="comma-separated NFE budgets (default: %(default)s)")
    args = parser.parse_args(argv)
    nfes = tuple(int(v) for v in args.nfe.split(","))
    if 20 not in nfes:
        nfes = tuple(sorted(set(nfes) | {20}))
    text, values = table(args.n, nfes)
    print(text)
    bal, ddim, euler = (values[(k, 20)][0] for k in ("balanced", "ddim", "euler"))
    ok = bal < ddim and bal < euler
    print(f"\nat 20 NFE: balanced {bal:.3e}, DDIM {ddim:.3e}, Euler {euler:.3e} -> "
          f"{'PASS' if ok else 'FAIL'} (balanced / min(DDIM, Euler) = "
          f"{bal / min(ddim, euler) if min(ddim, euler) > 0 else math.nan:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
