"""Demo section: FastSB-OT presets (MMD vs model evaluations), the OT bridge, eval-samplers."""

from __future__ import annotations

import time
import warnings

import numpy as np

TITLE = "FastSB-OT: presets, the OT bridge, and eval-samplers"
ORDER = 35

BANDWIDTH = 0.5


def _ring(weights=None):
    from ..datasets import GaussianMixture

    ang = np.arange(8) * 2 * np.pi / 8
    means = np.stack([2.0 * np.cos(ang), 2.0 * np.sin(ang)], axis=1)
    return GaussianMixture(means, np.full(8, 0.3 ** 2), weights)


def _presets_table(n: int):
    from .. import samplers as S
    from ..fastsbot import PRESETS, FastSBOTConfig, FastSBOTSolver
    from ..metrics import mmd
    from ..random import normal
    from ..schedules import make_schedule

    gm = _ring()
    sch = make_schedule("linear")
    exact = gm.sample(n, rng=123)
    floor = float(mmd(gm.sample(n, rng=99), exact, bandwidth=BANDWIDTH))
    rows = []
    for quality in PRESETS:
        solver = FastSBOTSolver(gm.model(sch), sch, FastSBOTConfig(quality=quality))
        start = time.perf_counter()
        x = solver.sample((n, 2), rng=1)
        rows.append((f"FastSB-OT {quality}", solver.nfe_, time.perf_counter() - start,
                     float(mmd(x, exact, bandwidth=BANDWIDTH))))
    noise = normal(7, (n, 2), xp=np)
    peers = [("DDIM", S.sample_ddim), ("DPM-Solver++(2M)", S.sample_dpmpp_2m)]
    if hasattr(S, "sample_unipc"):
        peers.append(("UniPC", S.sample_unipc))
    for nfe in sorted({p["steps"] for p in PRESETS.values()}):
        for name, fn in peers:
            start = time.perf_counter()
            x = fn(gm.model(sch), noise, schedule=sch, steps=nfe, prediction="score")
            rows.append((name, nfe, time.perf_counter() - start,
                         float(mmd(x, exact, bandwidth=BANDWIDTH))))
    return rows, floor


def _bridge_rows(quick: bool):
    from ..fastsbot import FastSBOTConfig, FastSBOTSolver
    from ..ot import ConvergenceWarning
    from ..schedules import make_schedule

    sch = make_schedule("linear")
    w = np.full(8, 0.5 / 7)
    w[0] = 0.5
    wrong = _ring(w)
    reference = _ring().sample(300, rng=3)
    ang = np.arange(8) * 2 * np.pi / 8
    means = np.stack([2.0 * np.cos(ang), 2.0 * np.sin(ang)], axis=1)

    def frac(x):
        d = ((x[:, None, :] - means[None]) ** 2).sum(-1)
        return float(np.mean(d.argmin(1) == 0))

    variants = [("no bridge", {}, None), ("sliced OT bridge", {"memory_limit_ot_mb": 1e-3},
                                          reference)]
    if not quick:
        variants.append(("Sinkhorn bridge", {}, reference))
    rows, shown = [], {}
    for label, extra, ref in variants:
        cfg = FastSBOTConfig(quality="fast", backend="array_api", **extra)
        solver = FastSBOTSolver(wrong.model(sch), sch, cfg, reference=ref)
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            x = solver.sample((300, 2), rng=1)
        rows.append((label, frac(x), time.perf_counter() - start))
        shown[label] = x
    return rows, shown


def run(ctx) -> str:
    import matplotlib.pyplot as plt

    from ..commands import eval_samplers as E

    n = 4000 if ctx.quick else 20000
    rows, floor = _presets_table(n)
    lines = ["| sampler | model evaluations | seconds | MMD² |", "|---|---|---|---|"]
    lines += [f"| {name} | {nfe} | {sec:.2f} | {val:.2e} |" for name, nfe, sec, val in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, nfe, _, val in rows:
        marker = "o" if name.startswith("FastSB") else "s"
        axes[0].scatter(nfe, max(val, 1e-6), marker=marker, label=name)
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].axhline(max(abs(floor), 1e-6), color="gray", lw=0.8, ls="--")
    axes[0].set_xlabel("model evaluations")
    axes[0].set_ylabel("MMD² to exact samples")
    axes[0].legend(fontsize=6)
    bridge, shown = _bridge_rows(ctx.quick)
    for label, x in shown.items():
        axes[1].scatter(x[:, 0], x[:, 1], s=3, alpha=0.5, label=label)
    axes[1].set_aspect("equal")
    axes[1].legend(fontsize=7, markerscale=3)
    axes[1].set_title("model over-weights the mode at (2, 0)", fontsize=9)
    image = ctx.savefig(fig, "fastsbot_presets")

    blines = ["| variant | fraction in the over-weighted mode | seconds |", "|---|---|---|"]
    blines += [f"| {label} | {f:.3f} | {sec:.2f} |" for label, f, sec in bridge]

    out = ctx.out_dir / "eval_samplers"
    args = E.parse_settings(_blank_args(E), {})
    args.resolutions = [8, 12] if ctx.quick else [8, 16, 32]
    args.samplers = ["ddim", "euler", "sde", "fastsbot"]
    args.num_samples = 9 if ctx.quick else 16
    args.save_dir = out
    out.mkdir(parents=True, exist_ok=True)
    result = E.evaluate(args)
    from ..schedules import make_schedule

    table = E.format_table(args, result["rows"], make_schedule("linear"))
    (out / "metrics_comparison.txt").write_text(table)
    E.save_figures(args, result)
    intro = (f"Target: 8 Gaussians (std 0.3) on a circle of radius 2 with its exact noised "
             f"score (linear VP schedule). {n} samples per row; MMD² (unbiased, Gaussian "
             f"kernel, bandwidth {BANDWIDTH}) to {n} exact samples; two exact sample sets give "
             f"{floor:.1e} (differences below a few 1e-4 are noise at this size; "
             f"`python -m asv_benchmarks.benchmarks.bench_fastsbot` runs 20 000). The presets "
             f"trade model evaluations for accuracy (see `arraygen.fastsbot`: a multistep "
             f"predictor of order 2 or 3 with the UniC corrector on a log-SNR grid tuned per "
             f"budget, then a final denoising step); DDIM, DPM-Solver++(2M) and UniPC run at "
             f"each preset's number of evaluations on their default grid.")
    bridge_intro = ("OT bridge: the score model puts weight 0.5 on one mode (the data: 1/8); "
                    "with a reference set of 300 true samples the bridge's mass-balanced "
                    "denoiser moves samples toward the reference's mode weights.")
    eval_intro = (f"`python -m arraygen eval-samplers` on the built-in exact model (binarised "
                  f"digits, EmpiricalScore), written to `{out.name}/`:")
    return "\n".join([intro, "", *lines, "", image, "", bridge_intro, "", *blines, "",
                      eval_intro, "", "```", table.strip(), "```"])


def _blank_args(E):
    import argparse

    return argparse.Namespace(**{env.lower(): None for env in E.DEFAULTS}, seed=0)
