"""Diffusion samplers: per-step overhead and accuracy, against the loop a user would write.

``backend`` parameters are ``"<backend>@<namespace>"`` (arraygen's Array-API samplers run in
that namespace) or ``"peer:<name>@<namespace>"``: ``peer:loop`` is the k-diffusion algorithm
written out inline in that namespace (what a user copies), ``peer:k_diffusion`` is
k-diffusion's own ``sample_*`` (skipped unless importable, torch only). The model is the exact
denoiser of Gaussian data N(0.5, 0.5^2) (a few elementwise operations), so the timings are
sampler overhead (peer_numbers P7). Grid: Karras sigmas 0.002..80 (rho 7) then 0, 20 steps.
``track_rel_err`` is the endpoint RMS error against the exact probability-flow ODE solution in
units of the data scale 0.5 (P7: k-diffusion DPM++(2M) 0.0493, Euler 0.139, Heun 0.0437).
"""

from __future__ import annotations

import math

import numpy as np

from .common import gpu_present, split, synchronize, to_namespace

MU, C = 0.5, 0.5
STEPS = 20
SHAPES = {"4096x2": (4096, 2), "16x3x64x64": (16, 3, 64, 64)}
METHODS = ["euler", "heun", "dpmpp_2m", "ddim", "ddpm", "dpmpp_2m_sde"]
CPU_PARAMS = ["array_api@numpy", "array_api@torch:cpu", "peer:loop@numpy",
              "peer:loop@torch:cpu", "peer:k_diffusion@torch:cpu"]
GPU_PARAMS = ["array_api@torch:cuda", "array_api@cupy", "peer:loop@torch:cuda",
              "peer:k_diffusion@torch:cuda"]
PARAMS = CPU_PARAMS + (GPU_PARAMS if gpu_present() else [])


def _karras_sigmas(n=STEPS, smin=0.002, smax=80.0, rho=7.0):
    ramp = np.linspace(0, 1, n)
    s = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    return np.append(s, 0.0)


def _ve_denoiser(y, sigma):
    """Exact E[x0 | x0 + sigma z = y] for x0 ~ N(MU, C^2) (variance-exploding form)."""
    return MU + (C * C / (C * C + sigma * sigma)) * (y - MU)


def _peer_loop(method, y, sigmas, noise_fn):
    """k-diffusion's samplers written out (VE form, x = y / alpha scaled)."""
    old = None
    h_last = None
    n_eval = 0
    for i in range(len(sigmas) - 1):
        s, sn = float(sigmas[i]), float(sigmas[i + 1])
        d = _ve_denoiser(y, s)
        n_eval += 1
        if method in ("euler", "ddim"):
            y = y + (sn - s) * (y - d) / s
        elif method == "heun":
            slope = (y - d) / s
            y_e = y + (sn - s) * slope
            if sn == 0:
                y = y_e
            else:
                d2 = _ve_denoiser(y_e, sn)
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
        elif method in ("ddpm", "dpmpp_2m_sde"):
            # ancestral Euler (k-diffusion sample_euler_ancestral, eta = 1)
            if sn == 0:
                y = d
            else:
                up = min(sn, math.sqrt(sn ** 2 * (s ** 2 - sn ** 2) / s ** 2))
                down = math.sqrt(sn ** 2 - up ** 2)
                y = d + (down / s) * (y - d) + up * noise_fn(i)
    return y, n_eval


class _Base:
    params = [PARAMS, METHODS, list(SHAPES)]
    param_names = ["backend", "method", "shape"]
    timeout = 300

    def setup(self, param, method, shape):
        backend, ns = split(param)
        self.backend, self.ns, self.method = backend, ns, method
        if backend == "peer:k_diffusion":
            try:
                import k_diffusion.sampling  # noqa: F401
            except ImportError:
                raise NotImplementedError("k-diffusion not importable") from None
        elif backend not in ("array_api", "peer:loop"):
            raise NotImplementedError(backend)
        from arraygen.schedules import make_schedule

        self.sch = make_schedule("karras")
        z = np.random.default_rng(0).standard_normal(SHAPES[shape])
        ab1 = self.sch.alpha_bar(1.0)
        self.x_host = math.sqrt(ab1) * MU + math.sqrt(ab1 * C * C + 1 - ab1) * z
        self.x = to_namespace(self.x_host, ns)
        self.n_eval = 0
        self.run()  # warm-up
        synchronize(ns)

    def _model(self, x, t):
        ab = self.sch.alpha_bar(t)
        a = math.sqrt(ab)
        self.n_eval += 1
        return MU + (a * C * C / (a * a * C * C + 1 - ab)) * (x - a * MU)

    def run(self):
        from arraygen import samplers as S

        if self.backend == "array_api":
            fn = {"euler": S.sample_euler, "heun": S.sample_heun, "dpmpp_2m": S.sample_dpmpp_2m,
                  "ddim": S.sample_ddim, "ddpm": S.sample_ddpm,
                  "dpmpp_2m_sde": S.sample_dpmpp_2m}[self.method]
            kw = {}
            if self.method == "ddim":
                kw["grid"] = "karras"
            if self.method == "ddpm":
                kw.update(grid="karras", rng=1)
            if self.method == "dpmpp_2m_sde":
                kw.update(sde=True, rng=1)
            return fn(self._model, self.x, schedule=self.sch, steps=STEPS, prediction="x0", **kw)
        sig = _karras_sigmas()
        a1 = math.sqrt(self.sch.alpha_bar(1.0))
        y = self.x / a1
        if self.backend == "peer:loop":
            noise = self._noise_fn()
            y, n = _peer_loop(self.method, y, sig, noise)
            self.n_eval += n
            return y
        return self._k_diffusion(y, sig)

    def _noise_fn(self):
        if self.ns.startswith("torch"):
            import torch

            return lambda i: torch.randn_like(self.x)
        rng = np.random.default_rng(1)
        return lambda i: rng.standard_normal(self.x.shape)

    def _k_diffusion(self, y, sig):
        import torch
        from k_diffusion import sampling as K

        sigmas = torch.tensor(sig, dtype=y.dtype, device=y.device)

        def model(x, sigma):
            self.n_eval += 1
            s = sigma.reshape((-1,) + (1,) * (x.ndim - 1))
            return MU + (C * C / (C * C + s * s)) * (x - MU)

        fn = {"euler": K.sample_euler, "ddim": K.sample_euler, "heun": K.sample_heun,
              "dpmpp_2m": K.sample_dpmpp_2m, "ddpm": K.sample_euler_ancestral,
              "dpmpp_2m_sde": K.sample_dpmpp_2m_sde}[self.method]
        return fn(model, y, sigmas, disable=True)


class Sampler(_Base):
    """One 20-step sampling run (the model costs a few elementwise operations)."""

    def time_sample(self, param, method, shape):
        self.run()
        synchronize(self.ns)

    def track_ms_per_eval(self, param, method, shape):
        import time

        self.n_eval = 0
        start = time.perf_counter()
        reps = 5
        for _ in range(reps):
            self.run()
        synchronize(self.ns)
        return 1e3 * (time.perf_counter() - start) / max(1, self.n_eval)

    track_ms_per_eval.unit = "ms"

    def track_rel_err(self, param, method, shape):
        """Endpoint RMS error / data scale against the exact PF-ODE solution (ODE methods)."""
        from arraygen.testing import to_numpy

        if self.method in ("ddpm", "dpmpp_2m_sde"):
            raise NotImplementedError("stochastic sampler: no ODE endpoint")
        out = np.asarray(to_numpy(self.run()), dtype=np.float64)
        ab1 = self.sch.alpha_bar(1.0)
        exact = MU + (self.x_host / math.sqrt(ab1) - MU) * C / math.sqrt(C * C + 80.0 ** 2)
        return float(np.sqrt(np.mean((out - exact) ** 2)) / C)


class NoiseDraw:
    """Philox normals for one sampler step at batch 4096 x 2 (the per-step noise)."""

    params = [["numpy", "torch:cpu"] + (["torch:cuda", "cupy"] if gpu_present() else []),
              ["float32", "float64"]]
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
