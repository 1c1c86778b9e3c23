"""Diffusion samplers (tracking): per-step overhead and accuracy of arraygen's samplers.

The model is the exact denoiser of Gaussian data N(0.5, 0.5^2) (a few elementwise operations,
``prediction="x0"``), so the timings are sampler overhead. Grid: Karras sigmas 0.002..80
(rho 7) then 0, 20 steps. ``track_ms_per_eval`` is milliseconds per model evaluation;
``SamplerError.track_rel_err`` is the endpoint RMS error against the exact probability-flow
ODE solution in units of the data scale 0.5 (ODE samplers only). The loop a user writes and
k-diffusion are timed in ``asv_benchmarks/compare/bench_samplers.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .common import split, synchronize, to_namespace, with_gpu
from .common import repeat, rounds  # noqa: F401 (asv timing attributes)

MU, C = 0.5, 0.5
STEPS = 20
SHAPES = {"4096x2": (4096, 2), "16x3x64x64": (16, 3, 64, 64)}
ODE_METHODS = ["euler", "heun", "dpmpp_2m", "ddim"]
METHODS = ODE_METHODS + ["ddpm", "dpmpp_2m_sde"]
PARAMS = with_gpu(["array_api@numpy", "array_api@torch:cpu"],
                  ["array_api@torch:cuda", "array_api@cupy"])


def exact_endpoint(x_host, schedule):
    """The exact probability-flow ODE solution at t = 0 from ``x_host`` at t = 1."""
    ab1 = schedule.alpha_bar(1.0)
    return MU + (x_host / math.sqrt(ab1) - MU) * C / math.sqrt(C * C + 80.0 ** 2)


class SamplerCase:
    """Starting noise, schedule and model of one (namespace, method, shape) case."""

    def __init__(self, ns, method, shape):
        from arraygen.schedules import make_schedule

        self.ns, self.method, self.n_eval = ns, method, 0
        self.sch = make_schedule("karras")
        z = np.random.default_rng(0).standard_normal(SHAPES[shape])
        ab1 = self.sch.alpha_bar(1.0)
        self.x_host = math.sqrt(ab1) * MU + math.sqrt(ab1 * C * C + 1 - ab1) * z
        self.x = to_namespace(self.x_host, ns)

    def model(self, x, t):
        """Exact x0-prediction of N(MU, C^2) data under the VP schedule."""
        ab = self.sch.alpha_bar(t)
        a = math.sqrt(ab)
        self.n_eval += 1
        return MU + (a * C * C / (a * a * C * C + 1 - ab)) * (x - a * MU)

    def run(self):
        from arraygen import samplers as S

        fn = {"euler": S.sample_euler, "heun": S.sample_heun, "dpmpp_2m": S.sample_dpmpp_2m,
              "ddim": S.sample_ddim, "ddpm": S.sample_ddpm,
              "dpmpp_2m_sde": S.sample_dpmpp_2m}[self.method]
        kw = {}
        if self.method in ("ddim", "ddpm"):
            kw["grid"] = "karras"
        if self.method in ("ddpm", "dpmpp_2m_sde"):
            kw["rng"] = 1
        if self.method == "dpmpp_2m_sde":
            kw["sde"] = True
        out = fn(self.model, self.x, schedule=self.sch, steps=STEPS, prediction="x0", **kw)
        synchronize(self.ns)
        return out


class Sampler:
    """One 20-step sampling run."""

    params = [PARAMS, METHODS, list(SHAPES)]
    param_names = ["backend", "method", "shape"]
    timeout = 300

    def setup(self, param, method, shape):
        _, ns = split(param)
        self.case = SamplerCase(ns, method, shape)
        self.case.run()  # warm-up

    def time_sample(self, param, method, shape):
        self.case.run()

    def track_ms_per_eval(self, param, method, shape):
        self.case.n_eval = 0
        start = time.perf_counter()
        for _ in range(5):
            self.case.run()
        return 1e3 * (time.perf_counter() - start) / max(1, self.case.n_eval)

    track_ms_per_eval.unit = "ms"


class SamplerError:
    """Endpoint RMS error / data scale against the exact PF-ODE solution (ODE samplers)."""

    params = [PARAMS, ODE_METHODS, ["4096x2"]]
    param_names = ["backend", "method", "shape"]
    timeout = 300

    def setup(self, param, method, shape):
        _, ns = split(param)
        self.case = SamplerCase(ns, method, shape)

    def track_rel_err(self, param, method, shape):
        from arraygen.testing import to_numpy

        out = np.asarray(to_numpy(self.case.run()), dtype=np.float64)
        exact = exact_endpoint(self.case.x_host, self.case.sch)
        return float(np.sqrt(np.mean((out - exact) ** 2)) / C)

    track_rel_err.unit = "relative"


class NoiseDraw:
    """Philox normals for one sampler step at batch 4096 x 2 (the per-step noise)."""

    params = [with_gpu(["numpy", "torch:cpu"], ["torch:cuda", "cupy"]), ["float32", "float64"]]
    param_names = ["namespace", "dtype"]

    def setup(self, ns, dtype):
        from arraygen.random import Key

        self.like = to_namespace(np.zeros((4096, 2), dtype=dtype), ns)
        self.key = Key(1)
        self.ns = ns

    def time_normal(self, ns, dtype):
        from arraygen.random import normal

        normal(self.key.advance(3), (4096, 2), like=self.like)
        synchronize(self.ns)
