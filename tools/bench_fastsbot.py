"""FastSB-OT presets against DPM++(2M) and UniPC at equal model evaluations (CPU, NumPy float64).

Problems (exact models, so every error is the sampler's own):

* ``gauss-cosine`` / ``gauss-linear``: x0 ~ N(mu, diag v) in 16-D, mu ~ U(-1.5, 1.5), v
  log-uniform in [0.01, 2] (seed 0), on ``make_schedule("cosine")`` / ``("linear")``. Error:
  RMS over samples and dimensions of (x - x0*) / sqrt(v), where x0* is the exact
  probability-flow map of the same starting noise x_T (t = 1):
  x0* = mu + sqrt(v / (ab1 v + 1 - ab1)) (x_T - sqrt(ab1) mu).
* ``--held-out``: problems not used to tune the presets: the Gaussian with another seed in
  32-D (cosine), the 16-D Gaussian scaled by 5 (standard deviations up to 7; linear), and a
  5-component 2-D mixture at random places (variance 0.05, cosine; error in units of 0.22).
* ``ring``: the 8-component 2-D mixture of :class:`arraygen.datasets.GaussianMixture` (means on
  the circle of radius 2, variance 0.09) on the linear schedule, exact score. Error: RMS
  distance to a 2000-step solution of the same probability-flow ODE from the same x_T, in units
  of the component standard deviation 0.3.

Every sampler gets the same x_T (4000 samples). Deterministic samplers only: the error is a
path error (an upper bound on the Wasserstein-2 error of the law). ``--variants`` adds the
stochastic options (Langevin corrector, DDIM eta = 1), scored by the law: on the Gaussians
sqrt(mean_d((m - mu)^2 / v + (sd / sqrt(v) - 1)^2)), on the ring MMD^2 (bandwidth 0.5) to 4000
exact samples (two exact sets give |MMD^2| ~ 1e-4).

Usage::

    python tools/bench_fastsbot.py                # the table (about a minute on one core)
    python tools/bench_fastsbot.py --json out.json
    python tools/bench_fastsbot.py --variants
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

from arraygen import samplers as S
from arraygen.datasets import GaussianMixture
from arraygen.fastsbot import PRESETS, FastSBOTConfig, FastSBOTSolver
from arraygen.schedules import make_schedule

NFES = (8, 12, 20, 30, 50)
N = 4000


def gaussian_problem(kind: str, *, seed: int = 0, dim: int = 16, scale: float = 1.0):
    rng = np.random.default_rng(seed)
    mu = scale * rng.uniform(-1.5, 1.5, dim)
    v = scale ** 2 * np.exp(rng.uniform(math.log(0.01), math.log(2.0), dim))
    sch = make_schedule(kind)
    ab1 = float(sch.alpha_bar(1.0))

    def eps_model(x, t):
        ab = float(sch.alpha_bar(t))
        a, s2 = math.sqrt(ab), 1.0 - ab
        return math.sqrt(s2) * (x - a * mu) / (ab * v + s2)

    def exact(x_t):
        return mu + np.sqrt(v / (ab1 * v + 1 - ab1)) * (x_t - math.sqrt(ab1) * mu)

    def path_error(x, x_t):
        return float(np.sqrt(np.mean((x - exact(x_t)) ** 2 / v)))

    def law_error(x):
        m, sd = x.mean(0), x.std(0)
        return float(np.sqrt(np.mean((m - mu) ** 2 / v + (sd / np.sqrt(v) - 1) ** 2)))

    return sch, eps_model, "epsilon", dim, path_error, law_error


def ring_problem(*, held_out: bool = False):
    if held_out:        # 5 components at random places, variance 0.05, random weights, cosine
        rng = np.random.default_rng(3)
        gm = GaussianMixture(rng.uniform(-2, 2, (5, 2)), np.full(5, 0.05),
                             rng.dirichlet(np.ones(5)))
        sch, unit = make_schedule("cosine"), math.sqrt(0.05)
    else:
        ang = np.arange(8) * 2 * np.pi / 8
        gm = GaussianMixture(np.stack([2 * np.cos(ang), 2 * np.sin(ang)], 1), np.full(8, 0.09))
        sch, unit = make_schedule("linear"), 0.3
    model = gm.model(sch, "epsilon")
    refs = {}

    def reference(x_t):
        key = x_t.tobytes()
        if key not in refs:
            cfg = FastSBOTConfig(steps=2000, predictor="dpmpp_3m", unified_corrector=True,
                                 sigma_min=1e-4, sigma_max=80.0)
            refs[key] = FastSBOTSolver(model, sch, cfg, prediction="epsilon").sample(noise=x_t)
        return refs[key]

    def path_error(x, x_t):
        return float(np.sqrt(np.mean((x - reference(x_t)) ** 2)) / unit)

    exact = gm.sample(N, rng=123)

    def law_error(x):
        from arraygen.metrics import mmd

        return float(mmd(x, exact, bandwidth=0.5))

    return sch, model, "epsilon", 2, path_error, law_error


def problems(held_out: bool = False):
    if held_out:     # not used for tuning: another seed and size, a 5x larger scale, a new mixture
        return {"held-out gauss 32-D": gaussian_problem("cosine", seed=5, dim=32),
                "held-out gauss scale 5": gaussian_problem("linear", seed=7, scale=5.0),
                "held-out mixture": ring_problem(held_out=True)}
    return {"gauss-cosine": gaussian_problem("cosine"), "gauss-linear": gaussian_problem("linear"),
            "ring": ring_problem()}


def baselines(sch, model, prediction, x_t, nfe):
    """DPM++(2M) and UniPC from arraygen.samplers with their default grids."""
    out = {}
    out["dpmpp_2m"] = S.sample_dpmpp_2m(model, x_t, schedule=sch, steps=nfe,
                                        prediction=prediction)
    unipc = getattr(S, "sample_unipc", None)
    out["unipc"] = (unipc(model, x_t, schedule=sch, steps=nfe, prediction=prediction)
                    if unipc is not None else None)
    # the same two methods on the capped log-SNR grid (sigma 80 -> 0.002), through the
    # FastSB-OT core, for reference when the samplers module's defaults differ
    for name, unic in (("dpmpp_2m@logsnr80", False), ("unipc2@logsnr80", True)):
        cfg = FastSBOTConfig(steps=nfe, predictor="dpmpp_2m", unified_corrector=unic,
                             sigma_min=0.002, sigma_max=80.0)
        out[name] = FastSBOTSolver(model, sch, cfg, prediction=prediction).sample(noise=x_t)
    return out


def presets_at(sch, model, prediction, x_t, nfe, overrides=None):
    out = {}
    for q in PRESETS:
        cfg = FastSBOTConfig(quality=q, nfe=nfe, **(overrides or {}))
        out[q] = FastSBOTSolver(model, sch, cfg, prediction=prediction).sample(noise=x_t)
    return out


def _cell(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--variants", action="store_true",
                    help="also score the stochastic options by the law")
    ap.add_argument("--nfe", type=int, nargs="*", default=list(NFES))
    ap.add_argument("--held-out", action="store_true",
                    help="the problems not used for tuning the presets")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for pname, (sch, model, pred, dim, path_error, law_error) in problems(
            args.held_out).items():
        x_t = np.random.default_rng(1).standard_normal((N, dim))
        for nfe in args.nfe:
            res = baselines(sch, model, pred, x_t, nfe)
            res.update(presets_at(sch, model, pred, x_t, nfe))
            for name, x in res.items():
                err = None if x is None else path_error(x, x_t)
                rows.append({"problem": pname, "nfe": nfe, "sampler": name, "error": err})
            if args.variants:
                for name, cfg in (
                        ("langevin m=1", dict(steps=None, nfe=nfe, corrector_steps=1,
                                              predictor="dpmpp_2m")),
                        ("ddim eta=1", dict(nfe=nfe, predictor="ddim", eta=1.0)),
                        ("dpmpp_2m (no UniC)", dict(nfe=nfe, predictor="dpmpp_2m",
                                                    unified_corrector=False))):
                    cfg = {k: v for k, v in cfg.items() if v is not None}
                    s = FastSBOTSolver(model, sch, FastSBOTConfig(quality="fast", **cfg),
                                       prediction=pred)
                    x = s.sample(noise=x_t, rng=5)
                    rows.append({"problem": pname, "nfe": nfe, "sampler": "variant " + name,
                                 "error": path_error(x, x_t), "law_error": law_error(x)})
                rows.append({"problem": pname, "nfe": nfe, "sampler": "variant fast (law)",
                             "error": None, "law_error": law_error(res["fast"])})
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    print(f"# FastSB-OT vs DPM++(2M) / UniPC, path error at equal model evaluations "
          f"({N} samples, float64, {time.perf_counter() - t0:.0f} s)")
    for pname in dict.fromkeys(r["problem"] for r in rows):
        print(f"\n## {pname}\n")
        print("| sampler | " + " | ".join(f"{n} NFE" for n in args.nfe) + " |")
        print("|---|" + "---|" * len(args.nfe))
        for name in names:
            cells = []
            for nfe in args.nfe:
                r = [r for r in rows if r["problem"] == pname and r["nfe"] == nfe
                     and r["sampler"] == name]
                if not r:
                    cells.append("")
                    continue
                e, law = r[0]["error"], r[0].get("law_error")
                cell = "n/a" if e is None else f"{e:.4f}"
                if law is not None:
                    cell += f" (law {law:.2g})"
                cells.append(cell)
            if any(cells):
                print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n## each preset at its own budget (path error; <= both baselines?)\n")
    print("| problem | preset | NFE | preset | DPM++(2M) | UniPC | verdict |")
    print("|---|---|---|---|---|---|---|")
    for pname in dict.fromkeys(r["problem"] for r in rows):
        for q, p in PRESETS.items():
            got = {r["sampler"]: r["error"] for r in rows
                   if r["problem"] == pname and r["nfe"] == p["steps"]}
            if q not in got:
                continue
            base = [v for v in (got.get("dpmpp_2m"), got.get("unipc")) if v is not None]
            ok = all(got[q] <= v for v in base)
            print(f"| {pname} | {q} | {p['steps']} | {got[q]:.4f} | "
                  f"{_cell(got.get('dpmpp_2m'))} | {_cell(got.get('unipc'))} | "
                  f"{'yes' if ok else 'NO'} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
