"""Diffusion samplers beside the loop a user writes and k-diffusion.

* ``peer:loop``: k-diffusion's algorithms written out inline in that namespace (what a user
  copies): Euler, Heun, DPM++(2M), ancestral Euler for the stochastic methods;
* ``peer:k_diffusion``: k-diffusion's own ``sample_*`` (torch only).

Same exact Gaussian denoiser, Karras grid and 20 steps as
``asv_benchmarks/benchmarks/bench_samplers.py``; ``track_ms_per_eval`` is milliseconds per
model evaluation, ``track_rel_err`` the endpoint error of the ODE methods.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ._tracking import tracking

T = tracking("bench_samplers")
C = tracking("common")

PARAMS = C.with_gpu(["array_api@numpy", "peer:loop@numpy", "array_api@torch:cpu",
                     "peer:loop@torch:cpu", "peer:k_diffusion@torch:cpu"],
                    ["array_api@torch:cuda", "peer:loop@torch:cuda", "peer:k_diffusion@torch:cuda"])


def karras_sigmas(n=T.STEPS, smin=0.002, smax=80.0, rho=7.0):
    ramp = np.linspace(0, 1, n)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return np.append(s, 0.0)


def ve_denoiser(y, sigma):
    """Exact E[x0 | x0 + sigma z = y] for x0 ~ N(MU, C^2) (variance-exploding form)."""
    return T.MU + (T.C * T.C / (T.C * T.C + sigma * sigma)) * (y - T.MU)


def peer_loop(method, y, sigmas, noise_fn):
    """k-diffusion's samplers written out (VE form, y = x / alpha)."""
    old, h_last, n_eval = None, None, 0
    for i in range(len(sigmas) - 1):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        d = ve_denoiser(y, s)
        n_eval += 1
        if method in ("euler", "ddim"):
            y = y + (sn - s) * (y - d) / s
        elif method == "heun":
            slope = (y - d) / s
            y_e = y + (sn - s) * slope
            if sn == 0:
                y = y_e
            else:
                d2 = ve_denoiser(y_e, sn)
                n_eval += 1
                y = y + (sn - s) * 0.5 * (slope + (y_e - d2) / sn)
        elif method == "dpmpp_2m":
            if sn == 0:
                y = d
            else:
                h = math.log(s / sn)
                dd = d
                if old is not None:
                    r = h_last / h
                    dd = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * old
                y = (sn / s) * y - math.expm1(-h) * dd
                h_last = h
            old = d
        else:  # ancestral Euler (k-diffusion sample_euler_ancestral, eta = 1)
            if sn == 0:
                y = d
            else:
                up = min(sn, math.sqrt(sn ** 2 * (s ** 2 - sn ** 2) / s ** 2))
                down = math.sqrt(sn ** 2 - up ** 2)
                y = d + (down / s) * (y - d) + up * noise_fn(i)
    return y, n_eval


class _Base:
    params = [PARAMS, T.METHODS, list(T.SHAPES)]
    param_names = ["backend", "method", "shape"]
    timeout = 300

    def setup(self, param, method, shape):
        self.backend, ns = C.split(param)
        if self.backend == "peer:k_diffusion":
            C.require_module("k_diffusion.sampling", "k-diffusion")
        self.case = T.SamplerCase(ns, method, shape)
        self.run()  # warm-up

    def run(self):
        c = self.case
        if self.backend == "array_api":
            return c.run()
        y = c.x / math.sqrt(c.sch.alpha_bar(1.0))
        if self.backend == "peer:loop":
            if c.ns.startswith("torch"):
                import torch

                noise = lambda i: torch.randn_like(y)  # noqa: E731
            else:
                rng = np.random.default_rng(1)
                noise = lambda i: rng.standard_normal(y.shape)  # noqa: E731
            out, n = peer_loop(c.method, y, karras_sigmas(), noise)
            c.n_eval += n
        else:
            out = self._k_diffusion(y)
        C.synchronize(c.ns)
        return out * math.sqrt(c.sch.alpha_bar(0.0))

    def _k_diffusion(self, y):
        import torch
        from k_diffusion import sampling as K

        c = self.case
        sigmas = torch.tensor(karras_sigmas(), dtype=y.dtype, device=y.device)

        def model(x, sigma):
            c.n_eval += 1
            return ve_denoiser(x, sigma.reshape((-1,) + (1,) * (x.ndim - 1)))

        fn = {"euler": K.sample_euler, "ddim": K.sample_euler, "heun": K.sample_heun,
              "dpmpp_2m": K.sample_dpmpp_2m, "ddpm": K.sample_euler_ancestral,
              "dpmpp_2m_sde": K.sample_dpmpp_2m_sde}[c.method]
        return fn(model, y, sigmas, disable=True)



class Sampler(_Base):
    def time_sample(self, param, method, shape):
        self.run()

    def track_ms_per_eval(self, param, method, shape):
        self.case.n_eval = 0
        start = time.perf_counter()
        for _ in range(5):
            self.run()
        return 1e3 * (time.perf_counter() - start) / max(1, self.case.n_eval)

    track_ms_per_eval.unit = "ms"


class SamplerError(_Base):
    params = [PARAMS, T.ODE_METHODS, ["4096x2"]]

    def track_rel_err(self, param, method, shape):
        from arraygen.testing import to_numpy

        out = np.asarray(to_numpy(self.run()), dtype=np.float64)
        exact = T.exact_endpoint(self.case.x_host, self.case.sch)
        return float(np.sqrt(np.mean((out - exact) ** 2)) / T.C)

    track_rel_err.unit = "relative"
