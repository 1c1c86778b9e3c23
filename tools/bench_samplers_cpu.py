"""Sampler accuracy and per-step overhead against diffusers and k-diffusion (if installed), CPU.

Usage::

    python tools/bench_samplers_cpu.py [--samples 4000] [--threads 1]

Part 1, accuracy (issue 14): data x0 ~ N(mu, diag v) in 16-D (mu ~ U(-1.5, 1.5), v
log-uniform in [0.01, 2]); every sampler gets the exact epsilon at the noise level it asks for
and the same x_T ~ N(0, I) (peers: scaled to their own start level). For each schedule (arraygen
"cosine" / diffusers "squaredcos_cap_v2", arraygen "linear" / diffusers "linear") and 10 and 20
model evaluations it prints

* err: RMS over samples and dimensions of (x - x0*) / sqrt(v), with x0* the exact
  probability-flow map from the sampler's own first noise level (deterministic samplers);
* law: the 2-Wasserstein distance of the per-dimension Gaussians fitted to the output from the
  target, divided by sqrt(v) (every sampler, stochastic ones included);
* var: mean over dimensions of Var(x) / v.

Peers run with default settings (their default timestep spacing; k-diffusion, which has no
default grid, on its Karras grid from min(80, the schedule's top) to 0.002, loaded from its own
sampling.py by tests/_kdiffusion.py: DPM++(2M), Euler, Heun, DPM++(3M) SDE). Part 2, per-step overhead:
a model that costs nothing (returns a fixed tensor), batch 64 x 3 x 16 x 16 float32 torch on
the CPU, minimum over repeats of the time per step, arraygen's sampler loop (validation,
output checks, coefficients, update) against diffusers' ``scheduler.scale_model_input`` +
``scheduler.step``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from pathlib import Path

import numpy as np

from arraygen import samplers as S
from arraygen.schedules import make_schedule

D = 16


def _problem(samples: int):
    rng = np.random.default_rng(0)
    mu = rng.uniform(-1.5, 1.5, D)
    var = np.exp(rng.uniform(math.log(0.01), math.log(2.0), D))
    z = np.random.default_rng(1).standard_normal((samples, D))
    return mu, var, z


def _metrics(out, start_vp, ab0, mu, var, deterministic=True):
    scale = np.sqrt(var / (ab0 * var + 1.0 - ab0))
    ref = mu + scale * (start_vp - math.sqrt(ab0) * mu)
    err = float(np.sqrt(np.mean((out - ref) ** 2 / var))) if deterministic else float("nan")
    m, s = out.mean(axis=0), out.std(axis=0)
    law = float(np.sqrt(np.mean(((m - mu) ** 2 + (s - np.sqrt(var)) ** 2) / var)))
    return err, law, float(np.mean(out.var(axis=0) / var))


ARRAYGEN = [
    # name, function, options, evaluations per step (2 for Heun / 2S), deterministic
    ("ddim", S.sample_ddim, {}, 1, True),
    ("euler", S.sample_euler, {}, 1, True),
    ("heun", S.sample_heun, {}, 2, True),
    ("dpmpp_2m", S.sample_dpmpp_2m, {}, 1, True),
    ("unipc (p=2)", S.sample_unipc, {}, 1, True),
    ("unipc (p=3)", S.sample_unipc, {"order": 3}, 1, True),
    ("dpmpp_3m (eta=0)", S.sample_dpmpp_3m_sde, {"eta": 0.0}, 1, True),
    ("dpmpp_2s (eta=0)", S.sample_dpmpp_2s_ancestral, {"eta": 0.0}, 2, True),
    ("ddpm", S.sample_ddpm, {"rng": 3}, 1, False),
    ("sde (EM)", S.sample_sde, {"rng": 3}, 1, False),
    ("dpmpp_2m_sde", S.sample_dpmpp_2m, {"sde": True, "rng": 3}, 1, False),
    ("dpmpp_3m_sde", S.sample_dpmpp_3m_sde, {"rng": 3}, 1, False),
    ("euler_ancestral", S.sample_euler_ancestral, {"rng": 3}, 1, False),
    ("dpmpp_2s_ancestral", S.sample_dpmpp_2s_ancestral, {"rng": 3}, 2, False),
]


def _arraygen_rows(kind, nfe, mu, var, z):
    sch = make_schedule(kind)

    def eps(x, t):
        ab = sch.alpha_bar(t)
        return math.sqrt(1.0 - ab) * (x - math.sqrt(ab) * mu) / (ab * var + 1.0 - ab)

    rows = []
    for name, fn, kw, per_step, det in ARRAYGEN:
        steps = nfe if per_step == 1 else (nfe + 1) // 2  # Heun: 2n - 2 here, 2S: 2n - 1
        calls = []

        def counted(x, t):
            calls.append(t)
            return eps(x, t)

        out = fn(counted, z, schedule=sch, steps=steps, prediction="epsilon", **kw)
        rows.append((f"arraygen {name}", len(calls),
                     *_metrics(out, z, sch.alpha_bar(1.0), mu, var, det)))
    return rows


def _diffusers_rows(kind, nfe, mu, var, z):
    try:
        import diffusers
        import torch
    except ImportError:
        return [("diffusers (not installed)", 0, math.nan, math.nan, math.nan)]
    beta = "squaredcos_cap_v2" if kind == "cosine" else "linear"
    rows = []
    for name, cls in (("DPMSolverMultistep", diffusers.DPMSolverMultistepScheduler),
                      ("UniPCMultistep", diffusers.UniPCMultistepScheduler),
                      ("EulerDiscrete", diffusers.EulerDiscreteScheduler)):
        sched = cls(beta_schedule=beta)
        sched.set_timesteps(nfe)
        sig = sched.sigmas.double()
        mu_t, var_t = torch.tensor(mu), torch.tensor(var)
        x = torch.tensor(z) * sched.init_noise_sigma
        ve_model = hasattr(sched, "init_noise_sigma") and float(sched.init_noise_sigma) > 1.0
        s0 = float(sig[0])
        ab0 = 1.0 / (1.0 + s0 * s0)
        start_vp = (x / math.sqrt(1.0 + s0 * s0)).numpy() if ve_model else x.numpy()
        calls = 0
        for i, t in enumerate(sched.timesteps):
            s = float(sig[i])  # the noise level the scheduler uses at this step (VE)
            ab = 1.0 / (1.0 + s * s)
            xin = sched.scale_model_input(x, t)  # VP input for every scheduler here
            e = math.sqrt(1.0 - ab) * (xin - math.sqrt(ab) * mu_t) / (ab * var_t + 1.0 - ab)
            calls += 1
            x = sched.step(e, t, x).prev_sample
        rows.append((f"diffusers {name}", calls,
                     *_metrics(x.double().numpy(), start_vp, ab0, mu, var)))
    return rows


def _load_kdiffusion():
    """k-diffusion's sampling module through tests/_kdiffusion.py (the one loader), or None."""
    mod = sys.modules.get("_kdiffusion")
    if mod is None:
        path = Path(__file__).resolve().parents[1] / "tests" / "_kdiffusion.py"
        spec = importlib.util.spec_from_file_location("_kdiffusion", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["_kdiffusion"] = mod
        spec.loader.exec_module(mod)
    return mod.load_sampling()


KDIFFUSION = [
    # name, function, evaluations per step (Heun: 2, its last step Euler), deterministic
    ("dpmpp_2m", "sample_dpmpp_2m", 1, True),
    ("euler", "sample_euler", 1, True),
    ("heun", "sample_heun", 2, True),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", 1, False),
]


def _kdiffusion_rows(kind, nfe, mu, var, z):
    """k-diffusion's samplers with their defaults on the grid its README and EDM use,
    get_sigmas_karras(n, 0.002, sigma_max, rho=7), sigma_max = min(80, the schedule's top level);
    its x_T = z * sigma_max. The 3M SDE gets k-diffusion's default_noise_sampler (independent
    normals, what its ancestral samplers default to) instead of its default Brownian tree (the
    same law; the tree costs about a minute per run at 4000 x 16)."""
    try:
        import torch
    except ImportError:
        torch = None
    kd, why = _load_kdiffusion() if torch is not None else (None, "no torch")
    if kd is None:
        return [(f"k-diffusion ({why})", 0, math.nan, math.nan, math.nan)]
    sch = make_schedule(kind)
    top = min(float(sch.ve_sigma(1.0)), 80.0)
    mu_t, var_t = torch.tensor(mu), torch.tensor(var)
    rows = []
    for name, fn, per_step, det in KDIFFUSION:
        steps = nfe if per_step == 1 else (nfe + 1) // 2  # Heun: 2n - 1 evaluations
        sig = kd.get_sigmas_karras(steps, 0.002, top).double()
        calls = []

        def denoise(x, s, calls=calls):  # exact E[x0 | x], VE units
            calls.append(1)
            s2 = s.reshape(-1, 1) ** 2
            return mu_t + var_t * (x - mu_t) / (var_t + s2)

        x = torch.tensor(z) * float(sig[0])
        kw = {} if det else {"noise_sampler": kd.default_noise_sampler(x)}
        torch.manual_seed(3)
        out = getattr(kd, fn)(denoise, x, sig, disable=True, **kw)
        s0 = float(sig[0])
        rows.append((f"k-diffusion {name} (karras)", len(calls),
                     *_metrics(out.numpy(), z * s0 / math.sqrt(1 + s0 * s0),
                               1 / (1 + s0 * s0), mu, var, det)))
    return rows


def _overhead(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        import diffusers
    except ImportError:
        return []
    shape = (64, 3, 16, 16)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    eps0 = 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(1))
    n, reps = 50, 15
    sch = make_schedule("linear")
    rows = []
    pairs = [("ddim", S.sample_ddim, diffusers.DDIMScheduler),
             ("euler", S.sample_euler, diffusers.EulerDiscreteScheduler),
             ("dpmpp_2m", S.sample_dpmpp_2m, diffusers.DPMSolverMultistepScheduler),
             ("unipc", S.sample_unipc, diffusers.UniPCMultistepScheduler)]
    for name, fn, cls in pairs:
        best_a = best_d = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(lambda x, t: eps0, x0, schedule=sch, steps=n, prediction="epsilon")
            best_a = min(best_a, (time.perf_counter() - t0) / n)
            sched = cls()
            sched.set_timesteps(n)
            x = x0.clone()
            t0 = time.perf_counter()
            for t in sched.timesteps:
                x = sched.step(eps0, t, sched.scale_model_input(x, t)).prev_sample
            best_d = min(best_d, (time.perf_counter() - t0) / n)
        rows.append((name, best_a * 1e6, best_d * 1e6))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    mu, var, z = _problem(args.samples)
    for kind in ("cosine", "linear"):
        print(f"\n## exact Gaussian, {kind} schedule, 16-D, {args.samples} samples\n")
        print("| sampler | NFE (10) | err | law | var | NFE (20) | err | law | var |")
        print("|---|---|---|---|---|---|---|---|---|")
        per = {}
        for nfe in (10, 20):
            for row in (_arraygen_rows(kind, nfe, mu, var, z)
                        + _diffusers_rows(kind, nfe, mu, var, z)
                        + _kdiffusion_rows(kind, nfe, mu, var, z)):
                per.setdefault(row[0], []).append(row[1:])
        for name, cells in per.items():
            txt = " | ".join(f"{c[0]} | {c[1]:.4f} | {c[2]:.4f} | {c[3]:.3f}" for c in cells)
            print(f"| {name} | {txt} |".replace("nan", "-"))
        best = {}
        for name, cells in per.items():
            for j, nfe in enumerate((10, 20)):
                if not math.isnan(cells[j][1]):
                    side = "arraygen" if name.startswith("arraygen") else "peers"
                    cur = best.get((side, nfe))
                    if cur is None or cells[j][1] < cur[1]:
                        best[(side, nfe)] = (name, cells[j][1])
        for nfe in (10, 20):
            a, p = best[("arraygen", nfe)], best.get(("peers", nfe))
            print(f"\nbest at {nfe}: {a[0]} {a[1]:.4f}"
                  + (f" vs {p[0]} {p[1]:.4f}" if p else ""))
    rows = _overhead(args.threads)
    if rows:
        print(f"\n## per-step overhead, zero-cost model, batch 64x3x16x16 float32 torch CPU, "
              f"{args.threads} thread(s), min of 15 x 50 steps (us/step)\n")
        print("| method | arraygen sampler loop | diffusers scheduler.step |")
        print("|---|---|---|")
        for name, a, d in rows:
            print(f"| {name} | {a:.0f} | {d:.0f} |")


if __name__ == "__main__":
    main()
